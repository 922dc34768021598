//! The certificate store as cfssl's certdb (issue #13): `revoke` and `crl` from the store, the
//! CRL judged by OpenSSL, cfssl 1.2's own `revoke`/`ocsprefresh` on a p11ca store and p11ca on
//! a cfssl store, the migration of today's stores, CRL numbers across processes on one
//! PostgreSQL, and bad inputs that change nothing.
//!
//! Certificates are issued by p11ca (`gencert -ca` on a fresh SoftHSM2 token) and recorded
//! into the store through the library (`CertRecord::from_der` + `Store::insert`), as the
//! issuing paths do.

use base64::Engine;
use der::Decode;
use x509_cert::crl::CertificateList;

use p11ca::db::{CertRecord, DbConfig, ListFilter, Store};

use crate::crl::{only_revoked_is_refused, openssl, seed_with_two_nodes};
use crate::util::{Run, Token, require, run, sh};

/// The store file the tests use (not the default name, which issuing paths may write).
const DB: &str = "certs.db";

/// The record of the certificate file `file` in the work folder.
fn record_of(t: &Token, file: &str) -> CertRecord {
    let der =
        p11ca::x509::pem::read_der(t.read(file).as_bytes(), file, &["CERTIFICATE"], "c").unwrap();
    CertRecord::from_der(&der, "mosquitood-k8s", "test", "").unwrap()
}

/// Record `files` into certs.db and write db.json naming it (cfssl's db-config).
fn record(t: &Token, files: &[&str]) -> Vec<CertRecord> {
    let recs: Vec<CertRecord> = files.iter().map(|f| record_of(t, f)).collect();
    let mut s = Store::open(&DbConfig::Sqlite(t.path(DB))).unwrap();
    s.insert(&recs.iter().collect::<Vec<_>>()).unwrap();
    t.write(
        "db.json",
        &serde_json::json!({"driver": "sqlite3", "data_source": DB}).to_string(),
    );
    recs
}

/// Every row of every table, as text, to compare before and after a refused command.
fn dump(t: &Token) -> Vec<String> {
    let c = rusqlite::Connection::open(t.path(DB)).unwrap();
    let mut out = Vec::new();
    for table in [
        "certificates",
        "ocsp_responses",
        "p11ca_crl_numbers",
        "schema_migrations",
    ] {
        let mut st = c.prepare(&format!("SELECT * FROM {table}")).unwrap();
        let n = st.column_count();
        let rows = st
            .query_map([], |r| {
                (0..n)
                    .map(|i| {
                        r.get::<_, rusqlite::types::Value>(i)
                            .map(|v| format!("{v:?}"))
                    })
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .unwrap();
        for r in rows {
            out.push(format!("{table}: {}", r.unwrap().join("|")));
        }
    }
    out.sort();
    out
}

/// `crl` against db.json with the seed CA.
const CRL_ARGS: [&str; 7] = [
    "crl",
    "-db-config",
    "db.json",
    "-ca",
    "ca.pem",
    "-ca-key",
    "ca-key.uri",
];

/// [`CRL_ARGS`]; returns the DER CRL, also written to crl.der and crl.pem.
fn make_crl(t: &Token) -> Vec<u8> {
    let r = t.run(&CRL_ARGS);
    r.ok();
    let der = base64::engine::general_purpose::STANDARD
        .decode(r.stdout.trim())
        .expect("one line of base64, as cfssl prints it");
    std::fs::write(t.path("crl.der"), &der).unwrap();
    sh(t.command("openssl")
        .args(["crl", "-inform", "DER", "-in", "crl.der", "-out", "crl.pem"]));
    der
}

/// The cRLNumber of a DER CRL.
fn crl_number(der: &[u8]) -> u128 {
    let crl: CertificateList = CertificateList::from_der(der).unwrap();
    let ext = crl
        .tbs_cert_list
        .crl_extensions
        .unwrap()
        .into_iter()
        .find(|e| e.extn_id == const_oid::db::rfc5280::ID_CE_CRL_NUMBER)
        .expect("a cRLNumber");
    let n = der::asn1::UintRef::from_der(ext.extn_value.as_bytes()).unwrap();
    n.as_bytes()
        .iter()
        .fold(0u128, |a, b| a << 8 | u128::from(*b))
}

/// The serials (uppercase hex, as OpenSSL prints them) a CRL lists.
fn crl_serials(der: &[u8]) -> Vec<String> {
    let crl: CertificateList = CertificateList::from_der(der).unwrap();
    crl.tbs_cert_list
        .revoked_certificates
        .unwrap_or_default()
        .iter()
        .map(|r| p11ca::text::hex(r.serial_number.as_bytes()).to_uppercase())
        .collect()
}

fn revoke(t: &Token, rest: &[&str]) -> Run {
    let mut v = vec!["revoke", "-db-config", "db.json"];
    v.extend_from_slice(rest);
    t.run(&v)
}

#[test]
fn revoke_then_crl_revokes_only_that_certificate_for_openssl() {
    let t = seed_with_two_nodes("store-crl");
    let recs = record(&t, &["revoked.pem", "kept.pem"]);
    let (serial, aki) = (&recs[0].serial_number, &recs[0].authority_key_identifier);

    // cfssl's spelling: single-dash flags, a reason name in any case.
    let r = revoke(
        &t,
        &["-serial", serial, "-aki", aki, "-reason", "KEYCOMPROMISE"],
    );
    r.ok();
    assert!(r.stderr.contains("revoked 1 certificate"), "{}", r.stderr);
    // Again with the same reason: nothing changes, and it says so.
    let before = dump(&t);
    let again = revoke(&t, &["-serial", serial, "-aki", aki, "-reason", "1"]);
    assert!(
        again.ok().stderr.contains("1 already revoked"),
        "{}",
        again.stderr
    );
    assert_eq!(dump(&t), before);

    let listed = t.run(&[
        "certs",
        "list",
        "-db-config",
        "db.json",
        "--revoked",
        "--json",
    ]);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&listed.ok().stdout).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["serial_number"], serial.as_str());
    assert_eq!(listed[0]["status"], "revoked");
    assert_eq!(listed[0]["reason"], 1);
    let text = t.run(&["certs", "list", "-db-config", "db.json"]);
    assert!(
        text.ok().stdout.contains("\trevoked keycompromise 20"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("\tvalid, "), "{}", text.stdout);

    let first = make_crl(&t);
    let check = openssl(
        &t,
        &[
            "crl", "-inform", "DER", "-in", "crl.der", "-CAfile", "ca.pem",
        ],
    );
    assert!(
        check.stderr.contains("verify OK"),
        "{}{}",
        check.stdout,
        check.stderr
    );
    let text = sh(t
        .command("openssl")
        .args(["crl", "-in", "crl.pem", "-noout", "-text"]));
    assert!(text.contains("Key Compromise"), "{text}");
    assert_eq!(crl_serials(&first), vec![recs[0].serial_hex.to_uppercase()]);
    only_revoked_is_refused(&t);

    // The CRL number comes from the store and grows from run to run.
    let second = make_crl(&t);
    assert!(crl_number(&second) > crl_number(&first));

    // -out: PEM for .pem, DER otherwise.
    t.run(&[&CRL_ARGS[..], &["-out", "out.pem"]].concat()).ok();
    assert!(t.read("out.pem").starts_with("-----BEGIN X509 CRL-----"));
    t.run(&[&CRL_ARGS[..], &["-out", "out.crl"]].concat()).ok();
    let der = std::fs::read(t.path("out.crl")).unwrap();
    assert_eq!(crl_serials(&der), vec![recs[0].serial_hex.to_uppercase()]);
}

#[test]
fn revoke_by_certificate_file_and_by_list() {
    let t = seed_with_two_nodes("store-files");
    let recs = record(&t, &["revoked.pem", "kept.pem"]);
    revoke(&t, &["revoked.pem", "-reason", "superseded"]).ok();
    let l = t.run(&[
        "certs",
        "show",
        "-db-config",
        "db.json",
        &recs[0].serial_number,
    ]);
    assert!(
        l.ok().stdout.contains("state:          revoked superseded"),
        "{}",
        l.stdout
    );
    // A list: one transaction for the already revoked one (same reason) and the other.
    t.write(
        "list.txt",
        &format!(
            "# serial aki\n{} {}\n\n{} {}\n",
            recs[0].serial_number,
            recs[0].authority_key_identifier,
            recs[1].serial_number,
            recs[1].authority_key_identifier.to_uppercase()
        ),
    );
    let r = revoke(&t, &["--list", "list.txt", "-reason", "4"]);
    assert!(
        r.ok()
            .stderr
            .contains("revoked 1 certificate (superseded); 1 already"),
        "{}",
        r.stderr
    );
    let all = t.run(&[
        "certs",
        "list",
        "-db-config",
        "db.json",
        "--revoked",
        "--json",
    ]);
    let all: Vec<serde_json::Value> = serde_json::from_str(&all.ok().stdout).unwrap();
    assert_eq!(all.len(), 2);
}

/// A column of one row of certs.db, as text (whatever its storage class).
fn cell(t: &Token, sql: &str) -> String {
    let c = rusqlite::Connection::open(t.path(DB)).unwrap();
    c.query_row(sql, [], |r| {
        Ok(match r.get::<_, rusqlite::types::Value>(0)? {
            rusqlite::types::Value::Text(s) => s,
            rusqlite::types::Value::Blob(b) => String::from_utf8_lossy(&b).into_owned(),
            rusqlite::types::Value::Integer(n) => n.to_string(),
            v => format!("{v:?}"),
        })
    })
    .unwrap()
}

#[test]
fn cfssl_revoke_and_ocsprefresh_work_on_a_store_p11ca_wrote() {
    require("cfssl");
    let t = seed_with_two_nodes("store-cfssl");
    let recs = record(&t, &["revoked.pem", "kept.pem"]);
    let (serial, aki) = (&recs[0].serial_number, &recs[0].authority_key_identifier);
    // The encodings cfssl writes: decimal serial, lowercase hex AKI, text times, '' label.
    let row = |col: &str| {
        cell(
            &t,
            &format!("SELECT {col} FROM certificates WHERE serial_number = '{serial}'"),
        )
    };
    assert_eq!(row("authority_key_identifier"), *aki);
    assert_eq!(row("ca_label"), "");
    assert_eq!(row("revoked_at"), "0001-01-01 00:00:00+00:00");
    assert!(row("expiry").ends_with("+00:00"), "{}", row("expiry"));
    assert_eq!(row("typeof(metadata)"), "blob");
    assert_eq!(row("sans"), r#"["revoked.example"]"#);

    let r = crate::util::run(
        t.command("cfssl").args([
            "revoke",
            "-db-config",
            "db.json",
            "-serial",
            serial,
            "-aki",
            aki,
            "-reason",
            "superseded",
        ]),
        None,
    );
    assert_eq!(r.code, 0, "cfssl revoke: {}{}", r.stdout, r.stderr);
    assert_eq!(
        (row("status"), row("reason")),
        ("revoked".into(), "4".into())
    );
    // SQLite's CURRENT_TIMESTAMP: no zone, which p11ca reads as UTC.
    assert_eq!(row("length(revoked_at)"), "19");

    // p11ca reads what cfssl wrote: the state, and a CRL with cfssl's reason.
    let l = t.run(&["certs", "list", "-db-config", "db.json", "--revoked"]);
    assert!(
        l.ok().stdout.contains("revoked superseded 20"),
        "{}",
        l.stdout
    );
    make_crl(&t);
    let text = sh(t
        .command("openssl")
        .args(["crl", "-in", "crl.pem", "-noout", "-text"]));
    assert!(text.contains("Superseded"), "{text}");
    only_revoked_is_refused(&t);

    cfssl_ocsprefresh_signs_every_row(&t, serial, aki);
    p11ca_serves_what_cfssl_stored(
        &t,
        [
            ("revoked.pem", serial),
            ("kept.pem", &recs[1].serial_number),
        ],
    );
}

/// cfssl ocsprefresh signs a response for every unexpired row into ocsp_responses: the one
/// of `serial` (of CA `aki`) says revoked, the other good.
fn cfssl_ocsprefresh_signs_every_row(t: &Token, serial: &str, aki: &str) {
    let r = crate::util::run(
        t.command("cfssl").args([
            "ocsprefresh",
            "-db-config",
            "db.json",
            "-ca",
            "ca.pem",
            "-responder",
            "kept.pem",
            "-responder-key",
            "kept-key.pem",
        ]),
        None,
    );
    assert_eq!(r.code, 0, "cfssl ocsprefresh: {}{}", r.stdout, r.stderr);
    let c = rusqlite::Connection::open(t.path(DB)).unwrap();
    let mut st = c
        .prepare("SELECT serial_number, authority_key_identifier, CAST(body AS BLOB) FROM ocsp_responses")
        .unwrap();
    let rows: Vec<(String, String, Vec<u8>)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(rows.len(), 2);
    for (s, a, body) in rows {
        assert_eq!(a, aki);
        std::fs::write(t.path("resp.der"), body).unwrap();
        let text = sh(t.command("openssl").args([
            "ocsp",
            "-respin",
            "resp.der",
            "-resp_text",
            "-noverify",
        ]));
        let want = if s == serial {
            "Cert Status: revoked"
        } else {
            "Cert Status: good"
        };
        assert!(text.contains(want), "{s}: {text}");
    }
}

/// p11ca's responder serves exactly the bytes cfssl's ocsprefresh stored, for each
/// `(certificate file, serial)`.
fn p11ca_serves_what_cfssl_stored(t: &Token, certs: [(&str, &String); 2]) {
    let port = crate::util::free_port();
    let p = port.to_string();
    let _ocsp = crate::serve::start(
        t,
        "ocspserve",
        "p11ca",
        &["ocspserve", "-db-config", "db.json", "-port", &p],
        port,
        false,
    );
    let c = rusqlite::Connection::open(t.path(DB)).unwrap();
    for (cert, serial_of) in certs {
        let req = t.ocsp_request("ca.pem", cert, &[]);
        let mut http = format!(
            "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/ocsp-request\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            req.len()
        )
        .into_bytes();
        http.extend_from_slice(&req);
        let (status, body) = crate::ocsp::raw_http(port, &http);
        assert_eq!(status, 200, "{cert}");
        let stored: Vec<u8> = c
            .query_row(
                "SELECT CAST(body AS BLOB) FROM ocsp_responses WHERE serial_number = ?1",
                [serial_of],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            body, stored,
            "{cert}: p11ca served other bytes than cfssl stored"
        );
    }
}

/// cfssl's certdb schema for SQLite (certdb/sqlite/migrations 001 and 002): how a cfssl user
/// creates the store.
const CFSSL_SQLITE_SCHEMA: &str = "
CREATE TABLE certificates (
  serial_number            blob NOT NULL,
  authority_key_identifier blob NOT NULL,
  ca_label                 blob,
  status                   blob NOT NULL,
  reason                   int,
  expiry                   timestamp,
  revoked_at               timestamp,
  pem                      blob NOT NULL,
  PRIMARY KEY(serial_number, authority_key_identifier)
);
CREATE TABLE ocsp_responses (
  serial_number            blob NOT NULL,
  authority_key_identifier blob NOT NULL,
  body                     blob NOT NULL,
  expiry                   timestamp,
  PRIMARY KEY(serial_number, authority_key_identifier),
  FOREIGN KEY(serial_number, authority_key_identifier) REFERENCES certificates(serial_number, authority_key_identifier)
);
ALTER TABLE certificates ADD COLUMN issued_at timestamp;
ALTER TABLE certificates ADD COLUMN not_before timestamp;
ALTER TABLE certificates ADD COLUMN metadata text;
ALTER TABLE certificates ADD COLUMN sans text;
ALTER TABLE certificates ADD COLUMN common_name text;
";

/// `cfssl sign -db-config db.json` of a fresh CSR `name` with the cfssl CA.
fn cfssl_sign(t: &Token, name: &str) {
    t.write(
        &format!("{name}.json"),
        &format!(
            r#"{{"CN":"{name}","hosts":["{name}.example"],"key":{{"algo":"ecdsa","size":256}}}}"#
        ),
    );
    let k = crate::util::run(
        t.command("cfssl").args(["genkey", &format!("{name}.json")]),
        None,
    );
    assert_eq!(k.code, 0, "{}", k.stderr);
    t.run_in(&["json", "-bare", name], k.stdout.as_bytes()).ok();
    let s = crate::util::run(
        t.command("cfssl").args([
            "sign",
            "-db-config",
            "db.json",
            "-ca",
            "cfssl-ca.pem",
            "-ca-key",
            "cfssl-ca-key.pem",
            &format!("{name}.csr"),
        ]),
        None,
    );
    assert_eq!(s.code, 0, "cfssl sign: {}", s.stderr);
    t.run_in(&["json", "-bare", name], s.stdout.as_bytes()).ok();
}

#[test]
fn p11ca_revokes_and_makes_the_crl_of_a_store_cfssl_made() {
    require("cfssl");
    require("pkcs11-tool");
    let t = Token::new("store-cfssldb");
    // A cfssl CA (software) whose key is then moved into the token, and a store made with
    // cfssl's schema SQL that cfssl 1.2 signs into.
    t.write(
        "cfssl-ca.json",
        r#"{"CN":"cfssl CA","key":{"algo":"rsa","size":2048}}"#,
    );
    let ca = crate::util::run(
        t.command("cfssl")
            .args(["gencert", "-initca", "cfssl-ca.json"]),
        None,
    );
    assert_eq!(ca.code, 0, "{}", ca.stderr);
    t.run_in(&["json", "-bare", "cfssl-ca"], ca.stdout.as_bytes())
        .ok();
    rusqlite::Connection::open(t.path(DB))
        .unwrap()
        .execute_batch(CFSSL_SQLITE_SCHEMA)
        .unwrap();
    t.write(
        "db.json",
        &serde_json::json!({"driver": "sqlite3", "data_source": DB}).to_string(),
    );
    cfssl_sign(&t, "leaf1");
    cfssl_sign(&t, "leaf2");
    sh(t.command("pkcs11-tool").args([
        "--module",
        t.module(),
        "--token-label",
        &t.label,
        "--login",
        "--pin",
        crate::util::PIN,
        "--write-object",
        "cfssl-ca-key.pem",
        "--type",
        "privkey",
        "--id",
        "77",
        "--label",
        "cfssl-ca",
    ]));
    t.write(
        "cfssl-ca-key.uri",
        &format!("pkcs11:token={};object=cfssl-ca;type=private\n", t.label),
    );

    // certs list reads cfssl's rows (cfssl 1.2 leaves the AKI and migration 002's columns
    // empty: they come from the PEM).
    let l = t.run(&["certs", "list", "-db-config", "db.json", "--json"]);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&l.ok().stdout).unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        listed.iter().any(|c| c["subject"] == "CN=leaf1"),
        "{}",
        l.stdout
    );
    assert!(listed.iter().all(|c| c["status"] == "good"));

    crl_of_the_cfssl_ca_revokes_leaf1(&t);

    cfssl_still_signs_and_revokes(&t);
}

/// p11ca revokes leaf1 in cfssl's store and makes the CFSSL CA's CRL with its key (now in the
/// token): OpenSSL verifies it, and refuses leaf1 and accepts leaf2 under it.
fn crl_of_the_cfssl_ca_revokes_leaf1(t: &Token) {
    revoke(t, &["leaf1.pem", "-reason", "cessationOfOperation"]).ok();
    let r = t.run(&[
        "crl",
        "-db-config",
        "db.json",
        "-ca",
        "cfssl-ca.pem",
        "-ca-key",
        "cfssl-ca-key.uri",
        "-out",
        "crl.pem",
    ]);
    r.ok();
    let check = openssl(
        t,
        &[
            "crl",
            "-in",
            "crl.pem",
            "-CAfile",
            "cfssl-ca.pem",
            "-noout",
            "-text",
        ],
    );
    assert!(
        check.stderr.contains("verify OK"),
        "{}{}",
        check.stdout,
        check.stderr
    );
    assert!(
        check.stdout.contains("Cessation Of Operation"),
        "{}",
        check.stdout
    );
    for (cert, ok) in [("leaf1.pem", false), ("leaf2.pem", true)] {
        let v = openssl(
            t,
            &[
                "verify",
                "-crl_check",
                "-CRLfile",
                "crl.pem",
                "-CAfile",
                "cfssl-ca.pem",
                cert,
            ],
        );
        let out = format!("{}{}", v.stdout, v.stderr);
        assert_eq!(v.code == 0, ok, "{cert}: {out}");
        assert!(ok || out.contains("error 23"), "{out}");
    }
}

/// cfssl still signs into, and revokes in, the store p11ca has opened.
fn cfssl_still_signs_and_revokes(t: &Token) {
    // cfssl 1.2 records an empty AKI (so its own revoke, which needs one, cannot find the
    // row); p11ca's next revoke or crl files the row under the AKI its PEM carries, and then
    // cfssl finds it.
    cfssl_sign(t, "leaf3");
    let leaf3 = record_of(t, "leaf3.pem");
    assert_eq!(
        cell(
            t,
            &format!(
                "SELECT authority_key_identifier FROM certificates WHERE serial_number = '{}'",
                leaf3.serial_number
            )
        ),
        ""
    );
    t.run(&[
        "crl",
        "-db-config",
        "db.json",
        "-ca",
        "cfssl-ca.pem",
        "-ca-key",
        "cfssl-ca-key.uri",
    ])
    .ok();
    let r = crate::util::run(
        t.command("cfssl").args([
            "revoke",
            "-db-config",
            "db.json",
            "-serial",
            &leaf3.serial_number,
            "-aki",
            &leaf3.authority_key_identifier,
            "-reason",
            "keycompromise",
        ]),
        None,
    );
    assert_eq!(
        r.code, 0,
        "cfssl revoke after p11ca: {}{}",
        r.stdout, r.stderr
    );
    let l = t.run(&[
        "certs",
        "list",
        "-db-config",
        "db.json",
        "--revoked",
        "--json",
    ]);
    let revoked: Vec<serde_json::Value> = serde_json::from_str(&l.ok().stdout).unwrap();
    assert_eq!(revoked.len(), 2, "{}", l.stdout);
}

#[test]
fn bad_inputs_are_one_clear_line_and_change_nothing() {
    let t = seed_with_two_nodes("store-bad");
    let recs = record(&t, &["revoked.pem", "kept.pem"]);
    let (serial, aki) = (
        recs[0].serial_number.as_str(),
        recs[0].authority_key_identifier.as_str(),
    );
    revoke(&t, &["revoked.pem", "-reason", "keyCompromise"]).ok();
    // Another CA in the same token: its certificate does not belong to ca-key.uri.
    t.write(
        "other-csr.json",
        r#"{"CN":"other CA","key":{"algo":"ecdsa","size":256}}"#,
    );
    t.initca("other-csr.json", "other");
    t.write(
        "ro.json",
        &serde_json::json!({"driver": "sqlite3", "data_source": format!("file:{}?mode=ro", t.path(DB).display())})
            .to_string(),
    );
    let before = dump(&t);
    let files = t.files();
    let mut cases = refused_revocations(&t, serial, aki);
    cases.extend(refused_crls(&t));
    for (name, r, code, needle) in cases {
        assert_eq!(r.code, code, "{name}: {}", r.stderr);
        r.fails(code, needle);
    }
    assert_eq!(dump(&t), before, "a refused command changed the store");
    let mut now = t.files();
    now.retain(|f| f != "l.txt");
    assert_eq!(now, files, "a refused command left a file");
}

/// A refused command: its name, its run, the exit code and a part of the error it must give.
type Refusal = (&'static str, Run, i32, &'static str);

/// `revoke` runs that must be refused, against the seed's store with `serial` (of CA `aki`)
/// revoked for keyCompromise.
fn refused_revocations(t: &Token, serial: &str, aki: &str) -> Vec<Refusal> {
    vec![
        (
            "malformed serial",
            revoke(t, &["-serial", "12ab", "-aki", aki]),
            1,
            "-serial: serial \"12ab\" is not a serial number",
        ),
        (
            "malformed AKI",
            revoke(t, &["-serial", serial, "-aki", "xyz"]),
            1,
            "-aki: AKI \"xyz\" is not a key identifier",
        ),
        (
            "unknown reason",
            revoke(
                t,
                &["-serial", serial, "-aki", aki, "-reason", "key_compromise"],
            ),
            1,
            "unknown revocation reason \"key_compromise\"",
        ),
        (
            "reason 7",
            revoke(t, &["-serial", serial, "-aki", aki, "-reason", "7"]),
            1,
            "unknown revocation reason \"7\"",
        ),
        (
            "unknown serial",
            revoke(t, &["-serial", "12345", "-aki", aki]),
            1,
            "serial 12345 of the CA with key identifier",
        ),
        (
            "another reason",
            revoke(t, &["revoked.pem", "kept.pem", "-reason", "superseded"]),
            3,
            "already revoked with reason keycompromise",
        ),
        (
            "serial without AKI",
            revoke(t, &["-serial", serial]),
            1,
            "--aki",
        ),
        ("nothing named", revoke(t, &[]), 1, "nothing to revoke"),
        (
            "a bad list line",
            {
                t.write("l.txt", &format!("{serial}\n"));
                revoke(t, &["--list", "l.txt"])
            },
            1,
            "l.txt: line 1",
        ),
        (
            "read-only store: revoke",
            t.run(&["revoke", "-db-config", "ro.json", "kept.pem"]),
            4,
            "the store is read-only: cannot revoke; nothing was changed",
        ),
    ]
}

/// `crl` runs that must be refused: a read-only store, a `-ca` that is not the key's, a bad
/// `-expiry`, a missing store.
fn refused_crls(t: &Token) -> Vec<Refusal> {
    let crl = |db: [&str; 2], ca: &str, rest: &[&str]| {
        let args = ["crl", db[0], db[1], "-ca", ca, "-ca-key", "ca-key.uri"];
        t.run(&[&args[..], rest].concat())
    };
    let store = ["-db-config", "db.json"];
    vec![
        (
            "read-only store: crl",
            crl(["-db-config", "ro.json"], "ca.pem", &[]),
            4,
            "the store is read-only: cannot take a CRL number",
        ),
        (
            "-ca of another key",
            crl(store, "other.pem", &[]),
            3,
            "other.pem",
        ),
        ("a leaf as -ca", crl(store, "kept.pem", &[]), 3, "kept.pem"),
        (
            "bad -expiry",
            crl(store, "ca.pem", &["-expiry", "7d"]),
            1,
            "-expiry \"7d\"",
        ),
        (
            "missing store",
            crl(["--db", "none.db"], "ca.pem", &[]),
            1,
            "does not exist",
        ),
    ]
}

#[test]
fn a_store_of_a_newer_schema_is_refused_untouched() {
    let t = seed_with_two_nodes("store-newer");
    record(&t, &["revoked.pem"]);
    rusqlite::Connection::open(t.path(DB))
        .unwrap()
        .execute("INSERT INTO schema_migrations (version, description, applied_at) VALUES (5, 'future', 0)", [])
        .unwrap();
    let before = dump(&t);
    t.run(&["certs", "list", "-db-config", "db.json"]).fails(
        4,
        "the schema is at version 5, newer than this p11ca knows (4); upgrade p11ca",
    );
    t.run(&["revoke", "-db-config", "db.json", "revoked.pem"])
        .fails(4, "newer than this p11ca knows");
    assert_eq!(dump(&t), before);
}

#[test]
fn ten_thousand_serials_are_revoked_in_one_transaction() {
    let t = seed_with_two_nodes("store-10k");
    let real = record(&t, &["kept.pem"]).remove(0);
    let aki = real.authority_key_identifier.clone();
    let recs: Vec<CertRecord> = (1..=10_000u32)
        .map(|i| {
            let serial = 1_000_000 + i;
            CertRecord {
                serial_number: serial.to_string(),
                serial_hex: format!("{serial:x}"),
                ..real.clone()
            }
        })
        .collect();
    let mut s = Store::open(&DbConfig::Sqlite(t.path(DB))).unwrap();
    s.insert(&recs.iter().collect::<Vec<_>>()).unwrap();
    drop(s);
    let line = |r: &CertRecord| format!("{} {aki}\n", r.serial_number);
    let all: String = recs.iter().map(line).collect();
    let revoked_count = || {
        cell(
            &t,
            "SELECT count(*) FROM certificates WHERE status = 'revoked'",
        )
    };

    // An unknown serial in the middle: an error, and none of the 5,000 before it is revoked.
    let mut broken: Vec<String> = recs.iter().map(line).collect();
    broken[5_000] = format!("99 {aki}\n");
    t.write("broken.txt", &broken.concat());
    revoke(&t, &["--list", "broken.txt"]).fails(1, "serial 99 of the CA");
    assert_eq!(revoked_count(), "0");

    // Killed half-way through (SIGABRT after 5,000 updates): none revoked either.
    t.write("all.txt", &all);
    let mut killed = t.p11ca();
    killed.env("P11CA_FAULT", "revoke-midway").args([
        "revoke",
        "-db-config",
        "db.json",
        "--list",
        "all.txt",
    ]);
    let k = crate::util::run(&mut killed, None);
    assert_ne!(k.code, 0, "the fault point was not reached: {}", k.stderr);
    assert_eq!(revoked_count(), "0");

    // The whole list in one call.
    let r = revoke(
        &t,
        &["--list", "all.txt", "-reason", "cessationofoperation"],
    );
    assert!(
        r.ok().stderr.contains("revoked 10000 certificates"),
        "{}",
        r.stderr
    );
    assert_eq!(revoked_count(), "10000");
    let der = make_crl(&t);
    assert_eq!(crl_serials(&der).len(), 10_000);
}

#[test]
fn a_store_written_by_the_previous_release_migrates_losing_nothing() {
    let t = seed_with_two_nodes("store-v1");
    t.write(
        "multi.json",
        r#"{"CN":"multi","hosts":["multi.example","10.0.0.1","ops@example.com"],"key":{"algo":"ecdsa","size":256}}"#,
    );
    let g = t.run(&crate::util::ca_args("gencert", &["multi.json"]));
    t.run_in(&["json", "-bare", "multi"], g.ok().stdout.as_bytes())
        .ok();
    let recs: Vec<CertRecord> = ["revoked.pem", "kept.pem", "multi.pem"]
        .iter()
        .enumerate()
        .map(|(i, f)| CertRecord {
            requester: format!("127.0.0.1:{}", 40_000 + i),
            auth_key: if i == 1 { "ops".into() } else { String::new() },
            issued_at: 1_790_000_000 + i as i64,
            ..record_of(&t, f)
        })
        .collect();
    // The store as the previous release (schema version 1) wrote it.
    {
        let c = rusqlite::Connection::open(t.path(DB)).unwrap();
        c.execute_batch(
            "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL, applied_at BIGINT NOT NULL);
             INSERT INTO schema_migrations VALUES (1, 'certificates table', 1790000000);",
        )
        .unwrap();
        c.execute_batch(p11ca::db::schema::V1_SQL).unwrap();
        for r in &recs {
            c.execute(
                "INSERT INTO certificates (serial_number, authority_key_identifier, serial_hex, subject, common_name, sans, profile, not_before, not_after, pem, requester, auth_key, issued_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                rusqlite::params![
                    r.serial_number, r.authority_key_identifier, r.serial_hex, r.subject, r.common_name,
                    serde_json::to_string(&r.sans).unwrap(), r.profile, r.not_before, r.not_after, r.pem,
                    r.requester, r.auth_key, r.issued_at
                ],
            )
            .unwrap();
        }
    }
    let mut s = Store::open_existing(&DbConfig::Sqlite(t.path(DB))).unwrap();
    let mut got = s.list_status(ListFilter::default()).unwrap();
    got.sort_by_key(|l| l.record.issued_at);
    assert_eq!(got.len(), 3);
    for (g, want) in got.iter().zip(&recs) {
        assert_eq!(g.record, *want, "a field did not survive the migration");
        assert_eq!(
            (g.status.as_str(), g.reason, g.revoked_at),
            ("good", 0, None)
        );
    }
    drop(s);
    assert_eq!(recs[2].sans.len(), 3, "{:?}", recs[2].sans);
    let multi = &recs[2].serial_number;
    // cfssl's columns hold cfssl's encodings: sans only the DNS names.
    assert_eq!(
        cell(
            &t,
            &format!("SELECT sans FROM certificates WHERE serial_number = '{multi}'")
        ),
        r#"["multi.example"]"#
    );
    // v2 is cfssl's certdb, v3 the audit log, v4 drops the serial_hex index.
    assert_eq!(cell(&t, "SELECT max(version) FROM schema_migrations"), "4");
    // And it is a working store: revoke, CRL.
    t.write(
        "db.json",
        &serde_json::json!({"driver": "sqlite3", "data_source": DB}).to_string(),
    );
    revoke(&t, &["multi.pem", "-reason", "affiliationChanged"]).ok();
    let der = make_crl(&t);
    assert_eq!(crl_serials(&der), vec![recs[2].serial_hex.to_uppercase()]);
}

/// A throwaway PostgreSQL cluster (ci/pg-start), stopped on drop.
pub(crate) struct Postgres {
    dir: tempfile::TempDir,
    pub(crate) dsn: String,
}

impl Postgres {
    pub(crate) fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = crate::util::free_port().to_string();
        let out = std::process::Command::new(crate::util::repo("ci/pg-start"))
            .arg(dir.path().join("pg"))
            .arg(&port)
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
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = std::process::Command::new(crate::util::repo("ci/pg-stop"))
            .arg(self.dir.path().join("pg"))
            .status();
    }
}

#[test]
fn postgres_store_migrates_and_crl_numbers_grow_across_processes() {
    let pg = Postgres::start();
    let t = seed_with_two_nodes("store-pg");
    let recs: Vec<CertRecord> = ["revoked.pem", "kept.pem"]
        .iter()
        .map(|f| record_of(&t, f))
        .collect();
    // A v1 store, as the previous release wrote it to PostgreSQL.
    {
        let mut c = postgres::Client::connect(&pg.dsn, postgres::NoTls).unwrap();
        c.batch_execute(
            "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL, applied_at BIGINT NOT NULL);
             INSERT INTO schema_migrations VALUES (1, 'certificates table', 1790000000);",
        )
        .unwrap();
        c.batch_execute(p11ca::db::schema::V1_SQL).unwrap();
        for r in &recs {
            c.execute(
                "INSERT INTO certificates (serial_number, authority_key_identifier, serial_hex, subject, common_name, sans, profile, not_before, not_after, pem, requester, auth_key, issued_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                &[
                    &r.serial_number, &r.authority_key_identifier, &r.serial_hex, &r.subject, &r.common_name,
                    &serde_json::to_string(&r.sans).unwrap(), &r.profile, &r.not_before, &r.not_after, &r.pem,
                    &r.requester, &r.auth_key, &r.issued_at,
                ],
            )
            .unwrap();
        }
    }
    let cfg = DbConfig::Postgres(pg.dsn.clone());
    let mut got = Store::open(&cfg)
        .unwrap()
        .list(ListFilter::default())
        .unwrap();
    got.sort_by(|a, b| a.serial_number.cmp(&b.serial_number));
    let mut want = recs.clone();
    want.sort_by(|a, b| a.serial_number.cmp(&b.serial_number));
    assert_eq!(
        got, want,
        "a field did not survive the migration on PostgreSQL"
    );

    t.write(
        "db.json",
        &serde_json::json!({"driver": "postgres", "data_source": pg.dsn}).to_string(),
    );
    revoke(&t, &["revoked.pem", "-reason", "keycompromise"]).ok();
    revoke(&t, &["revoked.pem", "-reason", "superseded"])
        .fails(3, "already revoked with reason keycompromise");
    // A hex serial is found through the primary key, and the expiry check streams the store,
    // on PostgreSQL too; the revoked certificate is not due.
    let shown = t.run(&[
        "certs",
        "show",
        "-db-config",
        "db.json",
        &recs[1].serial_hex,
    ]);
    assert!(
        shown.ok().stdout.contains(&recs[1].serial_number),
        "{}",
        shown.stdout
    );
    t.run(&[
        "certs",
        "list",
        "-db-config",
        "db.json",
        "--expiring",
        "1000000h",
        "--check",
    ])
    .fails(6, "1 certificate expires within 1000000h");

    crl_numbers_grow_across_two_processes(&t, &recs[0].serial_hex);
    only_revoked_is_refused(&t);
}

/// Two processes taking CRL numbers from the one store at the same time: each one's numbers
/// increase, none is handed out twice, and the next CRL's is higher still. Every CRL lists
/// only the certificate with serial `revoked_hex`.
fn crl_numbers_grow_across_two_processes(t: &Token, revoked_hex: &str) {
    // The store is what is tested: each process signs with its own copy of the token, since
    // SoftHSM2 is not safe for two processes logging in to one token (`Token::softhsm_copy`).
    let want_serial = vec![revoked_hex.to_uppercase()];
    let confs = [t.softhsm_copy("hsm-a"), t.softhsm_copy("hsm-b")];
    let numbers = |i: usize| {
        let (want_serial, conf) = (&want_serial, &confs[i]);
        move || {
            (0..4)
                .map(|_| {
                    let r = run(t.p11ca().env("SOFTHSM2_CONF", conf).args(CRL_ARGS), None);
                    let der = base64::engine::general_purpose::STANDARD
                        .decode(r.ok().stdout.trim())
                        .unwrap();
                    assert_eq!(crl_serials(&der), *want_serial);
                    crl_number(&der)
                })
                .collect::<Vec<_>>()
        }
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(numbers(0));
        let b = s.spawn(numbers(1));
        (a.join().unwrap(), b.join().unwrap())
    });
    for run in [&a, &b] {
        assert!(
            run.windows(2).all(|w| w[0] < w[1]),
            "not increasing: {run:?}"
        );
    }
    let mut all: Vec<u128> = a.iter().chain(&b).copied().collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(
        all.len(),
        8,
        "a CRL number was handed out twice: {a:?} {b:?}"
    );
    let last = make_crl(t);
    assert!(crl_number(&last) > *all.last().unwrap());
    let check = openssl(
        t,
        &[
            "crl", "-inform", "DER", "-in", "crl.der", "-CAfile", "ca.pem",
        ],
    );
    assert!(check.stderr.contains("verify OK"), "{}", check.stderr);
}
