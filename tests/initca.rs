//! `gencert -initca`: the CA key is born in the token and the outputs are right.

use crate::util::{Token, ca_csr, require, sh, x509_text};

/// ca.pem parsed: a positive 20-octet serial, the default 43800h validity from five minutes
/// ago (rounded to the minute), and an SKI computed by RFC 5280's method 1.
fn ca_certificate_structure(t: &Token) {
    use der::{DecodePem, Encode};
    use x509_cert::Certificate;
    let cert = Certificate::from_pem(t.read("ca.pem").as_bytes()).unwrap();
    let tbs = cert.tbs_certificate();
    let serial = tbs.serial_number().as_bytes();
    assert_eq!(serial.len(), 20, "20-octet serial");
    assert!(serial[0] & 0x80 == 0 && serial[0] != 0, "positive serial");
    let nb = tbs.validity().not_before.to_unix_duration().as_secs();
    let na = tbs.validity().not_after.to_unix_duration().as_secs();
    assert_eq!(na - nb, 43800 * 3600, "default ca.expiry 43800h");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        nb <= now - 4 * 60 && nb >= now - 6 * 60,
        "notBefore = now - 5m (rounded)"
    );
    assert_eq!(nb % 60, 0);
    // SKI = SHA-1 of the subjectPublicKey bits (RFC 5280 method 1).
    use sha1::Digest;
    let ski: x509_cert::ext::pkix::SubjectKeyIdentifier = tbs.get_extension().unwrap().unwrap().1;
    let spk = tbs.subject_public_key_info().subject_public_key.raw_bytes();
    assert_eq!(ski.0.as_bytes(), sha1::Sha1::digest(spk).as_slice());
    assert!(tbs.subject().to_der().unwrap().len() > 10);
}

#[test]
fn seed_ca_end_to_end_with_openssl() {
    require("openssl");
    let t = Token::new("k8s");
    t.seed_files(&["ca-csr.json"]);
    let g = t.initca("ca-csr.json", "ca");
    // p11ca-certs.db: the store -initca records the CA certificate in (as `serve` chooses it).
    assert_eq!(
        t.files(),
        [
            "ca-csr.json",
            "ca-key.uri",
            "ca.csr",
            "ca.pem",
            "p11ca-certs.db"
        ]
    );

    // stdout: one JSON object, keys sorted, cfssl-style.
    let v: serde_json::Value = serde_json::from_str(&g.stdout).unwrap();
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["cert", "csr", "key_uri"]);
    assert!(
        g.stdout
            .starts_with("{\"cert\":\"-----BEGIN CERTIFICATE-----\\n"),
        "{}",
        g.stdout
    );
    assert!(g.stdout.ends_with("}\n"));

    // Independent verification.
    let v = sh(t
        .command("openssl")
        .args(["verify", "-CAfile", "ca.pem", "ca.pem"]));
    assert!(v.contains("ca.pem: OK"), "{v}");
    let r = crate::util::run(
        t.command("openssl")
            .args(["req", "-verify", "-noout", "-in", "ca.csr"]),
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(format!("{}{}", r.stdout, r.stderr).contains("verify OK"));

    let text = x509_text(&t, "ca.pem");
    for want in [
        "Version: 3 (0x2)",
        "Signature Algorithm: sha256WithRSAEncryption",
        "Issuer: C = CN, ST = TianJin, L = TianJin, O = k8s, OU = System, CN = mosquitood-k8s",
        "Subject: C = CN, ST = TianJin, L = TianJin, O = k8s, OU = System, CN = mosquitood-k8s",
        "Public-Key: (2048 bit)",
        "X509v3 Key Usage: critical\n                Certificate Sign, CRL Sign",
        "X509v3 Basic Constraints: critical\n                CA:TRUE",
        "X509v3 Subject Key Identifier",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert!(
        !text.contains("Authority Key Identifier"),
        "a root carries no AKI, as in cfssl"
    );

    ca_certificate_structure(&t);

    // The handle: an RFC 7512 URI, no PIN, id percent-encoded byte by byte.
    let uri = t.read("ca-key.uri");
    assert!(uri.starts_with("pkcs11:token=k8s;id=%"), "{uri}");
    assert!(
        uri.ends_with(";object=mosquitood-k8s;type=private"),
        "{uri}"
    );
    assert!(!uri.contains("pin"), "{uri}");
    let id = uri.split("id=").nth(1).unwrap().split(';').next().unwrap();
    assert_eq!(id.len(), 16 * 3, "16 random bytes, each %xx: {id}");
}

#[test]
fn no_private_key_in_any_output() {
    let t = Token::new("k8s");
    t.seed_files(&["ca-csr.json"]);
    let g = t.initca("ca-csr.json", "ca");
    assert!(!g.stdout.contains("PRIVATE KEY"));
    for f in t.files() {
        let s = std::fs::read(t.path(&f)).unwrap();
        assert!(
            !String::from_utf8_lossy(&s).contains("PRIVATE KEY"),
            "{f} holds a private key"
        );
    }
}

#[test]
fn key_attributes_read_back_and_secret_refused() {
    // SoftHSM2's exact answers; backends::key_attributes_* checks every back-end.
    let t = Token::softhsm("k8s");
    t.seed_files(&["ca-csr.json"]);
    t.initca("ca-csr.json", "ca");
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
        assert_eq!(a[k], serde_json::json!(want), "{k} in {v}");
    }
    // The token itself refuses C_GetAttributeValue of the private exponent.
    assert_eq!(
        v["secret_probe"]["CKA_PRIVATE_EXPONENT"],
        "refused by the token (sensitive)"
    );
    assert_eq!(
        v["secret_probe"]["CKA_PRIME_1"],
        "refused by the token (sensitive)"
    );
    // The public key p11ca reports is the certificate's.
    let pem_pub = sh(t
        .command("openssl")
        .args(["x509", "-in", "ca.pem", "-noout", "-pubkey"]));
    assert_eq!(v["public_key"].as_str().unwrap().trim(), pem_pub.trim());

    // key list: key pair and certificate share ID and label.
    let r = t.run(&["key", "list", "--json"]);
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let objs = v["objects"].as_array().unwrap();
    let mut classes: Vec<&str> = objs.iter().map(|o| o["class"].as_str().unwrap()).collect();
    classes.sort();
    assert_eq!(classes, ["cert", "private", "public"]);
    assert!(
        objs.iter()
            .all(|o| o["id"] == objs[0]["id"] && o["label"] == "mosquitood-k8s")
    );
    assert_eq!(
        t.object_count(),
        3,
        "pkcs11-tool sees key pair + certificate"
    );
}

#[test]
fn certificate_stored_in_token_equals_ca_pem() {
    require("pkcs11-tool");
    let t = Token::new("k8s");
    t.seed_files(&["ca-csr.json"]);
    t.initca("ca-csr.json", "ca");
    let uri = t.read("ca-key.uri");
    let id = uri
        .split("id=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .replace('%', "");
    sh(t.command("pkcs11-tool").args([
        "--module",
        t.module(),
        "--token-label",
        "k8s",
        "--read-object",
        "--type",
        "cert",
        "--id",
        &id,
        "-o",
        "token-cert.der",
    ]));
    let from_token = std::fs::read(t.path("token-cert.der")).unwrap();
    use der::{DecodePem, Encode};
    let ours = x509_cert::Certificate::from_pem(t.read("ca.pem").as_bytes())
        .unwrap()
        .to_der()
        .unwrap();
    assert_eq!(from_token, ours);
}

fn check_algo(algo: &str, size: u32, sig: &str, key_text: &str) {
    let t = Token::new("algos");
    t.write("csr.json", &ca_csr(algo, size));
    t.initca("csr.json", "ca");
    let v = sh(t
        .command("openssl")
        .args(["verify", "-CAfile", "ca.pem", "ca.pem"]));
    assert!(v.contains("OK"));
    let r = crate::util::run(
        t.command("openssl")
            .args(["req", "-verify", "-noout", "-in", "ca.csr"]),
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let text = x509_text(&t, "ca.pem");
    assert!(
        text.contains(&format!("Signature Algorithm: {sig}")),
        "{algo}-{size}: {text}"
    );
    assert!(text.contains(key_text), "{algo}-{size}: {text}");
}

#[test]
fn rsa_3072_signs_with_sha384() {
    check_algo(
        "rsa",
        3072,
        "sha384WithRSAEncryption",
        "Public-Key: (3072 bit)",
    );
}

#[test]
fn rsa_4096_signs_with_sha512() {
    check_algo(
        "rsa",
        4096,
        "sha512WithRSAEncryption",
        "Public-Key: (4096 bit)",
    );
}

#[test]
fn ecdsa_p256() {
    check_algo("ecdsa", 256, "ecdsa-with-SHA256", "NIST CURVE: P-256");
}

#[test]
fn ecdsa_p384() {
    check_algo("ecdsa", 384, "ecdsa-with-SHA384", "NIST CURVE: P-384");
}

#[test]
fn missing_key_means_ecdsa_p256_like_cfssl() {
    let t = Token::new("k8s");
    t.write(
        "csr.json",
        r#"{"cn":"lower-case keys","NAMES":[{"c":"US","o":"Org"}]}"#,
    );
    t.initca("csr.json", "ca");
    let text = x509_text(&t, "ca.pem");
    assert!(text.contains("NIST CURVE: P-256"), "{text}");
    assert!(
        text.contains("Subject: C = US, O = Org, CN = lower-case keys"),
        "{text}"
    );
}

#[test]
fn ca_section_pathlen_expiry_backdate_hosts_crl() {
    let t = Token::new("k8s");
    t.write(
        "csr.json",
        r#"{"CN":"ca","hosts":["ca.example.com","10.0.0.1","a@b.c"],"crl_url":"http://crl.example/ca.crl",
            "ca":{"pathlen":1,"expiry":"8760h","backdate":"1h"}}"#,
    );
    let g = t.initca("csr.json", "ca");
    assert!(
        g.stderr.contains("p11ca: warning:") && g.stderr.contains("ca.example.com"),
        "{}",
        g.stderr
    );
    let text = x509_text(&t, "ca.pem");
    assert!(text.contains("CA:TRUE, pathlen:1"), "{text}");
    assert!(text.contains("IP Address:10.0.0.1"), "{text}");
    assert!(
        !text.contains("DNS:ca.example.com"),
        "DNS names are dropped from a CA cert, as cfssl"
    );
    assert!(text.contains("URI:http://crl.example/ca.crl"), "{text}");
    let csr = sh(t
        .command("openssl")
        .args(["req", "-noout", "-text", "-in", "ca.csr"]));
    assert!(
        csr.contains("DNS:ca.example.com") && csr.contains("email:a@b.c"),
        "{csr}"
    );
    assert!(csr.contains("CA:TRUE, pathlen:1"), "{csr}");
    use der::DecodePem;
    let cert = x509_cert::Certificate::from_pem(t.read("ca.pem").as_bytes()).unwrap();
    let v = cert.tbs_certificate().validity();
    let nb = v.not_before.to_unix_duration().as_secs();
    let na = v.not_after.to_unix_duration().as_secs();
    assert_eq!(na - nb, 8760 * 3600);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now - nb >= 59 * 60 && now - nb <= 61 * 60, "backdate 1h");
}

#[test]
fn key_label_and_id_flags() {
    let t = Token::new("k8s");
    t.seed_files(&["ca-csr.json"]);
    let g = t.run(&[
        "gencert",
        "-initca",
        "--key-label",
        "root 2026",
        "--key-id",
        "0a0b",
        "ca-csr.json",
    ]);
    g.ok();
    let v: serde_json::Value = serde_json::from_str(&g.stdout).unwrap();
    assert_eq!(
        v["key_uri"],
        "pkcs11:token=k8s;id=%0a%0b;object=root%202026;type=private"
    );
}

#[test]
fn duplicate_label_or_id_is_refused_and_token_unchanged() {
    let t = Token::new("k8s");
    t.seed_files(&["ca-csr.json"]);
    t.initca("ca-csr.json", "ca");
    assert_eq!(t.object_count(), 3);
    // Same CN → same default label.
    t.run(&["gencert", "-initca", "ca-csr.json"]).fails(
        3,
        "already has an object with label \"mosquitood-k8s\": pkcs11:token=k8s;id=%",
    );
    // Same ID, other label.
    t.run(&[
        "gencert",
        "-initca",
        "--key-label",
        "x",
        "--key-id",
        "0a0b",
        "ca-csr.json",
    ])
    .ok();
    t.run(&[
        "gencert",
        "-initca",
        "--key-label",
        "y",
        "--key-id",
        "0a0b",
        "ca-csr.json",
    ])
    .fails(3, "already has an object with ID 0a0b");
    assert_eq!(t.object_count(), 6);
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs --features fault-injection"
)]
fn rollback_after_a_failure_leaves_the_token_as_before() {
    let t = Token::new("k8s");
    t.seed_files(&["ca-csr.json"]);
    let before = t.object_count();
    for point in ["after-keygen", "before-store-cert", "after-store-cert"] {
        let r = crate::util::run(
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
            "objects left after a fault at {point}"
        );
    }
    // And the same label still works afterwards: nothing stale blocks it.
    t.initca("ca-csr.json", "ca");
}

#[test]
fn real_cfssljson_consumes_our_stdout() {
    require("cfssljson");
    let t = Token::new("k8s");
    t.seed_files(&["ca-csr.json"]);
    let g = t.run(&["gencert", "-initca", "ca-csr.json"]);
    g.ok();
    let r = crate::util::run(
        t.command("cfssljson").args(["-bare", "cfssl"]),
        Some(g.stdout.as_bytes()),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    t.run_in(&["json", "-bare", "ours"], g.stdout.as_bytes())
        .ok();
    assert_eq!(t.read("cfssl.pem"), t.read("ours.pem"));
    assert_eq!(t.read("cfssl.csr"), t.read("ours.csr"));
    assert!(
        !t.path("cfssl-key.pem").exists(),
        "no key file: the key is in the token"
    );
}

#[test]
fn handle_works_in_openssl_pkcs11_engine() {
    require("openssl");
    assert!(
        std::path::Path::new("/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so").exists(),
        "libengine-pkcs11-openssl is not installed: run ci/setup"
    );
    let t = Token::softhsm("k8s");
    t.seed_files(&["ca-csr.json"]);
    t.initca("ca-csr.json", "ca");
    let uri = t.read("ca-key.uri");
    t.write("msg", "signed by the token through OpenSSL");
    sh(t.command("openssl")
        .args(["dgst", "-sha256", "-binary", "-out", "msg.sha", "msg"]));
    // The URI exactly as written, plus the PIN for this one call.
    sh(t.command("openssl")
        .env("PKCS11_MODULE_PATH", t.module())
        .args([
            "pkeyutl",
            "-engine",
            "pkcs11",
            "-keyform",
            "engine",
            "-inkey",
            &format!("{uri}?pin-value={}", crate::util::PIN),
            "-sign",
            "-in",
            "msg.sha",
            "-pkeyopt",
            "digest:sha256",
            "-out",
            "sig.bin",
        ]));
    sh(t.command("openssl").args([
        "x509", "-in", "ca.pem", "-noout", "-pubkey", "-out", "pub.pem",
    ]));
    let v = sh(t.command("openssl").args([
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        "pub.pem",
        "-in",
        "msg.sha",
        "-sigfile",
        "sig.bin",
        "-pkeyopt",
        "digest:sha256",
    ]));
    assert!(v.contains("Signature Verified Successfully"), "{v}");
}

#[test]
fn token_list_shows_label_serial_and_capabilities() {
    let t = Token::softhsm("k8s");
    let r = t.run(&["token", "list"]);
    r.ok();
    assert!(r.stdout.contains("token \"k8s\""), "{}", r.stdout);
    assert!(
        r.stdout.contains("manufacturer SoftHSM project"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("can RSA 512-16384 bits (CKM_SHA256_RSA_PKCS)"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("uri pkcs11:serial="), "{}", r.stdout);
}

#[test]
fn token_chosen_by_uri_or_by_the_only_token() {
    let t = Token::new("k8s");
    t.seed_files(&["ca-csr.json"]);
    let serial = {
        let r = t.run(&["token", "list"]);
        r.stdout
            .split("serial ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    let r = crate::util::run(
        t.p11ca().env_remove("P11CA_TOKEN").args([
            "--token",
            &format!("pkcs11:serial={serial}"),
            "gencert",
            "-initca",
            "ca-csr.json",
        ]),
        None,
    );
    r.ok();
    // With no --token at all, the single initialized token is used.
    let r = crate::util::run(
        t.p11ca().env_remove("P11CA_TOKEN").args(["key", "list"]),
        None,
    );
    r.ok();
    assert!(r.stdout.contains("token \"k8s\""));
}
