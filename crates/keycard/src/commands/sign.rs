//! `keycard sign`: the headers that sign a request with an HMAC key (RFC 9421), so no
//! client has to write a signer. Covered: `@method`, `@authority`, `@path`, `@query` (when
//! the URL has one), `content-digest` (with a body) and every `--header` given; with
//! `created`, a random `nonce`, `keyid` and `alg="hmac-sha256"`.

use std::io::Read;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use keycard_core::httpsig;
use keycard_core::sign::SignError;
use keycard_core::{SecretBytes, SecretString};

use super::common::CliError;
use crate::cli::SignArgs;
use crate::output::json;

/// What signs: a shared secret, or an Ed25519 private key (PEM).
enum Signer {
    Hmac(SecretBytes),
    Ed25519(SecretBytes),
}

pub fn run(args: SignArgs, as_json: bool) -> Result<(), CliError> {
    let signer = match &args.private_key {
        Some(f) => {
            let pem = SecretBytes::new(
                std::fs::read(f)
                    .map_err(|e| CliError::Usage(format!("--private-key {}: {e}", f.display())))?,
            );
            if httpsig::sign_ed25519(pem.expose_secret(), "").is_none() {
                return Err(CliError::Usage(format!(
                    "--private-key {}: not an Ed25519 private key (PEM, PKCS#8: openssl genpkey -algorithm ed25519)",
                    f.display()
                )));
            }
            Signer::Ed25519(pem)
        }
        None => Signer::Hmac(read_secret(&args)?),
    };
    let body = match &args.body_file {
        Some(f) => Some(
            std::fs::read(f)
                .map_err(|e| CliError::Other(format!("cannot read {}: {e}", f.display())))?,
        ),
        None => None,
    };
    let method = args
        .method
        .clone()
        .unwrap_or_else(|| if body.is_some() { "POST" } else { "GET" }.into())
        .to_ascii_uppercase();
    let mut covered: Vec<(String, String)> = Vec::new();
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| CliError::Usage(format!("--header `{h}`: use \"Name: value\"")))?;
        covered.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let pairs: Vec<(&str, &str)> = covered
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let with = match &signer {
        Signer::Hmac(key) => keycard_core::sign::Signer::Hmac(key.expose_secret()),
        Signer::Ed25519(pem) => keycard_core::sign::Signer::Ed25519Pem(pem.expose_secret()),
    };
    let out = keycard_core::sign::sign_request(
        &with,
        &args.key_id,
        &method,
        &args.url,
        &pairs,
        body.as_deref(),
    )
    .map_err(|e| match e {
        SignError::BadUrl => CliError::Usage(format!("URL: `{}`: {e}", args.url)),
        SignError::BadKeyId => CliError::Usage(format!("--key-id: {e}")),
        SignError::BadHeader(h) => CliError::Usage(format!(
            "--header `{h}`: not a header name and value keycard sign can cover (it makes signature, signature-input and content-digest itself)"
        )),
        e => CliError::Other(e.to_string()),
    })?;
    if as_json {
        let map: serde_json::Map<String, serde_json::Value> = out
            .into_iter()
            .map(|(k, v)| (k.to_owned(), serde_json::Value::String(v)))
            .collect();
        return json(&serde_json::json!({ "method": method, "url": args.url, "headers": map }));
    }
    for (k, v) in out {
        println!("{k}: {v}");
    }
    Ok(())
}

fn read_secret(args: &SignArgs) -> Result<SecretBytes, CliError> {
    let text = if args.secret_stdin {
        let mut buf = String::new();
        let read = std::io::stdin().read_to_string(&mut buf);
        let s = SecretString::new(buf);
        read.map_err(|e| CliError::Other(format!("cannot read the secret from stdin: {e}")))?;
        s
    } else if let Some(f) = &args.secret_file {
        SecretString::new(
            std::fs::read_to_string(f)
                .map_err(|e| CliError::Other(format!("cannot read {}: {e}", f.display())))?,
        )
    } else {
        return Err(CliError::Usage(
            "give --secret-stdin or --secret-file".into(),
        ));
    };
    let key = STANDARD
        .decode(text.expose_secret().trim())
        .map_err(|_| CliError::Usage("the secret is not standard base64".into()))?;
    let key = SecretBytes::new(key);
    if key.expose_secret().len() < 16 {
        return Err(CliError::Usage(
            "the secret is shorter than 128 bits".into(),
        ));
    }
    Ok(key)
}
