//! HTTP Basic credentials (RFC 7617): `Authorization: Basic base64(user-id ":" password)`,
//! read as UTF-8 (the challenge says `charset="UTF-8"`, §2.1).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroize;

use crate::SecretString;

/// Longest token68 accepted (a user name and a password of the policy's maximum fit easily).
const MAX_TOKEN_LEN: usize = 4096;

/// A decoded Basic credential.
#[derive(Debug)]
pub struct BasicCredentials {
    /// The user-id: everything before the first colon (§2: a user-id cannot contain one).
    pub user: String,
    /// The password: everything after it, colons included.
    pub password: SecretString,
}

/// Decodes the token68 after `Basic `. `None` when it is not base64 of UTF-8 `user:password`
/// with a non-empty user-id and no control characters (§2).
pub fn decode(token: &str) -> Option<BasicCredentials> {
    let token = token.trim();
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return None;
    }
    let mut bytes = STANDARD.decode(token).ok()?;
    let text = match std::str::from_utf8(&bytes) {
        Ok(t) => t,
        Err(_) => {
            bytes.zeroize();
            return None;
        }
    };
    let parsed = match text.split_once(':') {
        Some((user, password))
            if !user.is_empty()
                && !user.chars().any(char::is_control)
                && !password.chars().any(char::is_control) =>
        {
            Some(BasicCredentials {
                user: user.to_owned(),
                password: SecretString::new(password.to_owned()),
            })
        }
        _ => None,
    };
    bytes.zeroize();
    parsed
}

/// The `Basic` challenge for `realm` (§2.1: UTF-8 announced).
pub fn challenge(realm: &str) -> String {
    format!(
        r#"Basic realm="{}", charset="UTF-8""#,
        crate::digest::escape_quoted(realm)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7617_examples() {
        // §2: "Aladdin" / "open sesame".
        let c = decode("QWxhZGRpbjpvcGVuIHNlc2FtZQ==").unwrap();
        assert_eq!(c.user, "Aladdin");
        assert_eq!(c.password.expose_secret(), "open sesame");
        // §2.1: "test" / "123£" in UTF-8.
        let c = decode("dGVzdDoxMjPCow==").unwrap();
        assert_eq!(
            (c.user.as_str(), c.password.expose_secret()),
            ("test", "123£")
        );
    }

    #[test]
    fn colons_belong_to_the_password_and_names_may_be_unicode() {
        let c = decode(&STANDARD.encode("jürgen:a:b:c")).unwrap();
        assert_eq!(
            (c.user.as_str(), c.password.expose_secret()),
            ("jürgen", "a:b:c")
        );
        let c = decode(&STANDARD.encode("u:")).unwrap();
        assert_eq!(c.password.expose_secret(), "");
    }

    #[test]
    fn refuses_broken_tokens() {
        for bad in [
            String::new(),
            "!!!".into(),
            STANDARD.encode("no-colon"),
            STANDARD.encode(":empty-user"),
            STANDARD.encode(b"bad\xffutf8:pw"),
            STANDARD.encode("ctl\x07:pw"),
            STANDARD.encode("u:pw\r\n"),
            "A".repeat(MAX_TOKEN_LEN + 4),
        ] {
            assert!(decode(&bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn challenge_announces_utf8() {
        assert_eq!(
            challenge("keycard"),
            r#"Basic realm="keycard", charset="UTF-8""#
        );
        assert_eq!(
            challenge(r#"a"b"#),
            r#"Basic realm="a\"b", charset="UTF-8""#
        );
    }
}
