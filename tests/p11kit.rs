//! A network HSM stand-in: a SoftHSM2 token served by `p11-kit server` on a Unix socket and
//! reached through p11-kit-client.so, and what happens when that server goes away. These
//! always use the p11-kit back-end, whatever `P11CA_TEST_BACKEND` says (backends:: runs the
//! generic suite through it).

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::util::{Backend, Token, ca_args, require, run, sh};

/// Inputs in the interrupted batch: well over what a batch signs ahead of its output (files
/// are written and synced behind the signing sessions), so that stopping the server once the
/// first files are there lands mid-signing.
const N: usize = 400;

/// `sign` of every CSR in csrs/ into out/, two sessions.
fn batch_args() -> Vec<&'static str> {
    crate::util::SIGN_BATCH
        .iter()
        .copied()
        .chain(["--jobs", "2"])
        .collect()
}

fn served_ca(label: &str) -> Token {
    require("openssl");
    let t = Token::on(Backend::P11Kit, label);
    t.seed_ca();
    t
}

/// The certificates in out/, by input name (`n07`), each checked whole: PEM armour intact,
/// verifies against ca.pem, subject CN is its input's name. Any other file there fails.
fn written(t: &Token) -> Vec<(String, String)> {
    let mut certs = Vec::new();
    for e in std::fs::read_dir(t.path("out")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        let (stem, ext) = name.rsplit_once('.').unwrap_or((&name, ""));
        let known = stem.starts_with('n') && stem[1..].parse::<usize>().is_ok_and(|i| i < N);
        assert!(
            known && (ext == "pem" || ext == "csr"),
            "unexpected file out/{name} (a temporary file left behind?)"
        );
        if ext != "pem" {
            continue;
        }
        let pem = t.read(&format!("out/{name}"));
        assert!(
            pem.starts_with("-----BEGIN CERTIFICATE-----\n")
                && pem.ends_with("-----END CERTIFICATE-----\n")
                && pem.matches("BEGIN").count() == 1,
            "out/{name} is not one whole certificate"
        );
        let v = run(
            t.command("openssl")
                .args(["verify", "-CAfile", "ca.pem", &format!("out/{name}")]),
            None,
        );
        assert_eq!(v.code, 0, "out/{name} does not verify: {}", v.stdout);
        let subject = sh(t.command("openssl").args([
            "x509",
            "-noout",
            "-subject",
            "-in",
            &format!("out/{name}"),
        ]));
        assert!(
            subject.trim_end().ends_with(&format!("CN = {stem}")),
            "out/{name} holds another input's certificate: {subject}"
        );
        let serial = sh(t.command("openssl").args([
            "x509",
            "-noout",
            "-serial",
            "-in",
            &format!("out/{name}"),
        ]));
        certs.push((stem.to_string(), serial.trim().to_string()));
    }
    certs.sort();
    certs
}

#[track_caller]
fn assert_unique_serials(certs: &[(String, String)]) {
    let serials: BTreeSet<&String> = certs.iter().map(|(_, s)| s).collect();
    assert_eq!(
        serials.len(),
        certs.len(),
        "a serial appears twice: {certs:?}"
    );
}

/// Start the batch in the background and return once `written_at_least` certificates are on
/// disk (the batch must still be running then).
fn start_batch_until(t: &Token, written_at_least: usize) -> std::process::Child {
    let stderr = std::fs::File::create(t.path("batch.err")).unwrap();
    let mut child = t
        .p11ca()
        .args(batch_args())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let pems = std::fs::read_dir(t.path("out"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".pem"))
            })
            .count();
        if pems >= written_at_least {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the batch ended ({status}) before the server was stopped: {}",
                t.read("batch.err")
            );
        }
        assert!(Instant::now() < deadline, "the batch made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

#[test]
fn server_stopped_mid_batch_then_a_rerun_completes() {
    let t = served_ca("net");
    t.make_csrs("csrs", "n", N);

    let mut child = start_batch_until(&t, 10);
    t.stop_service();
    let status = child.wait().unwrap();
    let err = t.read("batch.err");

    // A clear failure: exit 2 (token), only `p11ca: error:` lines besides warnings, no panic.
    assert_eq!(status.code(), Some(2), "exit code; stderr: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| !l.starts_with("p11ca: warning: "))
        .collect();
    assert!(!errors.is_empty(), "no error reported: {err}");
    for l in &errors {
        assert!(l.starts_with("p11ca: error: "), "not an error line: {l:?}");
    }

    // No partial output: every file written is one whole certificate of its own input, and
    // nothing was issued twice.
    let certs = written(&t);
    assert!(
        !certs.is_empty() && certs.len() < N,
        "the stop did not land inside the batch: {} of {N} written",
        certs.len()
    );
    assert_unique_serials(&certs);
    // Per-input errors must account for every input that has no certificate.
    if errors.iter().all(|l| l.contains("csrs/n")) {
        for i in 0..N {
            let stem = format!("n{i:03}");
            assert!(
                certs.iter().any(|(s, _)| *s == stem)
                    || errors
                        .iter()
                        .any(|l| l.contains(&format!("csrs/{stem}.csr"))),
                "input csrs/{stem}.csr has neither a certificate nor an error: {err}"
            );
        }
    }
    eprintln!(
        "server stopped mid-batch: {} of {N} written, {} error lines; first: {}",
        certs.len(),
        errors.len(),
        errors[0]
    );

    // The server comes back; the same command completes the batch.
    t.start_service();
    let r = t.run(&batch_args());
    r.ok();
    let certs = written(&t);
    assert_eq!(
        certs.len(),
        N,
        "every input has its certificate after the rerun"
    );
    assert_unique_serials(&certs);
    assert_eq!(
        t.object_count(),
        3,
        "signing created no objects in the token"
    );
}

#[test]
fn no_server_is_a_clear_error_and_writes_nothing() {
    let t = served_ca("net");
    t.write("node.json", r#"{"CN":"node","hosts":["node.example"]}"#);
    t.stop_service();
    let before = t.files();
    t.run(&ca_args("gencert", &["node.json"]))
        .fails(2, "no token present in module");
    assert_eq!(t.files(), before);
    t.start_service();
    t.run(&ca_args("gencert", &["node.json"])).ok();
}

#[test]
fn server_restarted_mid_batch_the_module_is_initialized_again() {
    // The p11-kit server goes away and comes back while one p11ca process signs: p11ca
    // initializes the module again, finds the token by label and serial, logs in again, finds
    // the CA key by its URI, and goes on. An input whose C_Sign was cut off is reported, never
    // signed again.
    let t = served_ca("net");
    t.make_csrs("csrs", "n", N);
    let stderr = std::fs::File::create(t.path("batch.err")).unwrap();
    let mut child = t
        .p11ca()
        .env("P11CA_RECONNECT_SECS", "20")
        // One session: the module is only initialized again when no other thread uses it.
        .args(crate::util::SIGN_BATCH)
        .args(["--jobs", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let pems = || {
        std::fs::read_dir(t.path("out"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".pem"))
            })
            .count()
    };
    while pems() < 10 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the batch ended before the restart"
        );
        assert!(Instant::now() < deadline, "the batch made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    t.stop_service();
    std::thread::sleep(Duration::from_millis(300));
    t.start_service();
    let status = child.wait().unwrap();
    let err = t.read("batch.err");
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("p11ca: error: "))
        .collect();
    let certs = written(&t);
    assert_unique_serials(&certs);
    assert!(
        errors.len() <= 1,
        "at most the input in C_Sign when the server went fails: {err}"
    );
    assert_eq!(
        certs.len() + errors.len(),
        N,
        "every other input is issued after the restart: {err}"
    );
    assert_eq!(
        status.code(),
        Some(if errors.is_empty() { 0 } else { 2 }),
        "{err}"
    );
    eprintln!(
        "restart mid-batch: {} of {N} written, failed: {errors:?}",
        certs.len()
    );
}
