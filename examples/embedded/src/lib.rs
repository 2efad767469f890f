//! The example service: `/orders/{id}` needs scope `orders:read` and one of an API key, a
//! keycard access token or an RFC 9421 signature; `/whoami` takes any method. Handlers read
//! the caller through the [`Authenticated`] extractor.

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use keycard_core::Method;
use keycard_server::layer::{Authenticated, Embedded, InvalidScope};

/// The service's routes, each behind its keycard layer.
pub fn app(keycard: &Embedded) -> Result<Router, InvalidScope> {
    let orders = keycard
        .layer("/orders/")
        .methods([Method::ApiKey, Method::Oauth2, Method::Hmac])
        .scopes(["orders:read"])?;
    let anyone = keycard.layer("/whoami");
    Ok(Router::new()
        .route("/orders/{id}", get(order).layer(orders))
        .route("/whoami", get(whoami).layer(anyone)))
}

async fn order(Path(id): Path<String>, Authenticated(who): Authenticated) -> String {
    serde_json::json!({
        "order": id,
        "subject": who.subject(),
        "method": who.method().as_str(),
        "scopes": who.scopes().as_str(),
    })
    .to_string()
}

async fn whoami(Authenticated(who): Authenticated) -> String {
    serde_json::json!({
        "subject": who.subject(),
        "method": who.method().as_str(),
        "credential": who.credential_id(),
    })
    .to_string()
}
