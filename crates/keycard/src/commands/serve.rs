//! `keycard serve` and `keycard quickstart`.

use std::net::SocketAddr;
use std::path::Path;

use keycard_core::password::check_policy;
use keycard_core::{Scopes, SecretString, api_key, new_id, random_base62};
use keycard_server::{Settings, now_secs};
use keycard_store::{NewApiKey, NewUser, Store};
use serde::Serialize;

use super::user::{hash_and_seal, new_password_id};
use super::{CliError, master, open_store};

/// The quickstart's demo user (Basic and Digest).
const DEMO_USER: &str = "alice";

/// `keycard serve`: runs until Ctrl-C or SIGTERM, then drains.
pub async fn serve(settings: &Settings) -> Result<(), CliError> {
    let running = keycard_server::start(settings).await?;
    super::wait_for_signal().await;
    tracing::info!("shutting down: finishing requests in flight and writing the audit queue");
    running.shutdown().await;
    Ok(())
}

#[derive(Serialize)]
struct Example {
    method: &'static str,
    description: &'static str,
    command: String,
}

#[derive(Serialize)]
struct QuickstartInfo {
    listen: String,
    upstream: String,
    dir: String,
    config: String,
    examples: Vec<Example>,
}

/// `keycard quickstart`: an echo upstream, a config in DIR, one working credential per
/// method built so far, and a ready command for each.
pub async fn quickstart(listen: SocketAddr, dir: &Path, as_json: bool) -> Result<(), CliError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError::Other(format!("cannot create {}: {e}", dir.display())))?;
    let upstream = crate::echo::spawn(
        "127.0.0.1:0"
            .parse()
            .map_err(|_| CliError::Other("address".into()))?,
    )
    .await?;
    let config_path = dir.join("keycard.toml");
    let config = format!(
        "# Written by `keycard quickstart` (rewritten on every run: the echo upstream's port changes).\n\
         # Use it with the CLI: keycard --config {cfg} key list\n\
         [server]\nlisten = \"{listen}\"\n\n\
         # Paths below resolve against this file's folder.\n\
         [store]\nurl = \"sqlite://keycard-data/keycard.db\"\n\n\
         [secrets]\nmaster_key_file = \"keycard-data/master.key\"\n\n\
         [audit]\nfile = \"keycard-data/audit.jsonl\"\n\n\
         [[routes]]\nprefix = \"/api/\"\nupstream = \"http://{upstream}\"\n\n\
         [[routes]]\nprefix = \"/public/\"\nupstream = \"http://{upstream}\"\npublic = true\n",
        cfg = config_path.display(),
    );
    std::fs::write(&config_path, config)
        .map_err(|e| CliError::Other(format!("cannot write {}: {e}", config_path.display())))?;
    let settings = Settings::load(&config_path)?;

    // One demo credential per method.
    let store = open_store(&settings).await?;
    let hasher = master(&settings)?.keyed_hasher();
    let key = api_key::generate().map_err(|e| CliError::Other(e.to_string()))?;
    let scopes = Scopes::from_list(["demo:read"]).map_err(|e| CliError::Other(e.to_string()))?;
    store
        .create_api_key(&NewApiKey {
            id: new_id("key").map_err(|e| CliError::Other(e.to_string()))?,
            subject: "demo".into(),
            lookup: api_key::lookup_handle(&hasher, key.expose_secret()),
            name: Some("quickstart".into()),
            scopes: scopes.as_str().to_owned(),
            created_at: now_secs(),
            expires_at: None,
        })
        .await?;
    let password = demo_user(&settings, &store, &scopes).await?;
    // A client-credentials client (a new one each run: its secret is shown only once).
    let client_id = format!(
        "demo-{}",
        random_base62(6).map_err(|e| CliError::Other(e.to_string()))?
    );
    let client_secret = SecretString::new(format!(
        "kcs_{}",
        random_base62(43).map_err(|e| CliError::Other(e.to_string()))?
    ));
    store
        .create_client(&keycard_store::ClientRow {
            client_id: client_id.clone(),
            secret_hash: Some(
                hasher
                    .hash(
                        keycard_core::HashDomain::ClientSecret,
                        client_secret.expose_secret().as_bytes(),
                    )
                    .to_vec(),
            ),
            auth_method: "client_secret_basic".into(),
            redirect_uris: Vec::new(),
            grants: vec!["client_credentials".into()],
            scopes: scopes.as_str().to_owned(),
            first_party: false,
            created_at: now_secs(),
            revoked_at: None,
            tls_subject_dn: None,
            cert_fingerprint: None,
        })
        .await?;
    // An RFC 9421 signing key (a new one each run: its secret is shown only once).
    let (hmac_key_id, hmac_secret) = demo_hmac_key(&settings, &store, &scopes).await?;
    store.close().await;

    let running = keycard_server::start(&settings).await?;
    let base = format!("http://{}", running.local_addr);
    let examples = vec![
        Example {
            method: "api_key",
            description: "API key in the X-API-Key header",
            command: format!(
                "curl -s -H 'X-API-Key: {}' {base}/api/hello",
                key.expose_secret()
            ),
        },
        Example {
            method: "basic",
            description: "HTTP Basic with the demo user's password",
            command: format!(
                "curl -s -u '{DEMO_USER}:{}' {base}/api/hello",
                password.expose_secret()
            ),
        },
        Example {
            method: "digest",
            description: "HTTP Digest (SHA-256; curl answers the challenge)",
            command: format!(
                "curl -s --digest -u '{DEMO_USER}:{}' {base}/api/hello",
                password.expose_secret()
            ),
        },
        Example {
            method: "oauth2",
            description: "OAuth 2.0 client credentials: a token from /oauth2/token, then the API",
            command: format!(
                "curl -s -H \"Authorization: Bearer $(curl -s -u '{client_id}:{}' -d grant_type=client_credentials {base}/oauth2/token | sed -E 's/.*\"access_token\":\"([^\"]+)\".*/\\1/')\" {base}/api/hello",
                client_secret.expose_secret()
            ),
        },
        Example {
            method: "hmac",
            description: "an HTTP Message Signature (RFC 9421): keycard sign makes the headers, curl sends them",
            command: format!(
                "printf '%s' '{}' | '{}' sign --key-id {hmac_key_id} --secret-stdin {base}/api/hello | curl -s -H @- {base}/api/hello",
                hmac_secret.expose_secret(),
                std::env::current_exe()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| "keycard".into()),
            ),
        },
        Example {
            method: "none",
            description: "a public route: no credential needed",
            command: format!("curl -s {base}/public/hello"),
        },
    ];
    let info = QuickstartInfo {
        listen: running.local_addr.to_string(),
        upstream: format!("http://{upstream}"),
        dir: dir.display().to_string(),
        config: config_path.display().to_string(),
        examples,
    };
    if as_json {
        // One line, so a script can read it while the server runs.
        println!(
            "{}",
            serde_json::to_string(&info).map_err(|e| CliError::Other(e.to_string()))?
        );
    } else {
        println!("keycard quickstart is serving on {base}");
        println!(
            "  upstream: built-in echo server at {} (answers with the request it received, as JSON)",
            info.upstream
        );
        println!("  data and config: {}", info.dir);
        println!();
        for e in &info.examples {
            println!("# {} ({})", e.description, e.method);
            println!("{}", e.command);
            println!();
        }
        println!("Try the same request without the key, or with a changed key: 401.");
        println!("See who called: keycard --config {} audit", info.config);
        println!("Press Ctrl-C to stop.");
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    super::wait_for_signal().await;
    running.shutdown().await;
    Ok(())
}

/// A fresh HMAC signing key for the demo subject: (key_id, secret as standard base64).
async fn demo_hmac_key(
    settings: &Settings,
    store: &Store,
    scopes: &Scopes,
) -> Result<(String, SecretString), CliError> {
    use base64::Engine;
    let master = master(settings)?;
    let mut raw = vec![0u8; 32];
    aws_lc_rs::rand::fill(&mut raw)
        .map_err(|_| CliError::Other("the random number generator failed".into()))?;
    let secret = keycard_core::SecretBytes::new(raw);
    let other = |e: keycard_core::MasterKeyError| CliError::Other(e.to_string());
    let key_id = new_id("hk").map_err(other)?;
    let sealed =
        keycard_core::httpsig::seal_secret(&master.sealer(), &key_id, secret.expose_secret())
            .map_err(|e| CliError::Other(e.to_string()))?;
    store
        .create_hmac_key(&keycard_store::NewHmacKey {
            id: new_id("hmac").map_err(other)?,
            key_id: key_id.clone(),
            subject: "demo".into(),
            lookup: master
                .keyed_hasher()
                .hash(keycard_core::HashDomain::HmacKeyId, key_id.as_bytes()),
            sealed,
            alg: None,
            scopes: scopes.as_str().to_owned(),
            created_at: now_secs(),
            expires_at: None,
        })
        .await?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(secret.expose_secret());
    Ok((key_id, SecretString::new(b64)))
}

/// Creates the demo user with a fresh random password (or gives it one when a previous run
/// made it), with Digest enabled.
async fn demo_user(
    settings: &Settings,
    store: &Store,
    scopes: &Scopes,
) -> Result<SecretString, CliError> {
    let password = loop {
        let p = SecretString::new(random_base62(20).map_err(|e| CliError::Other(e.to_string()))?);
        if check_policy(DEMO_USER, p.expose_secret()).is_ok() {
            break p;
        }
    };
    let (hash, sealed) = hash_and_seal(settings, DEMO_USER, &password, true).await?;
    let id = new_password_id()?;
    if store.find_user(DEMO_USER).await?.is_some() {
        store
            .set_password(DEMO_USER, &id, &hash, sealed.as_deref(), now_secs())
            .await?;
    } else {
        store
            .create_user(&NewUser {
                name: DEMO_USER.into(),
                password_id: id,
                password_hash: hash,
                digest_sealed: sealed,
                scopes: scopes.as_str().to_owned(),
                created_at: now_secs(),
            })
            .await?;
    }
    Ok(password)
}
