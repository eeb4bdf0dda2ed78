//! Credentials: the one rule for which settings hold one, a [`Secret`] type that never
//! prints its value, and masking of passwords written into URLs and `name=value` text.
//!
//! ```
//! use operators_core::secret::{Secret, is_secret_key, redact_url};
//!
//! let key = Secret::new("-----BEGIN PRIVATE KEY-----\nMIIB…");
//! assert_eq!(format!("{key} {key:?}"), "**** ****");
//! assert!(is_secret_key("sink.kafka.ssl.key.pem") && !is_secret_key("sink.kafka.topic"));
//! assert_eq!(redact_url("postgres://u:pw@db:5432/x"), "postgres://u:****@db:5432/x");
//! ```

use std::fmt;

/// What a masked value is shown as.
pub const MASK: &str = "****";

/// A password, key or token: `Debug` and `Display` print [`MASK`], and it has no `Serialize`,
/// so it cannot be printed, logged or written by accident. [`Secret::expose`] gives the
/// value to the client that needs it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The credential itself, for the driver or client that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_string())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

/// Parts of a setting's name that mark a credential. Matched in the name lower-cased, with
/// `_` and `-` read as `.` (so environment spellings match too).
const SECRET_PARTS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "credential",
    "jaas",
    "api.key",
    "apikey",
    "private.key",
    "key.pem",
    // Java clients' `basic.auth.user.info` holds `user:password`.
    "user.info",
];

/// Names that hold a credential without saying so (librdkafka marks them sensitive): the
/// whole name or its last segments.
const SECRET_NAMES: &[&str] = &["ssl.key", "ssl.key.location", "sasl.oauthbearer.config"];

/// The one rule for which settings hold a credential, for every place that shows settings
/// (the runner's dry run, the job server's `/jobs/:id/config`, client configs' `Debug`).
///
/// `key` may be a full parameter (`sink.kafka.ssl.key.pem`), a bare client property
/// (`ssl.key.pem`), or an environment name (`OPERATOR_SINK_KAFKA_SASL_PASSWORD`). It is a
/// credential when it contains a part of [`SECRET_PARTS`] (`password`, `secret`, `token`,
/// `jaas`, `api.key`, `key.pem`, `private.key`, …) or ends with one of librdkafka's
/// sensitive names (`ssl.key`, `ssl.key.location`, `sasl.oauthbearer.config`). It leans
/// towards masking: `sasl.oauthbearer.token.endpoint.url` is masked too, which costs
/// nothing. User names, certificates (`ssl.ca.pem`) and keytab paths are not secrets.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase().replace(['_', '-'], ".");
    SECRET_PARTS.iter().any(|p| k.contains(p))
        || SECRET_NAMES.iter().any(|n| k == *n || k.strip_suffix(n).is_some_and(|head| head.ends_with('.')))
}

/// `text` with every password written into a URL (`scheme://user:PASSWORD@host`) and the
/// value of every `name=value` whose name is a secret by [`is_secret_key`]
/// (`?password=…`, `&sslpassword=…`, JAAS `password="…"`) replaced by [`MASK`].
///
/// Textual, not by parsing: it works on URLs that do not parse (a bad port), on lists of
/// URLs and on URLs inside error messages.
pub fn redact_url(text: &str) -> String {
    mask_pairs(&mask_userinfo(text))
}

/// Whether `c` ends a URL or a value inside running text.
fn ends_token(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>' | ',')
}

fn mask_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail.find(ends_token).unwrap_or(tail.len());
        let url = &tail[..end];
        // The authority ends at the first `/`, `?` or `#`; its userinfo at the last `@`.
        let authority = &url[..url.find(['/', '?', '#']).unwrap_or(url.len())];
        match authority.rfind('@').and_then(|a| authority[..a].find(':').map(|c| (c, a))) {
            Some((colon, at)) => {
                out.push_str(&url[..=colon]);
                out.push_str(MASK);
                out.push_str(&url[at..]);
            }
            None => out.push_str(url),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn mask_pairs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(eq) = rest.find('=') {
        let (head, tail) = rest.split_at(eq);
        let name_start = head
            .char_indices()
            .rev()
            .take_while(|(_, c)| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            .last()
            .map_or(head.len(), |(i, _)| i);
        out.push_str(head);
        out.push('=');
        let value = &tail[1..];
        if name_start == head.len() || !is_secret_key(&head[name_start..]) {
            rest = value;
            continue;
        }
        let quote = value.chars().next().filter(|c| matches!(c, '"' | '\''));
        let end = match quote {
            Some(q) => value[1..].find(q).map_or(value.len(), |i| i + 2),
            None => value.find(|c: char| ends_token(c) || matches!(c, '&' | ';')).unwrap_or(value.len()),
        };
        match quote {
            Some(q) => {
                out.push(q);
                out.push_str(MASK);
                if end > 1 && value[..end].ends_with(q) {
                    out.push(q);
                }
            }
            None => out.push_str(MASK),
        }
        rest = &value[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_settings_are_secrets() {
        for k in [
            "ssl.key.pem",
            "sink.kafka.ssl.key.pem",
            "ssl.key.password",
            "ssl.keystore.password",
            "ssl.truststore.password",
            "sasl.password",
            "sasl.oauthbearer.client.secret",
            "sasl.jaas.config",
            "sasl.oauthbearer.assertion.private.key.pem",
            "sasl.oauthbearer.assertion.private.key.passphrase",
            "source.kafka.ssl.key.location",
            "ssl.key",
            "sasl.oauthbearer.config",
            "sink.es.password",
            "sink.es.api.key",
            "source.db.password",
            "rest.token",
            "OPERATOR_SINK_KAFKA_SSL_KEY_PEM",
            "basic.auth.user.info",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in [
            "sink.kafka.topic",
            "sasl.username",
            "sink.es.username",
            "ssl.ca.pem",
            "ssl.ca.location",
            "ssl.certificate.pem",
            "sasl.kerberos.keytab",
            "sink.key.columns",
            "source.db.key.column",
            "unique.keys",
            "source.db.url",
            "ssl.keystore.location",
        ] {
            assert!(!is_secret_key(k), "{k}");
        }
    }

    #[test]
    fn secrets_print_as_the_mask() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}|{s:?}|{:?}", Some(&s)), "****|****|Some(****)");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn passwords_in_urls_and_pairs_are_masked() {
        for (text, want) in [
            ("postgres://u:pw@h:99999/db", "postgres://u:****@h:99999/db"),
            ("mysql://root@h/db", "mysql://root@h/db"),
            ("http://h:9200/x?a=b", "http://h:9200/x?a=b"),
            ("http://u:p@h1:9200,http://h2:9200", "http://u:****@h1:9200,http://h2:9200"),
            ("jdbc:mysql://root:p%40ss@h:3306/db", "jdbc:mysql://root:****@h:3306/db"),
            (
                "jdbc:postgresql://h/db?user=u&password=p%40ss&sslmode=disable",
                "jdbc:postgresql://h/db?user=u&password=****&sslmode=disable",
            ),
            (
                "cannot connect to `postgres://u:s3cr3t@h/db`: refused",
                "cannot connect to `postgres://u:****@h/db`: refused",
            ),
            (
                r#"PlainLoginModule required username="a" password="x y";"#,
                r#"PlainLoginModule required username="a" password="****";"#,
            ),
            ("sslpassword=abc sslmode=require", "sslpassword=**** sslmode=require"),
            ("a=b, c=d", "a=b, c=d"),
            ("password=", "password=****"),
            (r#"password="unterminated"#, r#"password="****"#),
        ] {
            assert_eq!(redact_url(text), want, "{text}");
        }
    }
}
