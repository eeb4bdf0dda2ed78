//! The few Kafka requests librdkafka cannot make for us, spoken directly.
//!
//! librdkafka finishes only the transactions of the producer instance that opened them.
//! After a crash, the transaction a checkpoint pre-committed belongs to a producer that
//! no longer exists; the exactly-once sink finishes it here, as Flink does: find the
//! transaction coordinator of its transactional id, read the transaction's producer id,
//! epoch and state (`DescribeTransactions`, Kafka ≥ 3.0), and commit it with `EndTxn`
//! under that id and epoch. Transactions opened after the restored checkpoint are
//! aborted by fencing their transactional ids (`InitProducerId`, which aborts an open
//! transaction and bumps the epoch).
//!
//! Connections are plaintext, optionally with SASL/PLAIN; the sink refuses exactly-once
//! delivery with other security settings rather than fail at recovery time.

use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_request::ApiVersionsRequest;
use kafka_protocol::messages::api_versions_response::ApiVersionsResponse;
use kafka_protocol::messages::describe_transactions_request::DescribeTransactionsRequest;
use kafka_protocol::messages::describe_transactions_response::DescribeTransactionsResponse;
use kafka_protocol::messages::end_txn_request::EndTxnRequest;
use kafka_protocol::messages::end_txn_response::EndTxnResponse;
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::find_coordinator_response::FindCoordinatorResponse;
use kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use kafka_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use kafka_protocol::messages::sasl_authenticate_request::SaslAuthenticateRequest;
use kafka_protocol::messages::sasl_authenticate_response::SaslAuthenticateResponse;
use kafka_protocol::messages::sasl_handshake_request::SaslHandshakeRequest;
use kafka_protocol::messages::sasl_handshake_response::SaslHandshakeResponse;
use kafka_protocol::messages::{ApiKey, ProducerId, RequestHeader, ResponseHeader, TransactionalId};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use operators_clients::kafka::KafkaConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why a recovery request failed.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// The settings cannot be used by the recovery client.
    #[error("{0}")]
    Unsupported(String),
    /// No broker answered, or answered nonsense.
    #[error("Kafka recovery client: {0}")]
    Network(String),
    /// The broker answered with an error code.
    #[error("Kafka answered {request} for transactional id `{transactional_id}` with error {code} ({name})")]
    Broker {
        /// The request.
        request: &'static str,
        /// The transactional id it was about.
        transactional_id: String,
        /// Kafka's error code.
        code: i16,
        /// Kafka's error name.
        name: String,
    },
}

fn error_name(code: i16) -> String {
    use kafka_protocol::error::ParseResponseErrorCode;
    code.err().map_or_else(|| "NONE".to_string(), |e| format!("{e:?}"))
}

/// Kafka error codes worth retrying here: the coordinator moves or loads, or another
/// request on the same transaction is in progress.
fn retriable(code: i16) -> bool {
    matches!(code, 7 | 13 | 14 | 15 | 16 | 51)
}

const NOT_FOUND: i16 = 105;

/// What `DescribeTransactions` tells about a transactional id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnDescription {
    /// `Empty`, `Ongoing`, `PrepareCommit`, `PrepareAbort`, `CompleteCommit`, `CompleteAbort`,
    /// `Dead`, `PrepareEpochFence`.
    pub state: String,
    /// Current producer id.
    pub producer_id: i64,
    /// Current epoch.
    pub epoch: i16,
}

/// A client for transaction recovery requests.
#[derive(Clone)]
pub struct RecoveryClient {
    bootstrap: Vec<String>,
    sasl_plain: Option<(String, String)>,
    client_id: String,
    timeout: Duration,
}

impl std::fmt::Debug for RecoveryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoveryClient")
            .field("bootstrap", &self.bootstrap)
            .field("sasl", &self.sasl_plain.as_ref().map(|(u, _)| u))
            .finish()
    }
}

struct Conn {
    stream: TcpStream,
    versions: Vec<(i16, i16, i16)>,
    correlation: i32,
    client_id: String,
}

impl RecoveryClient {
    /// A client with the brokers and security settings of `kafka`.
    pub fn new(kafka: &KafkaConfig, client_id: &str) -> Result<Self, RecoveryError> {
        let protocol = kafka.property("security.protocol").unwrap_or("plaintext").to_ascii_lowercase();
        let sasl_plain = match protocol.as_str() {
            "plaintext" => None,
            "sasl_plaintext" => {
                let mechanism = kafka
                    .property("sasl.mechanism")
                    .or(kafka.property("sasl.mechanisms"))
                    .unwrap_or("GSSAPI")
                    .to_ascii_uppercase();
                if mechanism != "PLAIN" {
                    return Err(RecoveryError::Unsupported(format!(
                        "{}.sasl.mechanism={mechanism}: exactly-once delivery to Kafka recovers transactions \
                         with its own client, which speaks SASL/PLAIN only; use at-least-once delivery",
                        kafka.prefix()
                    )));
                }
                let user = kafka.property("sasl.username").unwrap_or_default().to_string();
                let password = kafka.property("sasl.password").unwrap_or_default().to_string();
                Some((user, password))
            }
            other => {
                return Err(RecoveryError::Unsupported(format!(
                    "{}.security.protocol={other}: exactly-once delivery to Kafka recovers transactions with \
                     its own client, which speaks plaintext and SASL_PLAINTEXT/PLAIN only; use at-least-once \
                     delivery",
                    kafka.prefix()
                )));
            }
        };
        let bootstrap = kafka
            .brokers()
            .split(',')
            .map(|b| {
                let b = b.trim();
                b.rsplit_once("://").map_or(b, |(_, rest)| rest).to_string()
            })
            .collect();
        Ok(Self { bootstrap, sasl_plain, client_id: client_id.to_string(), timeout: Duration::from_secs(60) })
    }

    /// How long a request may take, retries included (default 60 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn connect(&self, addr: &str) -> Result<Conn, RecoveryError> {
        let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .map_err(|_| RecoveryError::Network(format!("connecting to {addr} timed out")))?
            .map_err(|e| RecoveryError::Network(format!("connecting to {addr}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let mut conn = Conn { stream, versions: Vec::new(), correlation: 0, client_id: self.client_id.clone() };
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("operators"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let resp: ApiVersionsResponse = match conn.call::<_, ApiVersionsResponse>(ApiKey::ApiVersions, 3, &req).await {
            Ok(r) if r.error_code == 0 => r,
            // Brokers before 2.4 answer v3 with an error in v0 format.
            _ => conn.call(ApiKey::ApiVersions, 0, &req).await?,
        };
        conn.versions = resp.api_keys.iter().map(|k| (k.api_key, k.min_version, k.max_version)).collect();
        if let Some((user, password)) = &self.sasl_plain {
            let v = conn.version(ApiKey::SaslHandshake, 1)?;
            let hs: SaslHandshakeResponse = conn
                .call(
                    ApiKey::SaslHandshake,
                    v,
                    &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
                )
                .await?;
            if hs.error_code != 0 {
                return Err(RecoveryError::Network(format!(
                    "{addr} does not accept SASL/PLAIN ({})",
                    error_name(hs.error_code)
                )));
            }
            let mut token = Vec::with_capacity(user.len() + password.len() + 2);
            token.push(0);
            token.extend_from_slice(user.as_bytes());
            token.push(0);
            token.extend_from_slice(password.as_bytes());
            let v = conn.version(ApiKey::SaslAuthenticate, 2)?;
            let auth: SaslAuthenticateResponse = conn
                .call(
                    ApiKey::SaslAuthenticate,
                    v,
                    &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token)),
                )
                .await?;
            if auth.error_code != 0 {
                // The broker's message never contains the password.
                return Err(RecoveryError::Network(format!(
                    "SASL/PLAIN authentication of user `{user}` at {addr} failed: {}",
                    auth.error_message.as_deref().unwrap_or("no reason given")
                )));
            }
        }
        Ok(conn)
    }

    async fn any_broker(&self) -> Result<Conn, RecoveryError> {
        let mut last = None;
        for addr in &self.bootstrap {
            match self.connect(addr).await {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| RecoveryError::Network("no bootstrap servers".into())))
    }

    /// A connection to the transaction coordinator of `tid`.
    async fn coordinator(&self, tid: &str) -> Result<Conn, RecoveryError> {
        let mut conn = self.any_broker().await?;
        let v = conn.version(ApiKey::FindCoordinator, 3)?;
        let req = FindCoordinatorRequest::default().with_key(StrBytes::from_string(tid.to_string())).with_key_type(1);
        let resp: FindCoordinatorResponse = conn.call(ApiKey::FindCoordinator, v, &req).await?;
        if resp.error_code != 0 {
            return Err(RecoveryError::Broker {
                request: "FindCoordinator",
                transactional_id: tid.to_string(),
                code: resp.error_code,
                name: error_name(resp.error_code),
            });
        }
        self.connect(&format!("{}:{}", resp.host.as_str(), resp.port)).await
    }

    /// Retries `op` on retriable broker errors and network errors until the timeout.
    async fn retrying<T, F, Fut>(&self, mut op: F) -> Result<T, RecoveryError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, RecoveryError>>,
    {
        let deadline = Instant::now() + self.timeout;
        let mut delay = Duration::from_millis(50);
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let again = match &e {
                        RecoveryError::Broker { code, .. } => retriable(*code),
                        RecoveryError::Network(_) => true,
                        RecoveryError::Unsupported(_) => false,
                    };
                    if !again || Instant::now() + delay >= deadline {
                        return Err(e);
                    }
                    tracing::debug!("Kafka recovery request failed, retrying: {e}");
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    /// The state, producer id and epoch of `tid`; `None` if the broker does not know it.
    pub async fn describe(&self, tid: &str) -> Result<Option<TxnDescription>, RecoveryError> {
        self.retrying(|| async {
            let mut conn = self.coordinator(tid).await?;
            let v = conn.version(ApiKey::DescribeTransactions, 0)?;
            let req = DescribeTransactionsRequest::default()
                .with_transactional_ids(vec![TransactionalId(StrBytes::from_string(tid.to_string()))]);
            let resp: DescribeTransactionsResponse = conn.call(ApiKey::DescribeTransactions, v, &req).await?;
            let Some(s) = resp.transaction_states.into_iter().next() else {
                return Err(RecoveryError::Network("DescribeTransactions answered with no state".into()));
            };
            match s.error_code {
                0 => Ok(Some(TxnDescription {
                    state: s.transaction_state.to_string(),
                    producer_id: s.producer_id.0,
                    epoch: s.producer_epoch,
                })),
                NOT_FOUND => Ok(None),
                code => Err(RecoveryError::Broker {
                    request: "DescribeTransactions",
                    transactional_id: tid.to_string(),
                    code,
                    name: error_name(code),
                }),
            }
        })
        .await
    }

    /// Commits the open transaction of `tid` under `producer_id`/`epoch`.
    pub async fn commit(&self, tid: &str, producer_id: i64, epoch: i16) -> Result<(), RecoveryError> {
        self.retrying(|| async {
            let mut conn = self.coordinator(tid).await?;
            let v = conn.version(ApiKey::EndTxn, 3)?;
            let req = EndTxnRequest::default()
                .with_transactional_id(TransactionalId(StrBytes::from_string(tid.to_string())))
                .with_producer_id(ProducerId(producer_id))
                .with_producer_epoch(epoch)
                .with_committed(true);
            let resp: EndTxnResponse = conn.call(ApiKey::EndTxn, v, &req).await?;
            match resp.error_code {
                0 => Ok(()),
                code => Err(RecoveryError::Broker {
                    request: "EndTxn",
                    transactional_id: tid.to_string(),
                    code,
                    name: error_name(code),
                }),
            }
        })
        .await
    }

    /// Fences `tid`: aborts its open transaction, if any, and bumps its epoch.
    pub async fn fence(&self, tid: &str, transaction_timeout_ms: i32) -> Result<(), RecoveryError> {
        self.retrying(|| async {
            let mut conn = self.coordinator(tid).await?;
            let v = conn.version(ApiKey::InitProducerId, 4)?;
            let req = InitProducerIdRequest::default()
                .with_transactional_id(Some(TransactionalId(StrBytes::from_string(tid.to_string()))))
                .with_transaction_timeout_ms(transaction_timeout_ms)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1);
            let resp: InitProducerIdResponse = conn.call(ApiKey::InitProducerId, v, &req).await?;
            match resp.error_code {
                0 => Ok(()),
                code => Err(RecoveryError::Broker {
                    request: "InitProducerId",
                    transactional_id: tid.to_string(),
                    code,
                    name: error_name(code),
                }),
            }
        })
        .await
    }
}

impl Conn {
    /// The highest version of `api` both sides speak, at most `ours`.
    fn version(&self, api: ApiKey, ours: i16) -> Result<i16, RecoveryError> {
        let Some((_, lo, hi)) = self.versions.iter().find(|(k, _, _)| *k == api as i16) else {
            return Err(RecoveryError::Unsupported(format!(
                "the Kafka broker does not support {api:?}, which exactly-once recovery needs (Kafka 3.0 or newer)"
            )));
        };
        let v = ours.min(*hi);
        if v < *lo {
            return Err(RecoveryError::Unsupported(format!("no common version of {api:?} with the broker")));
        }
        Ok(v)
    }

    async fn call<Req, Resp>(&mut self, api: ApiKey, version: i16, req: &Req) -> Result<Resp, RecoveryError>
    where
        Req: Encodable + HeaderVersion,
        Resp: Decodable + HeaderVersion,
    {
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_string(self.client_id.clone())));
        let mut buf = BytesMut::with_capacity(128);
        buf.put_i32(0);
        let encode = |buf: &mut BytesMut| -> Result<(), String> {
            header.encode(buf, Req::header_version(version)).map_err(|e| e.to_string())?;
            req.encode(buf, version).map_err(|e| e.to_string())
        };
        encode(&mut buf).map_err(|e| RecoveryError::Network(format!("encoding {api:?}: {e}")))?;
        let len = (buf.len() - 4) as i32;
        buf[0..4].copy_from_slice(&len.to_be_bytes());
        let io = |e: std::io::Error| RecoveryError::Network(format!("{api:?}: {e}"));
        let exchange = async {
            self.stream.write_all(&buf).await.map_err(io)?;
            let n = self.stream.read_i32().await.map_err(io)?;
            let n = usize::try_from(n).map_err(|_| RecoveryError::Network(format!("{api:?}: negative frame size")))?;
            let mut body = vec![0u8; n];
            self.stream.read_exact(&mut body).await.map_err(io)?;
            Ok::<_, RecoveryError>(body)
        };
        let body = tokio::time::timeout(Duration::from_secs(30), exchange)
            .await
            .map_err(|_| RecoveryError::Network(format!("{api:?}: no answer in 30 s")))??;
        let mut bytes = Bytes::from(body);
        // ApiVersions answers with header v0 whatever the version.
        let header_version = if api == ApiKey::ApiVersions { 0 } else { Resp::header_version(version) };
        let rh = ResponseHeader::decode(&mut bytes, header_version)
            .map_err(|e| RecoveryError::Network(format!("decoding the {api:?} answer header: {e}")))?;
        if rh.correlation_id != self.correlation {
            return Err(RecoveryError::Network(format!("{api:?}: answer to another request")));
        }
        let resp = Resp::decode(&mut bytes, version)
            .map_err(|e| RecoveryError::Network(format!("decoding the {api:?} answer: {e}")))?;
        let _ = bytes.remaining();
        Ok(resp)
    }
}
