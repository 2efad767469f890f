//! Client certificates as identities (mutual TLS, RFC 8705).
//!
//! What keycard reads from a client certificate whose chain the TLS layer (or, behind a
//! proxy, the server) has verified: its SHA-256 fingerprint (the key of a `keycard cert add`
//! binding, and RFC 8705's `x5t#S256`), its SAN URIs (SPIFFE IDs) and DNS names, its common
//! name and its subject DN as an RFC 4514 string (for `tls_client_auth`). And the rules that
//! map such a certificate to a subject (`[[mtls.rules]]`).
//!
//! Not here: chain verification (rustls-webpki does it), looking bindings up.

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::{Method, Principal, Scopes};

/// Why a certificate or a DN could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// Not a DER X.509 certificate (truncated, wrong type, trailing bytes).
    #[error("not an X.509 certificate: {0}")]
    BadCertificate(String),
    /// No `CERTIFICATE` block in the PEM text.
    #[error("no PEM CERTIFICATE block found")]
    NoCertificate,
    /// A distinguished name that is not an RFC 4514 string.
    #[error("not an RFC 4514 distinguished name: {0}")]
    BadDn(String),
}

/// What a client certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIdentity {
    /// SHA-256 of the DER encoding.
    pub fingerprint: [u8; 32],
    /// SAN URIs (`spiffe://…`).
    pub san_uris: Vec<String>,
    /// SAN DNS names.
    pub san_dns: Vec<String>,
    /// The subject's (first) common name.
    pub cn: Option<String>,
    /// The subject DN, RFC 4514 (most specific RDN first, `,` between RDNs).
    pub subject_dn: String,
    /// Validity start, Unix seconds.
    pub not_before: i64,
    /// Validity end, Unix seconds.
    pub not_after: i64,
    /// Issuer and subject are the same name (a self-signed certificate, RFC 8705 §2.2).
    pub self_issued: bool,
}

impl CertIdentity {
    /// Reads a DER certificate. Trailing bytes are refused.
    pub fn from_der(der: &[u8]) -> Result<Self, CertError> {
        let (rest, cert) =
            X509Certificate::from_der(der).map_err(|e| CertError::BadCertificate(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CertError::BadCertificate("trailing bytes".into()));
        }
        let mut san_uris = Vec::new();
        let mut san_dns = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(u) => san_uris.push((*u).to_owned()),
                    GeneralName::DNSName(d) => san_dns.push(d.to_ascii_lowercase()),
                    _ => {}
                }
            }
        }
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .map(str::to_owned);
        Ok(Self {
            fingerprint: fingerprint(der),
            san_uris,
            san_dns,
            cn,
            subject_dn: rfc4514(cert.subject())?,
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            self_issued: cert.issuer().as_raw() == cert.subject().as_raw(),
        })
    }

    /// The fingerprint as lowercase hex without colons (what `keycard cert add` prints).
    pub fn fingerprint_hex(&self) -> String {
        hex(&self.fingerprint)
    }

    /// RFC 8705 §3.1 `x5t#S256`: base64url of the fingerprint, unpadded.
    pub fn x5t_s256(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.fingerprint)
    }

    /// Whether `now` (Unix seconds) is within the validity period.
    pub fn valid_at(&self, now: i64) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

/// SHA-256 of `der`.
pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, der).as_ref());
    out
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The DER certificates of a PEM text, in order (a chain: leaf first).
pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<Vec<u8>>, CertError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let certs = CertificateDer::pem_slice_iter(pem)
        .map(|c| c.map(|c| c.as_ref().to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::BadCertificate(format!("{e:?}")))?;
    if certs.is_empty() {
        return Err(CertError::NoCertificate);
    }
    Ok(certs)
}

/// Short names of RFC 4514 §3 (and `emailAddress`, which `openssl` prints).
const NAMES: [(&str, &str); 10] = [
    ("2.5.4.3", "CN"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.6", "C"),
    ("2.5.4.9", "STREET"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("0.9.2342.19200300.100.1.1", "UID"),
    ("1.2.840.113549.1.9.1", "EMAILADDRESS"),
];

fn rfc4514(name: &x509_parser::x509::X509Name<'_>) -> Result<String, CertError> {
    let mut rdns = Vec::new();
    for rdn in name.iter() {
        let mut parts = Vec::new();
        for atv in rdn.iter() {
            let oid = atv.attr_type().to_id_string();
            let ty = NAMES
                .iter()
                .find(|(o, _)| *o == oid)
                .map_or(oid.clone(), |(_, n)| (*n).to_owned());
            let value = atv
                .as_str()
                .map_err(|_| CertError::BadCertificate(format!("subject attribute {oid}")))?;
            parts.push(format!("{ty}={}", escape(value)));
        }
        parts.sort();
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    Ok(rdns.join(","))
}

/// Escapes an attribute value as RFC 4514 §2.4 requires.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

/// The canonical form of an RFC 4514 DN string an operator typed (`CN=a, O=b`): spaces
/// around separators dropped, attribute types upper-cased, values unescaped then escaped
/// again the one way [`CertIdentity::subject_dn`] does. Values keep their case.
pub fn normalize_dn(dn: &str) -> Result<String, CertError> {
    let bad = || CertError::BadDn(dn.to_owned());
    let mut rdns: Vec<String> = Vec::new();
    let mut parts: Vec<String> = Vec::new();
    let mut chars = dn.chars().peekable();
    loop {
        // type
        let mut ty = String::new();
        let mut equals = false;
        for c in chars.by_ref() {
            if c == '=' {
                equals = true;
                break;
            }
            ty.push(c);
        }
        let ty = ty.trim().to_ascii_uppercase();
        if !equals
            || ty.is_empty()
            || !ty
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            return Err(bad());
        }
        // value, up to an unescaped `,` or `+`
        let mut value = String::new();
        let mut trailing_escaped = 0usize;
        let mut end = None;
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    let Some(n) = chars.next() else {
                        return Err(bad());
                    };
                    if n.is_ascii_hexdigit() {
                        let Some(m) = chars.next().filter(char::is_ascii_hexdigit) else {
                            return Err(bad());
                        };
                        let byte = u8::from_str_radix(&format!("{n}{m}"), 16).map_err(|_| bad())?;
                        if !byte.is_ascii() {
                            return Err(bad());
                        }
                        value.push(char::from(byte));
                    } else {
                        value.push(n);
                    }
                    trailing_escaped = value.len();
                }
                ',' | '+' => {
                    end = Some(c);
                    break;
                }
                c => value.push(c),
            }
        }
        let tail = value.get(trailing_escaped..).unwrap_or("");
        let cut = tail.len() - tail.trim_end().len();
        value.truncate(value.len() - cut);
        let value = value.trim_start();
        parts.push(format!("{ty}={}", escape(value)));
        match end {
            Some('+') => {}
            Some(_) => {
                parts.sort();
                rdns.push(parts.join("+"));
                parts.clear();
            }
            None => {
                parts.sort();
                rdns.push(parts.join("+"));
                break;
            }
        }
    }
    Ok(rdns.join(","))
}

/// What a `[[mtls.rules]]` entry matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertMatch {
    /// A SAN URI starting with this prefix, which ends in `/` (`spiffe://example.org/`),
    /// followed by a plain path; with a `spiffe://` prefix, the certificate's only URI SAN.
    SanUriPrefix(String),
    /// A SAN DNS name equal to this pattern, where a leading `*.` stands for exactly one
    /// label (`*.svc.example.org`).
    SanDns(String),
    /// The subject's common name, exactly.
    Cn(String),
}

/// A rule mapping verified certificates to a subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRule {
    /// What it matches.
    pub matcher: CertMatch,
    /// The subject: a fixed name, or a template with `{san_uri}`, `{san_dns}`, `{cn}`.
    pub subject: String,
    /// The scopes a request mapped by this rule holds.
    pub scopes: Scopes,
}

impl CertRule {
    /// The subject this rule gives `cert`, if it matches. A template whose placeholder the
    /// certificate cannot fill does not match.
    pub fn subject_for(&self, cert: &CertIdentity) -> Option<String> {
        let (san_uri, san_dns) = match &self.matcher {
            CertMatch::SanUriPrefix(p) => {
                // An X.509-SVID carries exactly one URI SAN (SPIFFE X509-SVID §2): a
                // certificate naming several workloads is no SVID.
                if p.starts_with("spiffe://") && cert.san_uris.len() != 1 {
                    return None;
                }
                let uri = cert
                    .san_uris
                    .iter()
                    .find(|u| u.strip_prefix(p.as_str()).is_some_and(clean_path))?;
                (Some(uri), None)
            }
            CertMatch::SanDns(pattern) => (
                None,
                Some(cert.san_dns.iter().find(|d| dns_matches(pattern, d))?),
            ),
            CertMatch::Cn(cn) => {
                if cert.cn.as_deref() != Some(cn.as_str()) {
                    return None;
                }
                (None, None)
            }
        };
        let mut subject = self.subject.clone();
        for (placeholder, value) in [
            ("{san_uri}", san_uri.or_else(|| cert.san_uris.first())),
            ("{san_dns}", san_dns.or_else(|| cert.san_dns.first())),
            ("{cn}", cert.cn.as_ref()),
        ] {
            if subject.contains(placeholder) {
                subject = subject.replace(placeholder, value?);
            }
        }
        (!subject.is_empty()).then_some(subject)
    }

    /// The principal of a request whose verified certificate this rule maps; its
    /// credential id is the certificate's fingerprint.
    pub fn principal(&self, cert: &CertIdentity) -> Option<Principal> {
        let subject = self.subject_for(cert)?;
        Some(Principal::new(
            subject.into(),
            Method::Mtls,
            self.scopes.clone(),
            cert.fingerprint_hex().into(),
        ))
    }
}

/// Whether the part of a URI SAN after a rule's prefix (which ends in `/`) is a plain path:
/// not empty, no empty, `.` or `..` segment, no percent-encoding, query or fragment — the
/// SPIFFE ID path rules, so that one workload cannot be spelled as another.
fn clean_path(rest: &str) -> bool {
    !rest.is_empty()
        && !rest.contains(['%', '?', '#'])
        && rest
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

fn dns_matches(pattern: &str, name: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(suffix) => name
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => name == pattern,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dn_strings_are_normalised() {
        assert_eq!(
            normalize_dn("CN=client one, O=Example Corp,c=DE").unwrap(),
            "CN=client one,O=Example Corp,C=DE"
        );
        assert_eq!(
            normalize_dn(r"cn = a\,b , O=x\2by").unwrap(),
            r"CN=a\,b,O=x\+y"
        );
        assert_eq!(normalize_dn("OU=b+CN=a,O=x").unwrap(), "CN=a+OU=b,O=x");
        for bad in ["", "CN", "=x", "CN=a\\", "C N=x", "CN=\\e9"] {
            assert!(normalize_dn(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_are_escaped_per_rfc4514() {
        assert_eq!(escape(" #a,b "), r"\ #a\,b\ ");
        assert_eq!(escape("#x"), r"\#x");
        assert_eq!(escape("a;b<c>d\"e\\"), r#"a\;b\<c\>d\"e\\"#);
    }

    fn identity() -> CertIdentity {
        CertIdentity {
            fingerprint: [7; 32],
            san_uris: vec!["spiffe://example.org/ns/a/sa/b".into()],
            san_dns: vec!["api.svc.example.org".into()],
            cn: Some("client-a".into()),
            subject_dn: "CN=client-a".into(),
            not_before: 0,
            not_after: 10,
            self_issued: false,
        }
    }

    #[test]
    fn rules_map_spiffe_ids_dns_names_and_common_names() {
        let scopes = Scopes::parse("orders:read").unwrap();
        let rule = |matcher, subject: &str| CertRule {
            matcher,
            subject: subject.into(),
            scopes: scopes.clone(),
        };
        let id = identity();
        let spiffe = rule(
            CertMatch::SanUriPrefix("spiffe://example.org/".into()),
            "{san_uri}",
        );
        assert_eq!(
            spiffe.subject_for(&id).as_deref(),
            Some("spiffe://example.org/ns/a/sa/b")
        );
        let other = rule(
            CertMatch::SanUriPrefix("spiffe://other.org/".into()),
            "{san_uri}",
        );
        assert_eq!(other.subject_for(&id), None);
        let dns = rule(
            CertMatch::SanDns("*.svc.example.org".into()),
            "svc-{san_dns}",
        );
        assert_eq!(
            dns.subject_for(&id).as_deref(),
            Some("svc-api.svc.example.org")
        );
        // One label only: `a.b.svc.example.org` does not match `*.svc.example.org`.
        let mut deep = identity();
        deep.san_dns = vec!["a.b.svc.example.org".into()];
        assert_eq!(dns.subject_for(&deep), None);
        let cn = rule(CertMatch::Cn("client-a".into()), "fixed");
        assert_eq!(cn.subject_for(&id).as_deref(), Some("fixed"));
        assert_eq!(
            rule(CertMatch::Cn("client-b".into()), "x").subject_for(&id),
            None
        );
        // SPIFFE prefixes match on a path boundary, a clean path, and one URI SAN only.
        for (uris, matches) in [
            (vec!["spiffe://example.org.evil/ns/a"], false),
            (vec!["spiffe://example.org/"], false),
            (vec!["spiffe://example.org//ns/a"], false),
            (vec!["spiffe://example.org/ns/../admin"], false),
            (vec!["spiffe://example.org/ns/./a"], false),
            (vec!["spiffe://example.org/ns/a/"], false),
            (vec!["spiffe://example.org/ns/%61"], false),
            (vec!["spiffe://example.org/ns/a?x"], false),
            (vec!["spiffe://example.org/ns/a#x"], false),
            (
                vec!["spiffe://example.org/ns/a", "spiffe://example.org/ns/b"],
                false,
            ),
            (vec!["spiffe://example.org/ns/a"], true),
        ] {
            let mut c = identity();
            c.san_uris = uris.iter().map(|u| (*u).to_owned()).collect();
            assert_eq!(spiffe.subject_for(&c).is_some(), matches, "{uris:?}");
        }
        // A placeholder the certificate cannot fill: no match.
        let mut no_cn = identity();
        no_cn.cn = None;
        assert_eq!(
            rule(CertMatch::SanDns("api.svc.example.org".into()), "{cn}").subject_for(&no_cn),
            None
        );
    }

    #[test]
    fn truncated_and_foreign_input_is_refused() {
        assert!(CertIdentity::from_der(b"").is_err());
        assert!(CertIdentity::from_der(&[0x30, 0x82, 0x01]).is_err());
        assert_eq!(certs_from_pem(b"hello"), Err(CertError::NoCertificate));
    }
}
