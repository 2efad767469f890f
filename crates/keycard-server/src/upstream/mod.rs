//! The client side: the connections to upstreams (HTTP/1.1 spoken by hand on the common path,
//! hyper for the rest), the response body type, and the identity headers written into what
//! the upstream receives.

pub(crate) mod body;
pub(crate) mod client;
pub(crate) mod h1;
pub(crate) mod identity;
pub(crate) mod pool;
