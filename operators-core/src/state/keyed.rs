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
//! Store keys start with the key group, so a subtask's entries can be split by key group
//! when the job is restored at another parallelism. Every change is also recorded in a
//! changelog that the next checkpoint writes out as a delta file; taking the changelog is
//! O(1), so the synchronous part of a snapshot does not grow with the state.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::KeyValueStore;
use super::kvfile::{KvEntry, MergedChain};
use crate::clock::SharedClock;
use crate::error::{Error, Result};
use crate::key::{KeyGroupRange, KeyRef};

/// Changes since the last checkpoint: store key → new value, or `None` for a deletion.
pub type Changelog = HashMap<Vec<u8>, Option<Vec<u8>>>;

const TTL_INDEX_PREFIX: [u8; 2] = [0xFF, 0xFF];
const ENVELOPE_PLAIN: u8 = 0;
const ENVELOPE_TTL: u8 = 1;

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
/// from the store by a periodic sweep, so state does not grow without bound.
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
}

/// The keyed state of one operator subtask.
pub struct KeyedStateStore {
    operator: String,
    store: Box<dyn KeyValueStore>,
    changelog: Option<Changelog>,
    clock: SharedClock,
    key_groups: KeyGroupRange,
    registered: HashMap<u32, String>,
    scratch: Vec<u8>,
    has_ttl: bool,
}

impl std::fmt::Debug for KeyedStateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedStateStore")
            .field("operator", &self.operator)
            .field("key_groups", &self.key_groups)
            .field("states", &self.registered.values().collect::<Vec<_>>())
            .finish()
    }
}

impl KeyedStateStore {
    /// Wraps a working store. `changelog` is on when checkpoints will be taken.
    pub fn new(
        operator: impl Into<String>,
        store: Box<dyn KeyValueStore>,
        key_groups: KeyGroupRange,
        clock: SharedClock,
        changelog: bool,
    ) -> Self {
        Self {
            operator: operator.into(),
            store,
            changelog: changelog.then(HashMap::new),
            clock,
            key_groups,
            registered: HashMap::new(),
            scratch: Vec::with_capacity(64),
            has_ttl: false,
        }
    }

    /// The key groups this subtask owns.
    pub fn key_groups(&self) -> KeyGroupRange {
        self.key_groups
    }

    /// Registers (or looks up) a value state.
    pub fn value_state<T>(&mut self, name: &str, ttl: Option<StateTtl>) -> Result<ValueState<T>>
    where
        T: Serialize + DeserializeOwned,
    {
        let id = self.register(name, ttl)?;
        Ok(ValueState { id, ttl, _t: PhantomData })
    }

    /// Registers (or looks up) a map state.
    pub fn map_state<K, V>(&mut self, name: &str, ttl: Option<StateTtl>) -> Result<MapState<K, V>>
    where
        K: Serialize + DeserializeOwned,
        V: Serialize + DeserializeOwned,
    {
        let id = self.register(name, ttl)?;
        Ok(MapState { id, ttl, _t: PhantomData })
    }

    fn register(&mut self, name: &str, ttl: Option<StateTtl>) -> Result<u32> {
        // The id is a hash of the name, so it is the same in every run and snapshot files
        // need no name table.
        let id = (xxhash_rust::xxh3::xxh3_64(name.as_bytes()) & 0xFFFF_FFFF) as u32;
        match self.registered.get(&id) {
            Some(existing) if existing != name => {
                return Err(self.err(format!("state names `{existing}` and `{name}` collide; rename one of them")));
            }
            _ => {}
        }
        self.registered.insert(id, name.to_string());
        self.has_ttl |= ttl.is_some();
        Ok(id)
    }

    fn err(&self, message: String) -> Error {
        Error::State { operator: self.operator.clone(), message }
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

    fn value_key(&mut self, id: u32, key: KeyRef<'_>) -> Vec<u8> {
        self.scratch.clear();
        self.scratch.extend_from_slice(&key.key_group.to_be_bytes());
        self.scratch.extend_from_slice(&id.to_be_bytes());
        self.scratch.extend_from_slice(key.bytes);
        self.scratch.clone()
    }

    fn map_prefix(&mut self, id: u32, key: KeyRef<'_>) -> Vec<u8> {
        self.scratch.clear();
        self.scratch.extend_from_slice(&key.key_group.to_be_bytes());
        self.scratch.extend_from_slice(&id.to_be_bytes());
        let len = u32::try_from(key.bytes.len()).unwrap_or(u32::MAX);
        self.scratch.extend_from_slice(&len.to_be_bytes());
        self.scratch.extend_from_slice(key.bytes);
        self.scratch.clone()
    }

    fn log(&mut self, key: &[u8], value: Option<&[u8]>) {
        if let Some(log) = &mut self.changelog {
            log.insert(key.to_vec(), value.map(<[u8]>::to_vec));
        }
    }

    fn raw_put(&mut self, full_key: &[u8], payload: &[u8], ttl: Option<&StateTtl>) -> Result<()> {
        let mut value = Vec::with_capacity(payload.len() + 9);
        match ttl {
            None => value.push(ENVELOPE_PLAIN),
            Some(t) => {
                let expiry = self.clock.now_ms().saturating_add(t.ttl_ms());
                value.push(ENVELOPE_TTL);
                value.extend_from_slice(&expiry.to_be_bytes());
                self.store.put(&ttl_index_key(expiry, full_key), &[])?;
            }
        }
        value.extend_from_slice(payload);
        self.store.put(full_key, &value)?;
        self.log(full_key, Some(&value));
        Ok(())
    }

    fn raw_delete(&mut self, full_key: &[u8]) -> Result<()> {
        self.store.delete(full_key)?;
        self.log(full_key, None);
        Ok(())
    }

    /// Reads a payload, hiding (and removing) an expired entry.
    fn raw_get(&mut self, full_key: &[u8], ttl: Option<&StateTtl>) -> Result<Option<Vec<u8>>> {
        let Some(value) = self.store.get(full_key)? else {
            return Ok(None);
        };
        let (expiry, payload) = split_envelope(&value).ok_or_else(|| {
            self.err("a state entry has an unknown envelope (state written by another version?)".into())
        })?;
        if let Some(expiry) = expiry
            && expiry <= self.clock.now_ms()
        {
            self.raw_delete(full_key)?;
            return Ok(None);
        }
        let payload = payload.to_vec();
        if let Some(t) = ttl
            && t.update == TtlUpdate::OnReadAndWrite
        {
            self.raw_put(full_key, &payload, ttl)?;
        }
        Ok(Some(payload))
    }

    /// Removes up to `limit` expired entries. Returns how many index entries were processed.
    pub fn expire(&mut self, limit: usize) -> Result<usize> {
        if !self.has_ttl {
            return Ok(0);
        }
        let now = self.clock.now_ms();
        let start = TTL_INDEX_PREFIX.to_vec();
        let end = ttl_index_key(now.saturating_add(1), &[]);
        let due = self.store.scan(&start, &end, limit)?;
        for (index_key, _) in &due {
            let full_key = &index_key[10..];
            if let Some(value) = self.store.get(full_key)?
                && let Some((Some(expiry), _)) = split_envelope(&value)
                && expiry <= now
            {
                self.raw_delete(full_key)?;
            }
            self.store.delete(index_key)?;
        }
        Ok(due.len())
    }

    /// Takes the changes recorded since the last call (O(1)).
    pub(crate) fn take_changelog(&mut self) -> Option<Changelog> {
        self.changelog.as_mut().map(std::mem::take)
    }

    /// Puts back changes whose checkpoint write failed, under any newer changes.
    pub(crate) fn restore_changelog(&mut self, older: Changelog) {
        if let Some(log) = &mut self.changelog {
            for (k, v) in older {
                log.entry(k).or_insert(v);
            }
        }
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
        let mut loaded = 0;
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
            match split_envelope(value) {
                Some((Some(expiry), _)) if expiry <= now => continue,
                Some((Some(expiry), _)) => {
                    self.store.put(&ttl_index_key(expiry, key), &[])?;
                    self.has_ttl = true;
                }
                Some((None, _)) => {}
                None => {
                    return Err(Error::CorruptState {
                        path: chain.last().cloned().unwrap_or_default(),
                        reason: "state entry with an unknown envelope".into(),
                    });
                }
            }
            self.store.put(key, value)?;
            also_emit(&entry)?;
            loaded += 1;
        }
        Ok(loaded)
    }
}

fn ttl_index_key(expiry: i64, full_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(10 + full_key.len());
    k.extend_from_slice(&TTL_INDEX_PREFIX);
    // Flip the sign bit so that byte order equals numeric order for negative times too.
    k.extend_from_slice(&((expiry as u64) ^ (1 << 63)).to_be_bytes());
    k.extend_from_slice(full_key);
    k
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

fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xFF: no finite successor; the TTL index starts at 0xFFFF so stop before it.
    TTL_INDEX_PREFIX.to_vec()
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
    ttl: Option<StateTtl>,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for ValueState<T> {
    fn clone(&self) -> Self {
        Self { id: self.id, ttl: self.ttl, _t: PhantomData }
    }
}

impl<T: Serialize + DeserializeOwned> ValueState<T> {
    /// The value for `key`, if set and not expired.
    pub fn get(&self, store: &mut KeyedStateStore, key: KeyRef<'_>) -> Result<Option<T>> {
        store.check_group(key)?;
        let full = store.value_key(self.id, key);
        match store.raw_get(&full, self.ttl.as_ref())? {
            Some(bytes) => decode(store, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Whether `key` has a live value (without decoding it).
    pub fn contains(&self, store: &mut KeyedStateStore, key: KeyRef<'_>) -> Result<bool> {
        store.check_group(key)?;
        let full = store.value_key(self.id, key);
        Ok(store.raw_get(&full, self.ttl.as_ref())?.is_some())
    }

    /// Sets the value for `key` (and renews its TTL).
    pub fn put(&self, store: &mut KeyedStateStore, key: KeyRef<'_>, value: &T) -> Result<()> {
        store.check_group(key)?;
        let full = store.value_key(self.id, key);
        let payload = encode(store, value)?;
        store.raw_put(&full, &payload, self.ttl.as_ref())
    }

    /// Removes the value for `key`.
    pub fn remove(&self, store: &mut KeyedStateStore, key: KeyRef<'_>) -> Result<()> {
        store.check_group(key)?;
        let full = store.value_key(self.id, key);
        store.raw_delete(&full)
    }
}

/// One entry of a map state found by [`MapState::scan_all`]:
/// `(key group, key bytes, user key, value)`.
pub type MapStateEntry<K, V> = (u16, Vec<u8>, K, V);

/// A handle to a map state: a map from `K` to `V` per key.
#[derive(Debug)]
pub struct MapState<K, V> {
    id: u32,
    ttl: Option<StateTtl>,
    _t: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for MapState<K, V> {
    fn clone(&self) -> Self {
        Self { id: self.id, ttl: self.ttl, _t: PhantomData }
    }
}

impl<K, V> MapState<K, V>
where
    K: Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    fn entry_key(&self, store: &mut KeyedStateStore, key: KeyRef<'_>, user_key: &K) -> Result<Vec<u8>> {
        let mut full = store.map_prefix(self.id, key);
        full.extend_from_slice(&encode(store, user_key)?);
        Ok(full)
    }

    /// The value under `user_key` for `key`.
    pub fn get(&self, store: &mut KeyedStateStore, key: KeyRef<'_>, user_key: &K) -> Result<Option<V>> {
        store.check_group(key)?;
        let full = self.entry_key(store, key, user_key)?;
        match store.raw_get(&full, self.ttl.as_ref())? {
            Some(bytes) => decode(store, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Sets `user_key` to `value` for `key`.
    pub fn put(&self, store: &mut KeyedStateStore, key: KeyRef<'_>, user_key: &K, value: &V) -> Result<()> {
        store.check_group(key)?;
        let full = self.entry_key(store, key, user_key)?;
        let payload = encode(store, value)?;
        store.raw_put(&full, &payload, self.ttl.as_ref())
    }

    /// Removes `user_key` for `key`.
    pub fn remove(&self, store: &mut KeyedStateStore, key: KeyRef<'_>, user_key: &K) -> Result<()> {
        store.check_group(key)?;
        let full = self.entry_key(store, key, user_key)?;
        store.raw_delete(&full)
    }

    /// All live entries for `key`, ordered by the encoded user key.
    pub fn entries(&self, store: &mut KeyedStateStore, key: KeyRef<'_>) -> Result<Vec<(K, V)>> {
        store.check_group(key)?;
        let prefix = store.map_prefix(self.id, key);
        let end = prefix_end(&prefix);
        let now = store.clock.now_ms();
        let mut out = Vec::new();
        for (full, value) in store.store.scan(&prefix, &end, usize::MAX)? {
            let Some((expiry, payload)) = split_envelope(&value) else {
                return Err(store.err("a map state entry has an unknown envelope".into()));
            };
            if matches!(expiry, Some(e) if e <= now) {
                continue;
            }
            let k = decode(store, &full[prefix.len()..])?;
            let v = decode(store, payload)?;
            out.push((k, v));
        }
        Ok(out)
    }

    /// Every live entry of this state in the subtask's key groups, as
    /// `(key group, key bytes, user key, value)`, in store order.
    ///
    /// Reads the whole state: it is meant for rebuilding an operator's in-memory index
    /// once after a restore (the event-time timers of a window operator), not for the
    /// processing path.
    pub fn scan_all(&self, store: &mut KeyedStateStore) -> Result<Vec<MapStateEntry<K, V>>> {
        let now = store.clock.now_ms();
        let range = store.key_groups;
        let mut out = Vec::new();
        for kg in range.start..range.end {
            let mut prefix = Vec::with_capacity(6);
            prefix.extend_from_slice(&kg.to_be_bytes());
            prefix.extend_from_slice(&self.id.to_be_bytes());
            let end = prefix_end(&prefix);
            for (full, value) in store.store.scan(&prefix, &end, usize::MAX)? {
                let rest = &full[prefix.len()..];
                let (key_bytes, user_key) = match rest.get(..4) {
                    Some(len) => {
                        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
                        match (rest.get(4..4 + len), rest.get(4 + len..)) {
                            (Some(k), Some(u)) => (k, u),
                            _ => return Err(store.err("a map state entry has a truncated key".into())),
                        }
                    }
                    None => return Err(store.err("a map state entry has a truncated key".into())),
                };
                let Some((expiry, payload)) = split_envelope(&value) else {
                    return Err(store.err("a map state entry has an unknown envelope".into()));
                };
                if matches!(expiry, Some(e) if e <= now) {
                    continue;
                }
                out.push((kg, key_bytes.to_vec(), decode(store, user_key)?, decode(store, payload)?));
            }
        }
        Ok(out)
    }

    /// Removes every entry for `key`.
    pub fn clear(&self, store: &mut KeyedStateStore, key: KeyRef<'_>) -> Result<()> {
        store.check_group(key)?;
        let prefix = store.map_prefix(self.id, key);
        let end = prefix_end(&prefix);
        for (full, _) in store.store.scan(&prefix, &end, usize::MAX)? {
            store.raw_delete(&full)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::state::MemoryStore;
    use crate::state::kvfile::write_sorted;
    use std::sync::Arc;

    fn store(clock: &ManualClock) -> KeyedStateStore {
        KeyedStateStore::new(
            "op",
            Box::new(MemoryStore::default()),
            KeyGroupRange { start: 0, end: 128 },
            Arc::new(clock.clone()),
            true,
        )
    }

    fn key(bytes: &[u8]) -> KeyRef<'_> {
        KeyRef { key_group: 3, bytes }
    }

    #[test]
    fn value_state_round_trip_and_changelog() {
        let clock = ManualClock::new(1_000);
        let mut s = store(&clock);
        let count: ValueState<u64> = s.value_state("count", None).unwrap();
        assert_eq!(count.get(&mut s, key(b"a")).unwrap(), None);
        count.put(&mut s, key(b"a"), &5).unwrap();
        assert_eq!(count.get(&mut s, key(b"a")).unwrap(), Some(5));
        let log = s.take_changelog().unwrap();
        assert_eq!(log.len(), 1);
        assert!(s.take_changelog().unwrap().is_empty(), "taking empties the log");
        count.remove(&mut s, key(b"a")).unwrap();
        assert_eq!(s.take_changelog().unwrap().values().next(), Some(&None));
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
        // Nothing left in the working store: neither entries nor index.
        assert!(s.store.scan(&[0], &[0xFF, 0xFF, 0xFF], 10).unwrap().is_empty());
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
    }

    #[test]
    fn map_state_scan_all_sees_every_key() {
        let clock = ManualClock::new(0);
        let mut s = store(&clock);
        let m: MapState<(i64, i64), u8> = s.map_state("m", None).unwrap();
        let other: MapState<(i64, i64), u8> = s.map_state("other", None).unwrap();
        m.put(&mut s, KeyRef { key_group: 1, bytes: b"a" }, &(0, 10), &1).unwrap();
        m.put(&mut s, KeyRef { key_group: 7, bytes: b"bb" }, &(10, 20), &2).unwrap();
        m.put(&mut s, KeyRef { key_group: 7, bytes: b"bb" }, &(20, 30), &3).unwrap();
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
        let mut s = KeyedStateStore::new(
            "op",
            Box::new(MemoryStore::default()),
            KeyGroupRange { start: 0, end: 2 },
            Arc::new(clock),
            false,
        );
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
        let log = writer.take_changelog().unwrap();
        let path = dir.path().join("base.kv");
        write_sorted(&path, log.into_iter().collect()).unwrap();

        let mut reader = KeyedStateStore::new(
            "op",
            Box::new(MemoryStore::default()),
            KeyGroupRange { start: 1, end: 3 },
            Arc::new(clock.clone()),
            true,
        );
        let mut emitted = 0;
        let loaded = reader.load_chain(std::slice::from_ref(&path), |_| {
            emitted += 1;
            Ok(())
        });
        assert_eq!(loaded.unwrap(), 2);
        assert_eq!(emitted, 2);
        let v: ValueState<u32> = reader.value_state("v", None).unwrap();
        assert_eq!(v.get(&mut reader, KeyRef { key_group: 2, bytes: b"k" }).unwrap(), Some(2));

        // After the TTL, a restore loads nothing.
        clock.advance_ms(10_000);
        let mut late = store(&clock);
        assert_eq!(late.load_chain(&[path], |_| Ok(())).unwrap(), 0);
    }
}
