//! The calls of HiveServer2's Thrift service (`TCLIService`) the source makes, and the
//! parts of their requests and responses it reads, written against the `thrift` crate's
//! binary protocol.
//!
//! Field ids and types are those of Hive's `TCLIService.thrift` (protocol versions 1 to
//! 11); a field this client does not know is skipped, so newer servers answer it too.
//! Result sets are read column by column (`TRowSet.columns`, protocol V6 and later) into
//! [`RawColumn`]s, one vector per column, without a value per row object in between.

use thrift::protocol::{
    TBinaryInputProtocol, TBinaryOutputProtocol, TFieldIdentifier, TInputProtocol, TListIdentifier, TMapIdentifier,
    TMessageIdentifier, TMessageType, TOutputProtocol, TStructIdentifier, TType,
};

use super::transport::Transport;

/// The protocol version the client asks for: V10 (Hive 2.3 and later answer with their
/// own version, which the session then uses).
pub(crate) const CLIENT_PROTOCOL_V10: i32 = 9;

/// `TStatusCode`.
pub(crate) mod status_code {
    pub(crate) const SUCCESS: i32 = 0;
    pub(crate) const SUCCESS_WITH_INFO: i32 = 1;
    pub(crate) const STILL_EXECUTING: i32 = 2;
}

/// `TOperationState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OperationState {
    Initialized,
    Running,
    Finished,
    Canceled,
    Closed,
    Error,
    Unknown,
    Pending,
    TimedOut,
}

impl OperationState {
    fn from_i32(v: i32) -> Self {
        match v {
            0 => OperationState::Initialized,
            1 => OperationState::Running,
            2 => OperationState::Finished,
            3 => OperationState::Canceled,
            4 => OperationState::Closed,
            5 => OperationState::Error,
            7 => OperationState::Pending,
            8 => OperationState::TimedOut,
            _ => OperationState::Unknown,
        }
    }
}

/// `TStatus`: how a call went.
#[derive(Debug, Clone, Default)]
pub(crate) struct Status {
    pub code: i32,
    pub sql_state: Option<String>,
    pub error_code: Option<i32>,
    pub message: Option<String>,
}

impl Status {
    pub(crate) fn is_ok(&self) -> bool {
        matches!(self.code, status_code::SUCCESS | status_code::SUCCESS_WITH_INFO | status_code::STILL_EXECUTING)
    }
}

/// `THandleIdentifier`: the 16-byte id and secret of a session or operation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Handle {
    pub guid: Vec<u8>,
    pub secret: Vec<u8>,
}

/// `TOperationHandle`, kept as the server sent it to be sent back.
#[derive(Debug, Clone, Default)]
pub(crate) struct OperationHandle {
    pub id: Handle,
    pub operation_type: i32,
    pub has_result_set: bool,
    pub modified_row_count: Option<f64>,
}

/// A result column: its name and the top entry of its `TTypeDesc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ColumnDesc {
    pub name: String,
    /// `TTypeId` of the column (for complex types, `ARRAY_TYPE` and so on).
    pub type_id: i32,
    /// `precision`/`scale` of a decimal.
    pub precision: Option<i32>,
    pub scale: Option<i32>,
}

/// One column of a fetched row set, as the wire carries it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RawValues {
    Bool(Vec<bool>),
    Byte(Vec<i8>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    Double(Vec<f64>),
    /// Text values concatenated, with each value's end offset.
    String {
        data: Vec<u8>,
        ends: Vec<usize>,
    },
    /// Binary values concatenated, with each value's end offset.
    Binary {
        data: Vec<u8>,
        ends: Vec<usize>,
    },
}

impl RawValues {
    pub(crate) fn len(&self) -> usize {
        match self {
            RawValues::Bool(v) => v.len(),
            RawValues::Byte(v) => v.len(),
            RawValues::I16(v) => v.len(),
            RawValues::I32(v) => v.len(),
            RawValues::I64(v) => v.len(),
            RawValues::Double(v) => v.len(),
            RawValues::String { ends, .. } | RawValues::Binary { ends, .. } => ends.len(),
        }
    }
}

/// A column of a row set: its values and its null bitmap (bit `i`, least significant
/// first, set for a null; Java's `BitSet.toByteArray`, which drops trailing zero bytes).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawColumn {
    pub values: RawValues,
    pub nulls: Vec<u8>,
}

impl RawColumn {
    pub(crate) fn is_null(&self, row: usize) -> bool {
        self.nulls.get(row / 8).is_some_and(|b| b & (1 << (row % 8)) != 0)
    }
}

/// What a call failed with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// The connection or the protocol (a malformed message, a socket error).
    #[error("{0}")]
    Thrift(#[from] thrift::Error),
    /// The server answered with another call's reply or sequence number.
    #[error("{0}")]
    Protocol(String),
}

type Result<T> = std::result::Result<T, CallError>;

/// The Thrift service client over one connection.
pub(crate) struct Client {
    transport: Transport,
    seq: i32,
}

impl Client {
    pub(crate) fn new(transport: Transport) -> Self {
        Client { transport, seq: 0 }
    }

    pub(crate) fn shutdown(&mut self) {
        self.transport.shutdown();
    }

    /// Sends `name`'s arguments (`write_req` writes the request struct, the arguments'
    /// field 1) and reads the result's field 0 with `read_resp`.
    fn call<T>(
        &mut self,
        name: &str,
        write_req: impl FnOnce(&mut dyn TOutputProtocol) -> thrift::Result<()>,
        read_resp: impl FnOnce(&mut dyn TInputProtocol) -> thrift::Result<T>,
    ) -> Result<T> {
        self.seq = self.seq.wrapping_add(1);
        {
            let mut o = TBinaryOutputProtocol::new(&mut self.transport, true);
            o.write_message_begin(&TMessageIdentifier::new(name, TMessageType::Call, self.seq))?;
            o.write_struct_begin(&TStructIdentifier::new(format!("{name}_args")))?;
            o.write_field_begin(&TFieldIdentifier::new("req", TType::Struct, 1))?;
            write_req(&mut o)?;
            o.write_field_end()?;
            o.write_field_stop()?;
            o.write_struct_end()?;
            o.write_message_end()?;
            o.flush()?;
        }
        let mut i = Bounded(TBinaryInputProtocol::new(&mut self.transport, true));
        let message = i.read_message_begin()?;
        if message.message_type == TMessageType::Exception {
            let e = thrift::Error::read_application_error_from_in_protocol(&mut i)?;
            i.read_message_end()?;
            return Err(CallError::Thrift(thrift::Error::Application(e)));
        }
        if message.message_type != TMessageType::Reply || message.name != name || message.sequence_number != self.seq {
            return Err(CallError::Protocol(format!(
                "the server answered `{name}` (#{}) with {:?} `{}` (#{})",
                self.seq, message.message_type, message.name, message.sequence_number
            )));
        }
        let mut result = None;
        let mut read_resp = Some(read_resp);
        read_struct(&mut i, |i, id, ty| {
            if id == 0
                && ty == TType::Struct
                && let Some(read) = read_resp.take()
            {
                result = Some(read(i)?);
                return Ok(true);
            }
            Ok(false)
        })?;
        i.read_message_end()?;
        result.ok_or_else(|| CallError::Protocol(format!("the reply to `{name}` has no result")))
    }

    /// `OpenSession`: the session handle and the server's protocol version.
    pub(crate) fn open_session(
        &mut self,
        user: Option<&str>,
        password: Option<&str>,
        configuration: &[(String, String)],
    ) -> Result<(Status, Option<Handle>, i32)> {
        self.call(
            "OpenSession",
            |o| {
                o.write_struct_begin(&TStructIdentifier::new("TOpenSessionReq"))?;
                write_i32(o, 1, CLIENT_PROTOCOL_V10)?;
                if let Some(user) = user {
                    write_string(o, 2, user)?;
                }
                if let Some(password) = password {
                    write_string(o, 3, password)?;
                }
                if !configuration.is_empty() {
                    o.write_field_begin(&TFieldIdentifier::new("configuration", TType::Map, 4))?;
                    let len = i32::try_from(configuration.len())
                        .map_err(|_| thrift::Error::from(format!("{} session settings", configuration.len())))?;
                    o.write_map_begin(&TMapIdentifier::new(TType::String, TType::String, len))?;
                    for (k, v) in configuration {
                        o.write_string(k)?;
                        o.write_string(v)?;
                    }
                    o.write_map_end()?;
                    o.write_field_end()?;
                }
                o.write_field_stop()?;
                o.write_struct_end()
            },
            |i| {
                let (mut status, mut handle, mut version) = (Status::default(), None, CLIENT_PROTOCOL_V10);
                read_struct(i, |i, id, ty| {
                    Ok(match (id, ty) {
                        (1, TType::Struct) => {
                            status = read_status(i)?;
                            true
                        }
                        (2, TType::I32) => {
                            version = i.read_i32()?;
                            true
                        }
                        (3, TType::Struct) => {
                            handle = Some(read_session_handle(i)?);
                            true
                        }
                        _ => false,
                    })
                })?;
                Ok((status, handle, version))
            },
        )
    }

    /// `CloseSession`.
    pub(crate) fn close_session(&mut self, session: &Handle) -> Result<Status> {
        self.call(
            "CloseSession",
            |o| {
                o.write_struct_begin(&TStructIdentifier::new("TCloseSessionReq"))?;
                write_session_handle(o, 1, session)?;
                o.write_field_stop()?;
                o.write_struct_end()
            },
            read_status_only,
        )
    }

    /// `ExecuteStatement`, asynchronously (the call returns once the statement is
    /// accepted; [`Self::operation_status`] tells when it finished).
    pub(crate) fn execute(&mut self, session: &Handle, statement: &str) -> Result<(Status, Option<OperationHandle>)> {
        self.call(
            "ExecuteStatement",
            |o| {
                o.write_struct_begin(&TStructIdentifier::new("TExecuteStatementReq"))?;
                write_session_handle(o, 1, session)?;
                write_string(o, 2, statement)?;
                o.write_field_begin(&TFieldIdentifier::new("runAsync", TType::Bool, 4))?;
                o.write_bool(true)?;
                o.write_field_end()?;
                o.write_field_stop()?;
                o.write_struct_end()
            },
            |i| {
                let (mut status, mut handle) = (Status::default(), None);
                read_struct(i, |i, id, ty| {
                    Ok(match (id, ty) {
                        (1, TType::Struct) => {
                            status = read_status(i)?;
                            true
                        }
                        (2, TType::Struct) => {
                            handle = Some(read_operation_handle(i)?);
                            true
                        }
                        _ => false,
                    })
                })?;
                Ok((status, handle))
            },
        )
    }

    /// `GetOperationStatus`: the call's status, the operation's state, and the state's
    /// error (SQLSTATE, code, message) when it failed.
    pub(crate) fn operation_status(&mut self, op: &OperationHandle) -> Result<(Status, OperationState, Status)> {
        self.call(
            "GetOperationStatus",
            |o| {
                o.write_struct_begin(&TStructIdentifier::new("TGetOperationStatusReq"))?;
                write_operation_handle(o, 1, op)?;
                o.write_field_stop()?;
                o.write_struct_end()
            },
            |i| {
                let (mut status, mut state, mut error) =
                    (Status::default(), OperationState::Unknown, Status::default());
                read_struct(i, |i, id, ty| {
                    Ok(match (id, ty) {
                        (1, TType::Struct) => {
                            status = read_status(i)?;
                            true
                        }
                        (2, TType::I32) => {
                            state = OperationState::from_i32(i.read_i32()?);
                            true
                        }
                        (3, TType::String) => {
                            error.sql_state = Some(i.read_string()?);
                            true
                        }
                        (4, TType::I32) => {
                            error.error_code = Some(i.read_i32()?);
                            true
                        }
                        (5, TType::String) => {
                            error.message = Some(i.read_string()?);
                            true
                        }
                        _ => false,
                    })
                })?;
                Ok((status, state, error))
            },
        )
    }

    /// `GetResultSetMetadata`: the result's columns.
    pub(crate) fn result_metadata(&mut self, op: &OperationHandle) -> Result<(Status, Vec<ColumnDesc>)> {
        self.call(
            "GetResultSetMetadata",
            |o| {
                o.write_struct_begin(&TStructIdentifier::new("TGetResultSetMetadataReq"))?;
                write_operation_handle(o, 1, op)?;
                o.write_field_stop()?;
                o.write_struct_end()
            },
            |i| {
                let (mut status, mut columns) = (Status::default(), Vec::new());
                read_struct(i, |i, id, ty| {
                    Ok(match (id, ty) {
                        (1, TType::Struct) => {
                            status = read_status(i)?;
                            true
                        }
                        (2, TType::Struct) => {
                            columns = read_table_schema(i)?;
                            true
                        }
                        _ => false,
                    })
                })?;
                Ok((status, columns))
            },
        )
    }

    /// `FetchResults` of up to `max_rows` rows: the columns of the row set (`None` when
    /// the reply holds no row set; columns of no rows when the result is exhausted).
    pub(crate) fn fetch(&mut self, op: &OperationHandle, max_rows: usize) -> Result<(Status, Option<Vec<RawColumn>>)> {
        let max = i64::try_from(max_rows).map_err(|_| {
            CallError::Protocol(format!("a fetch of {max_rows} rows is more than the protocol carries"))
        })?;
        self.call(
            "FetchResults",
            |o| {
                o.write_struct_begin(&TStructIdentifier::new("TFetchResultsReq"))?;
                write_operation_handle(o, 1, op)?;
                write_i32(o, 2, 0)?; // FETCH_NEXT
                o.write_field_begin(&TFieldIdentifier::new("maxRows", TType::I64, 3))?;
                o.write_i64(max)?;
                o.write_field_end()?;
                o.write_field_stop()?;
                o.write_struct_end()
            },
            |i| {
                let (mut status, mut columns) = (Status::default(), None);
                read_struct(i, |i, id, ty| {
                    Ok(match (id, ty) {
                        (1, TType::Struct) => {
                            status = read_status(i)?;
                            true
                        }
                        (3, TType::Struct) => {
                            columns = read_row_set(i, max_rows)?;
                            true
                        }
                        _ => false,
                    })
                })?;
                Ok((status, columns))
            },
        )
    }

    /// `CancelOperation`.
    pub(crate) fn cancel_operation(&mut self, op: &OperationHandle) -> Result<Status> {
        self.call(
            "CancelOperation",
            |o| {
                o.write_struct_begin(&TStructIdentifier::new("TCancelOperationReq"))?;
                write_operation_handle(o, 1, op)?;
                o.write_field_stop()?;
                o.write_struct_end()
            },
            read_status_only,
        )
    }

    /// `CloseOperation`.
    pub(crate) fn close_operation(&mut self, op: &OperationHandle) -> Result<Status> {
        self.call(
            "CloseOperation",
            |o| {
                o.write_struct_begin(&TStructIdentifier::new("TCloseOperationReq"))?;
                write_operation_handle(o, 1, op)?;
                o.write_field_stop()?;
                o.write_struct_end()
            },
            read_status_only,
        )
    }
}

/// The binary protocol with every length the server sends checked against what can
/// follow it ([`Transport::read_limit`]) before anything is allocated: the thrift crate's
/// own reader allocates a negative or huge length as it comes (a panic or gigabytes).
struct Bounded<'a>(TBinaryInputProtocol<&'a mut Transport>);

impl Bounded<'_> {
    fn length(&mut self, n: i32, what: &str) -> thrift::Result<usize> {
        let limit = self.0.transport.read_limit();
        usize::try_from(n).ok().filter(|n| *n <= limit).ok_or_else(|| {
            thrift::Error::Protocol(thrift::ProtocolError::new(
                thrift::ProtocolErrorKind::SizeLimit,
                format!("the server announced a {what} of length {n} with {limit} bytes left"),
            ))
        })
    }
}

impl TInputProtocol for Bounded<'_> {
    fn read_message_begin(&mut self) -> thrift::Result<TMessageIdentifier> {
        self.0.read_message_begin()
    }
    fn read_message_end(&mut self) -> thrift::Result<()> {
        self.0.read_message_end()
    }
    fn read_struct_begin(&mut self) -> thrift::Result<Option<TStructIdentifier>> {
        self.0.read_struct_begin()
    }
    fn read_struct_end(&mut self) -> thrift::Result<()> {
        self.0.read_struct_end()
    }
    fn read_field_begin(&mut self) -> thrift::Result<TFieldIdentifier> {
        self.0.read_field_begin()
    }
    fn read_field_end(&mut self) -> thrift::Result<()> {
        self.0.read_field_end()
    }
    fn read_bool(&mut self) -> thrift::Result<bool> {
        self.0.read_bool()
    }
    fn read_bytes(&mut self) -> thrift::Result<Vec<u8>> {
        use std::io::Read;
        let n = self.0.read_i32()?;
        let n = self.length(n, "binary value")?;
        let mut buf = vec![0; n];
        self.0.transport.read_exact(&mut buf)?;
        Ok(buf)
    }
    fn read_i8(&mut self) -> thrift::Result<i8> {
        self.0.read_i8()
    }
    fn read_i16(&mut self) -> thrift::Result<i16> {
        self.0.read_i16()
    }
    fn read_i32(&mut self) -> thrift::Result<i32> {
        self.0.read_i32()
    }
    fn read_i64(&mut self) -> thrift::Result<i64> {
        self.0.read_i64()
    }
    fn read_double(&mut self) -> thrift::Result<f64> {
        self.0.read_double()
    }
    fn read_string(&mut self) -> thrift::Result<String> {
        let bytes = self.read_bytes()?;
        String::from_utf8(bytes).map_err(|e| {
            thrift::Error::Protocol(thrift::ProtocolError::new(
                thrift::ProtocolErrorKind::InvalidData,
                format!("a string that is not UTF-8: {e}"),
            ))
        })
    }
    fn read_list_begin(&mut self) -> thrift::Result<TListIdentifier> {
        let list = self.0.read_list_begin()?;
        // Each element takes at least a byte.
        self.length(list.size, "list")?;
        Ok(list)
    }
    fn read_list_end(&mut self) -> thrift::Result<()> {
        self.0.read_list_end()
    }
    fn read_set_begin(&mut self) -> thrift::Result<thrift::protocol::TSetIdentifier> {
        let set = self.0.read_set_begin()?;
        self.length(set.size, "set")?;
        Ok(set)
    }
    fn read_set_end(&mut self) -> thrift::Result<()> {
        self.0.read_set_end()
    }
    fn read_map_begin(&mut self) -> thrift::Result<TMapIdentifier> {
        let map = self.0.read_map_begin()?;
        self.length(map.size, "map")?;
        Ok(map)
    }
    fn read_map_end(&mut self) -> thrift::Result<()> {
        self.0.read_map_end()
    }
    fn read_byte(&mut self) -> thrift::Result<u8> {
        self.0.read_byte()
    }
}

// Writing.

fn write_i32(o: &mut dyn TOutputProtocol, id: i16, v: i32) -> thrift::Result<()> {
    o.write_field_begin(&TFieldIdentifier::new("i32", TType::I32, id))?;
    o.write_i32(v)?;
    o.write_field_end()
}

fn write_string(o: &mut dyn TOutputProtocol, id: i16, v: &str) -> thrift::Result<()> {
    o.write_field_begin(&TFieldIdentifier::new("string", TType::String, id))?;
    o.write_string(v)?;
    o.write_field_end()
}

fn write_handle(o: &mut dyn TOutputProtocol, id: i16, h: &Handle) -> thrift::Result<()> {
    o.write_field_begin(&TFieldIdentifier::new("handle", TType::Struct, id))?;
    o.write_struct_begin(&TStructIdentifier::new("THandleIdentifier"))?;
    o.write_field_begin(&TFieldIdentifier::new("guid", TType::String, 1))?;
    o.write_bytes(&h.guid)?;
    o.write_field_end()?;
    o.write_field_begin(&TFieldIdentifier::new("secret", TType::String, 2))?;
    o.write_bytes(&h.secret)?;
    o.write_field_end()?;
    o.write_field_stop()?;
    o.write_struct_end()?;
    o.write_field_end()
}

fn write_session_handle(o: &mut dyn TOutputProtocol, id: i16, h: &Handle) -> thrift::Result<()> {
    o.write_field_begin(&TFieldIdentifier::new("sessionHandle", TType::Struct, id))?;
    o.write_struct_begin(&TStructIdentifier::new("TSessionHandle"))?;
    write_handle(o, 1, h)?;
    o.write_field_stop()?;
    o.write_struct_end()?;
    o.write_field_end()
}

fn write_operation_handle(o: &mut dyn TOutputProtocol, id: i16, op: &OperationHandle) -> thrift::Result<()> {
    o.write_field_begin(&TFieldIdentifier::new("operationHandle", TType::Struct, id))?;
    o.write_struct_begin(&TStructIdentifier::new("TOperationHandle"))?;
    write_handle(o, 1, &op.id)?;
    write_i32(o, 2, op.operation_type)?;
    o.write_field_begin(&TFieldIdentifier::new("hasResultSet", TType::Bool, 3))?;
    o.write_bool(op.has_result_set)?;
    o.write_field_end()?;
    if let Some(count) = op.modified_row_count {
        o.write_field_begin(&TFieldIdentifier::new("modifiedRowCount", TType::Double, 4))?;
        o.write_double(count)?;
        o.write_field_end()?;
    }
    o.write_field_stop()?;
    o.write_struct_end()?;
    o.write_field_end()
}

// Reading.

/// Reads a struct, handing each field to `field(protocol, id, type)`, which reads it and
/// returns `true`, or returns `false` to have it skipped.
fn read_struct(
    i: &mut dyn TInputProtocol,
    mut field: impl FnMut(&mut dyn TInputProtocol, i16, TType) -> thrift::Result<bool>,
) -> thrift::Result<()> {
    i.read_struct_begin()?;
    loop {
        let f = i.read_field_begin()?;
        if f.field_type == TType::Stop {
            break;
        }
        if !field(i, f.id.unwrap_or(i16::MIN), f.field_type)? {
            i.skip(f.field_type)?;
        }
        i.read_field_end()?;
    }
    i.read_struct_end()
}

fn read_status(i: &mut dyn TInputProtocol) -> thrift::Result<Status> {
    let mut s = Status::default();
    read_struct(i, |i, id, ty| {
        Ok(match (id, ty) {
            (1, TType::I32) => {
                s.code = i.read_i32()?;
                true
            }
            (3, TType::String) => {
                s.sql_state = Some(i.read_string()?);
                true
            }
            (4, TType::I32) => {
                s.error_code = Some(i.read_i32()?);
                true
            }
            (5, TType::String) => {
                s.message = Some(i.read_string()?);
                true
            }
            _ => false,
        })
    })?;
    Ok(s)
}

fn read_status_only(i: &mut dyn TInputProtocol) -> thrift::Result<Status> {
    let mut status = Status::default();
    read_struct(i, |i, id, ty| {
        Ok(match (id, ty) {
            (1, TType::Struct) => {
                status = read_status(i)?;
                true
            }
            _ => false,
        })
    })?;
    Ok(status)
}

fn read_handle(i: &mut dyn TInputProtocol) -> thrift::Result<Handle> {
    let mut h = Handle::default();
    read_struct(i, |i, id, ty| {
        Ok(match (id, ty) {
            (1, TType::String) => {
                h.guid = i.read_bytes()?;
                true
            }
            (2, TType::String) => {
                h.secret = i.read_bytes()?;
                true
            }
            _ => false,
        })
    })?;
    Ok(h)
}

fn read_session_handle(i: &mut dyn TInputProtocol) -> thrift::Result<Handle> {
    let mut h = Handle::default();
    read_struct(i, |i, id, ty| {
        Ok(match (id, ty) {
            (1, TType::Struct) => {
                h = read_handle(i)?;
                true
            }
            _ => false,
        })
    })?;
    Ok(h)
}

fn read_operation_handle(i: &mut dyn TInputProtocol) -> thrift::Result<OperationHandle> {
    let mut op = OperationHandle::default();
    read_struct(i, |i, id, ty| {
        Ok(match (id, ty) {
            (1, TType::Struct) => {
                op.id = read_handle(i)?;
                true
            }
            (2, TType::I32) => {
                op.operation_type = i.read_i32()?;
                true
            }
            (3, TType::Bool) => {
                op.has_result_set = i.read_bool()?;
                true
            }
            (4, TType::Double) => {
                op.modified_row_count = Some(i.read_double()?);
                true
            }
            _ => false,
        })
    })?;
    Ok(op)
}

/// `TTableSchema` → the columns, each with the top entry of its type.
fn read_table_schema(i: &mut dyn TInputProtocol) -> thrift::Result<Vec<ColumnDesc>> {
    let mut columns = Vec::new();
    read_struct(i, |i, id, ty| {
        if (id, ty) != (1, TType::List) {
            return Ok(false);
        }
        let list = i.read_list_begin()?;
        for _ in 0..list.size {
            let mut c = ColumnDesc { name: String::new(), type_id: -1, precision: None, scale: None };
            read_struct(i, |i, id, ty| {
                Ok(match (id, ty) {
                    (1, TType::String) => {
                        c.name = i.read_string()?;
                        true
                    }
                    (2, TType::Struct) => {
                        read_type_desc(i, &mut c)?;
                        true
                    }
                    _ => false,
                })
            })?;
            columns.push(c);
        }
        i.read_list_end()?;
        Ok(true)
    })?;
    Ok(columns)
}

/// `TTypeDesc`: the first entry is the column's own type; the others are nested types.
fn read_type_desc(i: &mut dyn TInputProtocol, c: &mut ColumnDesc) -> thrift::Result<()> {
    read_struct(i, |i, id, ty| {
        if (id, ty) != (1, TType::List) {
            return Ok(false);
        }
        let list = i.read_list_begin()?;
        for n in 0..list.size {
            if n > 0 {
                i.skip(TType::Struct)?;
                continue;
            }
            // The union TTypeEntry: 1 primitive, 2 array, 3 map, 4 struct, 5 union,
            // 6 user-defined.
            read_struct(i, |i, id, ty| {
                if ty != TType::Struct {
                    return Ok(false);
                }
                match id {
                    1 => read_primitive_entry(i, c)?,
                    2..=6 => {
                        // ARRAY_TYPE 10, MAP_TYPE 11, STRUCT_TYPE 12, UNION_TYPE 13,
                        // USER_DEFINED_TYPE 14.
                        c.type_id = i32::from(id) + 8;
                        i.skip(TType::Struct)?;
                    }
                    _ => return Ok(false),
                }
                Ok(true)
            })?;
        }
        i.read_list_end()?;
        Ok(true)
    })
}

fn read_primitive_entry(i: &mut dyn TInputProtocol, c: &mut ColumnDesc) -> thrift::Result<()> {
    read_struct(i, |i, id, ty| {
        Ok(match (id, ty) {
            (1, TType::I32) => {
                c.type_id = i.read_i32()?;
                true
            }
            (2, TType::Struct) => {
                // TTypeQualifiers { 1: map<string, TTypeQualifierValue> }
                read_struct(i, |i, id, ty| {
                    if (id, ty) != (1, TType::Map) {
                        return Ok(false);
                    }
                    let map = i.read_map_begin()?;
                    for _ in 0..map.size {
                        let key = i.read_string()?;
                        let mut value = None;
                        read_struct(i, |i, id, ty| {
                            Ok(match (id, ty) {
                                (1, TType::I32) => {
                                    value = Some(i.read_i32()?);
                                    true
                                }
                                _ => false,
                            })
                        })?;
                        match key.as_str() {
                            "precision" => c.precision = value,
                            "scale" => c.scale = value,
                            _ => {}
                        }
                    }
                    i.read_map_end()?;
                    Ok(true)
                })?;
                true
            }
            _ => false,
        })
    })
}

/// `TRowSet`: its columns (`columns`, field 3), `None` when the reply has no columns at
/// all. Rows (field 2, protocol V5 and older: the caller asks for V10) and results
/// serialized in tasks (`binaryColumns`, field 4, with
/// `hive.server2.thrift.resultset.serialize.in.tasks`) are refused: reading them as an
/// empty row set would end an import early.
fn read_row_set(i: &mut dyn TInputProtocol, max_rows: usize) -> thrift::Result<Option<Vec<RawColumn>>> {
    let mut columns = None;
    read_struct(i, |i, id, ty| {
        Ok(match (id, ty) {
            (2, TType::List) => {
                let rows = i.read_list_begin()?;
                if rows.size != 0 {
                    return Err(thrift::Error::from(format!(
                        "the server sent {} rows one by one (protocol V5 or older); this client reads \
                         columnar results (V6, Hive 0.13, and later)",
                        rows.size
                    )));
                }
                i.read_list_end()?;
                true
            }
            (3, TType::List) => {
                let list = i.read_list_begin()?;
                let mut read = Vec::new();
                for _ in 0..list.size {
                    read.push(read_column(i, max_rows)?);
                }
                i.read_list_end()?;
                columns = Some(read);
                true
            }
            (4, _) | (5, _) => {
                return Err(thrift::Error::from(
                    "the server sends results serialized in tasks \
                     (hive.server2.thrift.resultset.serialize.in.tasks=true), which this client does not read"
                        .to_string(),
                ));
            }
            _ => false,
        })
    })?;
    Ok(columns)
}

/// The union `TColumn`: one of eight `{ 1: list<T> values, 2: binary nulls }` structs.
fn read_column(i: &mut dyn TInputProtocol, max_rows: usize) -> thrift::Result<RawColumn> {
    let mut column = None;
    read_struct(i, |i, id, ty| {
        if ty != TType::Struct || !(1..=8).contains(&id) {
            return Ok(false);
        }
        let mut values = None;
        let mut nulls = Vec::new();
        read_struct(i, |i, field, ty| {
            Ok(match (field, ty) {
                (1, TType::List) => {
                    values = Some(read_values(i, id, max_rows)?);
                    true
                }
                (2, TType::String) => {
                    nulls = i.read_bytes()?;
                    true
                }
                _ => false,
            })
        })?;
        let values = values.ok_or_else(|| thrift::Error::from(format!("a column (kind {id}) without values")))?;
        column = Some(RawColumn { values, nulls });
        Ok(true)
    })?;
    column.ok_or_else(|| thrift::Error::from("a result column of no known kind".to_string()))
}

fn read_values(i: &mut dyn TInputProtocol, kind: i16, max_rows: usize) -> thrift::Result<RawValues> {
    let list: TListIdentifier = i.read_list_begin()?;
    let n = usize::try_from(list.size).map_err(|_| thrift::Error::from(format!("a list of {} values", list.size)))?;
    if n > max_rows {
        return Err(thrift::Error::from(format!("the server sent {n} rows for a fetch of at most {max_rows}")));
    }
    let expected = match kind {
        1 => TType::Bool,
        2 => TType::I08,
        3 => TType::I16,
        4 => TType::I32,
        5 => TType::I64,
        6 => TType::Double,
        _ => TType::String,
    };
    if list.element_type != expected {
        return Err(thrift::Error::from(format!(
            "a column of kind {kind} whose values are {:?}, not {expected:?}",
            list.element_type
        )));
    }
    macro_rules! each {
        ($read:ident) => {{
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(i.$read()?);
            }
            v
        }};
    }
    let values = match kind {
        1 => RawValues::Bool(each!(read_bool)),
        2 => RawValues::Byte(each!(read_i8)),
        3 => RawValues::I16(each!(read_i16)),
        4 => RawValues::I32(each!(read_i32)),
        5 => RawValues::I64(each!(read_i64)),
        6 => RawValues::Double(each!(read_double)),
        7 | 8 => {
            let mut data = Vec::new();
            let mut ends = Vec::with_capacity(n);
            for _ in 0..n {
                data.extend_from_slice(&i.read_bytes()?);
                ends.push(data.len());
            }
            if kind == 7 { RawValues::String { data, ends } } else { RawValues::Binary { data, ends } }
        }
        _ => return Err(thrift::Error::from(format!("a result column of kind {kind}"))),
    };
    i.read_list_end()?;
    Ok(values)
}
