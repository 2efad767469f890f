//! `keycard client create|list|revoke`.

use keycard_core::{HashDomain, Scopes};
use keycard_server::{Settings, now_secs};
use keycard_store::ClientRow;
use serde::Serialize;

use super::{CliError, master, open_store};
use crate::cli::ClientCommand;
use crate::output::json;

const GRANTS: [&str; 3] = ["authorization_code", "refresh_token", "client_credentials"];

#[derive(Serialize)]
struct Shown {
    client_id: String,
    public: bool,
    auth: String,
    redirect_uris: Vec<String>,
    grants: Vec<String>,
    scopes: Vec<String>,
    first_party: bool,
    tls_subject_dn: Option<String>,
    cert_fingerprint: Option<String>,
    status: &'static str,
    created_at: String,
    revoked_at: Option<String>,
}

fn shown(c: ClientRow) -> Shown {
    Shown {
        public: c.auth_method == "none",
        auth: c.auth_method,
        tls_subject_dn: c.tls_subject_dn,
        cert_fingerprint: c.cert_fingerprint,
        redirect_uris: c.redirect_uris,
        grants: c.grants,
        scopes: c.scopes.split_whitespace().map(str::to_owned).collect(),
        first_party: c.first_party,
        status: if c.revoked_at.is_some() {
            "revoked"
        } else {
            "active"
        },
        created_at: keycard_core::time::rfc3339(c.created_at),
        revoked_at: c.revoked_at.map(keycard_core::time::rfc3339),
        client_id: c.client_id,
    }
}

pub async fn run(settings: &Settings, cmd: ClientCommand, as_json: bool) -> Result<(), CliError> {
    match cmd {
        ClientCommand::Create {
            client_id,
            public,
            redirect_uris,
            grants,
            scopes,
            auth,
            cert,
            tls_subject_dn,
            first_party,
        } => {
            check_client_id(&client_id)?;
            let auth = match (public, auth.as_deref()) {
                (true, None) => "none",
                (true, Some(_)) => {
                    return Err(CliError::Usage(
                        "--public clients have no --auth method: they send no secret".into(),
                    ));
                }
                (false, None | Some("client_secret_basic")) => "client_secret_basic",
                (false, Some("client_secret_post")) => "client_secret_post",
                (false, Some("tls_client_auth")) => "tls_client_auth",
                (false, Some("self_signed_tls_client_auth")) => "self_signed_tls_client_auth",
                (false, Some(other)) => {
                    return Err(CliError::Usage(format!(
                        "--auth {other}: one of client_secret_basic, client_secret_post, tls_client_auth, self_signed_tls_client_auth"
                    )));
                }
            };
            let uses_cert = matches!(auth, "tls_client_auth" | "self_signed_tls_client_auth");
            if !uses_cert && (cert.is_some() || tls_subject_dn.is_some()) {
                return Err(CliError::Usage("--cert and --tls-subject-dn go with --auth tls_client_auth or self_signed_tls_client_auth".into()));
            }
            let tls_subject_dn = match tls_subject_dn {
                Some(_) if auth == "self_signed_tls_client_auth" => {
                    return Err(CliError::Usage(
                        "--tls-subject-dn goes with tls_client_auth; a self-signed client registers its --cert".into(),
                    ));
                }
                Some(dn) => Some(keycard_core::cert::normalize_dn(&dn).map_err(|e| {
                    CliError::Usage(format!("--tls-subject-dn: {e} (write it as `CN=svc,O=Example`, most specific first: openssl x509 -noout -subject -nameopt RFC2253)"))
                })?),
                None => None,
            };
            let cert_fingerprint = match &cert {
                Some(path) => Some(super::cert::read_cert(path)?.fingerprint_hex()),
                None => None,
            };
            if auth == "tls_client_auth" && tls_subject_dn.is_none() && cert_fingerprint.is_none() {
                return Err(CliError::Usage(
                    "--auth tls_client_auth needs --tls-subject-dn DN (or --cert FILE.pem to pin one certificate)".into(),
                ));
            }
            if auth == "self_signed_tls_client_auth" && cert_fingerprint.is_none() {
                return Err(CliError::Usage(
                    "--auth self_signed_tls_client_auth needs --cert FILE.pem, the client's certificate".into(),
                ));
            }
            for uri in &redirect_uris {
                check_redirect_uri(uri)?;
            }
            let grants = if grants.is_empty() {
                if redirect_uris.is_empty() {
                    vec!["client_credentials".to_owned()]
                } else {
                    vec!["authorization_code".to_owned(), "refresh_token".to_owned()]
                }
            } else {
                grants
            };
            for g in &grants {
                if !GRANTS.contains(&g.as_str()) {
                    return Err(CliError::Usage(format!(
                        "--grant {g}: keycard issues authorization_code, refresh_token and client_credentials (no implicit or password grant, RFC 9700 §2.4)"
                    )));
                }
            }
            if public && grants.iter().any(|g| g == "client_credentials") {
                return Err(CliError::Usage(
                    "--grant client_credentials needs a confidential client (drop --public)".into(),
                ));
            }
            if grants.iter().any(|g| g == "authorization_code") && redirect_uris.is_empty() {
                return Err(CliError::Usage(
                    "--grant authorization_code needs at least one --redirect-uri".into(),
                ));
            }
            let scopes =
                Scopes::from_list(&scopes).map_err(|e| CliError::Usage(format!("--scope: {e}")))?;
            let secret = if public || uses_cert {
                None
            } else {
                let s =
                    keycard_core::random_base62(43).map_err(|e| CliError::Other(e.to_string()))?;
                Some(keycard_core::SecretString::new(format!("kcs_{s}")))
            };
            let hasher = master(settings)?.keyed_hasher();
            let row = ClientRow {
                client_id: client_id.clone(),
                secret_hash: secret.as_ref().map(|s| {
                    hasher
                        .hash(HashDomain::ClientSecret, s.expose_secret().as_bytes())
                        .to_vec()
                }),
                auth_method: auth.to_owned(),
                redirect_uris,
                grants,
                scopes: scopes.as_str().to_owned(),
                first_party,
                created_at: now_secs(),
                revoked_at: None,
                tls_subject_dn,
                cert_fingerprint,
            };
            let store = open_store(settings).await?;
            store.create_client(&row).await?;
            let secret_text = secret.as_ref().map(|s| s.expose_secret().to_owned());
            if as_json {
                let mut v =
                    serde_json::to_value(shown(row)).map_err(|e| CliError::Other(e.to_string()))?;
                if let Some(o) = v.as_object_mut() {
                    o.insert("client_secret".into(), serde_json::json!(secret_text));
                }
                return json(&v);
            }
            println!("Created client {client_id} ({auth}).");
            if let Some(s) = secret_text {
                println!("client_secret: {s}");
                println!("Keep it now: keycard stores only a keyed hash and cannot show it again.");
            }
            println!("Token endpoint: {}/oauth2/token", settings.public_url);
            Ok(())
        }
        ClientCommand::List => {
            let store = open_store(settings).await?;
            let clients: Vec<Shown> = store.list_clients().await?.into_iter().map(shown).collect();
            if as_json {
                return json(&clients);
            }
            if clients.is_empty() {
                println!("No clients.");
                return Ok(());
            }
            println!(
                "{:<24} {:<8} {:<20} {:<44} SCOPES",
                "CLIENT_ID", "STATUS", "AUTH", "GRANTS"
            );
            for c in clients {
                println!(
                    "{:<24} {:<8} {:<20} {:<44} {}",
                    c.client_id,
                    c.status,
                    c.auth,
                    c.grants.join(","),
                    c.scopes.join(" ")
                );
            }
            Ok(())
        }
        ClientCommand::Revoke { client_id } => {
            let store = open_store(settings).await?;
            store.revoke_client(&client_id, now_secs()).await?;
            if as_json {
                return json(&serde_json::json!({"client_id": client_id, "revoked": true}));
            }
            println!(
                "Revoked client {client_id}: its tokens are refused everywhere within a second."
            );
            Ok(())
        }
    }
}

/// Client ids travel in URLs, forms and headers: keep them to URL-safe characters.
fn check_client_id(id: &str) -> Result<(), CliError> {
    if id.is_empty()
        || id.len() > 100
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
    {
        return Err(CliError::Usage(format!(
            "CLIENT_ID: `{}` must be 1-100 characters of A-Z a-z 0-9 - . _ ~",
            id.escape_debug()
        )));
    }
    Ok(())
}

/// Redirect URIs: absolute, no fragment; `https`, or `http` only on loopback (RFC 8252
/// §7.3), or a private-use scheme with a dot for native apps (RFC 8252 §7.1).
fn check_redirect_uri(uri: &str) -> Result<(), CliError> {
    let bad = |why: &str| Err(CliError::Usage(format!("--redirect-uri {uri}: {why}")));
    let Ok(u) = url::Url::parse(uri) else {
        return bad("not an absolute URI");
    };
    if u.fragment().is_some() {
        return bad("a redirect URI cannot have a fragment (RFC 6749 §3.1.2)");
    }
    match u.scheme() {
        "https" => Ok(()),
        "http" if matches!(u.host_str(), Some("127.0.0.1" | "[::1]" | "localhost")) => Ok(()),
        "http" => bad(
            "plain http only for loopback redirects (http://127.0.0.1 or http://[::1]); use https",
        ),
        s if s.contains('.') => Ok(()),
        _ => bad(
            "use https, a loopback http URI, or a private-use scheme such as com.example.app:/callback",
        ),
    }
}
