//! The in-memory table behind [`KeyedStateStore`](super::KeyedStateStore): one flat
//! 32-byte slot per (state, key), found by a hash probe.
//!
//! Why this shape: deduplication touches keyed state once per row, so a row must cost a
//! probe and nothing else — no ordered-map comparisons of byte vectors, no allocation.
//! Keys are interned once (an integer key of one column is kept as the integer; other
//! keys are appended to one arena), values of up to 7 bytes live inside the slot, and the
//! key hash comes from the batch's key extraction, which computed it for routing anyway.
//! Order, where a checkpoint needs it, is produced when the checkpoint is written.

use std::collections::BTreeMap;
use std::ops::Deref;

use hashbrown::HashTable;

use crate::key::{hash_key, int_key_bytes, int_key_of};

/// Expiry of an entry without a time-to-live.
pub(super) const NO_EXPIRY: i64 = i64::MAX;

/// Changed since the last changelog was taken.
pub(super) const DIRTY: u8 = 1;
/// A checkpoint (or a pending delta) holds a version of it: a deletion must be recorded.
pub(super) const PERSISTED: u8 = 2;
/// The spill store may hold a version of it.
pub(super) const IN_SPILL: u8 = 4;
/// The spill store holds exactly this version (eviction need not write it).
pub(super) const SPILL_CLEAN: u8 = 8;
/// Used since the eviction hand last passed (the CLOCK bit).
pub(super) const REFERENCED: u8 = 16;

/// `Slot::key_len` of a key kept as its integer.
const INT_KEY: u32 = u32::MAX;
/// `Slot::state` of a free slot.
const FREE: u8 = u8::MAX;
/// Top byte of `Slot::value`: 0..=7 inline bytes, or one of these.
const TAG_TOMB: u8 = 0xFE;
const TAG_HEAP: u8 = 0xFF;
const INLINE_MAX: usize = 7;

/// Most states one operator may register (`u8` state index, one value kept for `FREE`).
pub(super) const MAX_STATES: usize = FREE as usize;

#[derive(Debug, Clone, Copy)]
pub(super) struct Slot {
    /// The integer of an integer key, or the offset of the key bytes in the arena.
    key: u64,
    /// Inline bytes, a tombstone, or a heap index (see the tags).
    value: u64,
    pub(super) expiry: i64,
    key_len: u32,
    pub(super) key_group: u16,
    pub(super) state: u8,
    pub(super) flags: u8,
}

impl Slot {
    pub(super) fn is_free(&self) -> bool {
        self.state == FREE
    }
}

/// One user entry of a map state.
#[derive(Debug, Clone)]
pub(super) struct MapEntry {
    /// `None`: removed, and the removal is still to be checkpointed.
    pub(super) value: Option<Box<[u8]>>,
    pub(super) expiry: i64,
    /// `DIRTY` and `PERSISTED`, as for slots.
    pub(super) flags: u8,
}

/// The entries of one key of a map state, by encoded user key.
pub(super) type MapValue = BTreeMap<Box<[u8]>, MapEntry>;

#[derive(Debug)]
enum Heap {
    Free,
    Bytes(Box<[u8]>),
    Map(MapValue),
}

/// What a slot holds.
pub(super) enum Value<'a> {
    /// Deleted; the deletion is still to be checkpointed.
    Tomb,
    /// Up to 7 bytes kept in the slot: the buffer and the length.
    Inline([u8; 8], usize),
    Bytes(&'a [u8]),
    Map(&'a MapValue),
}

impl Value<'_> {
    /// The bytes of a value slot (`None` for a tombstone or a map).
    pub(super) fn bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Inline(b, len) => Some(&b[..*len]),
            Value::Bytes(b) => Some(b),
            Value::Tomb | Value::Map(_) => None,
        }
    }
}

/// A slot's key bytes, rebuilt for integer keys.
pub(super) enum KeyBytes<'a> {
    Int([u8; 9]),
    Arena(&'a [u8]),
}

impl Deref for KeyBytes<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            KeyBytes::Int(b) => b,
            KeyBytes::Arena(b) => b,
        }
    }
}

/// Mixes the state index into the key hash, so that the states of one key spread.
fn mix(state: u8, key_hash: u64) -> u64 {
    key_hash ^ (u64::from(state) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn slot_key<'a>(arena: &'a [u8], s: &Slot) -> KeyBytes<'a> {
    if s.key_len == INT_KEY {
        KeyBytes::Int(int_key_bytes(s.key as i64))
    } else {
        let start = s.key as usize;
        KeyBytes::Arena(&arena[start..start + s.key_len as usize])
    }
}

fn slot_hash(arena: &[u8], s: &Slot) -> u64 {
    mix(s.state, hash_key(&slot_key(arena, s)))
}

fn key_eq(arena: &[u8], s: &Slot, key: &[u8], int: Option<i64>) -> bool {
    if s.key_len == INT_KEY {
        int == Some(s.key as i64)
    } else {
        s.key_len as usize == key.len() && {
            let start = s.key as usize;
            &arena[start..start + key.len()] == key
        }
    }
}

/// Buckets hashbrown gives a table of `capacity` (at most 7/8 full).
fn buckets_for(capacity: usize) -> usize {
    if capacity < 8 { if capacity < 4 { 4 } else { 8 } } else { (capacity * 8 / 7).next_power_of_two() }
}

/// Approximate heap cost of one map entry beyond its bytes (B-tree node share, boxes).
const MAP_ENTRY_OVERHEAD: usize = 64;

/// The slots, their index and the memory they hold.
#[derive(Debug, Default)]
pub(super) struct Table {
    index: HashTable<u32>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    arena: Vec<u8>,
    arena_garbage: usize,
    heap: Vec<Heap>,
    heap_free: Vec<u32>,
    heap_bytes: usize,
    live: usize,
}

impl Table {
    /// The slot of `key` in state `state`. (A key's group follows from its bytes; it is
    /// compared too so that the table never depends on callers getting that right.)
    pub(super) fn find(&self, state: u8, key_hash: u64, key: &[u8], key_group: u16) -> Option<u32> {
        let int = int_key_of(key);
        let (slots, arena) = (&self.slots, &self.arena);
        self.index
            .find(mix(state, key_hash), |&id| {
                let s = &slots[id as usize];
                s.state == state && s.key_group == key_group && key_eq(arena, s, key, int)
            })
            .copied()
    }

    /// Adds an empty (tombstone) slot for a key that [`find`](Self::find) did not find.
    pub(super) fn insert(&mut self, state: u8, key_hash: u64, key: &[u8], key_group: u16, flags: u8) -> u32 {
        let (k, key_len) = match int_key_of(key) {
            Some(v) => (v as u64, INT_KEY),
            None => {
                let start = self.arena.len() as u64;
                self.arena.extend_from_slice(key);
                // Keys over 4 GiB are refused by the key encoding's u32 lengths already.
                (start, u32::try_from(key.len()).unwrap_or(u32::MAX - 1))
            }
        };
        let slot =
            Slot { key: k, value: u64::from(TAG_TOMB) << 56, expiry: NO_EXPIRY, key_len, key_group, state, flags };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = slot;
                id
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        let Table { index, slots, arena, .. } = self;
        index.insert_unique(mix(state, key_hash), id, |&i| slot_hash(arena, &slots[i as usize]));
        self.live += 1;
        id
    }

    /// Removes a slot and frees what it holds.
    pub(super) fn remove(&mut self, id: u32) {
        let s = self.slots[id as usize];
        if s.is_free() {
            return;
        }
        let hash = slot_hash(&self.arena, &s);
        if let Ok(entry) = self.index.find_entry(hash, |&i| i == id) {
            entry.remove();
        }
        self.free_value(id);
        if s.key_len != INT_KEY {
            self.arena_garbage += s.key_len as usize;
        }
        let slot = &mut self.slots[id as usize];
        slot.state = FREE;
        slot.flags = 0;
        self.free.push(id);
        self.live -= 1;
        self.maybe_compact_arena();
    }

    pub(super) fn slot(&self, id: u32) -> &Slot {
        &self.slots[id as usize]
    }

    pub(super) fn slot_mut(&mut self, id: u32) -> &mut Slot {
        &mut self.slots[id as usize]
    }

    /// Makes room for `slots` slots in all, so that the slot vector does not grow (and
    /// copy itself) before it holds them. Room not used yet is address space, not memory.
    pub(super) fn reserve_slots(&mut self, slots: usize) {
        self.slots.reserve_exact(slots.saturating_sub(self.slots.len()));
    }

    /// Slots the slot vector holds room for.
    #[cfg(test)]
    pub(super) fn slot_capacity(&self) -> usize {
        self.slots.capacity()
    }

    /// Bytes of one slot.
    pub(super) const SLOT_BYTES: usize = std::mem::size_of::<Slot>();

    /// Number of slot ids ever handed out (free ones included): ids are `0..capacity`.
    pub(super) fn id_bound(&self) -> usize {
        self.slots.len()
    }

    pub(super) fn len(&self) -> usize {
        self.live
    }

    /// Keeps the index from doubling, or staying large, for keys it no longer holds.
    ///
    /// Eviction removes keys and new ones take their place. hashbrown leaves a marker
    /// where a key was removed; the markers use up its room, and once it is out of room
    /// over half full it doubles although the keys did not grow (and while it doubles,
    /// the old table and the new one are both in memory). So before that happens, with
    /// `headroom` inserts still to go, the index is rebuilt for the keys it holds; and it
    /// is rebuilt smaller once it has four times the room they need. A rebuild frees the
    /// old table before it allocates the new one, and re-hashes each key once.
    pub(super) fn maintain_index(&mut self, headroom: usize) {
        let out_of_room = self.index.capacity() - self.index.len() < headroom;
        if out_of_room || self.index_oversized(headroom) {
            self.rebuild_index(self.index_size(headroom));
        }
    }

    /// Room for a quarter more keys than held, and `headroom`.
    fn index_need(&self, headroom: usize) -> usize {
        self.live + self.live / 4 + headroom
    }

    fn index_oversized(&self, headroom: usize) -> bool {
        buckets_for(2 * self.index_need(headroom)) < self.index_buckets()
    }

    /// The capacity to rebuild the index at: what the keys need, but never smaller than
    /// now unless [oversized](Self::index_oversized). A rebuild takes back room markers
    /// took, and grows a table new keys filled (at most doubling it, as hashbrown would).
    /// It does not shrink at the first chance: under a budget, a smaller index leaves room
    /// for keys, the keys fill it, the index doubles, keys are evicted to pay for it, the
    /// index is rebuilt smaller, and so on — each round evicting keys that are read back.
    fn index_size(&self, headroom: usize) -> usize {
        let need = self.index_need(headroom);
        if self.index_oversized(headroom) { need } else { need.max(self.index_buckets() / 8 * 7) }
    }

    /// Buckets of the index, from its allocation: a `u32` and a control byte per bucket,
    /// and one SIMD group of control bytes more.
    fn index_buckets(&self) -> usize {
        self.index.allocation_size().saturating_sub(16) / 5
    }

    fn rebuild_index(&mut self, capacity: usize) {
        // Dropped first: the old table and the new one are never held together.
        self.index = HashTable::new();
        self.index = HashTable::with_capacity(capacity);
        let Table { index, slots, arena, .. } = self;
        for (id, s) in slots.iter().enumerate().filter(|(_, s)| !s.is_free()) {
            index.insert_unique(slot_hash(arena, s), id as u32, |&i| slot_hash(arena, &slots[i as usize]));
        }
    }

    /// Moves slots from the end of the slot vector into the free slots, and gives back
    /// the end, once the free slots pass what [`bytes`](Self::bytes) counts for them (an
    /// eighth) by a thirty-second of the keys (and `slack` more). Eviction leaves free
    /// slots and reuses them, so the vector stays at its high-water mark; when the keys
    /// held in memory fall for good (the disk store's filters grow into the budget), that
    /// mark is memory the budget no longer counts. (At a quarter more than the keys, the
    /// threshold before, up to a tenth of the slots' memory went uncounted.)
    /// `moved(from, to, slot)` is told of every move; slot ids held outside the table
    /// must follow it.
    pub(super) fn compact(&mut self, slack: usize, mut moved: impl FnMut(u32, u32, &Slot)) {
        if self.slots.len() <= self.live + self.live / 7 + self.live / 32 + slack {
            return;
        }
        let mut holes = std::mem::take(&mut self.free);
        holes.sort_unstable();
        let mut end = self.slots.len();
        for hole in holes {
            while end > 0 && self.slots[end - 1].is_free() {
                end -= 1;
            }
            if hole as usize >= end {
                break;
            }
            let from = end - 1;
            let slot = self.slots[from];
            self.slots[hole as usize] = slot;
            self.slots[from].state = FREE;
            // The index entry follows (cheaper than rebuilding the index: fewer slots
            // move than stay).
            if let Some(entry) = self.index.find_mut(slot_hash(&self.arena, &slot), |&i| i as usize == from) {
                *entry = hole;
            }
            moved(from as u32, hole, &slot);
            end = from;
        }
        while end > 0 && self.slots[end - 1].is_free() {
            end -= 1;
        }
        self.slots.truncate(end);
        self.slots.shrink_to_fit();
        self.free = Vec::new();
        self.maintain_index(slack);
    }

    pub(super) fn key(&self, id: u32) -> KeyBytes<'_> {
        slot_key(&self.arena, &self.slots[id as usize])
    }

    pub(super) fn value(&self, id: u32) -> Value<'_> {
        let s = &self.slots[id as usize];
        let tag = (s.value >> 56) as u8;
        match tag {
            TAG_TOMB => Value::Tomb,
            TAG_HEAP => match &self.heap[(s.value & 0xFFFF_FFFF) as usize] {
                Heap::Bytes(b) => Value::Bytes(b),
                Heap::Map(m) => Value::Map(m),
                Heap::Free => Value::Tomb,
            },
            // Inline: the bytes sit in the low bytes of `value`, little-endian.
            len => Value::Inline(s.value.to_le_bytes(), usize::from(len)),
        }
    }

    pub(super) fn set_bytes(&mut self, id: u32, bytes: &[u8]) {
        if bytes.len() <= INLINE_MAX {
            self.free_value(id);
            let mut b = [0u8; 8];
            b[..bytes.len()].copy_from_slice(bytes);
            b[7] = bytes.len() as u8;
            self.slots[id as usize].value = u64::from_le_bytes(b);
            return;
        }
        let s = self.slots[id as usize];
        if (s.value >> 56) as u8 == TAG_HEAP {
            let h = (s.value & 0xFFFF_FFFF) as usize;
            if let Heap::Bytes(old) = &mut self.heap[h] {
                if old.len() == bytes.len() {
                    old.copy_from_slice(bytes);
                } else {
                    self.heap_bytes = self.heap_bytes - old.len() + bytes.len();
                    *old = bytes.into();
                }
                return;
            }
        }
        self.free_value(id);
        self.heap_bytes += bytes.len();
        let h = self.alloc_heap(Heap::Bytes(bytes.into()));
        self.slots[id as usize].value = (u64::from(TAG_HEAP) << 56) | u64::from(h);
    }

    pub(super) fn set_tomb(&mut self, id: u32) {
        self.free_value(id);
        self.slots[id as usize].value = u64::from(TAG_TOMB) << 56;
    }

    /// The map of a map-state slot, made empty first if the slot holds no map.
    pub(super) fn map_mut(&mut self, id: u32) -> &mut MapValue {
        let s = self.slots[id as usize];
        let is_map =
            (s.value >> 56) as u8 == TAG_HEAP && matches!(self.heap[(s.value & 0xFFFF_FFFF) as usize], Heap::Map(_));
        if !is_map {
            self.free_value(id);
            let h = self.alloc_heap(Heap::Map(MapValue::new()));
            self.slots[id as usize].value = (u64::from(TAG_HEAP) << 56) | u64::from(h);
        }
        let h = (self.slots[id as usize].value & 0xFFFF_FFFF) as usize;
        match &mut self.heap[h] {
            Heap::Map(m) => m,
            // Just made a map above.
            _ => unreachable!("map slot without a map"),
        }
    }

    /// Adjusts the accounted heap bytes after a map changed by `delta` bytes.
    pub(super) fn map_bytes_changed(&mut self, before: usize, after: usize) {
        self.heap_bytes = (self.heap_bytes + after).saturating_sub(before);
    }

    /// Accounted bytes of one map entry.
    pub(super) fn map_entry_bytes(key: &[u8], e: &MapEntry) -> usize {
        MAP_ENTRY_OVERHEAD + key.len() + e.value.as_ref().map_or(0, |v| v.len())
    }

    fn alloc_heap(&mut self, h: Heap) -> u32 {
        match self.heap_free.pop() {
            Some(i) => {
                self.heap[i as usize] = h;
                i
            }
            None => {
                self.heap.push(h);
                (self.heap.len() - 1) as u32
            }
        }
    }

    fn free_value(&mut self, id: u32) {
        let v = self.slots[id as usize].value;
        if (v >> 56) as u8 == TAG_HEAP {
            let h = (v & 0xFFFF_FFFF) as u32;
            match std::mem::replace(&mut self.heap[h as usize], Heap::Free) {
                Heap::Bytes(b) => self.heap_bytes -= b.len(),
                Heap::Map(m) => {
                    let bytes: usize = m.iter().map(|(k, e)| Self::map_entry_bytes(k, e)).sum();
                    self.heap_bytes = self.heap_bytes.saturating_sub(bytes);
                }
                Heap::Free => {}
            }
            self.heap_free.push(h);
        }
        self.slots[id as usize].value = u64::from(TAG_TOMB) << 56;
    }

    /// Bytes the table holds: what the memory budget counts.
    pub(super) fn bytes(&self) -> usize {
        // A slot, with the free slots eviction leaves (it evicts to 7/8 of the budget, and
        // reuses them; [`compact`](Self::compact) gives back more), the index as
        // allocated, then the arena and the heap table.
        self.live * std::mem::size_of::<Slot>() * 8 / 7
            + self.index.allocation_size()
            + self.arena.len().saturating_sub(self.arena_garbage)
            + self.heap_bytes
            + (self.heap.len() - self.heap_free.len()) * std::mem::size_of::<Heap>()
    }

    /// Rewrites the key arena without the keys of removed slots once they are most of it.
    fn maybe_compact_arena(&mut self) {
        if self.arena_garbage < 1 << 20 || self.arena_garbage * 2 < self.arena.len() {
            return;
        }
        let mut arena = Vec::with_capacity(self.arena.len() - self.arena_garbage);
        for s in self.slots.iter_mut().filter(|s| !s.is_free() && s.key_len != INT_KEY) {
            let start = s.key as usize;
            let new_start = arena.len() as u64;
            arena.extend_from_slice(&self.arena[start..start + s.key_len as usize]);
            s.key = new_start;
        }
        self.arena = arena;
        self.arena_garbage = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KG: u16 = 0;

    #[test]
    fn int_and_byte_keys_are_found_and_removed() {
        let mut t = Table::default();
        let k1 = int_key_bytes(42);
        let k2 = b"\x04\x00\x00\x00\x03abc".to_vec();
        let h1 = hash_key(&k1);
        let h2 = hash_key(&k2);
        let a = t.insert(0, h1, &k1, KG, 0);
        let b = t.insert(0, h2, &k2, KG, 0);
        let c = t.insert(1, h1, &k1, KG, 0);
        assert_eq!(t.find(0, h1, &k1, KG), Some(a));
        assert_eq!(t.find(0, h2, &k2, KG), Some(b));
        assert_eq!(t.find(1, h1, &k1, KG), Some(c));
        assert_eq!(&*t.key(a), &k1[..]);
        assert_eq!(&*t.key(b), &k2[..]);
        t.set_bytes(a, b"x");
        t.set_bytes(b, b"a longer value than inline");
        assert_eq!(t.value(a).bytes(), Some(&b"x"[..]));
        assert_eq!(t.value(b).bytes(), Some(&b"a longer value than inline"[..]));
        t.set_bytes(b, b"short");
        assert_eq!(t.value(b).bytes(), Some(&b"short"[..]));
        t.set_bytes(b, b"");
        assert_eq!(t.value(b).bytes(), Some(&b""[..]));
        t.remove(a);
        assert_eq!(t.find(0, h1, &k1, KG), None);
        assert_eq!(t.find(1, h1, &k1, KG), Some(c));
        assert_eq!(t.len(), 2);
        // The freed slot is reused.
        let d = t.insert(0, h1, &k1, KG, 0);
        assert_eq!(d, a);
    }

    #[test]
    fn growth_keeps_every_key_and_the_arena_compacts() {
        let mut t = Table::default();
        let keys: Vec<Vec<u8>> = (0..200_000u32).map(|i| format!("key-{i}").into_bytes()).collect();
        let ids: Vec<u32> = keys.iter().map(|k| t.insert(2, hash_key(k), k, 0, 0)).collect();
        for (k, id) in keys.iter().zip(&ids) {
            assert_eq!(t.find(2, hash_key(k), k, KG), Some(*id));
        }
        for id in &ids[..150_000] {
            t.remove(*id);
        }
        assert!(t.arena.len() < 1 << 20, "compacted: {}", t.arena.len());
        for (k, id) in keys.iter().zip(&ids).skip(150_000) {
            assert_eq!(t.find(2, hash_key(k), k, KG), Some(*id));
            assert_eq!(&*t.key(*id), &k[..]);
        }
    }

    #[test]
    fn churn_does_not_double_the_index() {
        // 170 000 keys: hashbrown alone settles on 524 288 buckets under churn (it
        // rehashes in place only under half load); the maintained index keeps 262 144.
        let live = 170_000u32;
        let mut t = Table::default();
        let key = |i: u32| int_key_bytes(i64::from(i));
        for i in 0..live {
            t.insert(0, hash_key(&key(i)), &key(i), KG, 0);
            if i % 1024 == 0 {
                t.maintain_index(4096);
            }
        }
        for i in live..live * 10 {
            let old = key(i - live);
            let id = t.find(0, hash_key(&old), &old, KG).expect("a live key");
            t.remove(id);
            t.insert(0, hash_key(&key(i)), &key(i), KG, 0);
            if i % 1024 == 0 {
                t.maintain_index(4096);
            }
            assert!(t.index_buckets() <= 262_144, "{} buckets at {i}", t.index_buckets());
        }
        for i in live * 9..live * 10 {
            assert!(t.find(0, hash_key(&key(i)), &key(i), KG).is_some());
        }
        assert_eq!(t.len(), live as usize);
    }

    #[test]
    fn compaction_moves_slots_into_holes_and_keeps_every_key() {
        let mut t = Table::default();
        let keys: Vec<Vec<u8>> = (0..10_000u32).map(|i| format!("k{i}").into_bytes()).collect();
        let ids: Vec<u32> = keys.iter().map(|k| t.insert(0, hash_key(k), k, KG, 0)).collect();
        for (i, k) in keys.iter().enumerate() {
            t.set_bytes(ids[i], k);
        }
        // Every other key goes, the last 1000 stay.
        for id in ids.iter().take(9_000).step_by(2) {
            t.remove(*id);
        }
        let mut moves = Vec::new();
        t.compact(0, |from, to, _| moves.push((from, to)));
        assert_eq!(t.id_bound(), t.len());
        assert_eq!(t.len(), 5_500);
        assert!(!moves.is_empty() && moves.iter().all(|(from, to)| to < from));
        for (i, k) in keys.iter().enumerate() {
            let found = t.find(0, hash_key(k), k, KG);
            if i < 9_000 && i % 2 == 0 {
                assert_eq!(found, None);
            } else {
                let id = found.expect("a kept key");
                assert_eq!(&*t.key(id), &k[..]);
                assert_eq!(t.value(id).bytes(), Some(&k[..]));
            }
        }
        // Below the threshold nothing moves.
        let before = t.id_bound();
        t.compact(0, |_, _, _| panic!("no move expected"));
        assert_eq!(t.id_bound(), before);
    }
}
