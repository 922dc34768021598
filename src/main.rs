//! `p11ca`: parse the command line, run, and map errors to exit codes. Everything else is in
//! the library and in `cli`.

mod cli;

use clap::Parser;

fn main() {
    harden_process();
    let code = run();
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // By now every output is written and closed, and the PKCS#11 module is finalized (its
    // `Drop` calls C_Finalize). `_exit` skips the C libraries' exit-time handlers, chiefly
    // OpenSSL's OPENSSL_cleanup, which SoftHSM and most modules pull in: it only frees memory
    // the kernel reclaims anyway, and measured 0.2-0.35 ms of a 7 ms one-shot `sign`.
    // SAFETY: `_exit` ends the process; nothing of ours is left to run (Rust runs no
    // destructors at exit, and both standard streams were flushed above).
    unsafe { libc::_exit(i32::from(code)) }
}

/// Parse, run, and map the outcome to an exit code.
fn run() -> u8 {
    let args = cli::args::cfssl_style(std::env::args_os());
    let parsed = match cli::args::Cli::try_parse_from(&args) {
        Ok(p) => p,
        // --help and --version print as clap writes them; every other parse error is one
        // `p11ca: error:` line, like the errors of the commands themselves.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return 0;
        }
        Err(e) => {
            eprintln!("{}", cli::parse_error_line(&e, &args));
            return 1;
        }
    };
    match cli::run(parsed) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("p11ca: error: {e}");
            e.kind().exit_code()
        }
    }
}

/// Before anything else runs: no core dump and no same-user ptrace (a dump of a signing
/// process holds the PIN and a logged-in session), and `P11CA_PIN` out of the environment.
fn harden_process() {
    use rustix::process::{DumpableBehavior, Resource, Rlimit, set_dumpable_behavior, setrlimit};
    // Best effort: a kernel that refuses leaves the process as it was, which is no worse.
    let _ = set_dumpable_behavior(DumpableBehavior::NotDumpable);
    let none = Rlimit {
        current: Some(0),
        maximum: Some(0),
    };
    let _ = setrlimit(Resource::Core, none);
    take_pin_from_environment();
}

/// Hand `P11CA_PIN` to the library and wipe it from the environment: the variable's bytes are
/// overwritten where they are (for a variable the process started with, in the initial
/// environment block that `/proc/PID/environ` reads), then the variable is removed.
fn take_pin_from_environment() {
    use std::os::unix::ffi::OsStringExt;
    let Some(raw) = std::env::var_os("P11CA_PIN") else {
        return;
    };
    let raw = zeroize::Zeroizing::new(raw.into_vec());
    let pin = zeroize::Zeroizing::new(String::from_utf8_lossy(&raw).into_owned());
    p11ca::token::pin::keep_environment_pin(pin);
    // SAFETY: the first thing `main` does, before any thread exists, so nothing reads the
    // environment meanwhile. `getenv` points at the variable's own NUL-terminated bytes, which
    // are writable; exactly `strlen` of them are overwritten, then the entry is removed.
    unsafe {
        let value = libc::getenv(c"P11CA_PIN".as_ptr());
        if !value.is_null() {
            std::ptr::write_bytes(value, 0, libc::strlen(value));
        }
        std::env::remove_var("P11CA_PIN");
    }
}
