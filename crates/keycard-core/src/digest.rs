//! HTTP Digest, server side (RFC 7616): parsing the client's `Authorization: Digest …`,
//! the hashes (`SHA-256`, `SHA-512-256`, legacy `MD5`, and their `-sess` variants), the
//! `response` and `rspauth` values, challenges, and stateless nonces.
//!
//! A nonce carries its own issue time and a MAC over it: `base64url(time_ms ‖ random ‖
//! HMAC[..16])`. Issuing one needs no server state; checking one tells forged from expired.
//! Replay protection (each (nonce, nc) accepted once, nc growing) is state the caller keeps.

use std::fmt::Write as _;

use aws_lc_rs::{digest, hmac, rand};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use md5::{Digest as _, Md5};

use crate::constant_time_eq;

/// Longest `Authorization: Digest` value accepted.
const MAX_HEADER_LEN: usize = 8192;
const NONCE_TIME_LEN: usize = 8;
const NONCE_RANDOM_LEN: usize = 8;
const NONCE_TAG_LEN: usize = 16;
const NONCE_LEN: usize = NONCE_TIME_LEN + NONCE_RANDOM_LEN + NONCE_TAG_LEN;
/// A nonce dated further ahead than this was not minted by a sane clock: forged.
const MAX_FUTURE_MS: u64 = 60_000;

/// The hash function of an algorithm (RFC 7616 §3.2, §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlg {
    /// MD5: legacy, off unless configured.
    Md5,
    /// SHA-256: the default.
    Sha256,
    /// SHA-512/256.
    Sha512_256,
}

impl HashAlg {
    /// Every hash, in the order stored secrets keep them.
    pub const ALL: [HashAlg; 3] = [HashAlg::Md5, HashAlg::Sha256, HashAlg::Sha512_256];

    /// The algorithm token without `-sess`.
    pub const fn name(self) -> &'static str {
        match self {
            HashAlg::Md5 => "MD5",
            HashAlg::Sha256 => "SHA-256",
            HashAlg::Sha512_256 => "SHA-512-256",
        }
    }

    /// H(data) as lowercase hex, data given in parts (joined with nothing).
    pub fn hex(self, parts: &[&[u8]]) -> String {
        match self {
            HashAlg::Md5 => {
                let mut h = Md5::new();
                for p in parts {
                    h.update(p);
                }
                to_hex(&h.finalize())
            }
            HashAlg::Sha256 | HashAlg::Sha512_256 => {
                let alg = if self == HashAlg::Sha256 {
                    &digest::SHA256
                } else {
                    &digest::SHA512_256
                };
                let mut ctx = digest::Context::new(alg);
                for p in parts {
                    ctx.update(p);
                }
                to_hex(ctx.finish().as_ref())
            }
        }
    }
}

/// An algorithm of the `algorithm` parameter: a hash, with or without `-sess`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Algorithm {
    /// The hash.
    pub hash: HashAlg,
    /// The session variant: HA1 also covers the nonce and cnonce.
    pub sess: bool,
}

impl Algorithm {
    /// SHA-256, the default.
    pub const SHA256: Algorithm = Algorithm {
        hash: HashAlg::Sha256,
        sess: false,
    };

    /// Parses a token such as `SHA-256-sess` (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        let (base, sess) = match s.len().checked_sub(5).and_then(|i| s.get(i..)) {
            Some(tail) if tail.eq_ignore_ascii_case("-sess") => (s.get(..s.len() - 5)?, true),
            _ => (s, false),
        };
        let hash = HashAlg::ALL
            .into_iter()
            .find(|h| h.name().eq_ignore_ascii_case(base))?;
        Some(Self { hash, sess })
    }

    /// The token as challenges write it.
    pub fn name(self) -> String {
        if self.sess {
            format!("{}-sess", self.hash.name())
        } else {
            self.hash.name().to_owned()
        }
    }
}

/// The quality of protection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qop {
    /// Authentication only.
    Auth,
    /// Authentication with integrity of the request body.
    AuthInt,
}

impl Qop {
    /// The token.
    pub const fn as_str(self) -> &'static str {
        match self {
            Qop::Auth => "auth",
            Qop::AuthInt => "auth-int",
        }
    }
}

/// A parsed `Authorization: Digest` credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestResponse {
    /// The user name, or with `userhash` the hex H(user ":" realm).
    pub username: String,
    /// Whether `username` is a userhash.
    pub userhash: bool,
    /// The realm the client answers.
    pub realm: String,
    /// The server's nonce, echoed.
    pub nonce: String,
    /// The request-target the client signed.
    pub uri: String,
    /// The client's response (hex).
    pub response: String,
    /// The algorithm (MD5 when absent, §3.4).
    pub algorithm: Algorithm,
    /// The client nonce.
    pub cnonce: String,
    /// The opaque value, echoed.
    pub opaque: Option<String>,
    /// The chosen quality of protection (required: RFC 2069 answers are refused).
    pub qop: Qop,
    /// The nonce count as sent (8 hex digits; hashed as sent).
    pub nc_text: String,
    /// The nonce count.
    pub nc: u32,
}

/// Parses the value of an `Authorization` header whose scheme is `Digest` (the part after
/// the scheme). `None` when a required parameter is missing, repeated or malformed.
pub fn parse(params: &str) -> Option<DigestResponse> {
    if params.len() > MAX_HEADER_LEN {
        return None;
    }
    let mut f = Fields::default();
    for (name, value) in AuthParams::new(params) {
        let (name, value) = (name?, value);
        let slot = match name.to_ascii_lowercase().as_str() {
            "username" => &mut f.username,
            "username*" => &mut f.username_ext,
            "userhash" => &mut f.userhash,
            "realm" => &mut f.realm,
            "nonce" => &mut f.nonce,
            "uri" => &mut f.uri,
            "response" => &mut f.response,
            "algorithm" => &mut f.algorithm,
            "cnonce" => &mut f.cnonce,
            "opaque" => &mut f.opaque,
            "qop" => &mut f.qop,
            "nc" => &mut f.nc,
            _ => continue,
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(value);
    }
    let userhash = match f.userhash.as_deref() {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("true") => true,
        Some(v) if v.eq_ignore_ascii_case("false") => false,
        Some(_) => return None,
    };
    let username = match (f.username, f.username_ext) {
        (Some(u), None) => u,
        // §3.4.4: username* only for names that cannot be quoted, never with userhash.
        (None, Some(ext)) if !userhash => decode_ext_value(&ext)?,
        _ => return None,
    };
    let algorithm = match f.algorithm {
        None => Algorithm {
            hash: HashAlg::Md5,
            sess: false,
        },
        Some(a) => Algorithm::parse(&a)?,
    };
    let qop = match f.qop?.as_str() {
        q if q.eq_ignore_ascii_case("auth") => Qop::Auth,
        q if q.eq_ignore_ascii_case("auth-int") => Qop::AuthInt,
        _ => return None,
    };
    let nc_text = f.nc?;
    if nc_text.len() != 8 {
        return None;
    }
    let nc = u32::from_str_radix(&nc_text, 16).ok()?;
    let response = f.response?;
    let cnonce = f.cnonce?;
    if username.is_empty() || cnonce.is_empty() || response.is_empty() {
        return None;
    }
    Some(DigestResponse {
        username,
        userhash,
        realm: f.realm?,
        nonce: f.nonce?,
        uri: f.uri?,
        response,
        algorithm,
        cnonce,
        opaque: f.opaque,
        qop,
        nc_text,
        nc,
    })
}

#[derive(Default)]
struct Fields {
    username: Option<String>,
    username_ext: Option<String>,
    userhash: Option<String>,
    realm: Option<String>,
    nonce: Option<String>,
    uri: Option<String>,
    response: Option<String>,
    algorithm: Option<String>,
    cnonce: Option<String>,
    opaque: Option<String>,
    qop: Option<String>,
    nc: Option<String>,
}

/// An iterator over `name=value` auth-params (RFC 9110 §11.2): values are tokens or quoted
/// strings (backslash escapes undone). Yields `(None, _)` and stops at the first syntax error.
struct AuthParams<'a> {
    rest: &'a str,
    failed: bool,
}

impl<'a> AuthParams<'a> {
    fn new(s: &'a str) -> Self {
        Self {
            rest: s,
            failed: false,
        }
    }
}

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

impl<'a> Iterator for AuthParams<'a> {
    type Item = (Option<&'a str>, String);

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        self.rest = self.rest.trim_start_matches([' ', '\t', ',']);
        if self.rest.is_empty() {
            return None;
        }
        let name_end = self
            .rest
            .find(|c: char| !is_tchar(c))
            .unwrap_or(self.rest.len());
        let (name, after) = self.rest.split_at(name_end);
        let after = after.trim_start_matches([' ', '\t']);
        let Some(after) = after.strip_prefix('=').filter(|_| !name.is_empty()) else {
            self.failed = true;
            return Some((None, String::new()));
        };
        let after = after.trim_start_matches([' ', '\t']);
        let (value, rest) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    '\\' => match chars.next() {
                        Some((_, e)) if e != '\r' && e != '\n' => value.push(e),
                        _ => break,
                    },
                    '\r' | '\n' | '\0' => break,
                    c => value.push(c),
                }
            }
            let Some(end) = end else {
                self.failed = true;
                return Some((None, String::new()));
            };
            (value, quoted.get(end..).unwrap_or(""))
        } else {
            let end = after.find(|c: char| !is_tchar(c)).unwrap_or(after.len());
            let (v, r) = after.split_at(end);
            if v.is_empty() {
                self.failed = true;
                return Some((None, String::new()));
            }
            (v.to_owned(), r)
        };
        // Only separators may follow a value.
        let rest = rest.trim_start_matches([' ', '\t']);
        if !(rest.is_empty() || rest.starts_with(',')) {
            self.failed = true;
            return Some((None, String::new()));
        }
        self.rest = rest;
        Some((Some(name), value))
    }
}

/// Decodes an RFC 8187 ext-value (`UTF-8''J%C3%A4s%C3%B8n`); only UTF-8 is accepted.
fn decode_ext_value(v: &str) -> Option<String> {
    let mut parts = v.splitn(3, '\'');
    let charset = parts.next()?;
    let _language = parts.next()?;
    let encoded = parts.next()?;
    if !charset.eq_ignore_ascii_case("UTF-8") {
        return None;
    }
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = encoded.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            out.push(b);
            i += 1;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

/// H(user ":" realm ":" password) as hex: the HA1 that stored Digest secrets keep.
pub fn ha1(hash: HashAlg, user: &str, realm: &str, password: &str) -> String {
    hash.hex(&[
        user.as_bytes(),
        b":",
        realm.as_bytes(),
        b":",
        password.as_bytes(),
    ])
}

/// The userhash of `user` in `realm` (§3.4.4): H(user ":" realm) as hex.
pub fn userhash(hash: HashAlg, user: &str, realm: &str) -> String {
    hash.hex(&[user.as_bytes(), b":", realm.as_bytes()])
}

/// H(entity-body) for `qop=auth-int`.
pub fn body_hash(hash: HashAlg, body: &[u8]) -> String {
    hash.hex(&[body])
}

/// What the request looked like to the server, to recompute the client's response.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The request method (`GET`).
    pub method: &'a str,
    /// H(body) under the response's hash, for `auth-int`.
    pub body_hash: Option<&'a str>,
}

fn session_ha1(r: &DigestResponse, stored_ha1: &str) -> String {
    if r.algorithm.sess {
        r.algorithm.hash.hex(&[
            stored_ha1.as_bytes(),
            b":",
            r.nonce.as_bytes(),
            b":",
            r.cnonce.as_bytes(),
        ])
    } else {
        stored_ha1.to_owned()
    }
}

fn kd(r: &DigestResponse, ha1: &str, ha2: &str) -> String {
    r.algorithm.hash.hex(&[
        ha1.as_bytes(),
        b":",
        r.nonce.as_bytes(),
        b":",
        r.nc_text.as_bytes(),
        b":",
        r.cnonce.as_bytes(),
        b":",
        r.qop.as_str().as_bytes(),
        b":",
        ha2.as_bytes(),
    ])
}

/// The response a client knowing the password would send (§3.4.1), given the stored HA1.
/// `None` for `auth-int` without a body hash.
pub fn expected_response(
    r: &DigestResponse,
    stored_ha1: &str,
    req: RequestFacts<'_>,
) -> Option<String> {
    let h = r.algorithm.hash;
    let ha2 = match r.qop {
        Qop::Auth => h.hex(&[req.method.as_bytes(), b":", r.uri.as_bytes()]),
        Qop::AuthInt => h.hex(&[
            req.method.as_bytes(),
            b":",
            r.uri.as_bytes(),
            b":",
            req.body_hash?.as_bytes(),
        ]),
    };
    Some(kd(r, &session_ha1(r, stored_ha1), &ha2))
}

/// Whether the client's response is right, compared in constant time.
pub fn response_matches(r: &DigestResponse, stored_ha1: &str, req: RequestFacts<'_>) -> bool {
    match expected_response(r, stored_ha1, req) {
        Some(expected) => constant_time_eq(
            expected.as_bytes(),
            r.response.to_ascii_lowercase().as_bytes(),
        ),
        None => false,
    }
}

/// The `Authentication-Info` value for a verified request (§3.5): `rspauth` proves the
/// server knows the secret too. `response_body_hash`: H(response body) for `auth-int`.
pub fn authentication_info(
    r: &DigestResponse,
    stored_ha1: &str,
    response_body_hash: Option<&str>,
) -> Option<String> {
    let h = r.algorithm.hash;
    let ha2 = match r.qop {
        Qop::Auth => h.hex(&[b":", r.uri.as_bytes()]),
        Qop::AuthInt => h.hex(&[b":", r.uri.as_bytes(), b":", response_body_hash?.as_bytes()]),
    };
    let rspauth = kd(r, &session_ha1(r, stored_ha1), &ha2);
    Some(format!(
        r#"qop={}, rspauth="{rspauth}", cnonce="{}", nc={}"#,
        r.qop.as_str(),
        escape_quoted(&r.cnonce),
        r.nc_text
    ))
}

/// Escapes `"` and `\` for a quoted-string.
pub fn escape_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One `WWW-Authenticate: Digest` challenge (§3.3).
pub fn challenge(realm: &str, alg: Algorithm, nonce: &str, opaque: &str, stale: bool) -> String {
    let mut c = format!(
        r#"Digest realm="{}", qop="auth, auth-int", algorithm={}, nonce="{nonce}", opaque="{opaque}", charset=UTF-8, userhash=true"#,
        escape_quoted(realm),
        alg.name()
    );
    if stale {
        c.push_str(", stale=true");
    }
    c
}

/// What a nonce check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceState {
    /// Minted by this server and still within its lifetime.
    Fresh,
    /// Minted by this server, but expired: the client should retry with a new one.
    Stale,
    /// Not minted by this server (wrong MAC, wrong shape).
    Forged,
}

/// Mints and checks stateless nonces under a key derived from the master key.
#[derive(Clone)]
pub struct NonceKey(hmac::Key);

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceKey([redacted])")
    }
}

impl NonceKey {
    /// Wraps the key ([`crate::MasterKey::nonce_key`]).
    pub fn new(key: hmac::Key) -> Self {
        Self(key)
    }

    fn tag(&self, payload: &[u8]) -> [u8; NONCE_TAG_LEN] {
        let t = hmac::sign(&self.0, payload);
        let mut out = [0u8; NONCE_TAG_LEN];
        if let Some(src) = t.as_ref().get(..NONCE_TAG_LEN) {
            out.copy_from_slice(src);
        }
        out
    }

    /// A fresh nonce issued at `now_ms`. `None` if the random source fails.
    pub fn mint(&self, now_ms: u64) -> Option<String> {
        let mut payload = [0u8; NONCE_TIME_LEN + NONCE_RANDOM_LEN];
        let (time, random) = payload.split_at_mut(NONCE_TIME_LEN);
        time.copy_from_slice(&now_ms.to_be_bytes());
        rand::fill(random).ok()?;
        let mut raw = [0u8; NONCE_LEN];
        let (head, tag) = raw.split_at_mut(NONCE_TIME_LEN + NONCE_RANDOM_LEN);
        head.copy_from_slice(&payload);
        tag.copy_from_slice(&self.tag(&payload));
        Some(URL_SAFE_NO_PAD.encode(raw))
    }

    /// Checks a nonce at `now_ms` against a lifetime of `ttl_ms`; `Some(issued_ms)` with the state.
    pub fn check(&self, nonce: &str, now_ms: u64, ttl_ms: u64) -> (NonceState, u64) {
        let mut raw = [0u8; NONCE_LEN];
        match URL_SAFE_NO_PAD.decode_slice(nonce.as_bytes(), &mut raw) {
            Ok(NONCE_LEN) if nonce.len() == 43 => {}
            _ => return (NonceState::Forged, 0),
        }
        let (payload, tag) = raw.split_at(NONCE_TIME_LEN + NONCE_RANDOM_LEN);
        if !constant_time_eq(&self.tag(payload), tag) {
            return (NonceState::Forged, 0);
        }
        let mut time = [0u8; NONCE_TIME_LEN];
        if let Some(t) = payload.get(..NONCE_TIME_LEN) {
            time.copy_from_slice(t);
        }
        let issued = u64::from_be_bytes(time);
        if issued > now_ms.saturating_add(MAX_FUTURE_MS) {
            return (NonceState::Forged, issued);
        }
        if now_ms.saturating_sub(issued) >= ttl_ms {
            (NonceState::Stale, issued)
        } else {
            (NonceState::Fresh, issued)
        }
    }

    /// The server's `opaque` value: fixed per master key, so any instance accepts it.
    pub fn opaque(&self) -> String {
        to_hex(&self.tag(b"keycard digest opaque"))
    }
}

fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7616 §3.9.1, the SHA-256 request (erratum 4495: "Circle of Life", lower-case "of").
    const RFC_SHA256: &str = r#"username="Mufasa",
       realm="http-auth@example.org",
       uri="/dir/index.html",
       algorithm=SHA-256,
       nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
       nc=00000001,
       cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
       qop=auth,
       response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
       opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#;

    /// RFC 7616 §3.9.1, the MD5 request.
    const RFC_MD5: &str = r#"username="Mufasa",
       realm="http-auth@example.org",
       uri="/dir/index.html",
       algorithm=MD5,
       nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
       nc=00000001,
       cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
       qop=auth,
       response="8ca523f5e9506fed4657c9700eebdbec",
       opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#;

    const GET: RequestFacts<'static> = RequestFacts {
        method: "GET",
        body_hash: None,
    };

    fn rfc_ha1(h: HashAlg) -> String {
        ha1(h, "Mufasa", "http-auth@example.org", "Circle of Life")
    }

    #[test]
    fn rfc7616_3_9_1_sha256_and_md5() {
        let r = parse(&RFC_SHA256.replace('\n', " ")).unwrap();
        assert_eq!(r.algorithm, Algorithm::SHA256);
        assert_eq!((r.nc, r.qop), (1, Qop::Auth));
        assert!(response_matches(&r, &rfc_ha1(HashAlg::Sha256), GET));
        assert!(!response_matches(&r, &rfc_ha1(HashAlg::Md5), GET));
        assert!(!response_matches(
            &r,
            &ha1(
                HashAlg::Sha256,
                "Mufasa",
                "http-auth@example.org",
                "Circle Of Life"
            ),
            GET
        ));
        let post = RequestFacts {
            method: "POST",
            body_hash: None,
        };
        assert!(!response_matches(&r, &rfc_ha1(HashAlg::Sha256), post));

        let r = parse(&RFC_MD5.replace('\n', " ")).unwrap();
        assert_eq!(r.algorithm.hash, HashAlg::Md5);
        assert!(response_matches(&r, &rfc_ha1(HashAlg::Md5), GET));
    }

    #[test]
    fn auth_int_covers_the_body() {
        // Hand-computed with Python's hashlib: SHA-256, qop=auth-int, POST with body `{"a":1}`.
        let body = br#"{"a":1}"#;
        let h = HashAlg::Sha256;
        let ha1 = rfc_ha1(h);
        let hb = body_hash(h, body);
        let ha2 = h.hex(&[b"POST:/dir/index.html:", hb.as_bytes()]);
        let resp = h.hex(&[
            ha1.as_bytes(),
            b":n0nce:00000001:c0nce:auth-int:",
            ha2.as_bytes(),
        ]);
        let header = format!(
            r#"username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", algorithm=SHA-256, nonce="n0nce", nc=00000001, cnonce="c0nce", qop=auth-int, response="{resp}""#
        );
        let r = parse(&header).unwrap();
        fn facts(b: &str) -> RequestFacts<'_> {
            RequestFacts {
                method: "POST",
                body_hash: Some(b),
            }
        }
        assert!(response_matches(&r, &ha1, facts(&hb)));
        assert!(!response_matches(
            &r,
            &ha1,
            facts(&body_hash(h, br#"{"a":2}"#))
        ));
        assert!(!response_matches(&r, &ha1, GET), "auth-int needs the body");
    }

    #[test]
    fn sess_variant_and_rspauth() {
        let header = RFC_SHA256
            .replace("algorithm=SHA-256", "algorithm=SHA-256-sess")
            .replace('\n', " ");
        let mut r = parse(&header).unwrap();
        assert!(r.algorithm.sess);
        let ha1 = rfc_ha1(HashAlg::Sha256);
        let sess = HashAlg::Sha256.hex(&[
            ha1.as_bytes(),
            b":7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v:f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        ]);
        let ha2 = HashAlg::Sha256.hex(&[b"GET:/dir/index.html"]);
        r.response = HashAlg::Sha256.hex(&[
            sess.as_bytes(),
            b":7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v:00000001:f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ:auth:",
            ha2.as_bytes(),
        ]);
        assert!(response_matches(&r, &ha1, GET));
        let info = authentication_info(&r, &ha1, None).unwrap();
        let rsp_ha2 = HashAlg::Sha256.hex(&[b":/dir/index.html"]);
        let rspauth = HashAlg::Sha256.hex(&[
            sess.as_bytes(),
            b":7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v:00000001:f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ:auth:",
            rsp_ha2.as_bytes(),
        ]);
        assert!(info.contains(&format!(r#"rspauth="{rspauth}""#)), "{info}");
    }

    #[test]
    fn rfc7616_3_9_2_userhash_and_ext_username() {
        // §3.9.2: userhash of "J\u{e4}s\u{f8}n Doe" in "api@example.org" under SHA-512-256.
        assert_eq!(
            userhash(
                HashAlg::Sha512_256,
                "J\u{e4}s\u{f8}n Doe",
                "api@example.org"
            ),
            "793263caabb707a56211940d90411ea4a575adeccb7e360aeb624ed06ece9b0b"
        );
        let r = parse(
            r#"username*=UTF-8''J%C3%A4s%C3%B8n%20Doe, realm="api@example.org", uri="/doe.json", algorithm=SHA-512-256, nonce="n", nc=00000001, cnonce="c", qop=auth, response="00""#,
        )
        .unwrap();
        assert_eq!(r.username, "J\u{e4}s\u{f8}n Doe");
        assert!(!r.userhash);
    }

    #[test]
    fn refuses_broken_credentials() {
        let ok = RFC_SHA256.replace('\n', " ");
        assert!(parse(&ok).is_some());
        for bad in [
            ok.replace("qop=auth,", ""),                        // RFC 2069 style
            ok.replace("qop=auth", "qop=auth-conf"),            // unknown qop
            ok.replace("nc=00000001", "nc=1"),                  // short nc
            ok.replace("nc=00000001", "nc=0000000g"),           // not hex
            ok.replace("algorithm=SHA-256", "algorithm=SHA-1"), // unknown algorithm
            format!("{ok}, nonce=\"again\""),                   // repeated parameter
            ok.replace(
                r#"username="Mufasa""#,
                r#"username*=UTF-8''M, username="Mufasa""#,
            ),
            ok.replace(r#"uri="/dir/index.html""#, r#"uri="/dir/index.html"#), // unterminated
            ok.replace(r#"cnonce="f2"#, r#"cnonce= x "f2"#),                   // junk after a value
            ok.replace("realm=", "="),
            format!("{ok}, userhash=maybe"),
            "garbage".to_owned(),
            String::new(),
            "x".repeat(MAX_HEADER_LEN + 1),
        ] {
            assert!(parse(&bad).is_none(), "{bad}");
        }
        // username* must be UTF-8 and percent-encoded.
        assert!(decode_ext_value("ISO-8859-1''J%E4").is_none());
        assert!(decode_ext_value("UTF-8''%FF").is_none());
        assert!(decode_ext_value("UTF-8''a b").is_none());
        assert!(decode_ext_value("UTF-8''%4").is_none());
    }

    #[test]
    fn escapes_inside_quoted_strings() {
        let r = parse(
            &RFC_SHA256
                .replace(r#""Mufasa""#, r#""Mu\"fa\\sa""#)
                .replace('\n', " "),
        )
        .unwrap();
        assert_eq!(r.username, r#"Mu"fa\sa"#);
    }

    #[test]
    fn algorithms() {
        assert_eq!(Algorithm::parse("sha-256"), Some(Algorithm::SHA256));
        assert_eq!(
            Algorithm::parse("MD5-sess"),
            Some(Algorithm {
                hash: HashAlg::Md5,
                sess: true
            })
        );
        assert_eq!(
            Algorithm::parse("SHA-512-256-sess")
                .map(Algorithm::name)
                .as_deref(),
            Some("SHA-512-256-sess")
        );
        assert_eq!(Algorithm::parse("-sess"), None);
        assert_eq!(Algorithm::parse("SHA-512"), None);
        assert_eq!(Algorithm::parse(""), None);
    }

    #[test]
    fn nonces_expire_and_cannot_be_forged() {
        let key = NonceKey::new(crate::MasterKey::generate().unwrap().nonce_key());
        let n = key.mint(1_000_000).unwrap();
        assert_eq!(n.len(), 43);
        assert_ne!(n, key.mint(1_000_000).unwrap(), "random part");
        assert_eq!(key.check(&n, 1_000_000, 300_000).0, NonceState::Fresh);
        assert_eq!(key.check(&n, 1_299_999, 300_000).0, NonceState::Fresh);
        assert_eq!(key.check(&n, 1_300_000, 300_000).0, NonceState::Stale);
        assert_eq!(
            key.check(&n, 0, 300_000).0,
            NonceState::Forged,
            "far future"
        );
        let other = NonceKey::new(crate::MasterKey::generate().unwrap().nonce_key());
        assert_eq!(other.check(&n, 1_000_000, 300_000).0, NonceState::Forged);
        let mut forged = n.clone().into_bytes();
        forged[3] = if forged[3] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        assert_eq!(key.check(&forged, 1_000_000, 300_000).0, NonceState::Forged);
        for bad in ["", "short", &format!("{n}A"), &"!".repeat(43)] {
            assert_eq!(key.check(bad, 1_000_000, 300_000).0, NonceState::Forged);
        }
        assert_eq!(key.opaque().len(), 32);
        assert_ne!(key.opaque(), other.opaque());
    }

    #[test]
    fn challenge_shape() {
        let c = challenge("keycard", Algorithm::SHA256, "N", "O", true);
        assert_eq!(
            c,
            r#"Digest realm="keycard", qop="auth, auth-int", algorithm=SHA-256, nonce="N", opaque="O", charset=UTF-8, userhash=true, stale=true"#
        );
    }
}
