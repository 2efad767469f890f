//! Signing requests for keycard's `hmac` method (RFC 9421) — the client side: what
//! `keycard sign` prints, as a function for Rust callers.
//!
//! ```
//! use keycard_core::sign::{Signer, sign_request};
//!
//! let secret = [7u8; 32]; // from `keycard hmac create`, base64-decoded
//! let headers = sign_request(
//!     &Signer::Hmac(&secret),
//!     "hk_3kTMd9",
//!     "POST",
//!     "https://api.example.com/orders?page=2",
//!     &[("content-type", "application/json")],
//!     Some(br#"{"sku":"A1"}"#),
//! )
//! .unwrap();
//! // Content-Digest, Signature-Input and Signature: add them to the request.
//! assert_eq!(headers.len(), 3);
//! ```
//!
//! With any `http`-based client (hyper, reqwest via `reqwest::Request::try_from`), use
//! [`sign_http_request`], which adds the headers to an [`http::Request`].

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::httpsig::{self, ED25519, HMAC_SHA256, RequestParts};

/// The key a request is signed with.
#[derive(Clone, Copy)]
pub enum Signer<'a> {
    /// The shared secret of an `hmac-sha256` key (raw bytes).
    Hmac(&'a [u8]),
    /// An Ed25519 private key, PKCS#8 PEM.
    Ed25519Pem(&'a [u8]),
}

impl std::fmt::Debug for Signer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Signer::Hmac(_) => "Signer::Hmac(..)",
            Signer::Ed25519Pem(_) => "Signer::Ed25519Pem(..)",
        })
    }
}

/// Why a request could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The URL is not an absolute `http`/`https` URL with a host (and no user info).
    #[error("the URL must be absolute http:// or https:// with a host (no user:password@)")]
    BadUrl,
    /// The key id is empty or not printable ASCII.
    #[error("the key id must be printable ASCII")]
    BadKeyId,
    /// A header to cover has a bad name or value, or is one the signer makes.
    #[error("header `{0}`: not a header to cover")]
    BadHeader(String),
    /// The Ed25519 key is not a PKCS#8 PEM Ed25519 private key.
    #[error("not an Ed25519 private key (PKCS#8 PEM)")]
    BadKey,
    /// The random generator failed.
    #[error("the random number generator failed")]
    Random,
}

/// The headers that sign a request: `Content-Digest` (with a body), `Signature-Input` and
/// `Signature`, covering `@method`, `@authority`, `@path`, `@query` (when there is one),
/// `headers` (name, value) and `content-digest`; with `created` now and a fresh `nonce`.
pub fn sign_request(
    signer: &Signer<'_>,
    key_id: &str,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Vec<(&'static str, String)>, SignError> {
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let nonce = crate::random_base62(22).map_err(|_| SignError::Random)?;
    sign_request_at(signer, key_id, method, url, headers, body, created, &nonce)
}

/// [`sign_request`] with a given `created` and `nonce` (for tests and replays of vectors).
#[allow(clippy::too_many_arguments)]
pub fn sign_request_at(
    signer: &Signer<'_>,
    key_id: &str,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    created: i64,
    nonce: &str,
) -> Result<Vec<(&'static str, String)>, SignError> {
    let uri: http::Uri = url.parse().map_err(|_| SignError::BadUrl)?;
    let scheme = match uri.scheme_str() {
        Some(s @ ("http" | "https")) => s,
        _ => return Err(SignError::BadUrl),
    };
    let authority = uri
        .authority()
        .filter(|a| !a.as_str().contains('@'))
        .ok_or(SignError::BadUrl)?;
    let host = match (authority.port_u16(), scheme) {
        (Some(80), "http") | (Some(443), "https") => authority.host().to_owned(),
        _ => authority.as_str().to_owned(),
    };
    if key_id.is_empty() || !key_id.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(SignError::BadKeyId);
    }
    let alg = match signer {
        Signer::Hmac(_) => HMAC_SHA256,
        Signer::Ed25519Pem(_) => ED25519,
    };
    let mut covered = vec!["\"@method\"", "\"@authority\"", "\"@path\""]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    if uri.query().is_some() {
        covered.push("\"@query\"".into());
    }
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let n = HeaderName::try_from(name.trim().to_ascii_lowercase())
            .map_err(|_| SignError::BadHeader((*name).to_owned()))?;
        let v = HeaderValue::try_from(value.trim())
            .map_err(|_| SignError::BadHeader((*name).to_owned()))?;
        if matches!(
            n.as_str(),
            "signature" | "signature-input" | "content-digest"
        ) {
            return Err(SignError::BadHeader((*name).to_owned()));
        }
        covered.push(format!("\"{}\"", n.as_str()));
        map.append(n, v);
    }
    let mut out = Vec::with_capacity(3);
    if let Some(b) = body {
        let digest = httpsig::content_digest(b);
        map.insert(
            "content-digest",
            HeaderValue::try_from(digest.as_str()).map_err(|_| SignError::BadUrl)?,
        );
        covered.push("\"content-digest\"".into());
        out.push(("Content-Digest", digest));
    }
    let key_id = key_id.replace('\\', "\\\\").replace('"', "\\\"");
    let input = format!(
        "sig1=({});created={created};keyid=\"{key_id}\";nonce=\"{nonce}\";alg=\"{alg}\"",
        covered.join(" ")
    );
    // Parse what was written, so the base is built exactly as a verifier will build it.
    let placeholder = format!("sig1=:{}:", STANDARD.encode([0u8; 64]));
    let sig = httpsig::parse(&input, &placeholder)
        .map_err(|_| SignError::BadKeyId)?
        .into_iter()
        .next()
        .ok_or(SignError::BadKeyId)?;
    let method = method.to_ascii_uppercase();
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
        headers: &map,
    };
    let base = httpsig::signature_base(&sig, &req).map_err(|_| SignError::BadUrl)?;
    let mac = match signer {
        Signer::Hmac(key) => httpsig::sign_hmac(key, &base),
        Signer::Ed25519Pem(pem) => httpsig::sign_ed25519(pem, &base).ok_or(SignError::BadKey)?,
    };
    out.push(("Signature-Input", input));
    out.push(("Signature", format!("sig1=:{}:", STANDARD.encode(mac))));
    Ok(out)
}

/// Signs an [`http::Request`] in place: adds the headers of [`sign_request`], covering the
/// request's method, URI (which must be absolute), `body` and the named `cover` headers.
pub fn sign_http_request<B>(
    req: &mut http::Request<B>,
    body: &[u8],
    signer: &Signer<'_>,
    key_id: &str,
    cover: &[&str],
) -> Result<(), SignError> {
    let values: Vec<(String, String)> = cover
        .iter()
        .map(|name| {
            let v = req
                .headers()
                .get(*name)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| SignError::BadHeader((*name).to_owned()))?;
            Ok(((*name).to_owned(), v.to_owned()))
        })
        .collect::<Result<_, SignError>>()?;
    let pairs: Vec<(&str, &str)> = values
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let url = req.uri().to_string();
    let signed = sign_request(
        signer,
        key_id,
        req.method().as_str(),
        &url,
        &pairs,
        (!body.is_empty()).then_some(body),
    )?;
    for (name, value) in signed {
        let v = HeaderValue::try_from(value).map_err(|_| SignError::BadHeader(name.into()))?;
        req.headers_mut().insert(name, v);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::httpsig::{Policy, SharedKey, verify};

    #[test]
    fn what_it_signs_verifies_and_a_changed_request_does_not() {
        let secret = [9u8; 32];
        let signed = sign_request_at(
            &Signer::Hmac(&secret),
            "hk_1",
            "post",
            "https://api.example.com:443/orders?page=2",
            &[("Content-Type", "application/json")],
            Some(b"{}"),
            1_700_000_000,
            "n1",
        )
        .unwrap();
        let get = |n: &str| signed.iter().find(|(k, _)| *k == n).unwrap().1.clone();
        let sig = crate::httpsig::parse(&get("Signature-Input"), &get("Signature"))
            .unwrap()
            .remove(0);
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.insert("content-digest", get("Content-Digest").parse().unwrap());
        let mut parts = RequestParts {
            method: "POST",
            scheme: "https",
            authority: "api.example.com",
            path: "/orders",
            query: Some("page=2"),
            headers: &h,
        };
        let key = SharedKey::new(&secret);
        let policy = Policy::with_skew(60);
        let now = 1_700_000_010;
        assert!(verify(&sig, &key, &parts, true, &policy, now).is_ok());
        parts.path = "/orders/1";
        assert!(verify(&sig, &key, &parts, true, &policy, now).is_err());
        assert_eq!(
            sign_request(&Signer::Hmac(&secret), "k", "GET", "/relative", &[], None),
            Err(SignError::BadUrl)
        );
        assert_eq!(
            sign_request(
                &Signer::Hmac(&secret),
                "k",
                "GET",
                "https://a/",
                &[("signature", "x")],
                None
            ),
            Err(SignError::BadHeader("signature".into()))
        );
    }
}
