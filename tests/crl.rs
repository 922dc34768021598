//! CRLs (issue #13's core, `p11ca::x509::crl`): a CRL signed by the CA key in a fresh token,
//! checked by OpenSSL — its signature, its fields, and `verify -crl_check` refusing the revoked
//! certificate and only that one.
//!
//! `p11ca gencrl` (cfssl's command: serials revoked now, no reasons) is tested through the
//! binary. Reason codes have no command yet, so that CRL is built in-process through the
//! library, with the same token signer `sign` uses. SoftHSM2 reads its configuration once per
//! process and this binary runs many tests, so the token half runs in a process of its own:
//! this same test binary, running the ignored [`token_signs_the_crl`] alone with the token's
//! environment.

use std::path::PathBuf;

use der::DecodePem;
use x509_cert::Certificate;

use p11ca::token::signer::{SignMech, TokenSigner};
use p11ca::token::{Module, Pkcs11Uri, key, pin};
use p11ca::x509::alg::{KeyAlg, SigAlg};
use p11ca::x509::crl::{Reason, RevokedEntry, build_crl};

use crate::util::{PIN, Run, Token, ca_args, require, run, sh};

/// Set by the parent test for the child: the work folder holding ca.pem, ca-key.uri and
/// revoked.pem, where the child writes crl.der.
const CHILD_DIR: &str = "P11CA_CRL_TEST_DIR";

/// The leading-zero and top-bit serials the CRL also lists, to see OpenSSL read them.
const LEADING_ZERO_SERIAL: [u8; 3] = [0x00, 0x01, 0x02];
const TOP_BIT_SERIAL: [u8; 20] = [0xff; 20];

#[test]
fn a_token_signed_crl_revokes_one_certificate_for_openssl() {
    let t = seed_with_two_nodes("crl");

    let exe = std::env::current_exe().unwrap();
    let mut child = t.command(exe);
    child
        .env("P11CA_MODULE", t.module())
        .env("P11CA_TOKEN", &t.label)
        .env("P11CA_PIN", PIN)
        .env(CHILD_DIR, t.work())
        .args(["--exact", "crl::token_signs_the_crl", "--ignored"])
        .args(["--nocapture", "--test-threads=1"]);
    let c = run(&mut child, None);
    assert!(
        c.code == 0 && c.stdout.contains("1 passed"),
        "the token half failed: {}{}",
        c.stdout,
        c.stderr
    );

    // The signature verifies with the CA certificate.
    let check = openssl(
        &t,
        &[
            "crl", "-inform", "DER", "-in", "crl.der", "-CAfile", "ca.pem",
        ],
    );
    assert_eq!(check.code, 0, "{}{}", check.stdout, check.stderr);
    assert!(check.stderr.contains("verify OK"), "{}", check.stderr);

    sh(t.command("openssl")
        .args(["crl", "-inform", "DER", "-in", "crl.der", "-out", "crl.pem"]));
    check_text(&t);

    only_revoked_is_refused(&t);
}

/// A seed CA on a fresh token with two node certificates, `revoked.pem` and `kept.pem`.
pub(crate) fn seed_with_two_nodes(label: &str) -> Token {
    require("openssl");
    let t = Token::new(label);
    t.seed_ca();
    for n in ["revoked", "kept"] {
        let csr = format!(
            r#"{{"CN":"{n}","hosts":["{n}.example"],"key":{{"algo":"ecdsa","size":256}}}}"#
        );
        t.write(&format!("{n}.json"), &csr);
        let g = t.run(&ca_args("gencert", &[&format!("{n}.json")]));
        g.ok();
        t.run_in(&["json", "-bare", n], g.stdout.as_bytes()).ok();
    }
    t
}

/// `openssl verify -crl_check` with crl.pem: revoked.pem fails with error 23, kept.pem passes.
pub(crate) fn only_revoked_is_refused(t: &Token) {
    let verify = |cert: &str| {
        let args = [
            "verify",
            "-crl_check",
            "-CRLfile",
            "crl.pem",
            "-CAfile",
            "ca.pem",
            cert,
        ];
        openssl(t, &args)
    };
    let r = verify("revoked.pem");
    let out = format!("{}{}", r.stdout, r.stderr);
    assert_ne!(r.code, 0, "{out}");
    assert!(
        out.contains("error 23") && out.contains("certificate revoked"),
        "{out}"
    );
    let k = verify("kept.pem");
    assert_eq!(k.code, 0, "{}{}", k.stdout, k.stderr);
    assert!(k.stdout.contains("kept.pem: OK"), "{}", k.stdout);
}

#[test]
fn gencrl_revokes_the_listed_serials_as_cfssl_does() {
    use base64::Engine;
    let t = seed_with_two_nodes("gencrl");
    let info = t.run(&["certinfo", "-cert", "revoked.pem"]);
    let info: serde_json::Value = serde_json::from_str(&info.ok().stdout).unwrap();
    let serial = info["serial_number"].as_str().unwrap().to_string();
    // cfssl's serial list: one decimal serial per line; blank lines are skipped.
    t.write("serials.txt", &format!("{serial}\n\n12345\n"));
    let g = t.run(&["gencrl", "serials.txt", "ca.pem", "ca-key.uri", "3600"]);
    let der = base64::engine::general_purpose::STANDARD
        .decode(g.ok().stdout.trim())
        .expect("base64 of the CRL");
    std::fs::write(t.path("crl.der"), der).unwrap();
    let check = openssl(
        &t,
        &[
            "crl", "-inform", "DER", "-in", "crl.der", "-CAfile", "ca.pem",
        ],
    );
    assert!(check.stderr.contains("verify OK"), "{}", check.stderr);
    sh(t.command("openssl")
        .args(["crl", "-inform", "DER", "-in", "crl.der", "-out", "crl.pem"]));
    let text = sh(t
        .command("openssl")
        .args(["crl", "-in", "crl.pem", "-noout", "-text"]));
    assert!(text.contains("Serial Number: 3039"), "{text}");
    assert!(text.contains("X509v3 CRL Number"), "{text}");
    only_revoked_is_refused(&t);
}

#[test]
fn gencrl_bad_inputs_are_one_line_errors_before_the_token_signs() {
    let t = seed_with_two_nodes("gencrl-bad");
    t.write("serials.txt", "12345\n");
    t.write("bad-serial.txt", "12345\n0x10\n");
    t.write("zero.txt", "0\n");
    let handle = t.read("ca-key.uri");
    t.write(
        "evil-key.uri",
        &format!("{}?module-path=/tmp/x.so\n", handle.trim()),
    );
    let g = |rest: &[&str]| {
        let mut v = vec!["gencrl"];
        v.extend_from_slice(rest);
        t.run(&v)
    };
    for (name, args, code, needle) in [
        (
            "a serial that is not decimal",
            vec!["bad-serial.txt", "ca.pem", "ca-key.uri"],
            1,
            "bad-serial.txt: line 2: \"0x10\" is not a serial number",
        ),
        (
            "serial 0",
            vec!["zero.txt", "ca.pem", "ca-key.uri"],
            1,
            "zero.txt: line 1",
        ),
        (
            "a lifetime that is not seconds",
            vec!["serials.txt", "ca.pem", "ca-key.uri", "1h"],
            1,
            "TIME \"1h\"",
        ),
        (
            "a leaf as the CA",
            vec!["serials.txt", "kept.pem", "ca-key.uri"],
            3,
            "kept.pem",
        ),
        (
            "a key handle that names a module",
            vec!["serials.txt", "ca.pem", "evil-key.uri"],
            1,
            "carries module-path",
        ),
        (
            "a missing serial file",
            vec!["nope.txt", "ca.pem", "ca-key.uri"],
            1,
            "nope.txt",
        ),
    ] {
        let r = g(&args);
        assert_eq!(r.code, code, "{name}: {}", r.stderr);
        r.fails(code, needle);
    }
}

/// `openssl crl -text`: v2, the cRLNumber, the AKI (= the CA's SKI), each serial as
/// OpenSSL reads it, and a reason only on the entries that have one.
fn check_text(t: &Token) {
    let text = sh(t
        .command("openssl")
        .args(["crl", "-in", "crl.pem", "-noout", "-text"]));
    let ski = sh(t.command("openssl").args([
        "x509",
        "-in",
        "ca.pem",
        "-noout",
        "-ext",
        "subjectKeyIdentifier",
    ]));
    let ski = ski.lines().nth(1).unwrap().trim().to_string();
    let serial = sh(t
        .command("openssl")
        .args(["x509", "-in", "revoked.pem", "-noout", "-serial"]));
    let serial = serial.trim().strip_prefix("serial=").unwrap().to_string();
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for want in [
        "Version 2 (0x1)".to_string(),
        "X509v3 CRL Number: 256".to_string(),
        format!("X509v3 Authority Key Identifier: {ski}"),
        format!("Serial Number: {serial}"),
        "Serial Number: 0102".to_string(),
        format!("Serial Number: {}", "FF".repeat(20)),
        "X509v3 CRL Reason Code: Key Compromise".to_string(),
        "X509v3 CRL Reason Code: Superseded".to_string(),
    ] {
        assert!(flat.contains(&want), "no {want:?} in:\n{text}");
    }
    // The top-bit serial was revoked for an unspecified reason: no reasonCode at all.
    assert_eq!(flat.matches("CRL Reason Code").count(), 2, "{text}");
    assert_eq!(flat.matches("Serial Number:").count(), 3, "{text}");
}

pub(crate) fn openssl(t: &Token, args: &[&str]) -> Run {
    run(t.command("openssl").args(args), None)
}

/// The token half of [`a_token_signed_crl_revokes_one_certificate_for_openssl`], which runs
/// it in a process of its own; run any other way (no `P11CA_CRL_TEST_DIR`) it fails, saying so.
#[test]
#[ignore = "run by a_token_signed_crl_revokes_one_certificate_for_openssl in its own process"]
fn token_signs_the_crl() {
    let dir = std::env::var_os(CHILD_DIR).map(PathBuf::from).unwrap_or_else(|| {
        panic!(
            "{CHILD_DIR} is not set: this is a step of crl::a_token_signed_crl_revokes_one_certificate_for_openssl; run that test"
        )
    });
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    let ca = Certificate::from_pem(read("ca.pem")).unwrap();
    let revoked = Certificate::from_pem(read("revoked.pem")).unwrap();
    let uri_text = String::from_utf8(read("ca-key.uri")).unwrap();
    let uri = Pkcs11Uri::parse(uri_text.trim()).unwrap();

    // As `sign` does: the module, the token the key handle names, the PIN (P11CA_PIN), the key.
    let module = Module::load(&Module::resolve_path(None, Some(&uri)).unwrap()).unwrap();
    let token = module.select_token(&uri).unwrap();
    let (pin, _) = pin::resolve(None, Some(&uri), &token.label, &mut Vec::new()).unwrap();
    let session = module.login(&token, &pin).unwrap();
    let found = key::find_private_key(&session, &token, &uri).unwrap();
    let alg = SigAlg::for_key(KeyAlg::of(&found.spki).unwrap());
    let mechs = module.mechanisms(token.slot).unwrap();
    let mech = SignMech::choose(&mechs, alg, &token.label).unwrap();
    let signer = TokenSigner::new(&session, found.handle, found.spki.clone(), mech).unwrap();

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let entry = |serial: &[u8], reason| RevokedEntry {
        serial: serial.to_vec(),
        revoked_at: now - 3600,
        reason,
    };
    let entries = vec![
        entry(
            revoked.tbs_certificate().serial_number().as_bytes(),
            Some(Reason::KeyCompromise),
        ),
        entry(&LEADING_ZERO_SERIAL, Some(Reason::Superseded)),
        entry(&TOP_BIT_SERIAL, Some(Reason::Unspecified)),
    ];
    let der = build_crl(&ca, entries, &[0x01, 0x00], now - 60, now + 86_400, &signer).unwrap();
    std::fs::write(dir.join("crl.der"), der).unwrap();
}

#[test]
fn gencrl_out_writes_der_or_pem_by_the_file_name() {
    let t = seed_with_two_nodes("gencrl-out");
    t.write("serials.txt", "12345\n");
    for (file, pem) in [("crl.pem", true), ("crl.der", false)] {
        t.run(&[
            "gencrl",
            "serials.txt",
            "ca.pem",
            "ca-key.uri",
            "--out",
            file,
        ])
        .ok();
        let bytes = std::fs::read(t.path(file)).unwrap();
        assert_eq!(
            bytes.starts_with(b"-----BEGIN X509 CRL-----\n"),
            pem,
            "{file}"
        );
        let form = if pem { "PEM" } else { "DER" };
        let check = openssl(
            &t,
            &[
                "crl", "-inform", form, "-in", file, "-CAfile", "ca.pem", "-noout",
            ],
        );
        assert!(
            check.stderr.contains("verify OK"),
            "{file}: {}",
            check.stderr
        );
    }
    // Nothing is written when the CRL cannot be made.
    t.run(&[
        "gencrl",
        "serials.txt",
        "kept.pem",
        "ca-key.uri",
        "--out",
        "bad.pem",
    ])
    .fails(3, "kept.pem");
    assert!(!t.path("bad.pem").exists());
}
