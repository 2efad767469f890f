//! `keycard sign`: the headers that sign a request with an HMAC key (RFC 9421), so no
//! client has to write a signer. Covered: `@method`, `@authority`, `@path`, `@query` (when
//! the URL has one), `content-digest` (with a body) and every `--header` given; with
//! `created`, a random `nonce`, `keyid` and `alg="hmac-sha256"`.

use std::io::Read;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use keycard_core::httpsig::{self, HMAC_SHA256, RequestParts};
use keycard_core::{SecretBytes, SecretString};
use keycard_server::now_secs;

use super::CliError;
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
    let alg = match signer {
        Signer::Hmac(_) => HMAC_SHA256,
        Signer::Ed25519(_) => httpsig::ED25519,
    };
    let uri: http::Uri = args
        .url
        .parse()
        .map_err(|_| CliError::Usage(format!("URL: `{}` is not a URL", args.url)))?;
    let scheme = match uri.scheme_str() {
        Some(s @ ("http" | "https")) => s,
        _ => {
            return Err(CliError::Usage(
                "URL: must start with http:// or https://".into(),
            ));
        }
    };
    let authority = uri
        .authority()
        .filter(|a| !a.as_str().contains('@'))
        .ok_or_else(|| CliError::Usage("URL: needs a host, and no user:password@".into()))?;
    // The Host a client sends: no port when it is the scheme's default.
    let host = match (authority.port_u16(), scheme) {
        (Some(80), "http") | (Some(443), "https") => authority.host().to_owned(),
        _ => authority.as_str().to_owned(),
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
    let mut headers = HeaderMap::new();
    let mut out: Vec<(String, String)> = Vec::new();
    let mut covered = vec!["\"@method\"", "\"@authority\"", "\"@path\""]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    if uri.query().is_some() {
        covered.push("\"@query\"".into());
    }
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| CliError::Usage(format!("--header `{h}`: use \"Name: value\"")))?;
        let name = HeaderName::try_from(name.trim().to_ascii_lowercase())
            .map_err(|_| CliError::Usage(format!("--header `{h}`: not a header name")))?;
        let value = HeaderValue::try_from(value.trim())
            .map_err(|_| CliError::Usage(format!("--header `{h}`: not a header value")))?;
        if matches!(
            name.as_str(),
            "signature" | "signature-input" | "content-digest"
        ) {
            return Err(CliError::Usage(format!(
                "--header {name}: keycard sign makes that one"
            )));
        }
        covered.push(format!("\"{}\"", name.as_str()));
        headers.append(name, value);
    }
    if let Some(b) = &body {
        let digest = httpsig::content_digest(b);
        headers.insert(
            "content-digest",
            HeaderValue::try_from(digest.as_str()).map_err(|e| CliError::Other(e.to_string()))?,
        );
        covered.push("\"content-digest\"".into());
        out.push(("Content-Digest".into(), digest));
    }
    let nonce = keycard_core::random_base62(22).map_err(|e| CliError::Other(e.to_string()))?;
    let key_id = sfv_string(&args.key_id)?;
    let input = format!(
        "sig1=({});created={};keyid={key_id};nonce=\"{nonce}\";alg=\"{alg}\"",
        covered.join(" "),
        now_secs()
    );
    // Parse what was written, so the base is built exactly as a verifier will build it.
    let placeholder = format!("sig1=:{}:", STANDARD.encode([0u8; 64]));
    let sig = httpsig::parse(&input, &placeholder)
        .map_err(|e| CliError::Other(format!("cannot build Signature-Input: {e}")))?
        .remove(0);
    let req = RequestParts {
        method: &method,
        scheme,
        authority: &host,
        path: if uri.path().is_empty() {
            "/"
        } else {
            uri.path()
        },
        query: uri.query(),
        headers: &headers,
    };
    let base = httpsig::signature_base(&sig, &req)
        .map_err(|e| CliError::Other(format!("cannot build the signature base: {e}")))?;
    let mac = match &signer {
        Signer::Hmac(key) => httpsig::sign_hmac(key.expose_secret(), &base),
        Signer::Ed25519(pem) => httpsig::sign_ed25519(pem.expose_secret(), &base)
            .ok_or_else(|| CliError::Other("cannot sign with the private key".into()))?,
    };
    out.push(("Signature-Input".into(), input));
    out.push((
        "Signature".into(),
        format!("sig1=:{}:", STANDARD.encode(mac)),
    ));
    if as_json {
        let map: serde_json::Map<String, serde_json::Value> = out
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect();
        return json(&serde_json::json!({ "method": method, "url": args.url, "headers": map }));
    }
    for (k, v) in out {
        println!("{k}: {v}");
    }
    Ok(())
}

/// A `keyid` as an RFC 8941 string (printable ASCII; `"` and `\` escaped).
fn sfv_string(s: &str) -> Result<String, CliError> {
    if s.is_empty() || !s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(CliError::Usage("--key-id: printable ASCII only".into()));
    }
    Ok(format!(
        "\"{}\"",
        s.replace('\\', "\\\\").replace('"', "\\\"")
    ))
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
