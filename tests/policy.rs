//! The issuance policy, tested as the attacks it stops (issue #12): a null-prefix SAN
//! (`evil.com\0.good.com`, which `openssl verify` accepted), control characters, spaces, a bare
//! `*`, `*.com`, over-long labels and names, a flood of SANs, the CA's own subject on a leaf,
//! `O=system:masters` from an ordinary profile and an RSA-1024 request key. Each is refused on
//! every path (`gencert -ca` with JSON hosts, `sign` with a CSR carrying it, `sign --batch`,
//! and `serve`) with one error line naming the value and the rule, no certificate, no token
//! object and no record. The positive cases show a profile can still say yes on purpose.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use p11ca::cfssl::csr::{CsrRequest, KeySpec};
use p11ca::db::{DbConfig, ListFilter, Store};
use p11ca::x509::softkey::SoftKey;
use p11ca::x509::{build, hosts};
use serde_json::{Value, json};

use crate::serve::http;
use crate::util::{Token, free_port, require, sh};

/// `leaf`: no policy (the defaults); `admin`: names system:masters in its allow-list;
/// `wl`: cfssl's name_whitelist.
const CONFIG: &str = r#"{
  "signing": {
    "default": {"expiry": "8760h"},
    "profiles": {
      "leaf": {"usages": ["signing", "key encipherment", "server auth", "client auth"], "expiry": "8760h"},
      "admin": {"usages": ["signing", "client auth"], "expiry": "24h",
                "policy": {"subject": {"allow": {"O": ["system:masters"]}}}},
      "wl": {"usages": ["signing", "server auth"], "expiry": "24h",
             "name_whitelist": "\\.example\\.com$"}
    }
  }
}"#;

/// The seed CA's subject (tests/data/ca-csr.json), as cfssl `names`.
const CA_NAMES: &str =
    r#"[{"C": "CN", "ST": "TianJin", "L": "TianJin", "O": "k8s", "OU": "System"}]"#;

/// One attack: a name for the case, the request's CN, `names` and hosts, and the rule text the
/// refusal must contain.
struct Case {
    name: &'static str,
    cn: &'static str,
    names: &'static str,
    hosts: Vec<String>,
    rule: &'static str,
}

fn case(name: &'static str, host: &str, rule: &'static str) -> Case {
    Case {
        name,
        cn: "node1",
        names: "[]",
        hosts: vec![host.to_string()],
        rule,
    }
}

/// Every bad name or subject (the RSA-1024 key is a CSR-only case: `gencert` never makes one).
fn cases() -> Vec<Case> {
    let (a, b) = ("a".repeat(60), "b".repeat(59));
    let name_254 = format!("{a}.{a}.{a}.{b}.example.com");
    assert_eq!(name_254.len(), 254);
    vec![
        case(
            "null_prefix",
            "evil.com\0.good.com",
            "SAN DNS name \"evil.com\\0.good.com\" is refused: the character '\\0' is not allowed",
        ),
        case(
            "control_char",
            "evil\u{1b}.example.com",
            "'\\u{1b}' is not allowed",
        ),
        case(
            "space",
            "a b.example.com",
            "the character ' ' is not allowed",
        ),
        case("bare_star", "*", "a bare \"*\" would match every host"),
        case(
            "star_com",
            "*.com",
            "wildcard directly on the top-level domain \"com\"",
        ),
        case(
            "label_64",
            &format!("{}.example.com", "a".repeat(64)),
            "a label of 64 octets; a label has at most 63",
        ),
        case(
            "name_254",
            &name_254,
            "254 octets; a host name has at most 253",
        ),
        case(
            "label_250k",
            &"a".repeat(250_000),
            "250000 octets; a host name has at most 253",
        ),
        Case {
            name: "sans_101",
            cn: "node1",
            names: "[]",
            hosts: (0..101).map(|i| format!("n{i}.example.com")).collect(),
            rule: "101 subjectAltName entries are refused: profile \"leaf\" allows at most 100",
        },
        Case {
            name: "ca_subject",
            cn: "mosquitood-k8s",
            names: CA_NAMES,
            hosts: vec!["ca.example.com".into()],
            rule: "it is the CA's own subject, which no leaf may have",
        },
        Case {
            name: "system_masters",
            cn: "attacker",
            names: r#"[{"O": "system:masters"}]"#,
            hosts: vec!["attacker.example.com".into()],
            rule: "subject O \"system:masters\" is refused: it grants cluster-admin",
        },
    ]
}

/// A CA (the seed's, RSA-2048) and CONFIG in a fresh token's work dir.
fn setup(label: &str) -> Token {
    require("openssl");
    let t = Token::new(label);
    t.seed_files(&["ca-csr.json"]);
    t.initca("ca-csr.json", "ca");
    t.write("ca-config.json", CONFIG);
    t
}

/// The cfssl JSON request of a case.
fn request_json(c: &Case) -> String {
    let names: Value = serde_json::from_str(c.names).unwrap();
    json!({"CN": c.cn, "names": names, "hosts": c.hosts, "key": {"algo": "ecdsa", "size": 256}})
        .to_string()
}

/// A CSR (PEM) for a case, made with p11ca's own CSR code so that any byte (a NUL too) can be
/// put into the SAN; asserts the bytes really are in it.
fn request_csr(c: &Case) -> String {
    let req = CsrRequest::from_json(request_json(c).as_bytes(), c.name).unwrap();
    let subject = p11ca::x509::name::build(&p11ca::x509::name::SubjectSpec {
        cn: &req.cn,
        names: &req.names,
        serial_number: "",
    })
    .unwrap();
    let sans: Vec<hosts::San> = c.hosts.iter().map(|h| hosts::classify(h)).collect();
    let key = SoftKey::generate(KeySpec::EcP256.into()).unwrap();
    let ext = hosts::extension(&sans, false)
        .unwrap()
        .into_iter()
        .collect();
    let der = build::csr(&subject, ext, &key).unwrap();
    let first = c.hosts[0].as_bytes();
    assert!(
        der.windows(first.len()).any(|w| w == first),
        "{}: the SAN bytes are in the CSR",
        c.name
    );
    build::pem("CERTIFICATE REQUEST", &der).unwrap()
}

/// An RSA-1024 CSR made by OpenSSL, written to `file`.
fn rsa_1024_csr(t: &Token, file: &str) {
    sh(t.command("openssl").args([
        "req",
        "-new",
        "-newkey",
        "rsa:1024",
        "-nodes",
        "-keyout",
        "/dev/null",
        "-subj",
        "/CN=weak",
        "-addext",
        "subjectAltName=DNS:weak.example.com",
        "-out",
        file,
    ]));
}

const RSA_1024_RULE: &str = "request key RSA-1024 is refused: profile \"leaf\" needs RSA keys of at least 2048 bits (policy.min_rsa_bits)";

const CA_ARGS: [&str; 8] = [
    "-ca",
    "ca.pem",
    "-ca-key",
    "ca-key.uri",
    "-config",
    "ca-config.json",
    "-profile",
    "leaf",
];

fn with_ca<'a>(cmd: &[&'a str], rest: &[&'a str]) -> Vec<&'a str> {
    let mut v = cmd.to_vec();
    v.extend_from_slice(&CA_ARGS);
    v.extend_from_slice(rest);
    v
}

#[test]
fn attacks_are_refused_by_gencert_and_sign_with_nothing_written() {
    let t = setup("policy-cli");
    let objects = t.object_count();
    let files = t.files();
    for c in cases() {
        // gencert -ca with the hosts in the JSON request.
        t.write("req.json", &request_json(&c));
        let r = t.run(&with_ca(&["gencert"], &["req.json"]));
        r.fails(3, c.rule);
        assert!(r.stderr.contains("error: req.json: "), "{}", r.stderr);
        assert!(!r.stderr.contains('\0'), "{}: raw NUL on stderr", c.name);
        // sign with a CSR that carries the same SANs and subject.
        t.write("req.csr", &request_csr(&c));
        let r = t.run(&with_ca(&["sign"], &["req.csr"]));
        r.fails(3, c.rule);
        assert!(r.stderr.contains("error: req.csr: "), "{}", r.stderr);
    }
    rsa_1024_csr(&t, "weak.csr");
    t.run(&with_ca(&["sign"], &["weak.csr"]))
        .fails(3, RSA_1024_RULE);
    // -hostname replaces a good CSR's SANs: the same rules apply to it.
    t.write(
        "good.csr",
        &request_csr(&case("good", "good.example.com", "")),
    );
    let r = t.run(&with_ca(
        &["sign", "-hostname", "ok.example.com,*"],
        &["good.csr"],
    ));
    r.fails(3, "a bare \"*\" would match every host");
    // Nothing was written besides the inputs, and no token object appeared.
    let mut expected = files;
    expected.extend(["good.csr", "req.csr", "req.json", "weak.csr"].map(String::from));
    expected.sort();
    assert_eq!(t.files(), expected);
    assert_eq!(t.object_count(), objects);
}

#[test]
fn a_batch_reports_each_attack_and_issues_the_good_inputs() {
    let t = setup("policy-batch");
    t.make_csrs("csrs", "good", 2);
    let all = cases();
    for c in &all {
        t.write(&format!("csrs/{}.csr", c.name), &request_csr(c));
    }
    rsa_1024_csr(&t, "csrs/rsa_1024.csr");
    let objects = t.object_count();
    let r = t.run(&with_ca(&["sign"], &["--batch", "csrs", "--out", "out"]));
    assert_eq!(r.code, 3, "{}", r.stderr);
    let errors: Vec<&str> = r.stderr.lines().filter(|l| l.contains("error:")).collect();
    assert_eq!(errors.len(), all.len() + 1, "{}", r.stderr);
    for (name, rule) in all
        .iter()
        .map(|c| (c.name, c.rule))
        .chain([("rsa_1024", RSA_1024_RULE)])
    {
        let line = errors
            .iter()
            .find(|l| l.contains(&format!("csrs/{name}.csr: ")))
            .unwrap_or_else(|| panic!("{name} is reported: {}", r.stderr));
        assert!(line.contains(rule), "{name}: {line}");
    }
    let summary = format!("({} inputs failed)", all.len() + 1);
    assert!(errors.iter().any(|l| l.ends_with(&summary)), "{}", r.stderr);
    let mut out: Vec<String> = std::fs::read_dir(t.path("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    assert_eq!(
        out,
        ["good000.csr", "good000.pem", "good001.csr", "good001.pem"]
    );
    for f in ["out/good000.pem", "out/good001.pem"] {
        let v = sh(t
            .command("openssl")
            .args(["verify", "-CAfile", "ca.pem", f]));
        assert!(v.contains(": OK"), "{v}");
    }
    assert_eq!(t.object_count(), objects);
}

#[test]
fn allowed_on_purpose_still_issues() {
    let t = setup("policy-yes");
    // A profile that names system:masters in its allow-list issues it.
    let admin =
        r#"{"CN":"admin","names":[{"O":"system:masters"}],"key":{"algo":"ecdsa","size":256}}"#;
    t.write("admin.json", admin);
    let mut args = with_ca(&["gencert"], &["admin.json"]);
    args[8] = "admin";
    let g = t.run(&args);
    g.ok();
    t.run_in(&["json", "-bare", "admin"], g.stdout.as_bytes())
        .ok();
    let subject = sh(t
        .command("openssl")
        .args(["x509", "-noout", "-subject", "-in", "admin.pem"]));
    assert!(subject.contains("O = system:masters"), "{subject}");
    // ... but only what its allow-list names.
    t.write(
        "other.json",
        r#"{"CN":"x","names":[{"O":"acme"}],"key":{"algo":"ecdsa","size":256}}"#,
    );
    args[9] = "other.json";
    t.run(&args).fails(3, "allows only [\"system:masters\"]");

    // A wildcard as the whole leftmost label issues, and OpenSSL accepts the certificate.
    t.write(
        "wild.json",
        r#"{"CN":"wild","hosts":["*.example.com"],"key":{"algo":"ecdsa","size":256}}"#,
    );
    let g = t.run(&with_ca(&["gencert"], &["wild.json"]));
    g.ok();
    t.run_in(&["json", "-bare", "wild"], g.stdout.as_bytes())
        .ok();
    let text = sh(t.command("openssl").args([
        "x509",
        "-noout",
        "-ext",
        "subjectAltName",
        "-in",
        "wild.pem",
    ]));
    assert!(text.contains("DNS:*.example.com"), "{text}");
    let v = sh(t
        .command("openssl")
        .args(["verify", "-CAfile", "ca.pem", "wild.pem"]));
    assert!(v.contains(": OK"), "{v}");

    // name_whitelist keeps working: a matching name issues, another is refused.
    t.write(
        "wl.json",
        r#"{"CN":"a.example.com","hosts":["a.example.com"],"key":{"algo":"ecdsa","size":256}}"#,
    );
    let mut args = with_ca(&["gencert"], &["wl.json"]);
    args[8] = "wl";
    t.run(&args).ok();
    t.write(
        "wl-bad.json",
        r#"{"CN":"a.example.com","hosts":["a.example.org"],"key":{"algo":"ecdsa","size":256}}"#,
    );
    args[9] = "wl-bad.json";
    t.run(&args).fails(
        3,
        "SAN \"a.example.org\" does not match the name_whitelist /\\.example\\.com$/ of profile \"wl\"",
    );
}

/// `p11ca serve` under `timeout` (so it ends even if the test dies), stopped on drop with
/// SIGTERM, which `timeout` forwards to the server.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            // Our own child, not yet reaped, so its pid cannot have been reused.
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &self.0.id().to_string()])
                .status();
        }
        let _ = self.0.wait();
    }
}

fn serve(t: &Token, port: u16) -> Serve {
    require("timeout");
    let p11ca = t.p11ca();
    let mut c = t.command("timeout");
    for (k, v) in p11ca.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    let port_s = port.to_string();
    let err = std::fs::File::create(t.path("serve.err")).unwrap();
    c.arg("120")
        .arg(p11ca.get_program())
        .args(["serve", "-address", "127.0.0.1", "-port", &port_s])
        .args(&CA_ARGS[..6])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err);
    let s = Serve(c.spawn().expect("spawn p11ca serve"));
    let t0 = Instant::now();
    while http(port, "GET", "/api/v1/cfssl/health", b"").is_none_or(|(st, _)| st != 200) {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "serve did not come up: {}",
            t.read("serve.err")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    s
}

/// POST a sign request and return (status, the first error message or the certificate).
fn sign(port: u16, req: &Value) -> (u16, String) {
    let body = serde_json::to_vec(req).unwrap();
    let (st, text) = http(port, "POST", "/api/v1/cfssl/sign", &body).expect("an answer");
    let v: Value = serde_json::from_str(&text).unwrap();
    let msg = v["errors"][0]["message"]
        .as_str()
        .or(v["result"]["certificate"].as_str())
        .unwrap_or_default();
    (st, msg.to_string())
}

#[test]
fn serve_answers_400_with_the_rule_and_records_nothing() {
    let t = setup("policy-serve");
    let port = free_port();
    let _srv = serve(&t, port);
    let objects = t.object_count();
    let good = request_csr(&case("good", "good.example.com", ""));
    for c in cases() {
        // The SANs and subject in the CSR itself (a 250 KB SAN makes the CSR larger than the
        // server's request body limit, which refuses it first)...
        let req = json!({"certificate_request": request_csr(&c), "profile": "leaf"});
        let (st, msg) = sign(port, &req);
        if c.name == "label_250k" {
            assert_eq!(st, 413, "{msg}");
            assert!(msg.contains("over the limit"), "{msg}");
        } else {
            assert_eq!(st, 400, "{}: {msg}", c.name);
            assert!(msg.contains(c.rule), "{}: {msg}", c.name);
        }
        // ... and the hosts given in the request (cfssl's `hosts` field, or the `hostname`
        // list) over a good CSR.
        if c.names == "[]" {
            let req = json!({"certificate_request": good, "hosts": c.hosts, "profile": "leaf"});
            let (st, msg) = sign(port, &req);
            assert_eq!((st, msg.contains(c.rule)), (400, true), "{}: {msg}", c.name);
            let req = json!({"certificate_request": good, "hostname": c.hosts.join(","), "profile": "leaf"});
            let (st, msg) = sign(port, &req);
            assert_eq!((st, msg.contains(c.rule)), (400, true), "{}: {msg}", c.name);
        }
    }
    rsa_1024_csr(&t, "weak.csr");
    let req = json!({"certificate_request": t.read("weak.csr"), "profile": "leaf"});
    let (st, msg) = sign(port, &req);
    assert_eq!((st, msg.contains(RSA_1024_RULE)), (400, true), "{msg}");
    let store = DbConfig::Sqlite(t.path("p11ca-certs.db"));
    let count = || {
        Store::open_existing(&store)
            .unwrap()
            .list(ListFilter::default())
            .unwrap()
            .iter()
            // Not the CA certificate, recorded by `gencert -initca` in the same default store.
            .filter(|r| !r.requester.starts_with("cli:"))
            .count()
    };
    assert_eq!(count(), 0, "nothing refused was recorded");
    // The same server still issues a good request, and records it.
    let (st, pem) = sign(
        port,
        &json!({"certificate_request": good, "profile": "leaf"}),
    );
    assert_eq!(st, 200, "{pem}");
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    assert_eq!(count(), 1);
    assert_eq!(t.object_count(), objects);
}
