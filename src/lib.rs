//! p11ca: a cfssl-compatible certificate authority whose signing keys never leave a PKCS#11
//! token.
//!
//! The library is usable without the CLI:
//! - [`cfssl`]: cfssl's JSON inputs and outputs;
//! - [`token`]: the PKCS#11 module, token, PIN, sessions, keys and token signing (the only
//!   user of the PKCS#11 crate);
//! - [`x509`]: certificate and CSR building and signature verification (no token code);
//! - [`ca`]: the CA workflows that tie them together;
//! - [`fsio`]: atomic output files;
//! - [`text`]: untrusted text made safe for logs and terminals;
//! - [`serve`]: the cfssl-compatible signing service, [`db`] its issued-certificate store and
//!   [`remote`] the client of the same protocol.

#![forbid(unsafe_code)]

pub mod batch;
pub mod ca;
pub mod certinfo;
pub mod cfssl;
pub mod db;
pub mod error;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod fsio;
pub mod issue;
pub mod remote;
pub mod serve;
pub mod softkey;
pub mod sync;
pub mod text;
pub mod token;
pub mod x509;

pub use error::{Error, Kind, Result};
