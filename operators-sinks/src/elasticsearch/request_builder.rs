//! Bulk bodies: the action and document lines of each buffered row.

use super::config::SyncMode;
use super::service::Writer;

/// One buffered action: where its lines are in the body, and its retry history.
pub(super) struct Item {
    pub(super) lines: std::ops::Range<usize>,
    /// The id as a JSON string, relative to `lines.start`.
    id: std::ops::Range<usize>,
    /// The document, relative to `lines.start`.
    doc: std::ops::Range<usize>,
    pub(super) attempts: u32,
    pub(super) conflicts: u32,
    /// A delete (of a changelog's `-U`/`-D` row): a 404 answer means it is gone already.
    pub(super) delete: bool,
}

/// `{"<action>":{<meta>}}` cut open before its end: `{"<action>":{<meta>,"_id":`.
fn prefix_of(action: &str, meta: serde_json::Map<String, serde_json::Value>) -> Vec<u8> {
    let line = serde_json::json!({ action: meta }).to_string();
    let mut prefix = line.as_bytes()[..line.len() - 2].to_vec();
    prefix.extend_from_slice(b",\"_id\":");
    prefix
}

impl Writer {
    /// `{"<action>":{"_index":…,[…,]"_id":` for this sink's settings.
    pub(super) fn build_action_prefix(&self) -> Vec<u8> {
        let s = &self.settings;
        let mut meta = self.target_meta();
        let action = match s.mode {
            SyncMode::Full => {
                if s.external_versioning
                    && let Some(v) = s.version_number()
                {
                    meta.insert("version".into(), v.into());
                    meta.insert("version_type".into(), "external_gte".into());
                }
                "index"
            }
            SyncMode::Incremental | SyncMode::Finite => {
                meta.insert("retry_on_conflict".into(), s.retry_on_conflict.into());
                "update"
            }
        };
        prefix_of(action, meta)
    }

    /// `_index` (and `_type` where the cluster takes it) of every action.
    fn target_meta(&self) -> serde_json::Map<String, serde_json::Value> {
        let s = &self.settings;
        let mut meta = serde_json::Map::new();
        meta.insert("_index".into(), s.index.clone().into());
        if self.typed
            && let Some(t) = &s.doc_type
        {
            meta.insert("_type".into(), t.clone().into());
        }
        meta
    }

    /// `{"delete":{"_index":…,[…,]"_id":` for this sink's settings.
    pub(super) fn build_delete_prefix(&self) -> Vec<u8> {
        prefix_of("delete", self.target_meta())
    }

    /// A delete of document `id` (one line, no document).
    pub(super) fn add_delete(&mut self, id: &str) {
        let start = self.buf.len();
        self.buf.extend_from_slice(&self.delete_prefix);
        let id_start = self.buf.len() - start;
        let _ = serde_json::to_writer(&mut self.buf, id);
        let id_end = self.buf.len() - start;
        self.buf.extend_from_slice(b"}}\n");
        self.items.push(Item {
            lines: start..self.buf.len(),
            id: id_start..id_end,
            doc: id_end..id_end,
            attempts: 0,
            conflicts: 0,
            delete: true,
        });
    }

    pub(super) fn add(&mut self, id: &str, doc: &[u8]) {
        let mode = self.settings.mode;
        let start = self.buf.len();
        self.buf.extend_from_slice(&self.action_prefix);
        let id_start = self.buf.len() - start;
        // Writing a str into a Vec cannot fail; the id is JSON-escaped.
        let _ = serde_json::to_writer(&mut self.buf, id);
        let id_end = self.buf.len() - start;
        self.buf.extend_from_slice(b"}}\n");
        if mode != SyncMode::Full {
            self.buf.extend_from_slice(b"{\"doc\":");
        }
        let doc_start = self.buf.len() - start;
        self.push_doc(doc);
        let doc_end = self.buf.len() - start;
        match mode {
            SyncMode::Full => {}
            SyncMode::Incremental => self.buf.extend_from_slice(b",\"doc_as_upsert\":true}"),
            SyncMode::Finite => self.buf.push(b'}'),
        }
        self.buf.push(b'\n');
        self.items.push(Item {
            lines: start..self.buf.len(),
            id: id_start..id_end,
            doc: doc_start..doc_end,
            attempts: 0,
            conflicts: 0,
            delete: false,
        });
    }

    /// The id of `item`, unescaped, for messages.
    pub(super) fn id_of(&self, item: &Item) -> String {
        let raw = &self.buf[item.lines.start + item.id.start..item.lines.start + item.id.end];
        serde_json::from_slice(raw).unwrap_or_else(|_| String::from_utf8_lossy(raw).into_owned())
    }

    /// The document of `item`, for dead letters.
    pub(super) fn doc_of(&self, item: &Item) -> String {
        String::from_utf8_lossy(&self.buf[item.lines.start + item.doc.start..item.lines.start + item.doc.end])
            .into_owned()
    }

    /// The row's JSON object, with the version field added where the mode writes it.
    fn push_doc(&mut self, doc: &[u8]) {
        match (&self.version_json, self.settings.mode.writes_version()) {
            (Some(v), true) if doc.last() == Some(&b'}') => {
                let body = &doc[..doc.len() - 1];
                self.buf.extend_from_slice(body);
                if body.len() > 1 {
                    self.buf.push(b',');
                }
                self.buf.extend_from_slice(v.as_bytes());
                self.buf.push(b'}');
            }
            _ => self.buf.extend_from_slice(doc),
        }
    }

    pub(super) fn is_full(&self) -> bool {
        self.items.len() >= self.settings.max_actions || self.buf.len() >= self.settings.max_bytes
    }
}
