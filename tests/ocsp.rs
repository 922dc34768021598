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

/// A raw HTTP exchange (request bytes as given); the status and body bytes.
fn raw_http(port: u16, request: &[u8]) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, out[split..].to_vec())
}

#[test]
fn ocspserve_answers_from_the_store_at_once_and_survives_bad_requests() {
    require("curl");
    let t = Token::new("ocspserve");
    crate::serve::setup(&t);
    let mut server = crate::serve::p11ca_serve(&t, "serve", &[]);
    let bad = crate::serve_revoke::issue(&t, server.port, "bad");
    crate::serve_revoke::issue(&t, server.port, "good");
    server.signal("TERM");
    assert_eq!(server.wait(std::time::Duration::from_secs(30)), 0);
    let aki = crate::serve::records(&t)[0]
        .authority_key_identifier
        .clone();
    let refresh = || {
        t.run(&[
            "ocsprefresh",
            "--db",
            "p11ca-certs.db",
            "-ca",
            "ca.pem",
            "-responder-key",
            "ca-key.uri",
        ])
        .ok();
    };
    refresh();
    let port = crate::util::free_port();
    let p = port.to_string();
    let _ocsp = crate::serve::start(
        &t,
        "ocspserve",
        "p11ca",
        &["ocspserve", "--db", "p11ca-certs.db", "-port", &p],
        port,
        false,
    );
    assert!(ask(&t, port, "good.pem").contains("good.pem: good"));
    assert!(ask(&t, port, "bad.pem").contains("bad.pem: good"));

    // Revoked and refreshed: the running responder answers "revoked" at once.
    t.run(&[
        "revoke",
        "--db",
        "p11ca-certs.db",
        "-serial",
        &bad,
        "-aki",
        &aki,
        "-reason",
        "superseded",
    ])
    .ok();
    refresh();
    let revoked = ask(&t, port, "bad.pem");
    assert!(revoked.contains("bad.pem: revoked"), "{revoked}");
    assert!(revoked.contains("Reason: superseded"), "{revoked}");

    // RFC 5019 GET, with the caching headers.
    crate::util::sh(t.command("openssl").args([
        "ocsp",
        "-issuer",
        "ca.pem",
        "-cert",
        "good.pem",
        "-reqout",
        "req.der",
        "-no_nonce",
    ]));
    let b64 =
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(t.path("req.der")).unwrap());
    let enc: String = b64
        .chars()
        .map(|c| match c {
            '+' => "%2B".to_string(),
            '/' => "%2F".to_string(),
            '=' => "%3D".to_string(),
            c => c.to_string(),
        })
        .collect();
    let head = crate::util::sh(t.command("curl").args([
        "-sS",
        "-D",
        "-",
        "-o",
        "get.der",
        &format!("http://127.0.0.1:{port}/{enc}"),
    ]));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.contains("Content-Type: application/ocsp-response"),
        "{head}"
    );
    assert!(
        head.contains("public, no-transform, must-revalidate"),
        "{head}"
    );
    assert!(head.contains(" GMT\r\n"), "{head}");
    assert!(head.contains("ETag: \""), "{head}");
    let out = crate::util::sh(t.command("openssl").args([
        "ocsp", "-respin", "get.der", "-issuer", "ca.pem", "-cert", "good.pem", "-CAfile", "ca.pem",
    ]));
    assert!(out.contains("good.pem: good"), "{out}");

    // Bad requests: the RFC's error status, and the next good request is still answered.
    let req = std::fs::read(t.path("req.der")).unwrap();
    let post = |body: &[u8]| {
        let mut r = format!(
            "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/ocsp-request\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        raw_http(port, &r)
    };
    assert_eq!(
        post(&req[..req.len() / 2]),
        (400, vec![0x30, 0x03, 0x0a, 0x01, 0x01])
    );
    assert_eq!(post(b"not der"), (400, vec![0x30, 0x03, 0x0a, 0x01, 0x01]));
    let (status, _) = post(&vec![0x30; 100_000]);
    assert_eq!(status, 413);
    // Another CA's certificate: unauthorized.
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
    crate::util::sh(t.command("openssl").args([
        "ocsp",
        "-issuer",
        "other.pem",
        "-cert",
        "other.pem",
        "-reqout",
        "other.der",
        "-no_nonce",
    ]));
    let other = std::fs::read(t.path("other.der")).unwrap();
    assert_eq!(post(&other), (200, vec![0x30, 0x03, 0x0a, 0x01, 0x06]));
    assert!(ask(&t, port, "good.pem").contains("good.pem: good"));
}
