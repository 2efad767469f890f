//! Managing credentials: [`manage::Manager`] (what the CLI and the admin API both call) and
//! the admin API over HTTP.

pub(crate) mod api;
mod handlers;
pub mod manage;
