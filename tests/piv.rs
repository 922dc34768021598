//! The YubiKey path end to end: Yubico's real ykcs11 module (Debian's libykcs11.so), through a
//! private pcscd and vsmartcard's vpcd reader, on the emulated PIV card of
//! `p11ca-piv-emulator` (softhsm/piv-token.sh). Every test runs whatever
//! `P11CA_TEST_BACKEND` says: these need the card itself. Needs `--features piv-emulator`.
//!
//! ```sh
//! cargo test --features fault-injection,bench-tools,piv-emulator --test integration piv::
//! ```

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::util::{Backend, SIGN_BATCH, Token, ca_args, ca_csr, require, run, sh, x509_text};

fn card() -> Token {
    for tool in ["openssl", "pkcs11-tool", "yubico-piv-tool", "pcscd"] {
        require(tool);
    }
    Token::on(Backend::Piv, "piv")
}

/// [`card`] with a P-256 CA made in slot 9c (ca.pem, ca-key.uri) and the seed's ca-config.json.
fn card_with_ca() -> Token {
    let t = card();
    t.seed_files(&["ca-config.json"]);
    t.write("ca-csr.json", &ca_csr("ecdsa", 256));
    t.initca("ca-csr.json", "ca");
    t
}

/// With nothing of p11ca: Yubico's own tool and OpenSC's pkcs11-tool over ykcs11 take the
/// emulated card for a YubiKey 5, which is what makes the other tests mean something.
#[test]
#[cfg_attr(
    not(feature = "piv-emulator"),
    ignore = "needs --features piv-emulator"
)]
fn yubicos_own_tools_accept_the_emulated_card() {
    let t = card();
    let status = sh(t.command("yubico-piv-tool").args(["-a", "status"]));
    for want in [
        "Version:\t5.2.7",
        "Serial Number:\t12345678",
        "PIN tries left:\t3",
    ] {
        assert!(status.contains(want), "{want:?} in {status}");
    }
    let list = sh(t
        .command("pkcs11-tool")
        .args(["--module", t.module(), "-L"]));
    for want in [
        "Yubico YubiKey vpcd 00 00",
        "token label        : YubiKey PIV #12345678",
        "token manufacturer : Yubico (www.yubico.com)",
        "token model        : YubiKey YK5",
        "PIN initialized",
    ] {
        assert!(list.contains(want), "{want:?} in {list}");
    }
    // The card was set up with its own PIN, not the factory one.
    let r = run(
        t.command("yubico-piv-tool")
            .args(["-a", "verify-pin", "-P", &t.pin]),
        None,
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
}

/// `openssl verify` of `file` against ca.pem.
#[track_caller]
fn verifies(t: &Token, file: &str) {
    let r = run(
        t.command("openssl")
            .args(["verify", "-CAfile", "ca.pem", file]),
        None,
    );
    assert!(
        r.code == 0 && r.stdout.contains(": OK"),
        "{file}: {}{}",
        r.stdout,
        r.stderr
    );
}

/// `gencert -initca --piv-slot 9c` with the management key as SO PIN: the key is made on the
/// card, the CA certificate replaces ykcs11's placeholder in the slot (Yubico's tool reads it
/// back), `key list`/`key show` name slot 9c, and node certificates are signed with a PIN
/// login for every signature (the emulated card refuses a 9c signature without one).
fn ca_in_slot_9c(algo: &str, size: u32, key_text: &str) {
    let t = card();
    t.seed_files(&["ca-config.json"]);
    t.write("ca-csr.json", &ca_csr(algo, size));
    t.initca("ca-csr.json", "ca");
    verifies(&t, "ca.pem");
    let text = x509_text(&t, "ca.pem");
    assert!(
        text.contains(key_text) && text.contains("CA:TRUE"),
        "{text}"
    );

    let status = sh(t.command("yubico-piv-tool").args(["-a", "status"]));
    let slot = status
        .split("Slot 9c:")
        .nth(1)
        .unwrap_or_else(|| panic!("no certificate in slot 9c: {status}"));
    assert!(
        slot.contains("CN=mosquitood-k8s") && !slot.contains("YubiKey PIV Slot"),
        "the CA certificate did not replace the placeholder: {status}"
    );

    let uri = t.read("ca-key.uri");
    assert!(
        uri.contains("id=%02") && uri.contains("type=private"),
        "{uri}"
    );
    let v = key_attributes(
        &t,
        &uri,
        &[
            ("CKA_SENSITIVE", true),
            ("CKA_EXTRACTABLE", false),
            ("CKA_NEVER_EXTRACTABLE", true),
            ("CKA_ALWAYS_AUTHENTICATE", true),
            ("CKA_SIGN", true),
        ],
    );
    let pem_pub = sh(t
        .command("openssl")
        .args(["x509", "-in", "ca.pem", "-noout", "-pubkey"]));
    assert_eq!(v["public_key"].as_str().unwrap().trim(), pem_pub.trim());
    let list = t.run(&["key", "list"]);
    list.ok();
    assert!(
        list.stdout
            .contains("Private%20key%20for%20Digital%20Signature;type=private"),
        "{}",
        list.stdout
    );

    node_certs(&t);
}

/// `key show --json` of the key `uri`, after checking that its attributes are as `want`.
fn key_attributes(t: &Token, uri: &str, want: &[(&str, bool)]) -> serde_json::Value {
    let show = t.run(&["key", "show", uri.trim(), "--json"]);
    show.ok();
    let v: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    for (k, want) in want {
        assert_eq!(v["attributes"][k], serde_json::json!(want), "{k}: {v}");
    }
    v
}

/// `gencert -ca` of node1 into node.pem, verified by OpenSSL.
fn node_cert(t: &Token) {
    t.write(
        "node.json",
        r#"{"CN":"node1","hosts":["node1.example.com"],"key":{"algo":"ecdsa","size":256}}"#,
    );
    let g = t.run(&ca_args("gencert", &["node.json"]));
    g.ok();
    t.run_in(&["json", "-bare", "node"], g.stdout.as_bytes())
        .ok();
    verifies(t, "node.pem");
}

/// [`node_cert`] and a batch `sign` of OpenSSL CSRs, each verified by OpenSSL.
fn node_certs(t: &Token) {
    node_cert(t);

    std::fs::create_dir_all(t.path("csrs")).unwrap();
    std::fs::create_dir_all(t.path("out")).unwrap();
    for i in 0..3 {
        sh(t.command("openssl").args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "/dev/null",
            "-subj",
            &format!("/CN=b{i}"),
            "-out",
            &format!("csrs/b{i}.csr"),
        ]));
    }
    let mut args = SIGN_BATCH.to_vec();
    args.extend(["--jobs", "2"]);
    t.run(&args).ok();
    for i in 0..3 {
        verifies(t, &format!("out/b{i}.pem"));
    }
}

#[test]
#[cfg_attr(
    not(feature = "piv-emulator"),
    ignore = "needs --features piv-emulator"
)]
fn p256_ca_in_slot_9c_signs_node_certificates() {
    ca_in_slot_9c("ecdsa", 256, "NIST CURVE: P-256");
}

#[test]
#[cfg_attr(
    not(feature = "piv-emulator"),
    ignore = "needs --features piv-emulator"
)]
fn rsa_2048_ca_in_slot_9c_signs_node_certificates() {
    ca_in_slot_9c("rsa", 2048, "Public-Key: (2048 bit)");
}

/// The card pulled out (the emulator stopped): signing fails with one clear error and writes
/// nothing; put back (the emulator started on the same folder), the same key signs again.
#[test]
#[cfg_attr(
    not(feature = "piv-emulator"),
    ignore = "needs --features piv-emulator"
)]
fn a_card_pulled_out_and_put_back_keeps_its_key() {
    let t = card_with_ca();
    t.write(
        "node.json",
        r#"{"CN":"node1","hosts":["node1.example.com"],"key":{"algo":"ecdsa","size":256}}"#,
    );
    let args = [
        "gencert",
        "-ca",
        "ca.pem",
        "-ca-key",
        "ca-key.uri",
        "-config",
        "ca-config.json",
        "-profile",
        "mosquitood-k8s",
        "node.json",
    ];
    t.piv_card("--unplug");
    let r = t.run(&args);
    assert_ne!(r.code, 0, "signed without the card: {}", r.stdout);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert!(
        lines.len() == 1
            && lines[0].starts_with("p11ca: error: no token present")
            && lines[0].contains("plug the device in"),
        "one error saying the card is missing: {}",
        r.stderr
    );
    assert!(!t.path("node.pem").exists());
    t.piv_card("--plug");
    let g = t.run(&args);
    g.ok();
    t.run_in(&["json", "-bare", "node"], g.stdout.as_bytes())
        .ok();
    verifies(&t, "node.pem");
}

/// A wrong PIN: one login, refused with what the card says is left, never retried (the card's
/// own counter shows exactly one try used); after the last try, the PIN is reported locked.
#[test]
#[cfg_attr(
    not(feature = "piv-emulator"),
    ignore = "needs --features piv-emulator"
)]
fn a_wrong_pin_is_tried_once_and_a_locked_pin_is_reported() {
    let t = card_with_ca();
    let tries_left = || {
        let s = sh(t.command("yubico-piv-tool").args(["-a", "status"]));
        s.lines()
            .find_map(|l| l.strip_prefix("PIN tries left:\t"))
            .unwrap_or_else(|| panic!("{s}"))
            .to_string()
    };
    let wrong = |pin: &str| {
        run(
            t.p11ca()
                .env("P11CA_PIN", pin)
                .args(["key", "show", t.read("ca-key.uri").trim()]),
            None,
        )
    };
    // ykcs11 tells the count through the PKCS#11 flags only (COUNT_LOW, FINAL_TRY, LOCKED).
    for (left, says) in [
        ("2", "the token reports few tries left"),
        ("1", "one more wrong PIN will LOCK the token"),
        ("0", "the PIN is now LOCKED"),
    ] {
        let r = wrong("111111");
        assert!(!r.stderr.contains("111111"), "PIN leaked: {}", r.stderr);
        r.fails(2, "wrong PIN for token \"YubiKey PIV #12345678\"")
            .fails(2, says)
            .fails(2, "p11ca tried once and will not retry");
        assert_eq!(tries_left(), left, "one try per run");
    }
    // Now even the right PIN is refused, as locked, and not tried: the card's count stays 0.
    wrong(&t.pin.clone()).fails(
        2,
        "the user PIN of token \"YubiKey PIV #12345678\" is locked; unblock it with the PUK",
    );
    assert_eq!(tries_left(), "0");
}

/// A PIV slot holds one key: a second `initca` into an occupied slot is refused by its ID
/// before anything is generated, and the first CA's key and certificate stay.
#[test]
#[cfg_attr(
    not(feature = "piv-emulator"),
    ignore = "needs --features piv-emulator"
)]
fn a_second_ca_in_an_occupied_slot_is_refused() {
    let t = card_with_ca();
    let before = t.object_count();
    let mut args = vec!["gencert".to_string(), "-initca".to_string()];
    args.extend(t.piv_initca_args());
    args.push("ca-csr.json".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    t.run(&args).fails(3, "already has an object with ID 02");
    assert_eq!(t.object_count(), before);
    let status = sh(t.command("yubico-piv-tool").args(["-a", "status"]));
    assert!(status.contains("CN=mosquitood-k8s"), "{status}");
}

/// Certificates (PEM files) in out/, each checked by `openssl verify` against ca.pem.
fn verified_outputs(t: &Token) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(t.path("out")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            name.ends_with(".pem") || name.ends_with(".csr"),
            "unexpected file out/{name} (a temporary file left behind?)"
        );
        if name.ends_with(".csr") {
            continue;
        }
        verifies(t, &format!("out/{name}"));
        n += 1;
    }
    n
}

/// The card pulled out in the middle of a batch: the batch stops with `p11ca: error:` lines
/// (exit 2), every certificate it wrote is whole and verifies; with the card back, the same
/// command completes the batch.
#[test]
#[cfg_attr(
    not(feature = "piv-emulator"),
    ignore = "needs --features piv-emulator"
)]
fn a_card_pulled_out_mid_batch_then_the_rerun_completes() {
    const N: usize = 40;
    let t = card_with_ca();
    t.make_csrs("csrs", "n", N);
    let stderr = std::fs::File::create(t.path("batch.err")).unwrap();
    let mut child = t
        .p11ca()
        .args(SIGN_BATCH)
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
    while pems() < 3 {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the batch ended ({status}) first: {}", t.read("batch.err"));
        }
        assert!(Instant::now() < deadline, "the batch made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    t.piv_card("--unplug");
    let status = child.wait().unwrap();
    let err = t.read("batch.err");
    assert_eq!(status.code(), Some(2), "exit code; stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| !l.starts_with("p11ca: warning: "))
        .collect();
    assert!(!errors.is_empty(), "no error reported: {err}");
    assert!(
        errors.iter().all(|l| l.starts_with("p11ca: error: ")),
        "{err}"
    );
    let written = verified_outputs(&t);
    assert!(
        written > 0 && written < N,
        "the removal did not land inside the batch: {written} of {N}"
    );
    eprintln!(
        "card pulled out mid-batch: {written} of {N} written; first error: {}",
        errors[0]
    );

    t.piv_card("--plug");
    t.run(&SIGN_BATCH).ok();
    assert_eq!(
        verified_outputs(&t),
        N,
        "every input signed after the rerun"
    );
}

/// OpenSC's PKCS#11 module for this card.
const OPENSC: &str = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so";

/// A second, independent PKCS#11 implementation on the same card: OpenSC's PIV driver finds
/// the key ykcs11 generated in slot 9c (same ID, the CA certificate p11ca stored) and signs
/// with it; OpenSSL verifies that signature with the public key in ca.pem.
fn opensc_signs_with_the_ykcs11_key(algo: &str, size: u32, mechanism: &str) {
    let t = card();
    assert!(
        std::path::Path::new(OPENSC).exists(),
        "{OPENSC} is missing: run ci/setup (opensc)"
    );
    t.write("ca-csr.json", &ca_csr(algo, size));
    t.initca("ca-csr.json", "ca");
    sh(t.command("openssl")
        .args(["x509", "-in", "ca.pem", "-outform", "DER", "-out", "ca.der"]));
    sh(t.command("openssl").args([
        "x509", "-in", "ca.pem", "-noout", "-pubkey", "-out", "ca.pub",
    ]));
    let p11 = |args: &[&str]| {
        let mut all = vec!["--module", OPENSC];
        all.extend_from_slice(args);
        sh(t.command("pkcs11-tool").args(&all))
    };
    p11(&[
        "--read-object",
        "--type",
        "cert",
        "--id",
        "02",
        "--output-file",
        "opensc.der",
    ]);
    assert_eq!(
        std::fs::read(t.path("opensc.der")).unwrap(),
        std::fs::read(t.path("ca.der")).unwrap(),
        "OpenSC reads the certificate p11ca stored through ykcs11"
    );
    t.write("data", "signed by OpenSC with the key ykcs11 generated\n");
    p11(&[
        "--login",
        "--pin",
        &t.pin,
        "--sign",
        "--id",
        "02",
        "-m",
        mechanism,
        "--signature-format",
        "openssl",
        "--input-file",
        "data",
        "--output-file",
        "data.sig",
    ]);
    let v = run(
        t.command("openssl").args([
            "dgst",
            "-sha256",
            "-verify",
            "ca.pub",
            "-signature",
            "data.sig",
            "data",
        ]),
        None,
    );
    assert!(
        v.code == 0 && v.stdout.contains("Verified OK"),
        "OpenSC's signature does not verify with ca.pem's key: {}{}",
        v.stdout,
        v.stderr
    );
}

#[test]
#[cfg_attr(
    not(feature = "piv-emulator"),
    ignore = "needs --features piv-emulator"
)]
fn opensc_signs_with_the_p256_key_ykcs11_generated() {
    opensc_signs_with_the_ykcs11_key("ecdsa", 256, "ECDSA-SHA256");
}

#[test]
#[cfg_attr(
    not(feature = "piv-emulator"),
    ignore = "needs --features piv-emulator"
)]
fn opensc_signs_with_the_rsa_key_ykcs11_generated() {
    opensc_signs_with_the_ykcs11_key("rsa", 2048, "SHA256-RSA-PKCS");
}

/// `key attest`: the slot's attestation chain (attestation certificate, the device's f9
/// certificate) checked up to the emulated device's root, and the key in ca.pem shown to be the
/// attested one; OpenSSL verifies the printed chain on its own. A CA certificate with another
/// key, or another root, is refused with one error line.
#[test]
#[cfg_attr(
    not(feature = "piv-emulator"),
    ignore = "needs --features piv-emulator"
)]
fn key_attest_shows_the_ca_key_was_generated_on_the_card() {
    let t = card_with_ca();
    let root = t.hsm_dir().join("card/attestation-root.pem");
    let root = root.to_str().unwrap();
    let uri = t.read("ca-key.uri");
    let r = t.run(&[
        "key",
        "attest",
        uri.trim(),
        "--cert",
        "ca.pem",
        "--root",
        root,
    ]);
    r.ok();
    for want in [
        "generated on the card (serial 12345678, firmware 5.2.7), PIN policy always, touch policy never",
        "the key in ca.pem is the attested key",
    ] {
        assert!(r.stdout.contains(want), "{want:?} in {}", r.stdout);
    }
    attestation_chain_verifies_to(&t, &r.stdout, root);

    // Another CA certificate (a software key's), and another root: refused.
    sh(t.command("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "/dev/null",
        "-subj",
        "/CN=other",
        "-days",
        "1",
        "-out",
        "other.pem",
    ]));
    t.run(&[
        "key",
        "attest",
        uri.trim(),
        "--cert",
        "other.pem",
        "--root",
        root,
    ])
    .fails(5, "the attested key is not the key in the CA certificate");
    t.run(&[
        "key",
        "attest",
        uri.trim(),
        "--cert",
        "ca.pem",
        "--root",
        "other.pem",
    ])
    .fails(5, "does not verify");
}

/// The two certificates `key attest` printed in `stdout` (the attestation and the card's
/// f9 certificate) verify up to `root`, and the attested key is ca.pem's.
fn attestation_chain_verifies_to(t: &Token, stdout: &str, root: &str) {
    let pems: Vec<String> = stdout
        .split("-----BEGIN CERTIFICATE-----")
        .skip(1)
        .map(|b| format!("-----BEGIN CERTIFICATE-----{b}"))
        .collect();
    assert_eq!(pems.len(), 2, "{stdout}");
    t.write("attestation.pem", &pems[0]);
    t.write("f9.pem", &pems[1]);
    let v = sh(t.command("openssl").args([
        "verify",
        "-CAfile",
        root,
        "-untrusted",
        "f9.pem",
        "attestation.pem",
    ]));
    assert!(v.contains("attestation.pem: OK"), "{v}");
    let leaf_key =
        sh(t.command("openssl")
            .args(["x509", "-in", "attestation.pem", "-noout", "-pubkey"]));
    let ca_key = sh(t
        .command("openssl")
        .args(["x509", "-in", "ca.pem", "-noout", "-pubkey"]));
    assert_eq!(leaf_key, ca_key, "the attested key is ca.pem's");
}

/// resp.pem and resp-key.uri: a delegated OCSP responder whose key the card made in slot 9d
/// under the management key (refused, before anything is made, without it or without a slot),
/// sensitive and never extractable, its certificate in the slot in place of the placeholder.
fn responder_in_slot_9d(t: &Token) {
    use crate::ocsp::{RESPONDER_CONFIG, gencert_in_token};
    t.write("ocsp-config.json", RESPONDER_CONFIG);
    t.write(
        "resp-csr.json",
        r#"{"CN":"ocsp-responder","key":{"algo":"ecdsa","size":256}}"#,
    );
    gencert_in_token(t, "ocsp", &["--piv-slot", "9d"])
        .fails(1, "key generation needs the SO login");
    let mgm = format!("file:{}", t.env_var("P11CA_PIV_MGM_KEY_FILE"));
    gencert_in_token(t, "ocsp", &["--so-pin-source", &mgm]).fails(1, "give --piv-slot");
    let g = gencert_in_token(t, "ocsp", &["--piv-slot", "9d", "--so-pin-source", &mgm]);
    g.ok();
    t.run_in(&["json", "-bare", "resp"], g.stdout.as_bytes())
        .ok();
    verifies(t, "resp.pem");
    let uri = t.read("resp-key.uri");
    assert!(
        uri.contains("id=%03") && uri.contains("type=private"),
        "{uri}"
    );
    key_attributes(
        t,
        &uri,
        &[
            ("CKA_SENSITIVE", true),
            ("CKA_EXTRACTABLE", false),
            ("CKA_NEVER_EXTRACTABLE", true),
            ("CKA_SIGN", true),
        ],
    );
    let status = sh(t.command("yubico-piv-tool").args(["-a", "status"]));
    let slot = status
        .split("Slot 9d:")
        .nth(1)
        .unwrap_or_else(|| panic!("no certificate in slot 9d: {status}"));
    assert!(slot.contains("CN=ocsp-responder"), "{status}");
}

/// A delegated OCSP responder whose key the card made: `gencert -ca --key-in-token
/// --piv-slot 9d` under the management key (ykcs11 makes keys only as the SO; the new key
/// signs its CSR after a context-specific login with the user PIN, the CA key as always).
/// Its certificate replaces the placeholder in slot 9d; `ocsprefresh -responder` signs the
/// store's responses with it, and so does `serve -responder` at /revoke, with the CA key on
/// the same card; OpenSSL checks the responses with the CA as the only trust anchor.
#[test]
#[cfg_attr(
    not(feature = "piv-emulator"),
    ignore = "needs --features piv-emulator"
)]
fn a_delegated_ocsp_responder_in_slot_9d_signs_the_stores_responses() {
    let t = card_with_ca();
    responder_in_slot_9d(&t);
    node_cert(&t);
    let r = t.run(&crate::ocsp::REFRESH_WITH_RESPONDER);
    r.ok();
    assert!(
        r.stderr.contains("responses signed and stored"),
        "{}",
        r.stderr
    );
    let node = sh(t
        .command("openssl")
        .args(["x509", "-in", "node.pem", "-noout", "-serial"]));
    let serial = node.trim().trim_start_matches("serial=");
    let db = p11ca::db::DbConfig::Sqlite(t.path("p11ca-certs.db"));
    let rec = p11ca::db::Store::open_existing(&db)
        .unwrap()
        .find(&format!("0x{serial}"))
        .unwrap()
        .remove(0);
    // OpenSSL's reading of the store's response for node1, checked against the CA alone.
    let stored_response = || {
        let (serial, aki) = (&rec.serial_number, &rec.authority_key_identifier);
        let text = crate::serve_revoke::stored_ocsp_text_of(&t, serial, aki, "node.pem");
        assert!(text.contains("Response verify OK"), "{text}");
        assert!(text.contains("Responder Id: CN = ocsp-responder"), "{text}");
        text
    };
    let text = stored_response();
    assert!(text.contains("node.pem: good"), "{text}");

    // serve with both keys on the card: /revoke stores a response the 9d key signed.
    t.write("server-config.json", crate::serve::SERVER_CONFIG);
    let responder = [
        "-revoke-auth-key",
        "current",
        "-responder",
        "resp.pem",
        "-responder-key",
        "resp-key.uri",
    ];
    let server = crate::serve::p11ca_serve(&t, "serve", &responder);
    let body = crate::serve_revoke::revoke_body(
        &crate::serve_revoke::current_key(),
        &rec.serial_number,
        &rec.authority_key_identifier,
        "keyCompromise",
    );
    let (st, answer) = crate::serve::http(
        server.port,
        "POST",
        crate::serve_revoke::REVOKE,
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(st, 200, "{answer}");
    assert!(!answer.contains("not refreshed"), "{answer}");
    let text = stored_response();
    assert!(text.contains("node.pem: revoked"), "{text}");
}
