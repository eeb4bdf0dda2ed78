//! The in-memory index of aligned (tumbling and sliding) windows: which keys have which
//! windows open, their decoded states, and the windows in the order they fire.
//!
//! Aligned windows are shared by every key: all keys' `[start, end)` windows fire at the
//! same watermark. So the firing index is per window (a *pane*: the entries of every key
//! in one window), not per key and window, and a watermark pops whole panes. Keys are
//! interned once into slots in a hash table probed with the hash the key extraction
//! computed already ([`BatchKeys::hashes`](crate::key::BatchKeys::hashes)); a row then
//! finds its window's entry in its slot's short list of open windows (one or two for a
//! tumbling window, `size / slide` for a sliding one). This is what makes a window count
//! cost a few hash probes per row instead of a map lookup keyed by owned key bytes.
//!
//! The table is not the durable copy: the window operator writes changed entries to keyed
//! state before every snapshot and can evict decoded states (keeping only the index) when
//! they outgrow its limit, so a large state spills to the state backend.

use std::collections::BTreeMap;

use hashbrown::HashTable;

use super::aggregate::{Acc, Scalar};
use super::state::WindowState;
use crate::key::{KeyRef, hash_key, int_key_bytes, int_key_of, key_group_of_hash};

/// Window id: `(start, end)` in ms.
pub(super) type WindowId = (i64, i64);

/// Key bytes: most keys (an integer is 9 bytes) are kept in the slot itself, so that
/// comparing a row's key with a slot's touches one cache line and no second allocation.
#[derive(Clone)]
enum KeyBytes {
    Inline {
        len: u8,
        bytes: [u8; INLINE_KEY],
    },
    /// A thin pointer, so that the enum stays 16 bytes and the slot one cache line
    /// (`Box<[u8]>` is two words); the extra allocation is only for keys that are long.
    #[allow(clippy::box_collection)]
    Heap(Box<Vec<u8>>),
}

/// Keys up to this long are kept inline (an integer key is 9 bytes, two are 18).
const INLINE_KEY: usize = 14;

impl KeyBytes {
    fn new(bytes: &[u8]) -> Self {
        if bytes.len() <= INLINE_KEY {
            let mut inline = [0u8; INLINE_KEY];
            inline[..bytes.len()].copy_from_slice(bytes);
            KeyBytes::Inline { len: bytes.len() as u8, bytes: inline }
        } else {
            KeyBytes::Heap(Box::new(bytes.to_vec()))
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            KeyBytes::Inline { len, bytes } => &bytes[..usize::from(*len)],
            KeyBytes::Heap(b) => b,
        }
    }
}

/// `a == b`, without a `memcmp` call for short keys: two (overlapping) 8-byte loads per
/// side cover 8 to 16 bytes.
#[inline]
fn key_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if (8..=16).contains(&n) {
        let word = |s: &[u8], at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&s[at..at + 8]);
            u64::from_ne_bytes(w)
        };
        return word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8);
    }
    a == b
}

/// An interned key and its open windows, in one cache line: finding a row's entry reads
/// only this line (and the hash table's control bytes).
#[repr(align(64))]
struct Slot {
    hash: u64,
    bytes: KeyBytes,
    /// The first open windows, by start, and their entries; the rest are in the table's
    /// `overflow`. A tumbling window keeps one or two open per key, a sliding one
    /// `size / slide`. All windows of one table have one size, so the start identifies one.
    windows: [(i64, u32); INLINE_WINDOWS],
    open: u32,
    key_group: u16,
}

const INLINE_WINDOWS: usize = 2;

impl Slot {
    /// The integer, when the key is one integer column.
    fn int_key(&self) -> Option<i64> {
        int_key_of(self.bytes.as_slice())
    }
}

/// A key of one integer in the integer index, with the entries of its latest window and
/// of the one before it.
#[derive(Debug, Clone, Copy)]
struct IntBucket {
    key: i64,
    /// Start of the window of `entry` (`entry` is `FREE` when there is none).
    start: i64,
    slot: u32,
    entry: u32,
    /// The entry of the window starting one window length before `start`, or `FREE`.
    /// Rows within the disorder after a window boundary alternate between a key's two
    /// latest tumbling windows: with one cached, about every other such row missed it.
    prev: u32,
}

impl IntBucket {
    /// Caches entry `e` of the window starting at `start` (window length `size`): a newer
    /// window becomes the latest (and the latest its predecessor when adjacent); the
    /// window just before the latest becomes the predecessor; older windows (a sliding
    /// window's others) are not cached.
    fn cache(&mut self, start: i64, size: i64, e: u32) {
        if self.entry == FREE || start > self.start {
            let adjacent = self.entry != FREE && self.start == start.wrapping_sub(size);
            self.prev = if adjacent { self.entry } else { FREE };
            self.start = start;
            self.entry = e;
        } else if start == self.start.wrapping_sub(size) {
            self.prev = e;
        }
    }

    /// Forgets entry `e` (its window was dropped).
    fn forget(&mut self, e: u32) {
        if self.entry == e {
            self.entry = FREE;
        }
        if self.prev == e {
            self.prev = FREE;
        }
    }
}

/// Hash of an integer key for the integer index (a multiplicative mix: hashbrown takes
/// its bucket from the low bits and its tag from the top seven).
fn int_hash(v: i64) -> u64 {
    let h = (v as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^ (h >> 29)
}

/// Per entry, the batch that last touched it, its rows in that batch and the first of
/// them: grouping rows per entry without a per-batch map, in an array small enough to
/// stay in cache.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Mark {
    pub(super) stamp: u32,
    /// Rows of the entry in the batch; then where they start in the rows sorted by entry.
    pub(super) count: u32,
    pub(super) first_row: u32,
}

/// The state of one key in one window, as far as folding rows needs it: 40 bytes, so
/// that a batch's walk through the entries stays in cache. The rest of the keyed-state
/// form ([`WindowState`]) is kept aside: the accumulators in the table's flat `accs`, the
/// key's column values once per key (slot), the count-window clock in `first_ms`.
pub(super) struct Entry {
    slot: u32,
    /// The state is decoded in memory; otherwise it lives in keyed state only (evicted).
    resident: bool,
    /// Changed since it was last written to keyed state.
    pub(super) dirty: bool,
    /// Keyed state holds a version of it (so dropping it needs a delete).
    pub(super) in_store: bool,
    /// The window's result was emitted (later results are updates).
    pub(super) fired: bool,
    window: WindowId,
    /// Rows folded in.
    pub(super) rows: u64,
}

impl Entry {
    /// The window of this entry.
    pub(super) fn window(&self) -> WindowId {
        self.window
    }

    /// Whether its state is decoded in memory.
    pub(super) fn resident(&self) -> bool {
        self.resident
    }
}

/// The entries of every key in one window.
#[derive(Default)]
struct Pane {
    entries: Vec<u32>,
    /// Its results were emitted (it is kept for the allowed lateness).
    fired: bool,
}

/// An entry, its accumulators and its key's column values.
pub(super) type EntryMut<'a> = (&'a mut Entry, &'a mut [Acc], &'a [Option<Scalar>]);

/// Entry ids index a slab; a freed entry has this slot.
const FREE: u32 = u32::MAX;

/// See the module docs.
#[derive(Default)]
pub(super) struct WindowTable {
    index: HashTable<u32>,
    /// The slots whose key is one integer, by the integer: rows keyed on one Int64
    /// column find their slot without encoding or hashing the key bytes, and their entry
    /// in the key's latest window without reading the slot.
    int_index: HashTable<IntBucket>,
    slots: Vec<Slot>,
    /// Windows of a slot beyond its inline ones (sliding windows), by slot.
    overflow: Vec<Vec<(i64, u32)>>,
    marks: Vec<Mark>,
    /// The accumulators of every entry, `stride` per entry, by entry id: folding a batch
    /// walks them in id order through one array rather than one allocation per entry.
    accs: Vec<Acc>,
    stride: usize,
    /// Every aggregation is a count(*): the accumulators are not kept up to date but
    /// derived from the entry's `rows` whenever they are read.
    counts_only: bool,
    /// By entry id: `WindowState::first_ms`.
    first_ms: Vec<i64>,
    /// By slot id: the key's column values (for result rows), once its first state came.
    key_values: Vec<Vec<Option<Scalar>>>,
    free_slots: Vec<u32>,
    entries: Vec<Entry>,
    free_entries: Vec<u32>,
    /// Panes by `(end, start)`: fire and cleanup times both grow with the end.
    panes: BTreeMap<(i64, i64), Pane>,
    live: usize,
    resident: usize,
}

impl WindowTable {
    /// Entries (key and window pairs) in the table.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.live
    }

    /// Whether no window is open.
    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.live == 0 && self.panes.is_empty()
    }

    /// Entries whose state is decoded in memory.
    pub(super) fn resident(&self) -> usize {
        self.resident
    }

    /// The entry of `key` in window `w`, created (stateless) when there is none; and
    /// whether it was created.
    pub(super) fn entry(&mut self, hash: u64, key_group: u16, bytes: &[u8], w: WindowId) -> (u32, bool) {
        let slots = &self.slots;
        let found = self.index.find(hash, |&s| {
            let slot = &slots[s as usize];
            slot.hash == hash && slot.key_group == key_group && key_eq(slot.bytes.as_slice(), bytes)
        });
        let slot_id = match found {
            Some(&s) => s,
            None => self.new_slot(hash, key_group, bytes),
        };
        self.entry_in_slot(slot_id, w)
    }

    /// [`entry`](Self::entry) for the key of one integer column, `v` (its bytes, hash and
    /// key group computed only when the key is new).
    pub(super) fn int_entry(&mut self, v: i64, max_parallelism: u16, w: WindowId) -> (u32, bool) {
        let hash = int_hash(v);
        let size = w.1.wrapping_sub(w.0);
        let slot_id = match self.int_index.find(hash, |b| b.key == v) {
            Some(b) if b.entry != FREE && b.start == w.0 => return (b.entry, false),
            Some(b) if b.prev != FREE && b.start.wrapping_sub(size) == w.0 => return (b.prev, false),
            Some(b) => b.slot,
            None => {
                let bytes = int_key_bytes(v);
                let key_hash = hash_key(&bytes);
                self.new_slot(key_hash, key_group_of_hash(key_hash, max_parallelism), &bytes)
            }
        };
        let (e, new) = self.entry_in_slot(slot_id, w);
        if let Some(b) = self.int_index.find_mut(hash, |b| b.key == v) {
            b.cache(w.0, size, e);
        }
        (e, new)
    }

    fn entry_in_slot(&mut self, slot_id: u32, w: WindowId) -> (u32, bool) {
        if let Some(e) = self.find_window(slot_id, w.0) {
            return (e, false);
        }
        let entry =
            Entry { slot: slot_id, resident: false, dirty: false, in_store: false, fired: false, window: w, rows: 0 };
        let e = match self.free_entries.pop() {
            Some(e) => {
                self.entries[e as usize] = entry;
                self.marks[e as usize] = Mark::default();
                e
            }
            None => {
                self.entries.push(entry);
                self.marks.push(Mark::default());
                self.first_ms.push(0);
                (self.entries.len() - 1) as u32
            }
        };
        self.push_window(slot_id, w.0, e);
        self.panes.entry((w.1, w.0)).or_default().entries.push(e);
        self.live += 1;
        (e, true)
    }

    fn find_window(&self, slot_id: u32, start: i64) -> Option<u32> {
        let slot = &self.slots[slot_id as usize];
        let open = slot.open as usize;
        if let Some(&(_, e)) = slot.windows[..open.min(INLINE_WINDOWS)].iter().find(|(s, _)| *s == start) {
            return Some(e);
        }
        if open > INLINE_WINDOWS {
            return self.overflow[slot_id as usize].iter().find(|(s, _)| *s == start).map(|&(_, e)| e);
        }
        None
    }

    fn push_window(&mut self, slot_id: u32, start: i64, e: u32) {
        let slot = &mut self.slots[slot_id as usize];
        let open = slot.open as usize;
        slot.open += 1;
        if open < INLINE_WINDOWS {
            slot.windows[open] = (start, e);
            return;
        }
        if self.overflow.len() <= slot_id as usize {
            self.overflow.resize_with(slot_id as usize + 1, Vec::new);
        }
        self.overflow[slot_id as usize].push((start, e));
    }

    /// Takes entry `e` out of its slot's windows; true when the slot has none left.
    fn remove_window(&mut self, slot_id: u32, e: u32) -> bool {
        let slot = &mut self.slots[slot_id as usize];
        let open = slot.open as usize;
        let spill = if open > INLINE_WINDOWS { self.overflow.get_mut(slot_id as usize) } else { None };
        match slot.windows[..open.min(INLINE_WINDOWS)].iter().position(|&(_, x)| x == e) {
            Some(i) => {
                // The last window takes its place.
                let last = match spill {
                    Some(rest) => rest.pop(),
                    None => Some(slot.windows[open - 1]),
                };
                if let Some(last) = last {
                    slot.windows[i] = last;
                }
            }
            None => {
                if let Some(rest) = spill {
                    rest.retain(|&(_, x)| x != e);
                }
            }
        }
        slot.open -= 1;
        slot.open == 0
    }

    fn new_slot(&mut self, hash: u64, key_group: u16, bytes: &[u8]) -> u32 {
        let slot = Slot { hash, key_group, bytes: KeyBytes::new(bytes), windows: [(0, 0); INLINE_WINDOWS], open: 0 };
        let id = match self.free_slots.pop() {
            Some(id) => {
                self.slots[id as usize] = slot;
                id
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        let slots = &self.slots;
        self.index.insert_unique(hash, id, |&s| slots[s as usize].hash);
        if let Some(v) = slots[id as usize].int_key() {
            self.int_index.insert_unique(
                int_hash(v),
                IntBucket { key: v, start: 0, slot: id, entry: FREE, prev: FREE },
                |b| int_hash(b.key),
            );
        }
        id
    }

    /// An entry restored from keyed state.
    pub(super) fn insert_restored(&mut self, hash: u64, key: KeyRef<'_>, w: WindowId, state: WindowState) {
        let fired = state.fired;
        let (e, _) = self.entry(hash, key.key_group, key.bytes, w);
        self.set_state(e, state);
        let entry = &mut self.entries[e as usize];
        entry.in_store = true;
        entry.dirty = false;
        if fired {
            self.mark_fired(w);
        }
    }

    /// The entry with id `e`.
    pub(super) fn get(&self, e: u32) -> &Entry {
        &self.entries[e as usize]
    }

    /// The entry with id `e`, to change.
    pub(super) fn get_mut(&mut self, e: u32) -> &mut Entry {
        &mut self.entries[e as usize]
    }

    /// The key of entry `e`.
    pub(super) fn key(&self, e: u32) -> KeyRef<'_> {
        let slot = &self.slots[self.entries[e as usize].slot as usize];
        KeyRef { key_group: slot.key_group, bytes: slot.bytes.as_slice() }
    }

    /// Gives entry `e` its decoded state.
    pub(super) fn set_state(&mut self, e: u32, mut state: WindowState) {
        if self.stride == 0 {
            self.stride = state.accs.len();
        }
        let at = e as usize * self.stride;
        if self.accs.len() < at + self.stride {
            self.accs.resize(self.entries.len() * self.stride, Acc::Count(0));
        }
        for (slot, acc) in self.accs[at..at + self.stride].iter_mut().zip(state.accs.drain(..)) {
            *slot = acc;
        }
        let entry = &mut self.entries[e as usize];
        if !entry.resident {
            self.resident += 1;
        }
        entry.resident = true;
        entry.fired = state.fired;
        entry.rows = state.rows;
        self.first_ms[e as usize] = state.first_ms;
        let slot = entry.slot as usize;
        if self.key_values.len() <= slot {
            self.key_values.resize_with(slot + 1, Vec::new);
        }
        if self.key_values[slot].is_empty() {
            self.key_values[slot] = state.key;
        }
    }

    /// Whether every aggregation is a count(*) (see the field).
    pub(super) fn set_counts_only(&mut self, counts_only: bool) {
        self.counts_only = counts_only;
    }

    /// Entry `e` (if resident), its accumulators and its key's column values, to change.
    pub(super) fn state_mut(&mut self, e: u32) -> Option<EntryMut<'_>> {
        let at = e as usize * self.stride;
        let entry = &mut self.entries[e as usize];
        if !entry.resident {
            return None;
        }
        if self.counts_only {
            let count = Acc::Count(i64::try_from(entry.rows).unwrap_or(i64::MAX));
            self.accs[at..at + self.stride].fill(count);
        }
        let key = self.key_values.get(entry.slot as usize).map_or(&[][..], Vec::as_slice);
        Some((entry, &mut self.accs[at..at + self.stride], key))
    }

    /// The decoded state of entry `e` in the form kept in keyed state.
    pub(super) fn full_state(&self, e: u32) -> Option<WindowState> {
        let entry = &self.entries[e as usize];
        if !entry.resident {
            return None;
        }
        let at = e as usize * self.stride;
        let accs = if self.counts_only {
            vec![Acc::Count(i64::try_from(entry.rows).unwrap_or(i64::MAX)); self.stride]
        } else {
            self.accs[at..at + self.stride].to_vec()
        };
        Some(WindowState {
            key: self.key_values.get(entry.slot as usize).cloned().unwrap_or_default(),
            accs,
            fired: entry.fired,
            rows: entry.rows,
            first_ms: self.first_ms[e as usize],
        })
    }

    /// Forgets every batch stamp (when the batch counter wraps around).
    pub(super) fn reset_stamps(&mut self) {
        self.marks.fill(Mark::default());
    }

    /// The batch marks of all entries (by entry id).
    pub(super) fn marks(&mut self) -> &mut [Mark] {
        &mut self.marks
    }

    /// Entry ids in use are below this.
    pub(super) fn capacity(&self) -> usize {
        self.entries.len()
    }

    /// Marks window `w`'s pane as fired.
    pub(super) fn mark_fired(&mut self, w: WindowId) {
        if let Some(pane) = self.panes.get_mut(&(w.1, w.0)) {
            pane.fired = true;
        }
    }

    /// The first pane (smallest end): its window and whether it fired.
    pub(super) fn first_pane(&self) -> Option<(WindowId, bool)> {
        self.panes.iter().next().map(|(&(end, start), p)| ((start, end), p.fired))
    }

    /// The panes whose end satisfies `due`, in firing order, as long as it holds (the
    /// fire and cleanup times grow with the end).
    pub(super) fn panes_while(&self, mut due: impl FnMut(i64) -> bool) -> Vec<(WindowId, bool)> {
        self.panes
            .iter()
            .take_while(|((end, _), _)| due(*end))
            .map(|(&(end, start), p)| ((start, end), p.fired))
            .collect()
    }

    /// The entries of window `w`, ordered by key group and key bytes (the order results
    /// are emitted in, independent of arrival).
    pub(super) fn pane_entries(&self, w: WindowId) -> Vec<u32> {
        let mut entries = self.panes.get(&(w.1, w.0)).map(|p| p.entries.clone()).unwrap_or_default();
        entries.sort_unstable_by(|&a, &b| {
            let (ka, kb) = (self.key(a), self.key(b));
            (ka.key_group, ka.bytes).cmp(&(kb.key_group, kb.bytes))
        });
        entries
    }

    /// Drops window `w` with every key's entry in it; a key left with no open window is
    /// forgotten.
    pub(super) fn remove_pane(&mut self, w: WindowId) {
        let Some(pane) = self.panes.remove(&(w.1, w.0)) else { return };
        for e in pane.entries {
            let entry = &mut self.entries[e as usize];
            if std::mem::take(&mut entry.resident) {
                self.resident -= 1;
            }
            let slot_id = std::mem::replace(&mut entry.slot, FREE);
            self.free_entries.push(e);
            self.live -= 1;
            let int_key = self.slots[slot_id as usize].int_key();
            if let Some(v) = int_key
                && let Some(b) = self.int_index.find_mut(int_hash(v), |b| b.key == v)
            {
                b.forget(e);
            }
            if self.remove_window(slot_id, e) {
                let slot = &mut self.slots[slot_id as usize];
                let hash = slot.hash;
                if let Ok(found) = self.index.find_entry(hash, |&s| s == slot_id) {
                    found.remove();
                }
                if let Some(v) = int_key
                    && let Ok(found) = self.int_index.find_entry(int_hash(v), |b| b.key == v)
                {
                    found.remove();
                }
                slot.bytes = KeyBytes::Inline { len: 0, bytes: [0; INLINE_KEY] };
                if let Some(values) = self.key_values.get_mut(slot_id as usize) {
                    values.clear();
                }
                self.free_slots.push(slot_id);
            }
        }
    }

    /// Calls `write` with every changed decoded entry, then marks it written.
    pub(super) fn write_dirty<E>(
        &mut self,
        mut write: impl FnMut(KeyRef<'_>, WindowId, &WindowState) -> Result<(), E>,
    ) -> Result<(), E> {
        for e in 0..self.entries.len() {
            let entry = &self.entries[e];
            if entry.slot == FREE || !entry.dirty {
                continue;
            }
            let Some(state) = self.full_state(e as u32) else { continue };
            let slot = &self.slots[entry.slot as usize];
            write(KeyRef { key_group: slot.key_group, bytes: slot.bytes.as_slice() }, entry.window, &state)?;
            let entry = &mut self.entries[e];
            entry.dirty = false;
            entry.in_store = true;
        }
        Ok(())
    }

    /// Drops every decoded state that is written to keyed state, keeping the index.
    pub(super) fn evict(&mut self) {
        for entry in self.entries.iter_mut().filter(|e| e.slot != FREE && !e.dirty && e.in_store) {
            if std::mem::take(&mut entry.resident) {
                self.resident -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(rows: u64) -> WindowState {
        WindowState { key: Vec::new(), accs: Vec::new(), fired: false, rows, first_ms: 0 }
    }

    #[test]
    fn keys_and_windows_are_interned_and_freed_with_their_panes() {
        let mut t = WindowTable::default();
        let (a0, new) = t.entry(1, 0, b"a", (0, 10));
        assert!(new);
        assert_eq!(t.entry(1, 0, b"a", (0, 10)), (a0, false));
        // Same hash, other bytes: another key.
        let (b0, new) = t.entry(1, 0, b"b", (0, 10));
        assert!(new && b0 != a0);
        let (a1, _) = t.entry(1, 0, b"a", (10, 20));
        t.set_state(a0, state(1));
        assert_eq!((t.len(), t.resident()), (3, 1));
        assert_eq!(t.panes_while(|end| end <= 10), vec![((0, 10), false)]);
        assert_eq!(t.pane_entries((0, 10)), vec![a0, b0]);
        t.remove_pane((0, 10));
        assert_eq!((t.len(), t.resident()), (1, 0));
        assert_eq!(t.key(a1).bytes, b"a");
        // "b" has no window left and was forgotten; a new entry reuses the slab.
        let (b1, new) = t.entry(1, 0, b"b", (10, 20));
        assert!(new);
        assert!([a0, b0].contains(&b1));
        t.remove_pane((10, 20));
        assert!(t.is_empty());
        assert!(t.index.is_empty());
    }

    #[test]
    fn integer_keys_meet_the_same_slots_as_their_encoded_bytes() {
        let mut t = WindowTable::default();
        let bytes = int_key_bytes(42);
        let hash = hash_key(&bytes);
        let kg = key_group_of_hash(hash, 128);
        let (by_int, new) = t.int_entry(42, 128, (0, 10));
        assert!(new);
        assert_eq!(t.entry(hash, kg, &bytes, (0, 10)), (by_int, false));
        assert_eq!(t.key(by_int), KeyRef { key_group: kg, bytes: &bytes });
        let (other, new) = t.entry(hash_key(&int_key_bytes(7)), 0, &int_key_bytes(7), (0, 10));
        assert!(new);
        assert_eq!(t.int_entry(7, 128, (0, 10)), (other, false));
        t.remove_pane((0, 10));
        assert!(t.int_index.is_empty() && t.index.is_empty());
    }

    #[test]
    fn an_integer_key_alternating_between_two_windows_finds_both_until_they_are_dropped() {
        let mut t = WindowTable::default();
        let (old, _) = t.int_entry(5, 128, (0, 10));
        let (new, _) = t.int_entry(5, 128, (10, 20));
        for _ in 0..3 {
            assert_eq!(t.int_entry(5, 128, (0, 10)), (old, false));
            assert_eq!(t.int_entry(5, 128, (10, 20)), (new, false));
        }
        // Both are cached now: looking up either leaves the other in the bucket.
        let b = *t.int_index.find(int_hash(5), |b| b.key == 5).unwrap();
        assert_eq!((b.start, b.entry, b.prev), (10, new, old));
        // The dropped window is forgotten; its slab entry may be reused by another key,
        // and key 5 must then get a new entry, not the reused one.
        t.remove_pane((0, 10));
        let (other, _) = t.int_entry(6, 128, (0, 10));
        assert_eq!(other, old, "the freed entry is reused");
        let (again, fresh) = t.int_entry(5, 128, (0, 10));
        assert!(fresh && again != other && again != new);
        assert_eq!(t.int_entry(5, 128, (10, 20)), (new, false));
        // An older, non-adjacent window is found through the slot, not cached.
        let (older, _) = t.int_entry(5, 128, (-20, -10));
        assert_eq!(t.int_entry(5, 128, (-20, -10)), (older, false));
        let b = *t.int_index.find(int_hash(5), |b| b.key == 5).unwrap();
        assert_eq!((b.start, b.entry), (10, new));
    }

    #[test]
    fn short_and_long_keys_compare_by_content() {
        for n in 0..40 {
            let a: Vec<u8> = (0..n as u8).collect();
            assert!(key_eq(&a, &a.clone()));
            assert_eq!(KeyBytes::new(&a).as_slice(), &a[..]);
            for i in 0..n {
                let mut b = a.clone();
                b[i] ^= 1;
                assert!(!key_eq(&a, &b), "{n} bytes differing at {i}");
            }
            assert!(!key_eq(&a, &[a.as_slice(), &[0]].concat()));
        }
    }

    #[test]
    fn only_written_states_are_evicted() {
        let mut t = WindowTable::default();
        let (a, _) = t.entry(7, 3, b"a", (0, 10));
        let (b, _) = t.entry(8, 3, b"b", (0, 10));
        t.set_state(a, state(1));
        t.set_state(b, state(2));
        t.get_mut(a).dirty = true;
        t.get_mut(b).dirty = true;
        let mut written = Vec::new();
        t.write_dirty(|key, w, s| {
            written.push((key.bytes.to_vec(), w, s.rows));
            Ok::<_, ()>(())
        })
        .unwrap();
        written.sort();
        assert_eq!(written, vec![(b"a".to_vec(), (0, 10), 1), (b"b".to_vec(), (0, 10), 2)]);
        t.get_mut(b).dirty = true;
        t.evict();
        assert_eq!(t.resident(), 1, "the changed state stays until written");
        assert!(!t.get(a).resident() && t.get(a).in_store);
    }
}
