//! Audit events (reference §7): one per authentication attempt. Never a secret in here: the
//! fields are ids, names and short reason codes.

use std::sync::Arc;

use serde::ser::{Serialize, SerializeStruct, Serializer};

use crate::{Method, time};

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Identity proved, request let through.
    Success,
    /// 401 (or 503 fail-closed).
    Failure,
    /// 403: known caller, missing scope.
    Forbidden,
    /// 429.
    Throttled,
}

impl Outcome {
    /// Every outcome ([`Outcome::index`] is the position here).
    pub const ALL: [Outcome; 4] = [
        Outcome::Success,
        Outcome::Failure,
        Outcome::Forbidden,
        Outcome::Throttled,
    ];

    /// The position in [`Outcome::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Forbidden => "forbidden",
            Outcome::Throttled => "throttled",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Outcome::Success,
            Outcome::Failure,
            Outcome::Forbidden,
            Outcome::Throttled,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}

/// Where the client certificate an attempt was judged with came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CertSource {
    /// The TLS handshake of the connection to keycard.
    Tls,
    /// A header set by a TLS-terminating proxy (`mtls.forwarded_cert_header`).
    Forwarded,
}

impl CertSource {
    /// Every source ([`CertSource::index`] is the position here).
    pub const ALL: [CertSource; 2] = [CertSource::Tls, CertSource::Forwarded];

    /// The position in [`CertSource::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The wire name (`cert_source` in an audit event).
    pub const fn as_str(self) -> &'static str {
        match self {
            CertSource::Tls => "tls",
            CertSource::Forwarded => "forwarded",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        CertSource::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// One audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// When, in Unix milliseconds (serialised as RFC 3339 `ts`).
    pub ts_ms: i64,
    /// The request id (also sent upstream as `X-Request-Id`).
    pub request_id: String,
    /// The matched route's prefix.
    pub route: Option<Arc<str>>,
    /// The method of the presented credential; `None` when none was recognised.
    pub method: Option<Method>,
    /// How it ended.
    pub outcome: Outcome,
    /// Why it was refused (`None` on success).
    pub reason: Option<String>,
    /// The subject, when known (shared with the principal: no copy per request).
    pub subject: Option<Arc<str>>,
    /// The credential id, when known.
    pub credential_id: Option<Arc<str>>,
    /// The client address.
    pub ip: Option<String>,
    /// For a management event (route `admin` or `cli`): what was done, to what.
    pub management: Option<Management>,
    /// Where the request's client certificate came from, when it had one.
    pub cert_source: Option<CertSource>,
}

/// What a management event did: an operation of the admin API or the CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Management {
    /// Such as `key.create`, `subject.disable`.
    pub operation: String,
    /// The id or name it acted on (the new one, for a create).
    pub target: Option<String>,
}

/// An audit event borrowing its text: what the request path records and the audit writer
/// encodes from, without an owned copy of each field per event. `Ip` is the client address:
/// text here, an `IpAddr` on the request path (formatted by the writer, not per request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditEventRef<'a, Ip = &'a str> {
    /// When, in Unix milliseconds.
    pub ts_ms: i64,
    /// The request id.
    pub request_id: &'a str,
    /// The matched route's prefix.
    pub route: Option<&'a str>,
    /// The method of the presented credential; `None` when none was recognised.
    pub method: Option<Method>,
    /// How it ended.
    pub outcome: Outcome,
    /// Why it was refused (`None` on success).
    pub reason: Option<&'a str>,
    /// The subject, when known.
    pub subject: Option<&'a str>,
    /// The credential id, when known.
    pub credential_id: Option<&'a str>,
    /// The client address.
    pub ip: Option<Ip>,
    /// Where the request's client certificate came from, when it had one. Written only when
    /// present (`cert_source`).
    pub cert_source: Option<CertSource>,
    /// For a management event: the operation (`key.create`) and its target; the actor is
    /// `credential_id` (`cli` for the command line). Written only when present.
    pub operation: Option<(&'a str, Option<&'a str>)>,
}

impl AuditEvent {
    /// The event with its text borrowed.
    pub fn borrowed(&self) -> AuditEventRef<'_> {
        AuditEventRef {
            ts_ms: self.ts_ms,
            request_id: &self.request_id,
            route: self.route.as_deref(),
            method: self.method,
            outcome: self.outcome,
            reason: self.reason.as_deref(),
            subject: self.subject.as_deref(),
            credential_id: self.credential_id.as_deref(),
            ip: self.ip.as_deref(),
            cert_source: self.cert_source,
            operation: self
                .management
                .as_ref()
                .map(|m| (m.operation.as_str(), m.target.as_deref())),
        }
    }

    /// Appends the event as one JSON line (see [`AuditEventRef::write_json_line`]).
    pub fn write_json_line(&self, out: &mut Vec<u8>) {
        self.borrowed().write_json_line(out);
    }
}

impl AuditEventRef<'_> {
    /// Appends the event as one JSON line (the same document as [`AuditEvent`]'s `Serialize`
    /// form, and a newline), without intermediate strings: the audit writer encodes every
    /// request's event, so this is on the throughput budget.
    pub fn write_json_line(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"ts\":\"");
        time::write_rfc3339_millis(out, self.ts_ms);
        out.extend_from_slice(b"\",\"request_id\":");
        json_str(out, self.request_id);
        out.extend_from_slice(b",\"route\":");
        json_opt(out, self.route);
        out.extend_from_slice(b",\"method\":");
        json_opt(out, self.method.map(Method::as_str));
        out.extend_from_slice(b",\"outcome\":");
        json_str(out, self.outcome.as_str());
        out.extend_from_slice(b",\"reason\":");
        json_opt(out, self.reason);
        out.extend_from_slice(b",\"subject\":");
        json_opt(out, self.subject);
        out.extend_from_slice(b",\"credential_id\":");
        json_opt(out, self.credential_id);
        out.extend_from_slice(b",\"ip\":");
        json_opt(out, self.ip);
        if let Some(source) = self.cert_source {
            out.extend_from_slice(b",\"cert_source\":");
            json_str(out, source.as_str());
        }
        if let Some((operation, target)) = self.operation {
            out.extend_from_slice(b",\"actor\":");
            json_opt(out, self.credential_id);
            out.extend_from_slice(b",\"operation\":");
            json_str(out, operation);
            out.extend_from_slice(b",\"target\":");
            json_opt(out, target);
        }
        out.extend_from_slice(b"}\n");
    }
}

/// Appends `s` as a JSON string, or `null` for `None`.
pub fn json_opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// Appends `s` as a JSON string (RFC 8259 §7): quote, backslash and control characters
/// escaped.
pub fn json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Ids, names and addresses: nearly always nothing to escape, then one copy.
    if is_plain(s.as_bytes()) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    out.push(b'"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        if b >= 0x20 && b != b'"' && b != b'\\' {
            continue;
        }
        out.extend_from_slice(s.as_bytes().get(start..i).unwrap_or_default());
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0'));
                out.push(HEX.get(usize::from(b & 0xf)).copied().unwrap_or(b'0'));
            }
        }
        start = i + 1;
    }
    out.extend_from_slice(s.as_bytes().get(start..).unwrap_or_default());
    out.push(b'"');
}

/// Whether `s` holds nothing a JSON string must escape: no control character, quote or
/// backslash. Eight bytes at a time (the writer escapes several fields of every event): a
/// word has a byte below `n` (≤ 128) iff `(w - n·0x01…01) & !w & 0x80…80` is not zero, and a
/// byte equal to `c` iff `w ^ c·0x01…01` has a zero byte.
fn is_plain(s: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |w: u64| w.wrapping_sub(ONES) & !w & HIGH;
    let mut words = s.chunks_exact(8);
    for word in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(word);
        let w = u64::from_le_bytes(b);
        let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
        if control
            | zero_byte(w ^ (ONES * u64::from(b'"')))
            | zero_byte(w ^ (ONES * u64::from(b'\\')))
            != 0
        {
            return false;
        }
    }
    !words
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

impl Serialize for AuditEvent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let extra =
            if self.management.is_some() { 3 } else { 0 } + usize::from(self.cert_source.is_some());
        let mut st = s.serialize_struct("AuditEvent", 9 + extra)?;
        st.serialize_field("ts", &time::rfc3339_millis(self.ts_ms))?;
        st.serialize_field("request_id", &self.request_id)?;
        st.serialize_field("route", &self.route.as_deref())?;
        st.serialize_field("method", &self.method.map(Method::as_str))?;
        st.serialize_field("outcome", self.outcome.as_str())?;
        st.serialize_field("reason", &self.reason)?;
        st.serialize_field("subject", &self.subject.as_deref())?;
        st.serialize_field("credential_id", &self.credential_id.as_deref())?;
        st.serialize_field("ip", &self.ip)?;
        if let Some(source) = self.cert_source {
            st.serialize_field("cert_source", source.as_str())?;
        }
        if let Some(m) = &self.management {
            st.serialize_field("actor", &self.credential_id.as_deref())?;
            st.serialize_field("operation", &m.operation)?;
            st.serialize_field("target", &m.target)?;
        }
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_with_spec_field_names() {
        let e = AuditEvent {
            ts_ms: 0,
            request_id: "r1".into(),
            route: Some("/api/".into()),
            method: Some(Method::ApiKey),
            outcome: Outcome::Failure,
            reason: Some("revoked".into()),
            subject: None,
            credential_id: Some("key_1".into()),
            ip: Some("127.0.0.1".into()),
            management: None,
            cert_source: None,
        };
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"ts":"1970-01-01T00:00:00.000Z","request_id":"r1","route":"/api/",
                "method":"api_key","outcome":"failure","reason":"revoked","subject":null,
                "credential_id":"key_1","ip":"127.0.0.1"})
        );
        assert_eq!(Outcome::parse("throttled"), Some(Outcome::Throttled));
    }

    /// The word-at-a-time test agrees with the byte-wise rule for every byte value at every
    /// position of strings up to 17 bytes (two words and a remainder), whatever surrounds it.
    #[test]
    fn plain_text_is_told_from_text_to_escape_at_every_position() {
        let escapes = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
        for fill in [b'a', b' ', b'!', b'[', b']', 0x7f, 0x80, 0xc3, 0xff] {
            for len in 0..=17 {
                let plain = vec![fill; len];
                assert!(is_plain(&plain), "fill {fill:#x} len {len}");
                for pos in 0..len {
                    for b in 0..=255u8 {
                        let mut s = plain.clone();
                        s[pos] = b;
                        assert_eq!(is_plain(&s), !escapes(b), "{fill:#x} {len} {pos} {b:#x}");
                    }
                }
            }
        }
    }

    #[test]
    fn json_lines_equal_the_serde_form() {
        let odd = "q\"uo\\te\n\r\t\u{1}\u{1f} José ✓ \u{7f}";
        let events = [
            AuditEvent {
                ts_ms: 1_795_868_261_042,
                request_id: odd.into(),
                route: Some(odd.into()),
                method: Some(Method::Digest),
                outcome: Outcome::Throttled,
                reason: Some("rate_limited".into()),
                subject: Some(odd.into()),
                credential_id: None,
                ip: Some("::1".into()),
                management: None,
                cert_source: None,
            },
            AuditEvent {
                ts_ms: 0,
                request_id: String::new(),
                route: None,
                method: None,
                outcome: Outcome::Success,
                reason: None,
                subject: None,
                credential_id: None,
                ip: None,
                management: None,
                cert_source: None,
            },
        ];
        for e in &events {
            let mut line = Vec::new();
            e.write_json_line(&mut line);
            assert_eq!(line.last(), Some(&b'\n'));
            let parsed: serde_json::Value = serde_json::from_slice(&line).unwrap();
            assert_eq!(parsed, serde_json::to_value(e).unwrap());
        }
        let managed = AuditEvent {
            route: Some("admin".into()),
            credential_id: Some("key_admin".into()),
            management: Some(Management {
                operation: "key.create".into(),
                target: Some("key_new".into()),
            }),
            ..events[1].clone()
        };
        let mut line = Vec::new();
        managed.write_json_line(&mut line);
        let parsed: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(parsed, serde_json::to_value(&managed).unwrap());
        assert_eq!(
            (&parsed["actor"], &parsed["operation"], &parsed["target"]),
            (
                &serde_json::json!("key_admin"),
                &serde_json::json!("key.create"),
                &serde_json::json!("key_new")
            )
        );
        for source in CertSource::ALL {
            let mut line = Vec::new();
            AuditEventRef {
                cert_source: Some(source),
                ..events[1].borrowed()
            }
            .write_json_line(&mut line);
            let parsed: serde_json::Value = serde_json::from_slice(&line).unwrap();
            assert_eq!(parsed["cert_source"], source.as_str());
            assert_eq!(parsed["outcome"], "success");
        }
    }
}
