//! `keycard jwt mint`: a JWT signed with a private key, to try a `[[jwt.issuers]]` setup.

use keycard_core::SecretBytes;
use keycard_core::signing::SigningKey;
use serde_json::json;

use super::common::CliError;
use crate::cli::JwtCommand;

pub fn run(cmd: JwtCommand, as_json: bool) -> Result<(), CliError> {
    let JwtCommand::Mint {
        key,
        issuer,
        audiences,
        subject,
        scopes,
        expires_in,
        kid,
    } = cmd;
    let pem = SecretBytes::new(
        std::fs::read(&key)
            .map_err(|e| CliError::Usage(format!("--key {}: {e}", key.display())))?,
    );
    let signer = SigningKey::from_pkcs8_pem(pem.expose_secret(), kid).map_err(|_| {
        CliError::Usage(format!(
            "--key {}: not a PKCS#8 private key for ES256, EdDSA or RS256 (PEM: -----BEGIN PRIVATE KEY-----)",
            key.display()
        ))
    })?;
    let lifetime = super::common::duration_flag("--expires-in", &expires_in)?;
    let now = keycard_server::now_secs();
    let scopes = keycard_core::Scopes::from_list(&scopes)
        .map_err(|e| CliError::Usage(format!("--scope: {e}")))?;
    let aud = match audiences.as_slice() {
        [one] => json!(one),
        many => json!(many),
    };
    let mut claims = json!({
        "iss": issuer,
        "sub": subject,
        "aud": aud,
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        "jti": keycard_core::random_base62(22).map_err(|e| CliError::Other(e.to_string()))?,
    });
    if !scopes.as_str().is_empty()
        && let Some(o) = claims.as_object_mut()
    {
        o.insert("scope".into(), json!(scopes.as_str()));
    }
    let token = signer
        .sign_jwt("JWT", &claims)
        .map_err(|e| CliError::Other(e.to_string()))?;
    if as_json {
        crate::output::json(
            &json!({"token": token, "kid": signer.kid(), "alg": signer.alg().as_str()}),
        )
    } else {
        println!("{token}");
        Ok(())
    }
}
