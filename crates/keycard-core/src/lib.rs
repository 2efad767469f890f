//! keycard's verification core.
//!
//! Everything here is pure: credential parsers, one verifier per method, route policy, the
//! secret newtypes and the key derivations. No sockets, no SQL, no clocks (callers pass
//! `now`), so it can be fuzzed and embedded. The server crate feeds it material from its
//! caches and maps a [`Refusal`] to HTTP in one place.
//!
//! What it deliberately does not do: fetch anything, log anything, or decide HTTP status
//! codes and bodies.
//!
//! ```
//! use keycard_core::{api_key, MasterKey, Reason};
//!
//! let hasher = MasterKey::generate()?.keyed_hasher();
//! let key = api_key::generate()?;
//! assert!(api_key::check_format(key.expose_secret()).is_ok());
//! // The store keeps only this handle, never the key.
//! let _handle = api_key::lookup_handle(&hasher, key.expose_secret());
//! assert_eq!(api_key::check_format("kc_typo"), Err(Reason::Malformed));
//! # Ok::<(), keycard_core::MasterKeyError>(())
//! ```
#![deny(missing_docs)]

pub mod access_token;
pub mod api_key;
pub mod audit;
pub mod basic;
pub mod cert;
pub mod credential;
pub mod digest;
mod duration;
pub mod httpsig;
pub mod jwt;
mod keys;
mod method;
pub mod password;
pub mod pkce;
mod principal;
pub mod rate;
mod refusal;
pub mod route;
mod scope;
mod secret;
pub mod sign;
pub mod signing;
pub mod time;
pub mod totp;
pub mod user;

pub use audit::{AuditEvent, AuditEventRef, CertSource, Management, Outcome};
pub use duration::{InvalidDuration, InvalidRate, Rate, parse_duration, parse_rate};
pub use keys::{
    HashDomain, KeyedHasher, MASTER_KEY_LEN, MasterKey, MasterKeyError, SealError, Sealer, new_id,
    random_base62,
};
pub use method::{Method, MethodSet, UnknownMethod};
pub use principal::{IdentityValues, Principal, SubjectKind, header_value};
pub use refusal::{Reason, Refusal};
pub use scope::{InvalidScope, Scopes};
pub use secret::{SecretBytes, SecretString, constant_time_eq};
