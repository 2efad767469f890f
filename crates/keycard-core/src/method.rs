//! The seven ways a request can prove who sent it (reference §3, "Methods").

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An authentication method. Its `as_str()` is the `X-Keycard-Method` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// `X-API-Key: kc_…` or `Authorization: Bearer kc_…`.
    ApiKey,
    /// An access token keycard issued.
    Oauth2,
    /// A JWT from a configured external issuer.
    Jwt,
    /// HTTP Basic (RFC 7617).
    Basic,
    /// HTTP Digest (RFC 7616).
    Digest,
    /// HTTP Message Signatures with HMAC (RFC 9421).
    Hmac,
    /// A client certificate in the TLS handshake.
    Mtls,
}

impl Method {
    /// Every method, in the order of reference §3.
    pub const ALL: [Method; 7] = [
        Method::ApiKey,
        Method::Oauth2,
        Method::Jwt,
        Method::Basic,
        Method::Digest,
        Method::Hmac,
        Method::Mtls,
    ];

    /// The wire name (`api_key`, `oauth2`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            Method::ApiKey => "api_key",
            Method::Oauth2 => "oauth2",
            Method::Jwt => "jwt",
            Method::Basic => "basic",
            Method::Digest => "digest",
            Method::Hmac => "hmac",
            Method::Mtls => "mtls",
        }
    }

    /// The position in [`Method::ALL`]: a dense index for counters.
    pub const fn index(self) -> usize {
        self as usize
    }

    const fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for an unknown method name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown method `{0}` (expected one of api_key, oauth2, jwt, basic, digest, hmac, mtls)")]
pub struct UnknownMethod(pub String);

impl FromStr for Method {
    type Err = UnknownMethod;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Method::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| UnknownMethod(s.to_owned()))
    }
}

/// A set of methods, as a bit set (copyable, no allocation).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MethodSet(u8);

impl MethodSet {
    /// Every method.
    pub const fn all() -> Self {
        let mut bits = 0;
        let mut i = 0;
        while i < Method::ALL.len() {
            bits |= 1 << i;
            i += 1;
        }
        Self(bits)
    }

    /// No method.
    pub const fn empty() -> Self {
        Self(0)
    }

    /// Adds a method.
    pub fn insert(&mut self, m: Method) {
        self.0 |= m.bit();
    }

    /// Whether the set holds `m`.
    pub const fn contains(self, m: Method) -> bool {
        self.0 & m.bit() != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The methods in the order of reference §3.
    pub fn iter(self) -> impl Iterator<Item = Method> {
        Method::ALL.into_iter().filter(move |m| self.contains(*m))
    }
}

impl FromIterator<Method> for MethodSet {
    fn from_iter<I: IntoIterator<Item = Method>>(iter: I) -> Self {
        let mut set = Self::empty();
        for m in iter {
            set.insert(m);
        }
        set
    }
}

impl fmt::Debug for MethodSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for m in Method::ALL {
            assert_eq!(m.as_str().parse::<Method>(), Ok(m));
        }
        assert!("API_KEY".parse::<Method>().is_err());
    }

    #[test]
    fn sets() {
        let s: MethodSet = [Method::Basic, Method::ApiKey].into_iter().collect();
        assert!(s.contains(Method::Basic) && !s.contains(Method::Jwt));
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            vec![Method::ApiKey, Method::Basic]
        );
        assert_eq!(MethodSet::all().iter().count(), 7);
    }
}
