//! A compact map from subject id to a small value, for millions of subjects.
//!
//! Ids live back to back in one byte arena; the hash table holds only 4-byte indexes. A
//! `HashMap<String, V>` costs a heap allocation and ~40 bytes of overhead per subject; this
//! costs the id's bytes plus ~13 bytes, which is what keeps a 5M-subject snapshot well under
//! the memory budget.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

pub struct SubjectTable<V> {
    arena: Vec<u8>,
    spans: Vec<(u32, u32)>,
    values: Vec<V>,
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
}

impl<V> Default for SubjectTable<V> {
    fn default() -> Self {
        SubjectTable {
            arena: Vec::new(),
            spans: Vec::new(),
            values: Vec::new(),
            index: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
        }
    }
}

impl<V: std::fmt::Debug> std::fmt::Debug for SubjectTable<V> {
    /// Never prints ids: they are personal data.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubjectTable")
            .field("len", &self.len())
            .finish()
    }
}

impl<V> SubjectTable<V> {
    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    fn id(&self, i: u32) -> &[u8] {
        let (start, len) = self.spans[i as usize];
        &self.arena[start as usize..start as usize + len as usize]
    }

    fn find(&self, hash: u64, id: &[u8]) -> Option<u32> {
        self.index.find(hash, |&i| self.id(i) == id).copied()
    }

    pub fn get(&self, id: &str) -> Option<&V> {
        let hash = self.hasher.hash_one(id.as_bytes());
        self.find(hash, id.as_bytes())
            .map(|i| &self.values[i as usize])
    }

    /// The value for `id`, inserting `fresh()` first if the id is new. Errors only when the
    /// arena would pass 4 GiB of ids.
    pub fn entry(&mut self, id: &str, fresh: impl FnOnce() -> V) -> Result<&mut V, &'static str> {
        let bytes = id.as_bytes();
        let hash = self.hasher.hash_one(bytes);
        let i = match self.find(hash, bytes) {
            Some(i) => i,
            None => {
                let start = u32::try_from(self.arena.len())
                    .map_err(|_| "more than 4 GiB of subject ids")?;
                let len =
                    u32::try_from(bytes.len()).map_err(|_| "a subject id longer than 4 GiB")?;
                let i =
                    u32::try_from(self.values.len()).map_err(|_| "more than 4 billion subjects")?;
                start
                    .checked_add(len)
                    .ok_or("more than 4 GiB of subject ids")?;
                self.arena.extend_from_slice(bytes);
                self.spans.push((start, len));
                self.values.push(fresh());
                let (arena, spans, hasher) = (&self.arena, &self.spans, &self.hasher);
                self.index.insert_unique(hash, i, |&j| {
                    let (s, l) = spans[j as usize];
                    hasher.hash_one(&arena[s as usize..(s + l) as usize])
                });
                i
            }
        };
        Ok(&mut self.values[i as usize])
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        (0..self.values.len() as u32).map(move |i| {
            // Ids only ever enter through `entry(&str)`, so every span is valid UTF-8.
            let id = std::str::from_utf8(self.id(i)).unwrap_or_default();
            (id, &self.values[i as usize])
        })
    }

    /// The same ids with values mapped, keeping the index (no rehash).
    pub fn map<W>(self, f: impl FnMut(V) -> W) -> SubjectTable<W> {
        SubjectTable {
            arena: self.arena,
            spans: self.spans,
            values: self.values.into_iter().map(f).collect(),
            index: self.index,
            hasher: self.hasher,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_many_ids_exactly() {
        let mut t = SubjectTable::default();
        for n in 0..50_000u32 {
            *t.entry(&format!("u{n}"), || 0u32).unwrap() += n;
        }
        *t.entry("u7", || 0).unwrap() += 1;
        assert_eq!(t.len(), 50_000);
        assert_eq!(t.get("u7"), Some(&8));
        assert_eq!(t.get("u49999"), Some(&49_999));
        assert_eq!(t.get("u50000"), None);
        assert_eq!(t.get(""), None);
        let m = t.map(|v| v * 2);
        assert_eq!(m.get("u7"), Some(&16));
        assert_eq!(m.iter().count(), 50_000);
    }
}
