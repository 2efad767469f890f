//! `[[routes]]` and their upstreams.

use std::time::Duration;

use http::Uri;
use keycard_core::route::RoutePolicy;
use keycard_core::{Method, MethodSet, Scopes, parse_rate};

use super::error::ConfigError;
use super::raw::RawRoute;
use super::settings::{RouteSettings, Upstream};
use super::validate::Validator;

/// Parses `http://host:port[/path]` or `https://…`.
pub(crate) fn parse_upstream(text: &str) -> Result<Upstream, String> {
    let uri: Uri = text.parse().map_err(|_| format!("`{text}` is not a URL"))?;
    let scheme = uri.scheme().cloned().ok_or("needs http:// or https://")?;
    if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
        return Err("needs http:// or https://".into());
    }
    let authority = uri.authority().cloned().ok_or("needs a host")?;
    if authority.as_str().contains('@') {
        return Err("must not carry credentials".into());
    }
    if uri.query().is_some() {
        return Err("must not have a query string".into());
    }
    let path = uri.path();
    let base_path = if path == "/" || path.is_empty() {
        String::new()
    } else {
        path.to_owned()
    };
    let default_port = if scheme == http::uri::Scheme::HTTPS {
        443
    } else {
        80
    };
    let host = match authority.port_u16() {
        Some(p) if p != default_port => format!("{}:{p}", authority.host()),
        _ => authority.host().to_owned(),
    };
    let host = http::HeaderValue::from_str(&host).map_err(|_| "needs a valid host")?;
    Ok(Upstream {
        scheme,
        authority,
        base_path,
        host,
    })
}

impl Validator<'_> {
    pub(super) fn route(
        &self,
        i: usize,
        r: RawRoute,
        default_timeout: Duration,
    ) -> Result<RouteSettings, ConfigError> {
        let key = |k: &str| format!("routes[{i}].{k}");
        if !r.prefix.starts_with('/') || !keycard_core::route::path_is_routable(&r.prefix) {
            return Err(self.err(
                key("prefix"),
                "must start with `/` and contain no `.` or `..` segments",
            ));
        }
        if r.prefix.starts_with("/_keycard/") {
            return Err(self.err(
                key("prefix"),
                "/_keycard/ is keycard's own; choose another prefix",
            ));
        }
        let rate_limit = match r.rate_limit.as_deref() {
            None => {
                if r.rate_limit_burst.is_some() {
                    return Err(self.err(key("rate_limit_burst"), "goes with rate_limit"));
                }
                None
            }
            Some(text) => {
                let rate =
                    parse_rate(text).map_err(|e| self.err(key("rate_limit"), e.to_string()))?;
                if r.rate_limit_burst == Some(0) {
                    return Err(self.err(key("rate_limit_burst"), "must be at least 1"));
                }
                Some(keycard_core::rate::Gcra::new(rate, r.rate_limit_burst))
            }
        };
        let methods = match r.methods {
            None => MethodSet::all(),
            Some(list) => {
                let mut set = MethodSet::empty();
                for (j, m) in list.iter().enumerate() {
                    let m: Method = m.parse().map_err(|e: keycard_core::UnknownMethod| {
                        self.err(format!("routes[{i}].methods[{j}]"), e.to_string())
                    })?;
                    set.insert(m);
                }
                if set.is_empty() && !r.public {
                    return Err(self.err(
                        key("methods"),
                        "an empty list lets nobody in; list methods or set public = true",
                    ));
                }
                set
            }
        };
        let scopes =
            Scopes::from_list(&r.scopes).map_err(|e| self.err(key("scopes"), e.to_string()))?;
        if r.public && !scopes.is_empty() {
            return Err(self.err(key("scopes"), "a public route cannot require scopes"));
        }
        let upstream = match r.upstream {
            None => None,
            Some(u) => Some(parse_upstream(&u).map_err(|m| self.err(key("upstream"), m))?),
        };
        // The prefix is replaced by the base path: both must end in `/`, or `/q` with a base
        // `/base/` sends `/qadmin/x` to `/base/admin/x`, a path another route guards.
        if let Some(u) = &upstream
            && !u.base_path.is_empty()
            && (!r.prefix.ends_with('/') || !u.base_path.ends_with('/'))
        {
            return Err(self.err(
                key("upstream"),
                format!(
                    "with a path in the upstream URL, the prefix and that path must both end in `/` (such as prefix = \"{}/\" and upstream = \"…{}/\"): the prefix is replaced by the path, and without the `/` a request could be sent under another route's path",
                    r.prefix.trim_end_matches('/'),
                    u.base_path.trim_end_matches('/')
                ),
            ));
        }
        let upstream_timeout = self.duration(
            &key("upstream_timeout"),
            r.upstream_timeout.as_deref(),
            default_timeout,
        )?;
        if upstream_timeout.is_zero() {
            return Err(self.err(key("upstream_timeout"), "must be more than 0s"));
        }
        Ok(RouteSettings {
            policy: RoutePolicy {
                prefix: r.prefix.into(),
                methods,
                scopes,
                public: r.public,
                rate_limit,
            },
            upstream,
            upstream_timeout,
            allow_encoded_slash: r.allow_encoded_slash,
        })
    }
}
