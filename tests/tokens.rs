//! Token rules beyond the plain case: keys that need the PIN for every signature, and modules
//! with no device behind them.

use crate::util::{Token, run, sh};

#[test]
fn always_authenticate_key_signs_with_a_context_login_per_signature() {
    let t = Token::new("aa");
    t.seed_files(&["ca-csr.json", "ca-config.json"]);
    let g = t.run(&["gencert", "-initca", "--always-authenticate", "ca-csr.json"]);
    g.ok();
    t.run_in(&["json", "-bare", "ca"], g.stdout.as_bytes()).ok();
    let uri = t.read("ca-key.uri");
    let v: serde_json::Value =
        serde_json::from_str(&t.run(&["key", "show", &uri, "--json"]).stdout).unwrap();
    assert_eq!(v["attributes"]["CKA_ALWAYS_AUTHENTICATE"], true);
    assert!(
        sh(t.command("openssl")
            .args(["verify", "-CAfile", "ca.pem", "ca.pem"]))
        .contains("OK")
    );
    // Several signatures in one run, each with its own CKU_CONTEXT_SPECIFIC login and no prompt.
    for n in ["a", "b"] {
        t.write(
            &format!("{n}.json"),
            &format!(
                r#"{{"CN":"{n}","hosts":["{n}.example"],"key":{{"algo":"ecdsa","size":256}}}}"#
            ),
        );
    }
    let r = t.run(&[
        "gencert",
        "-ca",
        "ca.pem",
        "-ca-key",
        "ca-key.uri",
        "-config",
        "ca-config.json",
        "-profile",
        "mosquitood-k8s",
        "--out",
        ".",
        "a.json",
        "b.json",
    ]);
    r.ok();
    for n in ["a", "b"] {
        assert!(
            sh(t.command("openssl")
                .args(["verify", "-CAfile", "ca.pem", &format!("{n}.pem")]))
            .contains("OK")
        );
    }
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs --features fault-injection"
)]
fn the_token_enforces_the_per_signature_login() {
    let t = Token::new("aa");
    t.seed_files(&["ca-csr.json", "ca-config.json"]);
    t.run(&["gencert", "-initca", "--always-authenticate", "ca-csr.json"])
        .ok();
    let g = t.run(&[
        "gencert",
        "-initca",
        "--always-authenticate",
        "--key-label",
        "k2",
        "ca-csr.json",
    ]);
    t.run_in(&["json", "-bare", "ca"], g.stdout.as_bytes()).ok();
    t.write("n.json", r#"{"CN":"n","hosts":["n.example"]}"#);
    // Without the context-specific login the token itself refuses (proves the attribute bites).
    let r = run(
        t.p11ca().env("P11CA_FAULT", "skip-context-login").args([
            "gencert",
            "-ca",
            "ca.pem",
            "-ca-key",
            "ca-key.uri",
            "n.json",
        ]),
        None,
    );
    r.fails(2, "CKR_USER_NOT_LOGGED_IN");
}

#[test]
fn always_authenticate_needs_a_hashing_mechanism_and_says_so_first() {
    // SoftHSM 2.6 has no CKM_ECDSA_SHA256, so an always-authenticate EC key could not be used:
    // refused before anything is created.
    let t = Token::new("aa");
    t.write(
        "ec.json",
        r#"{"CN":"ec","key":{"algo":"ecdsa","size":256}}"#,
    );
    let before = t.object_count();
    t.run(&["gencert", "-initca", "--always-authenticate", "ec.json"])
        .fails(
            2,
            "does not offer CKM_ECDSA_SHA256, which p11ca needs to sign such keys",
        );
    assert_eq!(t.object_count(), before);
}

#[test]
fn a_module_without_a_device_says_no_token_present() {
    let ykcs11 = "/usr/lib/x86_64-linux-gnu/libykcs11.so";
    assert!(
        std::path::Path::new(ykcs11).exists(),
        "ykcs11 is not installed: run ci/setup"
    );
    let t = Token::new("yk");
    // No YubiKey and no pcscd here: ykcs11 answers CKR_DEVICE_ERROR.
    let r = run(
        t.p11ca()
            .env("P11CA_MODULE", ykcs11)
            .args(["token", "list"]),
        None,
    );
    r.fails(
        2,
        "no token present in module /usr/lib/x86_64-linux-gnu/libykcs11.so",
    );
    assert!(r.stderr.contains("pcscd"), "{}", r.stderr);
}

/// Six node CSRs and the CA, for the stale-session tests.
fn batch_setup(t: &Token) {
    t.seed_files(&["ca-csr.json", "ca-config.json"]);
    t.initca("ca-csr.json", "ca");
    t.make_csrs("csrs", "s", 6);
}

fn serials_in_out(t: &Token) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(t.path("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".pem"))
        .map(|n| {
            sh(t.command("openssl")
                .args(["x509", "-noout", "-serial", "-in", &format!("out/{n}")]))
        })
        .collect();
    v.sort();
    v
}

use crate::util::SIGN_BATCH as BATCH;

/// The six inputs of `BATCH` each have one certificate in `out/`, with six distinct serials.
#[track_caller]
fn assert_six_issued_once(t: &Token, context: &str) {
    let serials = serials_in_out(t);
    assert_eq!(serials.len(), 6, "{context}: every input issued once");
    let mut uniq = serials.clone();
    uniq.dedup(); // sorted by serials_in_out
    assert_eq!(uniq.len(), 6, "{context}: no serial twice");
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs --features fault-injection"
)]
fn a_session_that_goes_stale_before_signing_is_reopened_once() {
    let t = Token::new("stale");
    batch_setup(&t);
    let r = run(
        t.p11ca()
            .env("P11CA_FAULT", "stale-before-sign")
            .args(BATCH)
            .args(["--jobs", "1"]),
        None,
    );
    r.ok();
    assert_six_issued_once(&t, "after the reopen");
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs --features fault-injection"
)]
fn a_login_the_token_dropped_is_redone_and_the_key_found_again() {
    let t = Token::new("logout");
    batch_setup(&t);
    // Before input 3 the process is logged out for real; SoftHSM then refuses the key's
    // handle (CKR_OBJECT_HANDLE_INVALID) and hands out a new one after the next login.
    for jobs in ["1", "2"] {
        let _ = std::fs::remove_dir_all(t.path("out"));
        std::fs::create_dir(t.path("out")).unwrap();
        let r = run(
            t.p11ca()
                .env("P11CA_FAULT", "logout-mid-batch")
                .args(BATCH)
                .args(["--jobs", jobs]),
            None,
        );
        r.ok();
        assert_six_issued_once(&t, &format!("--jobs {jobs}"));
    }
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs --features fault-injection"
)]
fn a_session_lost_inside_c_sign_is_never_retried() {
    let t = Token::new("stale");
    batch_setup(&t);
    let r = run(
        t.p11ca()
            .env("P11CA_FAULT", "stale-during-sign")
            .args(BATCH)
            .args(["--jobs", "1"]),
        None,
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    let errors: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("p11ca: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", r.stderr);
    // The fourth input handed to the session fails; a folder is read in the file system's
    // order, so which file that is comes from the error line.
    let failed = errors[0]
        .split_whitespace()
        .find_map(|w| w.strip_prefix("csrs/")?.strip_suffix(".csr:"))
        .unwrap_or_else(|| panic!("no input named: {}", errors[0]));
    assert!(
        errors[0].contains("CKR_SESSION_HANDLE_INVALID"),
        "{}",
        errors[0]
    );
    assert!(
        !t.path(&format!("out/{failed}.pem")).exists(),
        "the input whose signature may have been made is not written"
    );
    assert_eq!(
        serials_in_out(&t).len(),
        5,
        "the other inputs are issued, on a reopened session"
    );
}

#[test]
fn piv_slot_names_map_to_ykcs11_key_ids() {
    // On any token --piv-slot sets the one-byte CKA_ID ykcs11 uses for that PIV slot.
    let t = Token::new("piv");
    t.seed_files(&["ca-csr.json", "ca-config.json"]);
    for (slot, id) in [("9c", "%02"), ("9a", "%01"), ("95", "%18")] {
        let g = t.run(&[
            "gencert",
            "-initca",
            "--piv-slot",
            slot,
            "--key-label",
            slot,
            "ca-csr.json",
        ]);
        g.ok();
        let v: serde_json::Value = serde_json::from_str(&g.stdout).unwrap();
        assert!(
            v["key_uri"]
                .as_str()
                .unwrap()
                .contains(&format!(";id={id};")),
            "{slot}: {}",
            v["key_uri"]
        );
    }
    t.run(&["gencert", "-initca", "--piv-slot", "9b", "ca-csr.json"])
        .fails(1, "--piv-slot \"9b\": not a PIV slot");
    // An SO PIN is only used where the token's rules need it.
    let r = t.run(&[
        "gencert",
        "-initca",
        "--so-pin-source",
        "env:NOPE",
        "--key-label",
        "so",
        "ca-csr.json",
    ]);
    r.ok();
    assert!(
        r.stderr
            .contains("--so-pin-source is not needed for token \"piv\""),
        "{}",
        r.stderr
    );
}

/// The batch's `stderr` after its CA key was deleted: only clear errors, each naming its
/// input, or one last line saying the batch stopped; with `written` certificates out, every
/// input is accounted for once.
fn each_failure_is_reported_once(stderr: &str, written: usize) {
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("p11ca: error:"))
        .collect();
    assert!(!errors.is_empty());
    // Each error names its input; or, once no session can find the key any more, one last
    // line says the batch stopped there (the inputs not yet read are not listed one by one).
    let stopped = errors
        .iter()
        .filter(|e| e.contains("the batch stopped there"))
        .count();
    assert!(stopped <= 1, "{stderr}");
    for e in &errors {
        assert!(
            (e.contains("csrs/g") || e.contains("the batch stopped there"))
                && (e.contains("HANDLE_INVALID") || e.contains("no private key")),
            "unclear: {e}"
        );
    }
    let named = errors.len() - stopped;
    if stopped == 0 {
        assert_eq!(
            named + written,
            150,
            "every input either written or reported, once"
        );
    } else {
        assert!(named + written <= 150, "{stderr}");
    }
}

#[test]
fn ca_key_deleted_by_another_process_mid_batch() {
    crate::util::require("pkcs11-tool");
    let t = Token::new("gone");
    t.seed_files(&["ca-csr.json", "ca-config.json"]);
    t.initca("ca-csr.json", "ca");
    t.make_csrs("csrs", "g", 150);
    let id = t
        .read("ca-key.uri")
        .split("id=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .replace('%', "");
    let args = BATCH.iter().copied().chain(["--jobs", "1"]);
    let child = t
        .p11ca()
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Another process removes the CA key while the batch signs: once the first certificate is
    // out, so the batch is under way whatever the machine's speed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::read_dir(t.path("out")).unwrap().count() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the batch wrote nothing in 20 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    sh(t.command("pkcs11-tool").args([
        "--module",
        crate::util::MODULE,
        "--token-label",
        "gone",
        "--login",
        "--pin",
        crate::util::PIN,
        "--delete-object",
        "--type",
        "privkey",
        "--id",
        &id,
    ]));
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let written = serials_in_out(&t);
    assert!(
        written.len() < 150,
        "the deletion landed after the whole batch; make the batch longer"
    );
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    each_failure_is_reported_once(&stderr, written.len());
    let mut uniq = written.clone();
    uniq.dedup();
    assert_eq!(uniq.len(), written.len(), "no serial twice");
    assert!(!stderr.contains("panicked"));
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs --features fault-injection"
)]
fn rollback_after_a_refused_multi_part_signature() {
    // The first signature (the CSR) fails inside C_SignUpdate with the operation still active;
    // every object the run created must still be removed.
    let t = Token::new("aa");
    t.seed_files(&["ca-csr.json", "ca-config.json"]);
    let before = t.object_count();
    let r = run(
        t.p11ca().env("P11CA_FAULT", "skip-context-login").args([
            "gencert",
            "-initca",
            "--always-authenticate",
            "ca-csr.json",
        ]),
        None,
    );
    r.fails(
        2,
        "every object this run created was removed from the token",
    );
    assert_eq!(t.object_count(), before);
}

#[test]
fn pin_prompt_on_a_terminal_does_not_echo() {
    // A real terminal (tmux): with no PIN source, p11ca prompts on the TTY; the typed PIN is
    // not shown, and the login works.
    crate::util::require("tmux");
    let t = Token::new("tty");
    let session = format!("p11ca-pin-{}", std::process::id());
    let sock = t.path("tmux.sock");
    let tmux = |args: &[&str]| {
        let mut c = t.command("tmux");
        c.arg("-S").arg(&sock).args(args);
        crate::util::run(&mut c, None)
    };
    let script = t.write(
        "prompt.sh",
        &format!(
            "#!/bin/sh\nunset P11CA_PIN\nexport P11CA_MODULE={} P11CA_TOKEN=tty\n{} key list > listing.txt; echo $? > rc.txt\nsleep 30\n",
            t.module(),
            env!("CARGO_BIN_EXE_p11ca")
        ),
    );
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let r = tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "120",
        "-y",
        "10",
        script.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "tmux: {}", r.stderr);
    let screen = || tmux(&["capture-pane", "-t", &session, "-p"]).stdout;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !screen().contains("PIN for token \"tty\":") {
        assert!(
            std::time::Instant::now() < deadline,
            "no PIN prompt: {:?}",
            screen()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    tmux(&["send-keys", "-t", &session, crate::util::PIN, "Enter"]);
    while !t.path("rc.txt").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "p11ca did not finish: {:?}",
            screen()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let shown = screen();
    tmux(&["kill-server"]);
    assert_eq!(t.read("rc.txt").trim(), "0", "{shown:?}");
    assert!(t.read("listing.txt").contains("token \"tty\""));
    assert!(
        !shown.contains(crate::util::PIN),
        "the PIN was echoed: {shown:?}"
    );
}
