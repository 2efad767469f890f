//! keycard's own signing keys: made on first start for `tokens.algorithm`, stored sealed,
//! and published at `/.well-known/jwks.json` (current key and retired keys whose tokens may
//! still be valid).

use std::sync::RwLock;

use bytes::Bytes;
use keycard_core::jwt::Alg;
use keycard_core::signing::SigningKey;
use keycard_core::{Sealer, new_id};
use keycard_store::{SigningKeyRow, Store, StoreError};

use crate::clock::{now_millis, now_secs};
use crate::config::TokenSettings;

/// How long the published document is served before it is re-read from the store.
const REFRESH_MS: i64 = 2_000;

fn context(kid: &str) -> Vec<u8> {
    let mut c = b"signing-key\0".to_vec();
    c.extend_from_slice(kid.as_bytes());
    c
}

/// Why a signing key could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum OwnKeyError {
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Generating, sealing or opening.
    #[error("signing key: {0}")]
    Key(String),
}

/// A fresh sealed key for `alg`, ready to store.
pub fn new_key_row(alg: Alg, sealer: &Sealer, now: i64) -> Result<SigningKeyRow, OwnKeyError> {
    let kid = new_id("sk").map_err(|e| OwnKeyError::Key(e.to_string()))?;
    let key =
        SigningKey::generate(alg, kid.clone()).map_err(|e| OwnKeyError::Key(e.to_string()))?;
    let der = key
        .to_pkcs8()
        .map_err(|e| OwnKeyError::Key(e.to_string()))?;
    let sealed = sealer
        .seal(&context(&kid), der.expose_secret())
        .map_err(|e| OwnKeyError::Key(e.to_string()))?;
    Ok(SigningKeyRow {
        kid,
        alg: alg.as_str().to_owned(),
        sealed,
        created_at: now,
        retired_at: None,
        publish_until: None,
    })
}

/// Opens a stored key.
pub fn open_key(row: &SigningKeyRow, sealer: &Sealer) -> Result<SigningKey, OwnKeyError> {
    let alg =
        Alg::parse(&row.alg).ok_or_else(|| OwnKeyError::Key(format!("unknown alg {}", row.alg)))?;
    let der = sealer
        .open(&context(&row.kid), &row.sealed)
        .map_err(|e| OwnKeyError::Key(format!("{}: {e}", row.kid)))?;
    SigningKey::from_pkcs8(alg, row.kid.clone(), der.expose_secret())
        .map_err(|e| OwnKeyError::Key(e.to_string()))
}

/// Makes the first key when the store has none (several instances starting at once make
/// one between them).
pub async fn ensure_key(
    store: &Store,
    sealer: &Sealer,
    tokens: &TokenSettings,
) -> Result<(), OwnKeyError> {
    if store
        .published_signing_keys(now_secs())
        .await?
        .iter()
        .any(|k| k.retired_at.is_none())
    {
        return Ok(());
    }
    let row = new_key_row(tokens.algorithm, sealer, now_secs())?;
    if store.add_signing_key(&row, 0, true).await? {
        tracing::info!(kid = %row.kid, alg = %row.alg, "signing key created");
    }
    Ok(())
}

/// The JWKS document, re-read from the store at most every [`REFRESH_MS`].
#[derive(Debug)]
pub struct Published {
    doc: RwLock<(i64, Bytes)>,
    sealer: Sealer,
}

impl Published {
    /// Starts empty; the first request reads the store.
    pub fn new(sealer: Sealer) -> Self {
        Self {
            doc: RwLock::new((i64::MIN, Bytes::new())),
            sealer,
        }
    }

    /// The current document, if it is fresh.
    pub fn cached(&self) -> Option<Bytes> {
        let d = self.doc.read().ok()?;
        (now_millis().saturating_sub(d.0) < REFRESH_MS).then(|| d.1.clone())
    }

    /// Builds the document from `rows` and keeps it.
    pub fn rebuild(&self, rows: &[SigningKeyRow]) -> Bytes {
        let keys: Vec<serde_json::Value> = rows
            .iter()
            .filter_map(|r| match open_key(r, &self.sealer) {
                Ok(k) => Some(k.public_jwk()),
                Err(e) => {
                    tracing::error!(error = %e, "a stored signing key cannot be opened; not published");
                    None
                }
            })
            .collect();
        let doc = Bytes::from(serde_json::json!({ "keys": keys }).to_string());
        if let Ok(mut d) = self.doc.write() {
            *d = (now_millis(), doc.clone());
        }
        doc
    }
}
