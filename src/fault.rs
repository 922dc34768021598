//! Fault injection for tests, compiled only with the `fault-injection` cargo feature (which
//! `ci/test` enables; release builds and `cargo install` never have it).
//!
//! Tests set `P11CA_FAULT=<point>` to make a run fail at a named point (after key generation,
//! before storing the certificate, …) and then check that the token and the output folder
//! are exactly as before. Depends on nothing of the crate but its error type.

use crate::error::{Error, Result};

/// Fail here if the test asked for it.
#[inline]
pub fn point(name: &str) -> Result<()> {
    if active(name) {
        return Err(Error::token(format!(
            "injected fault at {name} (P11CA_FAULT)"
        )));
    }
    Ok(())
}

/// Die here, as a crash or SIGKILL would, if the test asked for it.
#[inline]
pub fn crash_point(name: &str) {
    if active(name) {
        std::process::abort();
    }
}

/// Whether the test asked for the named behaviour change.
#[inline]
pub fn active(name: &str) -> bool {
    std::env::var("P11CA_FAULT").is_ok_and(|v| v == name)
}
