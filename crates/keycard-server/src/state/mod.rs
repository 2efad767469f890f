//! What keycard keeps in memory from the store, and keeps honest: the credential cache, the
//! change-feed follower that invalidates it, and keycard's own signing keys.

pub(crate) mod cache;
pub(crate) mod client;
pub(crate) mod feed;
pub(crate) mod keyring;
