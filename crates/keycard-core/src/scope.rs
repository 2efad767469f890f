//! Scopes: what a request made with a credential holds (RFC 6749 §3.3 syntax).

use std::fmt;
use std::sync::Arc;

/// Why a scope string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid scope `{0}`: a scope is 1-128 visible ASCII characters, without spaces, `\"` or `\\`"
)]
pub struct InvalidScope(pub String);

/// A normalised set of scopes: sorted, unique, held as one space-separated string so that
/// cloning is a reference-count bump and the `X-Keycard-Scopes` value is ready-made.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Scopes(Arc<str>);

impl Scopes {
    /// No scope.
    pub fn empty() -> Self {
        Self(Arc::from(""))
    }

    /// Validates and normalises scopes given one by one.
    pub fn from_list<I, S>(items: I) -> Result<Self, InvalidScope>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list: Vec<String> = Vec::new();
        for s in items {
            let s = s.as_ref();
            if !is_scope_token(s) {
                return Err(InvalidScope(s.to_owned()));
            }
            list.push(s.to_owned());
        }
        list.sort();
        list.dedup();
        Ok(Self(Arc::from(list.join(" "))))
    }

    /// An equal set that shares no allocation with this one (for a per-thread copy: its
    /// reference count is then written by one core only).
    pub fn detached(&self) -> Self {
        Self(Arc::from(&*self.0))
    }

    /// Whether both are the same allocation (not merely equal).
    pub(crate) fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Parses a space-separated scope string (as stored, or an OAuth `scope` parameter).
    pub fn parse(s: &str) -> Result<Self, InvalidScope> {
        Self::from_list(s.split(' ').filter(|x| !x.is_empty()))
    }

    /// Whether `scope` is held.
    pub fn contains(&self, scope: &str) -> bool {
        self.iter().any(|s| s == scope)
    }

    /// The first scope of `required` that is not held, if any.
    pub fn first_missing<'a>(&self, required: &'a Scopes) -> Option<&'a str> {
        required.iter().find(|r| !self.contains(r))
    }

    /// The scopes, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.split(' ').filter(|s| !s.is_empty())
    }

    /// The space-separated form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether no scope is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The scopes as owned strings (for JSON output).
    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_owned).collect()
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// RFC 6749 §3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`, bounded in length.
fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_checks() {
        let s = Scopes::from_list(["b:write", "a:read", "b:write"]).unwrap();
        assert_eq!(s.as_str(), "a:read b:write");
        assert!(s.contains("a:read") && !s.contains("a"));
        let req = Scopes::parse("a:read c").unwrap();
        assert_eq!(s.first_missing(&req), Some("c"));
        assert_eq!(s.first_missing(&Scopes::empty()), None);
        assert!(Scopes::empty().iter().next().is_none());
    }

    #[test]
    fn refuses_bad_tokens() {
        for bad in ["", "a b", "quo\"te", "back\\slash", "é", "tab\t"] {
            assert!(Scopes::from_list([bad]).is_err(), "{bad:?}");
        }
    }
}
