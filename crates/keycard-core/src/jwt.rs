//! JWT verification for external issuers (RFC 7519, RFC 7515, RFC 7517), to RFC 8725: the
//! algorithm comes from the key, never from the token; `none` never; only compact JWS; no
//! header may point at key material elsewhere (`jku`, `x5u`, `jwk`, `x5c`); unknown `crit`
//! refused; duplicate JSON keys refused; size bounded before any decoding or crypto.
//!
//! Pure: the caller passes the issuer's key set (parsed from a JWKS), the rules and `now`.

use std::fmt;

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ED25519, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents,
    UnparsedPublicKey,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

use crate::{InvalidScope, Method, Principal, Reason, Scopes};

/// The longest token accepted; anything longer is refused before decoding.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// A signature algorithm keycard verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    /// ECDSA P-256 with SHA-256 (RFC 7518 §3.4).
    Es256,
    /// Ed25519 (RFC 8037).
    EdDsa,
    /// RSASSA-PKCS1-v1_5 with SHA-256, keys of 2048 bits or more.
    Rs256,
}

impl Alg {
    /// The JOSE name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
            Alg::Rs256 => "RS256",
        }
    }

    /// Parses a JOSE name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ES256" => Some(Alg::Es256),
            "EdDSA" => Some(Alg::EdDsa),
            "RS256" => Some(Alg::Rs256),
            _ => None,
        }
    }
}

/// Why a token was refused. Each maps to its own audit reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error("token too large")]
    TooLarge,
    /// Five parts: an encrypted JWT (JWE), not accepted.
    #[error("JWE is not accepted")]
    Jwe,
    /// Not three base64url parts of JSON objects.
    #[error("malformed token")]
    Malformed,
    /// A JSON object with the same key twice.
    #[error("duplicate JSON key")]
    DuplicateKey,
    /// `alg: none` (any case).
    #[error("alg none")]
    AlgNone,
    /// The header's `alg` is not the key's.
    #[error("algorithm does not match the key")]
    AlgMismatch,
    /// `jku`, `x5u`, `jwk` or `x5c` in the header.
    #[error("header points at key material")]
    ForeignKeyHeader,
    /// A `crit` header parameter keycard does not understand.
    #[error("unknown critical header")]
    UnknownCrit,
    /// A `kid` with characters a key id never needs.
    #[error("bad kid")]
    BadKid,
    /// No key with that `kid` (or no `kid` and several keys).
    #[error("unknown kid")]
    UnknownKid,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `exp` is missing.
    #[error("exp missing")]
    MissingExp,
    /// Past `exp`.
    #[error("expired")]
    Expired,
    /// Before `nbf` (or `iat` in the future).
    #[error("not yet valid")]
    NotYetValid,
    /// `iss` is not the issuer's.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` missing or not one of the audiences.
    #[error("wrong audience")]
    WrongAudience,
    /// The subject claim is missing or not a string, or the scopes claim is invalid.
    #[error("bad claims")]
    BadClaims,
    /// Not an access token (`typ` is not `at+jwt`): an ID token, say (RFC 9068 §4).
    #[error("not an access token")]
    WrongType,
}

impl JwtError {
    /// The audit reason.
    pub fn reason(self) -> Reason {
        match self {
            JwtError::TooLarge => Reason::TokenTooLarge,
            JwtError::Jwe => Reason::Jwe,
            JwtError::Malformed | JwtError::BadClaims => Reason::Malformed,
            JwtError::DuplicateKey => Reason::DuplicateKey,
            JwtError::AlgNone => Reason::AlgNone,
            JwtError::AlgMismatch => Reason::AlgMismatch,
            JwtError::ForeignKeyHeader => Reason::ForeignKeyHeader,
            JwtError::UnknownCrit => Reason::UnknownCrit,
            JwtError::BadKid => Reason::BadKid,
            JwtError::UnknownKid => Reason::UnknownKid,
            JwtError::BadSignature => Reason::BadSignature,
            JwtError::MissingExp | JwtError::Expired => Reason::Expired,
            JwtError::NotYetValid => Reason::NotYetValid,
            JwtError::WrongIssuer => Reason::WrongIssuer,
            JwtError::WrongAudience => Reason::WrongAudience,
            JwtError::WrongType => Reason::WrongTokenType,
        }
    }
}

/// A public key from a JWKS, bound to its one algorithm.
#[derive(Clone)]
pub struct Jwk {
    kid: Option<String>,
    alg: Alg,
    key: KeyMaterial,
}

#[derive(Clone)]
enum KeyMaterial {
    /// Uncompressed P-256 point (0x04 ‖ x ‖ y) or raw Ed25519 key.
    Raw(Vec<u8>),
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
}

impl fmt::Debug for Jwk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwk")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl Jwk {
    /// The key id.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The algorithm the key is used with.
    pub fn alg(&self) -> Alg {
        self.alg
    }

    fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        match (&self.key, self.alg) {
            (KeyMaterial::Raw(k), Alg::Es256) => {
                UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, k)
                    .verify(message, sig)
                    .is_ok()
            }
            (KeyMaterial::Raw(k), Alg::EdDsa) => UnparsedPublicKey::new(&ED25519, k)
                .verify(message, sig)
                .is_ok(),
            (KeyMaterial::Rsa { n, e }, Alg::Rs256) => RsaPublicKeyComponents { n, e }
                .verify(&RSA_PKCS1_2048_8192_SHA256, message, sig)
                .is_ok(),
            _ => false,
        }
    }

    /// Parses one JWK object; `None` for keys keycard does not use for verification (other
    /// types, `use` other than `sig`, private parts present, bad sizes).
    fn from_value(v: &Value) -> Option<Self> {
        let o = v.as_object()?;
        let s = |k: &str| o.get(k).and_then(Value::as_str);
        if s("use").is_some_and(|u| u != "sig") || o.contains_key("d") {
            return None;
        }
        let b64 = |k: &str| s(k).and_then(|t| URL_SAFE_NO_PAD.decode(t).ok());
        let (alg, key) = match (s("kty")?, s("crv")) {
            ("EC", Some("P-256")) => {
                let (x, y) = (b64("x")?, b64("y")?);
                if x.len() != 32 || y.len() != 32 {
                    return None;
                }
                let mut p = Vec::with_capacity(65);
                p.push(4);
                p.extend_from_slice(&x);
                p.extend_from_slice(&y);
                (Alg::Es256, KeyMaterial::Raw(p))
            }
            ("OKP", Some("Ed25519")) => {
                let x = b64("x")?;
                if x.len() != 32 {
                    return None;
                }
                (Alg::EdDsa, KeyMaterial::Raw(x))
            }
            ("RSA", _) => {
                let (n, e) = (b64("n")?, b64("e")?);
                if n.len() < 256 {
                    return None;
                }
                (Alg::Rs256, KeyMaterial::Rsa { n, e })
            }
            _ => return None,
        };
        // A declared alg must be the one the key type implies.
        if let Some(a) = s("alg")
            && Alg::parse(a) != Some(alg)
        {
            return None;
        }
        Some(Self {
            kid: s("kid").map(str::to_owned),
            alg,
            key,
        })
    }
}

/// An issuer's verification keys.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<Jwk>,
}

impl KeySet {
    /// Parses a JWKS document (`{"keys": [...]}`), keeping the usable signature keys.
    pub fn from_json(text: &str) -> Result<Self, JwtError> {
        let doc: Value = serde_json::from_str(text).map_err(|_| JwtError::Malformed)?;
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(JwtError::Malformed)?
            .iter()
            .filter_map(Jwk::from_value)
            .collect();
        Ok(Self { keys })
    }

    /// The keys.
    pub fn keys(&self) -> &[Jwk] {
        &self.keys
    }

    /// Whether a key with `kid` is present.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

/// What a token from one issuer must satisfy.
#[derive(Debug, Clone)]
pub struct Rules {
    /// `iss` must equal this.
    pub issuer: String,
    /// `aud` must contain one of these.
    pub audiences: Vec<String>,
    /// Clock leeway for `exp`, `nbf`, `iat`, in seconds.
    pub leeway_secs: i64,
    /// The claim that names the subject (default `sub`).
    pub subject_claim: String,
    /// The claim that holds the scopes (default: `scope`, else `scp`).
    pub scopes_claim: Option<String>,
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The subject.
    pub subject: String,
    /// The scopes.
    pub scopes: Scopes,
    /// `jti`, when present.
    pub jti: Option<String>,
    /// The `kid` of the key that verified it.
    pub kid: Option<String>,
    /// `cnf.x5t#S256`: the client certificate the token is bound to (RFC 8705 §3.1).
    pub x5t_s256: Option<String>,
    /// The token says it was issued to a client for itself: its `gty` is
    /// `client_credentials` (keycard's) or `client-credentials` (Auth0's).
    pub client_credentials: bool,
}

/// Whether a token's `gty` claim says it came from a client credentials grant: keycard's
/// `client_credentials`, or Auth0's `client-credentials`.
pub(crate) fn is_client_credentials(claims: &Map<String, Value>) -> bool {
    matches!(
        claims.get("gty").and_then(Value::as_str),
        Some("client_credentials" | "client-credentials")
    )
}

/// The certificate thumbprint of a token's `cnf` claim (RFC 8705 §3.1). A `cnf` that
/// binds the token some other way (DPoP's `jkt`, a `jwk`) cannot be honoured here, so the
/// token is refused rather than accepted unbound.
pub(crate) fn confirmation(claims: &Map<String, Value>) -> Result<Option<String>, JwtError> {
    match claims.get("cnf") {
        None => Ok(None),
        Some(cnf) => cnf
            .get("x5t#S256")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(|t| Some(t.to_owned()))
            .ok_or(JwtError::BadClaims),
    }
}

impl Verified {
    /// The principal of a request that presented this token from `issuer`; its credential
    /// id is the token's `jti`, else the issuer (reference §5).
    pub fn principal(&self, issuer: &str) -> Principal {
        let p = Principal::new(
            self.subject.as_str().into(),
            Method::Jwt,
            self.scopes.clone(),
            self.jti.as_deref().unwrap_or(issuer).into(),
        )
        .with_issuer(issuer.into());
        if self.client_credentials {
            p.issued_to_client()
        } else {
            p
        }
    }
}

/// Whether a bearer token has the shape of a JWT (three or five dot-separated parts).
pub fn looks_like_jwt(token: &str) -> bool {
    let dots = token.bytes().filter(|b| *b == b'.').count();
    dots == 2 || dots == 4
}

/// The unverified `iss` of a token, to choose the issuer whose keys verify it. Nothing
/// else may be trusted before [`verify`].
pub fn peek_issuer(token: &str) -> Result<String, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::TooLarge);
    }
    if token.bytes().filter(|b| *b == b'.').count() == 4 {
        return Err(JwtError::Jwe);
    }
    let payload = token.split('.').nth(1).ok_or(JwtError::Malformed)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| JwtError::Malformed)?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)?;
    v.get("iss")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or(JwtError::WrongIssuer)
}

/// A JSON object that refuses duplicate keys (RFC 8725 §3.1 parsers must not guess).
struct StrictObject(Map<String, Value>);

impl<'de> Deserialize<'de> for StrictObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrictObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<StrictObject, A::Error> {
                let mut out = Map::new();
                while let Some((k, v)) = m.next_entry::<String, Value>()? {
                    if out.contains_key(&k) {
                        return Err(serde::de::Error::custom("duplicate key"));
                    }
                    out.insert(k, v);
                }
                Ok(StrictObject(out))
            }
        }
        d.deserialize_map(V)
    }
}

fn json_object(part: &str) -> Result<Map<String, Value>, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::Malformed)?;
    match serde_json::from_slice::<StrictObject>(&bytes) {
        Ok(o) => Ok(o.0),
        Err(e) if e.to_string().contains("duplicate key") => Err(JwtError::DuplicateKey),
        Err(_) => Err(JwtError::Malformed),
    }
}

fn kid_is_sane(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= 128
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:=+".contains(&b))
        && !kid.contains("..")
}

/// Verifies a compact JWS from an issuer whose keys are `keys`, under `rules`, at `now`
/// (Unix seconds).
pub fn verify(token: &str, keys: &KeySet, rules: &Rules, now: i64) -> Result<Verified, JwtError> {
    let (_, claims, kid) = verify_signed(token, keys, rules, now)?;
    check_audience(&claims, |a| rules.audiences.iter().any(|w| w == a))?;
    let subject = claims
        .get(&rules.subject_claim)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(JwtError::BadClaims)?
        .to_owned();
    let scopes = scopes_of(&claims, rules).map_err(|_| JwtError::BadClaims)?;
    Ok(Verified {
        subject,
        scopes,
        jti: claims.get("jti").and_then(Value::as_str).map(str::to_owned),
        kid,
        x5t_s256: confirmation(&claims)?,
        client_credentials: is_client_credentials(&claims),
    })
}

/// A token's header, its claims, and the `kid` of the key that verified it.
pub(crate) type Checked = (Map<String, Value>, Map<String, Value>, Option<String>);

/// The header and claims of a token whose signature, `exp`, `nbf`, `iat` and `iss` were
/// checked (everything but the audience), with the `kid` of the key that verified it.
pub(crate) fn verify_signed(
    token: &str,
    keys: &KeySet,
    rules: &Rules,
    now: i64,
) -> Result<Checked, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::TooLarge);
    }
    let dots = token.bytes().filter(|b| *b == b'.').count();
    if dots == 4 {
        return Err(JwtError::Jwe);
    }
    let mut parts = token.splitn(3, '.');
    let (Some(h), Some(p), Some(sig)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(JwtError::Malformed);
    };
    if dots != 2 {
        return Err(JwtError::Malformed);
    }
    let header = json_object(h)?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(JwtError::Malformed)?;
    if alg.eq_ignore_ascii_case("none") {
        return Err(JwtError::AlgNone);
    }
    if ["jku", "x5u", "jwk", "x5c"]
        .iter()
        .any(|k| header.contains_key(*k))
    {
        return Err(JwtError::ForeignKeyHeader);
    }
    if header.contains_key("crit") {
        // keycard understands no extension: any `crit` names one it must refuse (RFC 7515 §4.1.11).
        return Err(JwtError::UnknownCrit);
    }
    if header
        .get("typ")
        .and_then(Value::as_str)
        .is_some_and(|t| !(t.eq_ignore_ascii_case("JWT") || t.eq_ignore_ascii_case("at+jwt")))
    {
        return Err(JwtError::Malformed);
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) if kid_is_sane(k) => Some(k.as_str()),
        Some(_) => return Err(JwtError::BadKid),
    };
    let key = match kid {
        Some(k) => keys.keys.iter().find(|j| j.kid.as_deref() == Some(k)),
        None if keys.keys.len() == 1 => keys.keys.first(),
        None => None,
    }
    .ok_or(JwtError::UnknownKid)?;
    // The algorithm is the key's; the header must agree (no RS/HS or ES/RS confusion).
    if Alg::parse(alg) != Some(key.alg) {
        return Err(JwtError::AlgMismatch);
    }
    let signature = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| JwtError::BadSignature)?;
    if signature.is_empty() {
        return Err(JwtError::BadSignature);
    }
    let signing_input = token
        .get(..h.len() + 1 + p.len())
        .ok_or(JwtError::Malformed)?;
    if !key.verify(signing_input.as_bytes(), &signature) {
        return Err(JwtError::BadSignature);
    }
    let claims = json_object(p)?;
    check_claims(&claims, rules, now)?;
    Ok((header, claims, key.kid.clone()))
}

/// The latest NumericDate accepted: 9999-12-31T23:59:59Z.
const MAX_NUMERIC_DATE: i64 = 253_402_300_799;

/// A NumericDate claim (RFC 7519 §2): a JSON integer from 0 to [`MAX_NUMERIC_DATE`].
/// Fractions, exponents (`1e300`, which no issuer writes and a float cast would turn into
/// "never expires") and negative values are refused as malformed claims.
fn num(claims: &Map<String, Value>, k: &str) -> Result<Option<i64>, JwtError> {
    match claims.get(k) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .filter(|n| (0..=MAX_NUMERIC_DATE).contains(n))
            .map(Some)
            .ok_or(JwtError::BadClaims),
    }
}

fn check_claims(claims: &Map<String, Value>, rules: &Rules, now: i64) -> Result<(), JwtError> {
    let leeway = rules.leeway_secs;
    let exp = num(claims, "exp")?.ok_or(JwtError::MissingExp)?;
    if now >= exp.saturating_add(leeway) {
        return Err(JwtError::Expired);
    }
    if let Some(nbf) = num(claims, "nbf")?
        && now < nbf.saturating_sub(leeway)
    {
        return Err(JwtError::NotYetValid);
    }
    if let Some(iat) = num(claims, "iat")?
        && now < iat.saturating_sub(leeway)
    {
        return Err(JwtError::NotYetValid);
    }
    if claims.get("iss").and_then(Value::as_str) != Some(rules.issuer.as_str()) {
        return Err(JwtError::WrongIssuer);
    }
    Ok(())
}

/// Whether one of the token's audiences is accepted by `accept`.
pub(crate) fn check_audience(
    claims: &Map<String, Value>,
    accept: impl Fn(&str) -> bool,
) -> Result<(), JwtError> {
    let ok = match claims.get("aud") {
        Some(Value::String(a)) => accept(a),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).any(accept),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(JwtError::WrongAudience)
    }
}

pub(crate) fn scopes_of(
    claims: &Map<String, Value>,
    rules: &Rules,
) -> Result<Scopes, InvalidScope> {
    let v = match &rules.scopes_claim {
        Some(c) => claims.get(c),
        None => claims.get("scope").or_else(|| claims.get("scp")),
    };
    match v {
        None => Ok(Scopes::empty()),
        Some(Value::String(s)) => Scopes::parse(s),
        Some(Value::Array(a)) => {
            Scopes::from_list(a.iter().filter_map(Value::as_str).collect::<Vec<_>>())
        }
        Some(_) => Err(InvalidScope(
            "the scopes claim is not a string or a list".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    //! Tokens are signed here with aws-lc-rs directly (no JOSE library): the
    //! "jsonwebtoken-free path" of the issue. Interop with PyJWT comes with the server side.
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::rsa::KeySize;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RSA_PKCS1_SHA256,
        RsaKeyPair,
    };
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;

    enum Signer {
        Ec(EcdsaKeyPair),
        Ed(Ed25519KeyPair),
        Rsa(RsaKeyPair),
    }

    impl Signer {
        fn sign(&self, msg: &[u8]) -> Vec<u8> {
            match self {
                Signer::Ec(k) => k.sign(&SystemRandom::new(), msg).unwrap().as_ref().to_vec(),
                Signer::Ed(k) => k.sign(msg).as_ref().to_vec(),
                Signer::Rsa(k) => {
                    let mut sig = vec![0; k.public_modulus_len()];
                    k.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), msg, &mut sig)
                        .unwrap();
                    sig
                }
            }
        }

        fn jwk(&self, kid: &str) -> Value {
            let b = |x: &[u8]| URL_SAFE_NO_PAD.encode(x);
            match self {
                Signer::Ec(k) => {
                    let p = k.public_key().as_ref();
                    json!({"kty":"EC","crv":"P-256","kid":kid,"alg":"ES256","use":"sig","x":b(&p[1..33]),"y":b(&p[33..65])})
                }
                Signer::Ed(k) => {
                    json!({"kty":"OKP","crv":"Ed25519","kid":kid,"alg":"EdDSA","x":b(k.public_key().as_ref())})
                }
                Signer::Rsa(k) => {
                    let c = RsaPublicKeyComponents::<Vec<u8>>::from(k.public_key());
                    json!({"kty":"RSA","kid":kid,"alg":"RS256","n":b(&c.n),"e":b(&c.e)})
                }
            }
        }
    }

    fn es() -> Signer {
        Signer::Ec(EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap())
    }

    fn keyset(signers: &[(&Signer, &str)]) -> KeySet {
        let keys: Vec<Value> = signers.iter().map(|(s, k)| s.jwk(k)).collect();
        KeySet::from_json(&json!({ "keys": keys }).to_string()).unwrap()
    }

    fn enc(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    fn claims() -> Value {
        json!({"iss":"https://idp.example/","aud":["orders-api","x"],"sub":"user-1","exp":NOW+60,"iat":NOW-5,"scope":"orders:read b","jti":"j1"})
    }

    fn token_raw(s: &Signer, header: &str, payload: &str) -> String {
        let input = format!("{header}.{payload}");
        format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(s.sign(input.as_bytes()))
        )
    }

    fn token(s: &Signer, header: Value, claims: Value) -> String {
        token_raw(s, &enc(&header), &enc(&claims))
    }

    fn rules() -> Rules {
        Rules {
            issuer: "https://idp.example/".into(),
            audiences: vec!["orders-api".into()],
            leeway_secs: 30,
            subject_claim: "sub".into(),
            scopes_claim: None,
        }
    }

    fn check(t: &str, keys: &KeySet) -> Result<Verified, JwtError> {
        verify(t, keys, &rules(), NOW)
    }

    #[test]
    fn es256_eddsa_rs256_verify() {
        let signers = [
            (es(), "ES256"),
            (Signer::Ed(Ed25519KeyPair::generate().unwrap()), "EdDSA"),
            (
                Signer::Rsa(RsaKeyPair::generate(KeySize::Rsa2048).unwrap()),
                "RS256",
            ),
        ];
        let keys = keyset(&[
            (&signers[0].0, "k1"),
            (&signers[1].0, "k2"),
            (&signers[2].0, "k3"),
        ]);
        for (i, (s, alg)) in signers.iter().enumerate() {
            let kid = format!("k{}", i + 1);
            let t = token(s, json!({"alg":alg,"typ":"JWT","kid":kid}), claims());
            let v = check(&t, &keys).unwrap_or_else(|e| panic!("{alg}: {e}"));
            assert_eq!(v.subject, "user-1");
            assert_eq!(v.scopes.as_str(), "b orders:read");
            assert_eq!(v.jti.as_deref(), Some("j1"));
            assert_eq!(v.kid.as_deref(), Some(kid.as_str()));
        }
    }

    /// RFC 8705 §3.1: `cnf.x5t#S256` is read; another kind of binding is refused.
    #[test]
    fn certificate_confirmation_is_read_and_other_bindings_refused() {
        let s = es();
        let keys = keyset(&[(&s, "k1")]);
        let header = json!({"alg":"ES256","kid":"k1"});
        assert_eq!(
            check(&token(&s, header.clone(), claims()), &keys)
                .unwrap()
                .x5t_s256,
            None
        );
        let mut bound = claims();
        bound["cnf"] = json!({"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"});
        assert_eq!(
            check(&token(&s, header.clone(), bound), &keys)
                .unwrap()
                .x5t_s256
                .as_deref(),
            Some("bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2")
        );
        let mut dpop = claims();
        dpop["cnf"] = json!({"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"});
        assert_eq!(
            check(&token(&s, header, dpop), &keys).map(|v| v.subject),
            Err(JwtError::BadClaims)
        );
    }

    #[test]
    fn the_algorithm_comes_from_the_key() {
        let s = es();
        let keys = keyset(&[(&s, "k1")]);
        for alg in ["none", "None", "NONE", "nOnE"] {
            let t = format!(
                "{}.{}.",
                enc(&json!({"alg":alg,"kid":"k1"})),
                enc(&claims())
            );
            assert_eq!(check(&t, &keys), Err(JwtError::AlgNone), "{alg}");
        }
        // HS256 with the public key as the HMAC secret (the classic confusion).
        let pk = match &s {
            Signer::Ec(k) => k.public_key().as_ref().to_vec(),
            _ => unreachable!(),
        };
        let input = format!(
            "{}.{}",
            enc(&json!({"alg":"HS256","kid":"k1"})),
            enc(&claims())
        );
        let mac = aws_lc_rs::hmac::sign(
            &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &pk),
            input.as_bytes(),
        );
        let t = format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()));
        assert_eq!(check(&t, &keys), Err(JwtError::AlgMismatch));
        let t = token(&s, json!({"alg":"RS256","kid":"k1"}), claims());
        assert_eq!(check(&t, &keys), Err(JwtError::AlgMismatch));
    }

    #[test]
    fn headers_that_point_elsewhere_or_are_critical_are_refused() {
        let s = es();
        let keys = keyset(&[(&s, "k1")]);
        for (k, v) in [
            ("jku", json!("https://evil.example/jwks.json")),
            ("x5u", json!("https://evil.example/cert.pem")),
            ("jwk", s.jwk("k1")),
            ("x5c", json!(["MIIB"])),
        ] {
            let mut h = json!({"alg":"ES256","kid":"k1"});
            h[k] = v;
            assert_eq!(
                check(&token(&s, h, claims()), &keys),
                Err(JwtError::ForeignKeyHeader),
                "{k}"
            );
        }
        let t = token(
            &s,
            json!({"alg":"ES256","kid":"k1","crit":["exp"],"exp":1}),
            claims(),
        );
        assert_eq!(check(&t, &keys), Err(JwtError::UnknownCrit));
        let t = token(&s, json!({"alg":"ES256","kid":"k9"}), claims());
        assert_eq!(check(&t, &keys), Err(JwtError::UnknownKid));
        for kid in ["../../etc/passwd", "k1' OR '1'='1", "a/b", "", "k1;--"] {
            let t = token(&s, json!({"alg":"ES256","kid":kid}), claims());
            assert_eq!(check(&t, &keys), Err(JwtError::BadKid), "{kid}");
        }
    }

    #[test]
    fn time_issuer_and_audience() {
        let s = es();
        let keys = keyset(&[(&s, "k1")]);
        let h = || json!({"alg":"ES256","kid":"k1"});
        let with = |k: &str, v: Value| {
            let mut c = claims();
            c[k] = v;
            token(&s, h(), c)
        };
        assert_eq!(
            check(&with("exp", json!(NOW - 31)), &keys),
            Err(JwtError::Expired)
        );
        assert!(
            check(&with("exp", json!(NOW - 29)), &keys).is_ok(),
            "leeway"
        );
        assert_eq!(
            check(&with("nbf", json!(NOW + 31)), &keys),
            Err(JwtError::NotYetValid)
        );
        assert_eq!(
            check(&with("iat", json!(NOW + 3600)), &keys),
            Err(JwtError::NotYetValid)
        );
        assert_eq!(
            check(&with("iss", json!("https://other/")), &keys),
            Err(JwtError::WrongIssuer)
        );
        assert_eq!(
            check(&with("aud", json!("billing")), &keys),
            Err(JwtError::WrongAudience)
        );
        assert!(check(&with("aud", json!("orders-api")), &keys).is_ok());
        let mut c = claims();
        c.as_object_mut().unwrap().remove("aud");
        assert_eq!(
            check(&token(&s, h(), c), &keys),
            Err(JwtError::WrongAudience)
        );
        let mut c = claims();
        c.as_object_mut().unwrap().remove("exp");
        assert_eq!(check(&token(&s, h(), c), &keys), Err(JwtError::MissingExp));
        // NumericDates are integers in range: a float cast would make `1e300` "never".
        for claim in ["exp", "nbf", "iat"] {
            for bad in [
                json!(1e300),
                json!(1_800_000_060.5),
                json!(-1),
                json!(MAX_NUMERIC_DATE + 1),
                json!(u64::MAX),
                json!("2030-01-01"),
            ] {
                assert_eq!(
                    check(&with(claim, bad.clone()), &keys),
                    Err(JwtError::BadClaims),
                    "{claim}: {bad}"
                );
            }
        }
    }

    #[test]
    fn tampering_and_broken_signatures() {
        let s = es();
        let keys = keyset(&[(&s, "k1")]);
        let t = token(&s, json!({"alg":"ES256","kid":"k1"}), claims());
        let (input, sig) = t.rsplit_once('.').unwrap();
        let (h, _) = input.split_once('.').unwrap();
        let mut c = claims();
        c["sub"] = json!("admin");
        let tampered_payload = format!("{h}.{}.{sig}", enc(&c));
        assert_eq!(check(&tampered_payload, &keys), Err(JwtError::BadSignature));
        let tampered_header = format!(
            "{}.{}.{sig}",
            enc(&json!({"alg":"ES256","kid":"k1","typ":"JWT"})),
            input.split_once('.').unwrap().1
        );
        assert_eq!(check(&tampered_header, &keys), Err(JwtError::BadSignature));
        assert_eq!(
            check(&format!("{input}."), &keys),
            Err(JwtError::BadSignature)
        );
        assert_eq!(
            check(&format!("{input}.{}", &sig[..10]), &keys),
            Err(JwtError::BadSignature)
        );
        // CVE-2022-21449: r = s = 0.
        let zero = format!("{input}.{}", URL_SAFE_NO_PAD.encode([0u8; 64]));
        assert_eq!(check(&zero, &keys), Err(JwtError::BadSignature));
    }

    #[test]
    fn shapes_refused_before_crypto() {
        let s = es();
        let keys = keyset(&[(&s, "k1")]);
        let big = format!(
            "{}.{}.x",
            enc(&json!({"alg":"ES256"})),
            "A".repeat(64 * 1024)
        );
        assert_eq!(check(&big, &keys), Err(JwtError::TooLarge));
        assert_eq!(check("a.b.c.d.e", &keys), Err(JwtError::Jwe));
        for bad in ["", "a", "a.b", "a.b.c.d", "!!.b.c", "e30.e30.e30"] {
            assert!(check(bad, &keys).is_err(), "{bad}");
        }
        let dup_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","kid":"k1","kid":"k2"}"#);
        let t = token_raw(&s, &dup_header, &enc(&claims()));
        assert_eq!(check(&t, &keys), Err(JwtError::DuplicateKey));
        let dup_claims = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"iss":"https://idp.example/","aud":"orders-api","sub":"user-1","sub":"admin","exp":{}}}"#,
            NOW + 60
        ));
        let t = token_raw(&s, &enc(&json!({"alg":"ES256","kid":"k1"})), &dup_claims);
        assert_eq!(check(&t, &keys), Err(JwtError::DuplicateKey));
    }

    #[test]
    fn jwks_keeps_only_usable_signature_keys() {
        let s = es();
        let mut enc_key = s.jwk("e");
        enc_key["use"] = json!("enc");
        let mut wrong_alg = s.jwk("w");
        wrong_alg["alg"] = json!("RS256");
        let mut private = s.jwk("p");
        private["d"] = json!("AAAA");
        let doc =
            json!({"keys":[s.jwk("ok"), enc_key, wrong_alg, private, {"kty":"oct","k":"AAAA"}, 5]});
        let ks = KeySet::from_json(&doc.to_string()).unwrap();
        assert_eq!(ks.keys().len(), 1);
        assert!(ks.has_kid("ok"));
        assert!(KeySet::from_json("{}").is_err());
        assert!(KeySet::from_json("nope").is_err());
    }
}
