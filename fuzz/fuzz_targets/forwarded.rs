//! A forwarded client certificate header from a proxy in front of keycard, whose value may
//! begin with whatever a client sent (a proxy that appends its XFCC element to the client's
//! header): reading it must never panic, and whatever the client's prefix, the certificate
//! read is the one in the proxy's element or none — never one the client wrote.
#![no_main]

use http::{HeaderMap, HeaderValue};
use keycard_server::config::ForwardedCertHeader;
use keycard_server::fuzzing::{X_FORWARDED_CLIENT_CERT, X_SSL_CLIENT_CERT, forwarded_cert};
use libfuzzer_sys::fuzz_target;

/// The certificate the proxy saw (public; its key is nowhere).
const PROXY_SEEN: &str = "-----BEGIN CERTIFICATE-----\nMIIBjzCCATWgAwIBAgIUSKirotBEPfwqzLIYnq4CxsFuRtEwCgYIKoZIzj0EAwIw\nHDEaMBgGA1UEAwwRcHJveHktc2Vlbi1jbGllbnQwIBcNMjYxMjA3MTIyMzQ3WhgP\nMjEyNjExMTMxMjIzNDdaMBwxGjAYBgNVBAMMEXByb3h5LXNlZW4tY2xpZW50MFkw\nEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE2nty+P/qjuiBFDknnC79z5rJJWshxAvt\n6xpN2knw15Y0/Fc2Tj/fLG5oU2AiQYjOXf4o38HwoT4CMashXGF6LqNTMFEwHQYD\nVR0OBBYEFOVvaFWwcrkxfCp/59C8Fv53v+iLMB8GA1UdIwQYMBaAFOVvaFWwcrkx\nfCp/59C8Fv53v+iLMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIg\nNie+KCjwr4VXnUmQKBus5bBAvXmiBnKlwo34Nc+aH9ECIQCgZVZWjLdR8YIXRPyi\nKUrLu9O2i16Zo0oliwvNkVCc0A==\n-----END CERTIFICATE-----";

/// `%XX` for every byte but unreserved ones, as proxies escape the PEM.
fn escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Ok(prefix) = std::str::from_utf8(data) else {
        return;
    };
    // The raw value as either header: no panic, whatever it holds.
    if let Ok(v) = HeaderValue::from_str(prefix) {
        for (name, kind) in [
            (X_SSL_CLIENT_CERT, ForwardedCertHeader::SslClientCert),
            (X_FORWARDED_CLIENT_CERT, ForwardedCertHeader::ForwardedClientCert),
        ] {
            let mut h = HeaderMap::new();
            h.insert(name, v.clone());
            let _ = forwarded_cert(&h, kind, None);
        }
    }
    // The client's prefix, then the element the proxy appends.
    let proxy = format!(
        "By=spiffe://proxy;Hash=00;Cert=\"{}\";Subject=\"CN=proxy-seen-client\"",
        escape(PROXY_SEEN)
    );
    let Ok(v) = HeaderValue::from_str(&format!("{prefix},{proxy}")) else {
        return;
    };
    let mut h = HeaderMap::new();
    h.insert(X_FORWARDED_CLIENT_CERT, v);
    if let Ok(Some(cert)) = forwarded_cert(&h, ForwardedCertHeader::ForwardedClientCert, None) {
        assert_eq!(cert.identity.cn.as_deref(), Some("proxy-seen-client"));
    }
});
