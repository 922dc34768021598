//! `p11ca serve` against hostile clients, each test written as the attack: idle-socket floods
//! from many loopback addresses and a TLS client that never says hello, a client over its
//! connection or request share, a request head dribbled a byte at a time, DNS rebinding and
//! cross-site form posts from a web page, a client certificate whose CN only contains the
//! allowed one, and log forging through request fields. Also the configurations `serve`
//! refuses to start with.
//!
//! Only loopback addresses are used (all of 127/8 is loopback on Linux); every loop is bounded
//! in count and time.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use crate::serve::{
    Server, http, mutual_tls_args, p11ca_serve, records, serve_args, setup, start, start_env,
};
use crate::util::{Token, free_port, require, run, sh, x509_text};

/// The server's head deadline (src/serve/http.rs HEAD_LIMIT).
const HEAD_LIMIT: Duration = Duration::from_secs(5);
/// The server's TLS handshake deadline (src/serve/mod.rs TLS_HANDSHAKE_LIMIT).
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);
const SIGN: &str = "/api/v1/cfssl/sign";
const HEALTH: &str = "/api/v1/cfssl/health";

/// A TCP connection to the server on 127.0.0.1:`port` from the loopback address `src`.
fn connect_from(src: Ipv4Addr, port: u16) -> TcpStream {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from((src, 0)).into())
        .unwrap_or_else(|e| panic!("bind {src}: {e}"));
    s.connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)).into(),
        Duration::from_secs(5),
    )
    .unwrap_or_else(|e| panic!("connect from {src}: {e}"));
    s.into()
}

/// Everything the server sends until it closes (bounded in time).
fn read_all(s: &mut TcpStream, limit: Duration) -> String {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Send `request` from `src` and return the status and body of the answer.
fn raw(port: u16, src: Ipv4Addr, request: &[u8]) -> (u16, String) {
    let mut s = connect_from(src, port);
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request);
    let text = read_all(&mut s, Duration::from_secs(20));
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|x| x.1.to_string());
    (status, body.unwrap_or_default())
}

/// A request with `headers` (each ending in CRLF) and `body`; it asks to close afterwards.
fn request(method: &str, path: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// Whether the server has closed `s` (end of stream or reset), without waiting.
fn closed_by_server(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 512];
    let r = (&*s).read(&mut b);
    s.set_nonblocking(false).unwrap();
    match r {
        Ok(0) => true,
        Ok(_) => {
            // An answer before the close (a plain-HTTP refusal): closed if EOF follows.
            let mut rest = Vec::new();
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            (&*s).read_to_end(&mut rest).is_ok()
        }
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// Lines of the server log containing `needle`.
fn log_lines(t: &Token, needle: &str) -> Vec<String> {
    t.read("serve.err")
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Issue `name.pem` / `name-key.pem` from the token CA (profile kubernetes) for `csr_json`.
fn issue(t: &Token, name: &str, csr_json: &str) {
    let file = format!("{name}-csr.json");
    t.write(&file, csr_json);
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
        &file,
    ]);
    t.run_in(&["json", "-bare", name], g.ok().stdout.as_bytes())
        .ok();
}

/// The server's TLS certificate, for localhost and 127.0.0.1.
fn issue_server_cert(t: &Token) {
    issue(
        t,
        "tls-srv",
        r#"{"CN":"localhost","hosts":["localhost","127.0.0.1"],"key":{"algo":"ecdsa","size":256}}"#,
    );
}

/// `GET /health` over TLS with curl (from 127.0.0.1, Host localhost) within 2 s: the HTTP
/// status curl saw ("000" for none) and how long it took.
fn curl_health(t: &Token, port: u16, extra: &[&str]) -> (String, Duration) {
    require("curl");
    let t0 = Instant::now();
    let r = run(
        t.command("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "2",
                "--cacert",
                "ca.pem",
                "--resolve",
                &format!("localhost:{port}:127.0.0.1"),
            ])
            .args(extra)
            .arg(format!("https://localhost:{port}{HEALTH}")),
        None,
    );
    (r.stdout.trim().to_string(), t0.elapsed())
}

/// A sign request body for a fresh P-256 CSR, profile kubernetes.
fn sign_body(t: &Token) -> Vec<u8> {
    t.ec_csr("web", "web.example");
    serde_json::to_vec(
        &serde_json::json!({"certificate_request": t.read("web.csr"), "profile": "kubernetes"}),
    )
    .unwrap()
}

fn lo(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

#[test]
fn idle_socket_floods_and_a_silent_tls_client_do_not_starve_health() {
    let t = Token::new("hostile-flood");
    setup(&t);
    issue_server_cert(&t);
    let port = free_port();
    let p = port.to_string();
    let args = serve_args(
        &p,
        &["-tls-cert", "tls-srv.pem", "-tls-key", "tls-srv-key.pem"],
    );
    let _srv: Server = start(&t, "serve", "p11ca", &args, port, false);
    assert_eq!(curl_health(&t, port, &[]).0, "200");

    // A TLS client that connects and never sends its hello, then 1100 idle sockets from 11
    // addresses (100 each; 64 per address are served, the rest refused).
    let t0 = Instant::now();
    let mut silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let idle: Vec<(u8, TcpStream)> = (0..1100)
        .map(|i| {
            let a = 2 + (i % 11) as u8;
            (a, connect_from(lo(a), port))
        })
        .collect();
    let connected = t0.elapsed();
    for _ in 0..3 {
        let (code, took) = curl_health(&t, port, &[]);
        assert_eq!(code, "200", "health during the flood");
        assert!(took < Duration::from_secs(2), "health took {took:?}");
    }
    // The refused sockets were closed at once; the served ones are still open (this must be
    // checked before their handshake deadline).
    assert!(
        t0.elapsed() < HANDSHAKE_LIMIT - Duration::from_secs(2),
        "the flood took {:?} to set up ({connected:?} to connect)",
        t0.elapsed()
    );
    for a in 2..=12u8 {
        let closed = idle
            .iter()
            .filter(|(x, s)| *x == a && closed_by_server(s))
            .count();
        assert_eq!(closed, 36, "127.0.0.{a}: refused sockets");
    }
    // One log line per refused address, not 396.
    let lines = log_lines(&t, "too many connections from your address");
    assert_eq!(lines.len(), 11, "{lines:#?}");
    for a in 2..=12u8 {
        let me = format!("refused 429 127.0.0.{a}: ");
        assert_eq!(lines.iter().filter(|l| l.contains(&me)).count(), 1, "{me}");
    }
    // The served idle sockets, and the silent TLS client, never say hello: they are dropped
    // at the handshake deadline (counted from their accept), each address logged once.
    let deadline = t0 + connected + HANDSHAKE_LIMIT + Duration::from_secs(3);
    while Instant::now() < deadline && !idle.iter().all(|(_, s)| closed_by_server(s)) {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(idle.iter().all(|(_, s)| closed_by_server(s)));
    let rest = deadline.saturating_duration_since(Instant::now());
    let got = read_all(&mut silent, rest.max(Duration::from_millis(100)));
    assert!(got.is_empty(), "{got:?}");
    assert!(
        Instant::now() < deadline,
        "the silent TLS client was kept {:?}",
        t0.elapsed()
    );
    let handshakes = log_lines(&t, "TLS handshake failed or took too long");
    assert_eq!(handshakes.len(), 12, "{handshakes:#?}");
    assert_eq!(log_lines(&t, "refused 127.0.0.1: TLS handshake").len(), 1);
    assert_eq!(curl_health(&t, port, &[]).0, "200");
}

#[test]
fn over_the_global_cap_connections_are_refused_at_once_and_slots_come_back() {
    let t = Token::new("hostile-cap");
    setup(&t);
    let srv = p11ca_serve(&t, "serve", &["--max-connections", "50"]);
    let port = srv.port;
    let t0 = Instant::now();
    let idle: Vec<TcpStream> = (0..80).map(|i| connect_from(lo(2 + i % 4), port)).collect();
    // 30 over the cap got a 503 at once; a newcomer too, without waiting.
    std::thread::sleep(Duration::from_millis(300));
    let refused = idle.iter().filter(|s| closed_by_server(s)).count();
    assert_eq!(refused, 30);
    let t1 = Instant::now();
    let got = read_all(&mut connect_from(lo(1), port), Duration::from_secs(2));
    assert!(got.starts_with("HTTP/1.1 503 "), "{got:?}");
    assert!(got.contains("too many connections (50 open)"), "{got:?}");
    assert!(t1.elapsed() < Duration::from_secs(1));
    assert!(t0.elapsed() < HEAD_LIMIT, "set-up took {:?}", t0.elapsed());
    // The idle ones are dropped at the head deadline and the slots are free again.
    let deadline = Instant::now() + HEAD_LIMIT + Duration::from_secs(3);
    let healthy = loop {
        let ok = http(port, "GET", HEALTH, b"").is_some_and(|(st, _)| st == 200);
        if ok || Instant::now() > deadline {
            break ok;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(healthy, "the slots did not come back");
    for a in 1..=5 {
        let me = format!("refused 503 127.0.0.{a}: ");
        assert!(log_lines(&t, &me).len() <= 1, "{me}");
    }
    assert_eq!(log_lines(&t, "refused 503 127.0.0.1: ").len(), 1);
}

#[test]
fn a_client_over_its_connection_or_request_share_is_refused_while_others_are_served() {
    let t = Token::new("hostile-share");
    setup(&t);
    let srv = p11ca_serve(
        &t,
        "serve",
        &["--max-conns-per-client", "4", "--rate-limit", "2"],
    );
    let port = srv.port;
    let health = request("GET", HEALTH, "Host: 127.0.0.1\r\n", b"");
    // Four open connections from 127.0.0.2: a fifth is refused, 127.0.0.3 is served.
    let held: Vec<TcpStream> = (0..4).map(|_| connect_from(lo(2), port)).collect();
    let got = read_all(&mut connect_from(lo(2), port), Duration::from_secs(2));
    assert!(got.starts_with("HTTP/1.1 429 "), "{got:?}");
    assert!(
        got.contains("too many connections from your address"),
        "{got:?}"
    );
    assert_eq!(raw(port, lo(3), &health).0, 200);
    drop(held);
    // 12 requests in a row from 127.0.0.4 with 2 per second (and a burst of 2) allowed.
    let statuses: Vec<u16> = (0..12).map(|_| raw(port, lo(4), &health).0).collect();
    assert!(statuses[..2].iter().all(|s| *s == 200), "{statuses:?}");
    assert!(
        statuses.iter().filter(|s| **s == 429).count() >= 6,
        "{statuses:?}"
    );
    assert_eq!(raw(port, lo(5), &health).0, 200, "another address");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(raw(port, lo(4), &health).0, 200, "refilled");
    // Each refused once in the log, however many times refused.
    assert_eq!(log_lines(&t, "refused 429 127.0.0.2: ").len(), 1);
    let rate = log_lines(&t, "refused 429 127.0.0.4: ");
    assert_eq!(rate.len(), 1, "{rate:#?}");
    assert!(rate[0].contains("too many requests"), "{}", rate[0]);
}

#[test]
fn a_dribbled_or_missing_request_head_is_cut_off_at_the_head_deadline() {
    let t = Token::new("hostile-slow");
    setup(&t);
    let srv = p11ca_serve(&t, "serve", &[]);
    let port = srv.port;
    // Half a head, then one more byte every 500 ms: the deadline is for the whole head.
    let t0 = Instant::now();
    let mut slow = connect_from(lo(1), port);
    slow.write_all(b"POST /api/v1/cfssl/sign HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .unwrap();
    let mut writer = slow.try_clone().unwrap();
    let dribble = std::thread::spawn(move || {
        for _ in 0..30 {
            std::thread::sleep(Duration::from_millis(500));
            if writer.write_all(b"a").is_err() {
                break;
            }
        }
    });
    let mut silent = connect_from(lo(2), port);
    let got = read_all(&mut slow, Duration::from_secs(15));
    let took = t0.elapsed();
    assert!(got.starts_with("HTTP/1.1 408 "), "{got:?}");
    assert!(
        took >= HEAD_LIMIT - Duration::from_millis(500)
            && took < HEAD_LIMIT + Duration::from_secs(3),
        "cut off after {took:?}"
    );
    // A client that sends nothing at all is closed by then too, without an answer.
    let got = read_all(&mut silent, Duration::from_secs(3));
    assert!(got.is_empty(), "{got:?}");
    assert!(t0.elapsed() < HEAD_LIMIT + Duration::from_secs(4));
    dribble.join().unwrap();
    assert_eq!(log_lines(&t, "refused 408 127.0.0.1: ").len(), 1);
    assert_eq!(http(port, "GET", HEALTH, b"").map(|r| r.0), Some(200));
}

#[test]
fn dns_rebinding_and_cross_site_posts_are_refused_and_issue_nothing() {
    let t = Token::new("hostile-web");
    setup(&t);
    let srv = p11ca_serve(&t, "serve", &["-allowed-host", "ca.example.test"]);
    let port = srv.port;
    let body = sign_body(&t);
    let json = "Content-Type: application/json\r\n";
    let evil_host = format!("Host: evil.example:{port}\r\n");
    let cases: Vec<(String, u16, &str)> = vec![
        // DNS rebinding: the browser sends the attacker's name.
        (format!("{evil_host}{json}"), 421, "evil.example"),
        // Cross-site posts: a form (text/plain, urlencoded) or a fetch, with their Origin.
        (
            "Host: 127.0.0.1\r\nOrigin: http://evil.example\r\nContent-Type: text/plain\r\n".into(),
            403,
            "cross-origin",
        ),
        (
            format!("Host: 127.0.0.1\r\nOrigin: null\r\n{json}"),
            403,
            "cross-origin",
        ),
        (
            format!("Host: localhost:{port}\r\nOrigin: http://localhost.evil.example\r\n{json}"),
            403,
            "cross-origin",
        ),
        // Without an Origin (or with an allowed one), a body that is not JSON.
        (
            "Host: 127.0.0.1\r\nContent-Type: text/plain\r\n".into(),
            415,
            "application/json",
        ),
        (
            format!(
                "Host: localhost\r\nOrigin: http://localhost:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            ),
            415,
            "application/json",
        ),
        ("Host: 127.0.0.1\r\n".into(), 415, "application/json"),
        // Two Host headers.
        (
            format!("Host: 127.0.0.1\r\n{evil_host}{json}"),
            400,
            "more than one",
        ),
    ];
    for (headers, status, needle) in &cases {
        let (st, text) = raw(port, lo(1), &request("POST", SIGN, headers, &body));
        assert_eq!(st, *status, "{headers:?}: {text}");
        assert!(text.contains(needle), "{headers:?}: {text}");
    }
    let (st, _) = raw(port, lo(1), &request("GET", HEALTH, &evil_host, b""));
    assert_eq!(st, 421);
    assert!(records(&t).is_empty(), "a refused request issued something");
    // The same request from a legitimate client is served: by IP, by localhost with its own
    // origin, and by a name the operator allowed.
    for headers in [
        format!("Host: 127.0.0.1:{port}\r\n{json}"),
        format!(
            "Host: localhost:{port}\r\nOrigin: http://localhost:{port}\r\nContent-Type: application/json; charset=utf-8\r\n"
        ),
        format!("Host: CA.example.test:{port}\r\n{json}"),
    ] {
        let (st, text) = raw(port, lo(1), &request("POST", SIGN, &headers, &body));
        assert_eq!(st, 200, "{headers:?}: {text}");
    }
    assert_eq!(records(&t).len(), 3);
}

#[test]
fn serve_refuses_to_start_unsafe_unless_told_so() {
    let t = Token::new("hostile-start");
    setup(&t);
    // gencert -initca recorded the CA there; serve must not even open a store.
    std::fs::remove_file(t.path("p11ca-certs.db")).unwrap();
    t.write(
        "ca-config-int.json",
        r#"{"signing":{"default":{"expiry":"1h","usages":["signing"]},"profiles":{
  "intermediate":{"usages":["cert sign","crl sign"],"expiry":"8760h",
    "ca_constraint":{"is_ca":true,"max_path_len":0,"max_path_len_zero":true}}}}}"#,
    );
    let port = free_port();
    let p = port.to_string();
    let int = |extra: &[&'static str]| {
        let mut v = serve_args(&p, &[]);
        let i = v.iter().position(|a| *a == "server-config.json").unwrap();
        v[i] = "ca-config-int.json";
        v.extend_from_slice(extra);
        v.iter().map(|s| s.to_string()).collect::<Vec<String>>()
    };
    let args = int(&[]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    t.run(&argv)
        .fails(1, "profile \"intermediate\"")
        .fails(1, "--allow-unauthenticated-ca");
    let plain = serve_args(&p, &[]);
    let mut wild = plain.clone();
    wild[2] = "0.0.0.0";
    t.run(&wild).fails(1, "--insecure-plaintext");
    assert!(
        !t.path("p11ca-certs.db").exists(),
        "refused before the store"
    );

    // With the flags, both start and serve.
    let args = int(&["--allow-unauthenticated-ca"]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut srv = start(&t, "serve", "p11ca", &argv, port, true);
    srv.signal("TERM");
    assert_eq!(srv.wait(Duration::from_secs(10)), 0);
    let port2 = free_port();
    let p2 = port2.to_string();
    let mut wild = serve_args(&p2, &["--insecure-plaintext"]);
    wild[2] = "0.0.0.0";
    let mut srv = start(&t, "serve2", "p11ca", &wild, port2, true);
    srv.signal("TERM");
    assert_eq!(srv.wait(Duration::from_secs(10)), 0);
}

#[test]
fn mutual_tls_cn_matches_the_whole_cn() {
    let t = Token::new("hostile-cn");
    setup(&t);
    issue_server_cert(&t);
    for cn in ["admin", "evil-admin", "administrator"] {
        issue(
            &t,
            cn,
            &format!(r#"{{"CN":"{cn}","key":{{"algo":"ecdsa","size":256}}}}"#),
        );
    }
    let port = free_port();
    let p = port.to_string();
    let args = mutual_tls_args(&p, "admin");
    let _srv = start(&t, "serve", "p11ca", &args, port, false);
    for (cn, want) in [
        ("admin", "200"),
        ("evil-admin", "403"),
        ("administrator", "403"),
    ] {
        let (cert, key) = (format!("{cn}.pem"), format!("{cn}-key.pem"));
        let (code, _) = curl_health(&t, port, &["--cert", &cert, "--key", &key]);
        assert_eq!(code, want, "client certificate CN={cn}");
    }
    let refused = log_lines(&t, "does not match -mutual-tls-cn");
    assert_eq!(refused.len(), 2, "{refused:#?}");
    assert!(
        refused.iter().any(|l| l.contains("CN \"evil-admin\"")),
        "{refused:#?}"
    );
}

#[test]
fn client_controlled_fields_are_escaped_in_the_log() {
    let t = Token::new("hostile-log");
    setup(&t);
    let srv = p11ca_serve(&t, "serve", &[]);
    let profile = "x\n p11ca: serve: 200 POST forged\u{1b}[2J\r\u{202e}";
    let body = serde_json::to_vec(&serde_json::json!({
        "certificate_request": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        "profile": profile,
    }))
    .unwrap();
    let (st, text) = http(srv.port, "POST", SIGN, &body).unwrap();
    assert_eq!(st, 400, "{text}");
    // Error messages already fold line breaks into spaces; ESC and the bidi override are
    // escaped on the way to the log.
    let log = t.read("serve.err");
    assert!(log.contains(r#"200 POST forged\x1b[2J"#), "{log}");
    assert!(log.contains(r#"\u{202e}""#), "{log}");
    assert!(!log.contains(['\u{1b}', '\r', '\u{202e}']), "{log:?}");
    assert!(
        !log.lines().any(|l| l.starts_with(" p11ca: serve: 200")),
        "a forged line: {log}"
    );
}

#[test]
fn serve_raises_its_open_file_limit_to_the_hard_limit() {
    let t = Token::new("hostile-nofile");
    setup(&t);
    let hard = sh(t.command("sh").args(["-c", "ulimit -Hn"]));
    let hard = hard.trim();
    assert!(
        hard.parse::<u64>().is_ok_and(|h| h > 256),
        "hard limit {hard}"
    );
    let port = free_port();
    let p = port.to_string();
    let p11ca = t.p11ca();
    let env: Vec<(String, String)> = p11ca
        .get_envs()
        .filter_map(|(k, v)| Some((k.to_str()?.to_string(), v?.to_str()?.to_string())))
        .collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let script = format!(
        "ulimit -Sn 256 && exec {} \"$@\"",
        p11ca.get_program().to_string_lossy()
    );
    let mut args = vec!["-c", script.as_str(), "sh"];
    args.extend(serve_args(&p, &[]));
    let srv = start_env(&t, "serve", "sh", &args, port, true, &env);
    let pid = srv.pid().expect("the server process");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let soft = line.split_whitespace().nth(3).unwrap();
    assert_eq!(soft, hard, "{line}");
}

/// One HTTP/1.1 keep-alive sign request for `csr` (profile kubernetes) that asks for `host`.
fn pipelined_sign(port: u16, csr: &str, host: &str) -> Vec<u8> {
    let body = serde_json::to_vec(&serde_json::json!(
        {"certificate_request": csr, "profile": "kubernetes", "hosts": [host]}
    ))
    .unwrap();
    let mut r = format!(
        "POST {SIGN} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(&body);
    r
}

/// Read one HTTP response (Content-Length framed) from `s`: status and body.
fn read_response(s: &mut TcpStream, pending: &mut Vec<u8>) -> (u16, String) {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no Content-Length in {head:?}"));
            if pending.len() >= end + 4 + len {
                let body = String::from_utf8_lossy(&pending[end + 4..end + 4 + len]).into_owned();
                pending.drain(..end + 4 + len);
                let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
                return (status, body);
            }
        }
        let n = s
            .read(&mut chunk)
            .expect("an answer within the read timeout");
        assert!(
            n > 0,
            "the server closed with {} bytes unread",
            pending.len()
        );
        pending.extend_from_slice(&chunk[..n]);
    }
}

/// The threads of process `pid` named `name`.
fn threads_named(pid: &str, name: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
                .filter(|c| c.trim() == name)
                .count()
        })
        .unwrap_or(0)
}

/// A keep-alive sign is answered by the thread that commits the certificate, straight onto the
/// socket. A client that pipelines requests and never reads the answers must not stall that
/// thread (the store's writer, which answers everyone): once the socket takes no more, the
/// rest of the answer waits on a thread of its own. Another client is served meanwhile; when
/// the first one reads, it gets every answer, whole and in order.
#[test]
fn a_client_that_does_not_read_its_answers_holds_up_only_itself() {
    let t = Token::new("hostile-noread");
    setup(&t);
    let port = free_port();
    let p = port.to_string();
    let srv = start(&t, "serve", "p11ca", &serve_args(&p, &[]), port, true);
    let pid = srv.pid().expect("the server's pid");
    let csr = t.ec_csr("web", "web.example");

    // A small receive buffer, so the answers back up after a few.
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)).into(),
        Duration::from_secs(5),
    )
    .unwrap();
    let mut slow: TcpStream = s.into();
    const N: usize = 200;
    let requests: Vec<u8> = (0..N)
        .flat_map(|i| pipelined_sign(port, &csr, &format!("n{i}.example")))
        .collect();
    let mut writer = slow.try_clone().unwrap();
    let sent = std::thread::spawn(move || writer.write_all(&requests));

    let t0 = Instant::now();
    while threads_named(&pid, "p11ca-answer") == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no answer was left to a thread of its own: {}",
            t.read("serve.err")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The writer is free: another client's certificate is signed, recorded and answered.
    let t1 = Instant::now();
    let (status, body) = http(port, "POST", SIGN, &sign_body(&t)).expect("an answer");
    assert_eq!(status, 200, "{body}");
    assert!(
        t1.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t1.elapsed()
    );
    assert!(
        threads_named(&pid, "p11ca-answer") > 0,
        "the slow client was let go"
    );

    // Now the slow client reads: every answer, in the order asked.
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut pending = Vec::new();
    for i in 0..N {
        let (status, body) = read_response(&mut slow, &mut pending);
        assert_eq!(status, 200, "answer {i}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let pem = v["result"]["certificate"].as_str().unwrap();
        t.write("answer.pem", pem);
        let text = x509_text(&t, "answer.pem");
        assert!(
            text.contains(&format!("DNS:n{i}.example")),
            "answer {i}: {text}"
        );
    }
    sent.join().unwrap().expect("the requests were written");
    assert_eq!(records(&t).len(), N + 1);
}
