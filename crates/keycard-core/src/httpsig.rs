//! HTTP Message Signatures (RFC 9421) with `hmac-sha256`, and `Content-Digest` (RFC 9530).
//!
//! `Signature-Input` and `Signature` are RFC 8941 dictionaries, parsed with `sfv`; the
//! signature base is built exactly as RFC 9421 §2.5 says, from derived components
//! (§2.2) and header fields (§2.1), and ends with `@signature-params`, the canonical
//! serialization of the signature's inner list and parameters. The algorithm is the key's,
//! never the message's: an `alg` parameter must name it.
//!
//! Not here: looking up keys, remembering signatures against replay, reading the body.
//! The server does those and calls [`verify`] with the key and the request's parts.

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;
use sfv::{BareItem, FieldType, Item, ListEntry, ListSerializer, Parser};

use crate::Reason;

/// The one algorithm of shared-secret keys (RFC 9421 §3.3.3).
pub const HMAC_SHA256: &str = "hmac-sha256";
/// Signatures with a registered Ed25519 public key (RFC 9421 §3.3.6).
pub const ED25519: &str = "ed25519";
/// The longest `Signature-Input` or `Signature` value parsed.
const MAX_FIELD: usize = 8 * 1024;
/// The most components one signature may cover.
const MAX_COMPONENTS: usize = 32;

/// Why a signed request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SigError {
    /// The fields are not RFC 8941 dictionaries of the right shapes, or a component cannot
    /// be built (a missing header, an unsupported parameter, a duplicate).
    #[error("malformed signature fields")]
    Malformed,
    /// No signature names a `keyid`, or the `keyid` is unknown (the caller decides).
    #[error("unknown key")]
    UnknownKey,
    /// `alg` names another algorithm than the key's.
    #[error("algorithm does not match the key")]
    AlgMismatch,
    /// A required component is not covered.
    #[error("a required component is not covered")]
    MissingComponent,
    /// `created` is missing.
    #[error("created missing")]
    MissingCreated,
    /// `created` too far in the past, or `expires` passed.
    #[error("expired")]
    Expired,
    /// `created` in the future beyond the allowed skew.
    #[error("not yet valid")]
    NotYetValid,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `Content-Digest` does not match the body.
    #[error("content digest mismatch")]
    DigestMismatch,
}

impl SigError {
    /// The audit reason.
    pub fn reason(self) -> Reason {
        match self {
            SigError::Malformed => Reason::Malformed,
            SigError::UnknownKey => Reason::UnknownCredential,
            SigError::AlgMismatch => Reason::AlgMismatch,
            SigError::MissingComponent => Reason::MissingComponent,
            SigError::MissingCreated | SigError::Expired => Reason::Expired,
            SigError::NotYetValid => Reason::NotYetValid,
            SigError::BadSignature | SigError::DigestMismatch => Reason::BadSignature,
        }
    }
}

/// The request as a signature sees it (RFC 9421 §2.2). For a request behind a trusted
/// proxy, `scheme` and `authority` are the client's (`X-Forwarded-Proto`/`-Host`).
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    /// The method, as sent.
    pub method: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// Host and port as the client addressed them.
    pub authority: &'a str,
    /// The path, as sent (percent-encoding kept).
    pub path: &'a str,
    /// The query without `?`, as sent, if the URL has one.
    pub query: Option<&'a str>,
    /// The header fields.
    pub headers: &'a HeaderMap,
}

/// One signature of a request: its label, covered components, parameters and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    /// The dictionary key shared by `Signature-Input` and `Signature`.
    pub label: String,
    /// `keyid`.
    pub keyid: Option<String>,
    /// `alg`.
    pub alg: Option<String>,
    /// `created` (Unix seconds).
    pub created: Option<i64>,
    /// `expires` (Unix seconds).
    pub expires: Option<i64>,
    /// `nonce`.
    pub nonce: Option<String>,
    /// The signature bytes.
    pub value: Vec<u8>,
    /// The `Signature-Input` member, always an inner list (kept whole: it is serialised
    /// again for `@signature-params`).
    input: ListEntry,
}

impl Signature {
    /// The covered components with their parameters.
    fn items(&self) -> &[Item] {
        match &self.input {
            ListEntry::InnerList(l) => &l.items,
            ListEntry::Item(_) => &[],
        }
    }

    /// The covered component names (`@method`, `content-digest`, …), in order.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.items().iter().filter_map(|i| match &i.bare_item {
            BareItem::String(s) => Some(s.as_str()),
            _ => None,
        })
    }
}

fn text_param(p: &sfv::Parameters, k: &str) -> Result<Option<String>, SigError> {
    match p.get(k) {
        None => Ok(None),
        Some(BareItem::String(s)) => Ok(Some(s.as_str().to_owned())),
        Some(_) => Err(SigError::Malformed),
    }
}

fn int_param(p: &sfv::Parameters, k: &str) -> Result<Option<i64>, SigError> {
    match p.get(k) {
        None => Ok(None),
        Some(BareItem::Integer(i)) => Ok(Some(i64::from(*i))),
        Some(_) => Err(SigError::Malformed),
    }
}

/// Parses the two fields into the signatures they carry (labels present in both).
pub fn parse(signature_input: &str, signature: &str) -> Result<Vec<Signature>, SigError> {
    if signature_input.len() > MAX_FIELD || signature.len() > MAX_FIELD {
        return Err(SigError::Malformed);
    }
    let inputs: sfv::Dictionary = Parser::new(signature_input)
        .parse()
        .map_err(|_| SigError::Malformed)?;
    let values: sfv::Dictionary = Parser::new(signature)
        .parse()
        .map_err(|_| SigError::Malformed)?;
    let mut out = Vec::new();
    for (label, entry) in inputs {
        let ListEntry::InnerList(list) = &entry else {
            return Err(SigError::Malformed);
        };
        let value = match values.get(label.as_str()) {
            Some(ListEntry::Item(Item {
                bare_item: BareItem::ByteSequence(b),
                ..
            })) => b.clone(),
            Some(_) => return Err(SigError::Malformed),
            None => continue,
        };
        if list.items.len() > MAX_COMPONENTS
            || list
                .items
                .iter()
                .any(|i| !matches!(i.bare_item, BareItem::String(_)))
        {
            return Err(SigError::Malformed);
        }
        let p = &list.params;
        out.push(Signature {
            label: label.as_str().to_owned(),
            keyid: text_param(p, "keyid")?,
            alg: text_param(p, "alg")?,
            created: int_param(p, "created")?,
            expires: int_param(p, "expires")?,
            nonce: text_param(p, "nonce")?,
            value,
            input: entry,
        });
    }
    if out.is_empty() {
        return Err(SigError::Malformed);
    }
    Ok(out)
}

/// The RFC 9421 §2.5 signature base of `sig` over `req`.
pub fn signature_base(sig: &Signature, req: &RequestParts<'_>) -> Result<String, SigError> {
    let mut base = String::with_capacity(256);
    // Where each component's identifier starts and ends in `base`, to refuse duplicates.
    let mut ids: Vec<(usize, usize)> = Vec::with_capacity(sig.items().len());
    let mut quoted = String::new();
    for item in sig.items() {
        let BareItem::String(name) = &item.bare_item else {
            return Err(SigError::Malformed);
        };
        let id = component_id(item, name.as_str(), &mut quoted);
        if ids.iter().any(|&(a, b)| base.get(a..b) == Some(&*id)) {
            return Err(SigError::Malformed);
        }
        let mut first = None;
        component_values(name.as_str(), &item.params, req, &mut |v: &str| {
            if v.contains(['\n', '\r']) {
                return Err(SigError::Malformed);
            }
            let at = base.len();
            first.get_or_insert((at, at + id.len()));
            base.push_str(&id);
            base.push_str(": ");
            base.push_str(v);
            base.push('\n');
            Ok(())
        })?;
        ids.extend(first);
    }
    let mut ser = ListSerializer::new();
    ser.members([&sig.input]);
    let params = ser.finish().ok_or(SigError::Malformed)?;
    base.push_str("\"@signature-params\": ");
    base.push_str(&params);
    Ok(base)
}

/// A component's identifier as RFC 8941 serialises its item (RFC 9421 §2.5): for the usual
/// name without parameters and without a character to escape, the name in quotes, written
/// into `buf` (§4.1.6 adds nothing else); otherwise `sfv`'s serialisation.
fn component_id<'a>(item: &Item, name: &str, buf: &'a mut String) -> std::borrow::Cow<'a, str> {
    if item.params.is_empty() && !name.contains(['"', '\\']) {
        buf.clear();
        buf.push('"');
        buf.push_str(name);
        buf.push('"');
        std::borrow::Cow::Borrowed(buf.as_str())
    } else {
        std::borrow::Cow::Owned(item.serialize())
    }
}

/// Hands each value of component `name` to `emit`, in order (one, except for a
/// repeated `@query-param`).
fn component_values(
    name: &str,
    params: &sfv::Parameters,
    req: &RequestParts<'_>,
    emit: &mut dyn FnMut(&str) -> Result<(), SigError>,
) -> Result<(), SigError> {
    if name.starts_with('@') && name != "@query-param" && !params.is_empty() {
        return Err(SigError::Malformed);
    }
    match name {
        "@method" => emit(req.method),
        "@scheme" => emit(&req.scheme.to_ascii_lowercase()),
        "@authority" => emit(&req.authority.to_ascii_lowercase()),
        "@path" => emit(if req.path.is_empty() { "/" } else { req.path }),
        "@query" => emit(&format!("?{}", req.query.unwrap_or(""))),
        "@request-target" => match req.query {
            Some(q) => emit(&format!("{}?{q}", req.path)),
            None => emit(req.path),
        },
        "@target-uri" => emit(&format!(
            "{}://{}{}{}",
            req.scheme.to_ascii_lowercase(),
            req.authority.to_ascii_lowercase(),
            req.path,
            req.query.map(|q| format!("?{q}")).unwrap_or_default()
        )),
        "@query-param" => {
            let wanted = match (params.len(), params.get("name")) {
                (1, Some(BareItem::String(n))) => n.as_str(),
                _ => return Err(SigError::Malformed),
            };
            let mut any = false;
            for (k, v) in form_urlencoded::parse(req.query.unwrap_or("").as_bytes()) {
                if k == wanted {
                    any = true;
                    emit(&query_encode(&v))?;
                }
            }
            if any {
                Ok(())
            } else {
                Err(SigError::Malformed)
            }
        }
        // Response-only, or unknown derived components.
        n if n.starts_with('@') => Err(SigError::Malformed),
        field => {
            // Field names are lowercase (RFC 9421 §2.1); parameters (sf, key, bs, req, tr)
            // are not supported: refused rather than guessed.
            if !params.is_empty() || field.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(SigError::Malformed);
            }
            let mut lines = req.headers.get_all(field).iter();
            let first = lines.next().ok_or(SigError::Malformed)?;
            fn trim(l: &http::HeaderValue) -> Result<&str, SigError> {
                l.to_str()
                    .map(|v| v.trim_matches([' ', '\t']))
                    .map_err(|_| SigError::Malformed)
            }
            let first = trim(first)?;
            match lines.next() {
                None => emit(first),
                Some(second) => {
                    let mut joined = format!("{first}, {}", trim(second)?);
                    for l in lines {
                        joined.push_str(", ");
                        joined.push_str(trim(l)?);
                    }
                    emit(&joined)
                }
            }
        }
    }
}

/// Re-encodes a decoded query value the way RFC 9421 §2.2.8 wants it: form-urlencoded,
/// with a space as `%20`.
fn query_encode(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

fn seal_context(key_id: &str) -> Vec<u8> {
    let mut c = b"hmac-key\0".to_vec();
    c.extend_from_slice(key_id.as_bytes());
    c
}

/// Seals an HMAC secret for storage, bound to its `key_id`.
pub fn seal_secret(
    sealer: &crate::Sealer,
    key_id: &str,
    secret: &[u8],
) -> Result<Vec<u8>, crate::SealError> {
    sealer.seal(&seal_context(key_id), secret)
}

/// Opens an HMAC secret sealed for `key_id`.
pub fn open_secret(
    sealer: &crate::Sealer,
    key_id: &str,
    sealed: &[u8],
) -> Result<crate::SecretBytes, crate::SealError> {
    sealer.open(&seal_context(key_id), sealed)
}

/// HMAC-SHA256 of `base` under `key` (for `keycard sign` and tests).
pub fn sign_hmac(key: &[u8], base: &str) -> Vec<u8> {
    SharedKey::new(key).sign(base)
}

/// A shared secret made ready for HMAC-SHA256 once (its inner and outer pads run through
/// SHA-256's compression function, as for [`crate::KeyedHasher`]), so that a verifier
/// holding it in a cache does no key set-up per request. Its `Debug` shows nothing of the
/// secret; the prepared state is zeroized on drop.
pub struct SharedKey(crate::keys::PreparedHmac);

impl SharedKey {
    /// Prepares `secret`.
    pub fn new(secret: &[u8]) -> Self {
        Self(crate::keys::PreparedHmac::new(secret))
    }

    /// HMAC-SHA256 of `base`.
    pub fn sign(&self, base: &str) -> Vec<u8> {
        self.0.mac(&[base.as_bytes()]).to_vec()
    }

    /// Whether `mac` is the HMAC-SHA256 of `base`, compared in constant time (aws-lc's
    /// `CRYPTO_memcmp`; a MAC's length is public).
    fn verify(&self, base: &str, mac: &[u8]) -> bool {
        let expected = self.0.mac(&[base.as_bytes()]);
        aws_lc_rs::constant_time::verify_slices_are_equal(&expected, mac).is_ok()
    }
}

/// The key a signature is verified with: a shared secret (`hmac-sha256`) or a registered
/// Ed25519 public key (`ed25519`). The algorithm is the key's.
#[derive(Debug, Clone, Copy)]
pub enum VerifyingKey<'a> {
    /// A shared secret.
    Hmac(&'a SharedKey),
    /// A raw 32-byte Ed25519 public key.
    Ed25519(&'a [u8; 32]),
}

impl<'a> From<&'a SharedKey> for VerifyingKey<'a> {
    fn from(k: &'a SharedKey) -> Self {
        VerifyingKey::Hmac(k)
    }
}

impl VerifyingKey<'_> {
    /// The RFC 9421 algorithm name.
    pub fn alg(&self) -> &'static str {
        match self {
            VerifyingKey::Hmac(_) => HMAC_SHA256,
            VerifyingKey::Ed25519(_) => ED25519,
        }
    }
}

/// The raw Ed25519 public key of a PEM `PUBLIC KEY` (SubjectPublicKeyInfo, RFC 8410).
pub fn ed25519_public_key_from_pem(pem: &[u8]) -> Option<[u8; 32]> {
    use rustls_pki_types::SubjectPublicKeyInfoDer;
    use rustls_pki_types::pem::PemObject;
    let spki = SubjectPublicKeyInfoDer::from_pem_slice(pem).ok()?;
    // SEQUENCE { SEQUENCE { OID 1.3.101.112 } BIT STRING (0 unused bits) 32 bytes }.
    const PREFIX: [u8; 12] = [
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    let der = spki.as_ref();
    let key = der.strip_prefix(&PREFIX[..])?;
    <[u8; 32]>::try_from(key).ok()
}

/// An Ed25519 signature of `base` with the PKCS#8 private key in `pem` (for `keycard
/// sign`); `None` when `pem` is not an Ed25519 private key.
pub fn sign_ed25519(pem: &[u8], base: &str) -> Option<Vec<u8>> {
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
    use rustls_pki_types::PrivatePkcs8KeyDer;
    use rustls_pki_types::pem::PemObject;
    let der = PrivatePkcs8KeyDer::from_pem_slice(pem).ok()?;
    let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_pkcs8_der()).ok()?;
    let _ = pair.public_key();
    Some(pair.sign(base.as_bytes()).as_ref().to_vec())
}

impl std::fmt::Debug for SharedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedKey(hmac-sha256, ..)")
    }
}

/// What a verification requires besides the signature.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Components every signature must cover. `@query` counts only when the URL has a
    /// query, `content-digest` only when there is a body.
    pub required: Vec<String>,
    /// How far `created` may be from now, either way, in seconds.
    pub max_skew: i64,
}

impl Policy {
    /// The default: `@method`, `@authority`, `@path`, `@query`, `content-digest`.
    pub fn with_skew(max_skew: i64) -> Self {
        Self {
            required: ["@method", "@authority", "@path", "@query", "content-digest"]
                .map(str::to_owned)
                .to_vec(),
            max_skew,
        }
    }
}

/// Verifies `sig` over `req` with the shared secret `key`, at `now`, under `policy`.
/// `has_body`: whether the request carries a body (then `content-digest` is required).
pub fn verify<'k>(
    sig: &Signature,
    key: impl Into<VerifyingKey<'k>>,
    req: &RequestParts<'_>,
    has_body: bool,
    policy: &Policy,
    now: i64,
) -> Result<(), SigError> {
    let key = key.into();
    if sig.alg.as_deref().is_some_and(|a| a != key.alg()) {
        return Err(SigError::AlgMismatch);
    }
    let covered: Vec<&str> = sig.components().collect();
    for r in &policy.required {
        let needed = match r.as_str() {
            "@query" => req.query.is_some(),
            "content-digest" => has_body,
            _ => true,
        };
        if needed && !covered.contains(&r.as_str()) {
            return Err(SigError::MissingComponent);
        }
    }
    let created = sig.created.ok_or(SigError::MissingCreated)?;
    if created > now.saturating_add(policy.max_skew) {
        return Err(SigError::NotYetValid);
    }
    if created < now.saturating_sub(policy.max_skew) {
        return Err(SigError::Expired);
    }
    if sig.expires.is_some_and(|e| e <= now) {
        return Err(SigError::Expired);
    }
    let base = signature_base(sig, req)?;
    match key {
        VerifyingKey::Hmac(k) => {
            if k.verify(&base, &sig.value) {
                Ok(())
            } else {
                Err(SigError::BadSignature)
            }
        }
        VerifyingKey::Ed25519(pk) => {
            aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ED25519, pk)
                .verify(base.as_bytes(), &sig.value)
                .map_err(|_| SigError::BadSignature)
        }
    }
}

/// The `Content-Digest` value for `body` (RFC 9530), with `sha-256`.
pub fn content_digest(body: &[u8]) -> String {
    format!(
        "sha-256=:{}:",
        STANDARD.encode(digest::digest(&digest::SHA256, body))
    )
}

/// Checks `Content-Digest` against `body`: every `sha-256` and `sha-512` member must match,
/// and there must be at least one of them (other algorithms are ignored, RFC 9530 §2).
pub fn check_content_digest(field: &str, body: &[u8]) -> Result<(), SigError> {
    if field.len() > MAX_FIELD {
        return Err(SigError::Malformed);
    }
    let dict: sfv::Dictionary = Parser::new(field)
        .parse()
        .map_err(|_| SigError::Malformed)?;
    let mut checked = false;
    for (alg, entry) in &dict {
        let algorithm = match alg.as_str() {
            "sha-256" => &digest::SHA256,
            "sha-512" => &digest::SHA512,
            _ => continue,
        };
        let ListEntry::Item(Item {
            bare_item: BareItem::ByteSequence(want),
            ..
        }) = entry
        else {
            return Err(SigError::Malformed);
        };
        if !crate::constant_time_eq(digest::digest(algorithm, body).as_ref(), want) {
            return Err(SigError::DigestMismatch);
        }
        checked = true;
    }
    if checked {
        Ok(())
    } else {
        Err(SigError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component's identifier is exactly `sfv`'s serialisation of its item, on the quoted
    /// fast path (plain names) and off it (parameters, characters to escape).
    #[test]
    fn component_ids_are_the_canonical_serialisation() {
        let input = r#"sig=("@method" "content-digest" "@query-param";name="Pet" "a\"b" "c\\d" "x";bs "");created=1"#;
        let dict: sfv::Dictionary = Parser::new(input).parse().unwrap();
        let Some(ListEntry::InnerList(list)) = dict.get("sig") else {
            panic!("not an inner list")
        };
        assert_eq!(list.items.len(), 7);
        let mut buf = String::new();
        let mut fast = 0;
        for item in &list.items {
            let BareItem::String(name) = &item.bare_item else {
                panic!("not a string")
            };
            let id = component_id(item, name.as_str(), &mut buf);
            fast += usize::from(matches!(id, std::borrow::Cow::Borrowed(_)));
            assert_eq!(&*id, item.serialize(), "{name:?}");
        }
        assert_eq!(fast, 3, "plain names take the fast path, the others do not");
    }

    /// The request of RFC 9421 Appendix B.2.
    fn b2_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("host", "example.com".parse().unwrap());
        h.insert("date", "Tue, 20 Apr 2021 02:07:55 GMT".parse().unwrap());
        h.insert("content-type", "application/json".parse().unwrap());
        h.insert(
            "content-digest",
            "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:"
                .parse()
                .unwrap(),
        );
        h.insert("content-length", "18".parse().unwrap());
        h
    }

    fn b2_request(h: &HeaderMap) -> RequestParts<'_> {
        RequestParts {
            method: "POST",
            scheme: "https",
            authority: "example.com",
            path: "/foo",
            query: Some("param=Value&Pet=dog"),
            headers: h,
        }
    }

    /// RFC 9421 Appendix B.1.5: the shared secret `test-shared-secret`.
    const B15_KEY: &str =
        "uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ==";
    const B25_INPUT: &str = r#"sig-b25=("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret""#;
    const B25_SIG: &str = "sig-b25=:pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=:";

    /// RFC 9421 Appendix B.2.5: signing a request with HMAC-SHA256.
    #[test]
    fn rfc9421_appendix_b_2_5() {
        let h = b2_headers();
        let req = b2_request(&h);
        let sigs = parse(B25_INPUT, B25_SIG).unwrap();
        let sig = &sigs[0];
        assert_eq!(sig.keyid.as_deref(), Some("test-shared-secret"));
        assert_eq!(sig.created, Some(1_618_884_473));
        let base = signature_base(sig, &req).unwrap();
        assert_eq!(
            base,
            "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n\"@authority\": example.com\n\"content-type\": application/json\n\"@signature-params\": (\"date\" \"@authority\" \"content-type\");created=1618884473;keyid=\"test-shared-secret\""
        );
        let key = STANDARD.decode(B15_KEY).unwrap();
        assert_eq!(
            STANDARD.encode(sign_hmac(&key, &base)),
            "pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8="
        );
        // B.2.5 covers none of the default requirements; with a policy that asks only for
        // what it covers, and at its own time, it verifies.
        let policy = Policy {
            required: vec!["date".into()],
            max_skew: 60,
        };
        assert_eq!(
            verify(
                sig,
                &SharedKey::new(&key),
                &req,
                true,
                &policy,
                1_618_884_473
            ),
            Ok(())
        );
        assert_eq!(
            verify(
                sig,
                &SharedKey::new(b"another key"),
                &req,
                true,
                &policy,
                1_618_884_473
            ),
            Err(SigError::BadSignature)
        );
        // A cut or lengthened MAC never matches (the comparison covers the length too).
        for value in [&sig.value[..31], &[sig.value.as_slice(), &[0]].concat()[..]] {
            let mut changed = sig.clone();
            changed.value = value.to_vec();
            assert_eq!(
                verify(
                    &changed,
                    &SharedKey::new(&key),
                    &req,
                    true,
                    &policy,
                    1_618_884_473
                ),
                Err(SigError::BadSignature)
            );
        }
        // The default policy refuses it: @method and the rest are not covered.
        assert_eq!(
            verify(
                sig,
                &SharedKey::new(&key),
                &req,
                true,
                &Policy::with_skew(60),
                1_618_884_473
            ),
            Err(SigError::MissingComponent)
        );
    }

    /// RFC 9421 Appendix B.2.6: Ed25519 with `test-key-ed25519` (B.1.4). Ed25519 is
    /// deterministic, so signing the base with the B.1.4 private key reproduces the RFC's
    /// signature exactly, and the B.1.4 public key verifies it.
    #[test]
    fn rfc9421_b26_ed25519() {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        const INPUT: &str = r#"sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519""#;
        const SIG: &str = "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:";
        let h = b2_headers();
        let req = b2_request(&h);
        let sig = parse(INPUT, SIG).unwrap().remove(0);
        let base = signature_base(&sig, &req).unwrap();
        assert_eq!(
            base,
            "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n\"@method\": POST\n\"@path\": /foo\n\"@authority\": example.com\n\"content-type\": application/json\n\"content-length\": 18\n\"@signature-params\": (\"date\" \"@method\" \"@path\" \"@authority\" \"content-type\" \"content-length\");created=1618884473;keyid=\"test-key-ed25519\""
        );
        let seed = URL_SAFE_NO_PAD
            .decode("n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU")
            .unwrap();
        let pair = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
        let public: [u8; 32] = URL_SAFE_NO_PAD
            .decode("JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs")
            .unwrap()
            .try_into()
            .unwrap();
        use aws_lc_rs::signature::KeyPair;
        assert_eq!(pair.public_key().as_ref(), &public[..]);
        assert_eq!(
            STANDARD.encode(pair.sign(base.as_bytes())),
            "wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw=="
        );
        let policy = Policy {
            required: vec!["@method".into()],
            max_skew: 60,
        };
        let key = VerifyingKey::Ed25519(&public);
        assert_eq!(
            verify(&sig, key, &req, true, &policy, 1_618_884_473),
            Ok(())
        );
        // The algorithm is the key's: the same signature claimed as HMAC is refused, and
        // an HMAC key cannot verify an Ed25519 signature.
        let claimed = parse(&format!("{INPUT};alg=\"hmac-sha256\""), SIG)
            .unwrap()
            .remove(0);
        assert_eq!(
            verify(&claimed, key, &req, true, &policy, 1_618_884_473),
            Err(SigError::AlgMismatch)
        );
        assert_eq!(
            verify(
                &sig,
                &SharedKey::new(&public),
                &req,
                true,
                &policy,
                1_618_884_473
            ),
            Err(SigError::BadSignature)
        );
        let mut other = public;
        other[0] ^= 1;
        assert_eq!(
            verify(
                &sig,
                VerifyingKey::Ed25519(&other),
                &req,
                true,
                &policy,
                1_618_884_473
            ),
            Err(SigError::BadSignature)
        );
    }

    /// RFC 9530 Appendix / RFC 9421 B.2: the sha-512 digest of `{"hello": "world"}`.
    #[test]
    fn content_digest_of_the_b2_body() {
        let field = b2_headers()
            .get("content-digest")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let body = br#"{"hello": "world"}"#;
        assert_eq!(check_content_digest(&field, body), Ok(()));
        assert_eq!(
            check_content_digest(&field, br#"{"hello": "World"}"#),
            Err(SigError::DigestMismatch)
        );
        assert_eq!(check_content_digest(&content_digest(body), body), Ok(()));
        assert_eq!(
            check_content_digest("md5=:AAAA:", body),
            Err(SigError::Malformed)
        );
        assert_eq!(
            check_content_digest("sha-256=abc", body),
            Err(SigError::Malformed)
        );
    }

    fn signed(components: &str, params: &str, key: &[u8], req: &RequestParts<'_>) -> Signature {
        let input = format!("sig1=({components}){params}");
        let placeholder = format!("sig1=:{}:", STANDARD.encode([0u8; 32]));
        let sig = parse(&input, &placeholder).unwrap().remove(0);
        let mac = sign_hmac(key, &signature_base(&sig, req).unwrap());
        parse(&input, &format!("sig1=:{}:", STANDARD.encode(mac)))
            .unwrap()
            .remove(0)
    }

    #[test]
    fn derived_components_and_refusals() {
        let mut h = b2_headers();
        h.insert(
            "content-digest",
            content_digest(br#"{"hello": "world"}"#).parse().unwrap(),
        );
        let req = b2_request(&h);
        let key = b"0123456789abcdef0123456789abcdef";
        let all = r#""@method" "@authority" "@path" "@query" "content-digest""#;
        let now = 1_700_000_000;
        let params = format!(";created={now};keyid=\"k1\";nonce=\"n1\"");
        let sig = signed(all, &params, key, &req);
        let policy = Policy::with_skew(60);
        assert_eq!(
            verify(&sig, &SharedKey::new(key), &req, true, &policy, now),
            Ok(())
        );
        assert_eq!(sig.nonce.as_deref(), Some("n1"));
        let base = signature_base(&sig, &req).unwrap();
        assert!(base.starts_with("\"@method\": POST\n\"@authority\": example.com\n\"@path\": /foo\n\"@query\": ?param=Value&Pet=dog\n"));

        // created two minutes old, or in the future; expires passed.
        assert_eq!(
            verify(&sig, &SharedKey::new(key), &req, true, &policy, now + 120),
            Err(SigError::Expired)
        );
        assert_eq!(
            verify(&sig, &SharedKey::new(key), &req, true, &policy, now - 120),
            Err(SigError::NotYetValid)
        );
        let exp = signed(
            all,
            &format!(";created={now};expires={}", now + 10),
            key,
            &req,
        );
        assert_eq!(
            verify(&exp, &SharedKey::new(key), &req, true, &policy, now + 10),
            Err(SigError::Expired)
        );
        let no_created = signed(all, ";keyid=\"k1\"", key, &req);
        assert_eq!(
            verify(&no_created, &SharedKey::new(key), &req, true, &policy, now),
            Err(SigError::MissingCreated)
        );
        // alg from the message must be the key's.
        let pss = signed(
            all,
            &format!(";created={now};alg=\"rsa-pss-sha512\""),
            key,
            &req,
        );
        assert_eq!(
            verify(&pss, &SharedKey::new(key), &req, true, &policy, now),
            Err(SigError::AlgMismatch)
        );
        let hs = signed(
            all,
            &format!(";created={now};alg=\"hmac-sha256\""),
            key,
            &req,
        );
        assert_eq!(
            verify(&hs, &SharedKey::new(key), &req, true, &policy, now),
            Ok(())
        );
        // @method not covered.
        let partial = signed(
            r#""@authority" "@path" "@query" "content-digest""#,
            &params,
            key,
            &req,
        );
        assert_eq!(
            verify(&partial, &SharedKey::new(key), &req, true, &policy, now),
            Err(SigError::MissingComponent)
        );
        // content-digest is required only with a body; @query only with a query.
        let bare = signed(r#""@method" "@authority" "@path""#, &params, key, &req);
        assert_eq!(
            verify(&bare, &SharedKey::new(key), &req, true, &policy, now),
            Err(SigError::MissingComponent)
        );
        let no_query = RequestParts { query: None, ..req };
        let get = signed(r#""@method" "@authority" "@path""#, &params, key, &no_query);
        assert_eq!(
            verify(&get, &SharedKey::new(key), &no_query, false, &policy, now),
            Ok(())
        );
        // Method, path, query or a covered header changed: the signature fails.
        for changed in [
            RequestParts {
                method: "PUT",
                ..req
            },
            RequestParts {
                path: "/bar",
                ..req
            },
            RequestParts {
                query: Some("param=Value&Pet=cat"),
                ..req
            },
            RequestParts {
                authority: "evil.example",
                ..req
            },
        ] {
            assert_eq!(
                verify(&sig, &SharedKey::new(key), &changed, true, &policy, now),
                Err(SigError::BadSignature)
            );
        }
        let mut other = h.clone();
        other.insert("content-digest", content_digest(b"other").parse().unwrap());
        let req2 = RequestParts {
            headers: &other,
            ..req
        };
        assert_eq!(
            verify(&sig, &SharedKey::new(key), &req2, true, &policy, now),
            Err(SigError::BadSignature)
        );
        // A covered header that is absent, a duplicate component, an unknown derived one.
        for bad in [
            r#""x-missing""#,
            r#""@method" "@method""#,
            r#""@status""#,
            r#""Date""#,
        ] {
            let input = format!("sig1=({bad});created={now}");
            let s = parse(&input, "sig1=:AAAA:").unwrap().remove(0);
            assert_eq!(signature_base(&s, &req), Err(SigError::Malformed), "{bad}");
        }
        // @query-param (RFC 9421 §2.2.8).
        let qp = signed(r#""@query-param";name="Pet""#, &params, key, &req);
        assert!(
            signature_base(&qp, &req)
                .unwrap()
                .starts_with("\"@query-param\";name=\"Pet\": dog\n")
        );
    }

    #[test]
    fn malformed_fields_are_refused() {
        for (input, sig) in [
            ("", ""),
            ("sig1=(\"@method\"", "sig1=:AAAA:"),
            ("sig1=\"@method\"", "sig1=:AAAA:"),
            ("sig1=(\"@method\");created=1", "sig1=\"AAAA\""),
            ("sig1=(\"@method\");created=1", "sig2=:AAAA:"),
            ("sig1=(@method);created=1", "sig1=:AAAA:"),
            ("sig1=(\"@method\");created=\"1\"", "sig1=:AAAA:"),
            ("sig1=(\"@method\");keyid=1", "sig1=:AAAA:"),
        ] {
            assert!(parse(input, sig).is_err(), "{input} / {sig}");
        }
        assert!(parse(&format!("sig1=({})", "\"a\" ".repeat(33)), "sig1=:AAAA:").is_err());
        assert!(parse(&"a".repeat(MAX_FIELD + 1), "sig1=:AAAA:").is_err());
        // Two signatures: both parsed; a label without a value is skipped.
        let two = parse(
            "a=(\"@method\");created=1;keyid=\"x\", b=(\"@path\");created=2, c=();created=3",
            "a=:AAAA:, b=:AAAA:",
        )
        .unwrap();
        assert_eq!(two.len(), 2);
        assert_eq!(two[1].label, "b");
    }
}
