//! `keycard-embedded-example [--config keycard.toml] [--listen 127.0.0.1:3000]`: the example
//! service, verifying callers in-process with the config's store (the same one
//! `keycard key create` writes to).

use std::net::SocketAddr;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = std::path::PathBuf::from("keycard.toml");
    let mut listen: SocketAddr = "127.0.0.1:3000".parse()?;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" => config = args.next().ok_or("--config FILE")?.into(),
            "--listen" => listen = args.next().ok_or("--listen ADDR")?.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let settings = keycard_server::Settings::load(&config)?;
    let keycard = keycard_server::layer::Embedded::start(&settings).await?;
    let app = keycard_embedded_example::app(&keycard)?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    keycard.shutdown().await;
    Ok(())
}
