//! The request path: the listener, the routing of keycard's own endpoints, the gateway that
//! forwards a verified request, forward-auth's verdict for a proxy in front (over HTTP, and
//! over gRPC for Envoy), and the
//! [`gate::Gate`] every one of them passes.

pub(crate) mod app;
pub(crate) mod ext_authz;
mod forward_auth;
pub(crate) mod gate;
mod gateway;
pub(crate) mod listener;
mod own;
pub(crate) mod proxy;
