//! A compact map from subject id to a small value, for millions of subjects.
//!
//! An open-addressing table with linear probing. Each slot holds its id inline when the id
//! fits in 15 bytes (most platform ids do), else the id's place in one byte arena; the value
//! sits beside it. A lookup of a short id therefore touches one slot (two when the probe runs
//! past a cache line), compared as one 16-byte key, with no pointer chase; and a caller that
//! knows an id a little before it needs the answer can `prefetch` that slot, so the cache
//! miss of a table larger than the cache overlaps other work. (A `HashMap<String, V>` costs a
//! heap allocation and ~40 bytes of overhead per subject, and a lookup misses the cache on
//! its control bytes, its bucket and then the string.)
//!
//! The table is at most 70% full, so a probe for an absent id ends after a few slots. The
//! hash is seeded at random per table: ids chosen to collide cannot be prepared in advance.

use std::hash::BuildHasher;

use hashbrown::DefaultHashBuilder;

const INLINE: usize = 15;
const IN_ARENA: u8 = 0xFF;
/// Slots per 10 entries at most before the table doubles.
const MAX_LOAD_TENTHS: usize = 7;

/// An id, inline (`key[0]` is its length, the rest zero-padded, so two inline keys are equal
/// exactly when their ids are) or in the arena (`key[0] == IN_ARENA`, then the start and
/// length as little-endian u32).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key([u8; 16]);

impl Key {
    /// The inline key of a short id; `None` for an id that lives in the arena.
    fn inline(bytes: &[u8]) -> Option<Key> {
        (bytes.len() <= INLINE).then(|| {
            let mut key = [0u8; 16];
            key[0] = bytes.len() as u8;
            key[1..1 + bytes.len()].copy_from_slice(bytes);
            Key(key)
        })
    }

    /// Whether this key is `bytes`, whose inline key (if short) is `probe`.
    fn is(&self, arena: &[u8], bytes: &[u8], probe: Option<Key>) -> bool {
        match probe {
            Some(p) => *self == p,
            None => self.0[0] == IN_ARENA && id(arena, self) == bytes,
        }
    }
}

struct Entry<V> {
    key: Key,
    value: V,
}

pub struct SubjectTable<V> {
    arena: Vec<u8>,
    /// Empty, or a power of two long.
    slots: Vec<Option<Entry<V>>>,
    len: usize,
    hasher: DefaultHashBuilder,
}

impl<V> Default for SubjectTable<V> {
    fn default() -> Self {
        SubjectTable {
            arena: Vec::new(),
            slots: Vec::new(),
            len: 0,
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

fn empty_slots<V>(n: usize) -> Vec<Option<Entry<V>>> {
    std::iter::repeat_with(|| None).take(n).collect()
}

impl<V> SubjectTable<V> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where the probe for `bytes` starts. Only for a table with slots.
    fn home(&self, bytes: &[u8]) -> usize {
        self.hasher.hash_one(bytes) as usize & (self.slots.len() - 1)
    }

    /// The slot holding `bytes`, or the empty slot where it would go; `None` when the table
    /// has no slots yet.
    fn probe(&self, bytes: &[u8]) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let key = Key::inline(bytes);
        let mask = self.slots.len() - 1;
        let mut i = self.home(bytes);
        // Ends: the table is never full, so an empty slot comes before the probe wraps.
        loop {
            match &self.slots[i] {
                Some(e) if !e.key.is(&self.arena, bytes, key) => i = (i + 1) & mask,
                _ => return Some(i),
            }
        }
    }

    pub fn get(&self, subject: &str) -> Option<&V> {
        let i = self.probe(subject.as_bytes())?;
        self.slots[i].as_ref().map(|e| &e.value)
    }

    /// Starts loading the slot where a lookup of `subject` begins, without waiting for it.
    pub fn prefetch(&self, subject: &str) {
        if self.slots.is_empty() {
            return;
        }
        let slot: *const Option<Entry<V>> = &self.slots[self.home(subject.as_bytes())];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch is a hint: it never faults and changes no memory, and the
        // pointer is to a live slot anyway. SSE is part of every x86-64 CPU.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(slot.cast());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = slot;
    }

    /// The value for `subject`, inserting `fresh()` first if the id is new. Errors only when
    /// the arena would pass 4 GiB of long ids.
    pub fn entry(
        &mut self,
        subject: &str,
        fresh: impl FnOnce() -> V,
    ) -> Result<&mut V, &'static str> {
        let bytes = subject.as_bytes();
        let found = self.probe(bytes).filter(|&i| self.slots[i].is_some());
        let i = match found {
            Some(i) => i,
            None => {
                let key = match Key::inline(bytes) {
                    Some(key) => key,
                    None => self.in_arena(bytes)?,
                };
                if (self.len + 1) * 10 > self.slots.len() * MAX_LOAD_TENTHS {
                    self.grow();
                }
                let i = self.vacant(&key);
                self.slots[i] = Some(Entry {
                    key,
                    value: fresh(),
                });
                self.len += 1;
                i
            }
        };
        match &mut self.slots[i] {
            Some(e) => Ok(&mut e.value),
            None => unreachable!("slot {i} was just found or filled"),
        }
    }

    /// Copies a long id into the arena and returns its key.
    fn in_arena(&mut self, bytes: &[u8]) -> Result<Key, &'static str> {
        let start =
            u32::try_from(self.arena.len()).map_err(|_| "more than 4 GiB of subject ids")?;
        let len = u32::try_from(bytes.len()).map_err(|_| "a subject id longer than 4 GiB")?;
        start
            .checked_add(len)
            .ok_or("more than 4 GiB of subject ids")?;
        self.arena.extend_from_slice(bytes);
        let mut key = [0u8; 16];
        key[0] = IN_ARENA;
        key[1..5].copy_from_slice(&start.to_le_bytes());
        key[5..9].copy_from_slice(&len.to_le_bytes());
        Ok(Key(key))
    }

    /// The first empty slot from the home of `key`'s id (which is not in the table).
    fn vacant(&self, key: &Key) -> usize {
        let mask = self.slots.len() - 1;
        let mut i = self.home(id(&self.arena, key));
        while self.slots[i].is_some() {
            i = (i + 1) & mask;
        }
        i
    }

    /// Doubles the slots (16 to start) and places every entry again.
    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(16);
        let old = std::mem::replace(&mut self.slots, empty_slots(size));
        for e in old.into_iter().flatten() {
            let i = self.vacant(&e.key);
            self.slots[i] = Some(e);
        }
    }

    /// Every id and value, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.slots.iter().flatten().map(move |e| {
            // Ids only ever enter through `entry(&str)`, so every one is valid UTF-8.
            (
                std::str::from_utf8(id(&self.arena, &e.key)).unwrap_or_default(),
                &e.value,
            )
        })
    }

    /// The same ids with values mapped. Each entry keeps its slot: the hash is the key's.
    pub fn map<W>(self, mut f: impl FnMut(V) -> W) -> SubjectTable<W> {
        let slots = self
            .slots
            .into_iter()
            .map(|s| {
                s.map(|e| Entry {
                    key: e.key,
                    value: f(e.value),
                })
            })
            .collect();
        SubjectTable {
            arena: self.arena,
            slots,
            len: self.len,
            hasher: self.hasher,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;
    use std::collections::HashMap;

    /// An id of 0 to 24 bytes from a small alphabet (with NUL and a multi-byte character),
    /// so short and long ids, prefixes of each other and ids that differ only in length
    /// or padding all occur.
    fn random_id(rng: &mut Rng) -> String {
        let len = rng.below(25);
        (0..len)
            .map(|_| rng.pick(&['a', 'b', '\0', '1', 'é']))
            .collect()
    }

    #[test]
    fn agrees_with_a_hash_map_through_every_growth() {
        let mut rng = Rng(11);
        let mut table = SubjectTable::default();
        let mut model: HashMap<String, u32> = HashMap::new();
        for n in 0..20_000u32 {
            let id = random_id(&mut rng);
            *table.entry(&id, || 0).unwrap() += n;
            *model.entry(id).or_insert(0) += n;
            assert_eq!(table.len(), model.len());
            let probe = random_id(&mut rng);
            table.prefetch(&probe);
            assert_eq!(table.get(&probe), model.get(&probe), "after {n} inserts");
        }
        for (id, v) in &model {
            assert_eq!(table.get(id), Some(v));
        }
        let listed: HashMap<String, u32> = table.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        assert_eq!(listed, model);
        assert!(
            table.slots.len() * MAX_LOAD_TENTHS >= table.len() * 10,
            "never more than 70% full"
        );
    }

    #[test]
    fn an_empty_table_answers_without_slots() {
        let t: SubjectTable<u8> = SubjectTable::default();
        t.prefetch("u1");
        assert_eq!(t.get("u1"), None);
        assert_eq!(t.get(""), None);
        assert_eq!(t.iter().count(), 0);
    }

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
