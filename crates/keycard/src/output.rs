//! Printing results: JSON with `--json`, plain text otherwise.

use serde::Serialize;

/// Prints `value` as one JSON document.
pub fn json<T: Serialize>(value: &T) -> Result<(), crate::commands::CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| crate::commands::CliError::Other(e.to_string()))?;
    println!("{text}");
    Ok(())
}

/// RFC 3339, or `never`/`-` for none.
pub fn time_or(t: Option<i64>, none: &str) -> String {
    t.map(keycard_core::time::rfc3339)
        .unwrap_or_else(|| none.to_owned())
}

/// A credential's status for `list`: `revoked`, `expired`, `disabled` (its subject) or
/// `active`, in that order of precedence.
pub fn credential_status(
    revoked_at: Option<i64>,
    expires_at: Option<i64>,
    subject_disabled: bool,
    now: i64,
) -> &'static str {
    if revoked_at.is_some() {
        "revoked"
    } else if expires_at.is_some_and(|e| e <= now) {
        "expired"
    } else if subject_disabled {
        "disabled"
    } else {
        "active"
    }
}
