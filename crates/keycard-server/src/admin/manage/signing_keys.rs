//! keycard's own signing keys, and the audit trail's query.

use keycard_store::AuditQuery;

use super::{
    AuditEventView, AuditFilter, AuditPage, MAX_AUDIT_PAGE, ManageError, Manager,
    PUBLISH_MARGIN_SECS, SigningKeyRotated, SigningKeyView, internal, rfc3339,
};
use crate::now_secs;

impl Manager {
    /// A new signing key; the previous one stops signing and stays published until the
    /// tokens it signed have expired.
    pub async fn rotate_signing_key(&self) -> Result<SigningKeyRotated, ManageError> {
        self.audited("signing_key.rotate", None, async {
            let now = now_secs();
            let before = self.store.published_signing_keys(now).await?;
            let previous = before
                .iter()
                .find(|k| k.retired_at.is_none())
                .map(|k| k.kid.clone());
            let row = crate::state::keyring::new_key_row(self.algorithm, &self.sealer, now)
                .map_err(internal)?;
            let ttl = i64::try_from(self.access_ttl.as_secs()).unwrap_or(86_400);
            let publish_until = now + ttl + PUBLISH_MARGIN_SECS;
            self.store
                .add_signing_key(&row, publish_until, false)
                .await?;
            Ok(SigningKeyRotated {
                previous_published_until: previous.as_ref().map(|_| rfc3339(publish_until)),
                previous,
                kid: row.kid,
                alg: row.alg,
            })
        })
        .await
    }

    /// The keys in the JWKS now.
    pub async fn list_signing_keys(&self) -> Result<Vec<SigningKeyView>, ManageError> {
        Ok(self
            .store
            .published_signing_keys(now_secs())
            .await?
            .into_iter()
            .map(|k| SigningKeyView {
                current: k.retired_at.is_none(),
                created_at: rfc3339(k.created_at),
                retired_at: k.retired_at.map(rfc3339),
                published_until: k.publish_until.map(rfc3339),
                kid: k.kid,
                alg: k.alg,
            })
            .collect())
    }

    /// A page of audit events, newest first.
    pub async fn audit(&self, f: AuditFilter) -> Result<AuditPage, ManageError> {
        if f.limit == 0 || f.limit > MAX_AUDIT_PAGE {
            return Err(ManageError::Invalid(format!(
                "limit: 1 to {MAX_AUDIT_PAGE}"
            )));
        }
        let rows = self
            .store
            .query_audit_ids(&AuditQuery {
                since_ms: f.since_ms,
                subject: f.subject,
                outcome: f.outcome,
                limit: i64::from(f.limit),
                before_id: f.before,
            })
            .await?;
        let full = rows.len() == f.limit as usize;
        let next_before = rows.iter().map(|(id, _)| *id).min().filter(|_| full);
        let events = rows
            .into_iter()
            .rev()
            .map(|(_, e)| AuditEventView {
                ts: keycard_core::time::rfc3339_millis(e.ts_ms),
                request_id: e.request_id,
                route: e.route.as_deref().map(str::to_owned),
                method: e.method.map(|m| m.as_str().to_owned()),
                outcome: e.outcome.as_str().to_owned(),
                reason: e.reason,
                subject: e.subject.as_deref().map(str::to_owned),
                credential_id: e.credential_id.as_deref().map(str::to_owned),
                ip: e.ip,
            })
            .collect();
        Ok(AuditPage {
            events,
            next_before,
        })
    }
}
