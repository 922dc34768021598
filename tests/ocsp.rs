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
    ocspsign_with(t, "ca-key.uri", extra, out)
}

/// [`ocspsign`] with `-responder-key KEY`.
fn ocspsign_with(t: &Token, key: &str, extra: &[&str], out: &str) -> Run {
    let mut args = vec![
        "ocspsign",
        "-ca",
        "ca.pem",
        "-responder-key",
        key,
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

/// `-responder-id key` names the responder by the SHA-1 of its public key (RFC 5019 §2.2.3)
/// instead of cfssl's subject; OpenSSL verifies the response and prints that hash.
#[test]
fn responder_id_by_key_is_the_sha1_of_the_responder_key() {
    use der::DecodePem;
    use sha1::Digest;
    let t = seed();
    ocspsign(&t, &["-responder-id", "key"], "bykey.der").ok();
    let text = openssl_reads(&t, "bykey.der");
    assert!(text.contains("node.pem: good"), "{text}");
    let ca = x509_cert::Certificate::from_pem(t.read("ca.pem")).unwrap();
    let key = ca.tbs_certificate().subject_public_key_info();
    let hash = sha1::Sha1::digest(key.subject_public_key.raw_bytes());
    let hash = p11ca::text::hex(&hash).to_uppercase();
    assert!(text.contains(&format!("Responder Id: {hash}")), "{text}");
    ocspsign(&t, &["-responder-id", "hash"], "x.der")
        .fails(1, "-responder-id: \"hash\" is not a responder ID form");
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
    t.other_ca();
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

/// The GET at `url` answered with `head` (its response in get.der): its ETag is the
/// response's own (SHA-256 of its bytes); naming it in If-None-Match gets 304 with no body,
/// any other tag the response again.
fn revalidates_by_etag(t: &Token, url: &str, head: &str) {
    use sha2::Digest;
    let etag = head
        .lines()
        .find_map(|l| l.strip_prefix("ETag: "))
        .unwrap()
        .trim()
        .to_string();
    let body = std::fs::read(t.path("get.der")).unwrap();
    let digest = p11ca::text::hex(&sha2::Sha256::digest(&body)).to_ascii_uppercase();
    assert_eq!(etag, format!("\"{digest}\""));
    let get = |if_none_match: &str, out: &str| {
        crate::util::sh(t.command("curl").args([
            "-sS",
            "-D",
            "-",
            "-o",
            out,
            "-H",
            &format!("If-None-Match: {if_none_match}"),
            url,
        ]))
    };
    let cached = get(&etag, "cached.der");
    assert!(cached.starts_with("HTTP/1.1 304 Not Modified"), "{cached}");
    assert!(cached.contains(&format!("ETag: {etag}")), "{cached}");
    assert!(!cached.contains("Content-Length"), "{cached}");
    // (curl creates no output file when no body arrives)
    assert!(
        std::fs::read(t.path("cached.der"))
            .unwrap_or_default()
            .is_empty()
    );
    let listed = get(&format!("\"stale\", W/{etag}"), "listed.der");
    assert!(listed.starts_with("HTTP/1.1 304"), "{listed}");
    let stale = get("\"stale\"", "stale.der");
    assert!(stale.starts_with("HTTP/1.1 200"), "{stale}");
    assert_eq!(std::fs::read(t.path("stale.der")).unwrap(), body);
}

/// A raw HTTP exchange (request bytes as given); the status and body bytes.
pub(crate) fn raw_http(port: u16, request: &[u8]) -> (u16, Vec<u8>) {
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

    let req = get_is_answered_with_caching_headers(&t, port);

    bad_requests_get_the_rfc_error_status(&t, port, &req);
}

/// An RFC 5019 GET for good.pem is answered with the caching headers and revalidates by ETag;
/// returns the DER request.
fn get_is_answered_with_caching_headers(t: &Token, port: u16) -> Vec<u8> {
    // RFC 5019 GET, with the caching headers.
    let req = t.ocsp_request("ca.pem", "good.pem", &[]);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&req);
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

    revalidates_by_etag(t, &format!("http://127.0.0.1:{port}/{enc}"), &head);
    req
}

/// Cut, non-DER, too large and unauthorized requests get the RFC's answers, and the responder
/// still answers a good request after them.
fn bad_requests_get_the_rfc_error_status(t: &Token, port: u16, req: &[u8]) {
    // Bad requests: the RFC's error status, and the next good request is still answered.
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
    t.other_ca();
    let other = t.ocsp_request("other.pem", "other.pem", &[]);
    assert_eq!(post(&other), (200, vec![0x30, 0x03, 0x0a, 0x01, 0x06]));
    // The right certificate under another hash algorithm: stored responses answer SHA-1
    // CertIDs (RFC 5019), so unauthorized rather than a response for a CertID not asked about.
    let sha256 = t.ocsp_request("ca.pem", "good.pem", &["-sha256"]);
    assert_eq!(post(&sha256), (200, vec![0x30, 0x03, 0x0a, 0x01, 0x06]));
    assert!(ask(t, port, "good.pem").contains("good.pem: good"));
}

/// The seed's profile plus a delegated responder's ("ocsp signing").
pub(crate) const RESPONDER_CONFIG: &str = r#"{"signing":{"default":{"expiry":"8760h"},"profiles":{
  "ocsp":{"usages":["digital signature","ocsp signing"],"expiry":"8760h"},
  "fenced":{"usages":["digital signature","ocsp signing"],"expiry":"8760h","name_whitelist":"^only-this$"},
  "rsa-only":{"usages":["digital signature","ocsp signing"],"expiry":"8760h","policy":{"allowed_key_algorithms":["rsa"]}}}}}"#;

/// `gencert -ca ... -profile PROFILE --key-in-token resp-csr.json` with `extra` flags.
pub(crate) fn gencert_in_token(t: &Token, profile: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "gencert",
        "-ca",
        "ca.pem",
        "-ca-key",
        "ca-key.uri",
        "-config",
        "ocsp-config.json",
        "-profile",
        profile,
        "--key-in-token",
    ];
    args.extend_from_slice(extra);
    args.push("resp-csr.json");
    t.run(&args)
}

/// [`seed`] plus resp.pem, a delegated responder whose key `gencert --key-in-token` made in
/// the token (three new objects: the key pair and the certificate) and whose handle `json
/// -bare` wrote to resp-key.uri.
fn seed_responder() -> Token {
    let t = seed();
    make_responder(&t);
    t
}

/// In `t` (a CA in ca.pem and ca-key.uri): resp.pem and resp-key.uri, a delegated responder
/// whose key `gencert --key-in-token` made in the token.
pub(crate) fn make_responder(t: &Token) {
    t.write("ocsp-config.json", RESPONDER_CONFIG);
    t.write(
        "resp-csr.json",
        r#"{"CN":"ocsp-responder","key":{"algo":"ecdsa","size":256}}"#,
    );
    let before = t.object_count();
    let g = gencert_in_token(t, "ocsp", &[]);
    g.ok();
    assert!(!g.stdout.contains("PRIVATE KEY"), "{}", g.stdout);
    t.run_in(&["json", "-bare", "resp"], g.stdout.as_bytes())
        .ok();
    assert!(t.read("resp-key.uri").contains("object=ocsp-responder"));
    assert!(!t.path("resp-key.pem").exists());
    assert_eq!(t.object_count(), before + 3);
}

/// `ocsprefresh` of the store in p11ca-certs.db, signed by the delegated responder resp.pem.
pub(crate) const REFRESH_WITH_RESPONDER: [&str; 9] = [
    "ocsprefresh",
    "--db",
    "p11ca-certs.db",
    "-ca",
    "ca.pem",
    "-responder",
    "resp.pem",
    "-responder-key",
    "resp-key.uri",
];

/// The store's record of the certificate with CN `cn`.
fn stored(t: &Token, cn: &str) -> p11ca::db::CertRecord {
    use p11ca::db::{DbConfig, ListFilter, Store};
    Store::open_existing(&DbConfig::Sqlite(t.path("p11ca-certs.db")))
        .unwrap()
        .list(ListFilter::default())
        .unwrap()
        .into_iter()
        .find(|r| r.common_name == cn)
        .unwrap_or_else(|| panic!("no record of {cn}"))
}

/// Whether the store holds an OCSP response for the certificate with CN `cn`.
fn has_response(t: &Token, cn: &str) -> bool {
    use p11ca::db::{DbConfig, Store};
    let r = stored(t, cn);
    Store::open_existing(&DbConfig::Sqlite(t.path("p11ca-certs.db")))
        .unwrap()
        .ocsp_response(&r.serial_number, &r.authority_key_identifier)
        .unwrap()
        .is_some()
}

/// The private key labelled `label` was made as a CA key is: sensitive, never extractable.
fn assert_key_stays_in_the_token(t: &Token, label: &str) {
    let list = t.run(&["key", "list"]);
    list.ok();
    let lines: Vec<&str> = list.stdout.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("private") && l.contains(&format!("object={label};")))
        .unwrap_or_else(|| panic!("{}", list.stdout));
    let attrs = lines[at + 1];
    for want in [
        "CKA_SENSITIVE=true",
        "CKA_EXTRACTABLE=false",
        "CKA_NEVER_EXTRACTABLE=true",
    ] {
        assert!(attrs.contains(want), "{want}: {attrs}");
    }
}

#[test]
fn delegated_responder_with_its_key_in_the_token_answers_good_then_revoked() {
    let t = seed_responder();
    let text = crate::util::x509_text(&t, "resp.pem");
    assert!(text.contains("OCSP Signing"), "{text}");
    assert!(text.contains("OCSP No Check"), "{text}");
    assert_key_stays_in_the_token(&t, "ocsp-responder");

    // One response by ocspsign: signed by the responder, its certificate included.
    let r = ocspsign_with(&t, "resp-key.uri", &["-responder", "resp.pem"], "good.der");
    r.ok();
    let good = openssl_reads(&t, "good.der");
    assert!(good.contains("node.pem: good"), "{good}");
    assert!(good.contains("Responder Id: CN = ocsp-responder"), "{good}");
    // The certificates in the response: the responder's (openssl prints them after the data).
    assert!(good.contains("Subject: CN=ocsp-responder"), "{good}");

    // From the store, through ocspserve: good, then revoked after revoke and ocsprefresh.
    let refresh = || {
        let r = t.run(&REFRESH_WITH_RESPONDER);
        r.ok();
        assert!(
            r.stderr.contains("2 responses signed and stored"),
            "{}",
            r.stderr
        );
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
    assert!(ask(&t, port, "node.pem").contains("node.pem: good"));
    let node = stored(&t, "node");
    t.run(&[
        "revoke",
        "--db",
        "p11ca-certs.db",
        "-serial",
        &node.serial_number,
        "-aki",
        &node.authority_key_identifier,
        "-reason",
        "keyCompromise",
    ])
    .ok();
    refresh();
    let revoked = ask(&t, port, "node.pem");
    assert!(revoked.contains("node.pem: revoked"), "{revoked}");
    assert!(revoked.contains("Reason: keyCompromise"), "{revoked}");
}

#[test]
fn a_responder_that_cannot_answer_is_refused_before_anything_is_signed() {
    let t = seed_responder();
    let objects = t.object_count();
    // No OCSPSigning: refused before the token is opened (the token named does not exist).
    let r = crate::util::run(
        t.p11ca().env("P11CA_TOKEN", "no-such-token").args([
            "ocspsign",
            "-ca",
            "ca.pem",
            "-responder",
            "node.pem",
            "-responder-key",
            "resp-key.uri",
            "-cert",
            "node.pem",
        ]),
        None,
    );
    r.fails(3, "-responder node.pem: the delegated responder certificate lacks extended key usage OCSPSigning");

    // A key that is not resp.pem's: nothing signed, nothing stored.
    ocspsign_with(&t, "ca-key.uri", &["-responder", "resp.pem"], "x.der")
        .fails(3, "resp.pem does not belong to the key");
    t.run(&[
        "ocsprefresh",
        "--db",
        "p11ca-certs.db",
        "-ca",
        "ca.pem",
        "-responder",
        "resp.pem",
        "-responder-key",
        "ca-key.uri",
    ])
    .fails(3, "resp.pem does not belong to the key");
    assert!(!has_response(&t, "node"));
    assert!(!has_response(&t, "ocsp-responder"));
    assert!(!t.path("x.der").exists());
    assert_eq!(t.object_count(), objects);
}

#[test]
fn a_failed_gencert_key_in_token_leaves_no_new_token_object() {
    let t = seed_responder();
    let objects = t.object_count();
    let records = |t: &Token| {
        use p11ca::db::{DbConfig, ListFilter, Store};
        Store::open_existing(&DbConfig::Sqlite(t.path("p11ca-certs.db")))
            .unwrap()
            .list(ListFilter::default())
            .unwrap()
            .len()
    };
    let recorded = records(&t);
    // The label is taken (by the responder made in seed_responder): refused before keygen.
    gencert_in_token(&t, "ocsp", &[])
        .fails(3, "already has an object with label \"ocsp-responder\"");
    // Refused by the profile's name rules before any key is made (a refusal after keygen
    // would say that the new objects were removed).
    let r = gencert_in_token(&t, "fenced", &["--key-label", "fenced"]);
    r.fails(3, "resp-csr.json: ").fails(3, "name_whitelist");
    assert!(!r.stderr.contains("removed"), "{}", r.stderr);
    // A profile that allows no ECDSA key refuses the planned P-256 key, also before keygen.
    let r = gencert_in_token(&t, "rsa-only", &["--key-label", "rsa-only"]);
    r.fails(
        3,
        "does not allow ECDSA keys (policy.allowed_key_algorithms)",
    );
    assert!(!r.stderr.contains("removed"), "{}", r.stderr);
    assert_eq!(t.object_count(), objects);
    assert_eq!(records(&t), recorded);
    // A CSR with a "ca" section is not a leaf: refused before the token is opened.
    t.write(
        "resp-csr.json",
        r#"{"CN":"r2","key":{"algo":"ecdsa","size":256},"ca":{"expiry":"1h"}}"#,
    );
    gencert_in_token(&t, "ocsp", &[]).fails(
        1,
        "resp-csr.json: the \"ca\" section is only allowed with -initca",
    );
    assert_eq!(t.object_count(), objects);
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs --features fault-injection"
)]
fn gencert_key_in_token_rolls_back_after_a_token_failure() {
    let t = seed_responder();
    let objects = t.object_count();
    for point in ["after-keygen", "before-store-cert", "after-store-cert"] {
        let r = crate::util::run(
            t.p11ca().env("P11CA_FAULT", point).args([
                "gencert",
                "-ca",
                "ca.pem",
                "-ca-key",
                "ca-key.uri",
                "-config",
                "ocsp-config.json",
                "-profile",
                "ocsp",
                "--key-in-token",
                "--key-label",
                "second",
                "resp-csr.json",
            ]),
            None,
        );
        r.fails(
            2,
            "every object this run created was removed from the token",
        );
        assert_eq!(
            t.object_count(),
            objects,
            "objects left after a fault at {point}"
        );
    }
    // Nothing stale blocks the label afterwards.
    gencert_in_token(&t, "ocsp", &["--key-label", "second"]).ok();
    assert_eq!(t.object_count(), objects + 3);
}

/// The same responder behind two processes sharing one PostgreSQL store (as replicas behind a
/// load balancer) gives byte-identical answers: good, revoked after `revoke` and
/// `ocsprefresh`, and unauthorized for a certificate of another CA.
#[test]
fn two_responders_on_one_postgres_store_answer_identically() {
    let pg = crate::store::Postgres::start();
    let t = seed();
    t.write(
        "db.json",
        &serde_json::json!({"driver": "postgres", "data_source": pg.dsn}).to_string(),
    );
    for n in ["a", "b"] {
        t.write(
            &format!("{n}.json"),
            &format!(
                r#"{{"CN":"{n}","hosts":["{n}.example"],"key":{{"algo":"ecdsa","size":256}}}}"#
            ),
        );
        let file = format!("{n}.json");
        let g = t.run(&ca_args("gencert", &["-db-config", "db.json", &file]));
        g.ok();
        t.run_in(&["json", "-bare", n], g.stdout.as_bytes()).ok();
    }
    let refresh = || {
        t.run(&[
            "ocsprefresh",
            "-db-config",
            "db.json",
            "-ca",
            "ca.pem",
            "-responder-key",
            "ca-key.uri",
        ])
        .ok();
    };
    refresh();
    let ports: Vec<u16> = (0..2).map(|_| crate::util::free_port()).collect();
    let _servers: Vec<_> = ports
        .iter()
        .map(|port| {
            let p = port.to_string();
            crate::serve::start(
                &t,
                "ocspserve",
                "p11ca",
                &["ocspserve", "-db-config", "db.json", "-port", &p],
                *port,
                false,
            )
        })
        .collect();
    both_answer_the_same(&t, &ports, "a.pem", "good");
    both_answer_the_same(&t, &ports, "b.pem", "good");
    t.run(&[
        "revoke",
        "-db-config",
        "db.json",
        "b.pem",
        "-reason",
        "keyCompromise",
    ])
    .ok();
    refresh();
    both_answer_the_same(&t, &ports, "a.pem", "good");
    both_answer_the_same(&t, &ports, "b.pem", "revoked");

    both_answer_unauthorized_for_another_ca(&t, &ports);
}

/// Both responders answer a request for `cert` with the same bytes, in which OpenSSL reads
/// `want`.
fn both_answer_the_same(t: &Token, ports: &[u16], cert: &str, want: &str) {
    // One request per certificate (no nonce, so that equal answers are equal bytes), POSTed
    // to both processes.
    let body = t.ocsp_request("ca.pem", cert, &[]);
    let got: Vec<(u16, Vec<u8>)> = ports
        .iter()
        .map(|port| {
            let mut r = format!(
                "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/ocsp-request\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .into_bytes();
            r.extend_from_slice(&body);
            raw_http(*port, &r)
        })
        .collect();
    assert_eq!(got[0].0, 200, "{cert}");
    assert_eq!(
        got[0], got[1],
        "{cert}: the two processes answered differently"
    );
    let file = format!("{cert}.resp");
    std::fs::write(t.path(&file), &got[0].1).unwrap();
    let text = crate::util::sh(t.command("openssl").args([
        "ocsp", "-respin", &file, "-issuer", "ca.pem", "-cert", cert, "-CAfile", "ca.pem",
    ]));
    assert!(text.contains(&format!("{cert}: {want}")), "{cert}: {text}");
}

/// Both responders answer "unauthorized" for a certificate of another CA, with the same bytes.
fn both_answer_unauthorized_for_another_ca(t: &Token, ports: &[u16]) {
    // A certificate of another CA: both say unauthorized (status 6), the same bytes.
    t.other_ca();
    let body = t.ocsp_request("other.pem", "other.pem", &[]);
    let b64 = base64::engine::general_purpose::STANDARD
        .encode(&body)
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    let got: Vec<(u16, Vec<u8>)> = ports
        .iter()
        .map(|port| {
            raw_http(
                *port,
                format!(
                    "GET /{b64} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            )
        })
        .collect();
    assert_eq!(got[0], got[1]);
    assert_eq!(got[0].1, [0x30, 0x03, 0x0a, 0x01, 0x06], "unauthorized");
}
