//! `serve`'s /revoke and its published CRL (issue #13): revocation over the network only with
//! cfssl's authenticated envelope, never replayed; the CRL rebuilt at once and served at
//! /api/v1/cfssl/crl and /crl.pem; OpenSSL and a real TLS server (nginx with `ssl_crl`)
//! refuse the revoked client certificate and accept the other.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use p11ca::cfssl::auth;
use p11ca::cfssl::config::AuthKey;
use p11ca::db::{DbConfig, ListFilter, Store};
use serde_json::{Value, json};

use crate::serve::{http, p11ca_serve, records, serve_args, setup, start_env};
use crate::util::{Token, free_port, require, sh};

const SIGN: &str = "/api/v1/cfssl/sign";
pub(crate) const REVOKE: &str = "/api/v1/cfssl/revoke";

/// The `current` key of tests/serve.rs's SERVER_CONFIG.
pub(crate) fn current_key() -> AuthKey {
    AuthKey::new("current", (0u8..32).collect())
}

/// Issue a client certificate for `name` over /sign: `{name}.pem`, `{name}-key.pem`; its
/// decimal serial.
pub(crate) fn issue(t: &Token, port: u16, name: &str) -> String {
    let csr = t.ec_csr(name, name);
    let body = json!({"certificate_request": csr, "profile": "kubernetes"}).to_string();
    let (status, text) = http(port, "POST", SIGN, body.as_bytes()).unwrap();
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    t.write(
        &format!("{name}.pem"),
        v["result"]["certificate"].as_str().unwrap(),
    );
    let pem = v["result"]["certificate"].as_str().unwrap().to_string();
    records(t)
        .into_iter()
        .find(|r| r.pem == pem)
        .expect("the issued certificate is recorded")
        .serial_number
}

fn any_revoked(t: &Token) -> bool {
    Store::open_existing(&DbConfig::Sqlite(t.path("p11ca-certs.db")))
        .unwrap()
        .list_status(ListFilter::default())
        .unwrap()
        .iter()
        .any(|r| r.is_revoked())
}

pub(crate) fn revoke_body(key: &AuthKey, serial: &str, aki: &str, reason: &str) -> String {
    let inner = json!({"serial": serial, "authority_key_id": aki, "reason": reason}).to_string();
    auth::wrap(key, inner.as_bytes())
}

/// The OCSP response the store holds for the certificate `serial` (written to bad.pem) of the
/// CA `aki`, as `openssl ocsp -respin … -CAfile ca.pem -resp_text` reads it (stdout and
/// stderr, where the verification verdict goes).
fn stored_ocsp_text(t: &Token, serial: &str, aki: &str) -> String {
    stored_ocsp_text_of(t, serial, aki, "bad.pem")
}

/// [`stored_ocsp_text`] for the certificate in the file `cert`.
pub(crate) fn stored_ocsp_text_of(t: &Token, serial: &str, aki: &str, cert: &str) -> String {
    let der = Store::open_existing(&DbConfig::Sqlite(t.path("p11ca-certs.db")))
        .unwrap()
        .ocsp_response(serial, aki)
        .unwrap()
        .expect("an OCSP response stored for the certificate");
    std::fs::write(t.path("stored-ocsp.der"), der).unwrap();
    let out = t
        .command("openssl")
        .args([
            "ocsp",
            "-respin",
            "stored-ocsp.der",
            "-issuer",
            "ca.pem",
            "-cert",
            cert,
            "-CAfile",
            "ca.pem",
            "-resp_text",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// GET /crl.pem into crl.pem and check its signature with OpenSSL.
fn fetch_crl(t: &Token, port: u16) -> String {
    let (status, pem) = http(port, "GET", "/crl.pem", b"").unwrap();
    assert_eq!(status, 200, "{pem}");
    t.write("crl.pem", &pem);
    let out = t
        .command("openssl")
        .args([
            "crl", "-in", "crl.pem", "-CAfile", "ca.pem", "-noout", "-text",
        ])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.contains("verify OK"), "{text}");
    text
}

#[test]
fn revocation_over_the_network_is_authenticated_and_published_at_once() {
    let t = Token::new("serve-revoke");
    setup(&t);
    let mut server = p11ca_serve(
        &t,
        "serve",
        &["-revoke-auth-key", "current", "-ocsp-path", "/ocsp/"],
    );
    let port = server.port;
    let bad = issue(&t, port, "bad");
    issue(&t, port, "good");
    let aki = records(&t)[0].authority_key_identifier.clone();
    let before = fetch_crl(&t, port);
    assert!(before.contains("No Revoked Certificates"), "{before}");

    unauthenticated_or_bad_revocations_are_refused(&t, port, &bad, &aki);

    // The real thing, then its replay.
    let body = revoke_body(&current_key(), &bad, &aki, "keyCompromise");
    let (st, text) = http(port, "POST", REVOKE, body.as_bytes()).unwrap();
    assert_eq!(st, 200, "{text}");
    assert!(text.contains(&format!("revoked serial {bad}")), "{text}");
    assert!(any_revoked(&t));
    let (st, text) = http(port, "POST", REVOKE, body.as_bytes()).unwrap();
    assert_eq!(st, 401, "replayed: {text}");

    // Its OCSP response in the store already says so, signed by the CA.
    let ocsp = stored_ocsp_text(&t, &bad, &aki);
    assert!(ocsp.contains("bad.pem: revoked"), "{ocsp}");
    assert!(ocsp.contains("Response verify OK"), "{ocsp}");
    // The same process answers OCSP for it on -ocsp-path, from the store.
    let asked = sh(t.command("openssl").args([
        "ocsp",
        "-issuer",
        "ca.pem",
        "-cert",
        "bad.pem",
        "-CAfile",
        "ca.pem",
        "-url",
        &format!("http://127.0.0.1:{port}/ocsp/"),
    ]));
    assert!(asked.contains("bad.pem: revoked"), "{asked}");

    the_new_crl_lists_it(&t, port, &before);
    nginx_enforces_the_crl(&t);
    server.signal("TERM");
    assert_eq!(server.wait(Duration::from_secs(30)), 0);
    let audit = t.run(&["audit", "list", "--db", "p11ca-certs.db"]);
    audit.ok();
    assert!(audit.stdout.contains("\trevoke\t"), "{}", audit.stdout);
    assert!(audit.stdout.contains("\tcrl\t"), "{}", audit.stdout);
    t.run(&crate::audit::verify_args()).ok();
}

/// cfssl's own unauthenticated body, a wrong key, a bad reason: refused, nothing changes.
fn unauthenticated_or_bad_revocations_are_refused(t: &Token, port: u16, bad: &str, aki: &str) {
    let plain = json!({"serial": bad, "authority_key_id": aki, "reason": "keyCompromise"});
    let (st, text) = http(port, "POST", REVOKE, plain.to_string().as_bytes()).unwrap();
    assert_eq!(st, 401, "{text}");
    let wrong = AuthKey::new("current", vec![7; 32]);
    let (st, text) = http(
        port,
        "POST",
        REVOKE,
        revoke_body(&wrong, bad, aki, "keyCompromise").as_bytes(),
    )
    .unwrap();
    assert_eq!(st, 401, "{text}");
    let (st, text) = http(
        port,
        "POST",
        REVOKE,
        revoke_body(&current_key(), bad, aki, "bored").as_bytes(),
    )
    .unwrap();
    assert_eq!(st, 400, "{text}");
    assert!(text.contains("unknown revocation reason"), "{text}");
    assert!(!any_revoked(t));
}

/// The CRL served after the revocation (of bad.pem, key compromise) lists it under a higher
/// CRL number than `before`'s; GET /crl gives the same CRL; OpenSSL refuses bad.pem under it
/// and accepts good.pem.
fn the_new_crl_lists_it(t: &Token, port: u16, before: &str) {
    let after = fetch_crl(t, port);
    assert!(after.contains("Key Compromise"), "{after}");
    let number = |text: &str| {
        let line = text
            .lines()
            .skip_while(|l| !l.contains("X509v3 CRL Number"))
            .nth(1)
            .unwrap();
        u64::from_str_radix(line.trim().trim_start_matches("0x"), 16)
            .or_else(|_| line.trim().parse())
            .unwrap()
    };
    assert!(number(&after) > number(before), "{before}\n{after}");
    // cfssl's GET /crl gives the same CRL as a base64 JSON string.
    let (st, text) = http(port, "GET", "/api/v1/cfssl/crl", b"").unwrap();
    assert_eq!(st, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let der = STANDARD.decode(v["result"].as_str().unwrap()).unwrap();
    t.write("crl-api.der", "");
    std::fs::write(t.path("crl-api.der"), der).unwrap();
    let pem = sh(t
        .command("openssl")
        .args(["crl", "-inform", "DER", "-in", "crl-api.der"]));
    assert_eq!(pem.trim(), t.read("crl.pem").trim());

    for (cert, expect) in [("bad.pem", "error 23"), ("good.pem", "OK")] {
        let out = t
            .command("openssl")
            .args([
                "verify",
                "-crl_check",
                "-CRLfile",
                "crl.pem",
                "-CAfile",
                "ca.pem",
                cert,
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(text.contains(expect), "{cert}: {text}");
    }
}

/// With `-responder`/`-responder-key` (a delegated responder whose key is in the CA key's
/// token), the response /revoke stores is signed by the responder and carries its
/// certificate; OpenSSL accepts it with the CA as the only trust anchor.
#[test]
fn revoke_signs_the_stored_ocsp_response_with_the_delegated_responder() {
    use der::DecodePem;
    use sha1::Digest;
    let t = Token::new("serve-revoke-resp");
    setup(&t);
    crate::ocsp::make_responder(&t);
    let flags = [
        "-revoke-auth-key",
        "current",
        "-responder",
        "resp.pem",
        "-responder-id",
        "key",
    ];
    let extra = [&flags[..], &["-responder-key", "resp-key.uri"]].concat();
    let server = p11ca_serve(&t, "serve", &extra);
    let port = server.port;
    let bad = issue(&t, port, "bad");
    let aki = records(&t)[0].authority_key_identifier.clone();
    let body = revoke_body(&current_key(), &bad, &aki, "keyCompromise");
    let (st, text) = http(port, "POST", REVOKE, body.as_bytes()).unwrap();
    assert_eq!(st, 200, "{text}");
    let ocsp = stored_ocsp_text(&t, &bad, &aki);
    assert!(ocsp.contains("bad.pem: revoked"), "{ocsp}");
    assert!(ocsp.contains("Response verify OK"), "{ocsp}");
    // Named by its key's SHA-1 (-responder-id key), and its certificate is in the response.
    let resp = x509_cert::Certificate::from_pem(t.read("resp.pem")).unwrap();
    let key = resp.tbs_certificate().subject_public_key_info();
    let hash = sha1::Sha1::digest(key.subject_public_key.raw_bytes());
    let hash = p11ca::text::hex(&hash).to_uppercase();
    assert!(ocsp.contains(&format!("Responder Id: {hash}")), "{ocsp}");
    assert!(ocsp.contains("Subject: CN=ocsp-responder"), "{ocsp}");

    // A responder the CA did not issue is refused at start-up, before the token is opened.
    t.other_ca();
    let p = free_port().to_string();
    let args = crate::serve::serve_args(
        &p,
        &["-responder", "other.pem", "-responder-key", "resp-key.uri"],
    );
    t.run(&args).fails(
        3,
        "-responder other.pem: the responder certificate was not issued by the CA",
    );
}

#[test]
fn revoke_is_refused_unless_a_key_is_named() {
    let t = Token::new("serve-revoke-off");
    setup(&t);
    let server = p11ca_serve(&t, "serve", &[]);
    let body = revoke_body(&current_key(), "1", "ab", "superseded");
    let (st, text) = http(server.port, "POST", REVOKE, body.as_bytes()).unwrap();
    assert_eq!(st, 403, "{text}");
    assert!(text.contains("-revoke-auth-key"), "{text}");
    // Without a signing config there is no key to name.
    let r = t.run(&[
        "serve",
        "-ca",
        "ca.pem",
        "-ca-key",
        "ca-key.uri",
        "-port",
        "1",
        "-revoke-auth-key",
        "current",
    ]);
    r.fails(1, "give -config");
    let r = t.run(&[
        "serve",
        "-ca",
        "ca.pem",
        "-ca-key",
        "ca-key.uri",
        "-config",
        "server-config.json",
        "-port",
        "1",
        "-revoke-auth-key",
        "nobody",
    ]);
    r.fails(1, "\"nobody\" is not in the auth_keys section");
}

/// nginx on loopback with a server certificate from the CA, requiring client certificates
/// from ca.pem and checking them against crl.pem; its port and its process.
fn start_nginx(t: &Token) -> (u16, crate::util::Background) {
    // The server's own certificate, from the same CA.
    t.write(
        "srv.json",
        r#"{"CN":"127.0.0.1","hosts":["127.0.0.1"],"key":{"algo":"ecdsa","size":256}}"#,
    );
    let g = t.run(&[
        "gencert",
        "-ca",
        "ca.pem",
        "-ca-key",
        "ca-key.uri",
        "-config",
        "server-config.json",
        "-profile",
        "kubernetes",
        "srv.json",
    ]);
    g.ok();
    t.run_in(&["json", "-bare", "srv"], g.stdout.as_bytes())
        .ok();
    let port = free_port();
    let dir = t.work();
    std::fs::create_dir_all(dir.join("nginx/logs")).unwrap();
    std::fs::write(dir.join("nginx/index.html"), "hello from behind the CRL\n").unwrap();
    let conf = format!(
        "daemon off;\nerror_log {d}/nginx/logs/error.log info;\npid {d}/nginx/nginx.pid;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/nginx/tmp;\n  proxy_temp_path {d}/nginx/tmp;\n  fastcgi_temp_path {d}/nginx/tmp;\n  uwsgi_temp_path {d}/nginx/tmp;\n  scgi_temp_path {d}/nginx/tmp;\n  server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {d}/srv.pem;\n    ssl_certificate_key {d}/srv-key.pem;\n    ssl_client_certificate {d}/ca.pem;\n    ssl_verify_client on;\n    ssl_crl {d}/crl.pem;\n    root {d}/nginx;\n  }}\n}}\n",
        d = dir.display()
    );
    std::fs::write(dir.join("nginx/nginx.conf"), conf).unwrap();
    let nginx = t.spawn(
        "nginx",
        60,
        "nginx",
        &[
            "-p",
            &format!("{}/nginx", dir.display()),
            "-c",
            &format!("{}/nginx/nginx.conf", dir.display()),
        ],
    );
    (port, nginx)
}

/// nginx from Debian on loopback, requiring client certificates from ca.pem and checking them
/// against crl.pem: the revoked one gets 400, the good one the page.
fn nginx_enforces_the_crl(t: &Token) {
    require("nginx");
    require("curl");
    let (port, mut nginx) = start_nginx(t);
    let dir = t.work();
    let url = format!("https://127.0.0.1:{port}/index.html");
    let curl = |who: &str| -> String {
        let out = t
            .command("curl")
            .args([
                "-sS",
                "--cacert",
                "ca.pem",
                "--cert",
                &format!("{who}.pem"),
                "--key",
                &format!("{who}-key.pem"),
                "-w",
                "\n%{http_code}",
                &url,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let mut good = String::new();
    for _ in 0..100 {
        good = curl("good");
        if good.contains("hello") || !nginx.running() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        good.contains("hello from behind the CRL") && good.ends_with("200"),
        "good: {good} ({})",
        t.read("nginx.err")
    );
    let bad = curl("bad");
    assert!(bad.ends_with("400") && !bad.contains("hello"), "bad: {bad}");
    let log = std::fs::read_to_string(dir.join("nginx/logs/error.log")).unwrap_or_default();
    assert!(log.contains("certificate revoked"), "{log}");
}

/// The pool keeps one session more than there are signing threads, for /revoke's OCSP response
/// and the CRL it publishes. With both signing threads held inside a slow signature
/// (`P11CA_FAULT=serve-slow-sign`: 2 s each), a revocation is answered before either of them.
#[test]
fn revoke_does_not_queue_behind_issuance() {
    let t = Token::new("serve-spare");
    setup(&t);
    let port = free_port();
    let p = port.to_string();
    let args = serve_args(&p, &["-revoke-auth-key", "current", "--jobs", "2"]);
    let env = [("P11CA_FAULT", "serve-slow-sign")];
    let _srv = start_env(&t, "serve", "p11ca", &args, port, true, &env);
    let serial = issue(&t, port, "old");
    let aki = records(&t)[0].authority_key_identifier.clone();
    assert!(
        t.read("serve.err").contains("3 signing sessions"),
        "{}",
        t.read("serve.err")
    );

    let csr = t.ec_csr("busy", "busy.example");
    let body = json!({"certificate_request": csr, "profile": "kubernetes"}).to_string();
    let signing: Vec<_> = (0..2)
        .map(|_| {
            let body = body.clone();
            std::thread::spawn(move || {
                let answer = http(port, "POST", SIGN, body.as_bytes());
                (answer, Instant::now())
            })
        })
        .collect();
    // Both signing threads are inside their 2 s signature well before this.
    std::thread::sleep(Duration::from_millis(500));
    let revoke = revoke_body(&current_key(), &serial, &aki, "keyCompromise");
    let (st, text) = http(port, "POST", REVOKE, revoke.as_bytes()).unwrap();
    let revoked_at = Instant::now();
    assert_eq!(st, 200, "{text}");
    for s in signing {
        let (answer, at) = s.join().unwrap();
        let (st, text) = answer.expect("an answer");
        assert_eq!(st, 200, "{text}");
        assert!(revoked_at < at, "the revocation waited for a signature");
    }
}

/// Nothing is signed for a revocation the store would refuse or leave as it is. With every
/// revocation's OCSP signature failing (`P11CA_FAULT=revoke-ocsp-sign`), the first revocation
/// says its response was not refreshed; revoking it again for the same reason is answered
/// without trying (before, the signature was made and thrown away); an unknown serial and a
/// conflicting reason get the store's own refusal.
#[test]
fn revoke_signs_nothing_for_what_the_store_refuses() {
    let t = Token::new("serve-revoke-nosign");
    setup(&t);
    let port = free_port();
    let p = port.to_string();
    let args = serve_args(&p, &["-revoke-auth-key", "current"]);
    let env = [("P11CA_FAULT", "revoke-ocsp-sign")];
    let _srv = start_env(&t, "serve", "p11ca", &args, port, true, &env);
    let serial = issue(&t, port, "old");
    let aki = records(&t)[0].authority_key_identifier.clone();
    let revoke = |serial: &str, reason: &str| {
        let body = revoke_body(&current_key(), serial, &aki, reason);
        http(port, "POST", REVOKE, body.as_bytes()).unwrap()
    };

    let (st, text) = revoke(&serial, "keyCompromise");
    assert_eq!(st, 200, "{text}");
    assert!(text.contains(&format!("revoked serial {serial}")), "{text}");
    assert!(
        text.contains("the OCSP response was not refreshed: injected fault"),
        "{text}"
    );
    // The same reason spelled otherwise: a new envelope, not a replay.
    let (st, text) = revoke(&serial, "keycompromise");
    assert_eq!(st, 200, "{text}");
    assert!(text.contains("was already revoked"), "{text}");
    assert!(!text.contains("OCSP"), "a signature was attempted: {text}");
    let (st, text) = revoke(&serial, "superseded");
    assert_eq!(st, 400, "{text}");
    assert!(
        text.contains("already revoked with reason keycompromise"),
        "{text}"
    );
    let (st, text) = revoke("123456789", "keyCompromise");
    assert_eq!(st, 400, "{text}");
    assert!(text.contains("is not in the certificate store"), "{text}");
}
