//! Who the client is, and the `X-Forwarded-*` headers: believed only from `trusted_proxies`.

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

/// `X-Forwarded-For`.
pub(crate) const X_FORWARDED_FOR: http::HeaderName =
    http::HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub(crate) const X_FORWARDED_PROTO: http::HeaderName =
    http::HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub(crate) const X_FORWARDED_HOST: http::HeaderName =
    http::HeaderName::from_static("x-forwarded-host");

/// Whether `ip` is one of the trusted proxies.
pub(crate) fn is_trusted(trusted: &[IpNet], ip: IpAddr) -> bool {
    let ip = canonical(ip);
    trusted.iter().any(|n| n.contains(&ip))
}

/// The client's address: the peer, or — when the peer is a trusted proxy — the right-most
/// `X-Forwarded-For` entry that is not itself a trusted proxy.
pub(crate) fn client_ip(trusted: &[IpNet], peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    let peer = canonical(peer);
    if !is_trusted(trusted, peer) {
        return peer;
    }
    let mut client = peer;
    for value in headers.get_all(X_FORWARDED_FOR).iter().rev() {
        let Ok(text) = value.to_str() else {
            return client;
        };
        for part in text.rsplit(',') {
            match part.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    let ip = canonical(ip);
                    client = ip;
                    if !is_trusted(trusted, ip) {
                        return ip;
                    }
                }
                // Garbage in the chain: stop at the last address we could read.
                Err(_) => return client,
            }
        }
    }
    client
}

/// The `X-Forwarded-For` the upstream is given when the peer is a trusted proxy: every
/// `X-Forwarded-For` line joined in order, kept from the entry [`client_ip`] takes for the
/// client (what keycard audits and limits) rightwards, and the peer appended; so the
/// chain's first address is the client keycard decided on. `None` when there is no chain.
pub(crate) fn forwarded_for(
    trusted: &[IpNet],
    peer: IpAddr,
    headers: &HeaderMap,
) -> Option<http::HeaderValue> {
    let mut kept: Vec<IpAddr> = Vec::new();
    'walk: for value in headers.get_all(X_FORWARDED_FOR).iter().rev() {
        let Ok(text) = value.to_str() else {
            break;
        };
        for part in text.rsplit(',') {
            match part.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    let ip = canonical(ip);
                    kept.push(ip);
                    if !is_trusted(trusted, ip) {
                        break 'walk;
                    }
                }
                Err(_) => break 'walk,
            }
        }
    }
    if kept.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(kept.len() * 17 + 17);
    for ip in kept.iter().rev() {
        out.push_str(&ip.to_string());
        out.push_str(", ");
    }
    out.push_str(&canonical(peer).to_string());
    http::HeaderValue::from_str(&out).ok()
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn h(xff: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(X_FORWARDED_FOR, HeaderValue::from_str(xff).unwrap());
        m
    }

    #[test]
    fn untrusted_peers_cannot_spoof() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(client_ip(&trusted, peer, &h("1.2.3.4")), peer);
    }

    #[test]
    fn trusted_chains_are_walked_from_the_right() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            client_ip(&trusted, peer, &h("6.6.6.6, 1.2.3.4, 10.0.0.2")),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(&trusted, peer, &HeaderMap::new()), peer);
        assert_eq!(
            client_ip(&trusted, peer, &h("junk, 1.2.3.4")),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert!(is_trusted(&trusted, mapped));
    }

    /// Several lines are one chain, and the chain the upstream is told starts at the
    /// address keycard takes for the client's.
    #[test]
    fn the_upstream_is_told_the_client_keycard_decided_on() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let lines = |ls: &[&str]| {
            let mut m = HeaderMap::new();
            for l in ls {
                m.append(X_FORWARDED_FOR, HeaderValue::from_str(l).unwrap());
            }
            m
        };
        for (chain, client, told) in [
            (
                &["6.6.6.6", "1.2.3.4, 10.0.0.2"][..],
                "1.2.3.4",
                "1.2.3.4, 10.0.0.2, 10.0.0.1",
            ),
            (
                &["1.2.3.4", "10.0.0.3"][..],
                "1.2.3.4",
                "1.2.3.4, 10.0.0.3, 10.0.0.1",
            ),
            (&["junk, 1.2.3.4"][..], "1.2.3.4", "1.2.3.4, 10.0.0.1"),
            (
                &["1.2.3.4, junk, 10.0.0.2"][..],
                "10.0.0.2",
                "10.0.0.2, 10.0.0.1",
            ),
            (&["::ffff:5.6.7.8"][..], "5.6.7.8", "5.6.7.8, 10.0.0.1"),
        ] {
            let h = lines(chain);
            assert_eq!(
                client_ip(&trusted, peer, &h),
                client.parse::<IpAddr>().unwrap(),
                "{chain:?}"
            );
            assert_eq!(
                forwarded_for(&trusted, peer, &h).unwrap(),
                told,
                "{chain:?}"
            );
            let first: IpAddr = told.split(',').next().unwrap().parse().unwrap();
            assert_eq!(first, client_ip(&trusted, peer, &h));
        }
        assert!(forwarded_for(&trusted, peer, &lines(&["junk"])).is_none());
    }
}
