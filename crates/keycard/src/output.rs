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
