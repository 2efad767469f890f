//! Printing results: JSON with `--json`, plain text otherwise.

use serde::Serialize;

/// Prints `value` as one JSON document.
pub fn json<T: Serialize>(value: &T) -> Result<(), crate::commands::common::CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| crate::commands::common::CliError::Other(e.to_string()))?;
    println!("{text}");
    Ok(())
}
