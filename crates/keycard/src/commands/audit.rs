//! `keycard audit`.

use keycard_core::Outcome;
use keycard_server::{Settings, now_millis};
use keycard_store::AuditQuery;

use super::common::{CliError, duration_flag, open_store};
use crate::cli::AuditArgs;
use crate::output::json;

pub async fn run(settings: &Settings, args: AuditArgs, as_json: bool) -> Result<(), CliError> {
    let since_ms = match &args.since {
        Some(d) => Some(now_millis() - duration_flag("--since", d)? * 1000),
        None => None,
    };
    let outcome = args.outcome.as_deref().and_then(Outcome::parse);
    let store = open_store(settings).await?;
    let events = store
        .query_audit(&AuditQuery {
            since_ms,
            subject: args.subject,
            outcome,
            limit: i64::from(args.limit),
            before_id: None,
        })
        .await?;
    if as_json {
        return json(&events);
    }
    if events.is_empty() {
        println!("No audit events match.");
        return Ok(());
    }
    for e in &events {
        println!(
            "{}  {:<9} {:<8} {:<12} subject={} credential={} reason={} ip={} request={}",
            keycard_core::time::rfc3339_millis(e.ts_ms),
            e.outcome.as_str(),
            e.method.map(|m| m.as_str()).unwrap_or("-"),
            e.route.as_deref().unwrap_or("-"),
            e.subject.as_deref().unwrap_or("-"),
            e.credential_id.as_deref().unwrap_or("-"),
            e.reason.as_deref().unwrap_or("-"),
            e.ip.as_deref().unwrap_or("-"),
            e.request_id,
        );
    }
    Ok(())
}
