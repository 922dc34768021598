//! Fault injection for tests, compiled into debug builds only.
//!
//! Tests set `P11CA_FAULT=<point>` to make a run fail at a named point (after key generation,
//! before storing the certificate, …) and then check that the token and the output folder
//! are exactly as before. Release builds ignore the variable.

use crate::error::{Error, Result};

/// Fail here if the test asked for it.
#[inline]
pub fn point(name: &str) -> Result<()> {
    if cfg!(debug_assertions) && std::env::var("P11CA_FAULT").is_ok_and(|v| v == name) {
        return Err(Error::token(format!(
            "injected fault at {name} (P11CA_FAULT)"
        )));
    }
    Ok(())
}

/// Die here, as a crash or SIGKILL would, if the test asked for it (debug builds only).
#[inline]
pub fn crash_point(name: &str) {
    if cfg!(debug_assertions) && std::env::var("P11CA_FAULT").is_ok_and(|v| v == name) {
        std::process::abort();
    }
}

/// Whether the test asked for the named behaviour change (debug builds only).
#[inline]
pub fn active(name: &str) -> bool {
    cfg!(debug_assertions) && std::env::var("P11CA_FAULT").is_ok_and(|v| v == name)
}
