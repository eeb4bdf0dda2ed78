//! The messages of PostgreSQL's `pgoutput` plugin (protocol version 1) that carry
//! changes, decoded from the bytes the replication stream delivers. (The transport,
//! pgwire-replication, parses Begin and Commit itself and leaves these to its user.)

/// One column of a relation message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RelationColumn {
    pub name: String,
    pub key: bool,
    pub type_oid: u32,
}

/// A column's value in a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Datum {
    Null,
    /// A TOASTed value the update did not change, so not sent.
    Unchanged,
    /// The value in PostgreSQL's text output form.
    Text(Vec<u8>),
}

/// A change message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message {
    /// The layout of a table, sent before its first change and again after it changes.
    Relation {
        id: u32,
        namespace: String,
        name: String,
        columns: Vec<RelationColumn>,
    },
    Insert {
        relation: u32,
        new: Vec<Datum>,
    },
    /// `old` is the old key (REPLICA IDENTITY DEFAULT, when the key changed: other
    /// columns null) or, when `old_full`, the whole old row (REPLICA IDENTITY FULL).
    Update {
        relation: u32,
        old: Option<Vec<Datum>>,
        old_full: bool,
        new: Vec<Datum>,
    },
    Delete {
        relation: u32,
        old: Vec<Datum>,
    },
    Truncate {
        relations: Vec<u32>,
    },
    /// Begin, commit, origin, type, logical message: nothing for the source.
    Other,
}

/// Why bytes are not a message.
#[derive(Debug, thiserror::Error)]
#[error("malformed pgoutput message ({0})")]
pub(crate) struct Malformed(&'static str);

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.bytes.len() < n {
            return Err(Malformed("truncated"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, Malformed> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, Malformed> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn cstr(&mut self) -> Result<String, Malformed> {
        let end = self.bytes.iter().position(|b| *b == 0).ok_or(Malformed("unterminated name"))?;
        let s = String::from_utf8_lossy(&self.bytes[..end]).into_owned();
        self.bytes = &self.bytes[end + 1..];
        Ok(s)
    }

    fn tuple(&mut self) -> Result<Vec<Datum>, Malformed> {
        let n = self.u16()?;
        let mut values = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            values.push(match self.u8()? {
                b'n' => Datum::Null,
                b'u' => Datum::Unchanged,
                b't' => {
                    let len = self.u32()? as usize;
                    Datum::Text(self.take(len)?.to_vec())
                }
                _ => return Err(Malformed("unknown column kind in tuple")),
            });
        }
        Ok(values)
    }
}

/// Decodes one message.
pub(crate) fn decode(bytes: &[u8]) -> Result<Message, Malformed> {
    let mut r = Reader { bytes };
    Ok(match r.u8()? {
        b'R' => {
            let id = r.u32()?;
            let namespace = r.cstr()?;
            let name = r.cstr()?;
            let _replica_identity = r.u8()?;
            let n = r.u16()?;
            let mut columns = Vec::with_capacity(usize::from(n));
            for _ in 0..n {
                let flags = r.u8()?;
                let name = r.cstr()?;
                let type_oid = r.u32()?;
                let _typmod = r.u32()?;
                columns.push(RelationColumn { name, key: flags & 1 == 1, type_oid });
            }
            Message::Relation { id, namespace, name, columns }
        }
        b'I' => {
            let relation = r.u32()?;
            if r.u8()? != b'N' {
                return Err(Malformed("insert without a new tuple"));
            }
            Message::Insert { relation, new: r.tuple()? }
        }
        b'U' => {
            let relation = r.u32()?;
            let (old, old_full, marker) = match r.u8()? {
                m @ (b'K' | b'O') => {
                    let old = r.tuple()?;
                    (Some(old), m == b'O', r.u8()?)
                }
                m => (None, false, m),
            };
            if marker != b'N' {
                return Err(Malformed("update without a new tuple"));
            }
            Message::Update { relation, old, old_full, new: r.tuple()? }
        }
        b'D' => {
            let relation = r.u32()?;
            match r.u8()? {
                b'K' | b'O' => Message::Delete { relation, old: r.tuple()? },
                _ => return Err(Malformed("delete without an old tuple")),
            }
        }
        b'T' => {
            let n = r.u32()?;
            let _options = r.u8()?;
            let relations = (0..n).map(|_| r.u32()).collect::<Result<_, _>>()?;
            Message::Truncate { relations }
        }
        _ => Message::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::{Datum, Message, RelationColumn, decode};

    fn tuple(values: &[Option<&str>]) -> Vec<u8> {
        let mut b = (values.len() as u16).to_be_bytes().to_vec();
        for v in values {
            match v {
                None => b.push(b'n'),
                Some(t) => {
                    b.push(b't');
                    b.extend((t.len() as u32).to_be_bytes());
                    b.extend(t.as_bytes());
                }
            }
        }
        b
    }

    #[test]
    fn relation_insert_update_delete_and_truncate_decode() {
        let mut rel = vec![b'R'];
        rel.extend(16385u32.to_be_bytes());
        rel.extend(b"public\0items\0");
        rel.push(b'd');
        rel.extend(2u16.to_be_bytes());
        rel.push(1);
        rel.extend(b"id\0");
        rel.extend(20u32.to_be_bytes());
        rel.extend((-1i32).to_be_bytes());
        rel.push(0);
        rel.extend(b"v\0");
        rel.extend(25u32.to_be_bytes());
        rel.extend((-1i32).to_be_bytes());
        assert_eq!(
            decode(&rel).unwrap(),
            Message::Relation {
                id: 16385,
                namespace: "public".into(),
                name: "items".into(),
                columns: vec![
                    RelationColumn { name: "id".into(), key: true, type_oid: 20 },
                    RelationColumn { name: "v".into(), key: false, type_oid: 25 },
                ],
            }
        );
        let mut ins = vec![b'I'];
        ins.extend(16385u32.to_be_bytes());
        ins.push(b'N');
        ins.extend(tuple(&[Some("7"), None]));
        assert_eq!(
            decode(&ins).unwrap(),
            Message::Insert { relation: 16385, new: vec![Datum::Text(b"7".to_vec()), Datum::Null] }
        );
        let mut upd = vec![b'U'];
        upd.extend(16385u32.to_be_bytes());
        upd.push(b'K');
        upd.extend(tuple(&[Some("7"), None]));
        upd.push(b'N');
        upd.extend(tuple(&[Some("8"), Some("x")]));
        let Message::Update { old: Some(old), old_full, new, .. } = decode(&upd).unwrap() else { panic!() };
        assert_eq!((old.len(), old_full, new[1].clone()), (2, false, Datum::Text(b"x".to_vec())));
        let mut del = vec![b'D'];
        del.extend(16385u32.to_be_bytes());
        del.push(b'O');
        del.extend(tuple(&[Some("8"), Some("x")]));
        assert!(matches!(decode(&del).unwrap(), Message::Delete { relation: 16385, .. }));
        let mut tr = vec![b'T'];
        tr.extend(1u32.to_be_bytes());
        tr.push(0);
        tr.extend(16385u32.to_be_bytes());
        assert_eq!(decode(&tr).unwrap(), Message::Truncate { relations: vec![16385] });
        assert!(decode(&ins[..8]).is_err(), "truncated");
        assert_eq!(decode(b"B123").unwrap(), Message::Other);
    }
}
