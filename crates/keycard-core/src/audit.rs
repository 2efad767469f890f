//! Audit events (SPEC §7): one per authentication attempt. Never a secret in here: the
//! fields are ids, names and short reason codes.

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

/// One audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// When, in Unix milliseconds (serialised as RFC 3339 `ts`).
    pub ts_ms: i64,
    /// The request id (also sent upstream as `X-Request-Id`).
    pub request_id: String,
    /// The matched route's prefix.
    pub route: Option<String>,
    /// The method of the presented credential; `None` when none was recognised.
    pub method: Option<Method>,
    /// How it ended.
    pub outcome: Outcome,
    /// Why it was refused (`None` on success).
    pub reason: Option<String>,
    /// The subject, when known.
    pub subject: Option<String>,
    /// The credential id, when known.
    pub credential_id: Option<String>,
    /// The client address.
    pub ip: Option<String>,
}

impl Serialize for AuditEvent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("AuditEvent", 9)?;
        st.serialize_field("ts", &time::rfc3339_millis(self.ts_ms))?;
        st.serialize_field("request_id", &self.request_id)?;
        st.serialize_field("route", &self.route)?;
        st.serialize_field("method", &self.method.map(Method::as_str))?;
        st.serialize_field("outcome", self.outcome.as_str())?;
        st.serialize_field("reason", &self.reason)?;
        st.serialize_field("subject", &self.subject)?;
        st.serialize_field("credential_id", &self.credential_id)?;
        st.serialize_field("ip", &self.ip)?;
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
}
