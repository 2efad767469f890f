//! The example service, built and run: it accepts an API key, a keycard-issued token and an
//! RFC 9421 signature made with the Rust helper, and refuses what the gateway refuses.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use keycard_server::manage::{
    Manager, NewClientRequest, NewHmacRequest, NewKeyRequest, NewUserRequest,
};

struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }
}

async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = client
        .request(b.body(Full::new(Bytes::copy_from_slice(body))).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&body.collect().await.unwrap().to_bytes()).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_layer_accepts_what_the_gateway_accepts_and_refuses_the_same_attacks() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keycard.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\n[store]\nurl = \"sqlite://data/k.db\"\n[secrets]\nmaster_key_file = \"data/master.key\"\n[audit]\nfile = \"data/audit.jsonl\"\n[limits]\nfailed_auth = \"100000/min\"\n",
    )
    .unwrap();
    let settings = keycard_server::Settings::load(&config).unwrap();
    // keycard serve beside it (its token endpoint), and the service with the layer, both on
    // the same store.
    let server = keycard_server::start(&settings).await.unwrap();
    let keycard = keycard_server::layer::Embedded::start(&settings)
        .await
        .unwrap();
    let app = keycard_embedded_example::app(&keycard).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    let base = format!("http://{addr}");
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();

    let master = keycard_server::master_key::load_or_create(&settings.master_key_file).unwrap();
    let store = keycard_store::Store::open(settings.store_url.as_str())
        .await
        .unwrap();
    let m = Manager::new(store, &master, &settings);
    let key = m
        .create_api_key(NewKeyRequest {
            subject: "billing".into(),
            scopes: vec!["orders:read".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let weak = m
        .create_api_key(NewKeyRequest {
            subject: "intern".into(),
            scopes: vec!["other:read".into()],
            ..Default::default()
        })
        .await
        .unwrap();

    // An API key: through, and the handler read the caller with the extractor.
    let url = format!("{base}/orders/42");
    let a = send(&client, Method::GET, &url, &[("x-api-key", &key.key)], b"").await;
    assert_eq!(a.status, 200, "{}", a.body);
    let v = a.json();
    assert_eq!(
        (
            v["order"].as_str(),
            v["subject"].as_str(),
            v["method"].as_str()
        ),
        (Some("42"), Some("billing"), Some("api_key"))
    );
    // No credential, a wrong key, a truncated key: the same 401 with a challenge.
    let truncated = &key.key[..key.key.len() - 1];
    for headers in [
        vec![],
        vec![("x-api-key", "kc_notakeyatall")],
        vec![("x-api-key", truncated)],
    ] {
        let a = send(&client, Method::GET, &url, &headers, b"").await;
        assert_eq!(a.status, 401, "{headers:?}");
        assert_eq!(a.body, r#"{"error":"unauthorized"}"#);
        assert!(a.headers.get("www-authenticate").is_some());
    }
    // A key without the scope: 403.
    let a = send(&client, Method::GET, &url, &[("x-api-key", &weak.key)], b"").await;
    assert_eq!(a.status, 403);
    // A method the layer does not allow (Basic) is refused even if right.
    let a = send(
        &client,
        Method::GET,
        &url,
        &[("authorization", "Basic YTpi")],
        b"",
    )
    .await;
    assert_eq!(a.status, 401);

    // A keycard access token (client credentials at keycard serve's token endpoint).
    let c = m
        .create_client(NewClientRequest {
            client_id: "reports".into(),
            scopes: vec!["orders:read".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let basic = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .encode(format!("reports:{}", c.client_secret.unwrap()))
    };
    let tok = send(
        &client,
        Method::POST,
        &format!("http://{}/oauth2/token", server.local_addr),
        &[
            ("authorization", &format!("Basic {basic}")),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        b"grant_type=client_credentials&scope=orders:read",
    )
    .await;
    assert_eq!(tok.status, 200, "{}", tok.body);
    let token = tok.json()["access_token"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {token}");
    let a = send(
        &client,
        Method::GET,
        &url,
        &[("authorization", &bearer)],
        b"",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["method"], "oauth2");
    // The token with one byte changed: 401.
    let mut forged = token.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = format!("Bearer {}", String::from_utf8(forged).unwrap());
    let a = send(
        &client,
        Method::GET,
        &url,
        &[("authorization", &forged)],
        b"",
    )
    .await;
    assert_eq!(a.status, 401);

    // An RFC 9421 signature made with the Rust helper; replayed, or for another path: 401.
    let h = m
        .create_hmac_key(NewHmacRequest {
            subject: "partner".into(),
            scopes: vec!["orders:read".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let secret = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(h.secret.unwrap())
            .unwrap()
    };
    let signer = keycard_core::sign::Signer::Hmac(&secret);
    let mut req = Request::builder()
        .method(Method::GET)
        .uri(&url)
        .body(Full::new(Bytes::new()))
        .unwrap();
    keycard_core::sign::sign_http_request(&mut req, b"", &signer, &h.key_id, &[]).unwrap();
    let signed: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect();
    let pairs: Vec<(&str, &str)> = signed
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let a = send(&client, Method::GET, &url, &pairs, b"").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["method"], "hmac");
    let replay = send(&client, Method::GET, &url, &pairs, b"").await;
    assert_eq!(replay.status, 401, "a replayed signature went through");
    let other = send(
        &client,
        Method::GET,
        &format!("{base}/orders/43"),
        &pairs,
        b"",
    )
    .await;
    assert_eq!(
        other.status, 401,
        "a signature for another path went through"
    );

    // Revoked through the store while serving: refused within a second (the change feed).
    m.revoke_api_key(&key.id).await.unwrap();
    let mut refused = false;
    for _ in 0..100 {
        if send(&client, Method::GET, &url, &[("x-api-key", &key.key)], b"")
            .await
            .status
            == 401
        {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "a revoked key still works after 2 s");

    // Every attempt is in the audit trail, under the layer's route.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = m
        .audit(keycard_server::manage::AuditFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let routes: Vec<_> = events
        .events
        .iter()
        .filter(|e| e.route.as_deref() == Some("/orders/"))
        .collect();
    assert!(routes.iter().any(|e| e.outcome == "forbidden"));
    assert!(
        routes
            .iter()
            .any(|e| e.method.as_deref() == Some("hmac") && e.reason.as_deref() == Some("replay"))
    );
    keycard.shutdown().await;
    server.shutdown().await;
}

/// mTLS through the layer: the host hands over the TLS peer's chain; keycard verifies it
/// against `mtls.client_ca` and maps it through its certificate bindings.
#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_handed_over_by_the_host_is_verified_and_mapped() {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    use tower_service::Service;
    let dir = tempfile::tempdir().unwrap();
    let ca = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let cert = p.self_signed(&key).unwrap();
        (cert.pem(), Issuer::new(p, key))
    };
    let client = |issuer: &Issuer<'_, KeyPair>, cn: &str| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.signed_by(&key, issuer).unwrap()
    };
    let (ca_pem, issuer) = ca("embedded test CA");
    let (_, other) = ca("another CA");
    std::fs::write(dir.path().join("ca.pem"), ca_pem).unwrap();
    let config = dir.path().join("keycard.toml");
    std::fs::write(
        &config,
        "[store]\nurl = \"sqlite://data/k.db\"\n[secrets]\nmaster_key_file = \"data/master.key\"\n[audit]\nfile = \"data/audit.jsonl\"\n[mtls]\nclient_ca = \"ca.pem\"\n",
    )
    .unwrap();
    let settings = keycard_server::Settings::load(&config).unwrap();
    let keycard = keycard_server::layer::Embedded::start(&settings)
        .await
        .unwrap();
    let master = keycard_server::master_key::load_or_create(&settings.master_key_file).unwrap();
    let store = keycard_store::Store::open(settings.store_url.as_str())
        .await
        .unwrap();
    let m = Manager::new(store, &master, &settings);
    let device = client(&issuer, "device-1");
    m.add_cert(keycard_server::manage::NewCertRequest {
        subject: "device-1".into(),
        cert_pem: device.pem(),
        scopes: vec![],
        expires_in: None,
    })
    .await
    .unwrap();
    let unbound = client(&issuer, "device-2");
    let foreign = client(&other, "device-1");
    let mut app = keycard_embedded_example::app(&keycard).unwrap();
    let call = |cert: Option<Vec<u8>>| {
        let mut req = http::Request::builder()
            .uri("/whoami")
            .body(axum::body::Body::empty())
            .unwrap();
        if let Some(der) = cert {
            req.extensions_mut()
                .insert(keycard_server::layer::PeerCertificates(vec![der]));
        }
        req
    };
    let r = app.call(call(Some(device.der().to_vec()))).await.unwrap();
    assert_eq!(r.status(), 200);
    let body = r.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (v["subject"].as_str(), v["method"].as_str()),
        (Some("device-1"), Some("mtls"))
    );
    for (what, cert) in [
        ("no certificate", None),
        ("a certificate of another CA", Some(foreign.der().to_vec())),
        (
            "a certificate bound to nobody",
            Some(unbound.der().to_vec()),
        ),
        ("garbage", Some(b"not a certificate".to_vec())),
    ] {
        let r = app.call(call(cert)).await.unwrap();
        assert_eq!(r.status(), 401, "{what}");
    }
    keycard.shutdown().await;
}

/// The layer is as strict as the gateway: client-sent `X-Keycard-*` (any spelling) never
/// reaches the inner service, `X-Forwarded-For` is believed only from
/// `server.trusted_proxies`, and signed bodies are read under the gateway's size bound and
/// its cap on reads at once.
#[tokio::test(flavor = "multi_thread")]
async fn the_layer_strips_identity_headers_trusts_only_its_proxies_and_bounds_bodies() {
    use axum::routing::any;
    use keycard_server::layer::PeerAddr;
    use tower_service::Service;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keycard.toml");
    std::fs::write(
        &config,
        "[server]\ntrusted_proxies = [\"10.0.0.1/32\"]\n[store]\nurl = \"sqlite://data/k.db\"\n[secrets]\nmaster_key_file = \"data/master.key\"\n[audit]\nfile = \"data/audit.jsonl\"\n[limits]\nfailed_auth = \"100000/min\"\n",
    )
    .unwrap();
    let settings = keycard_server::Settings::load(&config).unwrap();
    let keycard = keycard_server::layer::Embedded::start(&settings)
        .await
        .unwrap();
    let master = keycard_server::master_key::load_or_create(&settings.master_key_file).unwrap();
    let store = keycard_store::Store::open(settings.store_url.as_str())
        .await
        .unwrap();
    let key = Manager::new(store, &master, &settings)
        .create_api_key(NewKeyRequest {
            subject: "billing".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .key;
    async fn echo(headers: http::HeaderMap) -> String {
        let mut m = serde_json::Map::new();
        for (k, v) in &headers {
            m.insert(k.to_string(), v.to_str().unwrap_or("").into());
        }
        serde_json::Value::Object(m).to_string()
    }
    let mut app: axum::Router =
        axum::Router::new().route("/echo", any(echo).layer(keycard.layer("/echo")));
    let request = |peer: &str, headers: &[(&str, &str)], body: axum::body::Body| {
        let mut b = http::Request::builder().uri("/echo").method("POST");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let mut req = b.body(body).unwrap();
        req.extensions_mut()
            .insert(PeerAddr(peer.parse::<SocketAddr>().unwrap()));
        req
    };
    let r = app
        .call(request(
            "10.0.0.1:5000",
            &[
                ("x-api-key", &key),
                ("x-keycard-subject", "root"),
                ("x_keycard_scopes", "keycard:admin"),
                ("x-forwarded-for", "203.0.113.9"),
                ("x-ssl-client-cert", "forged"),
                ("x-forwarded-client-cert", "Cert=\"forged\""),
            ],
            axum::body::Body::empty(),
        ))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen: serde_json::Value =
        serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(seen["x-keycard-subject"], "billing");
    assert_eq!(seen["x-keycard-method"], "api_key");
    assert!(seen.get("x_keycard_scopes").is_none(), "{seen}");
    assert!(seen.get("x-ssl-client-cert").is_none(), "{seen}");
    assert!(seen.get("x-forwarded-client-cert").is_none(), "{seen}");
    // A caller that is not a trusted proxy cannot name another address.
    let r = app
        .call(request(
            "192.0.2.5:5000",
            &[("x-api-key", &key), ("x-forwarded-for", "198.51.100.7")],
            axum::body::Body::empty(),
        ))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // An auth-int credential's body is read only for one that could verify: a Digest user,
    // behind a nonce keycard minted (taken from a challenge).
    Manager::new(
        keycard_store::Store::open(settings.store_url.as_str())
            .await
            .unwrap(),
        &master,
        &settings,
    )
    .add_user(NewUserRequest {
        name: "a".into(),
        password: "a long enough password".into(),
        scopes: Vec::new(),
        digest: true,
    })
    .await
    .unwrap();
    let r = app
        .call(request("192.0.2.5:5000", &[], axum::body::Body::empty()))
        .await
        .unwrap();
    let challenge = r
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("Digest "))
        .unwrap();
    let param = |name: &str| {
        let start = challenge.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
        challenge[start..].split('"').next().unwrap().to_owned()
    };
    let digest = format!(
        "Digest username=\"a\", realm=\"keycard\", nonce=\"{}\", uri=\"/echo\", algorithm=SHA-256, qop=auth-int, nc=00000001, cnonce=\"c\", response=\"r\", opaque=\"{}\"",
        param("nonce"),
        param("opaque")
    );
    let digest = digest.as_str();
    // A nonce keycard never minted: refused without reading a byte (the body never ends).
    let forged = digest.replace(&param("nonce"), "n");
    let never = http_body_util::StreamBody::new(futures_util::stream::pending::<
        Result<http_body::Frame<Bytes>, std::convert::Infallible>,
    >());
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        app.call(request(
            "192.0.2.5:5000",
            &[("authorization", &forged)],
            axum::body::Body::new(never),
        )),
    )
    .await
    .expect("a forged nonce started a body read")
    .unwrap();
    assert_eq!(r.status(), 401);
    // Over the bound, 413.
    let big = vec![b'x'; keycard_server::layer::MAX_SIGNED_BODY + 1];
    let r = app
        .call(request(
            "192.0.2.5:5000",
            &[("authorization", digest)],
            axum::body::Body::from(big),
        ))
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // Bodies that never end hold every read permit: the next is 503, not another read.
    // (At most `READS_PER_CLIENT` per address: the clients come from several.)
    let mut held = Vec::new();
    for i in 0..keycard_server::layer::CONCURRENT_READS {
        let peer = format!(
            "192.0.2.{}:5000",
            10 + i / usize::from(keycard_server::layer::READS_PER_CLIENT)
        );
        let never = http_body_util::StreamBody::new(futures_util::stream::pending::<
            Result<http_body::Frame<Bytes>, std::convert::Infallible>,
        >());
        let mut svc = app.clone();
        let req = request(
            &peer,
            &[("authorization", digest)],
            axum::body::Body::new(never),
        );
        held.push(tokio::spawn(async move { svc.call(req).await }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = app
        .call(request(
            "192.0.2.5:5000",
            &[("authorization", digest)],
            axum::body::Body::from("x"),
        ))
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    for h in held {
        h.abort();
    }
    // A signature over `@scheme` by a client of an HTTPS host: verified as `https` only when
    // the host says its connection is TLS (a server sees an origin-form target, no scheme).
    let m = Manager::new(
        keycard_store::Store::open(settings.store_url.as_str())
            .await
            .unwrap(),
        &master,
        &settings,
    );
    let hk = m
        .create_hmac_key(NewHmacRequest {
            subject: "partner".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let secret = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(hk.secret.unwrap())
            .unwrap()
    };
    let signed = |nonce: &str| {
        let now = keycard_server::now_secs();
        let input = format!(
            "sig1=(\"@method\" \"@scheme\" \"@authority\" \"@path\");created={now};nonce=\"{nonce}\";keyid=\"{}\"",
            hk.key_id
        );
        let sig = keycard_core::httpsig::parse(&input, "sig1=:AAAA:")
            .unwrap()
            .remove(0);
        let headers = http::HeaderMap::new();
        let parts = keycard_core::httpsig::RequestParts {
            method: "POST",
            scheme: "https",
            authority: "orders.internal",
            path: "/echo",
            query: None,
            headers: &headers,
        };
        let mac = keycard_core::httpsig::sign_hmac(
            &secret,
            &keycard_core::httpsig::signature_base(&sig, &parts).unwrap(),
        );
        let value = {
            use base64::Engine;
            format!(
                "sig1=:{}:",
                base64::engine::general_purpose::STANDARD.encode(mac)
            )
        };
        (input, value)
    };
    for (marked, want) in [(false, 401), (true, 200)] {
        let (input, value) = signed(if marked { "n-tls" } else { "n-plain" });
        let mut req = request(
            "192.0.2.5:5000",
            &[
                ("host", "orders.internal"),
                ("signature-input", &input),
                ("signature", &value),
            ],
            axum::body::Body::empty(),
        );
        if marked {
            req.extensions_mut()
                .insert(keycard_server::layer::ConnectionIsTls);
        }
        let r = app.call(req).await.unwrap();
        assert_eq!(r.status(), want, "marked as TLS: {marked}");
    }
    keycard.shutdown().await;
    let audit = std::fs::read_to_string(dir.path().join("data/audit.jsonl")).unwrap();
    assert!(audit.contains("\"ip\":\"203.0.113.9\""), "{audit}");
    assert!(audit.contains("\"ip\":\"192.0.2.5\""), "{audit}");
    assert!(!audit.contains("198.51.100.7"), "{audit}");
}
