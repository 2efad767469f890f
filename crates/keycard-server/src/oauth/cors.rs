//! CORS (the Fetch standard's CORS protocol) for browser applications calling the token,
//! userinfo, revocation and JWKS endpoints: off unless `oauth.cors_origins` lists origins,
//! and then only those, matched exactly. Never `*`, never `Access-Control-Allow-Credentials`:
//! these endpoints take credentials in the request (a client secret, a bearer token), not
//! the browser's cookies.

use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN,
    VARY,
};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};

use crate::upstream::body::Body;

/// The origins allowed, and what each endpoint takes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cors {
    origins: Vec<String>,
}

impl Cors {
    /// CORS for `origins` (exact `scheme://host[:port]`); none: off.
    pub(crate) fn new(origins: &[String]) -> Self {
        Self {
            origins: origins.to_vec(),
        }
    }

    /// The methods a browser may call `path` with, when it is one of the endpoints CORS
    /// applies to.
    fn methods(path: &str) -> Option<&'static str> {
        match path {
            "/oauth2/token" | "/oauth2/revoke" => Some("POST"),
            "/oauth2/userinfo" => Some("GET, POST"),
            "/.well-known/jwks.json" => Some("GET"),
            _ => None,
        }
    }

    /// The request's `Origin`, when it is allowed to call `path`.
    pub(crate) fn allowed(&self, path: &str, headers: &HeaderMap) -> Option<HeaderValue> {
        if self.origins.is_empty() || Self::methods(path).is_none() {
            return None;
        }
        let mut all = headers.get_all(ORIGIN).iter();
        let origin = all.next()?;
        if all.next().is_some() {
            return None;
        }
        let text = origin.to_str().ok()?;
        self.origins
            .iter()
            .any(|o| o == text)
            .then(|| origin.clone())
    }

    /// The answer to a preflight (`OPTIONS` with `Access-Control-Request-Method`) from an
    /// allowed origin; `None` for any other request.
    pub(crate) fn preflight(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Option<Response<Body>> {
        if method != Method::OPTIONS || !headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD) {
            return None;
        }
        let origin = self.allowed(path, headers)?;
        let methods = Self::methods(path)?;
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NO_CONTENT;
        let h = r.headers_mut();
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(methods),
        );
        h.insert(
            ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
        h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        h.insert(VARY, HeaderValue::from_static("origin"));
        Some(r)
    }

    /// Marks an answer to `origin` (from [`Cors::allowed`]) readable by its script.
    pub(crate) fn expose(origin: HeaderValue, r: &mut Response<Body>) {
        let h = r.headers_mut();
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("www-authenticate, retry-after"),
        );
        h.append(VARY, HeaderValue::from_static("origin"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn only_listed_origins_at_the_listed_endpoints() {
        let cors = Cors::new(&["https://app.example".to_owned()]);
        let ok = headers(&[("origin", "https://app.example")]);
        assert!(cors.allowed("/oauth2/token", &ok).is_some());
        assert!(cors.allowed("/.well-known/jwks.json", &ok).is_some());
        assert!(cors.allowed("/oauth2/introspect", &ok).is_none());
        assert!(cors.allowed("/oauth2/authorize", &ok).is_none());
        for bad in [
            "https://app.example.evil",
            "http://app.example",
            "https://APP.example",
            "null",
        ] {
            let h = headers(&[("origin", bad)]);
            assert!(cors.allowed("/oauth2/token", &h).is_none(), "{bad}");
        }
        let twice = headers(&[
            ("origin", "https://app.example"),
            ("origin", "https://app.example"),
        ]);
        assert!(cors.allowed("/oauth2/token", &twice).is_none());
        assert!(
            Cors::default().allowed("/oauth2/token", &ok).is_none(),
            "off by default"
        );

        let pre = headers(&[
            ("origin", "https://app.example"),
            ("access-control-request-method", "POST"),
        ]);
        let r = cors
            .preflight(&Method::OPTIONS, "/oauth2/token", &pre)
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            r.headers()[ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example"
        );
        assert!(!r.headers().contains_key("access-control-allow-credentials"));
        assert!(
            cors.preflight(&Method::POST, "/oauth2/token", &pre)
                .is_none()
        );
        assert!(
            cors.preflight(&Method::OPTIONS, "/oauth2/token", &ok)
                .is_none()
        );
    }
}
