//! The verified identity a request carries once a verifier has accepted it.

use std::sync::Arc;

use crate::{Method, Scopes};

/// Who a request proved to be. Only this crate's verifiers construct one, so code that
/// forwards a request must hold the result of a successful verification: a skipped check
/// does not compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    subject: Arc<str>,
    method: Method,
    scopes: Scopes,
    credential_id: Arc<str>,
}

impl Principal {
    /// The subject, shared (a reference-count bump, no copy).
    pub fn subject_arc(&self) -> Arc<str> {
        self.subject.clone()
    }

    /// The credential id, shared.
    pub fn credential_id_arc(&self) -> Arc<str> {
        self.credential_id.clone()
    }

    pub(crate) fn new(
        subject: Arc<str>,
        method: Method,
        scopes: Scopes,
        credential_id: Arc<str>,
    ) -> Self {
        Self {
            subject,
            method,
            scopes,
            credential_id,
        }
    }

    /// The subject name (`X-Keycard-Subject`).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// How it authenticated (`X-Keycard-Method`).
    pub fn method(&self) -> Method {
        self.method
    }

    /// The scopes it holds (`X-Keycard-Scopes`).
    pub fn scopes(&self) -> &Scopes {
        &self.scopes
    }

    /// The credential's id (`X-Keycard-Credential`).
    pub fn credential_id(&self) -> &str {
        &self.credential_id
    }
}
