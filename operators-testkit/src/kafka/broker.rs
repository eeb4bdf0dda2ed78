//! A single-node Kafka broker for tests, with real transaction semantics.
//!
//! librdkafka's mock cluster speaks the protocol well but does not implement transaction
//! *outcomes*: its `EndTxn` only checks the producer id, writes no commit or abort
//! markers, reports the log end as the last stable offset and never lists aborted
//! transactions, so a `read_committed` consumer sees the records of aborted and
//! never-finished transactions. An exactly-once sink cannot be tested against that.
//! This broker implements the subset of the protocol that librdkafka's producer and
//! consumer and the sinks' recovery client use, with Kafka's documented semantics:
//!
//! - produce with idempotent sequence checks (duplicates acknowledged with their first
//!   offset, gaps refused) and epoch fencing;
//! - transactions: `InitProducerId` (aborting an open transaction and bumping the epoch),
//!   `AddPartitionsToTxn`, `AddOffsetsToTxn`, `TxnOffsetCommit`, `EndTxn` (commit and abort
//!   markers written as control batches, retries of a finished transaction answered as
//!   Kafka does), `DescribeTransactions`, transaction timeouts (the broker aborts and
//!   fences);
//! - fetch with isolation levels: `read_committed` reads up to the last stable offset and
//!   gets the aborted-transaction index; long polling;
//! - offsets: `ListOffsets` (earliest, latest or last stable), `OffsetCommit`,
//!   `OffsetFetch` (with `require_stable`);
//! - `Metadata`, `FindCoordinator`, `CreateTopics`, `ApiVersions`, SASL/PLAIN.
//!
//! Not implemented: consumer group membership (`JoinGroup`…; clients here assign
//! partitions themselves), replication, retention, compaction. The log lives in memory.
//!
//! Faults can be injected per API: an error code for the next requests, a dropped
//! connection, a delay ([`Fault`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::add_offsets_to_txn_response::AddOffsetsToTxnResponse;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResponse, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};
use kafka_protocol::messages::create_topics_response::{CreatableTopicResult, CreateTopicsResponse};
use kafka_protocol::messages::describe_transactions_response::{
    DescribeTransactionsResponse, TopicData, TransactionState,
};
use kafka_protocol::messages::end_txn_response::EndTxnResponse;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchResponse, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::find_coordinator_response::FindCoordinatorResponse;
use kafka_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponse, OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponse, OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, ProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::sasl_authenticate_response::SaslAuthenticateResponse;
use kafka_protocol::messages::sasl_handshake_response::SaslHandshakeResponse;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponse, TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, ProducerId, RequestHeader, RequestKind, ResponseHeader, ResponseKind, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes, decode_request_header_from_buffer};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// Kafka error codes this broker answers with.
pub mod codes {
    /// No error.
    pub const NONE: i16 = 0;
    /// The fetch offset is beyond the log.
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    /// A record batch could not be parsed.
    pub const CORRUPT_MESSAGE: i16 = 2;
    /// The topic or partition does not exist.
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    /// Retriable: the request timed out.
    pub const REQUEST_TIMED_OUT: i16 = 7;
    /// Retriable: the coordinator is not available.
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    /// Retriable: not enough replicas.
    pub const NOT_ENOUGH_REPLICAS: i16 = 19;
    /// The API version is not supported.
    pub const UNSUPPORTED_VERSION: i16 = 35;
    /// The topic exists already.
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    /// A sequence number gap.
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    /// A produce request with an old producer epoch.
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    /// The transaction is not in a state that allows the request.
    pub const INVALID_TXN_STATE: i16 = 48;
    /// The producer id does not belong to the transactional id.
    pub const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
    /// SASL authentication failed.
    pub const SASL_AUTHENTICATION_FAILED: i16 = 58;
    /// Offsets of an open transaction are pending for the group.
    pub const UNSTABLE_OFFSET_COMMIT: i16 = 88;
    /// A newer producer with the same transactional id exists.
    pub const PRODUCER_FENCED: i16 = 90;
    /// The transactional id is unknown.
    pub const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;
}
use codes::*;

/// Something to go wrong on purpose, for the next request of one API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this error code (where the API has one: produce and fetch partitions,
    /// the transaction APIs, find-coordinator, list-offsets, offset commit).
    Error(i16),
    /// Close the connection instead of answering; the request is not processed.
    Drop,
    /// Process the request, then close the connection without answering (the client
    /// retries something that already happened).
    DropResponse,
    /// Answer after this delay.
    Delay(Duration),
}

/// How the broker behaves.
#[derive(Debug, Clone, Default)]
pub struct BrokerConfig {
    /// Create unknown topics asked for in metadata requests, with this many partitions.
    pub auto_create_partitions: Option<i32>,
    /// Require SASL/PLAIN with this user and password.
    pub sasl_plain: Option<(String, String)>,
}

/// A running test broker; stopped when dropped.
pub struct TestBroker {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for TestBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestBroker").field("addr", &self.addr).finish()
    }
}

struct Shared {
    state: Mutex<State>,
    /// Woken whenever a log grows or a transaction ends (long-polling fetches wait on it).
    data: Notify,
    config: BrokerConfig,
    port: i32,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a broker bug; the data is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Default)]
struct State {
    topics: BTreeMap<String, Vec<Partition>>,
    txns: HashMap<String, Txn>,
    next_pid: i64,
    groups: HashMap<String, GroupOffsets>,
    faults: HashMap<i16, VecDeque<Fault>>,
    requests: HashMap<i16, u64>,
}

/// Committed `(offset, metadata)` by `(topic, partition)`.
type GroupOffsets = BTreeMap<(String, i32), (i64, Option<String>)>;

#[derive(Default)]
struct Partition {
    batches: Vec<StoredBatch>,
    next_offset: i64,
    /// First offset of each open transaction on this partition, by producer id.
    ongoing: BTreeMap<i64, i64>,
    aborted: Vec<AbortedRange>,
    producers: HashMap<i64, ProducerSeq>,
}

struct StoredBatch {
    base_offset: i64,
    last_offset: i64,
    max_timestamp: i64,
    bytes: Bytes,
}

struct AbortedRange {
    producer_id: i64,
    first_offset: i64,
    last_offset: i64,
}

struct ProducerSeq {
    epoch: i16,
    last_seq: i32,
    /// `(first sequence, last sequence, base offset)` of the last five batches.
    recent: VecDeque<(i32, i32, i64)>,
}

impl Partition {
    fn last_stable_offset(&self) -> i64 {
        self.ongoing.values().min().copied().unwrap_or(self.next_offset)
    }

    fn push(&mut self, mut bytes: BytesMut, last_offset_delta: i32, max_timestamp: i64) -> i64 {
        let base = self.next_offset;
        bytes[0..8].copy_from_slice(&base.to_be_bytes());
        let last = base + i64::from(last_offset_delta);
        self.batches.push(StoredBatch { base_offset: base, last_offset: last, max_timestamp, bytes: bytes.freeze() });
        self.next_offset = last + 1;
        base
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxnStatus {
    Empty,
    Ongoing,
    CompleteCommit,
    CompleteAbort,
}

impl TxnStatus {
    fn name(self) -> &'static str {
        match self {
            TxnStatus::Empty => "Empty",
            TxnStatus::Ongoing => "Ongoing",
            TxnStatus::CompleteCommit => "CompleteCommit",
            TxnStatus::CompleteAbort => "CompleteAbort",
        }
    }
}

struct Txn {
    producer_id: i64,
    epoch: i16,
    status: TxnStatus,
    timeout: Duration,
    started: Instant,
    started_ms: i64,
    partitions: BTreeSet<(String, i32)>,
    pending_offsets: Vec<(String, String, i32, i64, Option<String>)>,
}

/// One record batch header (magic 2).
struct BatchHeader {
    start: usize,
    len: usize,
    attributes: i16,
    last_offset_delta: i32,
    max_timestamp: i64,
    producer_id: i64,
    epoch: i16,
    base_seq: i32,
    count: i32,
}

impl BatchHeader {
    fn transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }
    fn last_seq(&self) -> i32 {
        // Sequences wrap at i32::MAX.
        let last = i64::from(self.base_seq) + i64::from(self.count) - 1;
        (last % (i64::from(i32::MAX) + 1)) as i32
    }
}

fn parse_batches(data: &[u8]) -> Result<Vec<BatchHeader>, i16> {
    let mut out = Vec::new();
    let mut pos = 0;
    let i16_at = |p: usize| i16::from_be_bytes([data[p], data[p + 1]]);
    let i32_at = |p: usize| i32::from_be_bytes([data[p], data[p + 1], data[p + 2], data[p + 3]]);
    let i64_at = |p: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&data[p..p + 8]);
        i64::from_be_bytes(b)
    };
    while pos < data.len() {
        if data.len() - pos < 61 {
            return Err(CORRUPT_MESSAGE);
        }
        let batch_len = i32_at(pos + 8);
        let len = usize::try_from(batch_len).map_err(|_| CORRUPT_MESSAGE)? + 12;
        if len < 61 || pos + len > data.len() || data[pos + 16] != 2 {
            return Err(CORRUPT_MESSAGE);
        }
        out.push(BatchHeader {
            start: pos,
            len,
            attributes: i16_at(pos + 21),
            last_offset_delta: i32_at(pos + 23),
            max_timestamp: i64_at(pos + 35),
            producer_id: i64_at(pos + 43),
            epoch: i16_at(pos + 51),
            base_seq: i32_at(pos + 53),
            count: i32_at(pos + 57),
        });
        pos += len;
    }
    Ok(out)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// The API versions this broker serves: what librdkafka and the recovery client use.
const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 8),
    (ApiKey::Fetch, 4, 11),
    (ApiKey::ListOffsets, 1, 5),
    (ApiKey::Metadata, 1, 8),
    (ApiKey::OffsetCommit, 2, 7),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::FindCoordinator, 0, 3),
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 4),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::TxnOffsetCommit, 0, 3),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeTransactions, 0, 0),
];

impl TestBroker {
    /// Starts a broker on a free loopback port, with default settings.
    pub fn start() -> std::io::Result<Self> {
        Self::start_with(BrokerConfig::default())
    }

    /// Starts a broker on a free loopback port.
    pub fn start_with(config: BrokerConfig) -> std::io::Result<Self> {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State { next_pid: 1000, ..State::default() }),
            data: Notify::new(),
            config,
            port: i32::from(addr.port()),
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("test-broker")
            .enable_all()
            .build()?;
        let shared2 = shared.clone();
        // The broker has its own runtime so that a test blocking in a synchronous client
        // call cannot starve it.
        let thread = std::thread::Builder::new().name("test-broker".into()).spawn(move || {
            runtime.block_on(async move {
                let listener = match TcpListener::from_std(std_listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!("test broker cannot listen: {e}");
                        return;
                    }
                };
                tokio::spawn(expire_transactions(shared2.clone()));
                let accept = async {
                    loop {
                        match listener.accept().await {
                            Ok((stream, _)) => {
                                let _ = stream.set_nodelay(true);
                                tokio::spawn(serve(shared2.clone(), stream));
                            }
                            Err(e) => tracing::warn!("test broker accept: {e}"),
                        }
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stop_rx => {}
                }
            });
            runtime.shutdown_background();
        })?;
        Ok(Self { addr, shared, stop: Some(stop_tx), thread: Some(thread) })
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> String {
        self.addr.to_string()
    }

    /// Creates a topic (or fails if it exists).
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<(), String> {
        let mut state = self.shared.lock();
        if state.topics.contains_key(name) {
            return Err(format!("topic {name} exists"));
        }
        state.topics.insert(name.to_string(), (0..partitions.max(1)).map(|_| Partition::default()).collect());
        Ok(())
    }

    /// Grows a topic to `total` partitions (as `kafka-topics --alter --partitions`).
    pub fn add_partitions(&self, topic: &str, total: i32) -> Result<(), String> {
        let mut state = self.shared.lock();
        let parts = state.topics.get_mut(topic).ok_or_else(|| format!("no topic {topic}"))?;
        let total = usize::try_from(total).map_err(|_| "negative partition count".to_string())?;
        if total < parts.len() {
            return Err(format!("topic {topic} has {} partitions; they cannot shrink", parts.len()));
        }
        parts.resize_with(total, Partition::default);
        Ok(())
    }

    /// Queues faults for the next requests of `api`.
    pub fn inject(&self, api: ApiKey, faults: impl IntoIterator<Item = Fault>) {
        self.shared.lock().faults.entry(api as i16).or_default().extend(faults);
    }

    /// Requests of `api` received so far.
    pub fn request_count(&self, api: ApiKey) -> u64 {
        self.shared.lock().requests.get(&(api as i16)).copied().unwrap_or(0)
    }

    /// `(state, producer id, epoch)` of a transactional id, as `DescribeTransactions` tells.
    pub fn transaction(&self, transactional_id: &str) -> Option<(String, i64, i16)> {
        let state = self.shared.lock();
        state.txns.get(transactional_id).map(|t| (t.status.name().to_string(), t.producer_id, t.epoch))
    }

    /// Transactional ids with an open transaction.
    pub fn open_transactions(&self) -> Vec<String> {
        let state = self.shared.lock();
        let mut ids: Vec<String> =
            state.txns.iter().filter(|(_, t)| t.status == TxnStatus::Ongoing).map(|(k, _)| k.clone()).collect();
        ids.sort();
        ids
    }

    /// `(log end offset, last stable offset)` of a partition.
    pub fn offsets(&self, topic: &str, partition: i32) -> Option<(i64, i64)> {
        let state = self.shared.lock();
        let p = state.topics.get(topic)?.get(usize::try_from(partition).ok()?)?;
        Some((p.next_offset, p.last_stable_offset()))
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn expire_transactions(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut state = shared.lock();
        let expired: Vec<String> = state
            .txns
            .iter()
            .filter(|(_, t)| t.status == TxnStatus::Ongoing && t.started.elapsed() > t.timeout)
            .map(|(k, _)| k.clone())
            .collect();
        for tid in expired {
            tracing::info!("test broker: transaction {tid} timed out; aborting it and fencing its producer");
            state.end_transaction(&tid, false);
            if let Some(t) = state.txns.get_mut(&tid) {
                t.epoch = t.epoch.saturating_add(1);
            }
        }
        drop(state);
        shared.data.notify_waiters();
    }
}

async fn serve(shared: Arc<Shared>, mut stream: TcpStream) {
    let mut authenticated = shared.config.sasl_plain.is_none();
    loop {
        let len = match stream.read_i32().await {
            Ok(n) => n,
            Err(_) => return,
        };
        let Ok(len) = usize::try_from(len) else { return };
        if len > 256 << 20 {
            return;
        }
        let mut buf = BytesMut::zeroed(len);
        if stream.read_exact(&mut buf).await.is_err() {
            return;
        }
        let mut bytes = buf.freeze();
        let header = match decode_request_header_from_buffer(&mut bytes) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!("test broker: bad request header: {e}");
                return;
            }
        };
        let Ok(api) = ApiKey::try_from(header.request_api_key) else { return };
        let version = header.request_api_version;
        let fault = {
            let mut state = shared.lock();
            *state.requests.entry(api as i16).or_default() += 1;
            state.faults.get_mut(&(api as i16)).and_then(VecDeque::pop_front)
        };
        let mut forced = None;
        let mut drop_response = false;
        match fault {
            Some(Fault::Drop) => return,
            Some(Fault::DropResponse) => drop_response = true,
            Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
            Some(Fault::Error(code)) => forced = Some(code),
            None => {}
        }
        if !authenticated && !matches!(api, ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate) {
            tracing::warn!("test broker: {api:?} before SASL authentication; closing");
            return;
        }
        let supported = SUPPORTED.iter().find(|(k, _, _)| *k == api).map(|(_, lo, hi)| (*lo, *hi));
        let response = if api == ApiKey::ApiVersions {
            api_versions(version)
        } else {
            let Some((lo, hi)) = supported else {
                tracing::warn!("test broker: unsupported API {api:?}; closing");
                return;
            };
            if version < lo || version > hi {
                tracing::warn!("test broker: unsupported version {version} of {api:?}; closing");
                return;
            }
            let request = match RequestKind::decode(api, &mut bytes, version) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("test broker: cannot decode {api:?} v{version}: {e}");
                    return;
                }
            };
            match handle(&shared, request, version, forced, &mut authenticated).await {
                Some(r) => r,
                None => continue, // acks=0
            }
        };
        // ApiVersions answers with header v0 whatever the request version.
        let header_version = if api == ApiKey::ApiVersions { 0 } else { api.response_header_version(version) };
        let response_version = if api == ApiKey::ApiVersions && version > 3 { 0 } else { version };
        if drop_response {
            return;
        }
        let Some(frame) = encode_response(&header, header_version, &response, response_version) else { return };
        if stream.write_all(&frame).await.is_err() {
            return;
        }
    }
}

fn encode_response(
    header: &RequestHeader,
    header_version: i16,
    response: &ResponseKind,
    version: i16,
) -> Option<BytesMut> {
    let mut out = BytesMut::with_capacity(256);
    out.put_i32(0);
    let rh = ResponseHeader::default().with_correlation_id(header.correlation_id);
    if let Err(e) = rh.encode(&mut out, header_version) {
        tracing::warn!("test broker: encoding a response header: {e}");
        return None;
    }
    if let Err(e) = response.encode(&mut out, version) {
        tracing::warn!("test broker: encoding a response: {e}");
        return None;
    }
    let len = (out.len() - 4) as i32;
    out[0..4].copy_from_slice(&len.to_be_bytes());
    Some(out)
}

fn api_versions(version: i16) -> ResponseKind {
    let keys = SUPPORTED
        .iter()
        .map(|(k, lo, hi)| ApiVersion::default().with_api_key(*k as i16).with_min_version(*lo).with_max_version(*hi))
        .collect();
    let error = if version > 3 { UNSUPPORTED_VERSION } else { NONE };
    ResponseKind::ApiVersions(ApiVersionsResponse::default().with_error_code(error).with_api_keys(keys))
}

async fn handle(
    shared: &Arc<Shared>,
    request: RequestKind,
    version: i16,
    forced: Option<i16>,
    authenticated: &mut bool,
) -> Option<ResponseKind> {
    let response = match request {
        RequestKind::Produce(req) => {
            let acks = req.acks;
            let resp = shared.lock().produce(req, forced);
            shared.data.notify_waiters();
            if acks == 0 {
                return None;
            }
            ResponseKind::Produce(resp)
        }
        RequestKind::Fetch(req) => ResponseKind::Fetch(fetch(shared, req, version, forced).await),
        RequestKind::ListOffsets(req) => ResponseKind::ListOffsets(shared.lock().list_offsets(req, forced)),
        RequestKind::Metadata(req) => ResponseKind::Metadata(shared.lock().metadata(req, shared)),
        RequestKind::OffsetCommit(req) => ResponseKind::OffsetCommit(shared.lock().offset_commit(req, forced)),
        RequestKind::OffsetFetch(req) => ResponseKind::OffsetFetch(shared.lock().offset_fetch(req)),
        RequestKind::FindCoordinator(_) => {
            let mut r = FindCoordinatorResponse::default()
                .with_node_id(BrokerId(0))
                .with_host(str_bytes("127.0.0.1"))
                .with_port(shared.port);
            if let Some(code) = forced {
                r = r.with_error_code(code).with_node_id(BrokerId(-1)).with_host(StrBytes::default()).with_port(-1);
            }
            ResponseKind::FindCoordinator(r)
        }
        RequestKind::CreateTopics(req) => {
            let mut state = shared.lock();
            let topics = req
                .topics
                .iter()
                .map(|t| {
                    let code = match state.topics.entry(t.name.0.to_string()) {
                        std::collections::btree_map::Entry::Occupied(_) => TOPIC_ALREADY_EXISTS,
                        std::collections::btree_map::Entry::Vacant(v) => {
                            if !req.validate_only {
                                let n = if t.num_partitions <= 0 { 1 } else { t.num_partitions };
                                v.insert((0..n).map(|_| Partition::default()).collect());
                            }
                            NONE
                        }
                    };
                    CreatableTopicResult::default().with_name(t.name.clone()).with_error_code(code)
                })
                .collect();
            ResponseKind::CreateTopics(CreateTopicsResponse::default().with_topics(topics))
        }
        RequestKind::InitProducerId(req) => {
            let resp = shared.lock().init_producer_id(req, forced);
            shared.data.notify_waiters();
            ResponseKind::InitProducerId(resp)
        }
        RequestKind::AddPartitionsToTxn(req) => {
            let mut state = shared.lock();
            let tid = req.v3_and_below_transactional_id.0.to_string();
            let check = forced.unwrap_or_else(|| {
                state.check_txn(&tid, req.v3_and_below_producer_id.0, req.v3_and_below_producer_epoch)
            });
            let mut results = Vec::new();
            for t in &req.v3_and_below_topics {
                let name = t.name.0.to_string();
                let mut parts = Vec::new();
                for &p in &t.partitions {
                    let exists = state.partition(&name, p).is_some();
                    let code = if check != NONE {
                        check
                    } else if !exists {
                        UNKNOWN_TOPIC_OR_PARTITION
                    } else {
                        NONE
                    };
                    parts.push(
                        AddPartitionsToTxnPartitionResult::default()
                            .with_partition_index(p)
                            .with_partition_error_code(code),
                    );
                }
                results.push(
                    AddPartitionsToTxnTopicResult::default().with_name(t.name.clone()).with_results_by_partition(parts),
                );
            }
            let all_ok = results.iter().all(|t| t.results_by_partition.iter().all(|p| p.partition_error_code == NONE));
            if all_ok && let Some(txn) = state.txns.get_mut(&tid) {
                txn.begin();
                for t in &req.v3_and_below_topics {
                    for &p in &t.partitions {
                        txn.partitions.insert((t.name.0.to_string(), p));
                    }
                }
            }
            ResponseKind::AddPartitionsToTxn(
                AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results),
            )
        }
        RequestKind::AddOffsetsToTxn(req) => {
            let mut state = shared.lock();
            let tid = req.transactional_id.0.to_string();
            let code = forced.unwrap_or_else(|| state.check_txn(&tid, req.producer_id.0, req.producer_epoch));
            if code == NONE
                && let Some(txn) = state.txns.get_mut(&tid)
            {
                txn.begin();
            }
            ResponseKind::AddOffsetsToTxn(AddOffsetsToTxnResponse::default().with_error_code(code))
        }
        RequestKind::TxnOffsetCommit(req) => {
            let mut state = shared.lock();
            let tid = req.transactional_id.0.to_string();
            let code = forced.unwrap_or_else(|| state.check_txn(&tid, req.producer_id.0, req.producer_epoch));
            let group = req.group_id.0.to_string();
            let mut topics = Vec::new();
            for t in &req.topics {
                let mut parts = Vec::new();
                for p in &t.partitions {
                    if code == NONE
                        && let Some(txn) = state.txns.get_mut(&tid)
                    {
                        txn.pending_offsets.push((
                            group.clone(),
                            t.name.0.to_string(),
                            p.partition_index,
                            p.committed_offset,
                            p.committed_metadata.as_ref().map(|m| m.to_string()),
                        ));
                    }
                    parts.push(
                        TxnOffsetCommitResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(code),
                    );
                }
                topics.push(TxnOffsetCommitResponseTopic::default().with_name(t.name.clone()).with_partitions(parts));
            }
            ResponseKind::TxnOffsetCommit(TxnOffsetCommitResponse::default().with_topics(topics))
        }
        RequestKind::EndTxn(req) => {
            let code = {
                let mut state = shared.lock();
                forced.unwrap_or_else(|| {
                    state.end_txn(&req.transactional_id.0, req.producer_id.0, req.producer_epoch, req.committed)
                })
            };
            shared.data.notify_waiters();
            ResponseKind::EndTxn(EndTxnResponse::default().with_error_code(code))
        }
        RequestKind::DescribeTransactions(req) => {
            let state = shared.lock();
            let states = req
                .transactional_ids
                .iter()
                .map(|tid| {
                    let base = TransactionState::default().with_transactional_id(tid.clone());
                    if let Some(code) = forced {
                        return base.with_error_code(code);
                    }
                    match state.txns.get(tid.0.as_str()) {
                        None => base.with_error_code(TRANSACTIONAL_ID_NOT_FOUND),
                        Some(t) => {
                            let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
                            for (topic, p) in &t.partitions {
                                topics.entry(topic).or_default().push(*p);
                            }
                            base.with_transaction_state(str_bytes(t.status.name()))
                                .with_transaction_timeout_ms(t.timeout.as_millis() as i32)
                                .with_transaction_start_time_ms(if t.status == TxnStatus::Ongoing {
                                    t.started_ms
                                } else {
                                    -1
                                })
                                .with_producer_id(ProducerId(t.producer_id))
                                .with_producer_epoch(t.epoch)
                                .with_topics(
                                    topics
                                        .into_iter()
                                        .map(|(name, parts)| {
                                            TopicData::default()
                                                .with_topic(TopicName(str_bytes(name)))
                                                .with_partitions(parts)
                                        })
                                        .collect(),
                                )
                        }
                    }
                })
                .collect();
            ResponseKind::DescribeTransactions(DescribeTransactionsResponse::default().with_transaction_states(states))
        }
        RequestKind::SaslHandshake(req) => {
            let code = if req.mechanism.as_str() == "PLAIN" {
                NONE
            } else {
                33 /* UNSUPPORTED_SASL_MECHANISM */
            };
            ResponseKind::SaslHandshake(
                SaslHandshakeResponse::default().with_error_code(code).with_mechanisms(vec![str_bytes("PLAIN")]),
            )
        }
        RequestKind::SaslAuthenticate(req) => {
            let ok = match &shared.config.sasl_plain {
                None => true,
                Some((user, password)) => {
                    let parts: Vec<&[u8]> = req.auth_bytes.split(|b| *b == 0).collect();
                    parts.len() == 3 && parts[1] == user.as_bytes() && parts[2] == password.as_bytes()
                }
            };
            if ok {
                *authenticated = true;
                ResponseKind::SaslAuthenticate(SaslAuthenticateResponse::default())
            } else {
                ResponseKind::SaslAuthenticate(
                    SaslAuthenticateResponse::default()
                        .with_error_code(SASL_AUTHENTICATION_FAILED)
                        .with_error_message(Some(str_bytes("invalid user name or password"))),
                )
            }
        }
        other => {
            tracing::warn!("test broker: no handler for {other:?}");
            return None;
        }
    };
    Some(response)
}

impl Txn {
    fn begin(&mut self) {
        if self.status != TxnStatus::Ongoing {
            self.status = TxnStatus::Ongoing;
            self.started = Instant::now();
            self.started_ms = now_ms();
            self.partitions.clear();
            self.pending_offsets.clear();
        }
    }
}

impl State {
    fn partition(&mut self, topic: &str, partition: i32) -> Option<&mut Partition> {
        self.topics.get_mut(topic)?.get_mut(usize::try_from(partition).ok()?)
    }

    /// Whether `producer_id`/`epoch` may act for `tid` now.
    fn check_txn(&self, tid: &str, producer_id: i64, epoch: i16) -> i16 {
        match self.txns.get(tid) {
            None => INVALID_PRODUCER_ID_MAPPING,
            Some(t) if t.producer_id != producer_id => INVALID_PRODUCER_ID_MAPPING,
            Some(t) if t.epoch != epoch => PRODUCER_FENCED,
            Some(_) => NONE,
        }
    }

    fn init_producer_id(
        &mut self,
        req: kafka_protocol::messages::InitProducerIdRequest,
        forced: Option<i16>,
    ) -> InitProducerIdResponse {
        if let Some(code) = forced {
            return InitProducerIdResponse::default().with_error_code(code).with_producer_id(ProducerId(-1));
        }
        let Some(tid) = req.transactional_id.map(|t| t.0.to_string()) else {
            let pid = self.next_pid;
            self.next_pid += 1;
            return InitProducerIdResponse::default().with_producer_id(ProducerId(pid)).with_producer_epoch(0);
        };
        let timeout = Duration::from_millis(u64::try_from(req.transaction_timeout_ms).unwrap_or(60_000));
        if self.txns.get(&tid).is_some_and(|t| t.status == TxnStatus::Ongoing) {
            // A new producer with the same transactional id fences the old one and aborts
            // what it left open.
            self.end_transaction(&tid, false);
        }
        let next_pid = self.next_pid;
        let txn = self.txns.entry(tid).or_insert_with(|| Txn {
            producer_id: next_pid,
            epoch: -1,
            status: TxnStatus::Empty,
            timeout,
            started: Instant::now(),
            started_ms: -1,
            partitions: BTreeSet::new(),
            pending_offsets: Vec::new(),
        });
        if txn.producer_id == next_pid {
            self.next_pid += 1;
        }
        if txn.epoch >= i16::MAX - 1 {
            txn.producer_id = self.next_pid;
            self.next_pid += 1;
            txn.epoch = 0;
        } else {
            txn.epoch += 1;
        }
        txn.timeout = timeout;
        if txn.status == TxnStatus::Ongoing {
            txn.status = TxnStatus::CompleteAbort;
        }
        InitProducerIdResponse::default().with_producer_id(ProducerId(txn.producer_id)).with_producer_epoch(txn.epoch)
    }

    fn end_txn(&mut self, tid: &str, producer_id: i64, epoch: i16, commit: bool) -> i16 {
        let Some(t) = self.txns.get(tid) else { return INVALID_PRODUCER_ID_MAPPING };
        if t.producer_id != producer_id {
            return INVALID_PRODUCER_ID_MAPPING;
        }
        if epoch != t.epoch {
            return PRODUCER_FENCED;
        }
        match (t.status, commit) {
            (TxnStatus::Ongoing, _) => {
                self.end_transaction(tid, commit);
                NONE
            }
            // Retries of a finished request succeed, as in Kafka.
            (TxnStatus::CompleteCommit, true) | (TxnStatus::CompleteAbort, false) => NONE,
            _ => INVALID_TXN_STATE,
        }
    }

    /// Writes the markers of an open transaction and finishes it.
    fn end_transaction(&mut self, tid: &str, commit: bool) {
        let Some(txn) = self.txns.get_mut(tid) else { return };
        if txn.status != TxnStatus::Ongoing {
            return;
        }
        txn.status = if commit { TxnStatus::CompleteCommit } else { TxnStatus::CompleteAbort };
        let (pid, epoch) = (txn.producer_id, txn.epoch);
        let partitions: Vec<(String, i32)> = txn.partitions.iter().cloned().collect();
        let offsets = std::mem::take(&mut txn.pending_offsets);
        for (topic, p) in partitions {
            let Some(part) = self.partition(&topic, p) else { continue };
            let first = part.ongoing.remove(&pid);
            let marker = control_batch(pid, epoch, commit);
            let marker_offset = part.push(marker, 0, now_ms());
            if !commit && let Some(first) = first {
                part.aborted.push(AbortedRange { producer_id: pid, first_offset: first, last_offset: marker_offset });
            }
        }
        if commit {
            for (group, topic, p, offset, meta) in offsets {
                self.groups.entry(group).or_default().insert((topic, p), (offset, meta));
            }
        }
    }

    fn produce(&mut self, req: kafka_protocol::messages::ProduceRequest, forced: Option<i16>) -> ProduceResponse {
        let tid = req.transactional_id.as_ref().map(|t| t.0.to_string());
        let mut responses = Vec::new();
        for topic in req.topic_data {
            let name = topic.name.0.to_string();
            let mut parts = Vec::new();
            for pd in topic.partition_data {
                let (code, base) = match forced {
                    Some(code) => (code, -1),
                    None => self.append(tid.as_deref(), &name, pd.index, pd.records.unwrap_or_default()),
                };
                parts.push(
                    PartitionProduceResponse::default()
                        .with_index(pd.index)
                        .with_error_code(code)
                        .with_base_offset(base)
                        .with_log_start_offset(0),
                );
            }
            responses.push(TopicProduceResponse::default().with_name(topic.name).with_partition_responses(parts));
        }
        ProduceResponse::default().with_responses(responses)
    }

    fn append(&mut self, tid: Option<&str>, topic: &str, partition: i32, records: Bytes) -> (i16, i64) {
        let headers = match parse_batches(&records) {
            Ok(h) => h,
            Err(code) => return (code, -1),
        };
        // Transactional writes must belong to the open transaction of their producer.
        for h in headers.iter().filter(|h| h.transactional()) {
            let Some(tid) = tid else { return (INVALID_TXN_STATE, -1) };
            match self.txns.get(tid) {
                None => return (INVALID_PRODUCER_ID_MAPPING, -1),
                Some(t) if t.producer_id != h.producer_id => return (INVALID_PRODUCER_ID_MAPPING, -1),
                Some(t) if t.epoch != h.epoch => return (INVALID_PRODUCER_EPOCH, -1),
                Some(t)
                    if t.status != TxnStatus::Ongoing || !t.partitions.contains(&(topic.to_string(), partition)) =>
                {
                    return (INVALID_TXN_STATE, -1);
                }
                Some(_) => {}
            }
        }
        let Some(part) = self.partition(topic, partition) else { return (UNKNOWN_TOPIC_OR_PARTITION, -1) };
        // Idempotence: check every batch before appending any.
        for h in headers.iter().filter(|h| h.producer_id >= 0) {
            if let Some(seq) = part.producers.get(&h.producer_id) {
                if h.epoch < seq.epoch {
                    return (INVALID_PRODUCER_EPOCH, -1);
                }
                if h.epoch == seq.epoch {
                    if let Some((_, _, base)) =
                        seq.recent.iter().find(|(first, last, _)| *first == h.base_seq && *last == h.last_seq())
                    {
                        // A retry of a batch that is already in the log.
                        return (NONE, *base);
                    }
                    let expected = if seq.last_seq == i32::MAX { 0 } else { seq.last_seq + 1 };
                    if h.base_seq != expected {
                        return (OUT_OF_ORDER_SEQUENCE_NUMBER, -1);
                    }
                } else if h.base_seq != 0 {
                    return (OUT_OF_ORDER_SEQUENCE_NUMBER, -1);
                }
            }
        }
        let mut first_base = -1;
        for h in &headers {
            let bytes = BytesMut::from(&records[h.start..h.start + h.len]);
            let base = part.push(bytes, h.last_offset_delta, h.max_timestamp);
            if first_base < 0 {
                first_base = base;
            }
            if h.producer_id >= 0 {
                let seq = part.producers.entry(h.producer_id).or_insert(ProducerSeq {
                    epoch: h.epoch,
                    last_seq: -1,
                    recent: VecDeque::new(),
                });
                if seq.epoch != h.epoch {
                    seq.epoch = h.epoch;
                    seq.recent.clear();
                }
                seq.last_seq = h.last_seq();
                seq.recent.push_back((h.base_seq, h.last_seq(), base));
                if seq.recent.len() > 5 {
                    seq.recent.pop_front();
                }
                if h.transactional() {
                    part.ongoing.entry(h.producer_id).or_insert(base);
                }
            }
        }
        (NONE, first_base)
    }

    fn list_offsets(
        &mut self,
        req: kafka_protocol::messages::ListOffsetsRequest,
        forced: Option<i16>,
    ) -> ListOffsetsResponse {
        let committed = req.isolation_level == 1;
        let mut topics = Vec::new();
        for t in req.topics {
            let name = t.name.0.to_string();
            let mut parts = Vec::new();
            for p in t.partitions {
                let base =
                    ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index).with_timestamp(-1);
                let r = match (forced, self.partition(&name, p.partition_index)) {
                    (Some(code), _) => base.with_error_code(code).with_offset(-1),
                    (None, None) => base.with_error_code(UNKNOWN_TOPIC_OR_PARTITION).with_offset(-1),
                    (None, Some(part)) => {
                        let offset = match p.timestamp {
                            -1 => {
                                if committed {
                                    part.last_stable_offset()
                                } else {
                                    part.next_offset
                                }
                            }
                            -2 => 0,
                            ts => part
                                .batches
                                .iter()
                                .find(|b| b.max_timestamp >= ts)
                                .map(|b| b.base_offset)
                                .unwrap_or(part.next_offset),
                        };
                        base.with_offset(offset).with_leader_epoch(0)
                    }
                };
                parts.push(r);
            }
            topics.push(ListOffsetsTopicResponse::default().with_name(t.name).with_partitions(parts));
        }
        ListOffsetsResponse::default().with_topics(topics)
    }

    fn metadata(&mut self, req: kafka_protocol::messages::MetadataRequest, shared: &Shared) -> MetadataResponse {
        let names: Vec<String> = match &req.topics {
            None => self.topics.keys().cloned().collect(),
            Some(ts) => ts.iter().filter_map(|t| t.name.as_ref().map(|n| n.0.to_string())).collect(),
        };
        let mut topics = Vec::new();
        for name in names {
            if !self.topics.contains_key(&name)
                && req.allow_auto_topic_creation
                && let Some(n) = shared.config.auto_create_partitions
            {
                self.topics.insert(name.clone(), (0..n.max(1)).map(|_| Partition::default()).collect());
            }
            let topic = MetadataResponseTopic::default().with_name(Some(TopicName(str_bytes(&name))));
            let topic = match self.topics.get(&name) {
                None => topic.with_error_code(UNKNOWN_TOPIC_OR_PARTITION),
                Some(parts) => topic.with_partitions(
                    (0..parts.len() as i32)
                        .map(|i| {
                            MetadataResponsePartition::default()
                                .with_partition_index(i)
                                .with_leader_id(BrokerId(0))
                                .with_leader_epoch(-1)
                                .with_replica_nodes(vec![BrokerId(0)])
                                .with_isr_nodes(vec![BrokerId(0)])
                        })
                        .collect(),
                ),
            };
            topics.push(topic);
        }
        MetadataResponse::default()
            .with_brokers(vec![
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(0))
                    .with_host(str_bytes("127.0.0.1"))
                    .with_port(shared.port),
            ])
            .with_cluster_id(Some(str_bytes("operators-test-broker")))
            .with_controller_id(BrokerId(0))
            .with_topics(topics)
    }

    fn offset_commit(
        &mut self,
        req: kafka_protocol::messages::OffsetCommitRequest,
        forced: Option<i16>,
    ) -> OffsetCommitResponse {
        let group = req.group_id.0.to_string();
        let mut topics = Vec::new();
        for t in req.topics {
            let name = t.name.0.to_string();
            let mut parts = Vec::new();
            for p in t.partitions {
                let code = if let Some(code) = forced {
                    code
                } else if self.partition(&name, p.partition_index).is_none() {
                    UNKNOWN_TOPIC_OR_PARTITION
                } else {
                    self.groups.entry(group.clone()).or_default().insert(
                        (name.clone(), p.partition_index),
                        (p.committed_offset, p.committed_metadata.map(|m| m.to_string())),
                    );
                    NONE
                };
                parts.push(
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code),
                );
            }
            topics.push(OffsetCommitResponseTopic::default().with_name(t.name).with_partitions(parts));
        }
        OffsetCommitResponse::default().with_topics(topics)
    }

    fn offset_fetch(&mut self, req: kafka_protocol::messages::OffsetFetchRequest) -> OffsetFetchResponse {
        let group = req.group_id.0.to_string();
        let committed = self.groups.get(&group).cloned().unwrap_or_default();
        let pending: BTreeSet<(String, i32)> = self
            .txns
            .values()
            .filter(|t| t.status == TxnStatus::Ongoing)
            .flat_map(|t| t.pending_offsets.iter())
            .filter(|(g, ..)| *g == group)
            .map(|(_, topic, p, ..)| (topic.clone(), *p))
            .collect();
        let wanted: Vec<(String, Vec<i32>)> = match req.topics {
            Some(ts) => ts.into_iter().map(|t| (t.name.0.to_string(), t.partition_indexes)).collect(),
            None => {
                let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
                for (topic, p) in committed.keys() {
                    by_topic.entry(topic.clone()).or_default().push(*p);
                }
                by_topic.into_iter().collect()
            }
        };
        let topics = wanted
            .into_iter()
            .map(|(topic, parts)| {
                let parts = parts
                    .into_iter()
                    .map(|p| {
                        let key = (topic.clone(), p);
                        let (offset, meta) = committed.get(&key).cloned().unwrap_or((-1, None));
                        let code =
                            if req.require_stable && pending.contains(&key) { UNSTABLE_OFFSET_COMMIT } else { NONE };
                        OffsetFetchResponsePartition::default()
                            .with_partition_index(p)
                            .with_committed_offset(offset)
                            .with_committed_leader_epoch(-1)
                            .with_metadata(Some(str_bytes(meta.as_deref().unwrap_or(""))))
                            .with_error_code(code)
                    })
                    .collect();
                OffsetFetchResponseTopic::default().with_name(TopicName(str_bytes(&topic))).with_partitions(parts)
            })
            .collect();
        OffsetFetchResponse::default().with_topics(topics)
    }
}

/// A commit or abort marker: one control record, key `(version 0, type)`, value
/// `(version 0, coordinator epoch 0)`.
fn control_batch(producer_id: i64, epoch: i16, commit: bool) -> BytesMut {
    let record = Record {
        transactional: true,
        control: true,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id,
        producer_epoch: epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: now_ms(),
        key: Some(Bytes::from(vec![0, 0, 0, u8::from(commit)])),
        value: Some(Bytes::from(vec![0, 0, 0, 0, 0, 0])),
        headers: Default::default(),
    };
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression: Compression::None };
    if let Err(e) = RecordBatchEncoder::encode(&mut buf, [&record], &options) {
        // Cannot happen for an uncompressed single record; keep the broker alive anyway.
        tracing::error!("test broker: encoding a control batch: {e}");
    }
    buf
}

async fn fetch(
    shared: &Arc<Shared>,
    req: kafka_protocol::messages::FetchRequest,
    _version: i16,
    forced: Option<i16>,
) -> FetchResponse {
    let deadline = Instant::now() + Duration::from_millis(u64::try_from(req.max_wait_ms).unwrap_or(0));
    loop {
        let notified = shared.data.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let (response, bytes) = shared.lock().fetch_once(&req, forced);
        let now = Instant::now();
        if bytes > 0 || forced.is_some() || now >= deadline || bytes >= i64::from(req.min_bytes.max(1)) {
            return response;
        }
        let _ = tokio::time::timeout(deadline - now, notified).await;
    }
}

impl State {
    fn fetch_once(
        &mut self,
        req: &kafka_protocol::messages::FetchRequest,
        forced: Option<i16>,
    ) -> (FetchResponse, i64) {
        let committed = req.isolation_level == 1;
        let mut budget = i64::from(req.max_bytes.max(1));
        let mut total = 0i64;
        let mut topics = Vec::new();
        for t in &req.topics {
            let name = t.topic.0.to_string();
            let mut parts = Vec::new();
            for p in &t.partitions {
                let base = PartitionData::default().with_partition_index(p.partition);
                let Some(part) = self.partition(&name, p.partition) else {
                    parts.push(base.with_error_code(UNKNOWN_TOPIC_OR_PARTITION).with_high_watermark(-1));
                    continue;
                };
                let (hw, lso) = (part.next_offset, part.last_stable_offset());
                let base = base.with_high_watermark(hw).with_last_stable_offset(lso).with_log_start_offset(0);
                if let Some(code) = forced {
                    parts.push(base.with_error_code(code));
                    continue;
                }
                if p.fetch_offset > hw || p.fetch_offset < 0 {
                    parts.push(base.with_error_code(OFFSET_OUT_OF_RANGE));
                    continue;
                }
                let limit = if committed { lso } else { hw };
                let start = part.batches.partition_point(|b| b.last_offset < p.fetch_offset);
                let mut records = BytesMut::new();
                let mut last_returned = -1;
                let max = i64::from(p.partition_max_bytes.max(1));
                for b in &part.batches[start..] {
                    if b.base_offset >= limit {
                        break;
                    }
                    let len = b.bytes.len() as i64;
                    let first = records.is_empty() && total == 0;
                    if !first && (records.len() as i64 + len > max || len > budget) {
                        break;
                    }
                    records.extend_from_slice(&b.bytes);
                    budget -= len;
                    total += len;
                    last_returned = b.last_offset;
                }
                let aborted = committed.then(|| {
                    part.aborted
                        .iter()
                        .filter(|a| a.first_offset <= last_returned && a.last_offset >= p.fetch_offset)
                        .map(|a| {
                            AbortedTransaction::default()
                                .with_producer_id(ProducerId(a.producer_id))
                                .with_first_offset(a.first_offset)
                        })
                        .collect()
                });
                parts.push(
                    base.with_aborted_transactions(aborted)
                        .with_preferred_read_replica(BrokerId(-1))
                        .with_records(Some(records.freeze())),
                );
            }
            topics.push(FetchableTopicResponse::default().with_topic(t.topic.clone()).with_partitions(parts));
        }
        (FetchResponse::default().with_responses(topics), total)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn sequence_wraps() {
        let h = BatchHeader {
            start: 0,
            len: 0,
            attributes: 0,
            last_offset_delta: 1,
            max_timestamp: 0,
            producer_id: 1,
            epoch: 0,
            base_seq: i32::MAX,
            count: 2,
        };
        assert_eq!(h.last_seq(), 0);
    }

    #[test]
    fn control_batches_parse_as_batches() {
        let b = control_batch(7, 3, true);
        let headers = parse_batches(&b).unwrap();
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[0].producer_id, 7);
        assert_eq!(headers[0].epoch, 3);
        assert!(headers[0].transactional());
        assert_eq!(headers[0].attributes & 0x20, 0x20, "control bit");
    }
}
