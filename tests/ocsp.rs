//! OCSP (issue #14): responses signed by the CA key in a fresh token, judged by OpenSSL's
//! `ocsp` client: the signature verifies under ca.pem and the status, reason and times are the
//! ones asked for.

use base64::Engine;

use crate::util::{Run, Token, ca_args, require};

/// A seed CA with one node certificate, node.pem.
fn seed() -> Token {
    require("openssl");
    let t = Token::new("ocsp");
    t.seed_ca();
    t.write(
        "node.json",
        r#"{"CN":"node","hosts":["node.example"],"key":{"algo":"ecdsa","size":256}}"#,
    );
    let g = t.run(&ca_args("gencert", &["node.json"]));
    g.ok();
    t.run_in(&["json", "-bare", "node"], g.stdout.as_bytes())
        .ok();
    t
}

/// `p11ca ocspsign` with `extra` flags; the response written to `out` as DER.
fn ocspsign(t: &Token, extra: &[&str], out: &str) -> Run {
    let mut args = vec![
        "ocspsign",
        "-ca",
        "ca.pem",
        "-responder-key",
        "ca-key.uri",
        "-cert",
        "node.pem",
    ];
    args.extend_from_slice(extra);
    let r = t.run(&args);
    if r.code == 0 {
        let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
        let der = base64::engine::general_purpose::STANDARD
            .decode(v["ocspResponse"].as_str().unwrap())
            .unwrap();
        std::fs::write(t.path(out), der).unwrap();
    }
    r
}

/// OpenSSL's reading of the response: verified against ca.pem, for node.pem.
fn openssl_reads(t: &Token, file: &str) -> String {
    let out = t
        .command("openssl")
        .args([
            "ocsp",
            "-respin",
            file,
            "-issuer",
            "ca.pem",
            "-cert",
            "node.pem",
            "-CAfile",
            "ca.pem",
            "-resp_text",
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Response verify OK"), "{text}");
    text
}

#[test]
fn ocspsign_good_revoked_and_unknown_verify_in_openssl() {
    let t = seed();
    ocspsign(&t, &[], "good.der").ok();
    let good = openssl_reads(&t, "good.der");
    assert!(good.contains("node.pem: good"), "{good}");
    // cfssl's shape: responder by name, no nonce, thisUpdate on the hour.
    assert!(
        good.contains("Responder Id: C = CN") && good.contains("CN = mosquitood-k8s"),
        "{good}"
    );
    assert!(good.contains(":00:00 "), "{good}");

    ocspsign(
        &t,
        &[
            "-status",
            "revoked",
            "-reason",
            "keyCompromise",
            "-revoked-at",
            "2026-01-02",
        ],
        "revoked.der",
    )
    .ok();
    let revoked = openssl_reads(&t, "revoked.der");
    assert!(revoked.contains("node.pem: revoked"), "{revoked}");
    assert!(revoked.contains("Reason: keyCompromise"), "{revoked}");
    assert!(
        revoked.contains("Revocation Time: Jan  2 00:00:00 2026 GMT"),
        "{revoked}"
    );

    ocspsign(
        &t,
        &["-status", "unknown", "-interval", "2h"],
        "unknown.der",
    )
    .ok();
    let unknown = openssl_reads(&t, "unknown.der");
    assert!(unknown.contains("node.pem: unknown"), "{unknown}");
}

#[test]
fn ocspsign_refuses_what_it_cannot_answer_for() {
    let t = seed();
    ocspsign(&t, &["-status", "fine"], "x.der").fails(1, "-status \"fine\"");
    ocspsign(&t, &["-status", "revoked", "-reason", "bored"], "x.der")
        .fails(1, "unknown revocation reason");
    ocspsign(
        &t,
        &["-status", "revoked", "-revoked-at", "2026-13-01"],
        "x.der",
    )
    .fails(1, "-revoked-at");
    ocspsign(&t, &["-interval", "0s"], "x.der").fails(1, "-interval");
    // A certificate another CA issued: no response is signed for it.
    crate::util::sh(t.command("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "other-key.pem",
        "-subj",
        "/CN=other",
        "-out",
        "other.pem",
    ]));
    t.run(&[
        "ocspsign",
        "-ca",
        "ca.pem",
        "-responder-key",
        "ca-key.uri",
        "-cert",
        "other.pem",
    ])
    .fails(3, "not issued by this CA");
    // A responder the CA did not issue.
    t.run(&[
        "ocspsign",
        "-ca",
        "ca.pem",
        "-responder",
        "other.pem",
        "-responder-key",
        "ca-key.uri",
        "-cert",
        "node.pem",
    ])
    .fails(3, "responder certificate was not issued by the CA");
}

/// `openssl ocsp` asking the responder at `port` about `cert`.
fn ask(t: &Token, port: u16, cert: &str) -> String {
    let out = t
        .command("openssl")
        .args([
            "ocsp",
            "-issuer",
            "ca.pem",
            "-cert",
            cert,
            "-url",
            &format!("http://127.0.0.1:{port}"),
            "-CAfile",
            "ca.pem",
        ])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Response verify OK"), "{text}");
    text
}

#[test]
fn ocsprefresh_writes_responses_that_cfssl_ocspserve_serves() {
    require("cfssl");
    let t = Token::new("ocsprefresh");
    crate::serve::setup(&t);
    let mut server = crate::serve::p11ca_serve(&t, "serve", &[]);
    let bad = crate::serve_revoke::issue(&t, server.port, "bad");
    crate::serve_revoke::issue(&t, server.port, "good");
    server.signal("TERM");
    assert_eq!(server.wait(std::time::Duration::from_secs(30)), 0);
    let aki = crate::serve::records(&t)[0]
        .authority_key_identifier
        .clone();
    t.run(&[
        "revoke",
        "--db",
        "p11ca-certs.db",
        "-serial",
        &bad,
        "-aki",
        &aki,
        "-reason",
        "keyCompromise",
    ])
    .ok();
    let r = t.run(&[
        "ocsprefresh",
        "--db",
        "p11ca-certs.db",
        "-ca",
        "ca.pem",
        "-responder-key",
        "ca-key.uri",
    ]);
    r.ok();
    assert!(
        r.stderr.contains("2 responses signed and stored"),
        "{}",
        r.stderr
    );

    // cfssl's own tools read the rows p11ca wrote (Debian's cfssl 1.2 ocspserve takes only a
    // response file; ocspdump makes it from the store) and its responder answers from them.
    t.write(
        "db.json",
        r#"{"driver":"sqlite3","data_source":"p11ca-certs.db"}"#,
    );
    let dump = crate::util::sh(
        t.command("cfssl")
            .args(["ocspdump", "-db-config", "db.json"]),
    );
    assert_eq!(dump.lines().count(), 2, "{dump}");
    t.write("responses", &dump);
    let port = crate::util::free_port();
    let p = port.to_string();
    let _cfssl = crate::serve::start(
        &t,
        "cfssl-ocspserve",
        "cfssl",
        &[
            "ocspserve",
            "-responses",
            "responses",
            "-address",
            "127.0.0.1",
            "-port",
            &p,
        ],
        port,
        false,
    );
    let good = ask(&t, port, "good.pem");
    assert!(good.contains("good.pem: good"), "{good}");
    let revoked = ask(&t, port, "bad.pem");
    assert!(revoked.contains("bad.pem: revoked"), "{revoked}");
    assert!(revoked.contains("Reason: keyCompromise"), "{revoked}");
}
