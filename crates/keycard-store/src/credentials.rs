//! What the three kinds of stored credential — API keys, RFC 9421 signing keys, certificate
//! bindings — share in the `credentials` table: the kind column, and revocation.

use crate::changes::{ChangeKind, hex, record_changes};
use crate::{BeginWrite, Store, StoreError, with_pool};

/// A kind of row in the `credentials` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialKind {
    /// `keycard key create`.
    ApiKey,
    /// `keycard hmac create`: found by its id or its `keyid`.
    Hmac,
    /// `keycard cert add`.
    Cert,
}

impl CredentialKind {
    /// The value of the `kind` column.
    fn column(self) -> &'static str {
        match self {
            CredentialKind::ApiKey => "api_key",
            CredentialKind::Hmac => "hmac",
            CredentialKind::Cert => "cert",
        }
    }

    /// What an operator calls it.
    fn label(self) -> &'static str {
        match self {
            CredentialKind::ApiKey => "API key",
            CredentialKind::Hmac => "HMAC key",
            CredentialKind::Cert => "certificate binding",
        }
    }

    /// Whether it is also named by its `key_id` (an HMAC key by the `keyid` its signatures
    /// carry).
    fn named_by_key_id(self) -> bool {
        self == CredentialKind::Hmac
    }
}

impl Store {
    /// Revokes the credential of `kind` named `id` now, and tells every instance through the
    /// change feed. Errors if there is none, or it is already revoked.
    pub async fn revoke_credential(
        &self,
        kind: CredentialKind,
        id: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let lookup: Option<Vec<u8>> = sqlx::query_scalar(
                "UPDATE credentials SET revoked_at = $2 \
                 WHERE (id = $1 OR ($4 AND key_id = $1)) AND kind = $3 AND revoked_at IS NULL \
                 RETURNING lookup",
            )
            .bind(id)
            .bind(now)
            .bind(kind.column())
            .bind(kind.named_by_key_id())
            .fetch_optional(&mut *tx)
            .await?;
            let Some(lookup) = lookup else {
                drop(tx);
                // Tell "unknown" from "already revoked" for the operator.
                let known: Option<String> = sqlx::query_scalar(
                    "SELECT id FROM credentials WHERE (id = $1 OR ($3 AND key_id = $1)) AND kind = $2",
                )
                .bind(id)
                .bind(kind.column())
                .bind(kind.named_by_key_id())
                .fetch_optional(p)
                .await?;
                return Err(match known {
                    None => StoreError::NotFound { kind: kind.label(), id: id.to_owned() },
                    Some(_) => StoreError::Conflict(format!("{} `{id}` is already revoked", kind.label())),
                });
            };
            record_changes!(tx, now, [(ChangeKind::Credential, hex(&lookup))]);
            tx.commit().await?;
            Ok(())
        })
    }
}
