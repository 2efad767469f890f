//! What an operator does to the store — create, list, rotate and revoke credentials, users,
//! clients, certificates and signing keys, read the audit trail — in one place, used by the
//! CLI (`keycard key create` …) and the admin API (`/_keycard/admin/v1/`) alike. Inputs are
//! checked here; secrets are made here and returned once, in the `…Created` answers.

mod checks;
mod clients;
mod error;
mod keys;
mod signing_keys;
mod users;
mod views;

pub use checks::{
    MAX_REDIRECT_URIS, MAX_SCOPE_LEN, MAX_SCOPES, check_client_id, check_redirect_uri,
    check_subject, check_user_name, lifetime, read_cert_pem,
};
use checks::{expiry, scopes};
pub use error::ManageError;
use error::internal;
pub use views::{
    AuditEventView, AuditFilter, AuditPage, CertView, ClientCreated, ClientView, GrantView,
    HmacCreated, HmacView, KeyCreated, KeyView, Lifecycle, NewCertRequest, NewClientRequest,
    NewHmacRequest, NewKeyRequest, NewUserRequest, SignedOut, SigningKeyRotated, SigningKeyView,
    SubjectView, Targeted, TotpEnrolled, UserView, client_view, credential_status,
};
use views::{cert_view, hmac_view, key_created, key_view, rfc3339, subject_view, user_view};

use std::time::Duration;

use keycard_core::{KeyedHasher, MasterKey, Sealer};
use keycard_store::Store;

use crate::config::Settings;

/// Grant types keycard issues.
pub const GRANTS: [&str; 3] = ["authorization_code", "refresh_token", "client_credentials"];
/// Bytes of a new HMAC secret.
const HMAC_SECRET_LEN: usize = 32;
/// How long a retired signing key stays published beyond the access-token TTL.
const PUBLISH_MARGIN_SECS: i64 = 60;
/// The most audit events one page holds.
pub const MAX_AUDIT_PAGE: u32 = 1000;

/// The operations, over one store and the master key's derived keys.
#[derive(Debug, Clone)]
pub struct Manager {
    /// Where each operation that changes something is audited, and on whose behalf.
    journal: Option<(std::sync::Arc<dyn Journal>, std::sync::Arc<Actor>)>,
    store: Store,
    hasher: KeyedHasher,
    sealer: std::sync::Arc<Sealer>,
    realm: String,
    algorithm: keycard_core::jwt::Alg,
    access_ttl: Duration,
}

// ---------------------------------------------------------------------------------------
// The management audit trail.

/// Where management events go: the server's audit writer, or the CLI's own (file and store).
pub trait Journal: Send + Sync + std::fmt::Debug {
    /// Records one management event (route `admin` or `cli`, with its operation).
    fn record(&self, event: &crate::audit::Record<'_>);
}

impl Journal for crate::audit::AuditSink {
    fn record(&self, event: &crate::audit::Record<'_>) {
        crate::audit::AuditSink::record(self, event);
    }
}

/// On whose behalf operations run: the admin API's caller, or the command line.
#[derive(Debug, Clone)]
pub struct Actor {
    /// `admin` or `cli`: the audit event's `route`.
    pub route: &'static str,
    /// The request's id (the admin API's), or one made for a CLI run.
    pub request_id: String,
    /// How the caller authenticated (`None` for the CLI).
    pub method: Option<keycard_core::Method>,
    /// The caller's subject (`None` for the CLI).
    pub subject: Option<String>,
    /// The caller's credential id, or `cli`: the event's `actor`.
    pub credential_id: String,
    /// The caller's address (`None` for the CLI).
    pub ip: Option<std::net::IpAddr>,
}

impl Actor {
    /// The command line.
    pub fn cli() -> Self {
        Actor {
            route: "cli",
            request_id: format!(
                "cli-{}",
                keycard_core::random_base62(10).unwrap_or_else(|_| "run".into())
            ),
            method: None,
            subject: None,
            credential_id: "cli".into(),
            ip: None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// What callers send.

// ---------------------------------------------------------------------------------------
// What they get back.

// ---------------------------------------------------------------------------------------

impl Manager {
    /// Operations on `store` with the keys derived from `master`.
    pub fn new(store: Store, master: &MasterKey, settings: &Settings) -> Self {
        Self {
            journal: None,
            store,
            hasher: master.keyed_hasher(),
            sealer: std::sync::Arc::new(master.sealer()),
            realm: settings.digest.realm.clone(),
            algorithm: settings.tokens.algorithm,
            access_ttl: settings.tokens.access_token_ttl,
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The same operations, each one that changes something audited to `journal` as done by
    /// `actor` — its outcome, and on failure why.
    pub fn journalled(&self, journal: std::sync::Arc<dyn Journal>, actor: Actor) -> Self {
        Self {
            journal: Some((journal, std::sync::Arc::new(actor))),
            ..self.clone()
        }
    }

    /// Records `operation` on `target` as refused before it ran (such as one that would lock
    /// its caller out) with `error`, and hands the error back.
    pub async fn refused(&self, operation: &str, target: &str, error: ManageError) -> ManageError {
        let refused = self
            .audited(operation, Some(target), async { Err::<(), _>(error) })
            .await;
        match refused {
            Err(e) => e,
            Ok(()) => internal("a refusal went through"),
        }
    }

    /// Runs `op` and records its management event: `target` (the input's id) or the one
    /// its answer names.
    async fn audited<T: Targeted>(
        &self,
        operation: &str,
        target: Option<&str>,
        op: impl std::future::Future<Output = Result<T, ManageError>>,
    ) -> Result<T, ManageError> {
        let result = op.await;
        if let Some((journal, actor)) = &self.journal {
            let (outcome, reason, named) = match &result {
                Ok(v) => (keycard_core::Outcome::Success, None, v.target()),
                Err(e) => (keycard_core::Outcome::Failure, Some(e.code()), None),
            };
            journal.record(&crate::audit::Record {
                ts_ms: crate::clock::now_millis(),
                request_id: &actor.request_id,
                route: Some(actor.route),
                method: actor.method,
                outcome,
                reason,
                subject: actor.subject.as_deref(),
                credential_id: Some(&actor.credential_id),
                ip: actor.ip,
                cert_source: None,
                operation: Some((operation, target.or(named))),
            });
        }
        result
    }

    // --- API keys ---

    // --- RFC 9421 keys ---

    // --- users and subjects ---

    // --- OAuth clients ---

    // --- certificates ---

    // --- signing keys ---

    // --- audit ---
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_look_like_others_are_refused() {
        for bad in [
            "",
            "admin\u{202E}nimda",
            "ad\u{200B}min",
            "ad\u{200D}min",
            "\u{FEFF}admin",
            "admin\u{2066}",
            "a\u{00AD}dmin",
            "a\nb",
            "a\u{7F}",
            "a\u{2028}b",
            "tag\u{E0041}",
        ] {
            assert!(check_subject("s", bad).is_err(), "{}", bad.escape_debug());
        }
        for good in ["alice", "José", "spiffe://example.org/ns/a", "名前", "a b"] {
            assert!(check_subject("s", good).is_ok(), "{good}");
        }
        assert!(check_subject("s", &"x".repeat(200)).is_ok());
        assert!(check_subject("s", &"x".repeat(201)).is_err());
    }

    #[test]
    fn scope_lists_are_bounded() {
        let n = |count: usize, len: usize| -> Vec<String> {
            (0..count).map(|i| format!("{i:0>len$}")).collect()
        };
        assert!(scopes(&n(64, 128)).is_ok());
        assert!(scopes(&n(65, 4)).is_err());
        assert!(scopes(&n(1, 129)).is_err());
    }

    #[test]
    fn created_answers_never_show_their_secret_in_debug() {
        let life = Lifecycle::of(0, None, None, false, 0);
        let k = KeyCreated {
            id: "key_1".into(),
            key: "kc_SECRETSECRET".into(),
            subject: "s".into(),
            scopes: vec![],
            expires_at: None,
            name: None,
            old_valid_until: None,
        };
        let h = HmacCreated {
            id: "hmac_1".into(),
            key_id: "hk_1".into(),
            secret: Some("SECRETSECRET".into()),
            alg: "hmac-sha256".into(),
            subject: "s".into(),
            scopes: vec![],
            expires_at: None,
        };
        let t = TotpEnrolled {
            name: "u".into(),
            secret: "SECRETSECRET".into(),
            uri: "otpauth://totp/keycard:u?secret=SECRETSECRET".into(),
        };
        let c = ClientCreated {
            client: ClientView {
                client_id: "c".into(),
                public: false,
                auth: "client_secret_basic".into(),
                redirect_uris: vec![],
                grants: vec![],
                scopes: vec![],
                first_party: false,
                tls_subject_dn: None,
                cert_fingerprint: None,
                status: life.status,
                created_at: life.created_at.clone(),
                revoked_at: None,
            },
            client_secret: Some("kcs_SECRETSECRET".into()),
        };
        for text in [
            format!("{k:?}"),
            format!("{h:?}"),
            format!("{t:?}"),
            format!("{c:?}"),
        ] {
            assert!(!text.contains("SECRETSECRET"), "{text}");
        }
        // The JSON answer does carry it: that is where it is shown, once.
        assert!(
            serde_json::to_string(&k)
                .unwrap()
                .contains("kc_SECRETSECRET")
        );
    }
}
