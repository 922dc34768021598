//! A CA for its whole life: `gencert -renewca` (same key, new certificate, the token's
//! certificate object swapped), intermediates' certificates imported into the token, chains
//! and bundles, rotation with cross-signing, and keys retired. Judged by OpenSSL, GnuTLS's
//! certtool, Go's crypto/x509 (through `cfssl bundle`, which verifies the chain it builds) and
//! pkcs11-tool for what the token holds.

use der::{DecodePem, Encode};
use x509_cert::Certificate;

use crate::util::{PIN, Run, Token, ca_args, require, run, sh};

/// A node certificate `NAME.pem` (P-256, CN=NAME) issued by the seed CA in the work dir.
pub(crate) fn leaf(t: &Token, name: &str) {
    let json = format!(
        r#"{{"CN":"{name}","hosts":["{name}.example"],"key":{{"algo":"ecdsa","size":256}}}}"#
    );
    t.write(&format!("{name}.json"), &json);
    let file = format!("{name}.json");
    let g = t.run(&ca_args("gencert", &[&file]));
    g.ok();
    t.run_in(&["json", "-bare", name], g.stdout.as_bytes()).ok();
}

pub(crate) fn cert(t: &Token, file: &str) -> Certificate {
    Certificate::from_pem(t.read(file).as_bytes()).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn der_of(t: &Token, file: &str) -> Vec<u8> {
    cert(t, file).to_der().unwrap()
}

/// The certificate objects in the token, as pkcs11-tool lists them (label lines).
pub(crate) fn cert_objects(t: &Token) -> Vec<String> {
    let out = sh(t.command("pkcs11-tool").args([
        "--module",
        t.module(),
        "--token-label",
        &t.label,
        "--login",
        "--pin",
        PIN,
        "--list-objects",
        "--type",
        "cert",
    ]));
    out.split("Certificate Object")
        .skip(1)
        .map(|o| {
            o.lines()
                .find_map(|l| l.trim().strip_prefix("label:"))
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .collect()
}

/// The DER of the one certificate object labelled `label`, read by pkcs11-tool.
pub(crate) fn token_cert(t: &Token, label: &str) -> Vec<u8> {
    let out = t.path("token-cert.der");
    sh(t.command("pkcs11-tool").args([
        "--module",
        t.module(),
        "--token-label",
        &t.label,
        "--login",
        "--pin",
        PIN,
        "--read-object",
        "--type",
        "cert",
        "--label",
        label,
        "--output-file",
        out.to_str().unwrap(),
    ]));
    std::fs::read(out).unwrap()
}

/// `openssl verify -CAfile CA [-untrusted U] FILE` succeeds (or, with `ok` false, fails).
#[track_caller]
pub(crate) fn openssl_verifies(t: &Token, ca: &str, untrusted: Option<&str>, file: &str, ok: bool) {
    let mut args = vec!["verify", "-CAfile", ca];
    if let Some(u) = untrusted {
        args.extend(["-untrusted", u]);
    }
    args.push(file);
    let r = run(t.command("openssl").args(&args), None);
    assert_eq!(
        r.code == 0 && r.stdout.contains(": OK"),
        ok,
        "openssl {args:?}: {}{}",
        r.stdout,
        r.stderr
    );
}

/// GnuTLS: `certtool --verify` of `file` (with its chain appended) against `ca`.
#[track_caller]
pub(crate) fn gnutls_verifies(t: &Token, ca: &str, file: &str, ok: bool) {
    require("certtool");
    let r = run(
        t.command("certtool")
            .args(["--verify", "--load-ca-certificate", ca, "--infile", file]),
        None,
    );
    let good = r.code == 0 && r.stdout.contains("Chain verification output: Verified.");
    assert_eq!(
        good, ok,
        "certtool on {file} with {ca}: {}{}",
        r.stdout, r.stderr
    );
}

/// Go's crypto/x509: `cfssl bundle` verifies the chain it builds from `file` to a root in
/// `ca` (with intermediates from `int`), and prints it; `ok` false: it refuses.
#[track_caller]
pub(crate) fn go_verifies(t: &Token, ca: &str, int: Option<&str>, file: &str, ok: bool) {
    require("cfssl");
    let mut args = vec!["bundle", "-ca-bundle", ca, "-cert", file];
    if let Some(i) = int {
        args.extend(["-int-bundle", i]);
    }
    let r = run(t.command("cfssl").args(&args), None);
    let good = r.code == 0 && r.stdout.starts_with("{\"bundle\":");
    assert_eq!(good, ok, "cfssl {args:?}: {}{}", r.stdout, r.stderr);
}

const CA_LABEL: &str = "mosquitood-k8s";

/// Renew the seed CA into `NAME.pem`; returns the gencert run.
fn renew(t: &Token, name: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "gencert",
        "-renewca",
        "-ca",
        "ca.pem",
        "-ca-key",
        "ca-key.uri",
    ];
    args.extend_from_slice(extra);
    let g = t.run(&args);
    g.ok();
    t.run_in(&["json", "-bare", name], g.stdout.as_bytes()).ok();
    g
}

#[test]
fn renewca_keeps_the_key_and_old_leaves_verify_under_the_new_ca() {
    require("openssl");
    let t = Token::new("k8s");
    t.seed_ca();
    leaf(&t, "node1");
    let objects = t.object_count();
    let g = renew(&t, "new", &[]);
    let v: serde_json::Value = serde_json::from_str(&g.stdout).unwrap();
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["cert", "csr", "key_uri"], "printed like -initca");
    assert_eq!(v["key_uri"].as_str().unwrap(), t.read("ca-key.uri").trim());

    let (old, new) = (cert(&t, "ca.pem"), cert(&t, "new.pem"));
    let (o, n) = (old.tbs_certificate(), new.tbs_certificate());
    assert_ne!(o.serial_number(), n.serial_number(), "a new serial");
    assert_eq!(o.subject(), n.subject());
    assert_eq!(n.issuer(), n.subject(), "still a root");
    assert_eq!(
        o.subject_public_key_info().to_der().unwrap(),
        n.subject_public_key_info().to_der().unwrap()
    );
    assert_eq!(
        o.extensions(),
        n.extensions(),
        "same SKI, key usage, constraints"
    );
    let life = |c: &x509_cert::TbsCertificate| {
        c.validity().not_after.to_unix_duration().as_secs()
            - c.validity().not_before.to_unix_duration().as_secs()
    };
    assert_eq!(
        life(n),
        life(o),
        "the old lifetime when no ca.expiry is given"
    );
    // The CSR is for the same key and verifies.
    let r = run(
        t.command("openssl")
            .args(["req", "-verify", "-noout", "-in", "new.csr"]),
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);

    // Exactly one certificate for the key in the token, and it is the new one.
    assert_eq!(cert_objects(&t), [CA_LABEL]);
    assert_eq!(token_cert(&t, CA_LABEL), der_of(&t, "new.pem"));
    assert_eq!(t.object_count(), objects, "nothing added, nothing lost");

    // The leaf issued under the old CA certificate verifies under the new one, by three
    // independent verifiers; a stranger CA is refused by each (the checks can fail).
    openssl_verifies(&t, "new.pem", None, "node1.pem", true);
    gnutls_verifies(&t, "new.pem", "node1.pem", true);
    go_verifies(&t, "new.pem", None, "node1.pem", true);
    t.write(
        "stranger.json",
        &crate::util::ca_csr("ecdsa", 256).replace("mosquitood-k8s", "stranger"),
    );
    t.initca("stranger.json", "stranger");
    openssl_verifies(&t, "stranger.pem", None, "node1.pem", false);
    gnutls_verifies(&t, "stranger.pem", "node1.pem", false);
    go_verifies(&t, "stranger.pem", None, "node1.pem", false);

    // Leaves of the renewed CA verify under the old certificate too (same name, same key),
    // so clients that still trust the old one accept them.
    std::fs::copy(t.path("ca.pem"), t.path("old.pem")).unwrap();
    std::fs::copy(t.path("new.pem"), t.path("ca.pem")).unwrap();
    leaf(&t, "node2");
    openssl_verifies(&t, "old.pem", None, "node2.pem", true);
    go_verifies(&t, "old.pem", None, "node2.pem", true);
}

#[test]
fn renewca_takes_ca_expiry_from_the_csr_json() {
    let t = Token::new("k8s");
    t.seed_ca();
    t.write(
        "renew.json",
        r#"{"CN":"mosquitood-k8s","ca":{"expiry":"87600h"}}"#,
    );
    // The seed subject has more than a CN: this CSR JSON's subject differs and is refused.
    let r = t.run(&[
        "gencert",
        "-renewca",
        "-ca",
        "ca.pem",
        "-ca-key",
        "ca-key.uri",
        "renew.json",
    ]);
    r.fails(3, "renew.json: its subject");
    assert_eq!(
        token_cert(&t, CA_LABEL),
        der_of(&t, "ca.pem"),
        "refused: token unchanged"
    );
    // Only ca.expiry (no subject): the old subject, the new lifetime.
    t.write("expiry.json", r#"{"ca":{"expiry":"87600h"}}"#);
    renew(&t, "new", &["expiry.json"]);
    let n = cert(&t, "new.pem");
    let v = n.tbs_certificate().validity();
    assert_eq!(
        v.not_after.to_unix_duration().as_secs() - v.not_before.to_unix_duration().as_secs(),
        87600 * 3600
    );
    assert_eq!(
        n.tbs_certificate().subject(),
        cert(&t, "ca.pem").tbs_certificate().subject()
    );
    // An explicit flag takes the new subject, with a warning.
    let g = renew(&t, "renamed", &["--allow-subject-change", "renew.json"]);
    assert!(
        g.stderr.contains("warning: the subject changes"),
        "{}",
        g.stderr
    );
    assert_eq!(
        cert(&t, "renamed.pem")
            .tbs_certificate()
            .subject()
            .to_string(),
        "CN=mosquitood-k8s"
    );
    assert_eq!(cert_objects(&t), [CA_LABEL]);
}

#[test]
fn renewca_refuses_a_foreign_certificate_and_a_leaf() {
    let t = Token::new("k8s");
    t.seed_ca();
    leaf(&t, "node1");
    t.write(
        "other.json",
        &crate::util::ca_csr("ecdsa", 256).replace("mosquitood-k8s", "other"),
    );
    t.initca("other.json", "other");
    let before = t.object_count();
    let base = |ca: &'static str| vec!["gencert", "-renewca", "-ca", ca, "-ca-key", "ca-key.uri"];
    t.run(&base("other.pem"))
        .fails(3, "other.pem does not belong to the key");
    t.run(&base("node1.pem"))
        .fails(3, "node1.pem is not a CA certificate");
    t.run(&["gencert", "-renewca", "-ca", "ca.pem"])
        .fails(1, "-ca-key is required");
    assert_eq!(t.object_count(), before);
    assert_eq!(token_cert(&t, CA_LABEL), der_of(&t, "ca.pem"));
}

/// An expired CA certificate for the token's key, made by OpenSSL through its PKCS#11 engine
/// (`openssl ca -selfsign` with fixed dates in 2020).
fn expired_ca(t: &Token) {
    std::fs::create_dir_all(t.path("oca")).unwrap();
    t.write("oca/index.txt", "");
    t.write("oca/serial", "01\n");
    t.write(
        "oca.cnf",
        "[ca]\ndefault_ca = d\n[d]\ndir = oca\ndatabase = oca/index.txt\nnew_certs_dir = oca\n\
         serial = oca/serial\ndefault_md = sha256\npolicy = p\npreserve = yes\nunique_subject = no\n\
         x509_extensions = ext\n[p]\ncommonName = supplied\n[ext]\nbasicConstraints = critical,CA:TRUE\n\
         keyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\n",
    );
    let key = format!("{};pin-value={PIN}", t.read("ca-key.uri").trim());
    let r = run(
        t.p11ca_free_command("openssl").args([
            "ca",
            "-batch",
            "-config",
            "oca.cnf",
            "-selfsign",
            "-engine",
            "pkcs11",
            "-keyform",
            "engine",
            "-keyfile",
            &key,
            "-in",
            "ca.csr",
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20210101000000Z",
            "-notext",
            "-out",
            "expired.pem",
        ]),
        None,
    );
    assert_eq!(r.code, 0, "openssl ca: {}{}", r.stdout, r.stderr);
}

impl Token {
    /// A command with this token's environment plus the module for OpenSSL's PKCS#11 engine.
    fn p11ca_free_command(&self, program: &str) -> std::process::Command {
        let mut c = self.command(program);
        c.env("PKCS11_MODULE_PATH", self.module());
        c
    }
}

#[test]
fn renewca_of_an_expired_ca_is_allowed_with_a_warning() {
    require("openssl");
    // OpenSSL's PKCS#11 engine makes the expired certificate: SoftHSM2 whatever the back-end.
    let t = Token::softhsm("k8s");
    t.seed_ca();
    expired_ca(&t);
    let g = t.run(&[
        "gencert",
        "-renewca",
        "-ca",
        "expired.pem",
        "-ca-key",
        "ca-key.uri",
    ]);
    g.ok();
    assert!(
        g.stderr.contains("warning: expired.pem expired already"),
        "{}",
        g.stderr
    );
    t.run_in(&["json", "-bare", "back"], g.stdout.as_bytes())
        .ok();
    let v = cert(&t, "back.pem");
    let v = v.tbs_certificate().validity();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        v.not_after.to_unix_duration().as_secs() > now,
        "valid again"
    );
    assert_eq!(
        v.not_after.to_unix_duration().as_secs() - v.not_before.to_unix_duration().as_secs(),
        366 * 86400,
        "the old lifetime (2020 is a leap year)"
    );
    openssl_verifies(&t, "back.pem", None, "back.pem", true);
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs --features fault-injection"
)]
fn a_failed_renewal_leaves_the_token_as_it_was() {
    let t = Token::new("k8s");
    t.seed_ca();
    let old = der_of(&t, "ca.pem");
    let objects = t.object_count();
    let args = [
        "gencert",
        "-renewca",
        "-ca",
        "ca.pem",
        "-ca-key",
        "ca-key.uri",
    ];
    for (point, needle) in [
        ("renew-before-swap", "injected fault at renew-before-swap"),
        (
            "cert-swap-after-relabel",
            "the token's certificate objects are as before",
        ),
    ] {
        let r = run(t.p11ca().env("P11CA_FAULT", point).args(args), None);
        r.fails(2, needle);
        assert_eq!(cert_objects(&t), [CA_LABEL], "after a fault at {point}");
        assert_eq!(token_cert(&t, CA_LABEL), old, "after a fault at {point}");
        assert_eq!(t.object_count(), objects);
    }
    // Killed between storing the new certificate and removing the old: the old one is still
    // there under a dated label, and the next renewal clears it.
    let r = run(
        t.p11ca()
            .env("P11CA_FAULT", "cert-swap-before-remove")
            .args(args),
        None,
    );
    assert_ne!(r.code, 0);
    assert!(r.stdout.is_empty(), "nothing printed by a killed run");
    let mut labels = cert_objects(&t);
    labels.sort();
    assert_eq!(labels.len(), 2, "{labels:?}");
    assert_eq!(labels[0], CA_LABEL);
    assert!(labels[1].starts_with("mosquitood-k8s.old-20"), "{labels:?}");
    renew(&t, "new", &[]);
    assert_eq!(cert_objects(&t), [CA_LABEL]);
    assert_eq!(token_cert(&t, CA_LABEL), der_of(&t, "new.pem"));
}

/// The seed CA's config plus an `intermediate` profile (CA, pathlen 0) and a `server` one.
const CHAIN_CONFIG: &str = r#"{"signing":{"default":{"expiry":"8760h"},"profiles":{
  "intermediate":{"usages":["cert sign","crl sign"],"expiry":"87600h",
    "ca_constraint":{"is_ca":true,"max_path_len":0,"max_path_len_zero":true}},
  "cross":{"usages":["cert sign","crl sign"],"expiry":"87600h","ca_constraint":{"is_ca":true}},
  "server":{"usages":["signing","key encipherment","server auth"],"expiry":"8760h"}}}}"#;

const INT_CSR: &str = r#"{"CN":"k8s intermediate","key":{"algo":"ecdsa","size":256},"names":[{"O":"k8s"}],"ca":{"pathlen":0,"pathlenzero":true}}"#;

/// Root (the seed CA) → intermediate `int` (its key in the token, its certificate signed by
/// the root) → `NAME` server leaf signed by the intermediate.
fn sign_with(t: &Token, ca: &str, key: &str, profile: &str, args: &[&str], out: &str) -> Run {
    let mut v = vec![
        args[0],
        "-ca",
        ca,
        "-ca-key",
        key,
        "-config",
        "chain-config.json",
        "-profile",
        profile,
    ];
    v.extend_from_slice(&args[1..]);
    let r = t.run(&v);
    r.ok();
    t.run_in(&["json", "-bare", out], r.stdout.as_bytes()).ok();
    r
}

fn server_leaf(t: &Token, name: &str) {
    t.write(
        &format!("{name}.json"),
        &format!(
            r#"{{"CN":"{name}","hosts":["{name}.example"],"key":{{"algo":"ecdsa","size":256}}}}"#
        ),
    );
    let file = format!("{name}.json");
    sign_with(
        t,
        "int.pem",
        "int-key.uri",
        "server",
        &["gencert", &file],
        name,
    );
}

#[test]
fn a_three_level_chain_with_the_parent_signed_intermediate_in_the_token() {
    require("openssl");
    let t = Token::new("k8s");
    three_levels(&t);
    server_leaf(&t, "web");
    openssl_verifies(&t, "ca.pem", Some("int.pem"), "web.pem", true);
    openssl_verifies(&t, "ca.pem", None, "web.pem", false);
    go_verifies(&t, "ca.pem", Some("int.pem"), "web.pem", true);
    let chain = format!("{}{}", t.read("web.pem"), t.read("int.pem"));
    t.write("web-chain.pem", &chain);
    gnutls_verifies(&t, "ca.pem", "web-chain.pem", true);
    gnutls_verifies(&t, "ca.pem", "web.pem", false);
}

/// The seed CA as root, and an intermediate `int` whose key is made in the token with only a
/// CSR, signed by the root and imported: int.pem, int-key.uri, chain-config.json.
fn three_levels(t: &Token) {
    t.seed_ca();
    t.write("chain-config.json", CHAIN_CONFIG);
    t.write("int-csr.json", INT_CSR);
    // The intermediate: key in the token, only its CSR printed.
    let g = t.run(&[
        "gencert",
        "-initca",
        "-csr-only",
        "--key-label",
        "int",
        "int-csr.json",
    ]);
    g.ok();
    let v: serde_json::Value = serde_json::from_str(&g.stdout).unwrap();
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["csr", "key_uri"]);
    t.run_in(&["json", "-bare", "int"], g.stdout.as_bytes())
        .ok();
    assert_eq!(
        cert_objects(t),
        [CA_LABEL],
        "no self-signed certificate for the intermediate"
    );
    // The root signs it; the clip to the root's lifetime is warned about.
    let s = sign_with(
        t,
        "ca.pem",
        "ca-key.uri",
        "intermediate",
        &["sign", "int.csr"],
        "int",
    );
    assert!(s.stderr.contains("clipped to the CA's"), "{}", s.stderr);
    let i = t.run(&["key", "import-cert", "int-key.uri", "int.pem"]);
    i.ok();
    let v: serde_json::Value = serde_json::from_str(&i.stdout).unwrap();
    assert_eq!(v["key_uri"].as_str().unwrap(), t.read("int-key.uri").trim());
    let mut labels = cert_objects(t);
    labels.sort();
    assert_eq!(labels, ["int", CA_LABEL]);
    assert_eq!(token_cert(t, "int"), der_of(t, "int.pem"));
}

#[test]
fn import_cert_replaces_the_self_signed_placeholder_and_refuses_another_key() {
    let t = Token::new("k8s");
    t.seed_ca();
    t.write("chain-config.json", CHAIN_CONFIG);
    t.write("int-csr.json", INT_CSR);
    let g = t.run(&["gencert", "-initca", "--key-label", "int", "int-csr.json"]);
    g.ok();
    t.run_in(&["json", "-bare", "int"], g.stdout.as_bytes())
        .ok();
    std::fs::rename(t.path("int.pem"), t.path("int-self.pem")).unwrap();
    assert_eq!(token_cert(&t, "int"), der_of(&t, "int-self.pem"));
    let objects = t.object_count();
    // A certificate for another key (the root's) is refused; nothing changes.
    t.run(&["key", "import-cert", "int-key.uri", "ca.pem"])
        .fails(3, "ca.pem does not belong to the key");
    t.write("junk.pem", "not a certificate\n");
    t.run(&["key", "import-cert", "int-key.uri", "junk.pem"])
        .fails(1, "junk.pem");
    assert_eq!(token_cert(&t, "int"), der_of(&t, "int-self.pem"));
    // The parent-signed one replaces the placeholder: still one certificate for the key.
    sign_with(
        &t,
        "ca.pem",
        "ca-key.uri",
        "intermediate",
        &["sign", "int.csr"],
        "int",
    );
    t.run(&["key", "import-cert", "int-key.uri", "int.pem"])
        .ok();
    let mut labels = cert_objects(&t);
    labels.sort();
    assert_eq!(labels, ["int", CA_LABEL]);
    assert_eq!(token_cert(&t, "int"), der_of(&t, "int.pem"));
    assert_eq!(t.object_count(), objects);
}

#[test]
fn key_retire_stops_signing_and_deletes_only_when_confirmed() {
    let t = Token::new("k8s");
    t.seed_ca();
    leaf(&t, "before");
    let objects = t.object_count();
    // --delete without the confirmation: refused before the token is touched.
    t.run(&["key", "retire", "ca-key.uri", "--delete"])
        .fails(1, "add --confirm-delete");
    let c = t.run(&["key", "retire", "ca-key.uri", "--confirm-delete"]);
    assert_ne!(
        c.code, 0,
        "--confirm-delete alone does nothing: {}",
        c.stdout
    );
    assert_eq!(t.object_count(), objects);
    if t.backend() == crate::util::Backend::Tpm {
        // tpm2-pkcs11 stores CKA_SIGN=false but signs all the same: p11ca finds that out with
        // a probe signature, undoes the change and says the key is not retired.
        t.run(&["key", "retire", "ca-key.uri"])
            .fails(2, "still signs with the key, so it is NOT retired");
        leaf(&t, "still");
    } else {
        retire_sign_off(&t, objects);
    }
    // Delete, confirmed: the key pair and its certificate are gone.
    let uri = t.read("ca-key.uri").trim().to_string();
    let d = t.run(&[
        "key",
        "retire",
        "ca-key.uri",
        "--delete",
        "--confirm-delete",
    ]);
    d.ok();
    assert!(d.stdout.starts_with("deleted pkcs11:"), "{}", d.stdout);
    assert_eq!(t.object_count(), objects - 3);
    assert!(cert_objects(&t).is_empty());
    t.run(&["key", "show", &uri]).fails(2, "no private key");
}

/// `key retire` without --delete: the token then refuses to sign with the key, which stays.
fn retire_sign_off(t: &Token, objects: usize) {
    let r = t.run(&["key", "retire", "ca-key.uri"]);
    r.ok();
    assert!(r.stdout.starts_with("retired pkcs11:"), "{}", r.stdout);
    let uri = t.read("ca-key.uri").trim().to_string();
    let show = t.run(&["key", "show", &uri, "--json"]);
    show.ok();
    let v: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    assert_eq!(v["attributes"]["CKA_SIGN"], serde_json::json!(false));
    t.write(
        "after.json",
        r#"{"CN":"after","key":{"algo":"ecdsa","size":256}}"#,
    );
    t.run(&ca_args("gencert", &["after.json"]))
        .fails(2, "CKA_SIGN is false");
    assert_eq!(t.object_count(), objects);
}

#[test]
fn chains_in_sign_output_json_files_and_p11ca_bundle() {
    require("cfssljson");
    let t = Token::new("k8s");
    three_levels(&t);
    t.write(
        "api.json",
        r#"{"CN":"api","hosts":["api.example"],"key":{"algo":"ecdsa","size":256}}"#,
    );
    let g = t.run(&[
        "gencert",
        "-ca",
        "int.pem",
        "-ca-key",
        "int-key.uri",
        "-config",
        "chain-config.json",
        "-profile",
        "server",
        "-ca-bundle",
        "ca.pem",
        "-int-bundle",
        "int.pem",
        "api.json",
    ]);
    g.ok();
    let v: serde_json::Value = serde_json::from_str(&g.stdout).unwrap();
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["bundle", "cert", "csr", "key", "root"]);
    t.run_in(&["json", "-bare", "api"], g.stdout.as_bytes())
        .ok();
    for f in [
        "api.pem",
        "api-bundle.pem",
        "api-root.pem",
        "api-key.pem",
        "api.csr",
    ] {
        assert!(t.path(f).exists(), "{f} written by json -bare");
    }
    assert_eq!(
        t.read("api-bundle.pem").trim(),
        format!("{}{}", t.read("api.pem"), t.read("int.pem")).trim(),
        "the certificate, then the intermediate"
    );
    assert_eq!(t.read("api-root.pem"), t.read("ca.pem"));
    openssl_verifies(&t, "api-root.pem", Some("api-bundle.pem"), "api.pem", true);
    gnutls_verifies(&t, "api-root.pem", "api-bundle.pem", true);
    // Debian's cfssljson (1.2) writes the same bundle file from p11ca's output.
    std::fs::create_dir_all(t.path("real")).unwrap();
    let r = run(
        t.command("cfssljson").args(["-bare", "real/api"]),
        Some(g.stdout.as_bytes()),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(t.read("real/api-bundle.pem"), t.read("api-bundle.pem"));

    sign_bundles_up_to_the_ca_bundle_root(&t);

    bundle_builds_the_chain_go_builds(&t);
}

/// sign -ca-bundle alone prints the chain through the issuing CA, and refuses a root that did
/// not sign it.
fn sign_bundles_up_to_the_ca_bundle_root(t: &Token) {
    // The issuing CA (-ca) counts as an intermediate: -ca-bundle alone is enough.
    let api_args = |roots: &'static str| {
        vec![
            "sign",
            "-ca",
            "int.pem",
            "-ca-key",
            "int-key.uri",
            "-config",
            "chain-config.json",
            "-profile",
            "server",
            "-ca-bundle",
            roots,
            "api.csr",
        ]
    };
    let s = t.run(&api_args("ca.pem"));
    s.ok();
    let v: serde_json::Value = serde_json::from_str(&s.stdout).unwrap();
    assert!(
        v["bundle"]
            .as_str()
            .unwrap()
            .ends_with(t.read("int.pem").trim_end())
    );
    // A root that did not sign the chain: refused before signing (no PIN is even asked for).
    t.write(
        "other.json",
        &crate::util::ca_csr("ecdsa", 256).replace("mosquitood-k8s", "other"),
    );
    t.initca("other.json", "other");
    let r = run(
        t.p11ca()
            .env_remove("P11CA_PIN")
            .args(api_args("other.pem")),
        None,
    );
    r.fails(
        3,
        "-ca-bundle: the CA certificate given with -ca: no chain from CN=k8s intermediate",
    );
}

/// p11ca bundle of api.pem gives what cfssl bundle gives, and refuses what it refuses.
fn bundle_builds_the_chain_go_builds(t: &Token) {
    // p11ca bundle builds the same chain as cfssl bundle (Go), and refuses what Go refuses.
    let b = t.run(&[
        "bundle",
        "-cert",
        "api.pem",
        "-ca-bundle",
        "ca.pem",
        "-int-bundle",
        "int.pem",
    ]);
    b.ok();
    let ours: serde_json::Value = serde_json::from_str(&b.stdout).unwrap();
    let go = sh(t.command("cfssl").args([
        "bundle",
        "-cert",
        "api.pem",
        "-ca-bundle",
        "ca.pem",
        "-int-bundle",
        "int.pem",
    ]));
    let go: serde_json::Value = serde_json::from_str(&go).unwrap();
    for k in ["bundle", "crt", "root", "expires"] {
        assert_eq!(ours[k], go[k], "field {k}");
    }
    assert_eq!(ours["hostnames"], serde_json::json!(["api", "api.example"]));
    t.run(&["bundle", "-cert", "api.pem", "-ca-bundle", "ca.pem"])
        .fails(3, "no certificate named CN=k8s intermediate");
    go_verifies(t, "ca.pem", None, "api.pem", false);
    // The certificate file may carry its intermediates, as cfssl bundle's does.
    t.run(&["bundle", "-cert", "api-bundle.pem", "-ca-bundle", "ca.pem"])
        .ok();
}

/// Sign `csr` with the CA `ca`/`key` under `profile` of chain-config.json into `out`.
fn sign_csr(t: &Token, ca: &str, key: &str, profile: &str, csr: &str, out: &str) -> Run {
    sign_with(t, ca, key, profile, &["sign", csr], out)
}

/// A P-256 server leaf `NAME` from the CA `ca`/`key`.
fn leaf_from(t: &Token, ca: &str, key: &str, name: &str) {
    t.write(
        &format!("{name}.json"),
        &format!(
            r#"{{"CN":"{name}","hosts":["{name}.example"],"key":{{"algo":"ecdsa","size":256}}}}"#
        ),
    );
    let file = format!("{name}.json");
    sign_with(t, ca, key, "server", &["gencert", &file], name);
}

/// The documented rotation (docs/lifecycle.md): a new CA key and certificate in the token, the
/// new CA cross-signed by the old and the old by the new, leaves of both generations verified
/// by clients that trust only one root, then the old key retired.
#[test]
fn rotation_to_a_new_key_with_cross_signing_both_ways() {
    require("openssl");
    let t = Token::new("k8s");
    t.seed_ca();
    t.write("chain-config.json", CHAIN_CONFIG);
    leaf_from(&t, "ca.pem", "ca-key.uri", "old-leaf");
    // 1. The new generation: its own key and root in the same token.
    t.write(
        "new-csr.json",
        &crate::util::ca_csr("ecdsa", 384).replace("mosquitood-k8s", "mosquitood-k8s 2"),
    );
    let g = t.run(&["gencert", "-initca", "--key-label", "k8s-2", "new-csr.json"]);
    g.ok();
    t.run_in(&["json", "-bare", "new"], g.stdout.as_bytes())
        .ok();
    // 2. Cross-signing both ways; the cross certificate cannot outlive its issuer (clipped,
    //    with the warning).
    let x = sign_csr(&t, "ca.pem", "ca-key.uri", "cross", "new.csr", "cross-new");
    assert!(x.stderr.contains("clipped to the CA's"), "{}", x.stderr);
    assert_eq!(
        cert(&t, "cross-new.pem")
            .tbs_certificate()
            .validity()
            .not_after,
        cert(&t, "ca.pem").tbs_certificate().validity().not_after
    );
    sign_csr(&t, "new.pem", "new-key.uri", "cross", "ca.csr", "cross-old");
    // The token still holds each root as its key's certificate.
    let mut labels = cert_objects(&t);
    labels.sort();
    assert_eq!(labels, ["k8s-2", CA_LABEL]);
    leaf_from(&t, "new.pem", "new-key.uri", "new-leaf");

    both_generations_verify_through_the_cross_certificates(&t);

    old_key_retired_and_new_key_signs(&t);
}

/// Leaves of each generation verify under the other root through its cross certificate, and
/// under a trust bundle of both roots.
fn both_generations_verify_through_the_cross_certificates(t: &Token) {
    // 3. Clients that trust only the old root accept new leaves through cross-new, and
    //    clients that trust only the new root accept old leaves through cross-old.
    openssl_verifies(t, "ca.pem", Some("cross-new.pem"), "new-leaf.pem", true);
    openssl_verifies(t, "new.pem", Some("cross-old.pem"), "old-leaf.pem", true);
    openssl_verifies(t, "ca.pem", None, "new-leaf.pem", false);
    openssl_verifies(t, "new.pem", None, "old-leaf.pem", false);
    go_verifies(t, "ca.pem", Some("cross-new.pem"), "new-leaf.pem", true);
    go_verifies(t, "new.pem", Some("cross-old.pem"), "old-leaf.pem", true);
    let chain = format!("{}{}", t.read("new-leaf.pem"), t.read("cross-new.pem"));
    t.write("new-leaf-chain.pem", &chain);
    gnutls_verifies(t, "ca.pem", "new-leaf-chain.pem", true);
    // p11ca bundle builds the same path, ending in the old root.
    let b = t.run(&[
        "bundle",
        "-cert",
        "new-leaf.pem",
        "-ca-bundle",
        "ca.pem",
        "-int-bundle",
        "cross-new.pem",
    ]);
    b.ok();
    let v: serde_json::Value = serde_json::from_str(&b.stdout).unwrap();
    assert_eq!(v["root"].as_str().unwrap(), t.read("ca.pem").trim_end());
    // During the overlap a trust bundle with both roots accepts both generations directly.
    t.write(
        "trust.pem",
        &format!("{}{}", t.read("ca.pem"), t.read("new.pem")),
    );
    openssl_verifies(t, "trust.pem", None, "old-leaf.pem", true);
    openssl_verifies(t, "trust.pem", None, "new-leaf.pem", true);
}

/// After `key retire` the old key signs no more, and the new one does.
fn old_key_retired_and_new_key_signs(t: &Token) {
    // 4. The old key is retired: it no longer signs, the new one does, old leaves still verify.
    t.run(&["key", "retire", "ca-key.uri"]).ok();
    t.write(
        "late.json",
        r#"{"CN":"late","hosts":["late.example"],"key":{"algo":"ecdsa","size":256}}"#,
    );
    t.run(&[
        "gencert",
        "-ca",
        "ca.pem",
        "-ca-key",
        "ca-key.uri",
        "-config",
        "chain-config.json",
        "-profile",
        "server",
        "late.json",
    ])
    .fails(2, "CKA_SIGN is false");
    leaf_from(t, "new.pem", "new-key.uri", "after");
    openssl_verifies(t, "new.pem", Some("cross-old.pem"), "old-leaf.pem", true);
}

/// Expiry watch for cron: `certs list --expiring D --check` exits 6 naming what is due, the CA
/// certificate itself included (recorded by `gencert -initca`); a certificate renewed (a later
/// one of the same subject from the same CA) or revoked no longer counts.
#[test]
fn certs_list_check_exits_6_for_leaves_and_the_ca_itself() {
    let t = Token::new("expiry");
    t.seed_ca();
    leaf(&t, "node1");
    let check = |window: &str| {
        t.run(&[
            "certs",
            "list",
            "--db",
            "p11ca-certs.db",
            "--expiring",
            window,
            "--check",
        ])
    };
    let quiet = check("720h");
    quiet.ok();
    assert_eq!(quiet.stdout.lines().count(), 1, "{}", quiet.stdout);

    // The leaf (8760h) is due within 9000h, the CA (cfssl's five years) is not.
    let leaf_due = check("9000h");
    leaf_due.fails(
        6,
        "1 certificate expires within 9000h or already did, the first CN=node1",
    );
    check("50000h").fails(6, "2 certificates expire within 50000h");
    let list = |window: &str| {
        let l = t.run(&[
            "certs",
            "list",
            "--db",
            "p11ca-certs.db",
            "--expiring",
            window,
        ]);
        l.ok();
        l.stdout.clone()
    };
    let listed = list("50000h");
    assert!(listed.contains("days left"), "{listed}");
    assert!(listed.contains("\tinitca\t"), "{listed}");
    assert!(!list("9000h").contains("\tinitca\t"));

    // Renewed, the CA's old certificate is replaced: still two due (the new CA certificate
    // and the leaf), with both CA certificates listed.
    renew(&t, "new", &[]);
    check("50000h").fails(6, "2 certificates expire within 50000h");
    let listed = list("50000h");
    assert!(listed.contains("\trenewca\t"), "{listed}");
    assert!(listed.contains("\tinitca\t"), "{listed}");

    t.run(&[
        "revoke",
        "--db",
        "p11ca-certs.db",
        "node1.pem",
        "-reason",
        "superseded",
    ])
    .ok();
    check("9000h").ok();
    t.run(&["certs", "list", "--db", "p11ca-certs.db", "--check"])
        .fails(1, "--expiring");
}

/// `certs list --expiring --check` over a store of 200,000 live certificates holds only the
/// keys of the few that are due, not one of every live certificate: its peak RSS stays below a
/// bound the former whole-store set went far past.
#[test]
fn expiry_check_over_a_large_store_keeps_memory_small() {
    use p11ca::db::{CertRecord, DbConfig, Store};
    const LIVE: usize = 200_000;
    const BOUND_MIB: u64 = 24;
    let t = Token::new("expiry-rss");
    let now = p11ca::db::now();
    let rec = |i: usize, not_after: i64| CertRecord {
        serial_number: (1_000_000 + i).to_string(),
        authority_key_identifier: "ab".repeat(20),
        serial_hex: format!("{:x}", 1_000_000 + i),
        subject: format!("CN=node-{i:06},O=system:nodes"),
        common_name: format!("node-{i:06}"),
        sans: vec![],
        profile: "kubernetes".into(),
        not_before: now - 3600,
        not_after,
        pem: "-".into(),
        requester: "test".into(),
        auth_key: String::new(),
        issued_at: now - 3600,
    };
    let mut s = Store::open(&DbConfig::Sqlite(t.path("big.db"))).unwrap();
    // One certificate due in a day and never renewed; every other one lives a year.
    s.insert(&[&rec(LIVE, now + 86_400)]).unwrap();
    for chunk in (0..LIVE).collect::<Vec<_>>().chunks(20_000) {
        let recs: Vec<CertRecord> = chunk.iter().map(|&i| rec(i, now + 365 * 86_400)).collect();
        s.insert(&recs.iter().collect::<Vec<_>>()).unwrap();
    }
    drop(s);
    let (r, kib) = t.run_peak_rss(
        &[
            "certs",
            "list",
            "--db",
            "big.db",
            "--expiring",
            "720h",
            "--check",
        ],
        None,
    );
    r.fails(
        6,
        &format!("1 certificate expires within 720h or already did, the first CN=node-{LIVE:06}"),
    );
    eprintln!(
        "peak RSS of the check over {LIVE} live certificates: {:.1} MiB",
        kib as f64 / 1024.0
    );
    assert!(
        kib / 1024 < BOUND_MIB,
        "peak RSS {kib} KiB; bound {BOUND_MIB} MiB"
    );
}
