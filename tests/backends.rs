//! The cross-back-end suite: one test body, run against each token implementation chosen by
//! `P11CA_TEST_BACKEND` (softhsm, the default; tpm: tpm2-pkcs11 on swtpm; kryoptic; p11kit:
//! SoftHSM2 behind `p11-kit server`; piv: Yubico's ykcs11 on an emulated YubiKey, which needs
//! `--features piv-emulator`). ci/test runs the whole test suite on SoftHSM2, then this
//! module again on each other back-end:
//!
//! ```sh
//! P11CA_TEST_BACKEND=tpm cargo test --test integration backends::
//! ```
//!
//! Everything is checked outside p11ca: OpenSSL verifies certificates and CSRs, pkcs11-tool
//! counts the token's objects.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

use crate::serve::{http, load, records, serve_args, start};
use crate::util::{Backend, Run, Token, ca_csr, free_port, require, run, sh, x509_text};

/// The seed's profile in tests/data/ca-config.json.
const PROFILE: &str = "mosquitood-k8s";

/// Whether `backend` can make an `algo`/`size` key. The TPM (swtpm, like most TPM 2.0 chips)
/// stops at RSA-3072, a PIV card through ykcs11 2.2.0 at RSA-2048; the others make every size
/// p11ca offers.
fn supports(backend: Backend, algo: &str, size: u32) -> bool {
    match backend {
        Backend::Tpm => !(algo == "rsa" && size > 3072),
        Backend::Piv => !(algo == "rsa" && size > 2048),
        _ => true,
    }
}

/// Objects one CA adds to the token: key pair and certificate; on a PIV card also the
/// certificate's PIV data object (ykcs11 shows it as a CKO_DATA object of its own) and the
/// slot's attestation certificate.
fn ca_objects(backend: Backend) -> usize {
    if backend == Backend::Piv { 5 } else { 3 }
}

/// Objects on a token before any CA: on a PIV card the Discovery object and the device's
/// attestation key (slot f9: key pair, certificate and its data object).
fn empty_token_objects(backend: Backend) -> usize {
    if backend == Backend::Piv { 5 } else { 0 }
}

/// A test (or part) that does not fit a PIV card: say so and why, on the terminal even when
/// the test harness captures output, so a skip is never silent. True when skipped.
fn not_on_piv(backend: Backend, why: &str) -> bool {
    if backend != Backend::Piv {
        return false;
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED on piv: {why}");
    true
}

/// `gencert -initca` for `algo`/`size` on a fresh token, with the certificate and CSR checked by
/// OpenSSL; where the back-end cannot make the key, a clear refusal before anything is created.
fn initca_checked(algo: &str, size: u32, sig: &str, key_text: &str) {
    require("openssl");
    let t = Token::new("ca");
    t.write("csr.json", &ca_csr(algo, size));
    let before = t.object_count();
    if !supports(t.backend(), algo, size) {
        let name = if algo == "rsa" {
            format!("RSA-{size}")
        } else {
            format!("P-{size}")
        };
        let mut args = vec!["gencert".to_string(), "-initca".to_string()];
        args.extend(t.piv_initca_args());
        args.push("csr.json".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        t.run(&args)
            .fails(2, &format!("token \"{}\" cannot make {name}", t.label));
        assert_eq!(t.object_count(), before, "nothing created on a refusal");
        assert_eq!(t.files(), ["csr.json"], "nothing written on a refusal");
        return;
    }
    t.initca("csr.json", "ca");
    let v = sh(t
        .command("openssl")
        .args(["verify", "-CAfile", "ca.pem", "ca.pem"]));
    assert!(v.contains("ca.pem: OK"), "{v}");
    let r = run(
        t.command("openssl")
            .args(["req", "-verify", "-noout", "-in", "ca.csr"]),
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let text = x509_text(&t, "ca.pem");
    assert!(
        text.contains(&format!("Signature Algorithm: {sig}")),
        "{algo}-{size} on {}: {text}",
        t.backend().name()
    );
    assert!(text.contains(key_text), "{algo}-{size}: {text}");
    assert!(text.contains("CA:TRUE"), "{text}");
    assert_eq!(
        t.object_count(),
        before + ca_objects(t.backend()),
        "key pair and certificate in the token"
    );
}

#[test]
fn initca_rsa_2048() {
    initca_checked(
        "rsa",
        2048,
        "sha256WithRSAEncryption",
        "Public-Key: (2048 bit)",
    );
}

#[test]
fn initca_rsa_3072() {
    initca_checked(
        "rsa",
        3072,
        "sha384WithRSAEncryption",
        "Public-Key: (3072 bit)",
    );
}

/// Made where the token can; refused before anything is created on the TPM.
#[test]
fn initca_rsa_4096_or_a_clear_refusal() {
    initca_checked(
        "rsa",
        4096,
        "sha512WithRSAEncryption",
        "Public-Key: (4096 bit)",
    );
}

#[test]
fn initca_p256() {
    initca_checked("ecdsa", 256, "ecdsa-with-SHA256", "NIST CURVE: P-256");
}

#[test]
fn initca_p384() {
    initca_checked("ecdsa", 384, "ecdsa-with-SHA384", "NIST CURVE: P-384");
}

/// A CA of `algo`/`size` plus tests/data/ca-config.json in a fresh token.
fn ca(algo: &str, size: u32) -> Token {
    require("openssl");
    let t = Token::new("k8s");
    t.seed_files(&["ca-config.json"]);
    t.write("ca-csr.json", &ca_csr(algo, size));
    t.initca("ca-csr.json", "ca");
    t
}

/// `CMD -ca ca.pem -ca-key ca-key.uri -config ca-config.json -profile PROFILE REST…`.
fn with_ca<'a>(cmd: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        cmd,
        "-ca",
        "ca.pem",
        "-ca-key",
        "ca-key.uri",
        "-config",
        "ca-config.json",
        "-profile",
        PROFILE,
    ];
    v.extend_from_slice(rest);
    v
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
        "{file} does not verify against ca.pem on {}: {}{}",
        t.backend().name(),
        r.stdout,
        r.stderr
    );
}

/// A CSR made by OpenSSL with a software key: `openssl req -new -newkey NEWKEY… -subj /CN=CN`.
fn openssl_csr(t: &Token, newkey: &[&str], cn: &str, out: &str) {
    let subj = format!("/CN={cn}");
    let mut args = vec!["req", "-new", "-newkey"];
    args.extend_from_slice(newkey);
    args.extend_from_slice(&[
        "-nodes",
        "-keyout",
        "/dev/null",
        "-subj",
        &subj,
        "-out",
        out,
    ]);
    sh(t.command("openssl").args(&args));
}

/// Node certificates from a CA key in the token: `gencert -ca` (node key made in software),
/// `sign` of an OpenSSL CSR, and a small batch on two parallel sessions; all verified by
/// OpenSSL, serials distinct.
fn node_certs(algo: &str, size: u32) {
    let t = ca(algo, size);
    t.write(
        "node.json",
        r#"{"CN":"node1","hosts":["node1.example.com","10.0.0.1"],"key":{"algo":"ecdsa","size":256},"names":[{"O":"system:nodes"}]}"#,
    );
    let g = t.run(&with_ca("gencert", &["node.json"]));
    g.ok();
    t.run_in(&["json", "-bare", "node"], g.stdout.as_bytes())
        .ok();
    verifies(&t, "node.pem");
    let text = x509_text(&t, "node.pem");
    assert!(
        text.contains("DNS:node1.example.com") && text.contains("IP Address:10.0.0.1"),
        "{text}"
    );
    assert!(text.contains("CN = mosquitood-k8s"), "issuer: {text}");

    openssl_csr(&t, &["rsa:2048"], "node2", "node2.csr");
    let s = t.run(&with_ca("sign", &["node2.csr"]));
    s.ok();
    t.run_in(&["json", "-bare", "node2"], s.stdout.as_bytes())
        .ok();
    verifies(&t, "node2.pem");

    std::fs::create_dir_all(t.path("csrs")).unwrap();
    std::fs::create_dir_all(t.path("out")).unwrap();
    for i in 0..6 {
        openssl_csr(
            &t,
            &["ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
            &format!("b{i}"),
            &format!("csrs/b{i}.csr"),
        );
    }
    t.run(&with_ca(
        "sign",
        &["--batch", "csrs", "--out", "out", "--jobs", "2"],
    ))
    .ok();
    let mut serials = BTreeSet::new();
    for i in 0..6 {
        let f = format!("out/b{i}.pem");
        verifies(&t, &f);
        serials.insert(serial(&t, &f));
    }
    serials.insert(serial(&t, "node.pem"));
    serials.insert(serial(&t, "node2.pem"));
    assert_eq!(serials.len(), 8, "every certificate has its own serial");
}

fn serial(t: &Token, file: &str) -> String {
    sh(t.command("openssl")
        .args(["x509", "-noout", "-serial", "-in", file]))
}

#[test]
fn node_certs_from_an_rsa_ca() {
    node_certs("rsa", 2048);
}

#[test]
fn node_certs_from_a_p256_ca() {
    node_certs("ecdsa", 256);
}

/// `key show --json` for a CA key of `algo`/`size`: born in the token, never extractable, the
/// secret unreadable, the public key the certificate's; `key list` shows the pair and the
/// certificate under one ID and label.
fn key_attributes(algo: &str, size: u32) {
    let t = ca(algo, size);
    let uri = t.read("ca-key.uri");
    let r = t.run(&["key", "show", &uri, "--json"]);
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let a = &v["attributes"];
    for (k, want) in [
        ("CKA_SENSITIVE", true),
        ("CKA_EXTRACTABLE", false),
        ("CKA_ALWAYS_SENSITIVE", true),
        ("CKA_NEVER_EXTRACTABLE", true),
        ("CKA_LOCAL", true),
        ("CKA_PRIVATE", true),
        ("CKA_SIGN", true),
    ] {
        assert_eq!(
            a[k],
            serde_json::json!(want),
            "{k} on {}: {v}",
            t.backend().name()
        );
    }
    // Whatever the token answers for the secret parts, it must not hand them out.
    let probes = v["secret_probe"].as_object().expect("secret_probe");
    assert!(!probes.is_empty(), "{v}");
    for (k, answer) in probes {
        let answer = answer.as_str().unwrap_or_default();
        assert!(
            answer == "refused by the token (sensitive)"
                || answer == "not applicable to this key type"
                || answer == "unavailable",
            "{k}: {answer} on {}",
            t.backend().name()
        );
    }
    let pem_pub = sh(t
        .command("openssl")
        .args(["x509", "-in", "ca.pem", "-noout", "-pubkey"]));
    assert_eq!(v["public_key"].as_str().unwrap().trim(), pem_pub.trim());

    let r = t.run(&["key", "list", "--json"]);
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let objs = v["objects"].as_array().unwrap();
    // ykcs11 also lists the PIV data objects (Discovery, the certificate's object) and the
    // attestation objects (the slot's attestation certificate, the device's f9 key).
    let attestation = |o: &serde_json::Value| {
        t.backend() == Backend::Piv
            && o["label"]
                .as_str()
                .unwrap_or("")
                .contains("PIV Attestation")
    };
    let objs: Vec<&serde_json::Value> = objs
        .iter()
        .filter(|o| o["class"] != "data" && !attestation(o))
        .collect();
    let mut classes: Vec<&str> = objs.iter().map(|o| o["class"].as_str().unwrap()).collect();
    classes.sort();
    assert_eq!(
        classes,
        ["cert", "private", "public"],
        "key list on {}",
        t.backend().name()
    );
    // ykcs11 fixes the labels ("Private key for Digital Signature", ...); the ID is the slot.
    let fixed_labels = t.backend() == Backend::Piv;
    assert!(
        objs.iter()
            .all(|o| o["id"] == objs[0]["id"] && (fixed_labels || o["label"] == "mosquitood-k8s")),
        "{v}"
    );
    assert_eq!(
        t.object_count(),
        ca_objects(t.backend()) + empty_token_objects(t.backend()),
        "pkcs11-tool sees key pair + certificate"
    );
}

#[test]
fn key_attributes_rsa() {
    key_attributes("rsa", 2048);
}

#[test]
fn key_attributes_p256() {
    key_attributes("ecdsa", 256);
}

#[test]
fn duplicate_label_or_id_is_refused_and_token_unchanged() {
    if not_on_piv(
        Backend::from_env(),
        "labels and IDs: ykcs11 fixes labels and a PIV card has fixed slots (an occupied slot is refused by ID: piv::a_second_ca_in_an_occupied_slot_is_refused)",
    ) {
        return;
    }
    let t = ca("ecdsa", 256);
    assert_eq!(t.object_count(), 3);
    // Same CN → same default label.
    t.run(&["gencert", "-initca", "ca-csr.json"]).fails(
        3,
        "already has an object with label \"mosquitood-k8s\": pkcs11:token=k8s;id=%",
    );
    assert_eq!(t.object_count(), 3);
    let id_args = |label: &'static str| {
        [
            "gencert",
            "-initca",
            "--key-label",
            label,
            "--key-id",
            "0a0b",
            "ca-csr.json",
        ]
    };
    t.run(&id_args("x")).ok();
    t.run(&id_args("y"))
        .fails(3, "already has an object with ID 0a0b");
    assert_eq!(t.object_count(), 6);
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs --features fault-injection"
)]
fn rollback_after_a_failure_leaves_the_token_as_before() {
    if not_on_piv(
        Backend::from_env(),
        "rollback: ykcs11 2.2.0 cannot delete a PIV key (C_DestroyObject removes certificates only)",
    ) {
        return;
    }
    let t = Token::new("k8s");
    t.write("ca-csr.json", &ca_csr("ecdsa", 256));
    let before = t.object_count();
    for point in ["after-keygen", "before-store-cert", "after-store-cert"] {
        let r: Run = run(
            t.p11ca()
                .env("P11CA_FAULT", point)
                .args(["gencert", "-initca", "ca-csr.json"]),
            None,
        );
        r.fails(
            2,
            "every object this run created was removed from the token",
        );
        assert_eq!(
            t.object_count(),
            before,
            "objects left on {} after a fault at {point}",
            t.backend().name()
        );
    }
    // Nothing stale blocks the same label afterwards.
    t.initca("ca-csr.json", "ca");
    assert_eq!(t.object_count(), before + 3);
}

/// `r` without the lines tpm2-pkcs11 itself writes to stderr on errors (`ERROR: …`; it has no
/// setting that silences them): p11ca's own contract is checked on what remains. Other
/// back-ends are left as they are, so any stray line there still fails.
fn without_module_log(t: &Token, r: &Run) -> Run {
    let keep = |l: &&str| t.backend() != Backend::Tpm || !l.starts_with("ERROR: ");
    Run {
        code: r.code,
        stdout: r.stdout.clone(),
        stderr: r
            .stderr
            .lines()
            .filter(keep)
            .map(|l| format!("{l}\n"))
            .collect(),
    }
}

#[test]
fn wrong_pin_is_reported_once_and_the_right_pin_still_works() {
    if not_on_piv(
        Backend::from_env(),
        "wrong PIN at initca: on a PIV card initca logs in with the management key and the PIN comes later, per signature; piv::a_wrong_pin_is_tried_once_and_a_locked_pin_is_reported covers it",
    ) {
        return;
    }
    let t = Token::new("pin");
    t.write("ca.json", &ca_csr("ecdsa", 256));
    let r = run(
        t.p11ca()
            .env("P11CA_PIN", "99999")
            .args(["gencert", "-initca", "ca.json"]),
        None,
    );
    assert!(!r.stderr.contains("99999"), "PIN leaked: {}", r.stderr);
    without_module_log(&t, &r).fails(2, "wrong PIN for token \"pin\"");
    t.initca("ca.json", "ca");
}

#[test]
fn token_list_names_the_token_and_what_it_can_make() {
    let t = Token::new("listed");
    let r = t.run(&["token", "list"]);
    r.ok();
    assert!(
        r.stdout.contains(&format!("token \"{}\"", t.label)),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(&format!("module {}", t.module())),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("can RSA ") && r.stdout.contains("EC "),
        "{}",
        r.stdout
    );
}

/// `gencert -renewca` on each back-end: a new certificate for the same key replaces the
/// token's one (exactly one certificate object afterwards, holding the new certificate), and a
/// leaf issued under the old certificate verifies under the new one. A back-end that keeps
/// certificate labels read-only takes the create-then-remove path, which it says in a warning.
#[test]
fn renewca_replaces_the_certificate_and_old_leaves_verify() {
    use crate::lifecycle::{cert_objects, openssl_verifies, token_cert};
    let t = ca("ecdsa", 256);
    t.write(
        "node.json",
        r#"{"CN":"node","hosts":["node.example"],"key":{"algo":"ecdsa","size":256}}"#,
    );
    let g = t.run(&with_ca("gencert", &["node.json"]));
    g.ok();
    t.run_in(&["json", "-bare", "node"], g.stdout.as_bytes())
        .ok();
    let before = t.object_count();
    let r = without_module_log(
        &t,
        &t.run(&[
            "gencert",
            "-renewca",
            "-ca",
            "ca.pem",
            "-ca-key",
            "ca-key.uri",
        ]),
    );
    r.ok();
    t.run_in(&["json", "-bare", "new"], r.stdout.as_bytes())
        .ok();
    if t.backend() == Backend::Piv {
        // A PIV slot's one certificate is written only with the management key: the card is
        // left as it was and the warning says how to import the renewed certificate.
        assert!(
            r.stderr
                .contains("yubico-piv-tool -a import-certificate -s 9c"),
            "{}",
            r.stderr
        );
        assert_eq!(t.object_count(), before);
        openssl_verifies(&t, "new.pem", None, "node.pem", true);
        return;
    }
    let labels = cert_objects(&t);
    assert_eq!(
        labels.len(),
        1,
        "one certificate on {}: {labels:?}",
        t.backend().name()
    );
    let new = std::fs::read_to_string(t.path("new.pem")).unwrap();
    let new_der = <x509_cert::Certificate as der::DecodePem>::from_pem(new.as_bytes()).unwrap();
    assert_eq!(
        token_cert(&t, &labels[0]),
        der::Encode::to_der(&new_der).unwrap(),
        "the token holds the renewed certificate on {}",
        t.backend().name()
    );
    assert_eq!(t.object_count(), before);
    openssl_verifies(&t, "new.pem", None, "node.pem", true);
}

/// The three CA keys are in the token (by label), no CA key file is on disk, and each leaf
/// of kubeadm's table verifies under its CA.
fn three_keyless_cas_sign_the_leaves(t: &Token) {
    crate::kubeadm::three_ca_keys_in_the_token(t);
    for (leaf, ca) in [
        ("apiserver", "ca"),
        ("apiserver-kubelet-client", "ca"),
        ("front-proxy-client", "front-proxy-ca"),
        ("etcd/server", "etcd/ca"),
        ("etcd/peer", "etcd/ca"),
        ("etcd/healthcheck-client", "etcd/ca"),
        ("apiserver-etcd-client", "etcd/ca"),
    ] {
        let v = sh(t.command("openssl").args([
            "verify",
            "-CAfile",
            &format!("pki/{ca}.crt"),
            &format!("pki/{leaf}.crt"),
        ]));
        assert!(v.contains(": OK"), "{leaf}: {v}");
        assert!(!t.path(&format!("pki/{ca}.key")).exists());
    }
}

/// `kubeadm certs` and `kubeadm kubeconfig` on this back-end: the three CA keys generated in
/// the token (in the TPM with P11CA_TEST_BACKEND=tpm), every leaf verified by OpenSSL under its
/// CA, and a second run finding the CAs again.
#[test]
fn kubeadm_pki_with_all_three_ca_keys_in_the_token() {
    require("openssl");
    let t = Token::new("k8s");
    if not_on_piv(
        t.backend(),
        "kubeadm certs: its three CA keys need PIV slots and the management key, which kubeadm certs does not take (docs/kubernetes.md)",
    ) {
        return;
    }
    t.write("kubeadm.yaml", &crate::kubeadm::config("ECDSA-P256"));
    let before = t.object_count();
    let certs = crate::kubeadm::CERTS;
    t.run(&certs).ok();
    assert_eq!(
        t.object_count(),
        before + 9,
        "three key pairs and certificates"
    );
    three_keyless_cas_sign_the_leaves(&t);
    let again = t.run(&certs);
    again.ok();
    assert_eq!(
        again
            .stdout
            .matches("keyless certificate authority")
            .count(),
        3,
        "{}",
        again.stdout
    );
    assert_eq!(t.object_count(), before + 9);
    t.run(&[
        "kubeadm",
        "kubeconfig",
        "--config",
        "kubeadm.yaml",
        "--cert-dir",
        "pki",
        "--kubeconfig-dir",
        "kc",
    ])
    .ok();
    assert!(
        t.read("kc/admin.conf")
            .contains("client-certificate-data: ")
    );
}

#[test]
fn revoke_and_a_crl_from_the_store_signed_by_this_token() {
    use p11ca::db::{CertRecord, DbConfig, Store};
    let t = ca("rsa", 2048);
    let mut store = Store::open(&DbConfig::Sqlite(t.path("certs.db"))).unwrap();
    for n in ["revoked", "kept"] {
        t.write(
            &format!("{n}.json"),
            &format!(
                r#"{{"CN":"{n}","hosts":["{n}.example"],"key":{{"algo":"ecdsa","size":256}}}}"#
            ),
        );
        let g = t.run(&with_ca("gencert", &[&format!("{n}.json")]));
        t.run_in(&["json", "-bare", n], g.ok().stdout.as_bytes())
            .ok();
        let der = p11ca::x509::pem::read_der(
            t.read(&format!("{n}.pem")).as_bytes(),
            n,
            &["CERTIFICATE"],
            "c",
        )
        .unwrap();
        store
            .insert(&[&CertRecord::from_der(&der, PROFILE, "test", "").unwrap()])
            .unwrap();
    }
    drop(store);
    t.run(&[
        "revoke",
        "--db",
        "certs.db",
        "revoked.pem",
        "-reason",
        "keyCompromise",
    ])
    .ok();
    t.run(&[
        "crl",
        "--db",
        "certs.db",
        "-ca",
        "ca.pem",
        "-ca-key",
        "ca-key.uri",
        "-out",
        "crl.pem",
    ])
    .ok();
    let check = run(
        t.command("openssl")
            .args(["crl", "-in", "crl.pem", "-CAfile", "ca.pem", "-noout"]),
        None,
    );
    assert!(
        check.stderr.contains("verify OK"),
        "on {}: {}",
        t.backend().name(),
        check.stderr
    );
    crate::crl::only_revoked_is_refused(&t);
}

/// `p11ca serve` on this back-end: keep-alive clients (p11ca's own, three at once), whose
/// answers the store's writer writes once each certificate is committed, and a client that
/// closes after its request, answered by its own thread. Every certificate is verified by
/// OpenSSL and found in the store, once. Where the token gives one session (a PIV card through
/// ykcs11, p11-kit's server) one signing thread signs everything and the pool has no spare
/// session; on a PIV card every signature needs the PIN again (slot 9c), which serve keeps.
#[test]
fn serve_answers_every_client_and_records_every_certificate() {
    let t = ca("ecdsa", 256);
    openssl_csr(
        &t,
        &["ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "node.example",
        "node.csr",
    );
    let csr = t.read("node.csr");
    let port = free_port();
    let p = port.to_string();
    // serve_args names server-config.json: the seed's config under that name.
    t.write("server-config.json", &t.read("ca-config.json"));
    let args = serve_args(&p, &[]);
    let _srv = start(&t, "serve", "p11ca", &args, port, true);
    let received = Mutex::new(Vec::new());
    let server = [format!("127.0.0.1:{port}")];
    let errors = load(
        &server,
        &csr,
        PROFILE,
        3,
        4,
        &AtomicBool::new(false),
        &received,
    );
    assert!(errors.is_empty(), "{errors:?}");
    let body = serde_json::json!({"certificate_request": csr, "profile": PROFILE});
    let (status, text) = http(
        port,
        "POST",
        "/api/v1/cfssl/sign",
        body.to_string().as_bytes(),
    )
    .expect("an answer");
    assert_eq!(status, 200, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut pems = received.into_inner().unwrap();
    pems.push(
        answer["result"]["certificate"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    assert_eq!(pems.len(), 13);
    let mut answered = BTreeSet::new();
    for (i, pem) in pems.iter().enumerate() {
        let file = format!("node{i}.pem");
        t.write(&file, pem);
        verifies(&t, &file);
        let hex = serial(&t, &file);
        let hex = hex
            .trim()
            .trim_start_matches("serial=")
            .trim_start_matches('0');
        answered.insert(hex.to_uppercase());
    }
    let recorded: BTreeSet<String> = records(&t)
        .iter()
        .map(|r| r.serial_hex.trim_start_matches('0').to_uppercase())
        .collect();
    assert_eq!(answered.len(), 13, "serials are distinct");
    assert_eq!(recorded, answered, "every answer recorded, nothing else");
    // One session where the token gives one (ykcs11; p11-kit's server, docs/tokens.md).
    let one = matches!(t.backend(), Backend::Piv | Backend::P11Kit);
    let sessions = if one {
        "1 signing session,"
    } else {
        "signing sessions,"
    };
    let log = t.read("serve.err");
    assert!(log.contains(sessions), "{log}");
}
