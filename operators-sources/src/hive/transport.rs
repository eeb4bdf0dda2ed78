//! The byte streams HiveServer2's binary mode speaks: SASL-framed (`NONE`, `LDAP`,
//! `CUSTOM`, `PAM` authentication, all with the SASL `PLAIN` mechanism) or raw (`NOSASL`).
//!
//! SASL here is Thrift's `TSaslTransport`: a negotiation of `[status][u32 length][payload]`
//! messages (the client sends `START` with the mechanism's name, then its `PLAIN`
//! response `\0user\0password`; the server answers `COMPLETE`, or `BAD`/`ERROR` with a
//! message), then every Thrift message in a frame of a big-endian `u32` length and the
//! bytes. `PLAIN` negotiates no integrity or privacy layer, so the frames carry the bytes
//! as they are. Kerberos (`GSSAPI`) is not implemented.

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// SASL negotiation status bytes (Thrift's `TSaslTransport.NegotiationStatus`).
const START: u8 = 1;
const OK: u8 = 2;
const BAD: u8 = 3;
const ERROR: u8 = 4;
const COMPLETE: u8 = 5;

/// The largest frame or negotiation message accepted from the server: a bound on what a
/// corrupt length could make the client allocate.
const MAX_FRAME: usize = 1 << 30;

/// The largest single value (string, binary, list) accepted on an unframed (NOSASL)
/// connection.
const MAX_UNFRAMED_VALUE: usize = 1 << 28;

/// How the connection authenticates (`hive.server2.authentication` on the server).
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// SASL `PLAIN` with this user and password: the server's `NONE` (which takes any
    /// password), `LDAP`, `CUSTOM` and `PAM`.
    Plain {
        /// The user.
        user: String,
        /// The password (`NONE` ignores it).
        password: String,
    },
    /// No SASL layer (`NOSASL`).
    NoSasl,
}

impl std::fmt::Debug for Auth {
    // Never the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Plain { user, .. } => write!(f, "Plain {{ user: {user:?} }}"),
            Auth::NoSasl => f.write_str("NoSasl"),
        }
    }
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The socket: unknown host, refused, timed out.
    #[error("cannot connect to {addr}: {source}")]
    Io {
        /// `host:port`.
        addr: String,
        /// The error.
        source: io::Error,
    },
    /// The server refused the user and password.
    #[error("HiveServer2 at {addr} refused the login of user `{user}`: {message}")]
    Refused {
        /// `host:port`.
        addr: String,
        /// The user.
        user: String,
        /// The server's message.
        message: String,
    },
    /// The server broke the SASL negotiation.
    #[error("HiveServer2 at {addr}: SASL negotiation failed: {message}")]
    Sasl {
        /// `host:port`.
        addr: String,
        /// What went wrong.
        message: String,
    },
}

/// A connection to HiveServer2: `Read` and `Write` of Thrift's bytes, framed when SASL is
/// on. A write is sent on `flush`, as one frame.
pub struct Transport {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
    framed: bool,
    /// Outgoing bytes of the message being written (framed mode).
    out: Vec<u8>,
    /// The incoming frame and how much of it was read (framed mode).
    frame: Vec<u8>,
    at: usize,
}

impl Transport {
    /// Connects and authenticates. `timeout` bounds the connect and every later read.
    pub fn connect(host: &str, port: u16, auth: &Auth, timeout: Duration) -> Result<Self, ConnectError> {
        let addr = format!("{host}:{port}");
        let io_err = |source| ConnectError::Io { addr: addr.clone(), source };
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the host name resolves to no address");
        let mut stream = None;
        for a in (host, port).to_socket_addrs().map_err(io_err)? {
            match TcpStream::connect_timeout(&a, timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let stream = stream.ok_or_else(|| io_err(last))?;
        stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
        stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
        stream.set_nodelay(true).map_err(io_err)?;
        let reader = BufReader::with_capacity(256 * 1024, stream.try_clone().map_err(io_err)?);
        let writer = BufWriter::with_capacity(64 * 1024, stream);
        let mut t = Transport { reader, writer, framed: false, out: Vec::new(), frame: Vec::new(), at: 0 };
        if let Auth::Plain { user, password } = auth {
            t.negotiate(&addr, user, password)?;
            t.framed = true;
        }
        Ok(t)
    }

    fn negotiate(&mut self, addr: &str, user: &str, password: &str) -> Result<(), ConnectError> {
        let sasl = |message: String| ConnectError::Sasl { addr: addr.to_string(), message };
        let io = |e: io::Error| ConnectError::Io { addr: addr.to_string(), source: e };
        let mut response = Vec::with_capacity(user.len() + password.len() + 2);
        response.push(0);
        response.extend_from_slice(user.as_bytes());
        response.push(0);
        response.extend_from_slice(password.as_bytes());
        self.send_sasl(START, b"PLAIN").map_err(io)?;
        // PLAIN is complete after its one response.
        self.send_sasl(COMPLETE, &response).map_err(io)?;
        let (status, payload) = self.read_sasl().map_err(io)?;
        let text = String::from_utf8_lossy(&payload).into_owned();
        match status {
            COMPLETE => Ok(()),
            BAD | ERROR => Err(ConnectError::Refused { addr: addr.to_string(), user: user.to_string(), message: text }),
            OK => Err(sasl(format!("the server asked for another round ({text}), which PLAIN does not have"))),
            other => Err(sasl(format!("unknown negotiation status {other} ({text})"))),
        }
    }

    fn send_sasl(&mut self, status: u8, payload: &[u8]) -> io::Result<()> {
        let len = u32::try_from(payload.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a SASL message longer than 4 GiB"))?;
        self.writer.write_all(&[status])?;
        self.writer.write_all(&len.to_be_bytes())?;
        self.writer.write_all(payload)?;
        self.writer.flush()
    }

    fn read_sasl(&mut self) -> io::Result<(u8, Vec<u8>)> {
        let mut header = [0u8; 5];
        self.reader.read_exact(&mut header).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::new(
                    e.kind(),
                    "the server closed the connection during the SASL negotiation (is it NOSASL? then \
                     set auth=noSasl in the URL)",
                )
            } else {
                e
            }
        })?;
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if len > MAX_FRAME {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("a SASL message of {len} bytes")));
        }
        let mut payload = vec![0; len];
        self.reader.read_exact(&mut payload)?;
        Ok((header[0], payload))
    }

    /// Reads the next frame into `frame`.
    fn next_frame(&mut self) -> io::Result<()> {
        let mut len = [0u8; 4];
        self.reader.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("a frame of {len} bytes")));
        }
        self.frame.clear();
        self.frame.resize(len, 0);
        self.reader.read_exact(&mut self.frame)?;
        self.at = 0;
        Ok(())
    }

    /// The most bytes a length read from the server may announce: what is left of the
    /// current frame (SASL), or [`MAX_UNFRAMED_VALUE`] (NOSASL, where nothing else bounds
    /// it). A length past it is refused before anything is allocated for it.
    pub(crate) fn read_limit(&self) -> usize {
        if self.framed { self.frame.len() - self.at } else { MAX_UNFRAMED_VALUE }
    }

    /// Closes the socket; a read or write after it fails.
    pub fn shutdown(&mut self) {
        let _ = self.writer.flush();
        let _ = self.writer.get_ref().shutdown(std::net::Shutdown::Both);
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.framed {
            return self.reader.read(buf);
        }
        if self.at == self.frame.len() {
            self.next_frame()?;
        }
        let n = buf.len().min(self.frame.len() - self.at);
        buf[..n].copy_from_slice(&self.frame[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.framed {
            self.out.extend_from_slice(buf);
            Ok(buf.len())
        } else {
            self.writer.write(buf)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.framed {
            let len = u32::try_from(self.out.len())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a message longer than 4 GiB"))?;
            self.writer.write_all(&len.to_be_bytes())?;
            self.writer.write_all(&self.out)?;
            self.out.clear();
        }
        self.writer.flush()
    }
}
