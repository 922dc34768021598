//! p11ca: a cfssl-compatible certificate authority whose signing keys never leave a PKCS#11
//! token.
//!
//! The library is usable without the CLI. Its layers, bottom up (a module uses only layers
//! below its own; `tests/hygiene.rs` checks it, ARCHITECTURE.md explains it):
//! - [`error`], [`sync`], [`text`], [`fsio`]: errors, locks, untrusted text, atomic files;
//! - [`x509`]: DER only: algorithms, names, requests, building and verifying certificates;
//! - [`token`]: the PKCS#11 module, token, PIN, sessions, keys and token signing (the only
//!   user of the PKCS#11 crate);
//! - [`cfssl`]: cfssl's JSON inputs and outputs;
//! - [`ca`]: the CA workflows that tie them together;
//! - [`tls`], [`client`] (the cfssl API client), [`db`] (the issued-certificate store) and
//!   [`serve`] (the cfssl-compatible signing service).

#![forbid(unsafe_code)]

pub mod ca;
pub mod cfssl;
pub mod client;
pub mod db;
pub mod error;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod fsio;
pub mod kube;
pub mod serve;
pub mod sync;
pub mod text;
pub mod tls;
pub mod token;
pub mod x509;

pub use error::{Error, Kind, Result};
