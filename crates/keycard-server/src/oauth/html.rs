//! The pages' markup, compiled in: plain HTML forms that work without JavaScript, labelled
//! fields with the right `autocomplete` hints, a viewport for phones, and one inline style
//! sheet that the Content-Security-Policy allows by its hash.

use std::fmt::Write;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The style sheet of every page.
pub(super) const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;background:#f4f5f7;color:#1d2330;line-height:1.5;padding:0 .75rem}\
main{max-width:24rem;margin:2rem auto;padding:1.5rem;background:#fff;border-radius:.5rem;box-shadow:0 1px 3px rgba(0,0,0,.15)}\
h1{font-size:1.4rem;margin:0 0 1rem}label{display:block;font-weight:600;margin-top:1rem}\
input{box-sizing:border-box;width:100%;font-size:1rem;padding:.6rem;margin-top:.25rem;border:1px solid #8a93a6;border-radius:.3rem}\
input:focus,button:focus{outline:3px solid #2f6fde;outline-offset:1px}\
button{font-size:1rem;padding:.65rem 1.2rem;margin-top:1.25rem;border:0;border-radius:.3rem;background:#1f5fcf;color:#fff;cursor:pointer}\
button.secondary{background:#e4e7ee;color:#1d2330;margin-left:.5rem}\
.hint{font-size:.875rem;color:#4a5268;margin:.25rem 0 0}.error{background:#fdecec;color:#8a1111;padding:.6rem;border-radius:.3rem}\
ul{padding-left:1.2rem}code{background:#eef0f4;padding:0 .2rem;border-radius:.2rem}";

/// The `Content-Security-Policy` of the pages: nothing loads, only the style sheet above
/// applies, and no one may frame them (clickjacking of the consent button).
pub(super) fn content_security_policy() -> String {
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, STYLE.as_bytes());
    format!(
        "default-src 'none'; style-src 'sha256-{}'; frame-ancestors 'none'; base-uri 'none'",
        STANDARD.encode(hash.as_ref())
    )
}

/// HTML-escapes text for element content and double-quoted attributes.
pub(super) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<meta name=\"referrer\" content=\"no-referrer\">\
<title>{title}</title><style>{STYLE}</style></head>\
<body><main>{body}</main></body></html>\n",
        title = escape(title),
    )
}

/// The login page.
pub(super) fn login(
    client_id: &str,
    request: &str,
    csrf: &str,
    username: &str,
    error: Option<&str>,
) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>Sign in</h1><p>to continue to <strong>{}</strong></p>",
        escape(client_id)
    );
    if let Some(e) = error {
        let _ = write!(body, "<p class=\"error\" role=\"alert\">{}</p>", escape(e));
    }
    let _ = write!(
        body,
        "<form method=\"post\" action=\"/_keycard/login\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<input type=\"hidden\" name=\"request\" value=\"{request}\">\
<label for=\"username\">Username</label>\
<input id=\"username\" name=\"username\" type=\"text\" autocomplete=\"username\" autocapitalize=\"none\" spellcheck=\"false\" required value=\"{username}\"{focus_user}>\
<label for=\"password\">Password</label>\
<input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required{focus_pass}>\
<label for=\"totp\">One-time code</label>\
<input id=\"totp\" name=\"totp\" type=\"text\" inputmode=\"numeric\" pattern=\"[0-9]{{6}}\" maxlength=\"6\" autocomplete=\"one-time-code\" aria-describedby=\"totp-hint\">\
<p class=\"hint\" id=\"totp-hint\">The 6-digit code from your authenticator app, if you use one.</p>\
<button type=\"submit\">Sign in</button></form>",
        csrf = escape(csrf),
        request = escape(request),
        username = escape(username),
        focus_user = if username.is_empty() {
            " autofocus"
        } else {
            ""
        },
        focus_pass = if username.is_empty() {
            ""
        } else {
            " autofocus"
        },
    );
    page("Sign in", &body)
}

/// The consent page.
pub(super) fn consent(
    client_id: &str,
    user: &str,
    scopes: &[&str],
    request: &str,
    csrf: &str,
) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>Allow access?</h1><p><strong>{}</strong> asks to act as <strong>{}</strong>",
        escape(client_id),
        escape(user)
    );
    if scopes.is_empty() {
        body.push_str(".</p>");
    } else {
        body.push_str(" with these permissions:</p><ul>");
        for s in scopes {
            let _ = write!(body, "<li><code>{}</code></li>", escape(s));
        }
        body.push_str("</ul>");
    }
    let _ = write!(
        body,
        "<form method=\"post\" action=\"/_keycard/consent\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<input type=\"hidden\" name=\"request\" value=\"{request}\">\
<button type=\"submit\" name=\"decision\" value=\"allow\">Allow</button>\
<button type=\"submit\" name=\"decision\" value=\"deny\" class=\"secondary\">Deny</button></form>",
        csrf = escape(csrf),
        request = escape(request),
    );
    page("Allow access?", &body)
}

/// The sign-out question (RP-initiated logout without proof of the application's asking).
pub(super) fn logout(user: &str, request: &str, csrf: &str) -> String {
    let body = format!(
        "<h1>Sign out?</h1><p>You are signed in as <strong>{user}</strong>.</p>\
<form method=\"post\" action=\"/oauth2/logout\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<input type=\"hidden\" name=\"request\" value=\"{request}\">\
<button type=\"submit\" name=\"decision\" value=\"logout\">Sign out</button></form>",
        user = escape(user),
        csrf = escape(csrf),
        request = escape(request),
    );
    page("Sign out?", &body)
}

/// The page after signing out, when the application named nowhere to return to.
pub(super) fn signed_out() -> String {
    page(
        "Signed out",
        "<h1>Signed out</h1><p>You are signed out. You can close this window.</p>",
    )
}

/// An error page (an authorization request that cannot be redirected back).
pub(super) fn error(message: &str) -> String {
    page(
        "Sign-in error",
        &format!(
            "<h1>Sign-in error</h1><p class=\"error\" role=\"alert\">{}</p>",
            escape(message)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_text_is_escaped() {
        let p = login(
            "<script>x</script>",
            "a=\"b\"&c",
            "t",
            "o'neil",
            Some("<b>"),
        );
        assert!(!p.contains("<script>x"));
        assert!(p.contains("&lt;script&gt;x"));
        assert!(p.contains("value=\"a=&quot;b&quot;&amp;c\""));
        assert!(p.contains("o&#39;neil"));
        assert!(!p.contains("<b>"));
        let c = consent("app", "alice", &["orders:read"], "r", "t");
        assert!(c.contains("name=\"decision\" value=\"allow\""));
        assert!(c.contains("name=\"decision\" value=\"deny\""));
        assert!(content_security_policy().contains("'sha256-"));
        let l = logout("<i>", "a&b", "t");
        assert!(l.contains("&lt;i&gt;") && l.contains("value=\"a&amp;b\""));
    }
}
