//! keycard's own tokens: verifying the RFC 9068 access tokens it issued (for the `oauth2`
//! method and for introspection), and the claims of OIDC ID tokens.

use serde::Serialize;
use serde_json::Value;

use crate::jwt::{self, JwtError, KeySet, Rules};
use crate::{Method, Principal, Scopes};

/// A verified access token keycard issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    /// `sub`: the user, or the client for client credentials.
    pub subject: String,
    /// `client_id`.
    pub client_id: String,
    /// `scope`.
    pub scopes: Scopes,
    /// `jti`.
    pub jti: String,
    /// `exp`.
    pub exp: i64,
    /// `iat`.
    pub iat: i64,
    /// `aud` (the first one).
    pub audience: String,
    /// `cnf.x5t#S256`: the certificate the token is bound to (RFC 8705 §3.1).
    pub x5t_s256: Option<String>,
    /// Issued to a client for itself (`gty: client_credentials`), not to a user.
    pub client_credentials: bool,
}

impl AccessToken {
    /// The principal of a request that presented it; its credential id is the `client_id`
    /// (reference §5).
    pub fn principal(&self) -> Principal {
        let p = Principal::new(
            self.subject.as_str().into(),
            Method::Oauth2,
            self.scopes.clone(),
            self.client_id.as_str().into(),
        );
        if self.client_credentials {
            p.issued_to_client()
        } else {
            p
        }
    }
}

/// Verifies an access token from `issuer` (keycard's `public_url`) against keycard's own
/// published `keys`: signature, `typ: at+jwt`, `exp`/`iat`, `iss`, an audience `accept`
/// takes, and the `sub`, `client_id`, `jti` claims it always sets. Revocation is the
/// caller's check (by `jti`).
pub fn verify_access_token(
    token: &str,
    keys: &KeySet,
    issuer: &str,
    accept: impl Fn(&str) -> bool,
    now: i64,
) -> Result<AccessToken, JwtError> {
    let rules = Rules {
        issuer: issuer.to_owned(),
        audiences: Vec::new(),
        leeway_secs: 0,
        subject_claim: "sub".into(),
        scopes_claim: Some("scope".into()),
    };
    let (header, claims, _) = jwt::verify_signed(token, keys, &rules, now)?;
    let typ = header.get("typ").and_then(Value::as_str).unwrap_or("");
    if !(typ.eq_ignore_ascii_case("at+jwt") || typ.eq_ignore_ascii_case("application/at+jwt")) {
        return Err(JwtError::WrongType);
    }
    jwt::check_audience(&claims, &accept)?;
    let text = |k: &str| text_claim(&claims, k);
    let audience = match claims.get("aud") {
        Some(Value::String(a)) => a.clone(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .find(|a| accept(a))
            .unwrap_or_default()
            .to_owned(),
        _ => String::new(),
    };
    let (subject, client_id) = (text("sub")?, text("client_id")?);
    // Tokens keycard issued before it wrote `gty` say it by naming the client twice (no
    // user may share a client's name).
    Ok(AccessToken {
        client_credentials: jwt::is_client_credentials(&claims) || subject == client_id,
        subject,
        client_id,
        scopes: jwt::scopes_of(&claims, &rules).map_err(|_| JwtError::BadClaims)?,
        jti: text("jti")?,
        exp: claims
            .get("exp")
            .and_then(Value::as_i64)
            .ok_or(JwtError::BadClaims)?,
        iat: claims.get("iat").and_then(Value::as_i64).unwrap_or(0),
        audience,
        x5t_s256: jwt::confirmation(&claims)?,
    })
}

/// The user (`sub`) and client (`aud`) of an ID token keycard issued, presented back as
/// `id_token_hint` (OIDC RP-Initiated Logout 1.0 §2). The signature, `typ: JWT`, `iss` and
/// `azp` are checked; `exp` may have passed up to `grace_secs` ago, as a logout usually
/// comes after the ID token expired.
pub fn verify_id_token_hint(
    token: &str,
    keys: &KeySet,
    issuer: &str,
    grace_secs: i64,
    now: i64,
) -> Result<(String, String), JwtError> {
    let rules = Rules {
        issuer: issuer.to_owned(),
        audiences: Vec::new(),
        leeway_secs: grace_secs,
        subject_claim: "sub".into(),
        scopes_claim: None,
    };
    let (header, claims, _) = jwt::verify_signed(token, keys, &rules, now)?;
    if header.get("typ").and_then(Value::as_str) != Some("JWT") {
        return Err(JwtError::WrongType);
    }
    let text = |k: &str| text_claim(&claims, k);
    let (sub, aud) = (text("sub")?, text("aud")?);
    if text("azp")? != aud {
        return Err(JwtError::BadClaims);
    }
    Ok((sub, aud))
}

/// The `at_hash` of an ID token issued with `access_token` (OIDC Core §3.1.3.6): the
/// left half of the hash of its ASCII text, base64url. The hash is the one of the ID
/// token's `alg`: SHA-256 for ES256 and RS256; SHA-512 for EdDSA with Ed25519 (the
/// OpenID Foundation's resolution for EdDSA).
pub fn at_hash(alg: jwt::Alg, access_token: &str) -> String {
    use base64::Engine;
    let algorithm = match alg {
        jwt::Alg::EdDsa => &aws_lc_rs::digest::SHA512,
        _ => &aws_lc_rs::digest::SHA256,
    };
    let d = aws_lc_rs::digest::digest(algorithm, access_token.as_bytes());
    let bytes = d.as_ref();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(bytes.get(..bytes.len() / 2).unwrap_or_default())
}

/// The non-empty string claim `name`.
fn text_claim(claims: &serde_json::Map<String, Value>, name: &str) -> Result<String, JwtError> {
    claims
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .ok_or(JwtError::BadClaims)
}

/// The claims of an OIDC ID token (OpenID Connect Core §2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdTokenClaims {
    /// The issuer.
    pub iss: String,
    /// The user.
    pub sub: String,
    /// The client.
    pub aud: String,
    /// Expiry.
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// When the user authenticated.
    pub auth_time: i64,
    /// The authorization request's `nonce`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// The authorized party (the client).
    pub azp: String,
    /// A unique id.
    pub jti: String,
    /// The access token's hash, when issued with one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_hash: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::Alg;
    use crate::signing::{AccessTokenClaims, SigningKey, mint_access_token};

    const ISS: &str = "http://127.0.0.1:8080";

    fn setup() -> (SigningKey, KeySet, AccessTokenClaims) {
        let key = SigningKey::generate(Alg::Es256, "k1".into()).unwrap();
        let keys = KeySet::from_json(&serde_json::json!({"keys": [key.public_jwk()]}).to_string())
            .unwrap();
        let claims = AccessTokenClaims {
            iss: ISS.into(),
            sub: "alice".into(),
            aud: ISS.into(),
            exp: 1_000_600,
            iat: 1_000_000,
            jti: "at_1".into(),
            client_id: "app".into(),
            scope: "orders:read profile".into(),
            cnf: None,
            gty: None,
        };
        (key, keys, claims)
    }

    /// OpenID Connect Core 1.0, Appendix A.4: the example ID token issued with the access
    /// token `jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y` under RS256.
    #[test]
    fn at_hash_matches_the_oidc_core_example() {
        assert_eq!(
            at_hash(Alg::Rs256, "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
        assert_eq!(at_hash(Alg::EdDsa, "x").len(), 43, "half of SHA-512");
    }

    #[test]
    fn id_token_hints_are_keycards_own_id_tokens_even_expired() {
        let (key, keys, _) = setup();
        let id = IdTokenClaims {
            iss: ISS.into(),
            sub: "alice".into(),
            aud: "app".into(),
            exp: 1_000_600,
            iat: 1_000_000,
            auth_time: 1_000_000,
            nonce: None,
            azp: "app".into(),
            jti: "id_1".into(),
            at_hash: None,
        };
        let t = key.sign_jwt("JWT", &id).unwrap();
        let ok = ("alice".to_owned(), "app".to_owned());
        assert_eq!(
            verify_id_token_hint(&t, &keys, ISS, 3600, 1_004_000),
            Ok(ok)
        );
        assert_eq!(
            verify_id_token_hint(&t, &keys, ISS, 3600, 1_004_300),
            Err(JwtError::Expired)
        );
        assert_eq!(
            verify_id_token_hint(&t, &keys, "http://evil", 3600, 1_000_100),
            Err(JwtError::WrongIssuer)
        );
        // An access token is not an ID token.
        let (_, _, claims) = setup();
        let at = mint_access_token(&key, &claims).unwrap();
        assert_eq!(
            verify_id_token_hint(&at, &keys, ISS, 3600, 1_000_100),
            Err(JwtError::WrongType)
        );
        // Another key's token is refused.
        let other = SigningKey::generate(Alg::Es256, "k1".into()).unwrap();
        let forged = other.sign_jwt("JWT", &id).unwrap();
        assert!(verify_id_token_hint(&forged, &keys, ISS, 3600, 1_000_100).is_err());
    }

    #[test]
    fn verifies_own_access_tokens() {
        let (key, keys, claims) = setup();
        let t = mint_access_token(&key, &claims).unwrap();
        let v = verify_access_token(&t, &keys, ISS, |a| a == ISS, 1_000_100).unwrap();
        assert_eq!(v.subject, "alice");
        assert_eq!(v.client_id, "app");
        assert_eq!(v.jti, "at_1");
        assert_eq!(v.exp, 1_000_600);
        assert!(v.scopes.contains("orders:read"));
        let p = v.principal();
        assert_eq!((p.method(), p.credential_id()), (Method::Oauth2, "app"));
        assert_eq!(p.kind(), crate::SubjectKind::User);
        // A client's own token: by `gty`, or (issued before `gty`) by its client as `sub`.
        let (_, _, mut cc) = setup();
        cc.gty = Some("client_credentials");
        cc.sub = "worker".into();
        cc.client_id = "worker".into();
        let t = mint_access_token(&key, &cc).unwrap();
        let v = verify_access_token(&t, &keys, ISS, |a| a == ISS, 1_000_100).unwrap();
        assert_eq!(v.principal().kind(), crate::SubjectKind::Client);
        cc.gty = None;
        let t = mint_access_token(&key, &cc).unwrap();
        let v = verify_access_token(&t, &keys, ISS, |a| a == ISS, 1_000_100).unwrap();
        assert_eq!(v.principal().kind(), crate::SubjectKind::Client);
    }

    #[test]
    fn refuses_id_tokens_other_audiences_and_expired_tokens() {
        let (key, keys, claims) = setup();
        let t = mint_access_token(&key, &claims).unwrap();
        assert_eq!(
            verify_access_token(&t, &keys, ISS, |a| a == "other", 1_000_100),
            Err(JwtError::WrongAudience)
        );
        assert_eq!(
            verify_access_token(&t, &keys, ISS, |a| a == ISS, 1_000_600),
            Err(JwtError::Expired)
        );
        assert_eq!(
            verify_access_token(&t, &keys, "http://evil", |a| a == ISS, 1_000_100),
            Err(JwtError::WrongIssuer)
        );
        let id = key.sign_jwt("JWT", &claims).unwrap();
        assert_eq!(
            verify_access_token(&id, &keys, ISS, |a| a == ISS, 1_000_100),
            Err(JwtError::WrongType)
        );
        let mut no_client = serde_json::to_value(&claims).unwrap();
        no_client.as_object_mut().unwrap().remove("client_id");
        let t = key.sign_jwt("at+jwt", &no_client).unwrap();
        assert_eq!(
            verify_access_token(&t, &keys, ISS, |a| a == ISS, 1_000_100),
            Err(JwtError::BadClaims)
        );
    }
}
