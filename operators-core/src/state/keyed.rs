//! Keyed state: value and map state per key, with optional time-to-live.
//!
//! An operator registers named states in `open` and reads or writes them with the key of
//! the row at hand:
//!
//! ```
//! # use operators_core::state::{KeyedStateStore, ValueState};
//! # use operators_core::key::KeyRef;
//! # fn demo(store: &mut KeyedStateStore, key: KeyRef<'_>) -> operators_core::Result<()> {
//! let count: ValueState<u64> = store.value_state("count", None)?;
//! let n = count.get(store, key)?.unwrap_or(0) + 1;
//! count.put(store, key, &n)?;
//! # Ok(()) }
//! ```
//!
//! The working state is an in-memory hash table (see `table.rs`): a row costs a hash
//! probe, and an operator that holds a batch's keys ([`BatchKeys`]) reuses the hashes its
//! routing computed ([`ValueState::put_if_absent_batch`]). A changed entry is marked, not
//! copied: the next checkpoint collects the marked entries into a [`Changelog`] and writes
//! them as a delta file, sorted by store key. Store keys start with the key group, so a
//! subtask's entries can be split by key group when the job is restored at another
//! parallelism.
//!
//! With a spill store and a [`MemoryBudget`] (the disk backend), state may outgrow
//! memory: past the budget, entries not used recently are written to the spill store in
//! batches and dropped from the table, and read back when their key comes again. Changes
//! evicted before they were checkpointed wait in the spill store for the next changelog,
//! so a checkpoint holds every change whatever was evicted.

use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::KeyValueStore;
use super::kvfile::{KvEntry, KvFileWriter, MergedChain};
use super::table::{
    DIRTY, IN_SPILL, MAX_STATES, MapEntry, NO_EXPIRY, PERSISTED, REFERENCED, SPILL_CLEAN, Table, Value,
};
use crate::clock::SharedClock;
use crate::error::{Error, Result};
use crate::key::{BatchKeys, KeyGroupRange, KeyRef, hash_key};

const ENVELOPE_PLAIN: u8 = 0;
const ENVELOPE_TTL: u8 = 1;

/// Spill-store key prefixes: an evicted slot, and a change evicted before a checkpoint
/// took it (keyed by its store key, so the region reads back sorted).
const SPILL_SLOT: u8 = 0;
const SPILL_DELTA: u8 = 1;
/// Restored entries of a state not registered yet: state id, then the store key.
const SPILL_RAW: u8 = 2;
// Slots are read by key; the other two regions are only scanned (see `SCANNED_FROM`).
const _: () = assert!(SPILL_SLOT < super::SCANNED_FROM && SPILL_DELTA >= super::SCANNED_FROM);
const _: () = assert!(SPILL_RAW >= super::SCANNED_FROM);

/// Budget checks happen every this many writes (a check sums the table's bytes).
const CHECK_EVERY: u32 = 1024;

/// Changed keys a checkpoint gathers at a time, by key group, to write them in order:
/// all at once took 4 bytes per changed key (8 MB for 2 M keys) at the checkpoint, the
/// moment a run that fills its memory budget peaks. Each pass reads the change bitmap,
/// so a pass takes at least a `MAX_ID_PASSES`th of the changes: a checkpoint of many
/// millions of changes makes a few passes, not hundreds.
const IDS_PER_PASS: usize = 1 << 18;

/// The most passes a checkpoint makes over the change bitmap (see [`IDS_PER_PASS`]),
/// short of a single key group holding more than a pass.
const MAX_ID_PASSES: usize = 8;

/// When a state entry's time-to-live is renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TtlUpdate {
    /// On creation and on every write (Flink's `OnCreateAndWrite`).
    #[default]
    OnCreateAndWrite,
    /// Also on every read.
    OnReadAndWrite,
}

/// Time-to-live of a state's entries. Expired entries are never returned and are removed
/// by a periodic sweep, so state does not grow without bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateTtl {
    /// How long an entry lives after its last renewal.
    pub ttl: Duration,
    /// What renews it.
    pub update: TtlUpdate,
}

impl StateTtl {
    /// Entries live `ttl` after creation or their last write.
    pub fn after_write(ttl: Duration) -> Self {
        Self { ttl, update: TtlUpdate::OnCreateAndWrite }
    }

    fn ttl_ms(&self) -> i64 {
        i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX)
    }

    fn expiry(ttl: Option<&StateTtl>, now: i64) -> i64 {
        ttl.map_or(NO_EXPIRY, |t| now.saturating_add(t.ttl_ms()).min(NO_EXPIRY - 1))
    }
}

/// Changes since the last checkpoint: store key → new value, or a deletion. Keys are
/// unique; [`for_each_sorted`](Self::for_each_sorted) visits them in the order a state
/// file needs.
///
/// Changes are kept in one buffer per key group (the first two bytes of a store key), so
/// that sorting a large checkpoint works on one group's changes at a time, within the
/// processor's caches, instead of jumping across the whole log; and a change costs its
/// bytes, two length bytes for short keys and values, and a 4-byte offset.
#[derive(Debug, Clone, Default)]
pub struct Changelog {
    groups: Vec<Group>,
    /// Group of each leading two bytes seen, for `push`.
    by_prefix: HashMap<u16, usize>,
    len: usize,
}

/// The changes of one key group.
#[derive(Debug, Clone)]
struct Group {
    prefix: u16,
    /// Records: `varint(key_len) varint(value_len + 1, or 0 for a deletion) key value`.
    data: Vec<u8>,
    starts: Starts,
}

/// Where each record starts: 4 bytes each while the buffer is under 4 GiB.
#[derive(Debug, Clone)]
enum Starts {
    Narrow(Vec<u32>),
    Wide(Vec<u64>),
}

impl Starts {
    fn len(&self) -> usize {
        match self {
            Starts::Narrow(v) => v.len(),
            Starts::Wide(v) => v.len(),
        }
    }

    fn get(&self, i: usize) -> usize {
        match self {
            Starts::Narrow(v) => v[i] as usize,
            Starts::Wide(v) => v[i] as usize,
        }
    }

    fn push(&mut self, start: usize) {
        if let Starts::Narrow(v) = self {
            match u32::try_from(start) {
                Ok(s) => return v.push(s),
                Err(_) => *self = Starts::Wide(v.iter().map(|&s| u64::from(s)).collect()),
            }
        }
        if let Starts::Wide(v) = self {
            v.push(start as u64);
        }
    }
}

impl Group {
    fn get(&self, i: usize) -> (&[u8], Option<&[u8]>) {
        let mut pos = self.starts.get(i);
        let key_len = get_varint(&self.data, &mut pos) as usize;
        let value_len = get_varint(&self.data, &mut pos) as usize;
        let key = &self.data[pos..pos + key_len];
        let value = (value_len > 0).then(|| &self.data[pos + key_len..pos + key_len + value_len - 1]);
        (key, value)
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a varint written by `put_varint` at `*pos` (the buffer is this module's own).
fn get_varint(data: &[u8], pos: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let b = data[*pos];
        *pos += 1;
        v |= u64::from(b & 0x7F) << shift;
        if b < 0x80 {
            return v;
        }
        shift += 7;
    }
}

/// The first 16 bytes of a key, zero-padded, as a number that orders as the bytes do
/// (a shorter key that is a prefix of a longer one orders first either way, or ties).
fn key_prefix(key: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    let n = key.len().min(16);
    b[..n].copy_from_slice(&key[..n]);
    u128::from_be_bytes(b)
}

/// The group of a key: its first two bytes (the key group of a store key).
fn group_prefix(key: &[u8]) -> u16 {
    (u16::from(key.first().copied().unwrap_or(0)) << 8) | u16::from(key.get(1).copied().unwrap_or(0))
}

impl Changelog {
    /// Number of changes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Records a change; the caller keeps keys unique.
    pub fn push(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        let prefix = group_prefix(key);
        let g = match self.by_prefix.get(&prefix) {
            Some(&g) => g,
            None => {
                self.groups.push(Group { prefix, data: Vec::new(), starts: Starts::Narrow(Vec::new()) });
                self.by_prefix.insert(prefix, self.groups.len() - 1);
                self.groups.len() - 1
            }
        };
        let group = &mut self.groups[g];
        if group.starts.len() >= u32::MAX as usize {
            return Err(Error::State {
                operator: String::new(),
                message: "more than 4 294 967 295 keyed-state changes in one key group and checkpoint".into(),
            });
        }
        group.starts.push(group.data.len());
        put_varint(&mut group.data, key.len() as u64);
        put_varint(&mut group.data, value.map_or(0, |v| v.len() as u64 + 1));
        group.data.extend_from_slice(key);
        if let Some(v) = value {
            group.data.extend_from_slice(v);
        }
        self.len += 1;
        Ok(())
    }

    /// Every change, grouped by key group, in the order recorded within a group.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.groups.iter().flat_map(|g| (0..g.starts.len()).map(move |i| g.get(i)))
    }

    /// Calls `f` with every change in key order.
    ///
    /// Group by group (a key group's changes are contiguous), each sorted by the first 16
    /// key bytes as one number — a whole key for an integer key of one value state — and
    /// only keys tied on those by their bytes.
    pub fn for_each_sorted(&self, mut f: impl FnMut(&[u8], Option<&[u8]>) -> Result<()>) -> Result<()> {
        let mut groups: Vec<&Group> = self.groups.iter().collect();
        groups.sort_unstable_by_key(|g| g.prefix);
        let mut keyed: Vec<(u128, u32)> = Vec::new();
        for g in groups {
            keyed.clear();
            // `push` keeps a group's record count within u32.
            keyed.extend((0..g.starts.len()).map(|i| (key_prefix(g.get(i).0), i as u32)));
            keyed.sort_unstable();
            let mut run = 0;
            while run < keyed.len() {
                let mut run_end = run + 1;
                while run_end < keyed.len() && keyed[run_end].0 == keyed[run].0 {
                    run_end += 1;
                }
                if run_end - run > 1 {
                    keyed[run..run_end].sort_unstable_by(|a, b| g.get(a.1 as usize).0.cmp(g.get(b.1 as usize).0));
                }
                run = run_end;
            }
            for &(_, i) in &keyed {
                let (k, v) = g.get(i as usize);
                f(k, v)?;
            }
        }
        Ok(())
    }

    /// Adds the changes of `older` whose keys this log does not have.
    fn merge_older(&mut self, older: &Changelog) -> Result<()> {
        let keys: HashSet<Vec<u8>> = self.iter().map(|(k, _)| k.to_vec()).collect();
        for (k, v) in older.iter() {
            if !keys.contains(k) {
                self.push(k, v)?;
            }
        }
        Ok(())
    }
}

/// Memory for keyed state, shared by the subtasks of a job. Past it, subtasks with a
/// spill store evict entries not used recently.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    used: AtomicU64,
}

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Self {
        Self { limit, used: AtomicU64::new(0) }
    }

    /// The limit in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes the job's keyed state holds in memory now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    fn update(&self, from: u64, to: u64) {
        if to >= from {
            self.used.fetch_add(to - from, Ordering::Relaxed);
        } else {
            self.used.fetch_sub(from - to, Ordering::Relaxed);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Value,
    Map,
}

#[derive(Debug)]
struct StateMeta {
    id: u32,
    name: String,
    kind: Kind,
}

struct Spill {
    store: Box<dyn KeyValueStore>,
    /// Something was evicted: a key missing from memory may be in the store.
    used: bool,
}

/// The keyed state of one operator subtask.
pub struct KeyedStateStore {
    operator: String,
    table: Table,
    states: Vec<StateMeta>,
    /// Restored entries of states not registered yet, by state id (the kind of a state,
    /// which decides how its store keys parse, is known only when it is registered).
    raw: HashMap<u32, Changelog>,
    /// States whose restored entries wait in the spill store instead (`SPILL_RAW`): a
    /// store with one restores state larger than its memory budget.
    raw_spilled: HashSet<u32>,
    spill: Option<Spill>,
    budget: Option<Arc<MemoryBudget>>,
    /// Bytes of this store counted in the budget.
    accounted: u64,
    /// The spill store's [`KeyValueStore::resident_bytes`] when last asked, as counted.
    spill_resident: u64,
    /// The warning that the spill store's memory outgrew its share was given.
    resident_warned: bool,
    check_every: u32,
    /// Changed keys gathered per pass of [`write_changes`](Self::write_changes).
    ids_per_pass: usize,
    since_check: u32,
    /// Changes are recorded for checkpoints.
    changelog: bool,
    /// A bit per slot id marked `DIRTY` since the last changelog (may include ids freed
    /// since): a bit costs an eighth of a byte where a list of ids cost four.
    dirty: Vec<u64>,
    /// Changes of a changelog whose write failed, for the next one.
    older: Option<Changelog>,
    clock: SharedClock,
    key_groups: KeyGroupRange,
    has_ttl: bool,
    expire_cursor: usize,
    /// The CLOCK hand of eviction.
    hand: usize,
}

impl std::fmt::Debug for KeyedStateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedStateStore")
            .field("operator", &self.operator)
            .field("key_groups", &self.key_groups)
            .field("states", &self.states.iter().map(|s| &s.name).collect::<Vec<_>>())
            .field("entries", &self.table.len())
            .finish()
    }
}

impl Drop for KeyedStateStore {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            b.update(self.accounted, 0);
        }
    }
}

impl KeyedStateStore {
    /// An empty store for the key groups `key_groups`. `spill` receives entries evicted
    /// past a [memory budget](Self::with_memory_budget); `changelog` is on when
    /// checkpoints will be taken.
    pub fn new(
        operator: impl Into<String>,
        spill: Option<Box<dyn KeyValueStore>>,
        key_groups: KeyGroupRange,
        clock: SharedClock,
        changelog: bool,
    ) -> Self {
        Self {
            operator: operator.into(),
            table: Table::default(),
            states: Vec::new(),
            raw: HashMap::new(),
            raw_spilled: HashSet::new(),
            spill: spill.map(|store| Spill { store, used: false }),
            budget: None,
            accounted: 0,
            spill_resident: 0,
            resident_warned: false,
            check_every: CHECK_EVERY,
            ids_per_pass: IDS_PER_PASS,
            since_check: 0,
            changelog,
            dirty: Vec::new(),
            older: None,
            clock,
            key_groups,
            has_ttl: false,
            expire_cursor: 0,
            hand: 0,
        }
    }

    /// Keeps this store's part of `budget`: past it, entries go to the spill store (a
    /// store without one keeps everything in memory).
    pub fn with_memory_budget(mut self, budget: Arc<MemoryBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Reserves the slots this store may come to hold under its budget, as one of
    /// `parts` stores sharing it (the subtasks of its operator, whose key groups are
    /// about equal shares of the keys).
    ///
    /// Why: a vector that grows past its capacity is copied into one twice as large, and
    /// for that instant both are in memory. The slot vector grows that way until the
    /// budget stops it, so its last doubling, at the budget, briefly took half the
    /// budget again on top of it: the peak memory of a run that fills its budget.
    /// Reserved and not yet used, the room is address space only.
    ///
    /// A compaction ([`Table::compact`]) gives back the room past the slots it keeps;
    /// growing past them again copies the vector as before.
    pub(crate) fn reserve_budget_share(&mut self, parts: usize) {
        let Some(budget) = &self.budget else { return };
        // A quarter more than an even share, for key groups of uneven sizes; a store
        // holding more still grows (and copies) as before.
        let parts = parts.max(1) as u64;
        let share = usize::try_from(budget.limit / parts + budget.limit / parts / 4).unwrap_or(usize::MAX);
        // Slot ids are u32; the table never holds more.
        self.table.reserve_slots((share / Table::SLOT_BYTES).min(u32::MAX as usize));
    }

    #[cfg(test)]
    fn ids_per_pass(mut self, ids: usize) -> Self {
        self.ids_per_pass = ids.max(1);
        self
    }

    #[cfg(test)]
    fn check_budget_every(mut self, writes: u32) -> Self {
        self.check_every = writes.max(1);
        self
    }

    /// The key groups this subtask owns.
    pub fn key_groups(&self) -> KeyGroupRange {
        self.key_groups
    }

    /// Entries held in memory (a map state counts once per key).
    pub fn len_in_memory(&self) -> usize {
        self.table.len()
    }

    /// Registers (or looks up) a value state.
    pub fn value_state<T>(&mut self, name: &str, ttl: Option<StateTtl>) -> Result<ValueState<T>>
    where
        T: Serialize + DeserializeOwned,
    {
        let (id, idx) = self.register(name, Kind::Value, ttl)?;
        Ok(ValueState { id, idx, ttl, _t: PhantomData })
    }

    /// Registers (or looks up) a map state.
    pub fn map_state<K, V>(&mut self, name: &str, ttl: Option<StateTtl>) -> Result<MapState<K, V>>
    where
        K: Serialize + DeserializeOwned,
        V: Serialize + DeserializeOwned,
    {
        let (id, idx) = self.register(name, Kind::Map, ttl)?;
        Ok(MapState { id, idx, ttl, _t: PhantomData })
    }

    fn register(&mut self, name: &str, kind: Kind, ttl: Option<StateTtl>) -> Result<(u32, u8)> {
        // The id is a hash of the name, so it is the same in every run and snapshot files
        // need no name table.
        let id = (xxhash_rust::xxh3::xxh3_64(name.as_bytes()) & 0xFFFF_FFFF) as u32;
        self.has_ttl |= ttl.is_some();
        if let Some(pos) = self.states.iter().position(|s| s.id == id) {
            let existing = &self.states[pos];
            if existing.name != name {
                return Err(
                    self.err(format!("state names `{}` and `{name}` collide; rename one of them", existing.name))
                );
            }
            if existing.kind != kind {
                return Err(self.err(format!("state `{name}` is registered both as a value state and as a map state")));
            }
            return Ok((id, pos as u8));
        }
        if self.states.len() >= MAX_STATES {
            return Err(self.err(format!("more than {MAX_STATES} keyed states in one operator")));
        }
        self.states.push(StateMeta { id, name: name.to_string(), kind });
        let idx = (self.states.len() - 1) as u8;
        if let Some(raw) = self.raw.remove(&id) {
            for (key, value) in raw.iter() {
                if let Some(value) = value {
                    self.ingest(idx, kind, key, value)?;
                }
            }
        }
        if self.raw_spilled.remove(&id) {
            self.ingest_spilled_raw(id, idx, kind)?;
        }
        Ok((id, idx))
    }

    /// Moves the restored entries of state `id` from the spill store into the table, a
    /// page at a time (the table evicts as they come in, under its budget).
    fn ingest_spilled_raw(&mut self, id: u32, idx: u8, kind: Kind) -> Result<()> {
        let mut start = raw_spill_key(id, &[]);
        let end = match id.checked_add(1) {
            Some(next) => raw_spill_key(next, &[]),
            None => vec![SPILL_RAW + 1],
        };
        loop {
            let Some(spill) = &self.spill else {
                return Err(Error::Internal("restored state in a spill store that is gone".into()));
            };
            let page = spill.store.scan(&start, &end, 4096)?;
            let Some((last, _)) = page.last() else { return Ok(()) };
            start = last.clone();
            start.push(0);
            let mut done = Vec::with_capacity(page.len());
            for (k, v) in page {
                self.ingest(idx, kind, &k[5..], &v)?;
                done.push((k, None));
            }
            if let Some(spill) = &mut self.spill {
                spill.store.apply(done)?;
            }
        }
    }

    fn err(&self, message: String) -> Error {
        state_err(&self.operator, message)
    }

    fn check_group(&self, key: KeyRef<'_>) -> Result<()> {
        if self.key_groups.contains(key.key_group) {
            Ok(())
        } else {
            Err(Error::Internal(format!(
                "operator `{}` received key group {} outside its range {:?}: the stream is not keyed by this operator's key",
                self.operator, key.key_group, self.key_groups
            )))
        }
    }

    /// The index of a handle's state in this store.
    fn state_index(&self, id: u32, idx: u8) -> Result<u8> {
        if self.states.get(usize::from(idx)).is_some_and(|s| s.id == id) {
            return Ok(idx);
        }
        match self.states.iter().position(|s| s.id == id) {
            Some(pos) => Ok(pos as u8),
            None => Err(Error::Internal(format!(
                "operator `{}` used a state handle that was not registered with this store",
                self.operator
            ))),
        }
    }

    // ---- slots -------------------------------------------------------------------

    /// Marks a slot changed: for the next changelog, and no longer equal to its spilled copy.
    fn mark_dirty(&mut self, id: u32) {
        let changelog = self.changelog;
        let slot = self.table.slot_mut(id);
        if changelog && slot.flags & DIRTY == 0 {
            slot.flags |= DIRTY;
            let word = id as usize / 64;
            if word >= self.dirty.len() {
                self.dirty.resize(word + 1, 0);
            }
            self.dirty[word] |= 1 << (id % 64);
        }
        slot.flags = (slot.flags | REFERENCED) & !SPILL_CLEAN;
    }

    /// The slot of `key` in state `idx`, read back from the spill store if it was evicted.
    fn lookup(&mut self, idx: u8, hash: u64, key: KeyRef<'_>) -> Result<Option<u32>> {
        if let Some(id) = self.table.find(idx, hash, key.bytes, key.key_group) {
            self.table.slot_mut(id).flags |= REFERENCED;
            return Ok(Some(id));
        }
        if !self.spill.as_ref().is_some_and(|s| s.used) {
            return Ok(None);
        }
        self.load_spilled(idx, hash, key)
    }

    fn lookup_or_insert(&mut self, idx: u8, hash: u64, key: KeyRef<'_>) -> Result<u32> {
        match self.lookup(idx, hash, key)? {
            Some(id) => Ok(id),
            None => Ok(self.table.insert(idx, hash, key.bytes, key.key_group, REFERENCED)),
        }
    }

    /// Deletes a slot's value: a tombstone if a checkpoint holds the key, else gone.
    fn delete_slot(&mut self, id: u32) -> Result<()> {
        let flags = self.table.slot(id).flags;
        if self.changelog && flags & PERSISTED != 0 {
            self.table.set_tomb(id);
            self.mark_dirty(id);
            return Ok(());
        }
        self.free_slot(id)
    }

    /// Removes a slot, and its spilled copy if there may be one.
    fn free_slot(&mut self, id: u32) -> Result<()> {
        let slot = *self.table.slot(id);
        if slot.flags & IN_SPILL != 0 {
            let key = spill_slot_key(self.states[usize::from(slot.state)].id, slot.key_group, &self.table.key(id));
            if let Some(spill) = &mut self.spill {
                spill.store.delete(&key)?;
            }
        }
        self.table.remove(id);
        Ok(())
    }

    /// The live value of a value slot; deletes it if it expired, renews it on read if asked.
    fn live_value(&mut self, id: u32, ttl: Option<&StateTtl>, now: &mut Option<i64>) -> Result<bool> {
        if matches!(self.table.value(id), Value::Tomb | Value::Map(_)) {
            return Ok(false);
        }
        let expiry = self.table.slot(id).expiry;
        if expiry != NO_EXPIRY {
            let now = *now.get_or_insert_with(|| self.clock.now_ms());
            if expiry <= now {
                self.delete_slot(id)?;
                return Ok(false);
            }
            if let Some(t) = ttl
                && t.update == TtlUpdate::OnReadAndWrite
            {
                self.table.slot_mut(id).expiry = StateTtl::expiry(ttl, now);
                self.mark_dirty(id);
            }
        }
        Ok(true)
    }

    /// Sets a value slot. `now` is the job clock if the caller read it already (a batch
    /// reads it once, not per row).
    fn value_put(&mut self, id: u32, payload: &[u8], ttl: Option<&StateTtl>, now: &mut Option<i64>) {
        let expiry = match ttl {
            Some(_) => StateTtl::expiry(ttl, *now.get_or_insert_with(|| self.clock.now_ms())),
            None => NO_EXPIRY,
        };
        self.table.set_bytes(id, payload);
        self.table.slot_mut(id).expiry = expiry;
        self.mark_dirty(id);
    }

    /// Counts a write; every `check_every` writes, keeps the budget. Called before a
    /// slot id is taken, so that eviction never frees a slot an operation holds.
    fn tick(&mut self) -> Result<()> {
        if self.budget.is_none() || self.spill.is_none() {
            return Ok(());
        }
        self.since_check += 1;
        if self.since_check < self.check_every {
            return Ok(());
        }
        self.since_check = 0;
        self.enforce_budget()
    }

    fn account(&mut self) -> u64 {
        let local = self.table.bytes() as u64 + self.spill_resident;
        if let Some(b) = &self.budget {
            b.update(self.accounted, local);
        }
        self.accounted = local;
        local
    }

    fn enforce_budget(&mut self) -> Result<()> {
        let Some(budget) = self.budget.clone() else { return Ok(()) };
        // What the spill store holds in memory for what it stores grows with every
        // eviction; the table makes room for it, up to a quarter of the budget: beyond
        // that the table would be emptied at every check, and every key read from disk.
        let resident = self.spill.as_ref().map_or(0, |s| s.store.resident_bytes());
        if resident > budget.limit / 4 && !self.resident_warned {
            self.resident_warned = true;
            tracing::warn!(
                resident_mib = resident >> 20,
                budget_mib = budget.limit >> 20,
                "the disk store's bloom filters for the keys on disk take more than a quarter of the keyed-state \
                 memory budget; memory grows past the budget with the keys: raise stream.state.memory.budget"
            );
        }
        self.spill_resident = resident.min(budget.limit / 4);
        self.table.maintain_index(self.headroom());
        self.account();
        let used = budget.used();
        if used <= budget.limit {
            return Ok(());
        }
        // Evict down to 7/8 of the budget, so that checks are not made on every write.
        let target = (self.table.bytes() as u64).saturating_sub(used - budget.limit / 8 * 7);
        self.evict_to(target)?;
        self.account();
        Ok(())
    }

    /// Evicts slots the CLOCK hand finds unreferenced until the table holds `target` bytes.
    fn evict_to(&mut self, target: u64) -> Result<()> {
        let bound = self.table.id_bound();
        let mut batch: Vec<KvEntry> = Vec::new();
        let mut delta = Changelog::default();
        let mut scratch = Scratch::default();
        let mut steps = 0;
        while self.table.bytes() as u64 > target && steps < 2 * bound && self.table.len() > 0 {
            if self.hand >= bound {
                self.hand = 0;
            }
            let id = self.hand as u32;
            self.hand += 1;
            steps += 1;
            let slot = self.table.slot_mut(id);
            if slot.is_free() {
                continue;
            }
            if slot.flags & REFERENCED != 0 {
                slot.flags &= !REFERENCED;
                continue;
            }
            self.evict_slot(id, &mut batch, &mut delta, &mut scratch)?;
            if batch.len() + delta.len() >= 4096 {
                self.write_spill(&mut batch, &mut delta)?;
            }
        }
        self.write_spill(&mut batch, &mut delta)?;
        self.compact();
        Ok(())
    }

    /// Gives back the slots and index room eviction left behind (see [`Table::compact`]).
    fn compact(&mut self) {
        let slack = self.headroom();
        let dirty = &mut self.dirty;
        self.table.compact(slack, |from, to, slot| {
            let (f, t) = (from as usize, to as usize);
            if let Some(w) = dirty.get_mut(f / 64) {
                *w &= !(1 << (f % 64));
            }
            if slot.flags & DIRTY != 0 {
                if t / 64 >= dirty.len() {
                    dirty.resize(t / 64 + 1, 0);
                }
                dirty[t / 64] |= 1 << (t % 64);
            }
        });
        // Ids past the end are gone (their bits were moved or were stale).
        let bound = self.table.id_bound();
        self.dirty.truncate(bound.div_ceil(64));
        if !bound.is_multiple_of(64)
            && let Some(last) = self.dirty.last_mut()
        {
            *last &= (1u64 << (bound % 64)) - 1;
        }
        self.hand = self.hand.min(bound);
        self.expire_cursor = self.expire_cursor.min(bound);
    }

    /// Inserts the index must have room for when the budget is checked: more than come
    /// before the next check (see [`Table::maintain_index`]); also the free slots that
    /// do not call for a compaction.
    fn headroom(&self) -> usize {
        4 * self.check_every as usize
    }

    fn write_spill(&mut self, batch: &mut Vec<KvEntry>, delta: &mut Changelog) -> Result<()> {
        for (key, value) in delta.iter() {
            let mut k = Vec::with_capacity(key.len() + 1);
            k.push(SPILL_DELTA);
            k.extend_from_slice(key);
            let mut v = Vec::with_capacity(value.map_or(1, |v| v.len() + 1));
            match value {
                Some(value) => {
                    v.push(1);
                    v.extend_from_slice(value);
                }
                None => v.push(0),
            }
            batch.push((k, Some(v)));
        }
        *delta = Changelog::default();
        if batch.is_empty() {
            return Ok(());
        }
        let Some(spill) = &mut self.spill else {
            return Err(Error::Internal("eviction without a spill store".into()));
        };
        spill.used = true;
        spill.store.apply(std::mem::take(batch))
    }

    fn evict_slot(
        &mut self,
        id: u32,
        batch: &mut Vec<KvEntry>,
        delta: &mut Changelog,
        scratch: &mut Scratch,
    ) -> Result<()> {
        if self.changelog && self.table.slot(id).flags & DIRTY != 0 {
            // Not checkpointed yet: the change waits in the spill store for the next changelog.
            collect_changes(&mut self.table, &self.states, id, delta, scratch)?;
        }
        let slot = *self.table.slot(id);
        let key = spill_slot_key(self.states[usize::from(slot.state)].id, slot.key_group, &self.table.key(id));
        let gone = match self.table.value(id) {
            Value::Tomb => true,
            Value::Map(m) => m.is_empty(),
            _ => false,
        };
        if gone {
            if slot.flags & IN_SPILL != 0 {
                batch.push((key, None));
            }
        } else if slot.flags & SPILL_CLEAN == 0 {
            batch.push((key, Some(encode_record(&self.table, id))));
        }
        self.table.remove(id);
        Ok(())
    }

    fn load_spilled(&mut self, idx: u8, hash: u64, key: KeyRef<'_>) -> Result<Option<u32>> {
        let skey = spill_slot_key(self.states[usize::from(idx)].id, key.key_group, key.bytes);
        let Some(spill) = &self.spill else { return Ok(None) };
        let Some(record) = spill.store.get(&skey)? else { return Ok(None) };
        const CORRUPT: &str = "an evicted state entry read back from the spill store is corrupt";
        let Some((flags, expiry, body)) = decode_record_head(&record) else {
            return Err(self.err(CORRUPT.into()));
        };
        let id = self.table.insert(
            idx,
            hash,
            key.bytes,
            key.key_group,
            (flags & PERSISTED) | IN_SPILL | SPILL_CLEAN | REFERENCED,
        );
        self.table.slot_mut(id).expiry = expiry;
        match body {
            RecordBody::Bytes(b) => self.table.set_bytes(id, b),
            RecordBody::Map(mut entries) => {
                let mut added = 0;
                let map = self.table.map_mut(id);
                while !entries.is_empty() {
                    let Some((ukey, entry, rest)) = decode_map_entry(entries) else {
                        self.table.remove(id);
                        return Err(self.err(CORRUPT.into()));
                    };
                    added += Table::map_entry_bytes(ukey, &entry);
                    map.insert(ukey.into(), entry);
                    entries = rest;
                }
                self.table.map_bytes_changed(0, added);
            }
        }
        Ok(Some(id))
    }

    // ---- checkpoints ---------------------------------------------------------------

    /// Collects the changes since the last call (O(changes)).
    pub(crate) fn take_changelog(&mut self) -> Result<Option<Changelog>> {
        if !self.changelog {
            return Ok(None);
        }
        if self.writes_changes_in_place() {
            return Err(self.err("changes evicted to the spill store are written in place, not taken".into()));
        }
        let mut log = Changelog::default();
        let mut spill_deletes: Vec<KvEntry> = Vec::new();
        let mut scratch = Scratch::default();
        let dirty = std::mem::take(&mut self.dirty);
        let ids = dirty
            .iter()
            .enumerate()
            .flat_map(|(w, &bits)| (0..64u32).filter(move |b| bits & (1 << b) != 0).map(move |b| w as u32 * 64 + b));
        for id in ids {
            let slot = *self.table.slot(id);
            if slot.is_free() || slot.flags & DIRTY == 0 {
                continue;
            }
            if collect_changes(&mut self.table, &self.states, id, &mut log, &mut scratch)? {
                if slot.flags & IN_SPILL != 0 {
                    let key =
                        spill_slot_key(self.states[usize::from(slot.state)].id, slot.key_group, &self.table.key(id));
                    spill_deletes.push((key, None));
                }
                self.table.remove(id);
            }
            if spill_deletes.len() >= 4096
                && let Some(spill) = &mut self.spill
            {
                spill.store.apply(std::mem::take(&mut spill_deletes))?;
            }
        }
        if !spill_deletes.is_empty()
            && let Some(spill) = &mut self.spill
        {
            spill.store.apply(spill_deletes)?;
        }
        if let Some(older) = self.older.take() {
            log.merge_older(&older)?;
        }
        self.account();
        Ok(Some(log))
    }

    /// Whether this checkpoint's changes are written while the task waits
    /// ([`write_changes`](Self::write_changes)) instead of being taken as a changelog:
    /// once state went past its memory budget, a changelog of what changed since the last
    /// checkpoint could be larger than the budget itself.
    pub(crate) fn writes_changes_in_place(&self) -> bool {
        self.changelog && self.spill.as_ref().is_some_and(|s| s.used)
    }

    /// The changes of a changelog whose write failed: older than anything
    /// [`write_changes`](Self::write_changes) writes, so they go in an earlier file.
    pub(crate) fn take_older(&mut self) -> Option<Changelog> {
        self.older.take()
    }

    /// Writes every change since the last checkpoint to `w`, in key order, and marks it
    /// checkpointed: the changes evicted to the spill store, streamed from it in order, and
    /// those in memory, a key group at a time (a change in memory is newer than one of the
    /// same key evicted earlier). Memory holds one key group's changes, not all of them.
    ///
    /// On an error the store is part-way through and the task must fail (its state is
    /// restored from the last checkpoint).
    pub(crate) fn write_changes(&mut self, w: &mut KvFileWriter) -> Result<()> {
        // The dirty ids by key group: a counting sort, over as many key groups at a time
        // as `ids_per_pass` ids hold (see `IDS_PER_PASS`).
        let dirty = std::mem::take(&mut self.dirty);
        let live = |table: &Table, id: u32| {
            let slot = table.slot(id);
            (!slot.is_free() && slot.flags & DIRTY != 0).then_some(slot.key_group)
        };
        let dirty_ids = || {
            dirty
                .iter()
                .enumerate()
                .flat_map(|(w, &bits)| (0..64u32).filter(move |b| bits & (1 << b) != 0).map(move |b| w as u32 * 64 + b))
        };
        let range = self.key_groups;
        let first = usize::from(range.start);
        let mut counts = vec![0usize; range.len()];
        for id in dirty_ids() {
            if let Some(group) = live(&self.table, id) {
                // Keys outside the subtask's key groups are refused when inserted.
                if !range.contains(group) {
                    return Err(self.err(format!("a changed key of key group {group} lies outside {range:?}")));
                }
                counts[usize::from(group) - first] += 1;
            }
        }
        let per_pass = self.ids_per_pass.max(counts.iter().sum::<usize>().div_ceil(MAX_ID_PASSES));
        let Self { table, states, spill, operator, .. } = self;
        let Some(spill) = spill.as_mut() else {
            return Err(state_err(operator, "changes written in place without a spill store"));
        };
        let store = spill.store.as_mut();
        let mut evicted = EvictedChanges::default();
        let mut scratch = Scratch::default();
        let mut ids: Vec<u32> = Vec::new();
        let mut low = 0;
        while low < counts.len() {
            // The key groups `low..high`: at least one, and as many more as fit.
            let (mut high, mut n) = (low, 0);
            while high < counts.len() && (high == low || n + counts[high] <= per_pass) {
                n += counts[high];
                high += 1;
            }
            let mut starts = vec![0usize; high - low + 1];
            for g in low..high {
                starts[g - low + 1] = starts[g - low] + counts[g];
            }
            ids.clear();
            ids.resize(n, 0);
            let mut fill = starts.clone();
            for id in dirty_ids() {
                if let Some(group) = live(table, id) {
                    let g = usize::from(group) - first;
                    if (low..high).contains(&g) {
                        let at = &mut fill[g - low];
                        ids[*at] = id;
                        *at += 1;
                    }
                }
            }
            for run in starts.windows(2).map(|w| &ids[w[0]..w[1]]).filter(|run| !run.is_empty()) {
                let mut group = Changelog::default();
                for &id in run {
                    let slot = *table.slot(id);
                    if collect_changes(table, states, id, &mut group, &mut scratch)? {
                        if slot.flags & IN_SPILL != 0 {
                            let key =
                                spill_slot_key(states[usize::from(slot.state)].id, slot.key_group, &table.key(id));
                            evicted.consume(store, key)?;
                        }
                        table.remove(id);
                    }
                }
                group.for_each_sorted(|k, v| {
                    evicted.write_below(store, k, w, operator)?;
                    w.append(k, v)
                })?;
            }
            low = high;
        }
        drop(ids);
        drop(dirty);
        evicted.write_rest(store, w, operator)?;
        self.account();
        Ok(())
    }

    /// Puts back changes whose checkpoint write failed, under any newer changes.
    pub(crate) fn restore_changelog(&mut self, older: Changelog) -> Result<()> {
        if !self.changelog {
            return Ok(());
        }
        self.older = Some(match self.older.take() {
            Some(mut newer) => {
                newer.merge_older(&older)?;
                newer
            }
            None => older,
        });
        Ok(())
    }

    /// Loads the entries of a snapshot chain that fall in this subtask's key groups.
    ///
    /// `also_emit` receives every live entry loaded (used to write a new base file when the
    /// key-group assignment changed). Expired entries are dropped.
    pub(crate) fn load_chain(
        &mut self,
        chain: &[PathBuf],
        mut also_emit: impl FnMut(&KvEntry) -> Result<()>,
    ) -> Result<u64> {
        let now = self.clock.now_ms();
        let corrupt = |reason: &str| Error::CorruptState {
            path: chain.last().cloned().unwrap_or_default(),
            reason: reason.to_string(),
        };
        let mut loaded = 0;
        let mut raw_batch: Vec<KvEntry> = Vec::new();
        for entry in MergedChain::open(chain)? {
            let entry = entry?;
            let (key, value) = &entry;
            if key.len() < 2 {
                continue;
            }
            let kg = u16::from_be_bytes([key[0], key[1]]);
            if !self.key_groups.contains(kg) {
                continue;
            }
            let Some(value) = value else { continue };
            let Some(state_id) = key.get(2..6) else {
                return Err(corrupt("state key shorter than its header"));
            };
            match split_envelope(value) {
                Some((Some(expiry), _)) if expiry <= now => continue,
                Some((expiry, _)) => self.has_ttl |= expiry.is_some(),
                None => return Err(corrupt("state entry with an unknown envelope")),
            }
            also_emit(&entry)?;
            let state_id = u32::from_be_bytes([state_id[0], state_id[1], state_id[2], state_id[3]]);
            match self.states.iter().position(|s| s.id == state_id) {
                Some(idx) => {
                    let kind = self.states[idx].kind;
                    self.ingest(idx as u8, kind, key, value)?;
                }
                None if self.spill.is_some() => {
                    self.raw_spilled.insert(state_id);
                    raw_batch.push((raw_spill_key(state_id, key), Some(value.clone())));
                    if raw_batch.len() >= 4096 {
                        self.write_raw(&mut raw_batch)?;
                    }
                }
                None => self.raw.entry(state_id).or_default().push(key, Some(value))?,
            }
            loaded += 1;
        }
        self.write_raw(&mut raw_batch)?;
        Ok(loaded)
    }

    fn write_raw(&mut self, batch: &mut Vec<KvEntry>) -> Result<()> {
        match &mut self.spill {
            Some(spill) if !batch.is_empty() => spill.store.apply(std::mem::take(batch)),
            _ => Ok(()),
        }
    }

    /// Puts one restored entry (store key, envelope) into the table.
    fn ingest(&mut self, idx: u8, kind: Kind, key: &[u8], value: &[u8]) -> Result<()> {
        self.tick()?;
        let corrupt = || self.err("a restored state entry has a truncated key".into());
        let (expiry, payload) = split_envelope(value).ok_or_else(|| self.err("unknown state envelope".into()))?;
        let expiry = expiry.unwrap_or(NO_EXPIRY);
        let key_group = u16::from_be_bytes([key[0], key[1]]);
        match kind {
            Kind::Value => {
                let bytes = &key[6..];
                let k = KeyRef { key_group, bytes };
                let id = self.lookup_or_insert(idx, hash_key(bytes), k)?;
                self.table.set_bytes(id, payload);
                let slot = self.table.slot_mut(id);
                slot.expiry = expiry;
                slot.flags = (slot.flags | PERSISTED) & !SPILL_CLEAN;
            }
            Kind::Map => {
                let len = key.get(6..10).ok_or_else(corrupt)?;
                let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
                let bytes = key.get(10..10 + len).ok_or_else(corrupt)?;
                let ukey = &key[10 + len..];
                let k = KeyRef { key_group, bytes };
                let id = self.lookup_or_insert(idx, hash_key(bytes), k)?;
                let entry = MapEntry { value: Some(payload.into()), expiry, flags: PERSISTED };
                let added = Table::map_entry_bytes(ukey, &entry);
                let old = self.table.map_mut(id).insert(ukey.into(), entry);
                let removed = old.map_or(0, |e| Table::map_entry_bytes(ukey, &e));
                self.table.map_bytes_changed(removed, added);
                let slot = self.table.slot_mut(id);
                slot.flags &= !SPILL_CLEAN;
            }
        }
        Ok(())
    }

    /// Removes up to `limit` slots' expired entries. Returns how many slots were visited.
    pub fn expire(&mut self, limit: usize) -> Result<usize> {
        if !self.has_ttl {
            return Ok(0);
        }
        let now = self.clock.now_ms();
        let bound = self.table.id_bound();
        let mut visited = 0;
        while visited < limit.min(bound) {
            if self.expire_cursor >= bound {
                self.expire_cursor = 0;
            }
            let id = self.expire_cursor as u32;
            self.expire_cursor += 1;
            visited += 1;
            let slot = *self.table.slot(id);
            if slot.is_free() {
                continue;
            }
            let expired: Vec<Box<[u8]>> = match self.table.value(id) {
                Value::Tomb => continue,
                Value::Map(m) => {
                    m.iter().filter(|(_, e)| e.value.is_some() && e.expiry <= now).map(|(k, _)| k.clone()).collect()
                }
                _ => {
                    if slot.expiry <= now {
                        self.delete_slot(id)?;
                    }
                    continue;
                }
            };
            for ukey in expired {
                self.map_remove_entry(id, &ukey);
            }
            self.free_if_empty_map(id)?;
        }
        Ok(visited)
    }

    // ---- map slots -------------------------------------------------------------------

    /// Removes one user entry of a map slot (a tombstone if a checkpoint holds it).
    fn map_remove_entry(&mut self, id: u32, ukey: &[u8]) -> bool {
        let changelog = self.changelog;
        let map = self.table.map_mut(id);
        let Some(entry) = map.get_mut(ukey) else { return false };
        if entry.value.is_none() {
            return false;
        }
        let before = Table::map_entry_bytes(ukey, entry);
        let after = if changelog && entry.flags & PERSISTED != 0 {
            entry.value = None;
            entry.flags |= DIRTY;
            Table::map_entry_bytes(ukey, entry)
        } else {
            map.remove(ukey);
            0
        };
        self.table.map_bytes_changed(before, after);
        self.mark_dirty(id);
        true
    }

    fn free_if_empty_map(&mut self, id: u32) -> Result<()> {
        if matches!(self.table.value(id), Value::Map(m) if m.is_empty()) {
            self.free_slot(id)?;
        }
        Ok(())
    }
}

/// A state error of `operator` (for where `self` is borrowed elsewhere).
fn state_err(operator: &str, message: impl Into<String>) -> Error {
    Error::State { operator: operator.to_string(), message: message.into() }
}

/// A cursor over the changes evicted to the spill store (its `SPILL_DELTA` region, in
/// key order), read a chunk at a time and merged into a checkpoint file.
#[derive(Default)]
struct EvictedChanges {
    chunk: std::collections::VecDeque<(Vec<u8>, Vec<u8>)>,
    /// Where the next chunk starts (`None`: not read yet).
    next: Option<Vec<u8>>,
    done: bool,
    /// Store keys read (written out or superseded by a newer change in memory), to delete.
    consumed: Vec<KvEntry>,
}

impl EvictedChanges {
    /// The next evicted change, reading a chunk if needed.
    fn peek(&mut self, store: &dyn KeyValueStore) -> Result<Option<&(Vec<u8>, Vec<u8>)>> {
        if self.chunk.is_empty() && !self.done {
            let start = self.next.take().unwrap_or_else(|| vec![SPILL_DELTA]);
            let chunk = store.scan(&start, &[SPILL_DELTA + 1], 4096)?;
            match chunk.last() {
                Some((last, _)) => {
                    let mut next = last.clone();
                    next.push(0);
                    self.next = Some(next);
                }
                None => self.done = true,
            }
            self.chunk.extend(chunk);
        }
        Ok(self.chunk.front())
    }

    /// Writes the evicted changes ordered before `key` and drops one of `key` itself
    /// (the change in memory, written next, is newer).
    fn write_below(
        &mut self,
        store: &mut dyn KeyValueStore,
        key: &[u8],
        w: &mut KvFileWriter,
        operator: &str,
    ) -> Result<()> {
        while let Some((k, _)) = self.peek(store)? {
            match k[1..].cmp(key) {
                std::cmp::Ordering::Less => self.write_front(store, w, operator)?,
                std::cmp::Ordering::Equal => {
                    if let Some((k, _)) = self.chunk.pop_front() {
                        self.consume(store, k)?;
                    }
                    return Ok(());
                }
                std::cmp::Ordering::Greater => return Ok(()),
            }
        }
        Ok(())
    }

    /// Writes every evicted change not written yet, and deletes what was read.
    fn write_rest(&mut self, store: &mut dyn KeyValueStore, w: &mut KvFileWriter, operator: &str) -> Result<()> {
        while self.peek(store)?.is_some() {
            self.write_front(store, w, operator)?;
        }
        store.apply(std::mem::take(&mut self.consumed))
    }

    fn write_front(&mut self, store: &mut dyn KeyValueStore, w: &mut KvFileWriter, operator: &str) -> Result<()> {
        let Some((k, v)) = self.chunk.pop_front() else { return Ok(()) };
        let value = match v.split_first() {
            Some((1, rest)) => Some(rest),
            Some((0, _)) => None,
            _ => return Err(state_err(operator, "a pending state change in the spill store is corrupt")),
        };
        w.append(&k[1..], value)?;
        self.consume(store, k)
    }

    /// Deletes a change read, in batches (behind the cursor: reads go on past it).
    fn consume(&mut self, store: &mut dyn KeyValueStore, key: Vec<u8>) -> Result<()> {
        self.consumed.push((key, None));
        if self.consumed.len() >= 4096 {
            store.apply(std::mem::take(&mut self.consumed))?;
        }
        Ok(())
    }
}

/// Buffers `collect_changes` reuses from one slot to the next.
#[derive(Default)]
struct Scratch {
    key: Vec<u8>,
    envelope: Vec<u8>,
}

/// Writes the changes of a dirty slot to `log` and marks them checkpointed. Returns
/// whether the slot is now empty (a deleted value, or a map without entries).
fn collect_changes(
    table: &mut Table,
    states: &[StateMeta],
    id: u32,
    log: &mut Changelog,
    scratch: &mut Scratch,
) -> Result<bool> {
    let slot = *table.slot(id);
    let state_id = states[usize::from(slot.state)].id;
    let Scratch { key: full, envelope } = scratch;
    full.clear();
    full.extend_from_slice(&slot.key_group.to_be_bytes());
    full.extend_from_slice(&state_id.to_be_bytes());
    let empty = match table.value(id) {
        Value::Tomb => {
            full.extend_from_slice(&table.key(id));
            log.push(full, None)?;
            true
        }
        Value::Map(_) => {
            let key = table.key(id).to_vec();
            full.extend_from_slice(&(key.len() as u32).to_be_bytes());
            full.extend_from_slice(&key);
            let prefix = full.len();
            let map = table.map_mut(id);
            let mut dropped = 0;
            let mut failed = None;
            map.retain(|ukey, e| {
                if e.flags & DIRTY == 0 || failed.is_some() {
                    return true;
                }
                full.truncate(prefix);
                full.extend_from_slice(ukey);
                let pushed = match &e.value {
                    Some(v) => {
                        envelope_into(envelope, e.expiry, v);
                        log.push(full, Some(envelope))
                    }
                    None => log.push(full, None),
                };
                if let Err(err) = pushed {
                    failed = Some(err);
                    return true;
                }
                e.flags = (e.flags & !DIRTY) | PERSISTED;
                if e.value.is_none() {
                    dropped += Table::map_entry_bytes(ukey, e);
                    return false;
                }
                true
            });
            if let Some(err) = failed {
                return Err(err);
            }
            let empty = map.is_empty();
            table.map_bytes_changed(dropped, 0);
            empty
        }
        value => {
            full.extend_from_slice(&table.key(id));
            envelope_into(envelope, slot.expiry, value.bytes().unwrap_or_default());
            log.push(full, Some(envelope))?;
            false
        }
    };
    let s = table.slot_mut(id);
    s.flags = (s.flags & !DIRTY) | PERSISTED;
    Ok(empty)
}

fn envelope_into(out: &mut Vec<u8>, expiry: i64, payload: &[u8]) {
    out.clear();
    if expiry == NO_EXPIRY {
        out.push(ENVELOPE_PLAIN);
    } else {
        out.push(ENVELOPE_TTL);
        out.extend_from_slice(&expiry.to_be_bytes());
    }
    out.extend_from_slice(payload);
}

fn split_envelope(value: &[u8]) -> Option<(Option<i64>, &[u8])> {
    match *value.first()? {
        ENVELOPE_PLAIN => Some((None, &value[1..])),
        ENVELOPE_TTL if value.len() >= 9 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&value[1..9]);
            Some((Some(i64::from_be_bytes(b)), &value[9..]))
        }
        _ => None,
    }
}

fn raw_spill_key(state_id: u32, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(5 + key.len());
    k.push(SPILL_RAW);
    k.extend_from_slice(&state_id.to_be_bytes());
    k.extend_from_slice(key);
    k
}

fn spill_slot_key(state_id: u32, key_group: u16, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(7 + key.len());
    k.push(SPILL_SLOT);
    k.extend_from_slice(&state_id.to_be_bytes());
    k.extend_from_slice(&key_group.to_be_bytes());
    k.extend_from_slice(key);
    k
}

// Spill records: `flags:u8 expiry:i64be kind:u8` then the value's bytes (kind 0), or map
// entries `flags:u8 expiry:i64be ukey_len:u32be ukey value_len:u32be value` (kind 1).
// Only live map entries are kept: pending removals went to the delta region.

enum RecordBody<'a> {
    Bytes(&'a [u8]),
    Map(&'a [u8]),
}

fn encode_record(table: &Table, id: u32) -> Vec<u8> {
    let slot = table.slot(id);
    let mut out = Vec::with_capacity(32);
    out.push(slot.flags & PERSISTED);
    out.extend_from_slice(&slot.expiry.to_be_bytes());
    match table.value(id) {
        Value::Map(m) => {
            out.push(1);
            for (ukey, e) in m {
                let Some(v) = &e.value else { continue };
                out.push(e.flags & PERSISTED);
                out.extend_from_slice(&e.expiry.to_be_bytes());
                out.extend_from_slice(&(ukey.len() as u32).to_be_bytes());
                out.extend_from_slice(ukey);
                out.extend_from_slice(&(v.len() as u32).to_be_bytes());
                out.extend_from_slice(v);
            }
        }
        value => {
            out.push(0);
            out.extend_from_slice(value.bytes().unwrap_or_default());
        }
    }
    out
}

fn decode_record_head(record: &[u8]) -> Option<(u8, i64, RecordBody<'_>)> {
    let flags = *record.first()?;
    let expiry = i64::from_be_bytes(record.get(1..9)?.try_into().ok()?);
    let body = match *record.get(9)? {
        0 => RecordBody::Bytes(&record[10..]),
        1 => RecordBody::Map(&record[10..]),
        _ => return None,
    };
    Some((flags, expiry, body))
}

fn decode_map_entry(input: &[u8]) -> Option<(&[u8], MapEntry, &[u8])> {
    let flags = *input.first()?;
    let expiry = i64::from_be_bytes(input.get(1..9)?.try_into().ok()?);
    let klen = u32::from_be_bytes(input.get(9..13)?.try_into().ok()?) as usize;
    let ukey = input.get(13..13 + klen)?;
    let rest = &input[13 + klen..];
    let vlen = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let value = rest.get(4..4 + vlen)?;
    Some((ukey, MapEntry { value: Some(value.into()), expiry, flags }, &rest[4 + vlen..]))
}

fn encode<T: Serialize>(store: &KeyedStateStore, value: &T) -> Result<Vec<u8>> {
    postcard::to_allocvec(value).map_err(|e| store.err(format!("cannot serialize a state value: {e}")))
}

fn decode<T: DeserializeOwned>(store: &KeyedStateStore, bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes)
        .map_err(|e| store.err(format!("cannot deserialize a state value (was the state's type changed?): {e}")))
}

/// A handle to a value state: one value of type `T` per key.
#[derive(Debug)]
pub struct ValueState<T> {
    id: u32,
    idx: u8,
    ttl: Option<StateTtl>,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for ValueState<T> {
    fn clone(&self) -> Self {
        Self { id: self.id, idx: self.idx, ttl: self.ttl, _t: PhantomData }
    }
}

impl<T: Serialize + DeserializeOwned> ValueState<T> {
    /// The slot of `key`'s live value.
    fn live(&self, store: &mut KeyedStateStore, key: KeyRef<'_>, hash: u64) -> Result<Option<u32>> {
        store.check_group(key)?;
        let idx = store.state_index(self.id, self.idx)?;
        match store.lookup(idx, hash, key)? {
            Some(id) if store.live_value(id, self.ttl.as_ref(), &mut None)? => Ok(Some(id)),
            _ => Ok(None),
        }
    }

    /// The value for `key`, if set and not expired.
    pub fn get(&self, store: &mut KeyedStateStore, key: KeyRef<'_>) -> Result<Option<T>> {
        match self.live(store, key, hash_key(key.bytes))? {
            Some(id) => {
                let value = store.table.value(id);
                decode(store, value.bytes().unwrap_or_default()).map(Some)
            }
            None => Ok(None),
        }
    }

    /// Whether `key` has a live value (without decoding it).
    pub fn contains(&self, store: &mut KeyedStateStore, key: KeyRef<'_>) -> Result<bool> {
        Ok(self.live(store, key, hash_key(key.bytes))?.is_some())
    }

    /// Sets the value for `key` (and renews its TTL).
    pub fn put(&self, store: &mut KeyedStateStore, key: KeyRef<'_>, value: &T) -> Result<()> {
        store.tick()?;
        store.check_group(key)?;
        let idx = store.state_index(self.id, self.idx)?;
        let payload = encode(store, value)?;
        let id = store.lookup_or_insert(idx, hash_key(key.bytes), key)?;
        store.value_put(id, &payload, self.ttl.as_ref(), &mut None);
        Ok(())
    }

    /// For each row of `keys`: whether its key had no live value. Those keys are set to
    /// `value` (their TTL starts now); the others are left as they are. Returns how many
    /// keys were absent.
    ///
    /// This is deduplication's step, at the cost of one hash probe per row: the hashes
    /// are the ones the batch's key extraction computed for routing.
    pub fn put_if_absent_batch(
        &self,
        store: &mut KeyedStateStore,
        keys: &BatchKeys,
        value: &T,
        absent: &mut Vec<bool>,
    ) -> Result<usize> {
        let idx = store.state_index(self.id, self.idx)?;
        let payload = encode(store, value)?;
        absent.clear();
        absent.reserve(keys.len());
        let mut count = 0;
        // The job clock, read once per batch: expiry is decided at batch granularity.
        let mut now = None;
        let ttl = self.ttl.as_ref();
        for (row, &hash) in keys.hashes().iter().enumerate() {
            store.tick()?;
            let key = keys.key(row);
            store.check_group(key)?;
            let id = match store.lookup(idx, hash, key)? {
                Some(id) if store.live_value(id, ttl, &mut now)? => {
                    absent.push(false);
                    continue;
                }
                // Expired: `live_value` deleted it or left a tombstone.
                Some(_) => store.lookup_or_insert(idx, hash, key)?,
                None => store.table.insert(idx, hash, key.bytes, key.key_group, REFERENCED),
            };
            store.value_put(id, &payload, ttl, &mut now);
            absent.push(true);
            count += 1;
        }
        Ok(count)
    }

    /// Removes the value for `key`.
    pub fn remove(&self, store: &mut KeyedStateStore, key: KeyRef<'_>) -> Result<()> {
        store.check_group(key)?;
        let idx = store.state_index(self.id, self.idx)?;
        if let Some(id) = store.lookup(idx, hash_key(key.bytes), key)?
            && !matches!(store.table.value(id), Value::Tomb)
        {
            store.delete_slot(id)?;
        }
        Ok(())
    }
}

/// A map entry before decoding: (key group, key, user key, value bytes).
type RawMapEntry = (u16, Vec<u8>, Vec<u8>, Vec<u8>);

/// One entry of a map state found by [`MapState::scan_all`]:
/// `(key group, key bytes, user key, value)`.
pub type MapStateEntry<K, V> = (u16, Vec<u8>, K, V);

/// A handle to a map state: a map from `K` to `V` per key.
#[derive(Debug)]
pub struct MapState<K, V> {
    id: u32,
    idx: u8,
    ttl: Option<StateTtl>,
    _t: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for MapState<K, V> {
    fn clone(&self) -> Self {
        Self { id: self.id, idx: self.idx, ttl: self.ttl, _t: PhantomData }
    }
}

impl<K, V> MapState<K, V>
where
    K: Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    fn slot(&self, store: &mut KeyedStateStore, key: KeyRef<'_>) -> Result<Option<u32>> {
        store.check_group(key)?;
        let idx = store.state_index(self.id, self.idx)?;
        store.lookup(idx, hash_key(key.bytes), key)
    }

    /// The value under `user_key` for `key`.
    pub fn get(&self, store: &mut KeyedStateStore, key: KeyRef<'_>, user_key: &K) -> Result<Option<V>> {
        let Some(id) = self.slot(store, key)? else { return Ok(None) };
        let ukey = encode(store, user_key)?;
        let now = store.clock.now_ms();
        let Value::Map(map) = store.table.value(id) else { return Ok(None) };
        let Some(entry) = map.get(ukey.as_slice()) else { return Ok(None) };
        let Some(bytes) = &entry.value else { return Ok(None) };
        if entry.expiry <= now {
            store.map_remove_entry(id, &ukey);
            store.free_if_empty_map(id)?;
            return Ok(None);
        }
        let value = decode(store, bytes)?;
        if let Some(t) = &self.ttl
            && t.update == TtlUpdate::OnReadAndWrite
        {
            let expiry = StateTtl::expiry(self.ttl.as_ref(), now);
            if let Some(e) = store.table.map_mut(id).get_mut(ukey.as_slice()) {
                e.expiry = expiry;
                e.flags |= DIRTY;
            }
            store.mark_dirty(id);
        }
        Ok(Some(value))
    }

    /// Sets `user_key` to `value` for `key`.
    pub fn put(&self, store: &mut KeyedStateStore, key: KeyRef<'_>, user_key: &K, value: &V) -> Result<()> {
        store.tick()?;
        store.check_group(key)?;
        let idx = store.state_index(self.id, self.idx)?;
        let ukey = encode(store, user_key)?;
        let payload = encode(store, value)?;
        let id = store.lookup_or_insert(idx, hash_key(key.bytes), key)?;
        let expiry = StateTtl::expiry(self.ttl.as_ref(), store.clock.now_ms());
        let dirty = if store.changelog { DIRTY } else { 0 };
        let map = store.table.map_mut(id);
        let mut entry = MapEntry { value: Some(payload.into()), expiry, flags: dirty };
        let added = Table::map_entry_bytes(&ukey, &entry);
        let removed = match map.get_mut(ukey.as_slice()) {
            Some(old) => {
                entry.flags |= old.flags & PERSISTED;
                let removed = Table::map_entry_bytes(&ukey, old);
                *old = entry;
                removed
            }
            None => {
                map.insert(ukey.into(), entry);
                0
            }
        };
        store.table.map_bytes_changed(removed, added);
        store.mark_dirty(id);
        Ok(())
    }

    /// Removes `user_key` for `key`.
    pub fn remove(&self, store: &mut KeyedStateStore, key: KeyRef<'_>, user_key: &K) -> Result<()> {
        let Some(id) = self.slot(store, key)? else { return Ok(()) };
        if matches!(store.table.value(id), Value::Map(_)) {
            let ukey = encode(store, user_key)?;
            store.map_remove_entry(id, &ukey);
            store.free_if_empty_map(id)?;
        }
        Ok(())
    }

    /// All live entries for `key`, ordered by the encoded user key.
    pub fn entries(&self, store: &mut KeyedStateStore, key: KeyRef<'_>) -> Result<Vec<(K, V)>> {
        let Some(id) = self.slot(store, key)? else { return Ok(Vec::new()) };
        let now = store.clock.now_ms();
        let Value::Map(map) = store.table.value(id) else { return Ok(Vec::new()) };
        let mut out = Vec::with_capacity(map.len());
        for (ukey, e) in map {
            if let Some(v) = &e.value
                && e.expiry > now
            {
                out.push((decode(store, ukey)?, decode(store, v)?));
            }
        }
        Ok(out)
    }

    /// Every live entry of this state in the subtask's key groups, as
    /// `(key group, key bytes, user key, value)`, ordered by key group, key and user key.
    ///
    /// Reads the whole state, evicted entries included: it is meant for rebuilding an
    /// operator's in-memory index once after a restore (the event-time timers of a window
    /// operator), not for the processing path.
    pub fn scan_all(&self, store: &mut KeyedStateStore) -> Result<Vec<MapStateEntry<K, V>>> {
        let idx = store.state_index(self.id, self.idx)?;
        let now = store.clock.now_ms();
        // (key group, key, user key, value bytes), sorted as the store keys sort.
        let mut found: Vec<RawMapEntry> = Vec::new();
        let mut in_memory: HashSet<(u16, Vec<u8>)> = HashSet::new();
        let spilled = store.spill.as_ref().is_some_and(|s| s.used);
        for id in 0..store.table.id_bound() as u32 {
            let slot = *store.table.slot(id);
            if slot.is_free() || slot.state != idx {
                continue;
            }
            let key = store.table.key(id).to_vec();
            if let Value::Map(map) = store.table.value(id) {
                for (ukey, e) in map {
                    if let Some(v) = &e.value
                        && e.expiry > now
                    {
                        found.push((slot.key_group, key.clone(), ukey.to_vec(), v.to_vec()));
                    }
                }
            }
            if spilled {
                in_memory.insert((slot.key_group, key));
            }
        }
        if spilled && let Some(spill) = &store.spill {
            let mut start = vec![SPILL_SLOT];
            start.extend_from_slice(&self.id.to_be_bytes());
            let mut end = start.clone();
            end.extend_from_slice(&[0xFF; 3]);
            loop {
                let chunk = spill.store.scan(&start, &end, 4096)?;
                let Some((last, _)) = chunk.last() else { break };
                start = last.clone();
                start.push(0);
                for (k, record) in chunk {
                    let (Some(kg), Some(key)) = (k.get(5..7), k.get(7..)) else { continue };
                    let kg = u16::from_be_bytes([kg[0], kg[1]]);
                    if in_memory.contains(&(kg, key.to_vec())) {
                        continue;
                    }
                    let corrupt = || state_err(&store.operator, "an evicted map state entry is corrupt");
                    let Some((_, _, RecordBody::Map(mut entries))) = decode_record_head(&record) else {
                        return Err(corrupt());
                    };
                    while !entries.is_empty() {
                        let (ukey, e, rest) = decode_map_entry(entries).ok_or_else(corrupt)?;
                        if let Some(v) = e.value
                            && e.expiry > now
                        {
                            found.push((kg, key.to_vec(), ukey.to_vec(), v.to_vec()));
                        }
                        entries = rest;
                    }
                }
            }
        }
        found.sort_unstable_by(|a, b| (a.0, a.1.len(), &a.1, &a.2).cmp(&(b.0, b.1.len(), &b.1, &b.2)));
        found.into_iter().map(|(kg, key, ukey, v)| Ok((kg, key, decode(store, &ukey)?, decode(store, &v)?))).collect()
    }

    /// Removes every entry for `key`.
    pub fn clear(&self, store: &mut KeyedStateStore, key: KeyRef<'_>) -> Result<()> {
        let Some(id) = self.slot(store, key)? else { return Ok(()) };
        let ukeys: Vec<Box<[u8]>> = match store.table.value(id) {
            Value::Map(map) => map.keys().cloned().collect(),
            _ => return Ok(()),
        };
        for ukey in ukeys {
            store.map_remove_entry(id, &ukey);
        }
        store.free_if_empty_map(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::key::KeySelector;
    use crate::state::MemoryStore;
    use crate::state::kvfile::write_sorted;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn store(clock: &ManualClock) -> KeyedStateStore {
        KeyedStateStore::new("op", None, KeyGroupRange { start: 0, end: 128 }, Arc::new(clock.clone()), true)
    }

    /// A store that evicts everything past `budget` bytes, checking on every write.
    fn spilling(clock: &ManualClock, budget: u64) -> KeyedStateStore {
        KeyedStateStore::new(
            "op",
            Some(Box::new(MemoryStore::default())),
            KeyGroupRange { start: 0, end: 128 },
            Arc::new(clock.clone()),
            true,
        )
        .with_memory_budget(Arc::new(MemoryBudget::new(budget)))
        .check_budget_every(1)
        // A few key groups per pass, so that the tests' checkpoints take several.
        .ids_per_pass(2)
    }

    fn key(bytes: &[u8]) -> KeyRef<'_> {
        KeyRef { key_group: 3, bytes }
    }

    /// A key in one of a few key groups, by its first byte (changes are written a key
    /// group at a time).
    fn pkey(bytes: &[u8]) -> KeyRef<'_> {
        KeyRef { key_group: u16::from(bytes.first().copied().unwrap_or(0) % 5) * 7, bytes }
    }

    /// The changes of the next checkpoint, however the store gives them.
    fn log_of(s: &mut KeyedStateStore) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        if !s.writes_changes_in_place() {
            let log = s.take_changelog().unwrap().unwrap();
            return log.iter().map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec))).collect();
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("changes.kv");
        let mut w = KvFileWriter::create(&path).unwrap();
        // Older changes first, as the task writes them (a file before the new one).
        let mut out: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        if let Some(older) = s.take_older() {
            out.extend(older.iter().map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec))));
        }
        s.write_changes(&mut w).unwrap();
        w.finish().unwrap();
        // `append` refuses keys out of order, so the file being readable shows it sorted.
        for entry in crate::state::kvfile::KvFileReader::open(&path).unwrap() {
            let (k, v) = entry.unwrap();
            out.insert(k, v);
        }
        out
    }

    #[test]
    fn value_state_round_trip_and_changelog() {
        let clock = ManualClock::new(1_000);
        let mut s = store(&clock);
        let count: ValueState<u64> = s.value_state("count", None).unwrap();
        assert_eq!(count.get(&mut s, key(b"a")).unwrap(), None);
        count.put(&mut s, key(b"a"), &5).unwrap();
        assert_eq!(count.get(&mut s, key(b"a")).unwrap(), Some(5));
        count.put(&mut s, key(b"a"), &300_000_000_000).unwrap();
        assert_eq!(count.get(&mut s, key(b"a")).unwrap(), Some(300_000_000_000));
        let log = s.take_changelog().unwrap().unwrap();
        assert_eq!(log.len(), 1);
        assert!(s.take_changelog().unwrap().unwrap().is_empty(), "taking empties the log");
        count.remove(&mut s, key(b"a")).unwrap();
        let log = s.take_changelog().unwrap().unwrap();
        assert_eq!(log.iter().map(|(_, v)| v.is_none()).collect::<Vec<_>>(), vec![true]);
        assert_eq!(s.len_in_memory(), 0, "the tombstone is gone once taken");
        // A key created and removed between two checkpoints leaves nothing to write.
        count.put(&mut s, key(b"b"), &1).unwrap();
        count.remove(&mut s, key(b"b")).unwrap();
        assert!(s.take_changelog().unwrap().unwrap().is_empty());
    }

    #[test]
    fn ttl_hides_and_sweeps_expired_entries() {
        let clock = ManualClock::new(0);
        let mut s = store(&clock);
        let seen: ValueState<bool> =
            s.value_state("seen", Some(StateTtl::after_write(Duration::from_secs(60)))).unwrap();
        seen.put(&mut s, key(b"k1"), &true).unwrap();
        clock.advance_ms(30_000);
        seen.put(&mut s, key(b"k2"), &true).unwrap();
        clock.advance_ms(30_000);
        assert!(!seen.contains(&mut s, key(b"k1")).unwrap(), "k1 expired at 60s");
        assert!(seen.contains(&mut s, key(b"k2")).unwrap());
        clock.advance_ms(30_000);
        s.expire(100).unwrap();
        s.take_changelog().unwrap();
        assert_eq!(s.len_in_memory(), 0, "nothing left in memory");
    }

    #[test]
    fn map_state_entries_and_clear() {
        let clock = ManualClock::new(0);
        let mut s = store(&clock);
        let m: MapState<String, i64> = s.map_state("m", None).unwrap();
        m.put(&mut s, key(b"a"), &"x".to_string(), &1).unwrap();
        m.put(&mut s, key(b"a"), &"y".to_string(), &2).unwrap();
        m.put(&mut s, key(b"b"), &"x".to_string(), &3).unwrap();
        let a = m.entries(&mut s, key(b"a")).unwrap();
        assert_eq!(a, vec![("x".to_string(), 1), ("y".to_string(), 2)]);
        m.clear(&mut s, key(b"a")).unwrap();
        assert!(m.entries(&mut s, key(b"a")).unwrap().is_empty());
        assert_eq!(m.get(&mut s, key(b"b"), &"x".to_string()).unwrap(), Some(3));
        assert!(s.value_state::<u8>("m", None).is_err(), "one name, one kind");
    }

    #[test]
    fn map_state_scan_all_sees_every_key() {
        let clock = ManualClock::new(0);
        let mut s = store(&clock);
        let m: MapState<(i64, i64), u8> = s.map_state("m", None).unwrap();
        let other: MapState<(i64, i64), u8> = s.map_state("other", None).unwrap();
        m.put(&mut s, KeyRef { key_group: 7, bytes: b"bb" }, &(20, 30), &3).unwrap();
        m.put(&mut s, KeyRef { key_group: 1, bytes: b"a" }, &(0, 10), &1).unwrap();
        m.put(&mut s, KeyRef { key_group: 7, bytes: b"bb" }, &(10, 20), &2).unwrap();
        other.put(&mut s, KeyRef { key_group: 1, bytes: b"a" }, &(0, 10), &9).unwrap();
        let all = m.scan_all(&mut s).unwrap();
        assert_eq!(
            all,
            vec![(1, b"a".to_vec(), (0, 10), 1), (7, b"bb".to_vec(), (10, 20), 2), (7, b"bb".to_vec(), (20, 30), 3)]
        );
    }

    #[test]
    fn key_outside_range_is_an_internal_error() {
        let clock = ManualClock::new(0);
        let mut s = KeyedStateStore::new("op", None, KeyGroupRange { start: 0, end: 2 }, Arc::new(clock), false);
        let v: ValueState<u8> = s.value_state("v", None).unwrap();
        let err = v.put(&mut s, key(b"a"), &1).unwrap_err();
        assert!(matches!(err, Error::Internal(_)));
    }

    #[test]
    fn load_chain_filters_key_groups_and_expired() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(0);
        let mut writer = store(&clock);
        let v: ValueState<u32> = writer.value_state("v", Some(StateTtl::after_write(Duration::from_secs(10)))).unwrap();
        for kg in 0..4u16 {
            v.put(&mut writer, KeyRef { key_group: kg, bytes: b"k" }, &u32::from(kg)).unwrap();
        }
        let log = writer.take_changelog().unwrap().unwrap();
        let path = dir.path().join("base.kv");
        write_sorted(&path, log.iter().map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec))).collect()).unwrap();

        let mut reader =
            KeyedStateStore::new("op", None, KeyGroupRange { start: 1, end: 3 }, Arc::new(clock.clone()), true);
        let mut emitted = 0;
        let loaded = reader.load_chain(std::slice::from_ref(&path), |_| {
            emitted += 1;
            Ok(())
        });
        assert_eq!(loaded.unwrap(), 2);
        assert_eq!(emitted, 2);
        // Registered after the load, as operators do in `open`.
        let v: ValueState<u32> = reader.value_state("v", None).unwrap();
        assert_eq!(v.get(&mut reader, KeyRef { key_group: 2, bytes: b"k" }).unwrap(), Some(2));
        assert_eq!(v.get(&mut reader, KeyRef { key_group: 0, bytes: b"k" }).ok().flatten(), None);
        // A restored key that is removed is a deletion in the next changelog.
        v.remove(&mut reader, KeyRef { key_group: 2, bytes: b"k" }).unwrap();
        let log = log_of(&mut reader);
        assert_eq!(log.values().collect::<Vec<_>>(), vec![&None]);

        // After the TTL, a restore loads nothing.
        clock.advance_ms(10_000);
        let mut late = store(&clock);
        assert_eq!(late.load_chain(&[path], |_| Ok(())).unwrap(), 0);
    }

    proptest! {
        /// The changelog's order is the byte order of its keys, whatever their lengths
        /// and shared prefixes.
        #[test]
        fn changelog_sorts_as_bytes_do(keys in proptest::collection::hash_set(proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), any::<u8>()], 0..24), 0..300)) {
            let mut log = Changelog::default();
            for (i, k) in keys.iter().enumerate() {
                let value = (i % 3 != 0).then(|| vec![i as u8; i % 200]);
                log.push(k, value.as_deref()).unwrap();
            }
            let mut got: Vec<Vec<u8>> = Vec::new();
            log.for_each_sorted(|k, _| { got.push(k.to_vec()); Ok(()) }).unwrap();
            let mut want: Vec<Vec<u8>> = keys.iter().cloned().collect();
            want.sort();
            prop_assert_eq!(got, want);
            prop_assert_eq!(log.len(), keys.len());
            let values: HashMap<Vec<u8>, Option<usize>> = log.iter().map(|(k, v)| (k.to_vec(), v.map(<[u8]>::len))).collect();
            for (i, k) in keys.iter().enumerate() {
                prop_assert_eq!(values[k], (i % 3 != 0).then_some(i % 200));
            }
        }
    }

    #[test]
    fn dedup_batches_probe_once_per_row() {
        let clock = ManualClock::new(0);
        let mut s = store(&clock);
        let seen: ValueState<u8> = s.value_state("seen", Some(StateTtl::after_write(Duration::from_secs(5)))).unwrap();
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![arrow::datatypes::Field::new(
            "id",
            arrow::datatypes::DataType::Int64,
            false,
        )]));
        let batch = arrow::record_batch::RecordBatch::try_new(
            schema,
            vec![Arc::new(arrow::array::Int64Array::from(vec![1, 2, 1, 3, 2]))],
        )
        .unwrap();
        let keys = KeySelector::new(["id"]).extract(&batch, 128).unwrap();
        let mut absent = Vec::new();
        assert_eq!(seen.put_if_absent_batch(&mut s, &keys, &1, &mut absent).unwrap(), 3);
        assert_eq!(absent, vec![true, true, false, true, false]);
        assert_eq!(seen.put_if_absent_batch(&mut s, &keys, &1, &mut absent).unwrap(), 0);
        clock.advance_ms(5_000);
        assert_eq!(seen.put_if_absent_batch(&mut s, &keys, &1, &mut absent).unwrap(), 3, "expired keys are new");
    }

    #[test]
    fn evicted_state_reads_back_and_every_change_reaches_the_changelog() {
        let clock = ManualClock::new(0);
        let mut s = spilling(&clock, 1);
        let v: ValueState<String> = s.value_state("v", None).unwrap();
        let m: MapState<u32, u32> = s.map_state("m", None).unwrap();
        for i in 0..100u32 {
            let k = i.to_be_bytes();
            v.put(&mut s, key(&k), &format!("value {i}")).unwrap();
            m.put(&mut s, key(&k), &i, &(i * 2)).unwrap();
            m.put(&mut s, key(&k), &(i + 1), &(i * 3)).unwrap();
        }
        assert!(s.len_in_memory() < 10, "evicted: {}", s.len_in_memory());
        for i in 0..100u32 {
            let k = i.to_be_bytes();
            assert_eq!(v.get(&mut s, key(&k)).unwrap(), Some(format!("value {i}")));
            assert_eq!(m.entries(&mut s, key(&k)).unwrap(), vec![(i, i * 2), (i + 1, i * 3)]);
        }
        let log = log_of(&mut s);
        assert_eq!(log.len(), 300, "100 values and 200 map entries");
        assert!(log.values().all(Option::is_some));
        assert_eq!(m.scan_all(&mut s).unwrap().len(), 200);
        for i in 0..50u32 {
            v.remove(&mut s, key(&i.to_be_bytes())).unwrap();
            m.remove(&mut s, key(&i.to_be_bytes()), &i).unwrap();
        }
        let log = log_of(&mut s);
        assert_eq!(log.len(), 100);
        assert!(log.values().all(Option::is_none));
        assert_eq!(v.get(&mut s, key(&7u32.to_be_bytes())).unwrap(), None);
        assert_eq!(m.scan_all(&mut s).unwrap().len(), 150);
    }

    #[cfg(feature = "disk")]
    #[test]
    fn eviction_to_the_disk_store_keeps_every_key() {
        use crate::state::{DiskStateBackend, StateBackend, StoreScope};
        let dir = tempfile::tempdir().unwrap();
        let scope = StoreScope { job_id: "job", operator_id: "dedup", subtask: 0, attempt: 0 };
        let disk = DiskStateBackend::new(dir.path().to_path_buf()).open_store(&scope).unwrap();
        let clock = ManualClock::new(0);
        let mut s = KeyedStateStore::new("op", disk, KeyGroupRange { start: 0, end: 128 }, Arc::new(clock), true)
            .with_memory_budget(Arc::new(MemoryBudget::new(64 << 10)))
            .check_budget_every(64);
        let seen: ValueState<u64> = s.value_state("seen", None).unwrap();
        for i in 0..20_000u64 {
            seen.put(&mut s, key(&i.to_be_bytes()), &i).unwrap();
        }
        assert!(s.len_in_memory() < 5_000, "evicted: {} in memory", s.len_in_memory());
        for i in (0..20_000u64).step_by(7) {
            assert_eq!(seen.get(&mut s, key(&i.to_be_bytes())).unwrap(), Some(i));
        }
        assert_eq!(seen.get(&mut s, key(&20_000u64.to_be_bytes())).unwrap(), None);
        assert_eq!(log_of(&mut s).len(), 20_000, "every change reaches the checkpoint");
        assert!(log_of(&mut s).is_empty());
    }

    /// Filling a budget never copies the slot vector into a larger one (both would be
    /// in memory at once): the store reserved its share of the budget up front.
    #[test]
    fn filling_the_budget_never_regrows_the_slot_vector() {
        let clock = ManualClock::new(0);
        let budget = 1u64 << 20;
        let mut s = spilling(&clock, budget).check_budget_every(64);
        s.reserve_budget_share(1);
        let reserved = s.table.slot_capacity();
        assert!(reserved >= budget as usize / Table::SLOT_BYTES, "{reserved}");
        let seen: ValueState<u64> = s.value_state("seen", None).unwrap();
        for i in 0..200_000u64 {
            seen.put(&mut s, key(&i.to_be_bytes()), &i).unwrap();
            assert!(s.table.slot_capacity() <= reserved, "the slot vector grew at key {i}");
        }
        assert!(s.len_in_memory() < 200_000, "the budget was reached: {} in memory", s.len_in_memory());
        for i in (0..200_000u64).step_by(997) {
            assert_eq!(seen.get(&mut s, key(&i.to_be_bytes())).unwrap(), Some(i));
        }
    }

    #[test]
    fn a_restore_larger_than_the_budget_waits_on_disk_not_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(0);
        let mut writer = store(&clock);
        let seen: ValueState<u64> = writer.value_state("seen", None).unwrap();
        let groups: MapState<u32, u32> = writer.map_state("groups", None).unwrap();
        for i in 0..20_000u64 {
            seen.put(&mut writer, key(&i.to_be_bytes()), &i).unwrap();
        }
        for i in 0..50u32 {
            groups.put(&mut writer, key(&i.to_be_bytes()), &i, &(i * 2)).unwrap();
        }
        let log = writer.take_changelog().unwrap().unwrap();
        let path = dir.path().join("base.kv");
        write_sorted(&path, log.iter().map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec))).collect()).unwrap();

        let budget = Arc::new(MemoryBudget::new(64 << 10));
        let mut s = KeyedStateStore::new(
            "op",
            Some(Box::new(MemoryStore::default())),
            KeyGroupRange { start: 0, end: 128 },
            Arc::new(clock.clone()),
            true,
        )
        .with_memory_budget(budget.clone())
        .check_budget_every(64);
        // Loaded before the operator registers its states (as in `open`): the entries
        // wait in the spill store, not in memory.
        assert_eq!(s.load_chain(std::slice::from_ref(&path), |_| Ok(())).unwrap(), 20_050);
        assert!(s.raw.is_empty());
        assert_eq!(s.len_in_memory(), 0);
        let seen: ValueState<u64> = s.value_state("seen", None).unwrap();
        assert!(budget.used() <= budget.limit(), "{} of {}", budget.used(), budget.limit());
        assert!(s.len_in_memory() < 5_000, "{} in memory", s.len_in_memory());
        for i in (0..20_000u64).step_by(7) {
            assert_eq!(seen.get(&mut s, key(&i.to_be_bytes())).unwrap(), Some(i));
        }
        let groups: MapState<u32, u32> = s.map_state("groups", None).unwrap();
        assert_eq!(groups.get(&mut s, key(&7u32.to_be_bytes()), &7).unwrap(), Some(14));
        // Moved, not copied: the spill store holds no restored entry any more.
        let spill = s.spill.as_ref().unwrap();
        assert!(spill.store.scan(&[SPILL_RAW], &[SPILL_RAW + 1], 1).unwrap().is_empty());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Put(u8, u16),
        Remove(u8),
        Get(u8),
        MapPut(u8, u8, u16),
        MapRemove(u8, u8),
        Advance(u16),
        Checkpoint,
        Expire,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..40u8, any::<u16>()).prop_map(|(k, v)| Op::Put(k, v)),
            2 => (0..40u8).prop_map(Op::Remove),
            3 => (0..40u8).prop_map(Op::Get),
            3 => (0..20u8, 0..4u8, any::<u16>()).prop_map(|(k, u, v)| Op::MapPut(k, u, v)),
            1 => (0..20u8, 0..4u8).prop_map(|(k, u)| Op::MapRemove(k, u)),
            1 => (0..3000u16).prop_map(Op::Advance),
            1 => Just(Op::Checkpoint),
            1 => Just(Op::Expire),
        ]
    }

    proptest! {
        /// Under any budget, a spilling store answers every read as the all-in-memory
        /// store does, and the changelogs of both, applied in turn, give the same
        /// checkpointed state.
        #[test]
        fn a_budget_changes_nothing_but_memory(ops in proptest::collection::vec(op(), 1..300), budget in 1u64..4000) {
            let clock = ManualClock::new(0);
            let ttl = Some(StateTtl::after_write(Duration::from_secs(5)));
            let mut a = store(&clock);
            let mut b = spilling(&clock, budget);
            let (va, vb): (ValueState<u16>, ValueState<u16>) = (a.value_state("v", ttl).unwrap(), b.value_state("v", ttl).unwrap());
            let (ma, mb): (MapState<u8, u16>, MapState<u8, u16>) = (a.map_state("m", None).unwrap(), b.map_state("m", None).unwrap());
            let mut ca: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            let mut cb = ca.clone();
            let apply = |c: &mut BTreeMap<Vec<u8>, Vec<u8>>, log: BTreeMap<Vec<u8>, Option<Vec<u8>>>| {
                for (k, v) in log {
                    match v { Some(v) => { c.insert(k, v); } None => { c.remove(&k); } }
                }
            };
            for op in ops {
                match op {
                    Op::Put(k, v) => { va.put(&mut a, pkey(&[k]), &v).unwrap(); vb.put(&mut b, pkey(&[k]), &v).unwrap(); }
                    Op::Remove(k) => { va.remove(&mut a, pkey(&[k])).unwrap(); vb.remove(&mut b, pkey(&[k])).unwrap(); }
                    Op::Get(k) => prop_assert_eq!(va.get(&mut a, pkey(&[k])).unwrap(), vb.get(&mut b, pkey(&[k])).unwrap()),
                    Op::MapPut(k, u, v) => { ma.put(&mut a, pkey(&[k, 0]), &u, &v).unwrap(); mb.put(&mut b, pkey(&[k, 0]), &u, &v).unwrap(); }
                    Op::MapRemove(k, u) => { ma.remove(&mut a, pkey(&[k, 0]), &u).unwrap(); mb.remove(&mut b, pkey(&[k, 0]), &u).unwrap(); }
                    Op::Advance(ms) => clock.advance_ms(i64::from(ms)),
                    Op::Checkpoint => { apply(&mut ca, log_of(&mut a)); apply(&mut cb, log_of(&mut b)); }
                    Op::Expire => { a.expire(10).unwrap(); b.expire(10).unwrap(); }
                }
            }
            for k in 0..20u8 {
                prop_assert_eq!(ma.entries(&mut a, pkey(&[k, 0])).unwrap(), mb.entries(&mut b, pkey(&[k, 0])).unwrap());
            }
            prop_assert_eq!(ma.scan_all(&mut a).unwrap(), mb.scan_all(&mut b).unwrap());
            apply(&mut ca, log_of(&mut a));
            apply(&mut cb, log_of(&mut b));
            // Expired entries may be checkpointed by one and swept by the other: compare
            // what a restore would load.
            let now = crate::clock::Clock::now_ms(&clock);
            let live = |c: BTreeMap<Vec<u8>, Vec<u8>>| -> BTreeMap<Vec<u8>, Vec<u8>> {
                c.into_iter().filter(|(_, v)| !matches!(split_envelope(v), Some((Some(e), _)) if e <= now)).collect()
            };
            prop_assert_eq!(live(ca), live(cb));
        }
    }
}
