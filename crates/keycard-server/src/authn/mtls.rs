//! The `mtls` method: the client certificate of the connection — or, behind a
//! TLS-terminating proxy in `mtls.forwarded_cert_from`, the one it forwards in the one header
//! `mtls.forwarded_cert_header` names — chained to the client CA, then mapped to a subject: a `keycard cert add` binding (by SHA-256 fingerprint: the
//! cache, else the store), else the first `[[mtls.rules]]` entry that matches. A certificate
//! that maps to nobody is refused. Certificate-bound tokens (RFC 8705) are checked where
//! tokens are verified.

use std::sync::Arc;

use http::HeaderMap;
use http::header::HeaderName;
use keycard_core::api_key::{self};
use keycard_core::{CertSource, HashDomain, Method, Principal, Reason, Refusal};
use rustls::pki_types::CertificateDer;

use super::base::{Base, stored_record};
use crate::clock::now_secs;
use crate::config::ForwardedCertHeader;
use crate::state::cache::Cached;
use crate::tls::{ClientCa, PeerCert};

/// Envoy's forwarded client certificate (`Cert="…"`, URL-encoded PEM).
pub const X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
/// nginx's `$ssl_client_escaped_cert` (URL-encoded PEM), as examples/nginx sets it.
pub const X_SSL_CLIENT_CERT: HeaderName = HeaderName::from_static("x-ssl-client-cert");
/// The longest forwarded certificate header read (a chain of a few certificates).
const MAX_FORWARDED: usize = 32 * 1024;

/// The `mtls` method's own state: `[[mtls.rules]]`, their bundles read.
#[derive(Debug)]
pub(super) struct Mtls {
    rules: Vec<Rule>,
}

impl Mtls {
    pub(super) fn new(settings: &[crate::config::MtlsRule]) -> Self {
        Mtls {
            rules: Rule::load(settings),
        }
    }

    /// Verifies the `mtls` method with `cert`.
    pub(super) async fn verify(&self, base: &Base, cert: &PeerCert) -> Result<Principal, Refusal> {
        let method = Some(Method::Mtls);
        if !cert.chain_verified {
            return Err(Refusal::unauthorized(Reason::UntrustedCertificate, method));
        }
        let now = now_secs();
        // The handshake checked validity then; a long-lived connection may outlive it.
        if !cert.identity.valid_at(now) {
            return Err(Refusal::unauthorized(Reason::Expired, method));
        }
        base.require_fresh(method)?;
        let handle = base.hasher.hash(
            HashDomain::CertFingerprint,
            cert.identity.fingerprint_hex().as_bytes(),
        );
        let cached = match base.cache.api_key(&handle) {
            Some(c) => c,
            None => {
                let generation = base.cache.generation();
                let row = base
                    .read_store(method, |store| async move {
                        store.find_cert_binding(&handle).await
                    })
                    .await?;
                let record = row.and_then(|r| {
                    stored_record(
                        r.id,
                        r.subject,
                        &r.scopes,
                        r.expires_at,
                        r.revoked_at,
                        r.subject_disabled,
                    )
                });
                base.cache.insert_api_key(handle, record, generation)
            }
        };
        if let Cached::Known(entry) = cached {
            // A binding decides, even a revoked one: revoking it must not fall through to
            // a rule that would map the same certificate.
            let principal = api_key::verify_as(&entry.record, Method::Mtls, now)?;
            base.cache.mark_used(&entry, now);
            return Ok(principal);
        }
        self.rules
            .iter()
            .enumerate()
            .find_map(|(i, r)| {
                let p = r.rule.principal(&cert.identity)?;
                match &r.ca {
                    None => Some(p),
                    Some(Ok(bundle)) => cert.chains_to(i, bundle).then_some(p),
                    Some(Err(_)) => None,
                }
            })
            .ok_or_else(|| Refusal::unauthorized(Reason::UnknownCredential, method))
    }
}

/// A `[[mtls.rules]]` entry with its trust bundle read.
#[derive(Debug)]
struct Rule {
    rule: keycard_core::cert::CertRule,
    /// `ca`: the rule maps only certificates that chain to it. `Err`: the bundle could not be
    /// read, and the rule maps nothing (never a later rule's certificates by falling away).
    ca: Option<Result<ClientCa, crate::tls::TlsError>>,
}

impl Rule {
    /// The rules of `settings`, their bundles read.
    fn load(settings: &[crate::config::MtlsRule]) -> Vec<Rule> {
        settings
            .iter()
            .map(|r| Rule {
                rule: r.rule.clone(),
                ca: r.ca.as_deref().map(|path| {
                    ClientCa::load(path).inspect_err(|e| {
                        tracing::error!(error = %e, "cannot read an mtls rule's ca; the rule maps nothing");
                    })
                }),
            })
            .collect()
    }
}

/// Why a forwarded certificate header was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ForwardedError {
    /// The header came more than once: which one the proxy set cannot be told (400).
    #[error("the forwarded client certificate header is repeated")]
    Repeated,
    /// The header cannot be read (the caller treats it as no certificate at all).
    #[error("the forwarded client certificate cannot be read")]
    Unreadable,
}

/// The client certificate a proxy forwarded in `header` (and in no other), judged against
/// `ca`; `Ok(None)` when the header is absent.
pub fn forwarded_cert(
    headers: &HeaderMap,
    header: ForwardedCertHeader,
    ca: Option<&ClientCa>,
) -> Result<Option<PeerCert>, ForwardedError> {
    use ForwardedError::Unreadable;
    let name = match header {
        ForwardedCertHeader::SslClientCert => X_SSL_CLIENT_CERT,
        ForwardedCertHeader::ForwardedClientCert => X_FORWARDED_CLIENT_CERT,
    };
    let mut values = headers.get_all(&name).iter();
    let Some(v) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ForwardedError::Repeated);
    }
    let v = v.to_str().map_err(|_| Unreadable)?;
    if v.len() > MAX_FORWARDED {
        return Err(Unreadable);
    }
    let pem = match header {
        ForwardedCertHeader::ForwardedClientCert => {
            // Several proxies append elements; the last is the hop nearest to keycard, which
            // saw the client. `Chain` (leaf first, with the intermediates) when the proxy
            // sends it, else `Cert`.
            let elements = xfcc_elements(v).ok_or(Unreadable)?;
            let last = elements.last().ok_or(Unreadable)?;
            let value = |key: &str| {
                last.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(key))
                    .map(|(_, v)| v.as_str())
            };
            let cert = value("Chain").or_else(|| value("Cert")).ok_or(Unreadable)?;
            percent_decode(cert).ok_or(Unreadable)?
        }
        ForwardedCertHeader::SslClientCert => percent_decode(v).ok_or(Unreadable)?,
    };
    let chain: Vec<CertificateDer<'static>> = keycard_core::cert::certs_from_pem(&pem)
        .map_err(|_| Unreadable)?
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    PeerCert::judge(&chain, ca, CertSource::Forwarded)
        .map(Some)
        .ok_or(Unreadable)
}

/// An XFCC value (Envoy's `x-forwarded-client-cert`) read strictly, whole: elements
/// separated by `,`, each `key=value` pairs separated by `;`, a value either plain (no `"`,
/// `\`, `,` or `;`) or a quoted string in which `\` escapes the next character; spaces
/// around separators allowed. `None` for anything else — an unbalanced quote, a stray
/// backslash, text after a closing quote, an empty element or key, `Cert` or `Chain` twice in
/// one element: behind a proxy that appends its element to a client's header, a malformed
/// prefix must not be able to swallow the proxy's element and pass as the last one.
fn xfcc_elements(v: &str) -> Option<Vec<Vec<(String, String)>>> {
    let b = v.as_bytes();
    let mut i = 0;
    let skip_spaces = |i: &mut usize| {
        while matches!(b.get(*i), Some(b' ' | b'\t')) {
            *i += 1;
        }
    };
    let mut elements = Vec::new();
    let mut pairs: Vec<(String, String)> = Vec::new();
    loop {
        skip_spaces(&mut i);
        let start = i;
        while b
            .get(i)
            .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        {
            i += 1;
        }
        let key = v.get(start..i).filter(|k| !k.is_empty())?.to_owned();
        if b.get(i) != Some(&b'=') {
            return None;
        }
        i += 1;
        let value = if b.get(i) == Some(&b'"') {
            i += 1;
            let mut out = Vec::new();
            loop {
                match *b.get(i)? {
                    b'"' => {
                        i += 1;
                        break;
                    }
                    b'\\' => {
                        out.push(*b.get(i + 1)?);
                        i += 2;
                    }
                    c => {
                        out.push(c);
                        i += 1;
                    }
                }
            }
            String::from_utf8(out).ok()?
        } else {
            let start = i;
            while let Some(&c) = b.get(i) {
                match c {
                    b';' | b',' => break,
                    b'"' | b'\\' => return None,
                    _ => i += 1,
                }
            }
            v.get(start..i)?.trim_end_matches([' ', '\t']).to_owned()
        };
        let once = ["cert", "chain"];
        if once.iter().any(|o| key.eq_ignore_ascii_case(o))
            && pairs.iter().any(|(k, _)| k.eq_ignore_ascii_case(&key))
        {
            return None;
        }
        pairs.push((key, value));
        skip_spaces(&mut i);
        match b.get(i) {
            None => {
                elements.push(pairs);
                return Some(elements);
            }
            Some(b';') => i += 1,
            Some(b',') => {
                i += 1;
                elements.push(std::mem::take(&mut pairs));
            }
            Some(_) => return None,
        }
    }
}

/// `%XX` decoding (a `+` stays a `+`: these are not form values).
fn percent_decode(v: &str) -> Option<Vec<u8>> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    Some(out)
}

/// The CA forwarded certificates are judged against (`mtls.client_ca`, else
/// `server.tls.client_ca`).
pub(crate) fn forwarding_ca(settings: &crate::config::MtlsSettings) -> Option<Arc<ClientCa>> {
    let path = settings.client_ca.as_ref()?;
    match ClientCa::load(path) {
        Ok(ca) => Some(Arc::new(ca)),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the client CA; forwarded certificates are refused");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xfcc_elements_and_values() {
        let v = r#"By=spiffe://a;Hash=ab;Cert="-----BEGIN%20X";Subject="CN=a,O=b",By=spiffe://b;Cert="sec\"ond";URI=spiffe://c;DNS=a;DNS=b ; URI="#;
        let e = xfcc_elements(v).unwrap();
        assert_eq!(e.len(), 2);
        let get = |i: usize, k: &str| {
            e[i].iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get(1, "cert").as_deref(), Some("sec\"ond"));
        assert_eq!(get(1, "URI").as_deref(), Some("spiffe://c"));
        assert_eq!(get(1, "Hash"), None);
        assert_eq!(get(0, "Subject").as_deref(), Some("CN=a,O=b"));
        assert_eq!(get(0, "Hash").as_deref(), Some("ab"));
    }

    /// A client's prefix in front of an appending proxy's element: whatever it holds, it
    /// cannot make its own element the last one; the whole value is unreadable.
    #[test]
    fn xfcc_prefixes_cannot_swallow_the_proxys_element() {
        let proxy = r#"By=spiffe://envoy;Hash=abcd;Cert="BOB";Subject="CN=bob";URI="#;
        for prefix in [
            r#"Chain=ADMIN;x=\"#,
            r#"Chain=ADMIN;x=""#,
            r#"Cert=ADMIN;x=""#,
            r#"Cert="ADMIN"x"#,
            r#"Cert=AD"MIN"#,
            r#"Cert=ADMIN;Cert=OTHER"#,
            "Cert=ADMIN;",
            "",
            "=ADMIN",
        ] {
            let v = format!("{prefix},{proxy}");
            match xfcc_elements(&v) {
                None => {}
                Some(e) => {
                    let last = e.last().unwrap();
                    let cert = last
                        .iter()
                        .find(|(k, _)| k == "Cert")
                        .map(|(_, v)| v.as_str());
                    assert_eq!(cert, Some("BOB"), "{v}");
                    assert!(!last.iter().any(|(k, _)| k == "Chain"), "{v}");
                }
            }
        }
        for broken in ["", " , ", "Cert", "Cert=\"open", "Cert=a\\b", "a=b,"] {
            assert_eq!(xfcc_elements(broken), None, "{broken}");
        }
    }

    #[test]
    fn percent_decoding_refuses_broken_escapes() {
        assert_eq!(percent_decode("a%20b+c").unwrap(), b"a b+c");
        assert_eq!(percent_decode("a%2"), None);
        assert_eq!(percent_decode("a%zz"), None);
    }

    #[test]
    fn only_the_named_header_is_read_and_never_twice() {
        use ForwardedCertHeader::{ForwardedClientCert, SslClientCert};
        let mut h = HeaderMap::new();
        assert_eq!(
            forwarded_cert(&h, SslClientCert, None).map(|c| c.is_some()),
            Ok(false)
        );
        // The other header is no certificate at all, whatever it holds.
        h.insert(X_FORWARDED_CLIENT_CERT, "Cert=\"garbage\"".parse().unwrap());
        assert_eq!(
            forwarded_cert(&h, SslClientCert, None).map(|c| c.is_some()),
            Ok(false)
        );
        assert_eq!(
            forwarded_cert(&h, ForwardedClientCert, None).map(|c| c.is_some()),
            Err(ForwardedError::Unreadable)
        );
        h.insert(X_SSL_CLIENT_CERT, "not%20a%20certificate".parse().unwrap());
        assert_eq!(
            forwarded_cert(&h, SslClientCert, None).map(|c| c.is_some()),
            Err(ForwardedError::Unreadable)
        );
        h.append(X_SSL_CLIENT_CERT, "another".parse().unwrap());
        assert_eq!(
            forwarded_cert(&h, SslClientCert, None).map(|c| c.is_some()),
            Err(ForwardedError::Repeated)
        );
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_CLIENT_CERT, "By=x;Hash=y".parse().unwrap());
        assert_eq!(
            forwarded_cert(&h, ForwardedClientCert, None).map(|c| c.is_some()),
            Err(ForwardedError::Unreadable)
        );
    }
}
