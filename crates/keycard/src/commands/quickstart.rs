//! `keycard quickstart`: a demo with one working credential per method.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use keycard_core::password::check_policy;
use keycard_core::{SecretString, random_base62};
use keycard_server::Settings;
use keycard_server::manage::{
    NewCertRequest, NewClientRequest, NewHmacRequest, NewKeyRequest, NewUserRequest,
};
use serde::Serialize;

use super::common::{CliError, manager};

/// The quickstart's demo user (Basic and Digest).
const DEMO_USER: &str = "alice";

#[derive(Serialize)]
struct Example {
    method: &'static str,
    description: &'static str,
    command: String,
}

#[derive(Serialize)]
struct QuickstartInfo {
    listen: String,
    tls_listen: String,
    /// The metrics listeners (`server.metrics_listen`) of the two instances.
    metrics: String,
    tls_metrics: String,
    upstream: String,
    dir: String,
    config: String,
    examples: Vec<Example>,
}

/// The demo external issuer's `iss` (quickstart writes its key and JWKS into DIR).
const DEMO_ISSUER: &str = "https://demo-issuer.keycard.test/";
/// The audience the demo route expects of external JWTs.
const DEMO_AUDIENCE: &str = "demo-api";

/// `keycard quickstart`: an echo upstream, a config in DIR, one working credential per
/// method, a ready command for each; plain HTTP on `listen` and HTTPS (for client
/// certificates) on `tls_listen`.
pub async fn run(
    listen: SocketAddr,
    tls_listen: SocketAddr,
    dir: &Path,
    as_json: bool,
) -> Result<(), CliError> {
    let other = |e: &dyn std::fmt::Display| CliError::Other(e.to_string());
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError::Other(format!("cannot create {}: {e}", dir.display())))?;
    let dir = dir
        .canonicalize()
        .map_err(|e| CliError::Other(format!("cannot read {}: {e}", dir.display())))?;
    let upstream = crate::echo::spawn(
        "127.0.0.1:0"
            .parse()
            .map_err(|_| CliError::Other("address".into()))?,
    )
    .await?;
    let issuer_key = demo_issuer(&dir)?;
    let tls = demo_pki(&dir)?;
    let config_path = dir.join("keycard.toml");
    let common = format!(
        "# Paths below resolve against this file's folder.\n\
         [store]\nurl = \"sqlite://keycard-data/keycard.db\"\n\n\
         [secrets]\nmaster_key_file = \"keycard-data/master.key\"\n\n\
         [audit]\nfile = \"keycard-data/audit.jsonl\"\n\n\
         # A demo external identity provider: quickstart made its key; `keycard jwt mint` signs with it.\n\
         [[jwt.issuers]]\nissuer = \"{DEMO_ISSUER}\"\njwks_file = \"demo-issuer/jwks.json\"\naudiences = [\"{DEMO_AUDIENCE}\"]\n\n\
         # Client certificates: the demo CA's, each bound to a subject with `keycard cert add`.\n\
         [mtls]\nclient_ca = \"tls/ca.pem\"\n\n\
         [[routes]]\nprefix = \"/api/\"\nupstream = \"http://{upstream}\"\n\n\
         [[routes]]\nprefix = \"/public/\"\nupstream = \"http://{upstream}\"\npublic = true\n",
    );
    let config = format!(
        "# Written by `keycard quickstart` (rewritten on every run: the echo upstream's port changes).\n\
         # Use it with the CLI: keycard --config {cfg} key list\n\
         [server]\nlisten = \"{listen}\"\n# Prometheus scrapes here (every reason code); never on the public port.\nmetrics_listen = \"127.0.0.1:0\"\n\n{common}",
        cfg = config_path.display(),
    );
    std::fs::write(&config_path, config)
        .map_err(|e| CliError::Other(format!("cannot write {}: {e}", config_path.display())))?;
    // The HTTPS side: the same store and routes, with a server certificate and the client CA.
    let tls_config_path = dir.join("keycard-tls.toml");
    let tls_config = format!(
        "# Written by `keycard quickstart`: the HTTPS listener of the demo (client certificates).\n\
         [server]\nlisten = \"{tls_listen}\"\nmetrics_listen = \"127.0.0.1:0\"\n\n\
         [server.tls]\ncert = \"tls/server.pem\"\nkey = \"tls/server-key.pem\"\nclient_ca = \"tls/ca.pem\"\nclient_auth = \"optional\"\n\n{common}",
    );
    std::fs::write(&tls_config_path, tls_config)
        .map_err(|e| CliError::Other(format!("cannot write {}: {e}", tls_config_path.display())))?;
    let settings = Settings::load(&config_path)?;
    let tls_settings = Settings::load(&tls_config_path)?;

    // One demo credential per method, made by the operations the CLI and admin API run.
    let m = manager(&settings).await?;
    let scopes = vec!["demo:read".to_owned()];
    let key = m
        .create_api_key(NewKeyRequest {
            subject: "demo".into(),
            scopes: scopes.clone(),
            expires_in: None,
            name: Some("quickstart".into()),
        })
        .await?
        .key;
    let password = loop {
        let p = SecretString::new(random_base62(20).map_err(|e| other(&e))?);
        if check_policy(DEMO_USER, p.expose_secret()).is_ok() {
            break p;
        }
    };
    m.ensure_user(NewUserRequest {
        name: DEMO_USER.into(),
        password: password.expose_secret().to_owned(),
        scopes: scopes.clone(),
        digest: true,
    })
    .await?;
    // A client-credentials client (a new one each run: its secret is shown only once).
    let client = m
        .create_client(NewClientRequest {
            client_id: format!("demo-{}", random_base62(6).map_err(|e| other(&e))?),
            scopes: scopes.clone(),
            ..Default::default()
        })
        .await?;
    let client_id = client.client.client_id;
    let client_secret = SecretString::new(client.client_secret.unwrap_or_default());
    // An RFC 9421 signing key (a new one each run: its secret is shown only once).
    let hmac = m
        .create_hmac_key(NewHmacRequest {
            subject: "demo".into(),
            scopes: scopes.clone(),
            ..Default::default()
        })
        .await?;
    let (hmac_key_id, hmac_secret) = (
        hmac.key_id,
        SecretString::new(hmac.secret.unwrap_or_default()),
    );
    // The client certificate made above, bound to a device subject.
    m.add_cert(NewCertRequest {
        subject: "demo-device".into(),
        cert_pem: tls.client_pem,
        scopes,
        expires_in: None,
    })
    .await?;
    m.store().close().await;

    let running = keycard_server::start(&settings).await?;
    let running_tls = keycard_server::start(&tls_settings).await?;
    let base = format!("http://{}", running.local_addr);
    let tls_base = format!("https://{}", running_tls.local_addr);
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "keycard".into());
    let d = dir.display();
    let examples = vec![
        Example {
            method: "api_key",
            description: "API key in the X-API-Key header",
            command: format!("curl -s -H 'X-API-Key: {key}' {base}/api/hello"),
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
            method: "jwt",
            description: "a JWT from the demo external issuer: keycard jwt mint signs one with its key",
            command: format!(
                "curl -s -H \"Authorization: Bearer $('{exe}' jwt mint --key '{key}' --issuer {DEMO_ISSUER} --audience {DEMO_AUDIENCE} --subject demo-user --scope demo:read)\" {base}/api/hello",
                key = issuer_key.display(),
            ),
        },
        Example {
            method: "hmac",
            description: "an HTTP Message Signature (RFC 9421): keycard sign makes the headers, curl sends them",
            command: format!(
                "printf '%s' '{}' | '{exe}' sign --key-id {hmac_key_id} --secret-stdin {base}/api/hello | curl -s -H @- {base}/api/hello",
                hmac_secret.expose_secret(),
            ),
        },
        Example {
            method: "mtls",
            description: "a client certificate (mutual TLS) on the HTTPS port",
            command: format!(
                "curl -s --cacert '{d}/tls/ca.pem' --cert '{d}/tls/client.pem' --key '{d}/tls/client-key.pem' {tls_base}/api/hello"
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
        tls_listen: running_tls.local_addr.to_string(),
        metrics: running
            .metrics_addr
            .map(|a| a.to_string())
            .unwrap_or_default(),
        tls_metrics: running_tls
            .metrics_addr
            .map(|a| a.to_string())
            .unwrap_or_default(),
        upstream: format!("http://{upstream}"),
        dir: dir.display().to_string(),
        config: config_path.display().to_string(),
        examples,
    };
    if as_json {
        // One line, so a script can read it while the server runs.
        println!("{}", serde_json::to_string(&info).map_err(|e| other(&e))?);
    } else {
        println!("keycard quickstart is serving on {base} and {tls_base}");
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
        // The same form as the commands above: the binary that runs, so the line works
        // whether or not `keycard` is on PATH (`cargo run` puts it in target/).
        println!("See who called: '{exe}' --config '{}' audit", info.config);
        println!("Metrics: curl -s http://{}/_keycard/metrics", info.metrics);
        println!("Press Ctrl-C to stop.");
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    super::common::wait_for_signal().await;
    running.shutdown().await;
    running_tls.shutdown().await;
    Ok(())
}

/// Writes the demo issuer's private key (`demo-issuer/key.pem`, 0600) and public JWKS
/// (`demo-issuer/jwks.json`), new on every run; returns the key's path.
fn demo_issuer(dir: &Path) -> Result<PathBuf, CliError> {
    use keycard_core::signing::SigningKey;
    let folder = dir.join("demo-issuer");
    std::fs::create_dir_all(&folder)
        .map_err(|e| CliError::Other(format!("cannot create {}: {e}", folder.display())))?;
    let key = SigningKey::generate(keycard_core::jwt::Alg::Es256, String::new())
        .map_err(|e| CliError::Other(e.to_string()))?;
    let kid = key.jwk_thumbprint();
    let key = key.with_kid(kid);
    let pem = key
        .to_pkcs8_pem()
        .map_err(|e| CliError::Other(e.to_string()))?;
    let key_path = folder.join("key.pem");
    write_private(&key_path, pem.expose_secret().as_bytes())?;
    let jwks = serde_json::json!({ "keys": [key.public_jwk()] });
    let jwks_path = folder.join("jwks.json");
    std::fs::write(&jwks_path, jwks.to_string())
        .map_err(|e| CliError::Other(format!("cannot write {}: {e}", jwks_path.display())))?;
    Ok(key_path)
}

/// The demo's certificates in `tls/`: a CA (also the client CA), a server certificate for
/// 127.0.0.1 and localhost, and a client certificate (CN demo-device). New on every run.
struct DemoPki {
    client_pem: String,
}

fn demo_pki(dir: &Path) -> Result<DemoPki, CliError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose, SanType,
    };
    let err = |e: rcgen::Error| CliError::Other(format!("cannot make the demo certificates: {e}"));
    let folder = dir.join("tls");
    std::fs::create_dir_all(&folder)
        .map_err(|e| CliError::Other(format!("cannot create {}: {e}", folder.display())))?;
    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "keycard quickstart demo CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).map_err(err)?;
    let issuer = Issuer::new(ca, ca_key);

    let server_key = KeyPair::generate().map_err(err)?;
    let mut server = CertificateParams::new(vec!["localhost".to_owned()]).map_err(err)?;
    server
        .subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    server
        .distinguished_name
        .push(DnType::CommonName, "keycard quickstart");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server.signed_by(&server_key, &issuer).map_err(err)?;

    let client_key = KeyPair::generate().map_err(err)?;
    let mut client = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    client
        .distinguished_name
        .push(DnType::CommonName, "demo-device");
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client.signed_by(&client_key, &issuer).map_err(err)?;

    let write = |name: &str, text: &str| {
        let p = folder.join(name);
        std::fs::write(&p, text)
            .map_err(|e| CliError::Other(format!("cannot write {}: {e}", p.display())))
    };
    write("ca.pem", &ca_cert.pem())?;
    write("server.pem", &server_cert.pem())?;
    write("client.pem", &client_cert.pem())?;
    write_private(
        &folder.join("server-key.pem"),
        server_key.serialize_pem().as_bytes(),
    )?;
    write_private(
        &folder.join("client-key.pem"),
        client_key.serialize_pem().as_bytes(),
    )?;
    Ok(DemoPki {
        client_pem: client_cert.pem(),
    })
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| CliError::Other(format!("cannot write {}: {e}", path.display())))
}
