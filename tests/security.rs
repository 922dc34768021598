//! The security model, each rule tested as the attack it prevents: a key handle names a key and
//! nothing else; batches never lose or mix outputs; secrets stay out of the environment, the
//! store's messages and core dumps.

use std::path::Path;
use std::process::Command;

use crate::util::{SIGN_BATCH, Token, require, sh};

/// A PKCS#11 "module" whose only effect is to prove it was loaded: its constructor (run by
/// dlopen) writes `marker`. Built with the system C compiler in the test's work dir.
fn shim_module(t: &Token, marker: &str) -> String {
    require("cc");
    let src = format!(
        r#"#include <stdio.h>
__attribute__((constructor)) static void loaded(void) {{
  FILE *f = fopen("{marker}", "w");
  if (f) {{ fputs("loaded\n", f); fclose(f); }}
}}
/* CKR_GENERAL_ERROR: a real shim would forward to the token and log C_Login's PIN. */
unsigned long C_GetFunctionList(void **list) {{ (void)list; return 5; }}
"#,
        marker = t.path(marker).display()
    );
    t.write("shim.c", &src);
    sh(t.command("cc")
        .args(["-shared", "-fPIC", "-o", "shim.so", "shim.c"]));
    t.path("shim.so").display().to_string()
}

#[test]
fn a_key_handle_cannot_choose_the_module() {
    let t = Token::new("handle");
    t.seed_ca();
    t.seed_files(&["node-csr.json"]);
    let shim = shim_module(&t, "shim-loaded");
    // The control: the operator's own --module does load it, so the marker is a real witness.
    t.run(&["--module", &shim, "token", "list"])
        .fails(2, "shim.so");
    assert!(t.path("shim-loaded").exists(), "the shim never ran");
    std::fs::remove_file(t.path("shim-loaded")).unwrap();

    let handle = t.read("ca-key.uri");
    let objects = t.object_count();
    for (name, query) in [
        ("module-path", format!("module-path={shim}")),
        ("module-name", "module-name=shim".to_string()),
    ] {
        t.write("evil-key.uri", &format!("{}?{query}\n", handle.trim()));
        t.run(&[
            "gencert",
            "-ca",
            "ca.pem",
            "-ca-key",
            "evil-key.uri",
            "-config",
            "ca-config.json",
            "-profile",
            "mosquitood-k8s",
            "node-csr.json",
        ])
        .fails(1, &format!("evil-key.uri: a key handle names a token and a key, nothing more, but this one carries {name}"));
        assert!(
            !t.path("shim-loaded").exists(),
            "{name}: the shim was loaded"
        );
    }
    // The same through `serve`, `key show` and `json -bare`, which would write such a handle.
    t.write(
        "evil-key.uri",
        &format!("{}?module-path={shim}\n", handle.trim()),
    );
    t.run(&[
        "serve",
        "-ca",
        "ca.pem",
        "-ca-key",
        "evil-key.uri",
        "-port",
        "1",
    ])
    .fails(1, "carries module-path");
    let evil = format!("{}?module-path={shim}", handle.trim());
    t.run(&["key", "show", &evil])
        .fails(1, "carries module-path");
    let json = format!(r#"{{"cert":"x","key_uri":"{evil}"}}"#);
    t.run_in(&["json", "-bare", "stolen"], json.as_bytes())
        .fails(1, "field \"key_uri\"");
    assert!(!t.path("stolen.pem").exists() && !t.path("stolen-key.uri").exists());
    assert!(!t.path("shim-loaded").exists(), "the shim was loaded");
    assert_eq!(t.object_count(), objects, "the token changed");
}

#[test]
fn a_key_handle_cannot_choose_where_the_pin_comes_from() {
    let t = Token::new("pinsrc");
    t.seed_ca();
    t.make_csrs("csrs", "node", 1);
    let handle = t.read("ca-key.uri");
    t.write("wrong-pin", "9999\n");
    // /dev/zero would be read without end; a wrong PIN file would spend one of the token's
    // tries on every run even though P11CA_PIN is right. Both are refused before any login.
    for (name, query) in [
        ("pin-source", "pin-source=file:wrong-pin"),
        ("pin-source", "pin-source=file:/dev/zero"),
        ("pin-value", "pin-value=9999"),
    ] {
        t.write("evil-key.uri", &format!("{}?{query}\n", handle.trim()));
        let r = t.run(&[
            "sign",
            "-ca",
            "ca.pem",
            "-ca-key",
            "evil-key.uri",
            "csrs/node000.csr",
        ]);
        r.fails(1, &format!("carries {name}"));
        assert!(!r.stderr.contains("9999"), "{}", r.stderr);
    }
    // The handle as written still signs: the refusal is about what it carries.
    t.run(&[
        "sign",
        "-ca",
        "ca.pem",
        "-ca-key",
        "ca-key.uri",
        "csrs/node000.csr",
    ])
    .ok();
}

#[test]
fn a_token_flag_that_contradicts_the_handle_is_an_error() {
    let t = Token::new("agree");
    t.seed_ca();
    t.make_csrs("csrs", "node", 1);
    let args = [
        "sign",
        "-ca",
        "ca.pem",
        "-ca-key",
        "ca-key.uri",
        "csrs/node000.csr",
    ];
    let r = crate::util::run(
        t.p11ca().env("P11CA_TOKEN", "another-token").args(args),
        None,
    );
    r.fails(
        1,
        "the key handle names token \"agree\" but --token (or P11CA_TOKEN) names token \"another-token\"",
    );
    let r = crate::util::run(
        t.p11ca()
            .args(["--token", "pkcs11:token=agree;serial=0000"])
            .args(args),
        None,
    );
    r.fails(2, "no token matches pkcs11:serial=0000;token=agree");
    // Agreeing selectors sign.
    crate::util::run(t.p11ca().env("P11CA_TOKEN", "agree").args(args), None).ok();
}

#[test]
fn two_inputs_that_would_write_the_same_files_are_refused_before_signing() {
    let t = Token::new("collide");
    t.seed_ca();
    t.make_csrs("csrs", "a", 3);
    // `a000.csr` and `a000-csr.csr` both write out/a000.pem, .csr: once, 39 runs in 40 lost a
    // certificate with exit 0.
    std::fs::copy(t.path("csrs/a001.csr"), t.path("csrs/a000-csr.csr")).unwrap();
    t.run(&SIGN_BATCH).fails(
        1,
        "inputs csrs/a000-csr.csr and csrs/a000.csr would both write out/a000.pem",
    );
    let written = || std::fs::read_dir(t.path("out")).unwrap().count();
    assert_eq!(written(), 0, "nothing is signed or written");
    // Files named on the command line, from two folders.
    std::fs::create_dir_all(t.path("other")).unwrap();
    std::fs::copy(t.path("csrs/a002.csr"), t.path("other/a000.csr")).unwrap();
    let mut args = SIGN_BATCH[..9].to_vec();
    args.extend(["--out", "out", "csrs/a000.csr", "other/a000.csr"]);
    t.run(&args).fails(1, "would both write out/a000.pem");
    assert_eq!(written(), 0, "nothing is signed or written");
    // Without the twin, every input is issued into its own files.
    std::fs::remove_file(t.path("csrs/a000-csr.csr")).unwrap();
    t.run(&SIGN_BATCH).ok();
    for i in 0..3 {
        let text = sh(t.command("openssl").args([
            "x509",
            "-noout",
            "-subject",
            "-in",
            &format!("out/a00{i}.pem"),
        ]));
        assert!(text.contains(&format!("CN = a00{i}")), "{text}");
    }
}

/// Start `program args` in `dir` under `ulimit -c unlimited` with `env`, its stdin an open pipe
/// (so `cat` and `p11ca json` wait), and wait until it runs and (but for the `cat` witness) its
/// environment no longer holds `secret` (p11ca's first act), or 5 s pass. Then kill it with
/// SIGQUIT, whose default is a core dump; returns whether `secret` was still in
/// `/proc/PID/environ` and the files left in `dir`.
fn crash(
    t: &Token,
    dir: &str,
    env: (&str, &str),
    program: &str,
    args: &[&str],
) -> (bool, Vec<String>) {
    use std::os::unix::process::ExitStatusExt;
    std::fs::create_dir_all(t.path(dir)).unwrap();
    let mut child = t
        .command("bash")
        .args(["-c", "ulimit -c unlimited && exec \"$@\"", "crash", program])
        .args(args)
        .env(env.0, env.1)
        .current_dir(t.path(dir))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let environ = format!("/proc/{}/environ", child.id());
    let exe = format!("/proc/{}/exe", child.id());
    let started = std::time::Instant::now();
    let mut leaked = true;
    while started.elapsed() < std::time::Duration::from_secs(5) {
        let execed = std::fs::read_link(&exe)
            .is_ok_and(|p| p.ends_with(Path::new(program).file_name().unwrap()));
        // An unreadable environ proves nothing: keep polling (and fail) rather than pass.
        if let Ok(environ) = std::fs::read(&environ) {
            leaked = environ.windows(env.1.len()).any(|w| w == env.1.as_bytes());
            if execed && (!leaked || program.ends_with("cat")) {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SIGQUIT, not SIGSEGV: Rust's runtime handles a SIGSEGV that is not a fault and goes on.
    sh(Command::new("kill").args(["-QUIT", &child.id().to_string()]));
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(3),
        "{program} did not die of SIGQUIT: {status:?}"
    );
    let files = std::fs::read_dir(t.path(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    (leaked, files)
}

#[test]
fn the_pin_leaves_the_environment_and_no_core_is_dumped() {
    let t = Token::new("dump");
    let secret = ("P11CA_PIN", "pin-7c3e9f-never-dumped");
    // The witness: on this machine a process that may dump core does, in its folder.
    let cat = sh(Command::new("bash").args(["-c", "command -v cat"]));
    let (_, files) = crash(&t, "witness", secret, cat.trim(), &[]);
    assert!(
        files.iter().any(|f| f.starts_with("core")),
        "no core file from the witness (is /proc/sys/kernel/core_pattern a pipe?): {files:?}"
    );
    let p11ca = env!("CARGO_BIN_EXE_p11ca");
    let (leaked, files) = crash(&t, "p11ca", secret, p11ca, &["json", "-bare", "x"]);
    assert!(!leaked, "P11CA_PIN is still readable in /proc/PID/environ");
    assert!(files.is_empty(), "p11ca left {files:?}");
}

#[test]
fn outside_text_cannot_forge_rows_or_terminal_output_in_certs_list() {
    use p11ca::db::{CertRecord, DbConfig, Store};
    let t = Token::new("escape");
    let forged = "node1\n0a\t2099-01-01T00:00:00Z\tvalid\tforged\t\u{1b}[2J";
    let record = CertRecord {
        serial_number: "10".into(),
        authority_key_identifier: "ab".into(),
        serial_hex: "0a".into(),
        subject: format!("CN={forged}"),
        common_name: forged.into(),
        sans: vec![forged.into(), "ok.example.com".into()],
        profile: format!("p{forged}"),
        not_before: 0,
        not_after: 4_000_000_000,
        pem: String::new(),
        requester: format!("127.0.0.1:1 {forged}"),
        auth_key: String::new(),
        issued_at: 0,
    };
    let mut store = Store::open(&DbConfig::Sqlite(t.path("certs.db"))).unwrap();
    store.insert(&[&record]).unwrap();
    drop(store);
    for args in [
        ["certs", "list", "--db", "certs.db"].as_slice(),
        ["certs", "show", "0a", "--db", "certs.db"].as_slice(),
    ] {
        let out = t.run(args);
        out.ok();
        assert!(!out.stdout.contains('\u{1b}'), "{args:?}: ESC printed raw");
        assert!(
            out.stdout.contains("node1\\n0a\\t2099"),
            "{args:?}: {}",
            out.stdout
        );
        assert!(
            !out.stdout.lines().any(|l| l.starts_with("0a\t2099")),
            "{args:?}: a forged row"
        );
    }
    let list = t.run(&["certs", "list", "--db", "certs.db"]);
    assert_eq!(
        list.stdout.lines().count(),
        2,
        "header and one row: {}",
        list.stdout
    );
    assert_eq!(list.stdout.lines().nth(1).unwrap().matches('\t').count(), 5);
}

#[test]
fn serve_keeps_its_memory_and_the_pin_out_of_swap() {
    let t = Token::new("mlock");
    crate::serve::setup(&t);
    // Tests run as root (CAP_IPC_LOCK), so serve locks its memory rather than warning.
    let srv = crate::serve::p11ca_serve(&t, "serve", &[]);
    let pid = srv.pid().expect("the server's pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let locked_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmLck in /proc/PID/status");
    assert!(locked_kb > 0, "serve locked no memory: {status}");
    let err = t.read("serve.err");
    assert!(!err.contains("memory is not locked"), "{err}");
}
