//! `keycard serve`.

use keycard_server::Settings;

use super::common::CliError;

/// `keycard serve`: runs until Ctrl-C or SIGTERM, then drains.
pub async fn serve(settings: &Settings) -> Result<(), CliError> {
    let running = keycard_server::start(settings).await?;
    super::common::wait_for_signal().await;
    tracing::info!("shutting down: finishing requests in flight and writing the audit queue");
    running.shutdown().await;
    Ok(())
}
