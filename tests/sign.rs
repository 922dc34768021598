//! `gencert -ca` and `sign`: node certificates signed by the CA key in the token, checked with
//! independent tools: OpenSSL (verify, `x509 -text`, a real mutual-TLS handshake), cfssl's own
//! `cfssl-certinfo`, and OpenSC's pkcs11-tool for the token's objects.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::{Background, Run, Token, ca_args, free_port, require, run, sh, x509_text};

/// The seed's profile in tests/data/ca-config.json.
const PROFILE: &str = "mosquitood-k8s";

/// A node request with every kind of host, deliberately out of order (DNS, IP, email, URI, IPv6).
const NODE_CSR: &str = r#"{
  "CN": "node1",
  "hosts": ["10.0.0.1", "spiffe://cluster/ns/x", "admin@example.com", "node1.example.com",
            "127.0.0.1", "*.wild.example.com", "::1"],
  "key": {"algo": "rsa", "size": 2048},
  "names": [{"C": "CN", "ST": "TianJin", "L": "TianJin", "O": "system:nodes", "OU": "System"}]
}"#;

/// The SAN of `NODE_CSR` as OpenSSL prints it: grouped DNS, email, IP, URI (Go's order).
const NODE_SAN: &str = "DNS:node1.example.com, DNS:*.wild.example.com, email:admin@example.com, \
     IP Address:10.0.0.1, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, \
     URI:spiffe://cluster/ns/x";

const SEED_SUBJECT: &str =
    "C = CN, ST = TianJin, L = TianJin, O = k8s, OU = System, CN = mosquitood-k8s";

/// Run p11ca `args` (asserting success) and pipe its stdout into `json -bare NAME`.
#[track_caller]
fn issue(t: &Token, args: &[&str], name: &str) -> Run {
    let r = t.run(args);
    r.ok();
    t.run_in(&["json", "-bare", name], r.stdout.as_bytes()).ok();
    r
}

fn openssl(t: &Token, args: &[&str]) -> String {
    sh(t.command("openssl").args(args))
}

/// `openssl verify` with `args`; asserts `LEAF: OK`.
#[track_caller]
fn verify_ok(t: &Token, args: &[&str]) {
    let leaf = args.last().unwrap();
    let mut all = vec!["verify"];
    all.extend_from_slice(args);
    let out = openssl(t, &all);
    assert!(out.contains(&format!("{leaf}: OK")), "{out}");
}

/// Sorted top-level keys of a JSON object.
fn json_keys(s: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"));
    v.as_object().unwrap().keys().cloned().collect()
}

/// One extension in `openssl x509 -text` output: whether it is critical and its (first) value
/// line.
#[track_caller]
fn ext(text: &str, name: &str) -> (bool, String) {
    let head = format!("X509v3 {name}:");
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if let Some(rest) = l.trim().strip_prefix(&head) {
            let value = lines.next().unwrap_or_default().trim();
            return (rest.trim() == "critical", value.to_string());
        }
    }
    panic!("no {name} extension in\n{text}");
}

/// A key identifier as printed by OpenSSL (`AB:CD:...`, maybe `keyid:`-prefixed).
fn key_id(text: &str, name: &str) -> String {
    let (_, v) = ext(text, name);
    v.trim_start_matches("keyid:").to_string()
}

fn cert(t: &Token, file: &str) -> x509_cert::Certificate {
    use der::{Decode, DecodePem};
    let bytes = std::fs::read(t.path(file)).unwrap();
    if bytes.starts_with(b"-----") {
        x509_cert::Certificate::from_pem(&bytes).unwrap()
    } else {
        x509_cert::Certificate::from_der(&bytes).unwrap()
    }
}

/// (notBefore, notAfter) in Unix seconds.
fn validity(t: &Token, file: &str) -> (u64, u64) {
    let c = cert(t, file);
    let v = c.tbs_certificate().validity();
    (
        v.not_before.to_unix_duration().as_secs(),
        v.not_after.to_unix_duration().as_secs(),
    )
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The file's public key as OpenSSL prints it (`x509 -pubkey`, `req -pubkey` or `pkey -pubout`).
fn pubkey(t: &Token, kind: &str, file: &str) -> String {
    match kind {
        "x509" => openssl(t, &["x509", "-noout", "-pubkey", "-in", file]),
        "req" => openssl(t, &["req", "-noout", "-pubkey", "-in", file]),
        _ => openssl(t, &["pkey", "-pubout", "-in", file]),
    }
}

fn mode(t: &Token, file: &str) -> u32 {
    std::fs::metadata(t.path(file))
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

/// The `p11ca: warning:` lines of a run.
fn warnings(r: &Run) -> Vec<&str> {
    r.stderr
        .lines()
        .filter(|l| l.starts_with("p11ca: warning:"))
        .collect()
}

/// Run `cmd`, assert the failure contract (`Run::fails`) and that neither the token's objects
/// nor the work dir changed.
#[track_caller]
fn refuse_cmd(t: &Token, cmd: &mut Command, code: i32, needle: &str) -> Run {
    let files = t.files();
    let objects = t.object_count();
    let r = run(cmd, None);
    r.fails(code, needle);
    assert_eq!(
        t.object_count(),
        objects,
        "token objects changed by {cmd:?}"
    );
    assert_eq!(t.files(), files, "files written by {cmd:?}");
    r
}

#[track_caller]
fn refuse(t: &Token, args: &[&str], code: i32, needle: &str) -> Run {
    refuse_cmd(t, t.p11ca().args(args), code, needle)
}

/// An OpenSSL-made RSA-2048 CSR (`NAME.csr`, key `NAME-key.pem`).
fn openssl_csr(t: &Token, name: &str, subj: &str, addext: &[&str]) {
    let key = format!("{name}-key.pem");
    let csr = format!("{name}.csr");
    let mut args = vec![
        "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj",
        subj,
    ];
    for e in addext {
        args.extend_from_slice(&["-addext", e]);
    }
    openssl(t, &args);
}

// 1. The seed flow ------------------------------------------------------------------------------

#[test]
fn seed_flow_gencert_node_certificate() {
    let t = Token::new("k8s");
    t.seed_ca();
    t.write("node-csr.json", NODE_CSR);
    assert_eq!(t.object_count(), 3);
    let g = issue(&t, &ca_args("gencert", &["node-csr.json"]), "node");

    gencert_prints_the_node_and_writes_its_files(&t, &g);
    store_lists_the_ca_and_the_node(&t);
    assert_eq!(mode(&t, "node-key.pem"), 0o600, "node key is 0600");
    assert_eq!(mode(&t, "node.pem"), 0o644);

    verify_ok(&t, &["-CAfile", "ca.pem", "node.pem"]);
    let r = run(
        t.command("openssl")
            .args(["req", "-verify", "-noout", "-in", "node.csr"]),
        None,
    );
    assert!(
        format!("{}{}", r.stdout, r.stderr).contains("verify OK"),
        "{r:?}"
    );

    node_certificate_has_the_profile_s_fields(&t);
    node_issuer_serial_and_validity_are_right(&t);

    // The key file is the certificate's key.
    assert_eq!(
        pubkey(&t, "x509", "node.pem"),
        pubkey(&t, "pkey", "node-key.pem")
    );
    assert_eq!(
        pubkey(&t, "req", "node.csr"),
        pubkey(&t, "pkey", "node-key.pem")
    );
    assert!(t.read("node-key.pem").contains("PRIVATE KEY"));

    // Signing created nothing in the token.
    assert_eq!(t.object_count(), 3);
}

/// gencert's stdout is cfssl's JSON with no warning, and json -bare wrote the node's files.
fn gencert_prints_the_node_and_writes_its_files(t: &Token, g: &Run) {
    // stdout: cfssl's {"cert","csr","key"}, with the node's software key.
    assert_eq!(json_keys(&g.stdout), ["cert", "csr", "key"]);
    assert!(g.stdout.ends_with("}\n"));
    assert!(
        warnings(g).is_empty(),
        "no warning for an RSA node: {}",
        g.stderr
    );
    assert_eq!(
        t.files(),
        [
            "ca-config.json",
            "ca-csr.json",
            "ca-key.uri",
            "ca.csr",
            "ca.pem",
            "node-csr.json",
            "node-key.pem",
            "node.csr",
            "node.pem",
            "p11ca-certs.db"
        ]
    );
}

/// The store next to -config holds the CA's and the node's certificates.
fn store_lists_the_ca_and_the_node(t: &Token) {
    // Both certificates are in the store (next to -config), recorded for this user and host.
    let listed = t.run(&["certs", "list", "--json", "--config", "ca-config.json"]);
    let v: serde_json::Value = serde_json::from_str(&listed.ok().stdout).unwrap();
    let pems: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["pem"].as_str().unwrap())
        .collect();
    assert_eq!(pems.len(), 2, "{v}");
    assert!(pems.contains(&t.read("ca.pem").as_str()), "{v}");
    assert!(pems.contains(&t.read("node.pem").as_str()), "{v}");
    for r in v.as_array().unwrap() {
        assert!(r["requester"].as_str().unwrap().starts_with("cli:"), "{r}");
    }
}

/// node.pem has the CA as issuer, the node's subject, the profile's extensions and key ids.
fn node_certificate_has_the_profile_s_fields(t: &Token) {
    let text = x509_text(t, "node.pem");
    let ca_text = x509_text(t, "ca.pem");
    for want in [
        "Version: 3 (0x2)",
        "Signature Algorithm: sha256WithRSAEncryption",
        &format!("Issuer: {SEED_SUBJECT}"),
        "Subject: C = CN, ST = TianJin, L = TianJin, O = system:nodes, OU = System, CN = node1",
        "Public-Key: (2048 bit)",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert_eq!(
        ext(&text, "Key Usage"),
        (true, "Digital Signature, Key Encipherment".into())
    );
    assert_eq!(
        ext(&text, "Extended Key Usage"),
        (
            false,
            "TLS Web Server Authentication, TLS Web Client Authentication".into()
        )
    );
    assert_eq!(ext(&text, "Basic Constraints"), (true, "CA:FALSE".into()));
    assert_eq!(
        ext(&text, "Subject Alternative Name"),
        (false, NODE_SAN.into())
    );
    let ski = key_id(&text, "Subject Key Identifier");
    assert_eq!(ski.len(), 20 * 3 - 1, "SHA-1 SKI: {ski}");
    assert_eq!(
        key_id(&text, "Authority Key Identifier"),
        key_id(&ca_text, "Subject Key Identifier"),
        "AKI of the node = SKI of the CA"
    );
    assert_ne!(ski, key_id(&ca_text, "Subject Key Identifier"));
}

/// node.pem's issuer is the CA's subject byte for byte; its serial and validity are right.
fn node_issuer_serial_and_validity_are_right(t: &Token) {
    // Issuer is the CA's subject, byte for byte.
    use der::Encode;
    let (node, ca) = (cert(t, "node.pem"), cert(t, "ca.pem"));
    assert_eq!(
        node.tbs_certificate().issuer().to_der().unwrap(),
        ca.tbs_certificate().subject().to_der().unwrap()
    );
    let serial = node.tbs_certificate().serial_number().as_bytes();
    assert!(
        serial.len() <= 20 && serial[0] & 0x80 == 0,
        "positive ≤20-octet serial"
    );

    // Validity: 8760h from now − 5 min (rounded to the minute).
    let (nb, na) = validity(t, "node.pem");
    assert_eq!(na - nb, 8760 * 3600, "profile expiry 8760h");
    assert_eq!(nb % 60, 0);
    assert!(nb <= now() - 4 * 60 && nb >= now() - 6 * 60, "backdate 5m");
}

#[test]
fn ecdsa_node_key_drops_key_encipherment_with_a_warning() {
    let t = Token::new("k8s");
    t.seed_ca();
    t.write(
        "ec-csr.json",
        r#"{"CN":"ecnode","hosts":["ec.example.com"],"key":{"algo":"ecdsa","size":256}}"#,
    );
    let g = issue(&t, &ca_args("gencert", &["ec-csr.json"]), "ec");
    let w = warnings(&g);
    assert_eq!(w.len(), 1, "{}", g.stderr);
    assert!(
        w[0].contains("RFC 8813") && w[0].contains(PROFILE),
        "{}",
        w[0]
    );
    verify_ok(&t, &["-CAfile", "ca.pem", "ec.pem"]);
    let text = x509_text(&t, "ec.pem");
    assert_eq!(ext(&text, "Key Usage"), (true, "Digital Signature".into()));
    assert!(!text.contains("Key Encipherment"), "{text}");
    assert_eq!(
        ext(&text, "Extended Key Usage").1,
        "TLS Web Server Authentication, TLS Web Client Authentication"
    );
    assert!(text.contains("ASN1 OID: prime256v1"), "{text}");
    // The signature is the CA's (RSA), whatever the node key.
    assert!(text.contains("Signature Algorithm: sha256WithRSAEncryption"));
    assert_eq!(mode(&t, "ec-key.pem"), 0o600);
    assert_eq!(
        pubkey(&t, "x509", "ec.pem"),
        pubkey(&t, "pkey", "ec-key.pem")
    );
}

#[test]
fn gencert_hostname_and_cn_flags_replace_the_request() {
    let t = Token::new("k8s");
    t.seed_ca();
    t.write("node-csr.json", NODE_CSR);
    issue(
        &t,
        &ca_args(
            "gencert",
            &[
                "-hostname",
                "h1.example.com,10.9.9.9",
                "-cn",
                "renamed",
                "node-csr.json",
            ],
        ),
        "node",
    );
    verify_ok(&t, &["-CAfile", "ca.pem", "node.pem"]);
    let text = x509_text(&t, "node.pem");
    assert!(
        text.contains("Subject: C = CN, ST = TianJin, L = TianJin, O = system:nodes, OU = System, CN = renamed"),
        "{text}"
    );
    assert_eq!(
        ext(&text, "Subject Alternative Name").1,
        "DNS:h1.example.com, IP Address:10.9.9.9"
    );
    // As in cfssl, -hostname also goes into the node's CSR.
    let csr = openssl(&t, &["req", "-noout", "-text", "-in", "node.csr"]);
    assert!(
        csr.contains("DNS:h1.example.com, IP Address:10.9.9.9"),
        "{csr}"
    );
    assert!(csr.contains("CN = renamed"), "{csr}");

    // No hosts at all: cfssl's warning, and a certificate without SAN.
    t.write(
        "nohosts.json",
        r#"{"CN":"client","key":{"algo":"rsa","size":2048}}"#,
    );
    let g = issue(&t, &ca_args("gencert", &["nohosts.json"]), "client");
    assert!(
        warnings(&g)
            .iter()
            .any(|w| w.contains("lacks a \"hosts\" field")),
        "{}",
        g.stderr
    );
    assert!(!x509_text(&t, "client.pem").contains("Subject Alternative Name"));
}

// 2. sign of an OpenSSL CSR ---------------------------------------------------------------------

#[test]
fn sign_openssl_csr_subject_sans_hostname_subject_json_and_der() {
    let t = Token::new("k8s");
    t.seed_ca();
    openssl_csr(
        &t,
        "osslnode",
        "/O=acme/CN=osslnode/C=US",
        &[
            "subjectAltName=DNS:osslnode.example.com,IP:10.1.2.3,email:o@acme.test,URI:spiffe://acme/o",
        ],
    );
    let s = issue(&t, &ca_args("sign", &["osslnode.csr"]), "signed");
    assert_eq!(json_keys(&s.stdout), ["cert", "csr"], "sign prints no key");
    let v: serde_json::Value = serde_json::from_str(&s.stdout).unwrap();
    assert_eq!(v["csr"], t.read("osslnode.csr"), "csr = the input CSR");
    assert_eq!(t.read("signed.csr"), t.read("osslnode.csr"));
    assert!(!t.path("signed-key.pem").exists());
    verify_ok(&t, &["-CAfile", "ca.pem", "signed.pem"]);
    let text = x509_text(&t, "signed.pem");
    assert!(
        text.contains("Subject: C = US, O = acme, CN = osslnode"),
        "subject re-ordered to C, O, CN: {text}"
    );
    assert_eq!(
        ext(&text, "Subject Alternative Name").1,
        "DNS:osslnode.example.com, email:o@acme.test, IP Address:10.1.2.3, URI:spiffe://acme/o"
    );
    assert_eq!(
        ext(&text, "Key Usage"),
        (true, "Digital Signature, Key Encipherment".into())
    );
    assert_eq!(
        pubkey(&t, "x509", "signed.pem"),
        pubkey(&t, "req", "osslnode.csr")
    );
    assert_eq!(
        pubkey(&t, "x509", "signed.pem"),
        pubkey(&t, "pkey", "osslnode-key.pem")
    );

    hostname_replaces_the_csr_sans(&t);
    subject_json_overrides_cn_and_o(&t);
    der_csr_signs_like_the_pem_one(&t);

    // And from stdin.
    let r = t.run_in(&ca_args("sign", &["-"]), t.read("osslnode.csr").as_bytes());
    r.ok();
    assert_eq!(json_keys(&r.stdout), ["cert", "csr"]);
    assert_eq!(t.object_count(), 3);
}

/// sign -hostname puts its names in the SAN instead of the CSR's.
fn hostname_replaces_the_csr_sans(t: &Token) {
    // -hostname replaces the CSR's SANs.
    issue(
        t,
        &ca_args(
            "sign",
            &["-hostname", "other.example.com,192.168.1.1", "osslnode.csr"],
        ),
        "hn",
    );
    assert_eq!(
        ext(&x509_text(t, "hn.pem"), "Subject Alternative Name").1,
        "DNS:other.example.com, IP Address:192.168.1.1"
    );
}

/// A subject.json after the CSR overrides its CN and O; its C and SANs stay.
fn subject_json_overrides_cn_and_o(t: &Token) {
    // subject.json overrides CN and O field by field; C stays from the CSR.
    t.write(
        "subject.json",
        r#"{"CN":"override","names":[{"O":"system:nodes"}]}"#,
    );
    issue(t, &ca_args("sign", &["osslnode.csr", "subject.json"]), "ov");
    let text = x509_text(t, "ov.pem");
    assert!(
        text.contains("Subject: C = US, O = system:nodes, CN = override"),
        "{text}"
    );
    assert!(
        text.contains("DNS:osslnode.example.com"),
        "SANs kept: {text}"
    );
    verify_ok(t, &["-CAfile", "ca.pem", "ov.pem"]);
}

/// A DER CSR signs like the PEM one, and the output's csr is that request as PEM.
fn der_csr_signs_like_the_pem_one(t: &Token) {
    // A DER CSR works too; the output csr is the same request.
    openssl(
        t,
        &[
            "req",
            "-in",
            "osslnode.csr",
            "-outform",
            "DER",
            "-out",
            "osslnode.der",
        ],
    );
    let s = issue(t, &ca_args("sign", &["osslnode.der"]), "der");
    let v: serde_json::Value = serde_json::from_str(&s.stdout).unwrap();
    assert_eq!(
        v["csr"],
        t.read("osslnode.csr"),
        "DER input, same CSR out (as PEM)"
    );
    verify_ok(t, &["-CAfile", "ca.pem", "der.pem"]);
    assert!(x509_text(t, "der.pem").contains("Subject: C = US, O = acme, CN = osslnode"));
}

/// RFC 7468 §2: "Data before the encapsulation boundaries are permitted, and parsers MUST NOT
/// malfunction when processing such data." `openssl req -text` / `openssl x509 -text` write such
/// files; cfssl (Go's pem.Decode) and `p11ca certinfo` read them.
#[test]
fn sign_accepts_pem_with_explanatory_text_before_the_block() {
    let t = Token::new("k8s");
    t.seed_ca();
    openssl_csr(&t, "n", "/CN=n", &["subjectAltName=DNS:n.example.com"]);
    openssl(&t, &["req", "-in", "n.csr", "-text", "-out", "n-text.csr"]);
    openssl(
        &t,
        &["x509", "-in", "ca.pem", "-text", "-out", "ca-text.pem"],
    );
    assert!(t.read("n-text.csr").starts_with("Certificate Request:"));
    assert!(t.read("ca-text.pem").starts_with("Certificate:"));
    // certinfo already reads both.
    t.run(&["certinfo", "-csr", "n-text.csr"]).ok();
    t.run(&["certinfo", "-cert", "ca-text.pem"]).ok();

    // The CSR with text before its PEM block.
    let s = issue(&t, &ca_args("sign", &["n-text.csr"]), "a");
    let v: serde_json::Value = serde_json::from_str(&s.stdout).unwrap();
    assert!(
        v["csr"].as_str().unwrap().contains(t.read("n.csr").trim()),
        "csr is the request: {}",
        v["csr"]
    );
    verify_ok(&t, &["-CAfile", "ca.pem", "a.pem"]);

    // The CA certificate with text before its PEM block, for sign and gencert.
    let mut a = ca_args("sign", &["n.csr"]);
    a[2] = "ca-text.pem";
    issue(&t, &a, "b");
    verify_ok(&t, &["-CAfile", "ca.pem", "b.pem"]);
    t.write("node-csr.json", NODE_CSR);
    let mut a = ca_args("gencert", &["node-csr.json"]);
    a[2] = "ca-text.pem";
    issue(&t, &a, "c");
    verify_ok(&t, &["-CAfile", "ca.pem", "c.pem"]);
}

#[test]
fn ca_key_accepts_handle_file_uri_file_and_env() {
    let t = Token::new("k8s");
    t.seed_ca();
    openssl_csr(&t, "n", "/CN=n", &["subjectAltName=DNS:n.example.com"]);
    let uri = t.read("ca-key.uri");
    let by_label = "pkcs11:object=mosquitood-k8s;type=private";
    for (i, key) in [
        "ca-key.uri",
        uri.trim(),
        "file:ca-key.uri",
        "env:CA_KEY_URI",
        by_label,
    ]
    .into_iter()
    .enumerate()
    {
        let r = run(
            t.p11ca().env("CA_KEY_URI", uri.trim()).args([
                "sign",
                "--ca",
                "ca.pem",
                "--ca-key",
                key,
                "--config",
                "ca-config.json",
                "--profile",
                PROFILE,
                "n.csr",
            ]),
            None,
        );
        r.ok();
        let name = format!("n{i}");
        t.run_in(&["json", "-bare", &name], r.stdout.as_bytes())
            .ok();
        verify_ok(&t, &["-CAfile", "ca.pem", &format!("{name}.pem")]);
    }
}

// 3. A real TLS handshake -----------------------------------------------------------------------

const TLS_CONFIG: &str = r#"{"signing":{"default":{"expiry":"8760h"},"profiles":{
  "server":{"usages":["signing","key encipherment","server auth"],"expiry":"8760h"},
  "client":{"usages":["signing","key encipherment","client auth"],"expiry":"8760h"}}}}"#;

/// `openssl s_server` (mutual TLS, `-www`) on a free loopback port; returns it with its port.
fn start_tls_server(t: &Token) -> (Background, u16) {
    for _attempt in 0..3 {
        let port = free_port();
        let accept = format!("127.0.0.1:{port}");
        let mut server = t.spawn(
            "s_server",
            30,
            "openssl",
            &[
                "s_server",
                "-accept",
                &accept,
                "-cert",
                "server.pem",
                "-key",
                "server-key.pem",
                "-CAfile",
                "ca.pem",
                "-Verify",
                "1",
                "-verify_return_error",
                "-www",
            ],
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if t.read(&server.stdout).contains("ACCEPT") {
                return (server, port);
            }
            if !server.running() {
                break; // the port was taken in between: try another
            }
            assert!(
                Instant::now() < deadline,
                "s_server did not start: {}",
                t.read(&server.stderr)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("s_server could not listen on a loopback port");
}

/// One HTTP request through `openssl s_client` (bounded by `timeout 10`), presenting `cert`/`key`
/// if given and verifying the server against ca.pem, its IP and host name.
fn tls_client(t: &Token, port: u16, client: Option<(&str, &str)>) -> Run {
    let connect = format!("127.0.0.1:{port}");
    let mut args = vec![
        "10",
        "openssl",
        "s_client",
        "-connect",
        &connect,
        "-CAfile",
        "ca.pem",
        "-verify_return_error",
        "-servername",
        "localhost",
        "-verify_hostname",
        "localhost",
        "-verify_ip",
        "127.0.0.1",
        "-ign_eof",
    ];
    if let Some((c, k)) = client {
        args.extend_from_slice(&["-cert", c, "-key", k]);
    }
    run(
        t.command("timeout").args(&args),
        Some(b"GET / HTTP/1.0\r\n\r\n"),
    )
}

#[test]
fn mutual_tls_handshake_with_token_issued_certificates() {
    require("timeout");
    let t = Token::new("k8s");
    t.seed_ca();
    issue_server_client_and_foreign_client(&t);

    let (server, port) = start_tls_server(&t);

    // The good client: handshake, server verified (chain, IP and name), client accepted.
    let ok = tls_client(&t, port, Some(("client.pem", "client-key.pem")));
    assert_eq!(ok.code, 0, "s_client failed: {}\n{}", ok.stderr, ok.stdout);
    assert!(
        ok.stdout.contains("Verify return code: 0 (ok)"),
        "{}",
        ok.stdout
    );
    assert!(ok.stdout.contains("Cipher is TLS_"), "{}", ok.stdout);
    assert!(ok.stdout.contains("HTTP/1.0 200 ok"), "{}", ok.stdout);
    assert!(
        ok.stdout.contains("Client certificate")
            && ok.stdout.contains("Subject: O=system:nodes, CN=client"),
        "the server saw our client certificate: {}",
        ok.stdout
    );

    // A client certificate from the other CA is refused by the server.
    let bad = tls_client(&t, port, Some(("other-client.pem", "other-client-key.pem")));
    assert_ne!(
        bad.code, 0,
        "other CA's client was accepted: {}",
        bad.stdout
    );
    assert!(!bad.stdout.contains("HTTP/1.0 200 ok"), "{}", bad.stdout);
    assert!(bad.stderr.contains("alert"), "{}", bad.stderr);

    // No client certificate at all: refused too.
    let none = tls_client(&t, port, None);
    assert_ne!(none.code, 0);
    assert!(!none.stdout.contains("HTTP/1.0 200 ok"), "{}", none.stdout);

    let log = format!("{}{}", t.read(&server.stdout), t.read(&server.stderr));
    assert!(log.contains("verify error"), "server log: {log}");
    drop(server);
}

/// A server and a client certificate from the seed CA (tls-config.json), and a client from a
/// second CA with the same name, which OpenSSL does not verify under ca.pem.
fn issue_server_client_and_foreign_client(t: &Token) {
    t.write("tls-config.json", TLS_CONFIG);
    t.write(
        "server-csr.json",
        r#"{"CN":"server","hosts":["127.0.0.1","localhost"],"key":{"algo":"rsa","size":2048}}"#,
    );
    t.write(
        "client-csr.json",
        r#"{"CN":"client","names":[{"O":"system:nodes"}],"key":{"algo":"ecdsa","size":256}}"#,
    );
    let cfg = |ca: &'static str, key: &'static str, profile: &'static str, csr: &'static str| {
        vec![
            "gencert",
            "-ca",
            ca,
            "-ca-key",
            key,
            "-config",
            "tls-config.json",
            "-profile",
            profile,
            csr,
        ]
    };
    issue(
        t,
        &cfg("ca.pem", "ca-key.uri", "server", "server-csr.json"),
        "server",
    );
    issue(
        t,
        &cfg("ca.pem", "ca-key.uri", "client", "client-csr.json"),
        "client",
    );
    // A second CA in the same token with the very same subject name, and a client from it:
    // only the signature tells them apart.
    issue(
        t,
        &["gencert", "-initca", "--key-label", "other", "ca-csr.json"],
        "other-ca",
    );
    issue(
        t,
        &cfg(
            "other-ca.pem",
            "other-ca-key.uri",
            "client",
            "client-csr.json",
        ),
        "other-client",
    );
    assert_eq!(
        openssl(t, &["x509", "-noout", "-subject", "-in", "other-ca.pem"]),
        openssl(t, &["x509", "-noout", "-subject", "-in", "ca.pem"])
    );
    let r = run(
        t.command("openssl")
            .args(["verify", "-CAfile", "ca.pem", "other-client.pem"]),
        None,
    );
    assert_ne!(r.code, 0, "other CA's client must not verify: {r:?}");
}

// 4. A three-level chain ------------------------------------------------------------------------

#[test]
fn three_level_chain_with_both_ca_keys_in_the_token() {
    let t = Token::new("k8s");
    t.seed_ca();
    t.write(
        "chain-config.json",
        r#"{"signing":{"default":{"expiry":"8760h"},"profiles":{
          "intermediate":{"usages":["cert sign","crl sign"],"expiry":"17520h",
            "ca_constraint":{"is_ca":true,"max_path_len":0,"max_path_len_zero":true}},
          "server":{"usages":["signing","key encipherment","server auth"],"expiry":"8760h"}}}}"#,
    );
    t.write(
        "int-csr.json",
        r#"{"CN":"k8s intermediate","key":{"algo":"ecdsa","size":256},"names":[{"C":"CN","O":"k8s"}],"ca":{"expiry":"17520h"}}"#,
    );
    // The intermediate's key in the same token, under another label.
    issue(
        &t,
        &[
            "gencert",
            "-initca",
            "--key-label",
            "intermediate",
            "int-csr.json",
        ],
        "int",
    );
    assert_eq!(t.object_count(), 6);
    let int_text = root_signs_the_intermediate(&t);
    intermediate_signs_a_leaf(&t, &int_text);
    assert_eq!(t.object_count(), 6, "signing created no token objects");
}

/// The root signs int.csr into int.pem, a CA:TRUE pathlen 0 certificate below it; returns its
/// `x509 -text`.
fn root_signs_the_intermediate(t: &Token) -> String {
    let int_csr = t.read("int.csr");
    // The root signs the intermediate's CSR (which asks for CA:TRUE; the profile allows it).
    let s = issue(
        t,
        &[
            "sign",
            "-ca",
            "ca.pem",
            "-ca-key",
            "ca-key.uri",
            "-config",
            "chain-config.json",
            "-profile",
            "intermediate",
            "int.csr",
        ],
        "int",
    );
    assert!(warnings(&s).is_empty(), "{}", s.stderr);
    assert_eq!(t.read("int.csr"), int_csr);
    let int_text = x509_text(t, "int.pem");
    let ca_text = x509_text(t, "ca.pem");
    assert!(
        int_text.contains(&format!("Issuer: {SEED_SUBJECT}")),
        "{int_text}"
    );
    assert!(
        int_text.contains("Subject: C = CN, O = k8s, CN = k8s intermediate"),
        "{int_text}"
    );
    assert_eq!(
        ext(&int_text, "Basic Constraints"),
        (true, "CA:TRUE, pathlen:0".into())
    );
    assert_eq!(
        ext(&int_text, "Key Usage"),
        (true, "Certificate Sign, CRL Sign".into())
    );
    assert_eq!(
        key_id(&int_text, "Authority Key Identifier"),
        key_id(&ca_text, "Subject Key Identifier")
    );
    assert!(int_text.contains("Signature Algorithm: sha256WithRSAEncryption"));
    verify_ok(t, &["-CAfile", "ca.pem", "int.pem"]);
    int_text
}

/// The intermediate's token key signs leaf.pem, which verifies only through int.pem.
fn intermediate_signs_a_leaf(t: &Token, int_text: &str) {
    // A leaf signed by the intermediate's token key.
    t.write(
        "leaf-csr.json",
        r#"{"CN":"leaf","hosts":["leaf.example.com"],"key":{"algo":"rsa","size":2048}}"#,
    );
    issue(
        t,
        &[
            "gencert",
            "-ca",
            "int.pem",
            "-ca-key",
            "int-key.uri",
            "-config",
            "chain-config.json",
            "-profile",
            "server",
            "leaf-csr.json",
        ],
        "leaf",
    );
    verify_ok(
        t,
        &["-CAfile", "ca.pem", "-untrusted", "int.pem", "leaf.pem"],
    );
    let leaf_text = x509_text(t, "leaf.pem");
    assert!(
        leaf_text.contains("Issuer: C = CN, O = k8s, CN = k8s intermediate"),
        "{leaf_text}"
    );
    assert!(
        leaf_text.contains("Signature Algorithm: ecdsa-with-SHA256"),
        "signed by the P-256 intermediate: {leaf_text}"
    );
    assert_eq!(
        ext(&leaf_text, "Key Usage"),
        (true, "Digital Signature, Key Encipherment".into()),
        "RSA leaf keeps key encipherment under an ECDSA CA"
    );
    assert_eq!(
        key_id(&leaf_text, "Authority Key Identifier"),
        key_id(int_text, "Subject Key Identifier")
    );
    // Without the intermediate the leaf does not verify: it really hangs below it.
    let r = run(
        t.command("openssl")
            .args(["verify", "-CAfile", "ca.pem", "leaf.pem"]),
        None,
    );
    assert_ne!(r.code, 0, "{r:?}");
}

// 5. cfssl traps --------------------------------------------------------------------------------

const TRAP_CONFIG: &str = r#"{"signing":{"default":{"expiry":"8760h"},"profiles":{
  "server":{"usages":["signing","key encipherment","server auth"],"expiry":"8760h"},
  "client":{"usages":["signing","client auth"],"expiry":"8760h"},
  "empty":{"expiry":"8760h"},
  "k8s-only":{"usages":["signing","server auth"],"expiry":"8760h",
              "name_whitelist":"^(node1|.*\\.cluster\\.local)$"}}}}"#;

fn trap_args<'a>(profile: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "sign",
        "-ca",
        "ca.pem",
        "-ca-key",
        "ca-key.uri",
        "-config",
        "traps.json",
    ];
    if !profile.is_empty() {
        v.extend_from_slice(&["-profile", profile]);
    }
    v.extend_from_slice(rest);
    v
}

#[test]
fn profile_and_config_traps_are_refused() {
    let t = Token::new("k8s");
    t.seed_ca();
    t.write("traps.json", TRAP_CONFIG);
    openssl_csr(
        &t,
        "node",
        "/CN=node1",
        &["subjectAltName=DNS:node1.cluster.local"],
    );
    // The config itself is fine.
    issue(&t, &trap_args("server", &["node.csr"]), "ok");

    // cfssl silently falls back to `default` for an unknown profile.
    let r = refuse(
        &t,
        &trap_args("typo", &["node.csr"]),
        3,
        "unknown profile \"typo\"",
    );
    assert!(
        r.stderr.contains("client, empty, k8s-only, server"),
        "lists the profiles: {}",
        r.stderr
    );
    refuse(
        &t,
        &trap_args("empty", &["node.csr"]),
        3,
        "profile \"empty\" in traps.json has no usages",
    );
    // No -profile: the default has no usages either (cfssl: "no key usage available").
    let r = refuse(&t, &trap_args("", &["node.csr"]), 3, "has no usages");
    assert!(r.stderr.contains("-profile"), "{}", r.stderr);

    // name_whitelist: the CSR matches; a -hostname outside it does not.
    issue(&t, &trap_args("k8s-only", &["node.csr"]), "wl");
    refuse(
        &t,
        &trap_args("k8s-only", &["-hostname", "evil.example.com", "node.csr"]),
        3,
        "\"evil.example.com\" does not match the name_whitelist",
    );

    config_errors_name_the_file_and_field(&t);
}

/// Configs with a bad usage, a negative expiry or dates in the wrong order are refused.
fn config_errors_name_the_file_and_field(t: &Token) {
    // Config errors: exit 1, naming the file and field.
    let one = |name: &str, profile: &str| {
        t.write(
            name,
            &format!(r#"{{"signing":{{"default":{{"expiry":"8760h"}},"profiles":{{"p":{{{profile}}}}}}}}}"#),
        );
    };
    one(
        "bad-usage.json",
        r#""usages":["signing","server-auth"],"expiry":"1h""#,
    );
    one("negative.json", r#""usages":["signing"],"expiry":"-1h""#);
    one(
        "backwards.json",
        r#""usages":["signing"],"not_before":"2030-01-01T00:00:00Z","not_after":"2029-01-01T00:00:00Z""#,
    );
    let with = |cfg: &'static str| {
        vec![
            "sign",
            "-ca",
            "ca.pem",
            "-ca-key",
            "ca-key.uri",
            "-config",
            cfg,
            "-profile",
            "p",
            "node.csr",
        ]
    };
    let r = refuse(
        t,
        &with("bad-usage.json"),
        1,
        "bad-usage.json: field \"signing.profiles.p.usages[1]\": unknown usage \"server-auth\"",
    );
    assert!(
        r.stderr.contains("did you mean \"server auth\""),
        "{}",
        r.stderr
    );
    refuse(
        t,
        &with("negative.json"),
        1,
        "negative.json: field \"signing.profiles.p.expiry\": \"-1h\" is negative",
    );
    refuse(
        t,
        &with("backwards.json"),
        1,
        "backwards.json: field \"signing.profiles.p.not_after\": \"2029-01-01T00:00:00Z\" is not after not_before",
    );
}

#[test]
fn wrong_ca_certificate_or_key_is_refused() {
    let t = Token::new("k8s");
    t.seed_ca();
    t.write("traps.json", TRAP_CONFIG);
    openssl_csr(
        &t,
        "node",
        "/CN=node1",
        &["subjectAltName=DNS:node1.example.com"],
    );
    rogue_ca_certificate_is_refused(&t);

    leaf_certificate_of_a_token_key_is_not_a_ca(&t);

    // A key URI that matches no key.
    let mut a = trap_args("server", &["node.csr"]);
    a[4] = "pkcs11:token=k8s;object=nope";
    let r = refuse(
        &t,
        &a,
        2,
        "no private key in token \"k8s\" matches pkcs11:token=k8s;object=nope",
    );
    assert!(
        r.stderr.contains("object=mosquitood-k8s"),
        "lists the keys: {}",
        r.stderr
    );

    key_uri_matching_two_keys_is_refused(&t);

    // A PEM private key instead of a token key: as a path, file:, env:.
    for key in ["rogue-key.pem", "file:rogue-key.pem"] {
        let mut a = trap_args("server", &["node.csr"]);
        a[4] = key;
        refuse(&t, &a, 1, "p11ca signs only with keys in a token");
    }
    let mut a = trap_args("server", &["node.csr"]);
    a[4] = "env:CA_KEY";
    refuse_cmd(
        &t,
        t.p11ca().env("CA_KEY", t.read("rogue-key.pem")).args(&a),
        1,
        "p11ca signs only with keys in a token",
    );
    // A file that holds neither a key nor a URI.
    let mut a = trap_args("server", &["node.csr"]);
    a[4] = "ca.pem";
    refuse(&t, &a, 1, "ca.pem does not hold a pkcs11: URI");
    // The seed CA's certificate with the intermediate-style mistake: right cert, wrong key.
    let mut a = trap_args("server", &["node.csr"]);
    a[4] = "pkcs11:token=k8s;id=%01;type=private";
    refuse(&t, &a, 3, "ca.pem does not belong to the key");
}

/// A real CA certificate that is not the token key's: refused.
fn rogue_ca_certificate_is_refused(t: &Token) {
    // A real CA certificate, but not the token key's.
    openssl(
        t,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "rogue-key.pem",
            "-out",
            "rogue-ca.pem",
            "-subj",
            "/CN=rogue CA",
            "-days",
            "1",
        ],
    );
    let mut a = trap_args("server", &["node.csr"]);
    a[2] = "rogue-ca.pem";
    refuse(
        t,
        &a,
        3,
        "rogue-ca.pem does not belong to the key pkcs11:token=k8s;id=%",
    );
}

/// A token key's own certificate that is a leaf (CA:FALSE) is no CA certificate: refused.
fn leaf_certificate_of_a_token_key_is_not_a_ca(t: &Token) {
    // The right key's certificate, but not a CA: a token key certified as a leaf (CA:FALSE).
    t.write(
        "notca-csr.json",
        r#"{"CN":"not a CA","key":{"algo":"ecdsa","size":256}}"#,
    );
    issue(
        t,
        &[
            "gencert",
            "-initca",
            "--key-label",
            "notca",
            "notca-csr.json",
        ],
        "notca",
    );
    issue(t, &trap_args("server", &["notca.csr"]), "notca");
    assert_eq!(
        ext(&x509_text(t, "notca.pem"), "Basic Constraints").1,
        "CA:FALSE"
    );
    let mut a = trap_args("server", &["node.csr"]);
    a[2] = "notca.pem";
    a[4] = "notca-key.uri";
    refuse(t, &a, 3, "notca.pem is not a CA certificate");
}

/// A key URI that matches two keys is refused, naming both.
fn key_uri_matching_two_keys_is_refused(t: &Token) {
    // A URI that matches two keys (same label, made outside p11ca).
    require("pkcs11-tool");
    for id in ["01", "02"] {
        sh(t.command("pkcs11-tool").args([
            "--module",
            crate::util::MODULE,
            "--token-label",
            "k8s",
            "--login",
            "--pin",
            crate::util::PIN,
            "--keypairgen",
            "--key-type",
            "rsa:2048",
            "--label",
            "dup",
            "--id",
            id,
        ]));
    }
    assert_eq!(t.object_count(), 10, "3 seed + 3 notca + 2 dup pairs");
    let mut a = trap_args("server", &["node.csr"]);
    a[4] = "pkcs11:token=k8s;object=dup";
    let r = refuse(
        t,
        &a,
        2,
        "2 private keys in token \"k8s\" match pkcs11:token=k8s;object=dup",
    );
    assert!(
        r.stderr.contains("id=%01") && r.stderr.contains("id=%02"),
        "{}",
        r.stderr
    );
}

#[test]
fn bad_csrs_are_refused() {
    let t = Token::new("k8s");
    t.seed_ca();
    t.write("traps.json", TRAP_CONFIG);
    openssl_csr(
        &t,
        "node",
        "/O=acme/CN=osslnode",
        &["subjectAltName=DNS:node1.example.com"],
    );
    openssl(
        &t,
        &[
            "req", "-in", "node.csr", "-outform", "DER", "-out", "node.der",
        ],
    );
    // Flip one bit in the subject: the self-signature no longer verifies.
    let mut der = std::fs::read(t.path("node.der")).unwrap();
    let at = der
        .windows(8)
        .position(|w| w == b"osslnode")
        .expect("CN in the DER");
    der[at] ^= 0x01;
    std::fs::write(t.path("broken.der"), &der).unwrap();
    refuse(
        &t,
        &trap_args("server", &["broken.der"]),
        1,
        "broken.der: the CSR's self-signature does not verify",
    );
    // Not a CSR at all.
    refuse(
        &t,
        &trap_args("server", &["traps.json"]),
        1,
        "traps.json: not a PEM or DER certificate request",
    );
    refuse(
        &t,
        &trap_args("server", &["ca.pem"]),
        1,
        "ca.pem: the PEM block is \"CERTIFICATE\", expected \"CERTIFICATE REQUEST\" (this is a certificate, not a CSR)",
    );
    refuse(
        &t,
        &trap_args("server", &["missing.csr"]),
        1,
        "missing.csr: cannot read",
    );
    // A CSR asking for CA:TRUE with a non-CA profile.
    openssl_csr(
        &t,
        "wannabe",
        "/CN=wannabe",
        &["basicConstraints=critical,CA:TRUE"],
    );
    refuse(
        &t,
        &trap_args("server", &["wannabe.csr"]),
        3,
        "the request asks for a CA certificate (CA:TRUE) but profile \"server\" has no ca_constraint.is_ca",
    );
    // The unbroken DER signs fine.
    issue(&t, &trap_args("server", &["node.der"]), "node");
}

#[test]
fn gencert_request_traps_are_refused() {
    let t = Token::new("k8s");
    t.seed_ca();
    t.write(
        "with-ca.json",
        r#"{"CN":"node","hosts":["n.example.com"],"key":{"algo":"rsa","size":2048},"ca":{"expiry":"1h"}}"#,
    );
    refuse(
        &t,
        &ca_args("gencert", &["with-ca.json"]),
        1,
        "with-ca.json: the \"ca\" section is only allowed with -initca",
    );
    t.write("node-csr.json", NODE_CSR);
    refuse(
        &t,
        &ca_args("gencert", &["-hostname", "a,,b", "node-csr.json"]),
        1,
        "-hostname: entry 2 is empty",
    );
    openssl_csr(&t, "n", "/CN=n", &[]);
    refuse(
        &t,
        &ca_args("sign", &["-hostname", "a,,b", "n.csr"]),
        1,
        "-hostname: entry 2 is empty",
    );
}

#[test]
fn certificate_never_outlives_its_ca() {
    let t = Token::new("k8s");
    t.seed_ca();
    t.write(
        "short-ca.json",
        r#"{"CN":"short-lived CA","key":{"algo":"ecdsa","size":256},"ca":{"expiry":"2h"}}"#,
    );
    let g = t.run(&[
        "gencert",
        "-initca",
        "--key-label",
        "short",
        "short-ca.json",
    ]);
    g.ok();
    t.run_in(&["json", "-bare", "short"], g.stdout.as_bytes())
        .ok();
    openssl_csr(&t, "n", "/CN=n", &["subjectAltName=DNS:n.example.com"]);
    // An 8760h profile under a 2h CA (cfssl would issue a one-year certificate).
    let r = issue(
        &t,
        &[
            "sign",
            "-ca",
            "short.pem",
            "-ca-key",
            "short-key.uri",
            "-config",
            "ca-config.json",
            "-profile",
            PROFILE,
            "n.csr",
        ],
        "n",
    );
    let w = warnings(&r);
    assert_eq!(w.len(), 1, "{}", r.stderr);
    assert!(
        w[0].contains("would outlive the CA (short.pem)"),
        "{}",
        w[0]
    );
    let (_, ca_na) = validity(&t, "short.pem");
    let (nb, na) = validity(&t, "n.pem");
    assert_eq!(na, ca_na, "notAfter clipped to the CA's");
    assert!(nb < na);
    verify_ok(&t, &["-CAfile", "short.pem", "n.pem"]);
}

// 6. certinfo against cfssl-certinfo ------------------------------------------------------------

/// A cfssl key identifier (`AB:C:..`, 1.2 drops leading zeros) as bytes.
fn key_id_bytes(s: &str) -> Vec<u8> {
    if s.is_empty() {
        return Vec::new();
    }
    s.split(':')
        .map(|b| {
            assert!(
                !b.is_empty() && b.len() <= 2,
                "bad key id byte {b:?} in {s}"
            );
            u8::from_str_radix(b, 16).unwrap_or_else(|e| panic!("{e}: {s}"))
        })
        .collect()
}

/// Top-level keys of a `json.MarshalIndent(.., "", "  ")` document, in order.
fn top_level_keys(s: &str) -> Vec<String> {
    s.lines()
        .filter_map(|l| l.strip_prefix("  \""))
        .filter_map(|l| l.split('"').next())
        .map(str::to_string)
        .collect()
}

#[track_caller]
fn compare_with_cfssl_certinfo(t: &Token, file: &str) {
    let ours = t.run(&["certinfo", "-cert", file]);
    ours.ok();
    let theirs = sh(t.command("cfssl-certinfo").args(["-cert", file]));
    assert_eq!(
        top_level_keys(&ours.stdout),
        top_level_keys(&theirs),
        "key order for {file}"
    );
    let o: serde_json::Value = serde_json::from_str(&ours.stdout).unwrap();
    let c: serde_json::Value = serde_json::from_str(&theirs).unwrap();
    let (o, c) = (o.as_object().unwrap(), c.as_object().unwrap());
    assert_eq!(
        o.keys().collect::<Vec<_>>(),
        c.keys().collect::<Vec<_>>(),
        "{file}"
    );
    for (k, cv) in c {
        let ov = &o[k];
        if k == "authority_key_id" || k == "subject_key_id" {
            assert_eq!(
                key_id_bytes(ov.as_str().unwrap()),
                key_id_bytes(cv.as_str().unwrap()),
                "{file}: {k}: ours {ov}, cfssl {cv}"
            );
            // Ours are zero-padded (cfssl 1.3+).
            assert!(
                ov.as_str()
                    .unwrap()
                    .split(':')
                    .all(|b| b.len() == 2 || b.is_empty()),
                "{ov}"
            );
        } else {
            assert_eq!(ov, cv, "{file}: field {k}");
        }
    }
}

#[test]
fn certinfo_matches_cfssl_certinfo() {
    require("cfssl-certinfo");
    let t = Token::new("k8s");
    t.seed_ca();
    t.write("node-csr.json", NODE_CSR);
    issue(&t, &ca_args("gencert", &["node-csr.json"]), "node");
    // And one signed by an ECDSA CA (ECDSAWithSHA256), from an OpenSSL CSR with emailAddress.
    t.write(
        "ec-ca.json",
        r#"{"CN":"ec CA","key":{"algo":"ecdsa","size":256},"names":[{"O":"k8s"}]}"#,
    );
    let g = t.run(&["gencert", "-initca", "--key-label", "ec", "ec-ca.json"]);
    g.ok();
    t.run_in(&["json", "-bare", "ec-ca"], g.stdout.as_bytes())
        .ok();
    openssl_csr(
        &t,
        "o",
        "/C=US/O=acme/OU=a/OU=b/CN=osslnode",
        &["subjectAltName=DNS:o.example.com,IP:10.1.2.3,IP:fe80::1,email:o@acme.test"],
    );
    issue(
        &t,
        &[
            "sign",
            "-ca",
            "ec-ca.pem",
            "-ca-key",
            "ec-ca-key.uri",
            "-config",
            "ca-config.json",
            "-profile",
            PROFILE,
            "o.csr",
        ],
        "o",
    );
    for f in ["node.pem", "ca.pem", "o.pem", "ec-ca.pem"] {
        compare_with_cfssl_certinfo(&t, f);
    }
    let node: serde_json::Value =
        serde_json::from_str(&t.run(&["certinfo", "-cert", "node.pem"]).stdout).unwrap();
    assert_eq!(
        node["sans"],
        serde_json::json!([
            "node1.example.com",
            "*.wild.example.com",
            "10.0.0.1",
            "127.0.0.1",
            "::1"
        ])
    );
    assert_eq!(node["sigalg"], "SHA256WithRSA");

    // certinfo -csr: the request's own signature is checked.
    let r = t.run(&["certinfo", "-csr", "node.csr"]);
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["signature_valid"], true, "{v}");
    assert_eq!(v["subject"]["common_name"], "node1");
    assert_eq!(v["emails"], serde_json::json!(["admin@example.com"]));
    assert_eq!(v["uris"], serde_json::json!(["spiffe://cluster/ns/x"]));
    assert_eq!(v["public_key_algorithm"], "RSA");
    assert_eq!(v["pem"], t.read("node.csr"));
    // ... and reported false when it is broken.
    openssl(
        &t,
        &["req", "-in", "o.csr", "-outform", "DER", "-out", "o.der"],
    );
    let mut der = std::fs::read(t.path("o.der")).unwrap();
    let at = der.windows(8).position(|w| w == b"osslnode").unwrap();
    der[at] ^= 0x01;
    std::fs::write(t.path("broken.der"), &der).unwrap();
    let r = t.run(&["certinfo", "-csr", "broken.der"]);
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["signature_valid"], false, "{v}");
}

// 7. The CA key never leaves the token ----------------------------------------------------------

#[test]
fn ca_key_never_leaves_the_token_while_signing() {
    let t = Token::new("k8s");
    t.seed_ca();
    assert_eq!(t.object_count(), 3);
    t.write("node-csr.json", NODE_CSR);
    let g = issue(&t, &ca_args("gencert", &["node-csr.json"]), "node");
    assert_eq!(t.object_count(), 3, "gencert -ca created no token object");
    let s = issue(&t, &ca_args("sign", &["node.csr"]), "again");
    assert_eq!(t.object_count(), 3, "sign created no token object");
    assert!(!s.stdout.contains("PRIVATE KEY"));
    // The only private key on disk (or printed) is the node's own software key.
    assert_eq!(
        g.stdout.matches("PRIVATE KEY-----").count(),
        2,
        "BEGIN/END of the node key"
    );
    let with_key: Vec<String> = t
        .files()
        .into_iter()
        .filter(|f| {
            String::from_utf8_lossy(&std::fs::read(t.path(f)).unwrap()).contains("PRIVATE KEY")
        })
        .collect();
    assert_eq!(with_key, ["node-key.pem"]);
    assert_ne!(
        pubkey(&t, "pkey", "node-key.pem"),
        pubkey(&t, "x509", "ca.pem"),
        "the node key is not the CA key"
    );

    // The key is still non-extractable and the token still refuses its secret.
    let uri = t.read("ca-key.uri");
    let r = t.run(&["key", "show", &uri, "--json"]);
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    for (k, want) in [
        ("CKA_EXTRACTABLE", false),
        ("CKA_NEVER_EXTRACTABLE", true),
        ("CKA_SENSITIVE", true),
        ("CKA_ALWAYS_SENSITIVE", true),
        ("CKA_LOCAL", true),
    ] {
        assert_eq!(v["attributes"][k], serde_json::json!(want), "{k} in {v}");
    }
    assert_eq!(
        v["secret_probe"]["CKA_PRIVATE_EXPONENT"],
        "refused by the token (sensitive)"
    );
    // Only the CA's three objects: the node key never went into the token.
    let r = t.run(&["key", "list", "--json"]);
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let objs = v["objects"].as_array().unwrap();
    assert_eq!(objs.len(), 3, "{v}");
    assert!(objs.iter().all(|o| o["label"] == "mosquitood-k8s"), "{v}");
}
