//! keycard's own signing keys: made on first start for `tokens.algorithm`, stored sealed,
//! and published at `/.well-known/jwks.json` (current key and retired keys whose tokens may
//! still be valid).

use std::sync::{Arc, RwLock};

use bytes::Bytes;
use keycard_core::jwt::{Alg, KeySet};
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

/// Whether `sealer` opens the signing key `row` (that is, holds the master key it was sealed
/// under).
pub(crate) fn opens(sealer: &Sealer, row: &SigningKeyRow) -> bool {
    sealer.open(&context(&row.kid), &row.sealed).is_ok()
}

/// Why a signing key could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum OwnKeyError {
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No randomness for a new key's id.
    #[error("signing key: {0}")]
    Random(#[source] keycard_core::MasterKeyError),
    /// The key could not be made, encoded or decoded.
    #[error("signing key: {0}")]
    Key(#[source] keycard_core::signing::SigningError),
    /// The sealed key could not be sealed or opened (another master key?).
    #[error("signing key {kid}: {source}")]
    Sealed {
        /// The key's id.
        kid: String,
        /// Why.
        source: keycard_core::SealError,
    },
    /// The stored algorithm is not one keycard signs with.
    #[error("signing key {kid}: unknown alg {alg}")]
    UnknownAlg {
        /// The key's id.
        kid: String,
        /// What the store holds.
        alg: String,
    },
}

/// A fresh sealed key for `alg`, ready to store.
pub(crate) fn new_key_row(
    alg: Alg,
    sealer: &Sealer,
    now: i64,
) -> Result<SigningKeyRow, OwnKeyError> {
    let kid = new_id("sk").map_err(OwnKeyError::Random)?;
    let key = SigningKey::generate(alg, kid.clone()).map_err(OwnKeyError::Key)?;
    let der = key.to_pkcs8().map_err(OwnKeyError::Key)?;
    let sealed = sealer
        .seal(&context(&kid), der.expose_secret())
        .map_err(|source| OwnKeyError::Sealed {
            kid: kid.clone(),
            source,
        })?;
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
    let alg = Alg::parse(&row.alg).ok_or_else(|| OwnKeyError::UnknownAlg {
        kid: row.kid.clone(),
        alg: row.alg.clone(),
    })?;
    let der = sealer
        .open(&context(&row.kid), &row.sealed)
        .map_err(|source| OwnKeyError::Sealed {
            kid: row.kid.clone(),
            source,
        })?;
    SigningKey::from_pkcs8(alg, row.kid.clone(), der.expose_secret()).map_err(OwnKeyError::Key)
}

/// Makes the first key when the store has none (several instances starting at once make
/// one between them).
pub(crate) async fn ensure_key(
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

/// What keycard's signing keys are right now: the JWKS document, the same keys for
/// verifying its own tokens, and the key that signs new ones.
#[derive(Debug)]
pub(crate) struct KeyState {
    /// `/.well-known/jwks.json`.
    pub doc: Bytes,
    /// The published keys, to verify keycard's own tokens.
    pub keys: KeySet,
    /// The current (newest unretired) key.
    pub signer: Option<Arc<SigningKey>>,
    loaded_ms: i64,
}

/// The signing keys, re-read from the store at most every `REFRESH_MS` (a rotation by
/// the CLI or another instance shows within that).
#[derive(Debug)]
pub(crate) struct Keyring {
    state: RwLock<Arc<KeyState>>,
    sealer: Sealer,
}

impl Keyring {
    /// Starts empty; [`Keyring::rebuild`] fills it.
    pub(crate) fn new(sealer: Sealer) -> Self {
        Self {
            state: RwLock::new(Arc::new(KeyState {
                doc: Bytes::from_static(br#"{"keys":[]}"#),
                keys: KeySet::default(),
                signer: None,
                loaded_ms: i64::MIN,
            })),
            sealer,
        }
    }

    /// The keys as last read.
    pub(crate) fn current(&self) -> Arc<KeyState> {
        match self.state.read() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Whether the keys were read within `REFRESH_MS`.
    pub(crate) fn is_fresh(&self) -> bool {
        now_millis().saturating_sub(self.current().loaded_ms) < REFRESH_MS
    }

    /// Rebuilds from the stored `rows` and keeps the result.
    pub(crate) fn rebuild(&self, rows: &[SigningKeyRow]) -> Arc<KeyState> {
        let mut jwks = Vec::with_capacity(rows.len());
        let mut signer: Option<(i64, SigningKey)> = None;
        for r in rows {
            match open_key(r, &self.sealer) {
                Ok(k) => {
                    jwks.push(k.public_jwk());
                    if r.retired_at.is_none()
                        && signer.as_ref().is_none_or(|(at, _)| r.created_at >= *at)
                    {
                        signer = Some((r.created_at, k));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "a stored signing key cannot be opened; not published");
                }
            }
        }
        let text = serde_json::json!({ "keys": jwks }).to_string();
        let keys = KeySet::from_json(&text).unwrap_or_default();
        let state = Arc::new(KeyState {
            doc: Bytes::from(text),
            keys,
            signer: signer.map(|(_, k)| Arc::new(k)),
            loaded_ms: now_millis(),
        });
        if let Ok(mut s) = self.state.write() {
            *s = state.clone();
        }
        state
    }
}
