//! `keycard doctor`: checks a deployment — its config and its store — against the practices
//! that keep APIs safe, and says how to fix each finding. Exit code 1 when anything is
//! critical.

use std::time::Duration;

use keycard_core::digest::HashAlg;
use keycard_core::{Method, MethodSet};
use keycard_server::{Settings, now_secs};
use serde::Serialize;

use super::common::{CliError, open_store};
use crate::output::json;

const DAY: i64 = 86_400;
/// Credentials unused this long are flagged.
const STALE_DAYS: i64 = 90;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
enum Severity {
    Critical,
    Warning,
}

#[derive(Debug, Serialize)]
struct Finding {
    severity: Severity,
    code: &'static str,
    message: String,
    fix: String,
}

fn finding(severity: Severity, code: &'static str, message: String, fix: &str) -> Finding {
    Finding {
        severity,
        code,
        message,
        fix: fix.to_owned(),
    }
}

/// The findings of the config alone.
fn config_findings(s: &Settings) -> Vec<Finding> {
    use Severity::{Critical, Warning};
    let mut out = Vec::new();
    let loopback = s.listen.ip().is_loopback();
    if s.tls.is_none() && !loopback {
        out.push(finding(
            Critical,
            "plain_http",
            format!("server.listen {} serves plain HTTP off loopback: credentials cross the network in the clear", s.listen),
            "add [server.tls] (cert, key), or listen on 127.0.0.1 behind a proxy that terminates TLS",
        ));
    }
    for r in s.routes.iter().filter(|r| !r.policy.public) {
        let prefix = &r.policy.prefix;
        let methods = r.policy.methods;
        if s.tls.is_none() {
            for m in [Method::Basic, Method::Digest] {
                if methods.contains(m) {
                    out.push(finding(
                        if loopback { Warning } else { Critical },
                        "password_without_tls",
                        format!("route {prefix} accepts {m} but keycard serves no TLS{}", if loopback { " (fine only behind a proxy that terminates TLS)" } else { "" }),
                        "add [server.tls], or make sure the proxy in front terminates TLS; or drop the method from routes.methods",
                    ));
                }
            }
        }
        if r.policy.rate_limit.is_none() {
            out.push(finding(
                Warning,
                "no_rate_limit",
                format!("route {prefix} has no rate limit"),
                "set routes.rate_limit (such as \"100/s\"), so one caller cannot take the API for itself",
            ));
        }
        if methods == MethodSet::all() {
            out.push(finding(
                Warning,
                "all_methods",
                format!("route {prefix} allows every method"),
                "list only the methods its clients use in routes.methods: each allowed method is attack surface",
            ));
        }
    }
    if s.tls.is_none() && s.mtls.client_ca.is_some() && s.mtls.forwarded.is_none() {
        out.push(finding(
            Warning,
            "forwarded_cert_header_unset",
            "mtls.client_ca is set but keycard serves no TLS and names no forwarded-certificate header: no client certificate reaches it".into(),
            "behind a TLS-terminating proxy, set mtls.forwarded_cert_header to the one header the proxy sets (\"x-ssl-client-cert\" for nginx, \"x-forwarded-client-cert\" for Envoy) and mtls.forwarded_cert_from to the proxy's addresses",
        ));
    }
    if let Some(ca) = &s.mtls.client_ca
        && s.mtls.rules.iter().any(|r| r.ca.is_none())
        && std::fs::read_to_string(ca)
            .is_ok_and(|pem| pem.matches("-----BEGIN CERTIFICATE-----").count() > 1)
    {
        out.push(finding(
            Warning,
            "rule_without_ca",
            format!("{} holds several certificates and an [[mtls.rules]] entry has no `ca`: any of those CAs can issue the names that rule maps", ca.display()),
            "give each rule the trust bundle of the names it maps (mtls.rules[].ca), one bundle per trust domain",
        ));
    }
    if let Some(f) = &s.mtls.forwarded {
        for net in f.from.iter().filter(|n| n.prefix_len() == 0) {
            out.push(finding(
                Critical,
                "forwarded_cert_from_anywhere",
                format!(
                    "mtls.forwarded_cert_from contains {net}: any client can claim any certificate"
                ),
                "list only the addresses of the proxies that terminate TLS",
            ));
        }
    }
    if let Some(m) = s.metrics_listen
        && m.ip().is_unspecified()
    {
        out.push(finding(
            Warning,
            "metrics_listen_wildcard",
            format!("server.metrics_listen {m} binds every address: the metrics, every reason code included, are served to whoever reaches it"),
            "bind it to loopback or the monitoring network's address, or firewall the port",
        ));
    }
    if s.trusted_proxies.is_empty() && s.routes.iter().any(|r| r.upstream.is_none()) {
        out.push(finding(
            Warning,
            "forward_auth_without_trusted_proxies",
            "a route has no upstream (it serves forward-auth only), but server.trusted_proxies is empty: /_keycard/verify answers only trusted proxies, so it refuses every request".into(),
            "add the address of the proxy that calls /_keycard/verify to server.trusted_proxies",
        ));
    }
    for r in s.routes.iter().filter(|r| r.allow_encoded_slash) {
        out.push(finding(
            Warning,
            "encoded_slash_allowed",
            format!("route {} takes %2F in paths: an upstream that decodes it sees more path segments than keycard routed by", r.policy.prefix),
            "turn allow_encoded_slash off unless the upstream decodes nothing, or every path under the route is equally open",
        ));
    }
    for i in &s.jwt_issuers {
        if let keycard_server::config::JwksSource::Url(u) = &i.jwks
            && u.scheme_str() == Some("http")
            && !host_is_loopback(u.host().unwrap_or(""))
        {
            out.push(finding(
                Warning,
                "jwks_plain_http",
                format!("the keys of issuer {} are fetched over plain HTTP from {u}: anyone on the path can substitute their own and sign any token", i.issuer),
                "use an https:// jwks_url (or a jwks_file)",
            ));
        }
    }
    if s.failed_auth.is_none() {
        out.push(finding(
            Critical,
            "failed_auth_off",
            "limits.failed_auth is off: passwords and keys can be guessed at full speed".into(),
            "set limits.failed_auth (the default is \"10/min\")",
        ));
    }
    if s.digest.algorithms.iter().any(|a| a.hash == HashAlg::Md5) {
        out.push(finding(
            Warning,
            "digest_md5",
            "digest.algorithms enables MD5".into(),
            "remove MD5 once legacy clients speak SHA-256 (RFC 7616)",
        ));
    }
    if s.tokens.access_token_ttl > Duration::from_secs(3600) {
        out.push(finding(
            Warning,
            "access_token_ttl",
            format!(
                "tokens.access_token_ttl is {}s, over 1 hour",
                s.tokens.access_token_ttl.as_secs()
            ),
            "keep access tokens short-lived (10m is the default); refresh tokens carry the session",
        ));
    }
    if s.tokens.refresh_token_ttl > Duration::from_secs(90 * 86_400) {
        out.push(finding(
            Warning,
            "refresh_token_ttl",
            format!(
                "tokens.refresh_token_ttl is {} days, over 90",
                s.tokens.refresh_token_ttl.as_secs() / 86_400
            ),
            "shorten tokens.refresh_token_ttl to 90d or less",
        ));
    }
    if std::env::var_os(keycard_server::master_key::MASTER_KEY_ENV).is_none() {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(&s.master_key_file)
            && meta.permissions().mode() & 0o077 != 0
        {
            out.push(finding(
                Critical,
                "master_key_readable",
                format!(
                    "the master key file {} has mode {:o}: others can read it",
                    s.master_key_file.display(),
                    meta.permissions().mode() & 0o777
                ),
                "chmod 600 the file (and keep it out of backups others can read)",
            ));
        }
    }
    out
}

/// Certificates that expire within this many days are flagged.
const EXPIRY_DAYS: i64 = 30;

/// The certificate files of the config: the server certificate expiring, a client CA
/// expiring or weak (RSA under 2048 bits, a SHA-1 signature), a revocation list past its
/// next update. A file that cannot be read is start-up's to refuse, not flagged here.
fn certificate_findings(s: &Settings, now: i64, out: &mut Vec<Finding>) {
    use Severity::{Critical, Warning};
    let mut files: Vec<(&str, &std::path::Path, bool)> = Vec::new();
    if let Some(t) = &s.tls {
        files.push(("server.tls.cert", &t.cert, false));
        if let Some(ca) = &t.client_ca {
            files.push(("server.tls.client_ca", ca, true));
        }
    }
    if let Some(ca) = &s.mtls.client_ca
        && !files.iter().any(|(_, p, _)| *p == ca.as_path())
    {
        files.push(("mtls.client_ca", ca, true));
    }
    for (key, path, is_ca) in files {
        let Ok(pem) = std::fs::read(path) else {
            continue;
        };
        let Ok(ders) = keycard_core::cert::certs_from_pem(&pem) else {
            continue;
        };
        // The server's leaf; every certificate of a CA bundle.
        let take = if is_ca { ders.len() } else { 1 };
        for der in ders.iter().take(take) {
            let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
                continue;
            };
            let name = cert.subject().to_string();
            let not_after = cert.validity().not_after.timestamp();
            if not_after < now {
                out.push(finding(
                    Critical,
                    "certificate_expired",
                    format!(
                        "{key} {}: `{name}` expired {} days ago",
                        path.display(),
                        (now - not_after) / DAY
                    ),
                    "replace the file, then send keycard SIGHUP (it reads the certificates again)",
                ));
            } else if not_after < now + EXPIRY_DAYS * DAY {
                out.push(finding(
                    Warning,
                    "certificate_expiring",
                    format!("{key} {}: `{name}` expires in {} days", path.display(), (not_after - now) / DAY),
                    "renew it and replace the file; keycard reads it again on SIGHUP or when the file changes",
                ));
            }
            if is_ca && let Some(weak) = weakness(&cert) {
                out.push(finding(
                    Warning,
                    "weak_client_ca",
                    format!("{key} {}: `{name}` {weak}", path.display()),
                    "issue client certificates from a CA with an RSA key of 2048 bits or more (or ECDSA) and a SHA-256 signature",
                ));
            }
        }
    }
    if let Some(t) = &s.tls
        && let Some(path) = &t.client_crl
        && let Ok(bytes) = std::fs::read(path)
    {
        for crl in crl_ders(&bytes) {
            let Ok((_, list)) = x509_parser::parse_x509_crl(&crl) else {
                continue;
            };
            if let Some(next) = list.next_update()
                && next.timestamp() < now
            {
                out.push(finding(
                    Warning,
                    "crl_stale",
                    format!(
                        "server.tls.client_crl {}: the list of `{}` was due for renewal {} days ago",
                        path.display(),
                        list.issuer(),
                        (now - next.timestamp()) / DAY
                    ),
                    "publish a fresh list (openssl ca -gencrl) into the file; keycard reads it again when it changes",
                ));
            }
        }
    }
}

/// Why a CA certificate is weak, if it is.
fn weakness(cert: &x509_parser::certificate::X509Certificate<'_>) -> Option<String> {
    use x509_parser::public_key::PublicKey;
    if let Ok(PublicKey::RSA(rsa)) = cert.public_key().parsed()
        && rsa.key_size() < 2048
    {
        return Some(format!("has an RSA key of {} bits", rsa.key_size()));
    }
    // sha1WithRSAEncryption, ecdsa-with-SHA1, dsa-with-sha1.
    const SHA1: [&str; 3] = [
        "1.2.840.113549.1.1.5",
        "1.2.840.10045.4.1",
        "1.2.840.10040.4.3",
    ];
    let oid = cert.signature_algorithm.algorithm.to_id_string();
    SHA1.contains(&oid.as_str())
        .then(|| "is signed with SHA-1".to_owned())
}

/// The DER lists of a CRL file: PEM `X509 CRL` blocks, or the file itself (DER).
fn crl_ders(bytes: &[u8]) -> Vec<Vec<u8>> {
    use rustls_pki_types::CertificateRevocationListDer;
    use rustls_pki_types::pem::PemObject;
    let pem: Vec<Vec<u8>> = CertificateRevocationListDer::pem_slice_iter(bytes)
        .filter_map(Result::ok)
        .map(|c| c.as_ref().to_vec())
        .collect();
    if pem.is_empty() {
        vec![bytes.to_vec()]
    } else {
        pem
    }
}

/// Whether a URL's host is this machine: `localhost`, or a loopback address.
fn host_is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

async fn store_findings(s: &Settings, out: &mut Vec<Finding>) -> Result<(), CliError> {
    use Severity::{Critical, Warning};
    if let Some(file) = keycard_store::sqlite_file(s.store_url.as_str())
        && !file.exists()
    {
        out.push(finding(
            Warning,
            "store_missing",
            format!("the store {} does not exist yet", file.display()),
            "start keycard serve with this config (it creates the store), or point store.url at the store it uses",
        ));
        return Ok(());
    }
    let store = open_store(s).await?;
    if let Err(e) = keycard_server::master_key::verify(&store, &s.master_key_file).await {
        out.push(finding(
            Critical,
            "master_key_mismatch",
            e.to_string(),
            "run with the master key the store was created with; keycard refuses to serve this store under another",
        ));
    }
    let now = now_secs();
    let stale_before = now - STALE_DAYS * DAY;
    let active = |revoked: Option<i64>, expires: Option<i64>| {
        revoked.is_none() && expires.is_none_or(|e| e > now)
    };
    let mut never_expire = Vec::new();
    let mut unused = Vec::new();
    for k in store.list_api_keys(None).await? {
        if !active(k.revoked_at, k.expires_at) {
            continue;
        }
        if k.expires_at.is_none() {
            never_expire.push(format!("API key {}", k.id));
        }
        if k.last_used_at.unwrap_or(k.created_at) < stale_before {
            unused.push(format!("API key {}", k.id));
        }
    }
    for k in store.list_hmac_keys(None).await? {
        if !active(k.revoked_at, k.expires_at) {
            continue;
        }
        if k.expires_at.is_none() {
            never_expire.push(format!("HMAC key {}", k.key_id));
        }
        if k.last_used_at.unwrap_or(k.created_at) < stale_before {
            unused.push(format!("HMAC key {}", k.key_id));
        }
    }
    if !never_expire.is_empty() {
        out.push(finding(
            Warning,
            "no_expiry",
            format!(
                "{} credential(s) never expire: {}",
                never_expire.len(),
                sample(&never_expire)
            ),
            "rotate them with an expiry (keycard key rotate ID, or create with --expires-in 90d)",
        ));
    }
    if !unused.is_empty() {
        out.push(finding(
            Warning,
            "unused_credentials",
            format!(
                "{} credential(s) unused for {STALE_DAYS} days: {}",
                unused.len(),
                sample(&unused)
            ),
            "revoke what nobody uses (keycard key revoke ID, keycard hmac revoke ID)",
        ));
    }
    if let Some(current) = store
        .published_signing_keys(now)
        .await?
        .into_iter()
        .find(|k| k.retired_at.is_none())
        && current.created_at < stale_before
    {
        out.push(finding(
            Warning,
            "signing_key_age",
            format!(
                "the signing key {} is {} days old",
                current.kid,
                (now - current.created_at) / DAY
            ),
            "keycard signing-key rotate (the old key stays published until its tokens expire)",
        ));
    }
    store.close().await;
    Ok(())
}

fn sample(items: &[String]) -> String {
    let mut s = items.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > 5 {
        s.push_str(&format!(" and {} more", items.len() - 5));
    }
    s
}

/// `keycard doctor` over `settings`; `None`: no config was found, which it reports (and
/// checks no store).
pub async fn run(settings: Option<&Settings>, as_json: bool) -> Result<(), CliError> {
    let mut findings = Vec::new();
    match settings {
        Some(settings) => {
            findings = config_findings(settings);
            certificate_findings(settings, now_secs(), &mut findings);
            if let Err(e) = store_findings(settings, &mut findings).await {
                findings.push(finding(
                    Severity::Critical,
                    "store_unreachable",
                    format!("the store cannot be read: {e}"),
                    "check store.url and that the database answers; keycard refuses every request without it",
                ));
            }
        }
        None => findings.push(finding(
            Severity::Critical,
            "no_config",
            "no config file to check (--config, KEYCARD_CONFIG or ./keycard.toml)".into(),
            "run keycard doctor --config FILE with the config keycard serve runs with",
        )),
    }
    findings.sort_by_key(|f| f.severity);
    let critical = findings
        .iter()
        .filter(|f| f.severity == Severity::Critical)
        .count();
    if as_json {
        json(&findings)?;
    } else if findings.is_empty() {
        println!("No findings.");
    } else {
        for f in &findings {
            let label = match f.severity {
                Severity::Critical => "CRITICAL",
                Severity::Warning => "warning ",
            };
            println!("{label} {:<22} {}", f.code, f.message);
            println!("         {:<22} fix: {}", "", f.fix);
        }
        println!(
            "\n{critical} critical, {} warning(s).",
            findings.len() - critical
        );
    }
    if critical > 0 {
        return Err(CliError::Findings(critical));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(toml: &str) -> Settings {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.toml");
        std::fs::write(&path, toml).unwrap();
        Settings::load(&path).unwrap()
    }

    fn codes(s: &Settings) -> Vec<(Severity, &'static str)> {
        config_findings(s)
            .iter()
            .map(|f| (f.severity, f.code))
            .collect()
    }

    #[test]
    fn plain_http_off_loopback_is_critical_and_on_loopback_is_not() {
        let off = settings("[server]\nlisten = \"0.0.0.0:8080\"\n");
        assert!(codes(&off).contains(&(Severity::Critical, "plain_http")));
        let on = settings("[server]\nlisten = \"127.0.0.1:8080\"\n");
        assert!(!codes(&on).iter().any(|(_, c)| *c == "plain_http"));
    }

    #[test]
    fn passwords_without_tls_md5_ttls_and_open_routes_are_flagged() {
        let s = settings(
            "[server]\nlisten = \"0.0.0.0:8080\"\n[limits]\nfailed_auth = \"off\"\n[digest]\nalgorithms = [\"SHA-256\", \"MD5\"]\n[tokens]\naccess_token_ttl = \"2h\"\nrefresh_token_ttl = \"180d\"\n[[routes]]\nprefix = \"/a/\"\nupstream = \"http://127.0.0.1:9\"\nmethods = [\"basic\"]\n[[routes]]\nprefix = \"/b/\"\nupstream = \"http://127.0.0.1:9\"\n",
        );
        let c = codes(&s);
        for want in [
            (Severity::Critical, "password_without_tls"),
            (Severity::Warning, "digest_md5"),
            (Severity::Warning, "access_token_ttl"),
            (Severity::Warning, "refresh_token_ttl"),
            (Severity::Warning, "all_methods"),
            (Severity::Warning, "no_rate_limit"),
            (Severity::Critical, "failed_auth_off"),
        ] {
            assert!(c.contains(&want), "{want:?} in {c:?}");
        }
        // A route limited to api_key and rate-limited: nothing to say.
        let tidy = settings(
            "[[routes]]\nprefix = \"/a/\"\nupstream = \"http://127.0.0.1:9\"\nmethods = [\"api_key\"]\nrate_limit = \"100/s\"\n",
        );
        assert!(codes(&tidy).is_empty(), "{:?}", codes(&tidy));
    }

    #[test]
    fn a_jwks_url_over_plain_http_off_loopback_is_flagged() {
        let issuer = |url: &str| {
            settings(&format!(
                "[[jwt.issuers]]\nissuer = \"https://idp/\"\njwks_url = \"{url}\"\naudiences = [\"a\"]\n"
            ))
        };
        let flagged =
            |url: &str| codes(&issuer(url)).contains(&(Severity::Warning, "jwks_plain_http"));
        assert!(flagged("http://idp.example/jwks.json"));
        let wide = settings("[server]\nmetrics_listen = \"0.0.0.0:9100\"\n");
        assert!(codes(&wide).contains(&(Severity::Warning, "metrics_listen_wildcard")));
        let own = settings("[server]\nmetrics_listen = \"127.0.0.1:9100\"\n");
        assert!(codes(&own).is_empty(), "{:?}", codes(&own));
        let verify_only = "[[routes]]\nprefix = \"/api/\"\n";
        assert!(
            codes(&settings(verify_only))
                .contains(&(Severity::Warning, "forward_auth_without_trusted_proxies"))
        );
        let trusted = format!("[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n{verify_only}");
        assert!(
            !codes(&settings(&trusted))
                .contains(&(Severity::Warning, "forward_auth_without_trusted_proxies"))
        );
        let slash = "[[routes]]\nprefix = \"/f/\"\nupstream = \"http://127.0.0.1:9\"\nallow_encoded_slash = true\n";
        assert!(codes(&settings(slash)).contains(&(Severity::Warning, "encoded_slash_allowed")));
        assert!(flagged("http://10.1.2.3/jwks.json"));
        for fine in [
            "https://idp.example/jwks.json",
            "http://127.0.0.1:9/jwks.json",
            "http://localhost/jwks.json",
            "http://[::1]:9/jwks.json",
        ] {
            assert!(!flagged(fine), "{fine}");
        }
    }

    #[test]
    fn a_client_ca_without_tls_or_a_forwarded_header_is_flagged() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        std::fs::write(&ca, p.self_signed(&key).unwrap().pem()).unwrap();
        let ca = ca.display();
        let unnamed = settings(&format!("[mtls]\nclient_ca = \"{ca}\"\n"));
        assert!(codes(&unnamed).contains(&(Severity::Warning, "forwarded_cert_header_unset")));
        let named = settings(&format!(
            "[mtls]\nclient_ca = \"{ca}\"\nforwarded_cert_header = \"x-ssl-client-cert\"\nforwarded_cert_from = [\"127.0.0.1\"]\n"
        ));
        assert!(codes(&named).is_empty(), "{:?}", codes(&named));
        let anywhere = settings(&format!(
            "[mtls]\nclient_ca = \"{ca}\"\nforwarded_cert_header = \"x-forwarded-client-cert\"\nforwarded_cert_from = [\"0.0.0.0/0\"]\n"
        ));
        assert!(codes(&anywhere).contains(&(Severity::Critical, "forwarded_cert_from_anywhere")));
        // Two CAs in the bundle, a rule without its own: flagged; with one: not.
        let one = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
        let bundle = dir.path().join("bundle.pem");
        std::fs::write(&bundle, one.clone() + &one).unwrap();
        let rule = |ca: &str| {
            settings(&format!(
                "[server]\n[server.tls]\ncert = \"{c}\"\nkey = \"{k}\"\nclient_ca = \"{b}\"\n[[mtls.rules]]\nsan_uri_prefix = \"spiffe://a/\"\nsubject = \"x\"\n{ca}",
                c = dir.path().join("server.pem").display(),
                k = dir.path().join("server-key.pem").display(),
                b = bundle.display(),
            ))
        };
        let server = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.path().join("server.pem"), server.pem()).unwrap();
        std::fs::write(dir.path().join("server-key.pem"), key.serialize_pem()).unwrap();
        assert!(codes(&rule("")).contains(&(Severity::Warning, "rule_without_ca")));
        let own = format!("ca = \"{ca}\"\n");
        assert!(!codes(&rule(&own)).contains(&(Severity::Warning, "rule_without_ca")));
    }
}
