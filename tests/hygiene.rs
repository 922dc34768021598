//! Nothing leaks, nothing is lost: outputs are atomic under crashes and full disks, the token
//! is checked for what it can do before anything is created, and odd CSRs are refused.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{MODULE, Token, repo, require, run, sh};

/// A mount point of its own (tmpfs), unmounted on drop. The tests that need one run as root,
/// as CI does; anything else fails loudly.
struct Mount(std::path::PathBuf);

impl Mount {
    fn tmpfs(at: std::path::PathBuf, opts: &str) -> Self {
        std::fs::create_dir_all(&at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(&at)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount tmpfs failed (these tests need root, as in CI): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Mount(at)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn seed_ca(t: &Token) {
    std::fs::copy(repo("tests/data/ca-csr.json"), t.path("ca-csr.json")).unwrap();
    std::fs::copy(repo("tests/data/ca-config.json"), t.path("ca-config.json")).unwrap();
    t.initca("ca-csr.json", "ca");
}

#[test]
fn disk_full_during_write_leaves_old_files() {
    let t = Token::new("full");
    seed_ca(&t);
    let g = t.run(&["gencert", "-initca", "--key-label", "second", "ca-csr.json"]);
    g.ok();
    let _m = Mount::tmpfs(t.path("small"), "size=4k");
    std::fs::write(t.path("small/ca.pem"), "OLD").unwrap();
    let r = t.run_in(&["json", "-bare", "small/ca"], g.stdout.as_bytes());
    r.fails(4, "small/ca");
    assert!(r.stderr.contains("No space left on device"), "{}", r.stderr);
    assert_eq!(
        std::fs::read_to_string(t.path("small/ca.pem")).unwrap(),
        "OLD"
    );
    let names: Vec<_> = std::fs::read_dir(t.path("small"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "temp files removed: {names:?}");
}

#[test]
fn read_only_output_folder() {
    let t = Token::new("ro");
    seed_ca(&t);
    let g = t.run(&["gencert", "-initca", "--key-label", "second", "ca-csr.json"]);
    let _m = Mount::tmpfs(t.path("ro"), "ro,size=64k");
    t.run_in(&["json", "-bare", "ro/ca"], g.stdout.as_bytes())
        .fails(4, "ro/ca.pem: cannot create a file");
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs --features fault-injection"
)]
fn crash_between_renames_leaves_old_or_new_never_truncated() {
    let t = Token::new("crash");
    seed_ca(&t);
    let old_pem = t.read("ca.pem");
    let old_csr = t.read("ca.csr");
    let g = t.run(&["gencert", "-initca", "--key-label", "second", "ca-csr.json"]);
    let r = run(
        t.p11ca()
            .env("P11CA_FAULT", "between-renames")
            .args(["json", "-bare", "ca"]),
        Some(g.stdout.as_bytes()),
    );
    assert_ne!(r.code, 0, "the run was aborted");
    let v: serde_json::Value = serde_json::from_str(&g.stdout).unwrap();
    let (pem, csr) = (t.read("ca.pem"), t.read("ca.csr"));
    assert!(
        pem == old_pem || pem == v["cert"].as_str().unwrap(),
        "ca.pem is neither old nor new"
    );
    assert!(
        csr == old_csr || csr == v["csr"].as_str().unwrap(),
        "ca.csr is neither old nor new"
    );
    // The first file was renamed before the crash; the second was not.
    assert_eq!(pem, v["cert"].as_str().unwrap());
    assert_eq!(csr, old_csr);
}

#[test]
fn sigkill_during_a_batch_never_leaves_a_truncated_file() {
    require("openssl");
    let t = Token::new("kill");
    seed_ca(&t);
    t.make_csrs("csrs", "n", 60);
    // Old outputs that a crash must not damage.
    for i in 0..60 {
        std::fs::write(t.path(&format!("out/n{i:03}.pem")), "OLD").unwrap();
    }
    let mut args: Vec<&str> = crate::util::SIGN_BATCH.to_vec();
    args.extend(["--jobs", "1"]);
    // How long a whole run takes here, so the kills land inside the batch on any machine.
    std::fs::create_dir_all(t.path("full")).unwrap();
    let mut full_args = args.clone();
    full_args[12] = "full";
    let start = std::time::Instant::now();
    t.run(&full_args).ok();
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
        let status = child.wait().unwrap();
        let killed = status.signal() == Some(9);
        let mut new = 0;
        for i in 0..60 {
            let s = std::fs::read_to_string(t.path(&format!("out/n{i:03}.pem"))).unwrap();
            if s == "OLD" {
                continue;
            }
            new += 1;
            assert!(
                s.starts_with("-----BEGIN CERTIFICATE-----\n")
                    && s.ends_with("-----END CERTIFICATE-----\n"),
                "truncated n{i:03}.pem after kill at {delay_ms} ms"
            );
            let v = run(
                t.command("openssl").args([
                    "verify",
                    "-CAfile",
                    "ca.pem",
                    &format!("out/n{i:03}.pem"),
                ]),
                None,
            );
            assert_eq!(v.code, 0, "n{i:03}.pem does not verify: {}", v.stdout);
        }
        eprintln!(
            "kill after {delay_ms} ms (killed: {killed}): {new} of 60 certificates written whole"
        );
    }
    // A rerun completes every file.
    t.run(&args).ok();
    for i in 0..60 {
        assert!(
            t.read(&format!("out/n{i:03}.pem"))
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
    }
}

#[test]
fn token_capabilities_are_checked_before_anything_is_created() {
    let t = Token::softhsm("caps");
    // This token offers RSA key generation and raw CKM_RSA_PKCS only.
    let conf = std::fs::read_to_string(t.conf()).unwrap();
    std::fs::write(
        t.conf(),
        format!("{conf}slots.mechanisms = CKM_RSA_PKCS_KEY_PAIR_GEN,CKM_RSA_PKCS\n"),
    )
    .unwrap();
    t.write("ec.json", r#"{"CN":"x","key":{"algo":"ecdsa","size":256}}"#);
    let before = t.object_count();
    t.run(&["gencert", "-initca", "ec.json"]).fails(
        2,
        "token \"caps\" cannot generate EC keys (no CKM_EC_KEY_PAIR_GEN mechanism)",
    );
    assert_eq!(t.object_count(), before);
    // RSA still works, through CKM_RSA_PKCS over a DigestInfo built by p11ca.
    t.write("rsa.json", r#"{"CN":"y","key":{"algo":"rsa","size":3072}}"#);
    t.initca("rsa.json", "ca");
    assert!(
        sh(t.command("openssl")
            .args(["verify", "-CAfile", "ca.pem", "ca.pem"]))
        .contains("OK")
    );
    let text = sh(t
        .command("openssl")
        .args(["x509", "-noout", "-text", "-in", "ca.pem"]));
    assert!(text.contains("sha384WithRSAEncryption"), "{text}");
    let r = t.run(&["token", "list"]);
    assert!(
        r.stdout
            .contains("can RSA 512-16384 bits (CKM_RSA_PKCS+DigestInfo)"),
        "{}",
        r.stdout
    );
    let _ = MODULE;
}

#[test]
fn csr_with_an_unsupported_algorithm() {
    require("openssl");
    let t = Token::new("algo");
    seed_ca(&t);
    sh(t.command("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out", "ed.key"]));
    sh(t.command("openssl").args([
        "req", "-new", "-key", "ed.key", "-subj", "/CN=ed", "-out", "ed.csr",
    ]));
    t.run(&[
        "sign",
        "-ca",
        "ca.pem",
        "-ca-key",
        "ca-key.uri",
        "-config",
        "ca-config.json",
        "-profile",
        "mosquitood-k8s",
        "ed.csr",
    ])
    .fails(1, "ed.csr: unsupported signature algorithm 1.3.101.112");
    assert!(!t.path("ed.pem").exists());
}
