//! keycard's own signing keys and the tokens it mints: ES256 (default), EdDSA (Ed25519) or
//! RS256 (2048-bit), each with a `kid`; private keys leave this module only as PKCS#8 DER in
//! a [`SecretBytes`] (for sealing at rest); the public half as a JWK for
//! `/.well-known/jwks.json`. Access tokens follow RFC 9068 (`typ: at+jwt`).

use std::fmt;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RSA_PKCS1_SHA256,
    RsaKeyPair, RsaPublicKeyComponents,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde_json::{Value, json};

use crate::SecretBytes;
use crate::jwt::Alg;

/// Why a key could not be made, loaded or used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SigningError {
    /// Key generation or signing failed in the crypto library.
    #[error("the signing key could not be generated or used")]
    Crypto,
    /// Stored key material that does not parse for its algorithm.
    #[error("stored signing key material is invalid")]
    BadKey,
}

enum Pair {
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
    Rsa(RsaKeyPair),
}

/// A private signing key with its `kid`.
pub struct SigningKey {
    kid: String,
    alg: Alg,
    pair: Pair,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh key for `alg`.
    pub fn generate(alg: Alg, kid: String) -> Result<Self, SigningError> {
        let pair = match alg {
            Alg::Es256 => Pair::Ec(
                EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                    .map_err(|_| SigningError::Crypto)?,
            ),
            Alg::EdDsa => Pair::Ed(Ed25519KeyPair::generate().map_err(|_| SigningError::Crypto)?),
            Alg::Rs256 => {
                Pair::Rsa(RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| SigningError::Crypto)?)
            }
        };
        Ok(Self { kid, alg, pair })
    }

    /// The private key as PKCS#8 DER, to be sealed before it is stored.
    pub fn to_pkcs8(&self) -> Result<SecretBytes, SigningError> {
        let der = match &self.pair {
            Pair::Ec(k) => k.to_pkcs8v1().map(|d| d.as_ref().to_vec()),
            Pair::Ed(k) => k.to_pkcs8().map(|d| d.as_ref().to_vec()),
            Pair::Rsa(k) => k.as_der().map(|d| d.as_ref().to_vec()),
        }
        .map_err(|_| SigningError::Crypto)?;
        Ok(SecretBytes::new(der))
    }

    /// A key from PKCS#8 DER made by [`SigningKey::to_pkcs8`].
    pub fn from_pkcs8(alg: Alg, kid: String, der: &[u8]) -> Result<Self, SigningError> {
        let pair = match alg {
            Alg::Es256 => Pair::Ec(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
                    .map_err(|_| SigningError::BadKey)?,
            ),
            Alg::EdDsa => {
                Pair::Ed(Ed25519KeyPair::from_pkcs8(der).map_err(|_| SigningError::BadKey)?)
            }
            Alg::Rs256 => Pair::Rsa(RsaKeyPair::from_pkcs8(der).map_err(|_| SigningError::BadKey)?),
        };
        Ok(Self { kid, alg, pair })
    }

    /// A key from a PKCS#8 PEM file (`-----BEGIN PRIVATE KEY-----`), whichever of ES256
    /// (P-256), EdDSA (Ed25519) or RS256 it is; `kid` defaults to the RFC 7638 thumbprint.
    pub fn from_pkcs8_pem(pem: &[u8], kid: Option<String>) -> Result<Self, SigningError> {
        use rustls_pki_types::PrivatePkcs8KeyDer;
        use rustls_pki_types::pem::PemObject;
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem).map_err(|_| SigningError::BadKey)?;
        let der = der.secret_pkcs8_der();
        let key = [Alg::Es256, Alg::EdDsa, Alg::Rs256]
            .into_iter()
            .find_map(|alg| Self::from_pkcs8(alg, String::new(), der).ok())
            .ok_or(SigningError::BadKey)?;
        let kid = kid.unwrap_or_else(|| key.jwk_thumbprint());
        Ok(key.with_kid(kid))
    }

    /// The private key as PKCS#8 PEM (for a file only its owner reads).
    pub fn to_pkcs8_pem(&self) -> Result<crate::SecretString, SigningError> {
        let der = self.to_pkcs8()?;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der.expose_secret());
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).map_err(|_| SigningError::Crypto)?);
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        Ok(crate::SecretString::new(pem))
    }

    /// The same key under another key id.
    pub fn with_kid(self, kid: String) -> Self {
        Self { kid, ..self }
    }

    /// The RFC 7638 JWK thumbprint of the public key (SHA-256, base64url): a key id that
    /// anyone holding the public key can compute.
    pub fn jwk_thumbprint(&self) -> String {
        let jwk = self.public_jwk();
        let members: &[&str] = match &self.pair {
            Pair::Ec(_) => &["crv", "kty", "x", "y"],
            Pair::Ed(_) => &["crv", "kty", "x"],
            Pair::Rsa(_) => &["e", "kty", "n"],
        };
        // The required members in lexicographic order, no whitespace (RFC 7638 §3.2).
        let mut canonical = String::from("{");
        for (i, m) in members.iter().enumerate() {
            if i > 0 {
                canonical.push(',');
            }
            let v = jwk.get(*m).and_then(Value::as_str).unwrap_or_default();
            canonical.push_str(&format!("\"{m}\":\"{v}\""));
        }
        canonical.push('}');
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
        URL_SAFE_NO_PAD.encode(digest.as_ref())
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm.
    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// The public key as a JWK with `kid`, `alg` and `use: sig` (RFC 7517).
    pub fn public_jwk(&self) -> Value {
        let b = |x: &[u8]| URL_SAFE_NO_PAD.encode(x);
        let (kid, alg) = (&self.kid, self.alg.as_str());
        match &self.pair {
            Pair::Ec(k) => {
                let p = k.public_key().as_ref();
                let (x, y) = (
                    p.get(1..33).unwrap_or_default(),
                    p.get(33..65).unwrap_or_default(),
                );
                json!({"kty":"EC","crv":"P-256","x":b(x),"y":b(y),"kid":kid,"alg":alg,"use":"sig"})
            }
            Pair::Ed(k) => {
                json!({"kty":"OKP","crv":"Ed25519","x":b(k.public_key().as_ref()),"kid":kid,"alg":alg,"use":"sig"})
            }
            Pair::Rsa(k) => {
                let c = RsaPublicKeyComponents::<Vec<u8>>::from(k.public_key());
                json!({"kty":"RSA","n":b(&c.n),"e":b(&c.e),"kid":kid,"alg":alg,"use":"sig"})
            }
        }
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SigningError> {
        let rng = SystemRandom::new();
        match &self.pair {
            Pair::Ec(k) => k
                .sign(&rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| SigningError::Crypto),
            Pair::Ed(k) => Ok(k.sign(message).as_ref().to_vec()),
            Pair::Rsa(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &rng, message, &mut sig)
                    .map_err(|_| SigningError::Crypto)?;
                Ok(sig)
            }
        }
    }

    /// A compact JWS of `claims` with header `{"alg", "typ", "kid"}`.
    pub fn sign_jwt<C: Serialize>(&self, typ: &str, claims: &C) -> Result<String, SigningError> {
        let header = json!({"alg": self.alg.as_str(), "typ": typ, "kid": self.kid});
        let h = URL_SAFE_NO_PAD.encode(header.to_string());
        let p =
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).map_err(|_| SigningError::Crypto)?);
        let input = format!("{h}.{p}");
        let sig = self.sign(input.as_bytes())?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }
}

/// The claims of an RFC 9068 access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessTokenClaims {
    /// The issuer (`server.public_url`).
    pub iss: String,
    /// The subject (user, or the client for client credentials).
    pub sub: String,
    /// The audience (resource).
    pub aud: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// A unique id.
    pub jti: String,
    /// The OAuth client.
    pub client_id: String,
    /// Space-separated scopes.
    pub scope: String,
    /// RFC 8705 §3.1 confirmation: the client certificate the token is bound to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
    /// `gty: client_credentials` on a token a client was issued for itself (no user): the
    /// gateway tells upstreams it is a client's (`X-Keycard-Subject-Kind: client`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gty: Option<&'static str>,
}

/// The `cnf` claim of a certificate-bound token (RFC 8705 §3.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Confirmation {
    /// base64url SHA-256 of the certificate's DER.
    #[serde(rename = "x5t#S256")]
    pub x5t_s256: String,
}

/// Mints an RFC 9068 access token (`typ: at+jwt`).
pub fn mint_access_token(
    key: &SigningKey,
    claims: &AccessTokenClaims,
) -> Result<String, SigningError> {
    key.sign_jwt("at+jwt", claims)
}

#[cfg(test)]
mod tests {
    #[test]
    fn pem_round_trip_keeps_the_key_and_the_thumbprint_names_it() {
        for alg in [Alg::Es256, Alg::EdDsa] {
            let k = SigningKey::generate(alg, "x".into()).unwrap();
            let pem = k.to_pkcs8_pem().unwrap();
            let back = SigningKey::from_pkcs8_pem(pem.expose_secret().as_bytes(), None).unwrap();
            assert_eq!(back.alg(), alg);
            assert_eq!(back.kid(), k.jwk_thumbprint());
            assert_eq!(back.public_jwk()["x"], k.public_jwk()["x"]);
            // 43 characters: base64url of a SHA-256.
            assert_eq!(back.kid().len(), 43);
        }
        let other = SigningKey::generate(Alg::Es256, "y".into()).unwrap();
        let k = SigningKey::generate(Alg::Es256, "y".into()).unwrap();
        assert_ne!(other.jwk_thumbprint(), k.jwk_thumbprint());
        assert!(
            SigningKey::from_pkcs8_pem(
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                None
            )
            .is_err()
        );
        assert!(SigningKey::from_pkcs8_pem(b"garbage", None).is_err());
    }

    use super::*;
    use crate::jwt::{self, KeySet, Rules};

    #[test]
    fn minted_tokens_verify_against_the_published_jwk_for_every_algorithm() {
        for alg in [Alg::Es256, Alg::EdDsa, Alg::Rs256] {
            let key = SigningKey::generate(alg, format!("kid-{}", alg.as_str())).unwrap();
            // Through PKCS#8 and back, as the store will.
            let der = key.to_pkcs8().unwrap();
            let key =
                SigningKey::from_pkcs8(alg, key.kid().to_owned(), der.expose_secret()).unwrap();
            let jwks = json!({"keys": [key.public_jwk()]}).to_string();
            assert!(!jwks.contains("\"d\""), "no private part published");
            let keys = KeySet::from_json(&jwks).unwrap();
            let claims = AccessTokenClaims {
                iss: "http://127.0.0.1:8080".into(),
                sub: "alice".into(),
                aud: "orders-api".into(),
                exp: 1_800_000_600,
                iat: 1_800_000_000,
                jti: "at_1".into(),
                client_id: "cli".into(),
                scope: "orders:read".into(),
                cnf: None,
                gty: None,
            };
            let t = mint_access_token(&key, &claims).unwrap();
            let header: Value = serde_json::from_slice(
                &URL_SAFE_NO_PAD
                    .decode(t.split('.').next().unwrap())
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(header["typ"], "at+jwt");
            assert_eq!(header["alg"], alg.as_str());
            let rules = Rules {
                issuer: claims.iss.clone(),
                audiences: vec!["orders-api".into()],
                leeway_secs: 0,
                subject_claim: "sub".into(),
                scopes_claim: None,
            };
            let v = jwt::verify(&t, &keys, &rules, 1_800_000_100).unwrap();
            assert_eq!(
                (v.subject.as_str(), v.jti.as_deref()),
                ("alice", Some("at_1"))
            );
        }
        assert_eq!(
            SigningKey::from_pkcs8(Alg::Es256, "k".into(), b"junk").unwrap_err(),
            SigningError::BadKey
        );
        let ed = SigningKey::generate(Alg::EdDsa, "e".into()).unwrap();
        let der = ed.to_pkcs8().unwrap();
        assert!(SigningKey::from_pkcs8(Alg::Es256, "e".into(), der.expose_secret()).is_err());
        assert!(!format!("{ed:?}").contains(&format!("{:?}", der.expose_secret())));
    }
}
