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
use crate::util::{Run, Token, require, sh};

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

/// `crl` against db.json with the seed CA; returns the DER CRL, also written to crl.der and
/// crl.pem.
fn make_crl(t: &Token) -> Vec<u8> {
    let r = t.run(&[
        "crl",
        "-db-config",
        "db.json",
        "-ca",
        "ca.pem",
        "-ca-key",
        "ca-key.uri",
    ]);
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
    assert!(text.stdout.contains("\tvalid\t"), "{}", text.stdout);

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
    t.run(&[
        "crl",
        "-db-config",
        "db.json",
        "-ca",
        "ca.pem",
        "-ca-key",
        "ca-key.uri",
        "-out",
        "out.pem",
    ])
    .ok();
    assert!(t.read("out.pem").starts_with("-----BEGIN X509 CRL-----"));
    t.run(&[
        "crl",
        "-db-config",
        "db.json",
        "-ca",
        "ca.pem",
        "-ca-key",
        "ca-key.uri",
        "-out",
        "out.crl",
    ])
    .ok();
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
