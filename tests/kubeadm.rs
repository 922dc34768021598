//! `p11ca kubeadm`: kubeadm's external-CA layout from the token, checked by OpenSSL against
//! kubeadm's certificate table, used by a real three-member etcd cluster, and its kubeconfigs
//! read back by kubectl.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use crate::util::{Token, require, run, sh};

/// A kubeadm configuration for node `cp1` on 127.0.0.1 with ECDSA keys (fast to make in
/// software and in every token), and the fields that shape the certificates set.
pub(crate) fn config(algo: &str) -> String {
    format!(
        "apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
nodeRegistration:
  name: cp1
localAPIEndpoint:
  advertiseAddress: 127.0.0.1
  bindPort: 6443
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
clusterName: kubernetes
controlPlaneEndpoint: k8s.example.com:443
encryptionAlgorithm: {algo}
networking:
  serviceSubnet: 10.96.0.0/12
  dnsDomain: cluster.local
apiServer:
  certSANs: [\"10.1.2.3\", \"api.example.com\"]
etcd:
  local:
    serverCertSANs: [\"etcd.example.com\"]
    peerCertSANs: [\"10.9.9.9\"]
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: systemd
"
    )
}

/// The files `kubeadm certs` writes under the certificate folder.
const FILES: [&str; 19] = [
    "apiserver-etcd-client.crt",
    "apiserver-etcd-client.key",
    "apiserver-kubelet-client.crt",
    "apiserver-kubelet-client.key",
    "apiserver.crt",
    "apiserver.key",
    "ca.crt",
    "etcd/ca.crt",
    "etcd/healthcheck-client.crt",
    "etcd/healthcheck-client.key",
    "etcd/peer.crt",
    "etcd/peer.key",
    "etcd/server.crt",
    "etcd/server.key",
    "front-proxy-ca.crt",
    "front-proxy-client.crt",
    "front-proxy-client.key",
    "sa.key",
    "sa.pub",
];

/// Every file under `dir` (relative, sorted) with its contents.
fn tree(t: &Token, dir: &str) -> BTreeMap<String, Vec<u8>> {
    let root = t.path(dir);
    let mut out = BTreeMap::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// A token with kubeadm's whole PKI made in `pki/` from `config(algo)`.
pub(crate) fn pki_token(label: &str, algo: &str) -> Token {
    let t = Token::new(label);
    t.write("kubeadm.yaml", &config(algo));
    t.run(&CERTS).ok();
    t
}

/// `kubeadm certs` with the test's config into pki/.
pub(crate) const CERTS: [&str; 6] = [
    "kubeadm",
    "certs",
    "--config",
    "kubeadm.yaml",
    "--cert-dir",
    "pki",
];

/// The token holds the three CA keys kubeadm's external-CA mode needs, by label.
pub(crate) fn three_ca_keys_in_the_token(t: &Token) {
    let list = t.run(&["key", "list"]);
    list.ok();
    for label in [
        "kubernetes-ca",
        "kubernetes-front-proxy-ca",
        "kubernetes-etcd-ca",
    ] {
        assert!(
            list.stdout
                .contains(&format!("object={label};type=private")),
            "{}",
            list.stdout
        );
    }
}

#[test]
fn certs_writes_kubeadms_external_ca_layout_and_a_second_run_keeps_it() {
    require("openssl");
    let t = Token::new("k8s");
    t.write("kubeadm.yaml", &config("ECDSA-P256"));
    let before = t.object_count();
    let r = t.run(&CERTS);
    r.ok();
    assert!(
        r.stdout.contains("sa.key is a software key file"),
        "{}",
        r.stdout
    );
    let files = tree(&t, "pki");
    assert_eq!(files.keys().map(String::as_str).collect::<Vec<_>>(), FILES);
    for name in files.keys() {
        let mode = std::fs::metadata(t.path(&format!("pki/{name}")))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        let want = if name.ends_with(".key") || name.starts_with("sa.") {
            0o600
        } else {
            0o644
        };
        assert_eq!(mode, want, "{name}");
    }
    // Three key pairs and three certificates in the token; no CA key on disk.
    assert_eq!(t.object_count(), before + 9);
    three_ca_keys_in_the_token(&t);
    // The token's CA key signs what ca.crt says: OpenSSL checks a leaf under it.
    let v = sh(t
        .command("openssl")
        .args(["verify", "-CAfile", "pki/ca.crt", "pki/apiserver.crt"]));
    assert!(v.contains("OK"), "{v}");

    // Idempotent like kubeadm: a second run finds the CAs in the token and keeps every file.
    let again = t.run(&CERTS);
    again.ok();
    assert!(
        again
            .stdout
            .contains("Using existing ca keyless certificate authority"),
        "{}",
        again.stdout
    );
    assert_eq!(tree(&t, "pki"), files, "a second run changes nothing");
    assert_eq!(t.object_count(), before + 9, "no new key in the token");

    // A missing leaf is made again under the same CA; the others stay.
    std::fs::remove_file(t.path("pki/etcd/peer.crt")).unwrap();
    std::fs::remove_file(t.path("pki/etcd/peer.key")).unwrap();
    t.run(&CERTS).ok();
    let after = tree(&t, "pki");
    assert_ne!(after["etcd/peer.crt"], files["etcd/peer.crt"]);
    assert_eq!(after["etcd/server.crt"], files["etcd/server.crt"]);
    let v = sh(t.command("openssl").args([
        "verify",
        "-CAfile",
        "pki/etcd/ca.crt",
        "pki/etcd/peer.crt",
    ]));
    assert!(v.contains("OK"), "{v}");
}

#[test]
fn dry_run_lists_and_touches_nothing() {
    let t = Token::new("k8s");
    t.write("kubeadm.yaml", &config("ECDSA-P256"));
    let before = t.object_count();
    let r = t.run(&[&CERTS[..], &["--dry-run"]].concat());
    r.ok();
    assert!(
        r.stdout.contains(
            "make pki/ca.crt (CN kubernetes, key generated in the token as kubernetes-ca)"
        ),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("make pki/etcd/server.crt"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("make pki/sa.key and sa.pub"),
        "{}",
        r.stdout
    );
    assert!(!t.path("pki").exists(), "nothing written");
    assert_eq!(t.object_count(), before, "nothing made in the token");
}

/// Each bad input: one error line naming the field or file, its exit code, nothing written,
/// nothing in the token.
#[test]
fn bad_inputs_fail_with_one_line_and_write_nothing() {
    let t = Token::new("k8s");
    let good = config("ECDSA-P256");
    let before = t.object_count();
    let many: Vec<String> = (1..=120).map(|i| format!("\"10.1.0.{i}\"")).collect();
    let many = good.replace(
        "[\"10.1.2.3\", \"api.example.com\"]",
        &format!("[{}]", many.join(", ")),
    );
    let cases: [(&str, String, i32, &str); 6] = [
        (
            "sans",
            many,
            3,
            "sans.yaml: apiserver would get 128 subjectAltNames; the issuance policy allows at most 100",
        ),
        (
            "subnet",
            good.replace("10.96.0.0/12", "10.96.0.0/33"),
            1,
            "networking.serviceSubnet \"10.96.0.0/33\" is not a CIDR",
        ),
        (
            "node",
            good.replace("  name: cp1\n", ""),
            1,
            "nodeRegistration.name is missing",
        ),
        (
            "version",
            good.replacen("kubeadm.k8s.io/v1beta4", "kubeadm.k8s.io/v1beta9", 1),
            1,
            "unknown apiVersion \"kubeadm.k8s.io/v1beta9\"",
        ),
        ("yaml", "apiVersion: [".to_string(), 1, "not valid YAML"),
        (
            "algo",
            good.replace("ECDSA-P256", "Ed25519"),
            1,
            "encryptionAlgorithm \"Ed25519\"",
        ),
    ];
    for (name, text, code, needle) in cases {
        let file = format!("{name}.yaml");
        t.write(&file, &text);
        t.run(&["kubeadm", "certs", "--config", &file, "--cert-dir", "pki"])
            .fails(code, needle);
        assert!(!t.path("pki").exists(), "{name}: nothing written");
    }
    // A folder holding a CA key: kubeadm would not use external-CA mode.
    t.write("kubeadm.yaml", &good);
    std::fs::create_dir_all(t.path("pki/etcd")).unwrap();
    t.write("pki/etcd/ca.key", "not really a key");
    t.run(&CERTS).fails(
        3,
        "pki/etcd/ca.key exists: with a CA key file kubeadm does not use external-CA mode",
    );
    assert_eq!(tree(&t, "pki").len(), 1, "nothing written beside it");
    assert_eq!(t.object_count(), before, "nothing made in the token");
}

#[test]
fn a_file_that_does_not_match_its_ca_or_names_is_an_error_naming_it() {
    require("openssl");
    let t = pki_token("k8s", "ECDSA-P256");
    let objects = t.object_count();
    let snapshot = tree(&t, "pki");
    // A front-proxy-client signed by the kubernetes CA instead of the front-proxy CA.
    std::fs::copy(
        t.path("pki/apiserver-etcd-client.crt"),
        t.path("pki/front-proxy-client.crt"),
    )
    .unwrap();
    std::fs::copy(
        t.path("pki/apiserver-etcd-client.key"),
        t.path("pki/front-proxy-client.key"),
    )
    .unwrap();
    t.run(&CERTS).fails(
        3,
        "pki/front-proxy-client.crt is not signed by its CA (front-proxy-ca.crt)",
    );
    // An apiserver certificate made for other names.
    let mut snapshot2 = snapshot.clone();
    snapshot2.insert(
        "front-proxy-client.crt".into(),
        std::fs::read(t.path("pki/front-proxy-client.crt")).unwrap(),
    );
    snapshot2.insert(
        "front-proxy-client.key".into(),
        std::fs::read(t.path("pki/front-proxy-client.key")).unwrap(),
    );
    assert_eq!(tree(&t, "pki"), snapshot2, "nothing written");
    for (name, bytes) in &snapshot {
        std::fs::write(t.path(&format!("pki/{name}")), bytes).unwrap();
    }
    let other = config("ECDSA-P256").replace("api.example.com", "other.example.com");
    t.write("other.yaml", &other);
    t.run(&[
        "kubeadm",
        "certs",
        "--config",
        "other.yaml",
        "--cert-dir",
        "pki",
    ])
    .fails(
        3,
        "pki/apiserver.crt lacks the subjectAltNames other.example.com",
    );
    // A key that is not the certificate's.
    std::fs::copy(t.path("pki/etcd/peer.key"), t.path("pki/etcd/server.key")).unwrap();
    t.run(&CERTS).fails(
        3,
        "pki/etcd/server.key is not the key of pki/etcd/server.crt",
    );
    // A certificate without its key.
    std::fs::remove_file(t.path("pki/etcd/server.key")).unwrap();
    t.run(&CERTS)
        .fails(3, "pki/etcd/server.crt exists without pki/etcd/server.key");
    // ca.crt present, but this token holds no key for it.
    let fresh = Token::new("other");
    fresh.write("kubeadm.yaml", &config("ECDSA-P256"));
    std::fs::create_dir_all(fresh.path("pki")).unwrap();
    std::fs::copy(t.path("pki/ca.crt"), fresh.path("pki/ca.crt")).unwrap();
    fresh
        .run(&CERTS)
        .fails(3, "has no key labelled \"kubernetes-ca\"");
    assert_eq!(t.object_count(), objects, "no key added by a refused run");
}

/// `etcdctl` (v3 API) against `endpoints` with a client certificate; never waits long.
fn etcdctl(t: &Token, endpoints: &str, cert: &str, key: &str, args: &[&str]) -> crate::util::Run {
    let mut c = t.command("etcdctl");
    c.env("ETCDCTL_API", "3").args([
        "--endpoints",
        endpoints,
        "--cacert",
        "pki/etcd/ca.crt",
        "--cert",
        cert,
        "--key",
        key,
        "--dial-timeout",
        "2s",
        "--command-timeout",
        "4s",
    ]);
    run(c.args(args), None)
}

/// A client certificate and key from a CA that is not etcd's (OpenSSL, software keys).
fn foreign_client(t: &Token) {
    let openssl = |args: &[&str]| sh(t.command("openssl").args(args));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "other-ca.key",
        "-out",
        "other-ca.crt",
        "-subj",
        "/CN=etcd-ca",
        "-days",
        "2",
    ]);
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "other.key",
        "-out",
        "other.csr",
        "-subj",
        "/CN=kube-apiserver-etcd-client",
    ]);
    t.write(
        "client.ext",
        "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n",
    );
    openssl(&[
        "x509",
        "-req",
        "-in",
        "other.csr",
        "-CA",
        "other-ca.crt",
        "-CAkey",
        "other-ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "client.ext",
        "-out",
        "other.crt",
    ]);
}

#[test]
fn a_real_etcd_cluster_runs_on_the_certificates_and_refuses_another_cas_client() {
    for tool in ["etcd", "etcdctl", "openssl"] {
        require(tool);
    }
    let t = pki_token("k8s", "ECDSA-P256");
    let (_members, endpoints) = start_etcd_cluster(&t);
    let all = endpoints.join(",");
    let apiserver = (
        "pki/apiserver-etcd-client.crt",
        "pki/apiserver-etcd-client.key",
    );
    wait_until_healthy(&t, &all, apiserver);
    let members = etcdctl(&t, &all, apiserver.0, apiserver.1, &["member", "list"]);
    members.ok();
    assert_eq!(
        members
            .stdout
            .lines()
            .filter(|l| l.contains("started"))
            .count(),
        3,
        "{}",
        members.stdout
    );
    // The API server's client writes through one member; the health-check client reads
    // it back through another (replicated over the peer certificates).
    etcdctl(
        &t,
        &endpoints[0],
        apiserver.0,
        apiserver.1,
        &["put", "/p11ca", "from-the-token"],
    )
    .ok();
    let health = (
        "pki/etcd/healthcheck-client.crt",
        "pki/etcd/healthcheck-client.key",
    );
    let got = etcdctl(
        &t,
        &endpoints[2],
        health.0,
        health.1,
        &["get", "/p11ca", "--print-value-only"],
    );
    got.ok();
    assert_eq!(got.stdout.trim(), "from-the-token");
    etcdctl(&t, &all, health.0, health.1, &["endpoint", "health"]).ok();

    another_cas_client_is_refused(&t, &endpoints, apiserver);
}

/// Three etcd members on loopback, each with kubeadm's etcd server and peer certificates and
/// client-certificate checks on both; ended with the returned handles (or after 120 s). The
/// handles and the members' client URLs.
fn start_etcd_cluster(t: &Token) -> (Vec<crate::util::Background>, Vec<String>) {
    // Six distinct free ports: a client and a peer port per member.
    let mut free: Vec<u16> = Vec::new();
    while free.len() < 6 {
        let p = crate::util::free_port();
        if !free.contains(&p) {
            free.push(p);
        }
    }
    let ports: Vec<(u16, u16)> = free.chunks(2).map(|c| (c[0], c[1])).collect();
    let cluster: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("m{i}=https://127.0.0.1:{peer}"))
        .collect();
    let cluster = cluster.join(",");
    // Each member ends with the test (dropped, panicking or not) or after 120 s at most.
    let members: Vec<_> = ports
        .iter()
        .enumerate()
        .map(|(i, (client, peer))| {
            let (c, p) = (
                format!("https://127.0.0.1:{client}"),
                format!("https://127.0.0.1:{peer}"),
            );
            let args = [
                "--name",
                &format!("m{i}"),
                "--data-dir",
                &format!("etcd-m{i}"),
                "--listen-client-urls",
                &c,
                "--advertise-client-urls",
                &c,
                "--listen-peer-urls",
                &p,
                "--initial-advertise-peer-urls",
                &p,
                "--initial-cluster",
                &cluster,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "p11ca-test",
                "--client-cert-auth",
                "--trusted-ca-file",
                "pki/etcd/ca.crt",
                "--cert-file",
                "pki/etcd/server.crt",
                "--key-file",
                "pki/etcd/server.key",
                "--peer-client-cert-auth",
                "--peer-trusted-ca-file",
                "pki/etcd/ca.crt",
                "--peer-cert-file",
                "pki/etcd/peer.crt",
                "--peer-key-file",
                "pki/etcd/peer.key",
            ]
            .map(|s| s.to_string());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            t.spawn(&format!("etcd-m{i}"), 120, "etcd", &args)
        })
        .collect();
    let endpoints: Vec<String> = ports
        .iter()
        .map(|(client, _)| format!("https://127.0.0.1:{client}"))
        .collect();
    (members, endpoints)
}

/// Wait (40 s at most) until every member of `all` answers `endpoint health` to `client`.
fn wait_until_healthy(t: &Token, all: &str, client: (&str, &str)) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    loop {
        let h = etcdctl(t, all, client.0, client.1, &["endpoint", "health"]);
        if h.code == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the etcd cluster did not become healthy: {}{}\nmember 0: {}",
            h.stdout,
            h.stderr,
            std::fs::read_to_string(t.path("etcd-m0.err")).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// A client certificate from another CA (same CN) is refused, and nothing it sent is
/// stored; etcd's log says why.
fn another_cas_client_is_refused(t: &Token, endpoints: &[String], apiserver: (&str, &str)) {
    foreign_client(t);
    let refused = etcdctl(
        t,
        &endpoints[0],
        "other.crt",
        "other.key",
        &["put", "/p11ca", "intruder"],
    );
    assert_ne!(refused.code, 0, "{}", refused.stdout);
    let still = etcdctl(
        t,
        &endpoints[1],
        apiserver.0,
        apiserver.1,
        &["get", "/p11ca", "--print-value-only"],
    );
    assert_eq!(still.stdout.trim(), "from-the-token");
    let log: String = (0..3)
        .map(|i| std::fs::read_to_string(t.path(&format!("etcd-m{i}.err"))).unwrap_or_default())
        .collect();
    assert!(
        log.contains("bad certificate")
            || log.contains("unknown authority")
            || log.contains("rejected connection"),
        "no refusal in etcd's log"
    );
}

/// One row of kubeadm's certificate table as OpenSSL prints it.
struct Row {
    file: &'static str,
    issuer_file: &'static str,
    subject: &'static str,
    issuer: &'static str,
    /// Extended key usages; empty for a CA.
    eku: &'static str,
    /// subjectAltName; empty for none.
    sans: &'static str,
    days: i64,
}

const SERVER: &str = "TLS Web Server Authentication";
const CLIENT: &str = "TLS Web Client Authentication";
const BOTH: &str = "TLS Web Server Authentication, TLS Web Client Authentication";

/// kubeadm's certificate table, as OpenSSL prints it.
const TABLE: [Row; 10] = [
    Row {
        file: "ca.crt",
        issuer_file: "ca.crt",
        subject: "CN = kubernetes",
        issuer: "CN = kubernetes",
        eku: "",
        sans: "",
        days: 3650,
    },
    Row {
        file: "front-proxy-ca.crt",
        issuer_file: "front-proxy-ca.crt",
        subject: "CN = front-proxy-ca",
        issuer: "CN = front-proxy-ca",
        eku: "",
        sans: "",
        days: 3650,
    },
    Row {
        file: "etcd/ca.crt",
        issuer_file: "etcd/ca.crt",
        subject: "CN = etcd-ca",
        issuer: "CN = etcd-ca",
        eku: "",
        sans: "",
        days: 3650,
    },
    Row {
        file: "apiserver.crt",
        issuer_file: "ca.crt",
        subject: "CN = kube-apiserver",
        issuer: "CN = kubernetes",
        eku: SERVER,
        sans: "DNS:api.example.com, DNS:cp1, DNS:k8s.example.com, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local, IP Address:10.96.0.1, IP Address:127.0.0.1, IP Address:10.1.2.3",
        days: 365,
    },
    Row {
        file: "apiserver-kubelet-client.crt",
        issuer_file: "ca.crt",
        subject: "O = kubeadm:cluster-admins, CN = kube-apiserver-kubelet-client",
        issuer: "CN = kubernetes",
        eku: CLIENT,
        sans: "",
        days: 365,
    },
    Row {
        file: "front-proxy-client.crt",
        issuer_file: "front-proxy-ca.crt",
        subject: "CN = front-proxy-client",
        issuer: "CN = front-proxy-ca",
        eku: CLIENT,
        sans: "",
        days: 365,
    },
    Row {
        file: "etcd/server.crt",
        issuer_file: "etcd/ca.crt",
        subject: "CN = cp1",
        issuer: "CN = etcd-ca",
        eku: BOTH,
        sans: "DNS:cp1, DNS:etcd.example.com, DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1",
        days: 365,
    },
    Row {
        file: "etcd/peer.crt",
        issuer_file: "etcd/ca.crt",
        subject: "CN = cp1",
        issuer: "CN = etcd-ca",
        eku: BOTH,
        sans: "DNS:cp1, DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, IP Address:10.9.9.9",
        days: 365,
    },
    Row {
        file: "etcd/healthcheck-client.crt",
        issuer_file: "etcd/ca.crt",
        subject: "CN = kube-etcd-healthcheck-client",
        issuer: "CN = etcd-ca",
        eku: CLIENT,
        sans: "",
        days: 365,
    },
    Row {
        file: "apiserver-etcd-client.crt",
        issuer_file: "etcd/ca.crt",
        subject: "CN = kube-apiserver-etcd-client",
        issuer: "CN = etcd-ca",
        eku: CLIENT,
        sans: "",
        days: 365,
    },
];

/// The value lines of `openssl x509 -ext NAME` output (empty when absent).
fn ext(t: &Token, file: &str, name: &str) -> String {
    let out = sh(t
        .command("openssl")
        .args(["x509", "-noout", "-in", file, "-ext", name]));
    out.lines()
        .skip(1)
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ")
}

fn unix(t: &Token, date: &str) -> i64 {
    sh(t.command("date").args(["-u", "-d", date, "+%s"]))
        .trim()
        .parse()
        .unwrap()
}

/// Every certificate against kubeadm's table, by OpenSSL: subject, issuer (and the chain
/// verified), usages, names, validity; leaf keys RSA-2048 as kubeadm's default.
#[test]
fn every_certificate_matches_kubeadms_table() {
    require("openssl");
    let t = pki_token("k8s", "RSA-2048");
    for r in &TABLE {
        let file = format!("pki/{}", r.file);
        let field = |flag: &str| {
            let out = sh(t
                .command("openssl")
                .args(["x509", "-noout", "-in", &file, flag]));
            out.trim()
                .split_once('=')
                .map(|(_, v)| v.to_string())
                .unwrap_or_default()
        };
        assert_eq!(field("-subject").trim(), r.subject, "{file}");
        assert_eq!(field("-issuer").trim(), r.issuer, "{file}");
        let v = sh(t.command("openssl").args([
            "verify",
            "-x509_strict",
            "-CAfile",
            &format!("pki/{}", r.issuer_file),
            &file,
        ]));
        assert!(v.contains(": OK"), "{file}: {v}");
        assert_eq!(ext(&t, &file, "extendedKeyUsage"), r.eku, "{file}");
        assert_eq!(ext(&t, &file, "subjectAltName"), r.sans, "{file}");
        let (ku, bc) = (
            ext(&t, &file, "keyUsage"),
            ext(&t, &file, "basicConstraints"),
        );
        if r.eku.is_empty() {
            assert_eq!(bc, "CA:TRUE", "{file}");
            assert!(ku.contains("Certificate Sign"), "{file}: {ku}");
        } else {
            assert_eq!(bc, "CA:FALSE", "{file}");
            assert_eq!(ku, "Digital Signature, Key Encipherment", "{file}");
            let text = sh(t
                .command("openssl")
                .args(["x509", "-noout", "-text", "-in", &file]));
            assert!(text.contains("Public-Key: (2048 bit)"), "{file}");
            // The private key beside it is the certificate's.
            let key = file.replace(".crt", ".key");
            let m1 = sh(t
                .command("openssl")
                .args(["x509", "-noout", "-pubkey", "-in", &file]));
            let m2 = sh(t.command("openssl").args(["pkey", "-pubout", "-in", &key]));
            assert_eq!(m1, m2, "{key}");
        }
        let (nb, na) = (field("-startdate"), field("-enddate"));
        let days = (unix(&t, &na) - unix(&t, &nb)) / 86400;
        assert_eq!(days, r.days, "{file}: {nb} .. {na}");
        let backdate = sh(t.command("date").args(["-u", "+%s"]))
            .trim()
            .parse::<i64>()
            .unwrap()
            - unix(&t, &nb);
        assert!(
            (0..=420).contains(&backdate),
            "{file}: notBefore {nb} is backdated about 5 minutes"
        );
    }
    // sa.pub is sa.key's public key.
    let a = sh(t
        .command("openssl")
        .args(["pkey", "-pubout", "-in", "pki/sa.key"]));
    assert_eq!(a, t.read("pki/sa.pub"));
}

/// `kubectl config view --raw -o jsonpath=…` of a kubeconfig.
fn kubectl_field(t: &Token, file: &str, path: &str) -> String {
    sh(t.command("kubectl").args([
        "config",
        "view",
        "--raw",
        "--kubeconfig",
        file,
        "-o",
        &format!("jsonpath={path}"),
    ]))
}

fn base64_to_file(t: &Token, data: &str, out: &str) {
    t.write(&format!("{out}.b64"), data);
    sh(t.command("openssl").args([
        "base64",
        "-d",
        "-A",
        "-in",
        &format!("{out}.b64"),
        "-out",
        out,
    ]));
}

/// Every kubeconfig read back by kubectl: its server, its CA (ca.crt itself), and its client
/// certificate verified under ca.crt with the table's CN and O, the key its own.
#[test]
fn kubeconfigs_are_read_by_kubectl_and_carry_the_tables_identities() {
    for tool in ["kubectl", "openssl"] {
        require(tool);
    }
    let t = pki_token("k8s", "ECDSA-P256");
    let args = [
        "kubeadm",
        "kubeconfig",
        "--config",
        "kubeadm.yaml",
        "--cert-dir",
        "pki",
        "--kubeconfig-dir",
        "kc",
    ];
    t.run(&args).ok();
    let table = [
        (
            "admin.conf",
            "O = kubeadm:cluster-admins, CN = kubernetes-admin",
            "https://k8s.example.com:443",
        ),
        (
            "super-admin.conf",
            "O = system:masters, CN = kubernetes-super-admin",
            "https://k8s.example.com:443",
        ),
        (
            "controller-manager.conf",
            "CN = system:kube-controller-manager",
            "https://127.0.0.1:6443",
        ),
        (
            "scheduler.conf",
            "CN = system:kube-scheduler",
            "https://127.0.0.1:6443",
        ),
        (
            "kubelet.conf",
            "O = system:nodes, CN = system:node:cp1",
            "https://k8s.example.com:443",
        ),
    ];
    for (file, subject, server) in table {
        check_kubeconfig(&t, &format!("kc/{file}"), subject, server);
    }
    // A second run keeps them; a kubeconfig of another CA is an error naming it.
    let before = std::fs::read(t.path("kc/admin.conf")).unwrap();
    let again = t.run(&args);
    again.ok();
    assert!(again.stdout.contains("Using existing"), "{}", again.stdout);
    assert_eq!(std::fs::read(t.path("kc/admin.conf")).unwrap(), before);
    let other = pki_token("other", "ECDSA-P256");
    other
        .run(&[
            "kubeadm",
            "kubeconfig",
            "--config",
            "kubeadm.yaml",
            "--cert-dir",
            "pki",
            "--kubeconfig-dir",
            "kc",
        ])
        .ok();
    std::fs::copy(other.path("kc/scheduler.conf"), t.path("kc/scheduler.conf")).unwrap();
    t.run(&args)
        .fails(3, "kc/scheduler.conf embeds another CA than pki/ca.crt");

    kubeconfig_user(&t);
}

/// The kubeconfig `f`: mode 0600, `server`, cluster "kubernetes", the user's context, ca.crt
/// embedded, and a client certificate with `subject` that verifies under ca.crt, its key its own.
fn check_kubeconfig(t: &Token, f: &str, subject: &str, server: &str) {
    let mode = std::fs::metadata(t.path(f)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{f}");
    assert_eq!(
        kubectl_field(t, f, "{.clusters[0].cluster.server}"),
        server,
        "{f}"
    );
    assert_eq!(
        kubectl_field(t, f, "{.clusters[0].name}"),
        "kubernetes",
        "{f}"
    );
    let user = kubectl_field(t, f, "{.users[0].name}");
    assert_eq!(
        kubectl_field(t, f, "{.current-context}"),
        format!("{user}@kubernetes"),
        "{f}"
    );
    kubeconfig_client_under_ca(t, f, subject);
    base64_to_file(
        t,
        &kubectl_field(t, f, "{.users[0].user.client-key-data}"),
        "kc-key.pem",
    );
    assert!(
        subject.ends_with(&format!("CN = {user}")),
        "{f}: user {user}"
    );
    let m1 = sh(t
        .command("openssl")
        .args(["x509", "-noout", "-pubkey", "-in", "kc-cert.pem"]));
    let m2 = sh(t
        .command("openssl")
        .args(["pkey", "-pubout", "-in", "kc-key.pem"]));
    assert_eq!(m1, m2, "{f}: the key is the certificate's");
}

/// The kubeconfig `f` embeds ca.crt and a client certificate (left in kc-cert.pem) that
/// verifies under it for client authentication, with `subject`.
fn kubeconfig_client_under_ca(t: &Token, f: &str, subject: &str) {
    base64_to_file(
        t,
        &kubectl_field(t, f, "{.clusters[0].cluster.certificate-authority-data}"),
        "kc-ca.pem",
    );
    assert_eq!(
        t.read("kc-ca.pem"),
        t.read("pki/ca.crt"),
        "{f} embeds ca.crt"
    );
    base64_to_file(
        t,
        &kubectl_field(t, f, "{.users[0].user.client-certificate-data}"),
        "kc-cert.pem",
    );
    let v = sh(t.command("openssl").args([
        "verify",
        "-CAfile",
        "pki/ca.crt",
        "-purpose",
        "sslclient",
        "kc-cert.pem",
    ]));
    assert!(v.contains(": OK"), "{f}: {v}");
    let s = sh(t
        .command("openssl")
        .args(["x509", "-noout", "-subject", "-in", "kc-cert.pem"]));
    assert_eq!(s.trim(), format!("subject={subject}"), "{f}");
}

/// `kubeconfig --client-name`: one more user on stdout, groups from --org (system:masters
/// refused), and a worker's kubelet.conf.
fn kubeconfig_user(t: &Token) {
    // `kubeconfig user`: one more user on stdout, groups from --org; system:masters refused.
    let u = t.run(&[
        "kubeadm",
        "kubeconfig",
        "--config",
        "kubeadm.yaml",
        "--cert-dir",
        "pki",
        "--client-name",
        "jane",
        "--org",
        "devs",
        "--org",
        "ops",
    ]);
    u.ok();
    t.write("jane.conf", &u.stdout);
    base64_to_file(
        t,
        &kubectl_field(t, "jane.conf", "{.users[0].user.client-certificate-data}"),
        "jane.pem",
    );
    let s = sh(t
        .command("openssl")
        .args(["x509", "-noout", "-subject", "-in", "jane.pem"]));
    // One multi-valued RDN, its values in DER order (as Go's SET OF): the shorter first.
    assert_eq!(s.trim(), "subject=O = ops + O = devs, CN = jane");
    let v = sh(t
        .command("openssl")
        .args(["verify", "-CAfile", "pki/ca.crt", "jane.pem"]));
    assert!(v.contains(": OK"), "{v}");
    t.run(&[
        "kubeadm",
        "kubeconfig",
        "--config",
        "kubeadm.yaml",
        "--cert-dir",
        "pki",
        "--client-name",
        "mallory",
        "--org",
        "system:masters",
    ])
    .fails(3, "subject O \"system:masters\" is refused");
    // A worker's kubelet.conf (no controller-manager signer in external-CA mode).
    let w = t.run(&[
        "kubeadm",
        "kubeconfig",
        "--config",
        "kubeadm.yaml",
        "--cert-dir",
        "pki",
        "--client-name",
        "system:node:w1",
        "--org",
        "system:nodes",
    ]);
    w.ok();
    t.write("w1.conf", &w.stdout);
    assert_eq!(
        kubectl_field(t, "w1.conf", "{.clusters[0].cluster.server}"),
        "https://k8s.example.com:443"
    );
    base64_to_file(
        t,
        &kubectl_field(t, "w1.conf", "{.users[0].user.client-certificate-data}"),
        "w1.pem",
    );
    let s = sh(t
        .command("openssl")
        .args(["x509", "-noout", "-subject", "-in", "w1.pem"]));
    assert_eq!(s.trim(), "subject=O = system:nodes, CN = system:node:w1");
}

/// An OpenSSL P-256 key (SEC1, as kubeadm writes it) and CSR at `base` with `subj` and SANs.
fn openssl_csr(t: &Token, base: &str, subj: &str, sans: &str) {
    let key = format!("{base}.key");
    let mut args = vec![
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        "",
        "-subj",
        subj,
    ];
    let csr = format!("{base}.csr");
    args[10] = &csr;
    let ext = format!("subjectAltName={sans}");
    if !sans.is_empty() {
        args.extend(["-addext", &ext]);
    }
    sh(t.command("openssl").args(&args));
    sh(t.command("openssl").args(["ec", "-in", &key, "-out", &key]));
}

/// A kubeconfig as generate-csr leaves it: the client key filled, the CA and certificate empty.
fn generate_csr_conf(t: &Token, name: &str, user: &str, server: &str) {
    let key_pem = t.read(&format!("kc/{name}.key"));
    std::fs::remove_file(t.path(&format!("kc/{name}.key"))).unwrap();
    t.write(&format!("kc/{name}.b64in"), &key_pem);
    let b64 = sh(t
        .command("openssl")
        .args(["base64", "-A", "-in", &format!("kc/{name}.b64in")]));
    std::fs::remove_file(t.path(&format!("kc/{name}.b64in"))).unwrap();
    t.write(
        &format!("kc/{name}"),
        &format!(
            "apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: \"\"
    server: {server}
  name: kubernetes
contexts:
- context:
    cluster: kubernetes
    user: {user}
  name: {user}@kubernetes
current-context: {user}@kubernetes
kind: Config
preferences: {{}}
users:
- name: {user}
  user:
    client-certificate-data: \"\"
    client-key-data: {b64}
"
        ),
    );
}

/// kubeadm's `certs generate-csr` tree, made as the reference describes it (kubeadm is not in
/// Debian): seven NAME.key/NAME.csr pairs and five NAME.conf/NAME.conf.csr pairs.
fn generate_csr_tree(t: &Token) {
    std::fs::create_dir_all(t.path("pki/etcd")).unwrap();
    std::fs::create_dir_all(t.path("kc")).unwrap();
    let etcd = "DNS:cp1,DNS:localhost,IP:127.0.0.1,IP:::1";
    let csrs = [
        ("pki/apiserver", "/CN=kube-apiserver".to_string(),
         "DNS:cp1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:k8s.example.com,DNS:api.example.com,IP:10.96.0.1,IP:127.0.0.1,IP:10.1.2.3".to_string()),
        ("pki/apiserver-kubelet-client", "/O=kubeadm:cluster-admins/CN=kube-apiserver-kubelet-client".into(), String::new()),
        ("pki/front-proxy-client", "/CN=front-proxy-client".into(), String::new()),
        ("pki/etcd/server", "/CN=cp1".into(), format!("{etcd},DNS:etcd.example.com")),
        ("pki/etcd/peer", "/CN=cp1".into(), format!("{etcd},IP:10.9.9.9")),
        ("pki/etcd/healthcheck-client", "/CN=kube-etcd-healthcheck-client".into(), String::new()),
        ("pki/apiserver-etcd-client", "/CN=kube-apiserver-etcd-client".into(), String::new()),
    ];
    for (base, subj, sans) in &csrs {
        openssl_csr(t, base, subj, sans);
    }
    let confs = [
        (
            "admin.conf",
            "kubernetes-admin",
            "/O=kubeadm:cluster-admins/CN=kubernetes-admin",
            "https://k8s.example.com:443",
        ),
        (
            "super-admin.conf",
            "kubernetes-super-admin",
            "/O=system:masters/CN=kubernetes-super-admin",
            "https://k8s.example.com:443",
        ),
        (
            "controller-manager.conf",
            "system:kube-controller-manager",
            "/CN=system:kube-controller-manager",
            "https://127.0.0.1:6443",
        ),
        (
            "scheduler.conf",
            "system:kube-scheduler",
            "/CN=system:kube-scheduler",
            "https://127.0.0.1:6443",
        ),
        (
            "kubelet.conf",
            "system:node:cp1",
            "/O=system:nodes/CN=system:node:cp1",
            "https://k8s.example.com:443",
        ),
    ];
    for (name, user, subj, server) in confs {
        // generate-csr names the request NAME.conf.csr; the key goes into NAME.conf.
        openssl_csr(t, &format!("kc/{name}"), subj, "");
        generate_csr_conf(t, name, user, server);
    }
}

#[test]
fn sign_csrs_signs_kubeadms_generate_csr_tree_with_the_right_cas() {
    for tool in ["openssl", "kubectl"] {
        require(tool);
    }
    let t = Token::new("k8s");
    t.write("kubeadm.yaml", &config("ECDSA-P256"));
    generate_csr_tree(&t);
    let objects = t.object_count();
    let sign = [
        "kubeadm",
        "sign-csrs",
        "--config",
        "kubeadm.yaml",
        "--cert-dir",
        "pki",
        "--kubeconfig-dir",
        "kc",
    ];

    a_mismatched_request_is_refused_untouched(&t, &sign, objects);

    let r = t.run(&sign);
    r.ok();
    assert_eq!(t.object_count(), objects + 9, "three CAs made in the token");
    let rows = [
        ("apiserver", "ca.crt", SERVER),
        ("apiserver-kubelet-client", "ca.crt", CLIENT),
        ("front-proxy-client", "front-proxy-ca.crt", CLIENT),
        ("etcd/server", "etcd/ca.crt", BOTH),
        ("etcd/peer", "etcd/ca.crt", BOTH),
        ("etcd/healthcheck-client", "etcd/ca.crt", CLIENT),
        ("apiserver-etcd-client", "etcd/ca.crt", CLIENT),
    ];
    for (base, ca, eku) in rows {
        let crt = format!("pki/{base}.crt");
        let v = sh(t
            .command("openssl")
            .args(["verify", "-CAfile", &format!("pki/{ca}"), &crt]));
        assert!(v.contains(": OK"), "{crt}: {v}");
        assert_eq!(ext(&t, &crt, "extendedKeyUsage"), eku, "{crt}");
    }
    assert!(!t.path("pki/ca.key").exists() && !t.path("pki/etcd/ca.key").exists());
    signed_kubeconfigs_chain_to_the_ca(&t);
    // What was signed is what kubeadm's table wants: `kubeadm certs` keeps every leaf.
    let certs = t.run(&CERTS);
    certs.ok();
    assert_eq!(
        certs.stdout.matches("certificate and key on disk").count(),
        7,
        "{}",
        certs.stdout
    );
    // Nothing left to sign: a clear error, nothing changed.
    let after = tree(&t, "kc");
    t.run(&sign).fails(1, "no unsigned kubeadm CSR");
    assert_eq!(tree(&t, "kc"), after);
}

/// A request that does not match its file's row is refused before anything is made: no file
/// written, no object in the token (it had `objects`).
fn a_mismatched_request_is_refused_untouched(t: &Token, sign: &[&str], objects: usize) {
    let good_csr = std::fs::read(t.path("pki/apiserver-etcd-client.csr")).unwrap();
    let good_key = std::fs::read(t.path("pki/apiserver-etcd-client.key")).unwrap();
    openssl_csr(
        t,
        "pki/apiserver-etcd-client",
        "/O=system:masters/CN=kube-apiserver-etcd-client",
        "",
    );
    let before = tree(t, "pki");
    t.run(sign).fails(3, "pki/apiserver-etcd-client.csr: the request is for CN \"kube-apiserver-etcd-client\" O [\"system:masters\"]");
    assert_eq!(tree(t, "pki"), before, "nothing written");
    assert_eq!(t.object_count(), objects, "nothing made in the token");
    std::fs::write(t.path("pki/apiserver-etcd-client.csr"), good_csr).unwrap();
    std::fs::write(t.path("pki/apiserver-etcd-client.key"), good_key).unwrap();
}

/// Each kubeconfig sign-csrs wrote embeds ca.crt and a client certificate it verifies, with
/// the subject of kubeadm's table.
fn signed_kubeconfigs_chain_to_the_ca(t: &Token) {
    for (conf, subject) in [
        (
            "admin.conf",
            "O = kubeadm:cluster-admins, CN = kubernetes-admin",
        ),
        (
            "super-admin.conf",
            "O = system:masters, CN = kubernetes-super-admin",
        ),
        (
            "controller-manager.conf",
            "CN = system:kube-controller-manager",
        ),
        ("scheduler.conf", "CN = system:kube-scheduler"),
        ("kubelet.conf", "O = system:nodes, CN = system:node:cp1"),
    ] {
        kubeconfig_client_under_ca(t, &format!("kc/{conf}"), subject);
    }
}

/// `key openssl-conf`: OpenSSL's pkcs11 engine signs with the token's CA key using the printed
/// configuration and the printed command, run as printed with the PIN typed at its prompt (no
/// terminal here, so on stdin); a wrong PIN signs nothing. p11tool signs with the same handle.
#[test]
fn openssl_conf_lets_openssl_sign_with_the_token_key_exactly_as_printed() {
    for tool in ["openssl", "p11tool", "setsid"] {
        require(tool);
    }
    let t = Token::new("ca");
    t.write("csr.json", &crate::util::ca_csr("ecdsa", 256));
    t.initca("csr.json", "ca");
    let conf = t.run(&["key", "openssl-conf", "ca-key.uri"]);
    conf.ok();
    t.write("openssl-pkcs11.cnf", &conf.stdout);
    assert!(
        conf.stdout
            .contains(&format!("MODULE_PATH = {}", t.module())),
        "{}",
        conf.stdout
    );
    assert!(
        !conf
            .stdout
            .lines()
            .any(|l| l.trim_start().starts_with("PIN")),
        "no PIN in the file"
    );
    let cmd = conf
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("#   "))
        .expect("the printed command")
        .to_string();
    assert!(cmd.contains("-CAkey \"$(cat ca-key.uri)\""), "{cmd}");
    sh(t.command("openssl").args([
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "node.key",
        "-out",
        "node.csr",
        "-subj",
        "/CN=node1",
        "-addext",
        "subjectAltName=DNS:node1.example.com",
    ]));
    // setsid: no controlling terminal, so the engine's prompt reads the PIN from stdin.
    let signed = run(
        t.command("setsid").args(["-w", "sh", "-c", &cmd]),
        Some(format!("{}\n", crate::util::PIN).as_bytes()),
    );
    assert_eq!(signed.code, 0, "{}", signed.stderr);
    assert!(
        signed.stderr.contains("Enter PKCS#11 token PIN for ca"),
        "{}",
        signed.stderr
    );
    let v = sh(t
        .command("openssl")
        .args(["verify", "-CAfile", "ca.pem", "node.pem"]));
    assert!(v.contains("node.pem: OK"), "{v}");
    assert_eq!(
        ext(&t, "node.pem", "subjectAltName"),
        "DNS:node1.example.com"
    );

    std::fs::remove_file(t.path("node.pem")).unwrap();
    let wrong = run(
        t.command("setsid").args(["-w", "sh", "-c", &cmd]),
        Some(b"9999\n"),
    );
    assert_ne!(wrong.code, 0, "a wrong PIN must not sign");
    // OpenSSL may have opened its output before failing; nothing is in it.
    let left = std::fs::read_to_string(t.path("node.pem")).unwrap_or_default();
    assert!(!left.contains("CERTIFICATE"), "{left}");

    p11tool_signs_with_the_same_handle(&t);
}

/// GnuTLS's p11tool signs with the same handle (the PIN from its environment, not argv).
fn p11tool_signs_with_the_same_handle(t: &Token) {
    let handle = t.read("ca-key.uri");
    let p = run(
        t.command("p11tool")
            .env("GNUTLS_PIN", crate::util::PIN)
            .args([
                "--provider",
                t.module(),
                "--login",
                "--test-sign",
                handle.trim(),
            ]),
        None,
    );
    assert_eq!(p.code, 0, "{}{}", p.stdout, p.stderr);
    let p = format!("{}{}", p.stdout, p.stderr);
    assert!(
        p.contains("Verifying against public key in the token... ok"),
        "{p}"
    );
}
