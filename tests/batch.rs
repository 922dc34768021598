//! Every certificate the command line issues is recorded before it is output (`gencert -ca`,
//! `sign` in each of its forms, `gencert -initca`), a store that cannot be written means no
//! output, a SIGKILL mid-batch leaves only whole files that are all recorded, streamed batches
//! come out in input order as their inputs arrive, and their memory does not grow with them.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::util::{SIGN_BATCH, Token, ca_args, ca_csr, require};

/// The certificates (PEM) recorded in the store `db_args` names, from `certs list --json`.
fn recorded(t: &Token, db_args: &[&str]) -> Vec<String> {
    let mut args = vec!["certs", "list", "--json"];
    args.extend_from_slice(db_args);
    let r = t.run(&args);
    let v: Value = serde_json::from_str(&r.ok().stdout).unwrap();
    let rows = v.as_array().unwrap();
    for row in rows {
        let who = row["requester"].as_str().unwrap();
        assert!(who.starts_with("cli:") && who.contains('@'), "{row}");
    }
    let mut pems: Vec<String> = rows
        .iter()
        .map(|r| r["pem"].as_str().unwrap().to_string())
        .collect();
    pems.sort();
    pems
}

/// The cfssl JSON objects on stdout.
fn objects(stdout: &str) -> Vec<Value> {
    serde_json::Deserializer::from_str(stdout)
        .into_iter::<Value>()
        .map(Result::unwrap)
        .collect()
}

fn certs(stdout: &str) -> Vec<String> {
    objects(stdout)
        .iter()
        .map(|o| o["cert"].as_str().unwrap().to_string())
        .collect()
}

/// The subject CN of a PEM certificate.
fn cn(pem: &str) -> String {
    use der::DecodePem;
    let c = x509_cert::Certificate::from_pem(pem.as_bytes()).unwrap();
    let subject = c.tbs_certificate().subject().to_string();
    subject.trim_start_matches("CN=").to_string()
}

/// A tmpfs of its own (root, as in CI), unmounted on drop.
struct Mount(std::path::PathBuf);

impl Mount {
    fn tmpfs(at: std::path::PathBuf) -> Self {
        std::fs::create_dir_all(&at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(&at)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount tmpfs failed (this test needs root, as in CI): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Mount(at)
    }

    fn read_only(&self) {
        let out = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn every_issuing_path_records_its_certificates_in_the_store() {
    require("openssl");
    let t = Token::new("record");
    t.seed_files(&["ca-csr.json", "ca-config.json", "node-csr.json"]);
    // -initca without a store named: p11ca-certs.db in the current folder, as `serve` picks it.
    let g = t.run(&["gencert", "-initca", "ca-csr.json"]);
    g.ok();
    t.run_in(&["json", "-bare", "ca"], g.stdout.as_bytes()).ok();
    let mut expected = certs(&g.stdout);
    // gencert -ca: one request (JSON on stdout), then two into --out.
    let r = t.run(&ca_args("gencert", &["node-csr.json"]));
    expected.extend(certs(&r.ok().stdout));
    std::fs::create_dir_all(t.path("gout")).unwrap();
    std::fs::copy(t.path("node-csr.json"), t.path("a.json")).unwrap();
    std::fs::copy(t.path("node-csr.json"), t.path("b.json")).unwrap();
    t.run(&ca_args("gencert", &["--out", "gout", "a.json", "b.json"]))
        .ok();
    expected.extend([t.read("gout/a.pem"), t.read("gout/b.pem")]);
    // sign: a folder into --out, the same CSRs on stdin, two files, one file.
    t.make_csrs("csrs", "n", 4);
    t.run(&SIGN_BATCH).ok();
    expected.extend((0..4).map(|i| t.read(&format!("out/n{i:03}.pem"))));
    let stdin: String = (0..4)
        .map(|i| t.read(&format!("csrs/n{i:03}.csr")))
        .collect();
    let r = t.run_in(&ca_args("sign", &["--batch", "-"]), stdin.as_bytes());
    expected.extend(certs(&r.ok().stdout));
    let r = t.run(&ca_args("sign", &["csrs/n000.csr", "csrs/n001.csr"]));
    expected.extend(certs(&r.ok().stdout));
    let r = t.run(&ca_args("sign", &["csrs/n002.csr"]));
    expected.extend(certs(&r.ok().stdout));
    assert_eq!(expected.len(), 1 + 1 + 2 + 4 + 4 + 2 + 1);
    expected.sort();
    assert_eq!(recorded(&t, &["--config", "ca-config.json"]), expected);
    let default_store = expected;

    // --db and -db-config name other stores; the default one gets nothing more.
    let r = t.run(&ca_args("sign", &["--db", "other.db", "csrs/n000.csr"]));
    assert_eq!(recorded(&t, &["--db", "other.db"]), certs(&r.ok().stdout));
    t.write(
        "db.json",
        r#"{"driver": "sqlite3", "data_source": "cfg.db"}"#,
    );
    let r = t.run(&ca_args(
        "sign",
        &["-db-config", "db.json", "--batch", "csrs"],
    ));
    let mut got = certs(&r.ok().stdout);
    got.sort();
    assert_eq!(recorded(&t, &["-db-config", "db.json"]), got);
    t.write("ca2-csr.json", &ca_csr("ecdsa", 256));
    let g = t.run(&[
        "gencert",
        "-initca",
        "--key-label",
        "second",
        "--db",
        "ca2.db",
        "ca2-csr.json",
    ]);
    assert_eq!(recorded(&t, &["--db", "ca2.db"]), certs(&g.ok().stdout));
    assert_eq!(recorded(&t, &["--config", "ca-config.json"]), default_store);
}

#[test]
fn a_store_that_cannot_be_written_means_no_output_and_no_new_key() {
    require("openssl");
    let t = Token::new("rostore");
    t.seed_ca();
    t.make_csrs("csrs", "n", 3);
    t.seed_files(&["node-csr.json"]);
    let ro = Mount::tmpfs(t.path("ro"));
    // A store made there (one certificate), then the file system made read-only.
    t.run(&ca_args("sign", &["--db", "ro/certs.db", "csrs/n000.csr"]))
        .ok();
    ro.read_only();
    let objects = t.object_count();
    let out_is_empty = || std::fs::read_dir(t.path("out")).unwrap().count() == 0;

    let mut batch = SIGN_BATCH.to_vec();
    batch.extend(["--db", "ro/certs.db"]);
    let r = t.run(&batch);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(
        r.stderr.contains("certificate store SQLite ro/certs.db"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("the certificate was not output"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.is_empty() && out_is_empty(), "nothing output");

    let r = t.run(&ca_args("sign", &["--db", "ro/certs.db", "csrs/n001.csr"]));
    r.fails(4, "certificate store SQLite ro/certs.db");
    t.run(&ca_args("sign", &["--db", "ro/new.db", "csrs/n001.csr"]))
        .fails(4, "certificate store SQLite ro/new.db");
    t.run(&ca_args(
        "gencert",
        &["--db", "ro/certs.db", "--out", "out", "node-csr.json"],
    ))
    .fails(4, "certificate store SQLite ro/certs.db");
    assert!(out_is_empty(), "no node key or certificate written");

    // -initca: the new key is removed again when its certificate cannot be recorded.
    t.run(&[
        "gencert",
        "-initca",
        "--key-label",
        "second",
        "--db",
        "ro/certs.db",
        "ca-csr.json",
    ])
    .fails(4, "certificate store SQLite ro/certs.db");
    assert_eq!(t.object_count(), objects, "no stray object in the token");
}

#[test]
fn sigkill_mid_batch_leaves_whole_files_that_are_all_recorded() {
    require("openssl");
    let t = Token::new("killrec");
    t.seed_ca();
    let n = 120;
    t.make_csrs("csrs", "n", n);
    let mut args: Vec<&str> = SIGN_BATCH.to_vec();
    args.extend(["--jobs", "2"]);
    // How long a whole run takes here (into another folder and store), so the kills land
    // inside the batch on any machine.
    std::fs::create_dir_all(t.path("full")).unwrap();
    let mut full = args.clone();
    full[12] = "full";
    full.extend(["--db", "full.db"]);
    let start = std::time::Instant::now();
    t.run(&full).ok();
    let whole = start.elapsed().as_millis() as u64;
    for delay_ms in [whole / 4, whole / 2, whole * 3 / 4] {
        let mut child = t
            .p11ca()
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        child.wait().unwrap();
        let store = recorded(&t, &["--config", "ca-config.json"]);
        let mut on_disk = 0;
        for i in 0..n {
            let Ok(pem) = std::fs::read_to_string(t.path(&format!("out/n{i:03}.pem"))) else {
                continue;
            };
            on_disk += 1;
            assert!(
                pem.starts_with("-----BEGIN CERTIFICATE-----\n")
                    && pem.ends_with("-----END CERTIFICATE-----\n"),
                "truncated n{i:03}.pem after a kill at {delay_ms} ms"
            );
            assert!(
                store.binary_search(&pem).is_ok(),
                "n{i:03}.pem is on disk but not in the store (kill at {delay_ms} ms)"
            );
        }
        eprintln!(
            "kill after {delay_ms} ms: {on_disk} of {n} certificates on disk, {} recorded",
            store.len()
        );
    }
}

#[test]
fn streamed_batches_come_out_in_input_order_with_each_failure_named() {
    require("openssl");
    let t = Token::new("order");
    t.seed_ca();
    t.make_csrs("csrs", "n", 30);
    // Input 11 on stdin is broken; the others are issued, in input order.
    let mut stdin = String::new();
    for i in 0..30 {
        if i == 10 {
            stdin.push_str(
                "-----BEGIN CERTIFICATE REQUEST-----\nbroken\n-----END CERTIFICATE REQUEST-----\n",
            );
        }
        stdin.push_str(&t.read(&format!("csrs/n{i:03}.csr")));
    }
    let args = ca_args("sign", &["--batch", "-", "--jobs", "2"]);
    let mut runs = Vec::new();
    for _ in 0..2 {
        let r = t.run_in(&args, stdin.as_bytes());
        assert_eq!(r.code, 1, "{}", r.stderr);
        let errors: Vec<&str> = r
            .stderr
            .lines()
            .filter(|l| !l.starts_with("p11ca: warning:"))
            .collect();
        assert_eq!(errors.len(), 1, "{}", r.stderr);
        assert!(errors[0].contains("stdin#11"), "{}", r.stderr);
        let out = objects(&r.stdout);
        let inputs: Vec<&str> = out.iter().map(|o| o["input"].as_str().unwrap()).collect();
        let want: Vec<String> = (1..=31)
            .filter(|k| *k != 11)
            .map(|k| format!("stdin#{k}"))
            .collect();
        assert_eq!(inputs, want);
        let cns: Vec<String> = out
            .iter()
            .map(|o| cn(o["cert"].as_str().unwrap()))
            .collect();
        let want: Vec<String> = (0..30).map(|i| format!("n{i:03}")).collect();
        assert_eq!(cns, want, "each certificate beside its own input");
        runs.push(inputs.join(","));
    }
    assert_eq!(runs[0], runs[1]);
    // Files named on the command line: their order, whatever finishes first.
    let names: Vec<String> = (0..30).rev().map(|i| format!("csrs/n{i:03}.csr")).collect();
    let mut rest: Vec<&str> = vec!["--jobs", "2"];
    rest.extend(names.iter().map(String::as_str));
    let r = t.run(&ca_args("sign", &rest));
    let got: Vec<String> = objects(&r.ok().stdout)
        .iter()
        .map(|o| o["input"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, names);
}

#[test]
fn stdin_csrs_are_signed_as_they_arrive() {
    require("openssl");
    let t = Token::new("arrive");
    t.seed_ca();
    t.make_csrs("csrs", "n", 40);
    let mut child = t
        .p11ca()
        .args(ca_args("sign", &["--batch", "-"]))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for i in 0..40 {
        stdin
            .write_all(t.read(&format!("csrs/n{i:03}.csr")).as_bytes())
            .unwrap();
    }
    stdin.flush().unwrap();
    // With stdin still open, certificates come out.
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(60));
    assert!(first.is_ok(), "no certificate while stdin is open");
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success());
    let mut all = first.unwrap();
    all.push('\n');
    for l in rx.iter() {
        all.push_str(&l);
        all.push('\n');
    }
    assert_eq!(certs(&all).len(), 40);
}

/// Today's figure for 20,000 inputs was about 145 MiB (RSA CA, issue #19); a streaming batch
/// holds a window of inputs, not the batch.
const RSS_BOUND_MIB: u64 = 48;

#[test]
fn twenty_thousand_inputs_keep_peak_memory_small() {
    require("openssl");
    let t = Token::new("rss");
    t.seed_files(&["ca-config.json"]);
    t.write("ca-csr.json", &ca_csr("ecdsa", 256));
    t.initca("ca-csr.json", "ca");
    let csr = t.ec_csr("one", "node");
    let stdin = csr.repeat(20_000);
    let (r, kib) = t.run_peak_rss(
        &ca_args("sign", &["--batch", "-", "--db", "rss.db"]),
        Some(stdin.as_bytes()),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout.lines().filter(|l| l.contains("\"cert\"")).count(),
        20_000
    );
    eprintln!("peak RSS for 20,000 inputs: {:.1} MiB", kib as f64 / 1024.0);
    assert!(
        kib / 1024 < RSS_BOUND_MIB,
        "peak RSS {kib} KiB for 20,000 inputs; bound {RSS_BOUND_MIB} MiB"
    );
}
