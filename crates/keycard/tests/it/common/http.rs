//! A small HTTP client over hyper, HTTP/1.1 or HTTP/2 (prior knowledge).

use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("not JSON: {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    /// Every value of a header.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    /// The upstream echo's view of a request header.
    pub fn upstream_header(&self, name: &str) -> Option<String> {
        self.json()["headers"][name].as_str().map(str::to_owned)
    }
}

#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Http {
    pub fn new() -> Self {
        Http {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// A client whose connections come from `local` (127.0.0.2, 127.0.0.3, … are all
    /// loopback): another client address for the throttle.
    pub fn bound(local: std::net::IpAddr) -> Self {
        let mut c = HttpConnector::new();
        c.set_local_address(Some(local));
        Http {
            client: Client::builder(TokioExecutor::new()).build(c),
        }
    }

    pub fn http2() -> Self {
        Http {
            client: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
        }
    }

    pub async fn get(&self, url: &str, headers: &[(&str, &str)]) -> Resp {
        self.send(Method::GET, url, headers, Bytes::new()).await
    }

    /// `None` when the connection fails (a server still starting).
    pub async fn try_get(&self, url: &str) -> Option<Resp> {
        let req = Request::builder()
            .uri(url)
            .body(Full::new(Bytes::new()))
            .ok()?;
        let resp =
            tokio::time::timeout(std::time::Duration::from_secs(2), self.client.request(req))
                .await
                .ok()?
                .ok()?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.ok()?.to_bytes();
        Some(Resp {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }

    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Resp {
        let mut b = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(body.into())).unwrap();
        let resp =
            tokio::time::timeout(std::time::Duration::from_secs(20), self.client.request(req))
                .await
                .expect("request timed out")
                .expect("request failed");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Resp {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        }
    }
}
