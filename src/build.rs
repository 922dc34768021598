//! Build script (Cargo.toml `build`): link the binaries with packed relative relocations
//! (DT_RELR) where the C library reads them.
//!
//! Why: p11ca is a position-independent executable, so it is loaded at a random address, and
//! its about 15,700 relative relocations (mostly the file and line records of panic locations)
//! are applied at every start. As classic RELA entries they take 381 KB that the dynamic
//! loader reads each time; packed they take 4.5 KB. In `ci/bench`, three pairs of alternating
//! runs, a one-shot `sign` took 0.88-0.98 ms more than the bare PKCS#11 signer, against
//! 1.00-1.05 ms without: about 0.1 ms, 1.5% of the run. Linking without PIE saved more
//! (0.5 ms) but gives up address randomization, which a CA's signing service should keep.
//!
//! glibc reads DT_RELR from 2.36 on, and the linker then marks the binary as needing
//! GLIBC_ABI_DT_RELR, so a binary built this way needs glibc 2.36 to run. It is done only when
//! building for the build machine itself and its glibc is 2.36 or newer. Set
//! `P11CA_NO_RELR=1` to build for older systems on a newer one.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=src/build.rs");
    println!("cargo:rerun-if-env-changed=P11CA_NO_RELR");
    if std::env::var_os("P11CA_NO_RELR").is_some_and(|v| !v.is_empty() && v != "0") {
        return;
    }
    let target = std::env::var("TARGET").unwrap_or_default();
    let host = std::env::var("HOST").unwrap_or_default();
    if target != host || !target.ends_with("-linux-gnu") {
        return;
    }
    if glibc_version().is_some_and(|v| v >= (2, 36)) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// The build machine's glibc version, from `getconf GNU_LIBC_VERSION` ("glibc 2.36").
fn glibc_version() -> Option<(u32, u32)> {
    let out = Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let mut parts = text.trim().strip_prefix("glibc ")?.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}
