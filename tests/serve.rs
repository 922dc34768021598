//! `p11ca serve` and the remote client, end to end on fresh SoftHSM2 tokens: cfssl 1.2's own
//! client against p11ca serve (with and without authsign), p11ca's client against p11ca serve
//! and against `cfssl serve` with a software key, every bad input, graceful shutdown, and
//! PostgreSQL (two replicas on one database, SIGKILL mid-load). Certificates are checked with
//! OpenSSL and against the database.
//!
//! Servers listen on a free 127.0.0.1 port, run under `timeout` (so they end even if the test
//! process dies) and are killed when the test ends; every wait is bounded.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use p11ca::cfssl::config::AuthKey;
use p11ca::client::{RemoteClient, SignRequest};
use p11ca::db::{CertRecord, DbConfig, ListFilter, Store};

use crate::util::{Token, free_port, repo, require, run, sh};

/// The shared key of the authenticated profile (hex).
const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// The server's config: `kubernetes` (plain /sign) and `secure` (authsign only, with a
/// previous key still accepted).
pub(crate) const SERVER_CONFIG: &str = r#"{
  "signing": {
    "default": {"expiry": "8760h"},
    "profiles": {
      "kubernetes": {"usages": ["signing", "key encipherment", "server auth", "client auth"], "expiry": "8760h"},
      "secure": {"usages": ["signing", "client auth"], "expiry": "720h", "auth_key": "current", "prev_auth_key": "old"}
    }
  },
  "auth_keys": {
    "current": {"type": "standard", "key": "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"},
    "old": {"type": "standard", "key": "ffffffffffffffffffffffffffffffff"}
  }
}"#;

/// A node request (ECDSA, the cfssl default).
const NODE_CSR_JSON: &str =
    r#"{"CN":"node1","hosts":["node1.example.com","10.0.0.1"],"key":{"algo":"ecdsa","size":256}}"#;

/// A client config in cfssl's format: every profile goes to the remote `ca`, `secure` with the
/// shared key (authsign). cfssl 1.2 needs the default to be remote too.
fn client_config(server: &str, key_hex: &str) -> String {
    format!(
        r#"{{
  "signing": {{
    "default": {{"auth_remote": {{"remote": "ca", "auth_key": "shared"}}}},
    "profiles": {{
      "kubernetes": {{"remote": "ca"}},
      "secure": {{"auth_remote": {{"remote": "ca", "auth_key": "shared"}}}}
    }}
  }},
  "auth_keys": {{"shared": {{"type": "standard", "key": "{key_hex}"}}}},
  "remotes": {{"ca": "{server}"}}
}}"#
    )
}

/// A running `p11ca serve` (or `cfssl serve`) under `timeout`.
pub(crate) struct Server {
    child: Child,
    pub(crate) port: u16,
    name: String,
}

impl Server {
    /// The server process itself (the child of `timeout`), for signals.
    pub(crate) fn pid(&self) -> Option<String> {
        let out = Command::new("pgrep")
            .args(["-P", &self.child.id().to_string()])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .map(str::to_string)
    }

    pub(crate) fn signal(&self, sig: &str) {
        let pid = self.pid().expect("the server process is running");
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} {pid}");
    }

    /// Wait (bounded) for the exit code.
    pub(crate) fn wait(&mut self, limit: Duration) -> i32 {
        let t = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            assert!(
                t.elapsed() < limit,
                "{} did not exit within {limit:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            if let Some(pid) = self.pid() {
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Start `program args` under `timeout 120` in `t`'s work dir with its environment; wait until
/// `GET /api/v1/cfssl/health` (p11ca) or a TCP connect (cfssl) succeeds.
pub(crate) fn start(
    t: &Token,
    name: &str,
    program: &str,
    args: &[&str],
    port: u16,
    health: bool,
) -> Server {
    start_env(t, name, program, args, port, health, &[])
}

/// [`start`] with extra environment variables.
pub(crate) fn start_env(
    t: &Token,
    name: &str,
    program: &str,
    args: &[&str],
    port: u16,
    health: bool,
    env: &[(&str, &str)],
) -> Server {
    require("timeout");
    let out = std::fs::File::create(t.path(&format!("{name}.out"))).unwrap();
    let err = std::fs::File::create(t.path(&format!("{name}.err"))).unwrap();
    let cmd = if program == "p11ca" {
        t.p11ca()
    } else {
        t.command(program)
    };
    // The environment of `cmd`, but run under timeout.
    let mut c = t.command("timeout");
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    c.envs(env.iter().copied());
    c.arg("120")
        .arg(cmd.get_program())
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    let child = c.spawn().unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    let mut s = Server {
        child,
        port,
        name: name.to_string(),
    };
    let t0 = Instant::now();
    loop {
        if let Ok(Some(st)) = s.child.try_wait() {
            panic!(
                "{name} exited early ({st}): {}",
                std::fs::read_to_string(t.path(&format!("{name}.err"))).unwrap_or_default()
            );
        }
        let up = if health {
            http(port, "GET", "/api/v1/cfssl/health", b"").is_some_and(|(st, _)| st == 200)
        } else {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        };
        if up {
            return s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{name} did not come up: {}",
            std::fs::read_to_string(t.path(&format!("{name}.err"))).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One HTTP/1.1 request with a raw body; `(status, body)`, or `None` if nothing came back.
pub(crate) fn http(port: u16, method: &str, path: &str, body: &[u8]) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(20))).ok()?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    // A server may answer (413) before it has read everything; keep going if it does.
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|x| x.1.to_string())?;
    Some((status, body))
}

/// Assert a failure envelope with `status` whose message contains `needle`; `what` names the case.
#[track_caller]
fn refused(
    port: u16,
    what: &str,
    method: &str,
    path: &str,
    body: &[u8],
    status: u16,
    needle: &str,
) {
    let (st, text) = http(port, method, path, body).expect("an answer");
    assert_eq!(st, status, "{what}: {text}");
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("envelope {text:?}: {e}"));
    assert_eq!(v["success"], false, "{what}: {text}");
    assert!(v["result"].is_null(), "{what}: {text}");
    assert_eq!(v["messages"], serde_json::json!([]), "{what}: {text}");
    let msg = v["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(needle),
        "{what}: {msg:?} should mention {needle:?}"
    );
}

/// The CA on `t` (RSA, tests/data/ca-csr.json) and the server config.
pub(crate) fn setup(t: &Token) {
    require("openssl");
    t.seed_files(&["ca-csr.json"]);
    t.initca("ca-csr.json", "ca");
    t.write("server-config.json", SERVER_CONFIG);
    t.write("node-csr.json", NODE_CSR_JSON);
}

pub(crate) fn serve_args<'a>(port: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "serve",
        "-address",
        "127.0.0.1",
        "-port",
        port,
        "-ca",
        "ca.pem",
        "-ca-key",
        "ca-key.uri",
        "-config",
        "server-config.json",
    ];
    v.extend_from_slice(extra);
    v
}

/// [`serve_args`] over TLS (tls-srv.pem) requiring client certificates from ca.pem whose CN
/// matches `cn`.
pub(crate) fn mutual_tls_args<'a>(port: &'a str, cn: &'a str) -> Vec<&'a str> {
    serve_args(
        port,
        &[
            "-tls-cert",
            "tls-srv.pem",
            "-tls-key",
            "tls-srv-key.pem",
            "-mutual-tls-ca",
            "ca.pem",
            "-mutual-tls-cn",
            cn,
        ],
    )
}

/// Start p11ca serve on `t` with `extra` flags.
pub(crate) fn p11ca_serve(t: &Token, name: &str, extra: &[&str]) -> Server {
    let port = free_port();
    let p = port.to_string();
    start(t, name, "p11ca", &serve_args(&p, extra), port, true)
}

/// `openssl verify -CAfile ca.pem FILE`, and the certificate's serial in lower-case hex.
#[track_caller]
fn verify(t: &Token, file: &str) -> String {
    let out = sh(t
        .command("openssl")
        .args(["verify", "-CAfile", "ca.pem", file]));
    assert!(out.contains(": OK"), "{out}");
    let s = sh(t
        .command("openssl")
        .args(["x509", "-noout", "-serial", "-in", file]));
    s.trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase()
        .trim_start_matches('0')
        .to_string()
}

/// The serial of a PEM certificate string (lower-case hex, no leading zeros).
fn serial_of(t: &Token, pem: &str, name: &str) -> String {
    t.write(name, pem);
    verify(t, name)
}

/// Every record the server made in the SQLite store next to the server config (not those of
/// the command line, `cli:USER@HOST`, which records the tests' CAs and client certificates in
/// the same default store).
pub(crate) fn records(t: &Token) -> Vec<CertRecord> {
    Store::open_existing(&DbConfig::Sqlite(t.path("p11ca-certs.db")))
        .unwrap()
        .list(ListFilter::default())
        .unwrap()
        .into_iter()
        .filter(|r| !r.requester.starts_with("cli:"))
        .collect()
}

fn serials(records: &[CertRecord]) -> BTreeSet<String> {
    records
        .iter()
        .map(|r| r.serial_hex.trim_start_matches('0').to_string())
        .collect()
}

/// Run a shell pipeline in the work dir (cfssl | cfssljson) and assert success.
#[track_caller]
fn pipeline(t: &Token, script: &str) -> String {
    let r = run(t.command("sh").args(["-c", script]), None);
    assert_eq!(r.code, 0, "{script}: {}{}", r.stdout, r.stderr);
    r.stderr
}

#[test]
fn cfssl_and_p11ca_clients_sign_through_serve_and_every_certificate_is_recorded() {
    require("cfssl");
    require("cfssljson");
    let t = Token::new("serve-e2e");
    setup(&t);
    let mut srv = p11ca_serve(&t, "serve", &[]);
    let port = srv.port;
    // cfssl 1.2 (built with a modern Go) cannot parse a bare "127.0.0.1:PORT" as a URL, so its
    // clients are given localhost:PORT or http://127.0.0.1:PORT.
    let local = format!("localhost:{port}");
    let url = format!("http://127.0.0.1:{port}");
    t.write("client-config.json", &client_config(&local, KEY_HEX));
    sh(t.command("openssl").args([
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "x-key.pem",
        "-subj",
        "/CN=x.example.com",
        "-addext",
        "subjectAltName=DNS:x.example.com",
        "-out",
        "x.csr",
    ]));

    let mut got = BTreeMap::new();
    cfssl_clients(&t, &local, &url, &mut got);
    p11ca_clients(&t, &srv.url(), &mut got);
    records_match(&t, &got);
    certs_commands_read_the_store(&t, got.len());
    info_and_health(&t, port, &srv.url());
    // SIGTERM: exit 0 and a closing line.
    srv.signal("TERM");
    assert_eq!(srv.wait(Duration::from_secs(10)), 0);
    let err = t.read("serve.err");
    assert!(
        err.contains(&format!("{} certificates issued and recorded", got.len())),
        "{err}"
    );
}

/// cfssl's clients against serve: `gencert`/`sign -remote` (plain /sign) and the client config
/// (authsign); a wrong key is refused. `got`: serial → profile of each certificate.
fn cfssl_clients(t: &Token, local: &str, url: &str, got: &mut BTreeMap<String, &'static str>) {
    // cfssl gencert -remote and cfssl sign -remote, plain /sign.
    pipeline(
        t,
        &format!(
            "cfssl gencert -remote {local} -profile kubernetes node-csr.json | cfssljson -bare c1"
        ),
    );
    got.insert(verify(t, "c1.pem"), "kubernetes");
    pipeline(
        t,
        &format!("cfssl sign -remote {url} -profile kubernetes x.csr | cfssljson -bare c2"),
    );
    got.insert(verify(t, "c2.pem"), "kubernetes");
    // cfssl with authsign through its client config (auth_remote + remotes + auth_keys).
    pipeline(
        t,
        "cfssl gencert -config client-config.json -profile secure node-csr.json | cfssljson -bare c3",
    );
    got.insert(verify(t, "c3.pem"), "secure");
    pipeline(
        t,
        "cfssl sign -config client-config.json -profile secure x.csr | cfssljson -bare c4",
    );
    got.insert(verify(t, "c4.pem"), "secure");
    let ext = sh(t.command("openssl").args([
        "x509",
        "-noout",
        "-ext",
        "subjectAltName,extendedKeyUsage",
        "-in",
        "c3.pem",
    ]));
    assert!(
        ext.contains("DNS:node1.example.com") && ext.contains("IP Address:10.0.0.1"),
        "{ext}"
    );
    assert!(
        ext.contains("TLS Web Client Authentication") && !ext.contains("Server"),
        "{ext}"
    );
    // cfssl with a wrong key is refused.
    t.write("bad-config.json", &client_config(local, "00ff"));
    let r = run(
        t.command("sh").args([
            "-c",
            "cfssl sign -config bad-config.json -profile secure x.csr",
        ]),
        None,
    );
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("invalid token"), "{}", r.stderr);
}

/// p11ca's own client: -remote (plain) and the client config (authsign), a subject override
/// and -hostname, and the refusals it reports.
fn p11ca_clients(t: &Token, server: &str, got: &mut BTreeMap<String, &'static str>) {
    let g = t.run(&[
        "gencert",
        "-remote",
        server,
        "-profile",
        "kubernetes",
        "node-csr.json",
    ]);
    g.ok();
    t.run_in(&["json", "-bare", "p1"], g.stdout.as_bytes()).ok();
    assert!(t.read("p1-key.pem").contains("PRIVATE KEY"));
    got.insert(verify(t, "p1.pem"), "kubernetes");
    let s = t.run(&[
        "sign",
        "-config",
        "client-config.json",
        "-profile",
        "secure",
        "x.csr",
    ]);
    s.ok();
    t.run_in(&["json", "-bare", "p2"], s.stdout.as_bytes()).ok();
    got.insert(verify(t, "p2.pem"), "secure");
    // p11ca sends a subject override and -hostname as cfssl does.
    t.write("subject.json", r#"{"CN":"renamed","names":[{"O":"acme"}]}"#);
    let s = t.run(&[
        "sign",
        "-remote",
        server,
        "-profile",
        "kubernetes",
        "-hostname",
        "a.example,10.1.1.1",
        "x.csr",
        "subject.json",
    ]);
    s.ok();
    t.run_in(&["json", "-bare", "p3"], s.stdout.as_bytes()).ok();
    got.insert(verify(t, "p3.pem"), "kubernetes");
    let text = sh(t.command("openssl").args([
        "x509",
        "-noout",
        "-subject",
        "-ext",
        "subjectAltName",
        "-in",
        "p3.pem",
    ]));
    assert!(text.contains("O = acme, CN = renamed"), "{text}");
    assert!(
        text.contains("DNS:a.example, IP Address:10.1.1.1"),
        "{text}"
    );
    // Plain /sign on the authenticated profile, and an unknown profile, are refused (exit 3).
    t.run(&["sign", "-remote", server, "-profile", "secure", "x.csr"])
        .fails(3, "authentication required");
    t.run(&["sign", "-remote", server, "-profile", "nope", "x.csr"])
        .fails(3, "unknown profile \"nope\"");
    t.run(&["sign", "-remote", "127.0.0.1:1", "x.csr"])
        .fails(2, "cannot reach it");
}

/// The database holds exactly the certificates handed out, with their details.
fn records_match(t: &Token, got: &BTreeMap<String, &'static str>) {
    let recs = records(t);
    assert_eq!(recs.len(), got.len(), "{recs:?}");
    assert_eq!(serials(&recs), got.keys().cloned().collect());
    for r in &recs {
        let s = r.serial_hex.trim_start_matches('0');
        assert_eq!(r.profile, got[s], "{r:?}");
        assert!(r.requester.starts_with("127.0.0.1:"), "{r:?}");
        assert_eq!(
            r.auth_key,
            if r.profile == "secure" { "current" } else { "" }
        );
        assert!(r.pem.contains("BEGIN CERTIFICATE"));
        assert!(r.not_after > r.not_before);
    }
    let c1 = recs
        .iter()
        .find(|r| r.serial_hex.trim_start_matches('0') == verify(t, "c1.pem"))
        .unwrap();
    assert_eq!(c1.common_name, "node1");
    assert_eq!(c1.sans, ["node1.example.com", "10.0.0.1"]);
}

/// certs list / show, from the config's folder and by --db.
fn certs_commands_read_the_store(t: &Token, issued: usize) {
    let l = t.run(&["certs", "list", "-config", "server-config.json", "--json"]);
    l.ok();
    let listed: Vec<Value> = serde_json::from_str(&l.stdout).unwrap();
    // Those the command line recorded (the CA from -initca) are listed too.
    let cli = listed
        .iter()
        .filter(|r| r["requester"].as_str().unwrap().starts_with("cli:"))
        .count();
    let issued = issued + cli;
    assert_eq!(listed.len(), issued);
    let soon = t.run(&[
        "certs",
        "list",
        "-config",
        "server-config.json",
        "--expiring",
        "721h",
        "--json",
    ]);
    let soon: Vec<Value> = serde_json::from_str(&soon.ok().stdout).unwrap();
    assert_eq!(
        soon.len(),
        3,
        "the three 720h certificates expire within 721h"
    );
    let text = t.run(&["certs", "list", "--db", "p11ca-certs.db"]);
    assert_eq!(text.ok().stdout.lines().count(), issued + 1);
    let serial = verify(t, "c1.pem");
    let show = t.run(&["certs", "show", "-config", "server-config.json", &serial]);
    assert!(show.ok().stdout.contains("CN=node1"), "{}", show.stdout);
    t.run(&["certs", "show", "--db", "p11ca-certs.db", "1234"])
        .fails(1, "not in the certificate store");
    t.run(&["certs", "list", "--db", "missing.db"])
        .fails(1, "does not exist");
}

/// info (raw and through p11ca's client) for both profiles.
fn info_and_health(t: &Token, port: u16, server: &str) {
    let (st, body) = http(
        port,
        "POST",
        "/api/v1/cfssl/info",
        br#"{"profile":"secure"}"#,
    )
    .unwrap();
    assert_eq!(st, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["result"]["usages"],
        serde_json::json!(["signing", "client auth"])
    );
    assert_eq!(v["result"]["expiry"], "720h0m0s");
    assert_eq!(
        v["result"]["certificate"].as_str().unwrap().trim(),
        t.read("ca.pem").trim()
    );
    let info = RemoteClient::new(server)
        .unwrap()
        .info("", "kubernetes")
        .unwrap();
    assert_eq!(info["expiry"], "8760h0m0s");
}

/// One refused request: a name, the request, and the status and message it must get.
struct Refusal {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    body: Vec<u8>,
    status: u16,
    needle: &'static str,
}

const SIGN: &str = "/api/v1/cfssl/sign";
const AUTHSIGN: &str = "/api/v1/cfssl/authsign";

/// A sign request for `csr` with `profile`.
fn sign_request(csr: &str, profile: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"certificate_request": csr, "profile": profile}))
        .unwrap()
}

/// An authsign envelope for `req` under `key`.
fn authsign(req: &[u8], key: &AuthKey) -> Vec<u8> {
    p11ca::cfssl::auth::wrap(key, req).into_bytes()
}

/// The authsign envelope of `req` under `key`, with `edit` applied to its JSON.
fn edited_envelope(req: &[u8], key: &AuthKey, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut env: Value = serde_json::from_slice(&authsign(req, key)).unwrap();
    edit(&mut env);
    env.to_string().into_bytes()
}

/// Malformed bodies, bad CSRs, oversize bodies, missing or wrong authentication, wrong
/// methods and paths, for a server with `--max-body 4096` and `key` as profile secure's key.
fn refusals(csr: &str, key: &AuthKey) -> Vec<Refusal> {
    let sign = |profile: &str| sign_request(csr, profile);
    // A tampered CSR: its self-signature no longer verifies.
    let mut der = der::pem::decode_vec(csr.as_bytes()).unwrap().1;
    let mid = der.len() / 2;
    der[mid] ^= 0x01;
    let tampered = p11ca::x509::build::pem("CERTIFICATE REQUEST", &der).unwrap();
    let mut longer = sign("secure");
    longer.push(b' ');
    let r = |name, method, path, body: &[u8], status, needle| Refusal {
        name,
        method,
        path,
        body: body.to_vec(),
        status,
        needle,
    };
    vec![
        r("not JSON", "POST", SIGN, b"{not json", 400, "malformed JSON"),
        r("an array", "POST", SIGN, b"[1,2]", 400, "expected a JSON object"),
        r("empty", "POST", SIGN, b"", 400, "unexpected end of JSON"),
        r("no CSR", "POST", SIGN, br#"{"profile":"kubernetes"}"#, 400, "certificate_request"),
        r("CSR not a string", "POST", SIGN, br#"{"certificate_request":7}"#, 400, "certificate_request"),
        r("unknown profile", "POST", SIGN, &sign("nope"), 400, "unknown profile \"nope\""),
        r("CSR not DER", "POST", SIGN, br#"{"certificate_request":"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n","profile":"kubernetes"}"#, 400, "certificate_request"),
        r("tampered CSR", "POST", SIGN, &sign_request(&tampered, "kubernetes"), 400, "certificate_request"),
        r("over --max-body", "POST", SIGN, &[b' '; 5000], 413, "over the limit of 4096 bytes"),
        r("3 MB", "POST", SIGN, &vec![b'x'; 3_000_000], 413, "over the limit"),
        r("auth_key profile on /sign", "POST", SIGN, &sign("secure"), 401, "authentication required"),
        r("wrong key", "POST", AUTHSIGN, &authsign(&sign("secure"), &AuthKey::new("x", vec![9; 32])), 401, "invalid token"),
        r("profile without auth_key", "POST", AUTHSIGN, &edited_envelope(&sign("secure"), key, |e| e["request"] = base64_of(&sign("kubernetes")).into()), 400, "no authentication provider"),
        r("empty token", "POST", AUTHSIGN, &edited_envelope(&sign("secure"), key, |e| { e["request"] = base64_of(&sign("kubernetes")).into(); e["token"] = "".into(); }), 401, "authentication required"),
        r("not base64", "POST", AUTHSIGN, br#"{"token":"!!","request":"%%"}"#, 400, "base64"),
        r("envelope not JSON", "POST", AUTHSIGN, b"nope", 400, "malformed JSON"),
        // The token covers the request bytes: change one byte and it fails.
        r("request changed by a byte", "POST", AUTHSIGN, &edited_envelope(&sign("secure"), key, |e| e["request"] = base64_of(&longer).into()), 401, "invalid token"),
        r("GET /sign", "GET", SIGN, b"", 405, "Method is not allowed:\"GET\""),
        r("POST /health", "POST", "/api/v1/cfssl/health", b"", 405, "Method is not allowed"),
        r("unknown endpoint", "POST", "/api/v1/cfssl/newcert", b"{}", 404, "does not offer"),
        r("outside the API", "GET", "/", b"", 404, "no such endpoint"),
        r("info, unknown profile", "POST", "/api/v1/cfssl/info", br#"{"profile":"nope"}"#, 400, "unknown profile"),
    ]
}

/// The raw answer to `bytes` sent on a fresh connection.
fn raw_exchange(port: u16, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn bad_requests_get_a_4xx_envelope_and_record_nothing() {
    let t = Token::new("serve-bad");
    setup(&t);
    let srv = p11ca_serve(&t, "serve", &["--max-body", "4096"]);
    let p = srv.port;
    let csr = t.ec_csr("x", "x");
    let key = AuthKey::new("current", (0..32).collect());
    for c in refusals(&csr, &key) {
        refused(p, c.name, c.method, c.path, &c.body, c.status, c.needle);
    }
    // Not HTTP at all, and a chunked body.
    let out = raw_exchange(p, b"\x16\x03\x01 hello\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
    let chunked = b"POST /api/v1/cfssl/sign HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
    let out = raw_exchange(p, chunked);
    assert!(out.starts_with("HTTP/1.1 411 "), "{out}");
    // Nothing was recorded, and the server is still healthy and signs.
    assert!(records(&t).is_empty());
    let (st, _) = http(p, "GET", "/api/v1/cfssl/health", b"").unwrap();
    assert_eq!(st, 200);
    let (st, body) = http(p, "POST", SIGN, &sign_request(&csr, "kubernetes")).unwrap();
    assert_eq!(st, 200, "{body}");
    let err = t.read("serve.err");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn authsign_refuses_replays_and_stale_timestamps_and_takes_the_previous_key() {
    let t = Token::new("serve-replay");
    setup(&t);
    let srv = p11ca_serve(&t, "serve", &[]);
    let p = srv.port;
    let csr = t.ec_csr("x", "x");
    let request = sign_request(&csr, "secure");
    let key = AuthKey::new("current", (0..32).collect());
    let captured = authsign(&request, &key);
    let (st, body) = http(p, "POST", AUTHSIGN, &captured).unwrap();
    assert_eq!(st, 200, "{body}");
    // A captured request replayed, as it was or with a fresh timestamp: refused.
    let (st, body) = http(p, "POST", AUTHSIGN, &captured).unwrap();
    assert!(st == 401 && body.contains("already used"), "{st} {body}");
    let (st, body) = http(p, "POST", AUTHSIGN, &with_timestamp(&captured, 0)).unwrap();
    assert!(st == 401 && body.contains("already used"), "{st} {body}");
    // The previous key (prev_auth_key) is accepted too, and recorded as such; an hour-old
    // timestamp is not.
    let by_old_key = authsign(&request, &AuthKey::new("old", vec![0xff; 16]));
    let an_hour_ago = p11ca::db::now() - 3600;
    let stale = with_timestamp(&by_old_key, an_hour_ago);
    let (st, body) = http(p, "POST", AUTHSIGN, &stale).unwrap();
    assert!(st == 401 && body.contains("timestamp"), "{st} {body}");
    let (st, body) = http(p, "POST", AUTHSIGN, &by_old_key).unwrap();
    assert_eq!(st, 200, "{body}");
    let recs = records(&t);
    assert_eq!(recs.len(), 2);
    let keys: BTreeSet<&str> = recs.iter().map(|r| r.auth_key.as_str()).collect();
    assert_eq!(keys, ["current", "old"].into_iter().collect());
}

/// An authsign envelope with its (unauthenticated, as in cfssl) timestamp replaced.
fn with_timestamp(envelope: &[u8], timestamp: i64) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(envelope).unwrap();
    v["timestamp"] = timestamp.into();
    v.to_string().into_bytes()
}

fn base64_of(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn startup_fails_fast_with_one_error_line() {
    let t = Token::new("serve-start");
    setup(&t);
    // A second CA in the same token: its certificate does not belong to the first key.
    t.write(
        "other-csr.json",
        r#"{"CN":"other","key":{"algo":"ecdsa","size":256}}"#,
    );
    t.initca("other-csr.json", "other");
    let port = free_port().to_string();
    t.run(
        &serve_args(&port, &[])
            .iter()
            .map(|a| if *a == "ca.pem" { "other.pem" } else { a })
            .collect::<Vec<_>>(),
    )
    .fails(3, "does not belong to the key");
    t.run(&["serve", "-ca-key", "ca-key.uri"])
        .fails(1, "-ca is required");
    t.write("db.json", r#"{"driver":"mysql","data_source":"x"}"#);
    t.run(&serve_args(&port, &["-db-config", "db.json"]))
        .fails(1, "not supported");
    t.write(
        "bad-auth.json",
        r#"{"signing":{"default":{"expiry":"1h","auth_key":"k"}}}"#,
    );
    t.run(&[
        "serve",
        "-port",
        &port,
        "-ca",
        "ca.pem",
        "-ca-key",
        "ca-key.uri",
        "-config",
        "bad-auth.json",
    ])
    .fails(1, "not in the auth_keys section");
    // A taken port: refused before any login.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = l.local_addr().unwrap().port().to_string();
    t.run(&serve_args(&taken, &[]))
        .fails(1, "cannot listen on 127.0.0.1:");
    let mut c = t.p11ca();
    c.env("P11CA_PIN", "0000");
    run(c.args(serve_args(&port, &[])), None).fails(2, "wrong PIN");
    assert!(!t.path("p11ca-certs.db").exists() || records(&t).is_empty());
}

/// `n` threads, each signing `per` CSRs over one keep-alive connection through p11ca's
/// client, against `servers` in turn; returns the PEMs received (stops a thread at its first
/// failure once `stop` is set, and records it).
pub(crate) fn load(
    servers: &[String],
    csr: &str,
    profile: &str,
    n: usize,
    per: usize,
    stop: &AtomicBool,
    received: &Mutex<Vec<String>>,
) -> Vec<String> {
    let errors = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for i in 0..n {
            let server = servers[i % servers.len()].clone();
            let errors = &errors;
            s.spawn(move || {
                let client = RemoteClient::new(&server).unwrap();
                for _ in 0..per {
                    let req = SignRequest {
                        csr_pem: csr,
                        hosts: None,
                        profile,
                        label: "",
                        subject: None,
                    };
                    match client.sign(&req, None) {
                        Ok((pem, _)) => received.lock().unwrap().push(pem),
                        Err(e) => {
                            if !stop.load(Ordering::SeqCst) {
                                errors.lock().unwrap().push(e.to_string());
                            }
                            return;
                        }
                    }
                }
            });
        }
    });
    errors.into_inner().unwrap()
}

/// The serials of PEM certificates (lower-case hex, no leading zeros), parsed in process.
fn pem_serials(pems: &[String]) -> Vec<String> {
    pems.iter()
        .map(|p| {
            let der = der::pem::decode_vec(p.as_bytes()).unwrap().1;
            let rec = CertRecord::from_der(&der, "", "", "").unwrap();
            rec.serial_hex.trim_start_matches('0').to_string()
        })
        .collect()
}

#[test]
fn sigterm_finishes_and_records_requests_in_flight() {
    let t = Token::new("serve-term");
    setup(&t);
    // One session, so that requests queue for the token and are in flight at SIGTERM.
    let srv = p11ca_serve(&t, "serve", &["--jobs", "1"]);
    t.ec_csr("load", "load");
    let csr = t.read("load.csr");
    let stop = AtomicBool::new(false);
    let received = Mutex::new(Vec::new());
    let srv = Arc::new(Mutex::new(srv));
    let url = srv.lock().unwrap().url();
    let (errors, code, after) = std::thread::scope(|s| {
        let loader = s.spawn(|| {
            load(
                std::slice::from_ref(&url),
                &csr,
                "kubernetes",
                8,
                40,
                &stop,
                &received,
            )
        });
        // Once some certificates are out, stop the server while requests queue for the token.
        let t0 = Instant::now();
        while received.lock().unwrap().len() < 20 {
            assert!(t0.elapsed() < Duration::from_secs(30), "no progress");
            std::thread::sleep(Duration::from_millis(5));
        }
        stop.store(true, Ordering::SeqCst);
        let at_signal = received.lock().unwrap().len();
        srv.lock().unwrap().signal("TERM");
        let code = srv.lock().unwrap().wait(Duration::from_secs(20));
        let errors = loader.join().unwrap();
        (errors, code, received.lock().unwrap().len() - at_signal)
    });
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(code, 0, "{}", t.read("serve.err"));
    let got = received.into_inner().unwrap();
    assert!(
        got.len() < 8 * 40,
        "the server stopped before the load ended"
    );
    assert!(after > 0, "requests in flight at SIGTERM were answered");
    let recs = records(&t);
    let want: BTreeSet<String> = pem_serials(&got).into_iter().collect();
    assert_eq!(want.len(), got.len(), "serials are unique");
    assert_eq!(
        serials(&recs),
        want,
        "every certificate answered is recorded, nothing else"
    );
    // After the stop, the port is closed.
    assert!(TcpStream::connect(("127.0.0.1", srv.lock().unwrap().port)).is_err());
}

/// `cfssl serve` on loopback with a software ECDSA CA (cfssl-ca.pem) and SERVER_CONFIG; its
/// process and port.
fn cfssl_serve(t: &Token) -> (Server, u16) {
    t.write(
        "cfssl-ca-csr.json",
        r#"{"CN":"cfssl soft CA","key":{"algo":"ecdsa","size":256}}"#,
    );
    pipeline(
        t,
        "cfssl gencert -initca cfssl-ca-csr.json | cfssljson -bare cfssl-ca",
    );
    t.write("server-config.json", SERVER_CONFIG);
    t.write("node-csr.json", NODE_CSR_JSON);
    let port = free_port();
    let p = port.to_string();
    let srv = start(
        t,
        "cfssl-serve",
        "cfssl",
        &[
            "serve",
            "-ca",
            "cfssl-ca.pem",
            "-ca-key",
            "cfssl-ca-key.pem",
            "-config",
            "server-config.json",
            "-address",
            "127.0.0.1",
            "-port",
            &p,
        ],
        port,
        false,
    );
    (srv, port)
}

#[test]
fn p11ca_client_against_cfssl_serve_with_a_software_key() {
    require("cfssl");
    require("cfssljson");
    let t = Token::new("serve-cfssl");
    let (_srv, port) = cfssl_serve(&t);
    let url = format!("127.0.0.1:{port}");
    let check = |file: &str| {
        let out = sh(t
            .command("openssl")
            .args(["verify", "-CAfile", "cfssl-ca.pem", file]));
        assert!(out.contains(": OK"), "{out}");
    };
    // Plain /sign with -remote.
    let g = t.run(&[
        "gencert",
        "-remote",
        &url,
        "-profile",
        "kubernetes",
        "node-csr.json",
    ]);
    t.run_in(&["json", "-bare", "n1"], g.ok().stdout.as_bytes())
        .ok();
    check("n1.pem");
    // authsign through the client config.
    t.write("client-config.json", &client_config(&url, KEY_HEX));
    let g = t.run(&[
        "gencert",
        "-config",
        "client-config.json",
        "-profile",
        "secure",
        "node-csr.json",
    ]);
    t.run_in(&["json", "-bare", "n2"], g.ok().stdout.as_bytes())
        .ok();
    check("n2.pem");
    let s = t.run(&[
        "sign",
        "-config",
        "client-config.json",
        "-profile",
        "secure",
        "n1.csr",
    ]);
    t.run_in(&["json", "-bare", "n3"], s.ok().stdout.as_bytes())
        .ok();
    check("n3.pem");
    // cfssl's refusals come back as one error line.
    t.run(&["sign", "-remote", &url, "-profile", "secure", "n1.csr"])
        .fails(3, "refused");
    t.write(
        "bad-config.json",
        &client_config(&url, "00ff00ff00ff00ff00ff00ff00ff00ff"),
    );
    t.run(&[
        "sign",
        "-config",
        "bad-config.json",
        "-profile",
        "secure",
        "n1.csr",
    ])
    .fails(3, "invalid token");
}

#[test]
fn tls_with_client_certificates_for_cfssl_and_p11ca_clients() {
    require("cfssl");
    require("cfssljson");
    let t = Token::new("serve-tls");
    setup(&t);
    tls_certificates(&t);
    let port = free_port();
    let p = port.to_string();
    let args = mutual_tls_args(&p, "node-.*");
    let mut srv = start(&t, "serve", "p11ca", &args, port, false);
    let url = format!("https://localhost:{port}");
    let mtls = [
        "-tls-remote-ca",
        "ca.pem",
        "-mutual-tls-client-cert",
        "tls-cl.pem",
        "-mutual-tls-client-key",
        "tls-cl-key.pem",
    ];
    // cfssl's client with mutual TLS.
    pipeline(
        &t,
        &format!(
            "cfssl gencert -remote {url} {} -profile kubernetes node-csr.json | cfssljson -bare c1",
            mtls.join(" ")
        ),
    );
    let s1 = verify(&t, "c1.pem");
    // p11ca's client with mutual TLS.
    let mut args = vec!["gencert", "-remote", &url];
    args.extend_from_slice(&mtls);
    args.extend_from_slice(&["-profile", "kubernetes", "node-csr.json"]);
    let g = t.run(&args);
    t.run_in(&["json", "-bare", "p1"], g.ok().stdout.as_bytes())
        .ok();
    let s2 = verify(&t, "p1.pem");
    tls_refusals(&t, &url);
    // Plain HTTP gets nothing.
    assert!(http(port, "GET", "/api/v1/cfssl/health", b"").is_none_or(|(st, _)| st != 200));
    // Both recorded, with the caller's certificate CN.
    let recs = records(&t);
    assert_eq!(serials(&recs), [s1, s2].into_iter().collect());
    for r in &recs {
        assert!(r.requester.contains("CN=node-client"), "{r:?}");
    }
    srv.signal("TERM");
    assert_eq!(srv.wait(Duration::from_secs(10)), 0);
    assert!(t.read("serve.err").contains("listening on https://"));
}

/// tls-srv.pem (localhost), tls-cl.pem (CN node-client) and tls-bad.pem (CN intruder), with
/// their keys, issued by the token CA.
fn tls_certificates(t: &Token) {
    t.write(
        "srv-csr.json",
        r#"{"CN":"localhost","hosts":["localhost","127.0.0.1"],"key":{"algo":"ecdsa","size":256}}"#,
    );
    t.write(
        "cl-csr.json",
        r#"{"CN":"node-client","key":{"algo":"ecdsa","size":256}}"#,
    );
    t.write(
        "bad-csr.json",
        r#"{"CN":"intruder","key":{"algo":"ecdsa","size":256}}"#,
    );
    for (csr, name) in [
        ("srv-csr.json", "tls-srv"),
        ("cl-csr.json", "tls-cl"),
        ("bad-csr.json", "tls-bad"),
    ] {
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
            csr,
        ]);
        t.run_in(&["json", "-bare", name], g.ok().stdout.as_bytes())
            .ok();
    }
}

/// Refused over mutual TLS at `url`: no client certificate (the handshake fails), a CN outside
/// the rule (403), a server certificate the client does not trust.
fn tls_refusals(t: &Token, url: &str) {
    // Without a client certificate the handshake fails; a CN outside the rule gets 403; an
    // untrusted server certificate is refused by the client.
    t.run(&[
        "gencert",
        "-remote",
        url,
        "-tls-remote-ca",
        "ca.pem",
        "-profile",
        "kubernetes",
        "node-csr.json",
    ])
    .fails(2, "cannot reach it");
    t.run(&[
        "gencert",
        "-remote",
        url,
        "-tls-remote-ca",
        "ca.pem",
        "-mutual-tls-client-cert",
        "tls-bad.pem",
        "-mutual-tls-client-key",
        "tls-bad-key.pem",
        "-profile",
        "kubernetes",
        "node-csr.json",
    ])
    .fails(3, "does not match -mutual-tls-cn");
    t.write("other-ca.pem", &t.read("tls-srv.pem"));
    t.run(&[
        "gencert",
        "-remote",
        url,
        "-tls-remote-ca",
        "other-ca.pem",
        "-mutual-tls-client-cert",
        "tls-cl.pem",
        "-mutual-tls-client-key",
        "tls-cl-key.pem",
        "-profile",
        "kubernetes",
        "node-csr.json",
    ])
    .fails(2, "cannot reach it");
}

/// Start p11ca serve (one session) with `P11CA_FAULT=fault` (`fault-injection` feature).
fn p11ca_serve_with_fault(t: &Token, name: &str, fault: &str) -> Server {
    let port = free_port();
    let p = port.to_string();
    let args = serve_args(&p, &["--jobs", "1"]);
    start_env(
        t,
        name,
        "p11ca",
        &args,
        port,
        true,
        &[("P11CA_FAULT", fault)],
    )
}

/// A token with the CA set up, and a node CSR (PEM).
fn token_and_node_csr(name: &str) -> (Token, String) {
    let t = Token::new(name);
    setup(&t);
    let csr = t.ec_csr("node", "node");
    (t, csr)
}

/// A plain sign request for `csr` with the kubernetes profile.
fn kubernetes_request(csr: &str) -> SignRequest<'_> {
    SignRequest {
        csr_pem: csr,
        hosts: None,
        profile: "kubernetes",
        label: "",
        subject: None,
    }
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs --features fault-injection"
)]
fn stale_sessions_are_reopened() {
    let (t, csr) = token_and_node_csr("serve-stale");
    let req = kubernetes_request(&csr);
    // Gone before signing: the session is replaced and the request signed on the new one.
    let srv = p11ca_serve_with_fault(&t, "stale", "serve-stale-session");
    let c = RemoteClient::new(&srv.url()).unwrap();
    let mut got = Vec::new();
    for _ in 0..6 {
        got.push(
            c.sign(&req, None)
                .expect("signed despite a stale session")
                .0,
        );
    }
    drop(srv);
    // Gone during C_Sign: the request fails (503, never signed twice), the next ones work.
    let srv = p11ca_serve_with_fault(&t, "during", "serve-stale-during-sign");
    let c = RemoteClient::new(&srv.url()).unwrap();
    let mut failed = 0;
    for _ in 0..6 {
        match c.sign(&req, None) {
            Ok((pem, _)) => got.push(pem),
            Err(e) => {
                assert!(
                    e.to_string().contains("HTTP 503") && e.to_string().contains("during C_Sign"),
                    "{e}"
                );
                failed += 1;
            }
        }
    }
    assert_eq!(failed, 2);
    let recs = records(&t);
    assert_eq!(serials(&recs), pem_serials(&got).into_iter().collect());
    assert_eq!(recs.len(), 10);
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs --features fault-injection"
)]
fn a_dropped_login_is_redone_with_the_kept_pin() {
    let (t, csr) = token_and_node_csr("serve-logout");
    let req = kubernetes_request(&csr);
    // At the fourth request the server is logged out of the token for real (C_Logout): the
    // token refuses to sign (CKR_USER_NOT_LOGGED_IN) until the server logs in again.
    let srv = p11ca_serve_with_fault(&t, "logout", "serve-logout");
    let c = RemoteClient::new(&srv.url()).unwrap();
    let mut got = Vec::new();
    for i in 0..8 {
        match c.sign(&req, None) {
            Ok((pem, _)) => got.push(pem),
            Err(e) => panic!("request {i} failed after the token dropped the login: {e}"),
        }
    }
    let health = http(srv.port, "GET", "/api/v1/cfssl/health", b"");
    drop(srv);
    assert_eq!(
        health.map(|(st, _)| st),
        Some(200),
        "healthy after logging in again"
    );
    let recs = records(&t);
    assert_eq!(recs.len(), 8);
    assert_eq!(serials(&recs), pem_serials(&got).into_iter().collect());
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs --features fault-injection"
)]
fn a_health_check_that_finds_the_login_gone_logs_in_again_without_reconnecting() {
    let (t, csr) = token_and_node_csr("serve-health-logout");
    // Every /health check first logs the server out of the token for real (C_Logout), as a
    // token reset would; start-up waits for one such check to pass.
    let srv = p11ca_serve_with_fault(&t, "health-logout", "serve-health-logout");
    let health = || http(srv.port, "GET", "/api/v1/cfssl/health", b"").map(|(st, _)| st);
    for i in 0..3 {
        assert_eq!(
            health(),
            Some(200),
            "health check {i} after the login was dropped"
        );
    }
    let c = RemoteClient::new(&srv.url()).unwrap();
    let (pem, _) = c
        .sign(&kubernetes_request(&csr), None)
        .expect("signed after the health checks logged in again");
    drop(srv);
    t.write("after-health.pem", &pem);
    verify(&t, "after-health.pem");
    // The token never went away: logging in again was enough, the module was not
    // initialized anew (which would close every session and show in the log).
    let log = t.read("health-logout.err");
    assert!(!log.contains("initialized again"), "{log}");
    assert_eq!(records(&t).len(), 1);
}

#[test]
fn a_token_that_goes_away_and_comes_back_is_reconnected() {
    // A network HSM stand-in: the token is served by p11-kit server, which is stopped for
    // real while p11ca serve runs, then started again.
    let t = Token::on(crate::util::Backend::P11Kit, "serve-net");
    setup(&t);
    let csr = t.ec_csr("node", "node");
    let req = kubernetes_request(&csr);
    let srv = p11ca_serve(&t, "serve", &[]);
    let c = RemoteClient::new(&srv.url()).unwrap();
    let mut got = vec![
        c.sign(&req, None)
            .expect("signed before the token went away")
            .0,
    ];
    let health = || http(srv.port, "GET", "/api/v1/cfssl/health", b"").map(|(st, _)| st);
    t.stop_service();
    // While it is away: each request gets a clear 503, nothing is recorded, the server lives.
    for _ in 0..3 {
        let e = c.sign(&req, None).expect_err("the token is away");
        assert!(e.to_string().contains("HTTP 503"), "{e}");
    }
    assert_eq!(health(), Some(503));
    t.start_service();
    // Back: the module is initialized again and logged in; requests sign again.
    let t0 = Instant::now();
    loop {
        match c.sign(&req, None) {
            Ok((pem, _)) => {
                got.push(pem);
                break;
            }
            Err(e) => {
                assert!(
                    t0.elapsed() < Duration::from_secs(20),
                    "not reconnected after 20 s: {e}"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    for _ in 0..4 {
        got.push(c.sign(&req, None).expect("signed after reconnecting").0);
    }
    assert_eq!(health(), Some(200));
    drop(srv);
    let err = t.read("serve.err");
    assert!(err.contains("reconnected to token"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let recs = records(&t);
    assert_eq!(recs.len(), 6, "only the certificates answered are recorded");
    assert_eq!(serials(&recs), pem_serials(&got).into_iter().collect());
    for (i, pem) in got.iter().enumerate() {
        serial_of(&t, pem, &format!("back{i}.pem"));
    }
}

// ---- PostgreSQL ----

/// A throwaway PostgreSQL cluster (ci/pg-start), stopped on drop.
struct Postgres {
    dir: tempfile::TempDir,
    dsn: String,
}

impl Postgres {
    fn start() -> Self {
        Self::start_with(&[])
    }

    /// A server that takes TCP connections over TLS only (`ci/pg-start --tls`); its DSN asks
    /// for sslmode=verify-full against the cluster's throwaway CA.
    fn start_tls() -> Self {
        Self::start_with(&["--tls"])
    }

    fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port().to_string();
        let out = Command::new(repo("ci/pg-start"))
            .arg(dir.path().join("pg"))
            .arg(&port)
            .args(extra)
            .output()
            .expect("run ci/pg-start");
        assert!(
            out.status.success(),
            "PostgreSQL could not be started (tests never skip; run ci/setup): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dsn = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Self { dir, dsn }
    }

    fn db_config(&self, t: &Token) {
        t.write(
            "db.json",
            &serde_json::json!({"driver": "postgres", "data_source": self.dsn}).to_string(),
        );
    }

    fn records(&self) -> Vec<CertRecord> {
        Store::open_existing(&DbConfig::Postgres(self.dsn.clone()))
            .unwrap()
            .list(ListFilter::default())
            .unwrap()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new(repo("ci/pg-stop"))
            .arg(self.dir.path().join("pg"))
            .status();
    }
}

#[test]
fn two_replicas_share_one_postgres_and_ca_key_without_duplicates() {
    let t = Token::new("serve-pg2");
    setup(&t);
    // Over TLS, as replicas on other hosts would reach it (the server refuses plain TCP).
    let pg = Postgres::start_tls();
    assert!(pg.dsn.contains("sslmode=verify-full"), "{}", pg.dsn);
    pg.db_config(&t);
    // Both replicas start together: the migration runs once, under its lock. Replica b signs
    // with a copy of the token (the same CA key), as a replica on another host has its own
    // connection to the HSM: SoftHSM2 is not safe for two processes logging in to one token
    // at once (see `Token::softhsm_copy`).
    let a = p11ca_serve(&t, "replica-a", &["-db-config", "db.json"]);
    let (port, conf) = (free_port(), t.softhsm_copy("hsm-b"));
    let p = port.to_string();
    let args = serve_args(&p, &["-db-config", "db.json"]);
    let conf = [("SOFTHSM2_CONF", conf.to_str().unwrap())];
    let b = start_env(&t, "replica-b", "p11ca", &args, port, true, &conf);
    let csr = t.ec_csr("load", "load");
    let received = Mutex::new(Vec::new());
    let errors = load(
        &[a.url(), b.url()],
        &csr,
        "kubernetes",
        6,
        25,
        &AtomicBool::new(false),
        &received,
    );
    assert!(errors.is_empty(), "{errors:?}");
    let got = received.into_inner().unwrap();
    assert_eq!(got.len(), 150);
    let mine = pem_serials(&got);
    let unique: BTreeSet<String> = mine.iter().cloned().collect();
    assert_eq!(unique.len(), got.len(), "no duplicate serials");
    for (i, pem) in got.iter().enumerate().step_by(37) {
        serial_of(&t, pem, &format!("l{i}.pem"));
    }
    let recs = pg.records();
    assert_eq!(recs.len(), got.len(), "every certificate recorded once");
    assert_eq!(serials(&recs), unique);
    drop((a, b));
    let r = t.run(&["certs", "list", "-db-config", "db.json", "--json"]);
    let v: Vec<Value> = serde_json::from_str(&r.ok().stdout).unwrap();
    assert_eq!(v.len(), 150);
}

#[test]
fn postgres_over_tls_is_verified_and_never_downgraded() {
    let t = Token::new("serve-pgtls");
    let pg = Postgres::start_tls();
    let db = |name: &str, dsn: &str| {
        t.write(
            name,
            &serde_json::json!({"driver": "postgres", "data_source": dsn}).to_string(),
        );
    };
    // The right CA: connects, migrates, lists (nothing yet).
    db("ok.json", &pg.dsn);
    let r = t.run(&["certs", "list", "-db-config", "ok.json", "--json"]);
    assert_eq!(r.ok().stdout.trim(), "[]");
    // Each refusal: exit code, one error line saying why.
    let refused = |config: &str, code: i32, why: &str| {
        let r = t.run(&["certs", "list", "-db-config", config]);
        assert_eq!(r.code, code, "{config}: {}", r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "{config}: {}", r.stderr);
        assert!(r.stderr.contains(why), "{config}: {}", r.stderr);
    };
    // Another CA: the handshake fails.
    sh(t.command("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=not the PostgreSQL CA",
        "-keyout",
        "other-key.pem",
        "-out",
        "other.pem",
    ]));
    let root = pg.dsn.rsplit_once("sslrootcert=").unwrap().1.to_string();
    let other = t.path("other.pem").display().to_string();
    db("other.json", &pg.dsn.replace(&root, &other));
    refused("other.json", 4, "invalid peer certificate");
    // TLS asked for without a CA to check the server against: refused before connecting.
    db(
        "noroot.json",
        &pg.dsn.replace(&format!("&sslrootcert={root}"), ""),
    );
    refused("noroot.json", 1, "needs sslrootcert=FILE");
    // Plain text to this server: it refuses (so the TLS above was really used).
    db(
        "plain.json",
        &pg.dsn.replace("sslmode=verify-full", "sslmode=disable"),
    );
    refused("plain.json", 4, "no encryption");
}

#[test]
fn sigkill_mid_load_leaves_a_consistent_store_with_every_answered_certificate() {
    let t = Token::new("serve-kill");
    setup(&t);
    let pg = Postgres::start();
    pg.db_config(&t);
    let srv = p11ca_serve(&t, "serve", &["-db-config", "db.json"]);
    let csr = t.ec_csr("load", "load");
    let stop = AtomicBool::new(false);
    let received = Mutex::new(Vec::new());
    let url = srv.url();
    let srv = Mutex::new(srv);
    std::thread::scope(|s| {
        let loader = s.spawn(|| {
            load(
                std::slice::from_ref(&url),
                &csr,
                "kubernetes",
                6,
                100,
                &stop,
                &received,
            )
        });
        let t0 = Instant::now();
        while received.lock().unwrap().len() < 40 {
            assert!(t0.elapsed() < Duration::from_secs(30), "no progress");
            std::thread::sleep(Duration::from_millis(2));
        }
        stop.store(true, Ordering::SeqCst);
        srv.lock().unwrap().signal("KILL");
        let _ = srv.lock().unwrap().wait(Duration::from_secs(10));
        let errors = loader.join().unwrap();
        assert!(errors.is_empty(), "{errors:?}");
    });
    let got = received.into_inner().unwrap();
    assert!(got.len() < 600, "the server died mid-load");
    // Restart on the same store: it opens (migrations already applied) and serves.
    let again = p11ca_serve(&t, "serve-again", &["-db-config", "db.json"]);
    let (pem, _) = RemoteClient::new(&again.url())
        .unwrap()
        .sign(
            &SignRequest {
                csr_pem: &csr,
                hosts: None,
                profile: "kubernetes",
                label: "",
                subject: None,
            },
            None,
        )
        .unwrap();
    let recs = pg.records();
    let recorded = serials(&recs);
    assert_eq!(recorded.len(), recs.len(), "no serial twice");
    for s in pem_serials(&got) {
        assert!(
            recorded.contains(&s),
            "certificate {s} was answered but is not recorded"
        );
    }
    assert!(recorded.contains(&pem_serials(&[pem])[0]));
    // At most the requests in flight at the kill were recorded without an answer.
    assert!(
        recs.len() <= got.len() + 1 + 6,
        "{} recorded, {} answered",
        recs.len(),
        got.len()
    );
}
