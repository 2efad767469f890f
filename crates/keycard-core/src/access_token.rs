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
}

impl AccessToken {
    /// The principal of a request that presented it; its credential id is the `client_id`
    /// (SPEC §5).
    pub fn principal(&self) -> Principal {
        Principal::new(
            self.subject.as_str().into(),
            Method::Oauth2,
            self.scopes.clone(),
            self.client_id.as_str().into(),
        )
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
    let text = |k: &str| {
        claims
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or(JwtError::BadClaims)
    };
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
    Ok(AccessToken {
        subject: text("sub")?,
        client_id: text("client_id")?,
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
        };
        (key, keys, claims)
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
