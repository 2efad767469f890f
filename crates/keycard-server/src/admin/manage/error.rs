//! Why a management operation was refused, as the CLI and the admin API report it.

use keycard_store::StoreError;

/// Why an operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    /// The input is wrong (names the field).
    #[error("{0}")]
    Invalid(String),
    /// No such record.
    #[error("{0}")]
    NotFound(String),
    /// The record exists already, or is in a state the operation does not apply to.
    #[error("{0}")]
    Conflict(String),
    /// The store cannot be reached.
    #[error("the store is unavailable: {0}")]
    Unavailable(#[source] StoreError),
    /// Anything else (the random generator, sealing).
    #[error("{0}")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<StoreError> for ManageError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { .. } => ManageError::NotFound(e.to_string()),
            StoreError::Conflict(m) => ManageError::Conflict(m),
            e if e.is_unique_violation() => ManageError::Conflict("it exists already".into()),
            e if e.is_unavailable() => ManageError::Unavailable(e),
            e => ManageError::Internal(e.into()),
        }
    }
}

pub(super) fn internal(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> ManageError {
    ManageError::Internal(e.into())
}

impl ManageError {
    /// The audit `reason` of a failed operation.
    pub fn code(&self) -> &'static str {
        match self {
            ManageError::Invalid(_) => "invalid",
            ManageError::NotFound(_) => "not_found",
            ManageError::Conflict(_) => "conflict",
            ManageError::Unavailable(_) => "unavailable",
            ManageError::Internal(_) => "internal",
        }
    }
}
