//! A compact map from subject id to a small value, for millions of subjects.
//!
//! Each hash-table entry holds its id inline when the id fits in 15 bytes (most platform ids
//! do), else the id's place in one byte arena; the value sits beside it. A lookup therefore
//! touches the control bytes and one entry, with no pointer chase for short ids. A
//! `HashMap<String, V>` costs a heap allocation and ~40 bytes of overhead per subject; this
//! costs 16 bytes plus the value, which keeps a 5M-subject snapshot well under its memory
//! budget and keeps lookups on the filter's hot path cheap.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

const INLINE: usize = 15;
const IN_ARENA: u8 = 0xFF;

/// An id, inline (`key[0]` is its length) or in the arena (`key[0] == IN_ARENA`, then the
/// start and length as little-endian u32).
#[derive(Clone, Copy)]
struct Key([u8; 16]);

struct Entry<V> {
    key: Key,
    value: V,
}

pub struct SubjectTable<V> {
    arena: Vec<u8>,
    entries: HashTable<Entry<V>>,
    hasher: DefaultHashBuilder,
}

impl<V> Default for SubjectTable<V> {
    fn default() -> Self {
        SubjectTable {
            arena: Vec::new(),
            entries: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
        }
    }
}

impl<V> std::fmt::Debug for SubjectTable<V> {
    /// Never prints ids: they are personal data.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubjectTable")
            .field("len", &self.len())
            .finish()
    }
}

fn id<'a>(arena: &'a [u8], key: &'a Key) -> &'a [u8] {
    let k = &key.0;
    if k[0] == IN_ARENA {
        let start = u32::from_le_bytes([k[1], k[2], k[3], k[4]]) as usize;
        let len = u32::from_le_bytes([k[5], k[6], k[7], k[8]]) as usize;
        &arena[start..start + len]
    } else {
        &k[1..1 + k[0] as usize]
    }
}

impl<V> SubjectTable<V> {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, subject: &str) -> Option<&V> {
        let bytes = subject.as_bytes();
        let hash = self.hasher.hash_one(bytes);
        self.entries
            .find(hash, |e| id(&self.arena, &e.key) == bytes)
            .map(|e| &e.value)
    }

    /// The value for `subject`, inserting `fresh()` first if the id is new. Errors only when
    /// the arena would pass 4 GiB of long ids.
    pub fn entry(
        &mut self,
        subject: &str,
        fresh: impl FnOnce() -> V,
    ) -> Result<&mut V, &'static str> {
        let bytes = subject.as_bytes();
        let hash = self.hasher.hash_one(bytes);
        let (arena, hasher) = (&mut self.arena, &self.hasher);
        let entry = self.entries.entry(
            hash,
            |e| id(arena, &e.key) == bytes,
            |e| hasher.hash_one(id(arena, &e.key)),
        );
        match entry {
            hashbrown::hash_table::Entry::Occupied(o) => Ok(&mut o.into_mut().value),
            hashbrown::hash_table::Entry::Vacant(v) => {
                let mut key = [0u8; 16];
                if bytes.len() <= INLINE {
                    key[0] = bytes.len() as u8;
                    key[1..1 + bytes.len()].copy_from_slice(bytes);
                } else {
                    let start =
                        u32::try_from(arena.len()).map_err(|_| "more than 4 GiB of subject ids")?;
                    let len =
                        u32::try_from(bytes.len()).map_err(|_| "a subject id longer than 4 GiB")?;
                    start
                        .checked_add(len)
                        .ok_or("more than 4 GiB of subject ids")?;
                    arena.extend_from_slice(bytes);
                    key[0] = IN_ARENA;
                    key[1..5].copy_from_slice(&start.to_le_bytes());
                    key[5..9].copy_from_slice(&len.to_le_bytes());
                }
                Ok(&mut v
                    .insert(Entry {
                        key: Key(key),
                        value: fresh(),
                    })
                    .into_mut()
                    .value)
            }
        }
    }

    /// Every id and value, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.entries.iter().map(move |e| {
            // Ids only ever enter through `entry(&str)`, so every one is valid UTF-8.
            (
                std::str::from_utf8(id(&self.arena, &e.key)).unwrap_or_default(),
                &e.value,
            )
        })
    }

    /// The same ids with values mapped.
    pub fn map<W>(self, mut f: impl FnMut(V) -> W) -> SubjectTable<W> {
        let SubjectTable {
            arena,
            entries: old,
            hasher,
        } = self;
        let mut entries = HashTable::with_capacity(old.len());
        for e in old {
            let hash = hasher.hash_one(id(&arena, &e.key));
            entries.insert_unique(
                hash,
                Entry {
                    key: e.key,
                    value: f(e.value),
                },
                |e: &Entry<W>| hasher.hash_one(id(&arena, &e.key)),
            );
        }
        SubjectTable {
            arena,
            entries,
            hasher,
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
        let long = "a-subject-id-longer-than-fifteen-bytes";
        *t.entry(long, || 0).unwrap() += 5;
        *t.entry("exactly15bytes!", || 0).unwrap() += 6;
        assert_eq!(t.len(), 50_002);
        assert_eq!(t.get("u7"), Some(&8));
        assert_eq!(t.get("u49999"), Some(&49_999));
        assert_eq!(t.get(long), Some(&5));
        assert_eq!(t.get("exactly15bytes!"), Some(&6));
        assert_eq!(t.get("a-subject-id-longer-than-fifteen-byte"), None);
        assert_eq!(t.get("u50000"), None);
        assert_eq!(t.get(""), None);
        let m = t.map(|v| v * 2);
        assert_eq!(m.get("u7"), Some(&16));
        assert_eq!(m.get(long), Some(&10));
        assert_eq!(m.iter().count(), 50_002);
        assert!(m.iter().any(|(id, v)| id == long && *v == 10));
    }
}
