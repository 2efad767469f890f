//! What every entry point shares about a request before it is judged: the client's address
//! behind trusted proxies, the one bounded read of a signed body, and the answers keycard
//! gives of its own (refusals, challenges, redirects).

pub(crate) mod answer;
pub(crate) mod forwarded;
pub(crate) mod redact;
pub(crate) mod request;
pub(crate) mod signed_body;
