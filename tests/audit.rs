//! The audit log as the attack it prevents: someone with write access to the store edits,
//! removes or reorders what the CA did, and `p11ca audit verify` names the record.

use std::time::Duration;

use rusqlite::Connection;

use crate::serve::{http, p11ca_serve, setup};
use crate::util::{Run, Token};

const SIGN: &str = "/api/v1/cfssl/sign";

fn sign_body(csr: &str, profile: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"certificate_request": csr, "profile": profile}))
        .unwrap()
}

/// A CA (made by `gencert -initca`, which records it in the same store) whose `serve`
/// published its CRL, issued two certificates and refused one request, then stopped.
fn served(t: &Token) {
    setup(t);
    let csr = t.ec_csr("node", "node");
    let mut server = p11ca_serve(t, "serve", &[]);
    for _ in 0..2 {
        let (status, body) =
            http(server.port, "POST", SIGN, &sign_body(&csr, "kubernetes")).unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let (status, _) = http(server.port, "POST", SIGN, &sign_body(&csr, "nope")).unwrap();
    assert_eq!(status, 400);
    server.signal("TERM");
    assert_eq!(server.wait(Duration::from_secs(30)), 0);
}

pub(crate) fn verify_args() -> [&'static str; 6] {
    [
        "audit",
        "verify",
        "--db",
        "p11ca-certs.db",
        "--ca",
        "ca.pem",
    ]
}

fn db(t: &Token) -> Connection {
    Connection::open(t.path("p11ca-certs.db")).unwrap()
}

#[test]
fn serve_appends_issues_refusals_and_a_signed_checkpoint() {
    let t = Token::new("audit");
    served(&t);
    let out = t.run(&verify_args());
    out.ok();
    assert!(
        out.stdout
            .contains("6 records, 1 signed checkpoints, records 1..5 covered"),
        "{}",
        out.stdout
    );
    let list = t.run(&["audit", "list", "--db", "p11ca-certs.db"]);
    list.ok();
    let kinds: Vec<&str> = list
        .stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split('\t').nth(2))
        .collect();
    assert_eq!(
        kinds,
        ["issue", "crl", "issue", "issue", "refuse", "checkpoint"],
        "{}",
        list.stdout
    );
    assert!(list.stdout.contains("127.0.0.1"), "{}", list.stdout);
    assert!(
        list.stdout.contains("\"profile\":\"kubernetes\""),
        "{}",
        list.stdout
    );
    // The store's certificates are the ones the log names.
    let serials = crate::serve::records(&t)
        .into_iter()
        .map(|r| r.serial_number)
        .collect::<Vec<_>>();
    for s in serials {
        assert!(list.stdout.contains(&format!("\"serial\":\"{s}\"")), "{s}");
    }
}

#[test]
fn audit_verify_names_the_record_that_was_edited_removed_or_swapped() {
    let t = Token::new("audit-tamper");
    served(&t);
    // Checkpoint the WAL into the file so that a copy of the file is the whole store.
    db(&t)
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    let backup = std::fs::read(t.path("p11ca-certs.db")).unwrap();
    let restore_to = |b: &[u8]| {
        let _ = std::fs::remove_file(t.path("p11ca-certs.db-wal"));
        let _ = std::fs::remove_file(t.path("p11ca-certs.db-shm"));
        std::fs::write(t.path("p11ca-certs.db"), b).unwrap();
    };

    // Edited: the refusal (after the CA's own issuance, the CRL and two certificates) is
    // turned into something else.
    db(&t)
        .execute("UPDATE audit SET detail = '{}' WHERE seq = 5", [])
        .unwrap();
    t.run(&verify_args())
        .fails(5, "audit record 5: its contents do not match its hash");
    restore_to(&backup);

    // Removed: the second issuance disappears.
    db(&t)
        .execute("DELETE FROM audit WHERE seq = 4", [])
        .unwrap();
    t.run(&verify_args()).fails(5, "audit record 4: missing");
    restore_to(&backup);

    // Reordered: the first two records' contents exchanged.
    let c = db(&t);
    c.execute_batch(
        "UPDATE audit SET seq = -1 WHERE seq = 1;
         UPDATE audit SET seq = 1 WHERE seq = 2;
         UPDATE audit SET seq = 2 WHERE seq = -1;",
    )
    .unwrap();
    drop(c);
    t.run(&verify_args()).fails(5, "audit record 1:");
    restore_to(&backup);

    // Restored, it verifies again; checked against another CA, the checkpoint is refused.
    t.run(&verify_args()).ok();
    t.other_ca();
    t.run(&[
        "audit",
        "verify",
        "--db",
        "p11ca-certs.db",
        "--ca",
        "other.pem",
    ])
    .fails(5, "none of the given CA certificates");
}

/// The command line's own work: the CA made by `gencert -initca`, a leaf from `gencert -ca`
/// and one from `sign`, a revocation, and a CRL whose key also signs a checkpoint sealing the
/// log; `audit checkpoint` after more issuance seals the rest. Each is a record an attacker
/// with write access to the store cannot take back unseen.
#[test]
fn command_line_issuance_revocation_and_crl_are_logged_and_sealed() {
    let t = Token::new("audit-cli");
    setup(&t);
    let with_ca = |cmd: &str, input: &str| {
        let g = t.run(&[
            cmd,
            "-ca",
            "ca.pem",
            "-ca-key",
            "ca-key.uri",
            "-config",
            "server-config.json",
            "-profile",
            "kubernetes",
            "--db",
            "p11ca-certs.db",
            input,
        ]);
        g.ok();
        g
    };
    let g = with_ca("gencert", "node-csr.json");
    t.run_in(&["json", "-bare", "node"], g.stdout.as_bytes())
        .ok();
    t.ec_csr("other", "other");
    with_ca("sign", "other.csr");
    t.run(&[
        "revoke",
        "--db",
        "p11ca-certs.db",
        "node.pem",
        "-reason",
        "keyCompromise",
    ])
    .ok();
    let crl = [
        "crl",
        "--db",
        "p11ca-certs.db",
        "-ca",
        "ca.pem",
        "-ca-key",
        "ca-key.uri",
    ];
    t.run(&crl).ok();
    assert_eq!(
        kinds(&t),
        ["issue", "issue", "issue", "revoke", "crl", "checkpoint"]
    );
    let v = t.run(&verify_args());
    v.ok();
    assert!(
        v.stdout
            .contains("6 records, 1 signed checkpoints, records 1..5 covered"),
        "{}",
        v.stdout
    );
    let list = t.run(&["audit", "list", "--db", "p11ca-certs.db"]);
    assert!(list.stdout.contains("\tcli:"), "{}", list.stdout);
    assert!(list.stdout.contains("keycompromise"), "{}", list.stdout);

    audit_checkpoint_seals_more_issuance(&t, &with_ca);

    // Rewriting who was issued what (the unsealed tail is gone now) is named.
    db(&t)
        .execute(
            "UPDATE audit SET detail = replace(detail, 'other', 'forged') WHERE seq = 7",
            [],
        )
        .unwrap();
    t.run(&verify_args())
        .fails(5, "audit record 7: its contents do not match its hash");
}

/// The kinds of the records in the store's audit log, in order.
fn kinds(t: &Token) -> Vec<String> {
    let list = t.run(&["audit", "list", "--db", "p11ca-certs.db", "--json"]);
    list.ok();
    list.stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"].to_string())
        .map(|k| k.trim_matches('"').to_string())
        .collect()
}

/// More issuance (`with_ca("sign", "other.csr")`), then `audit checkpoint` seals it; a second
/// one has nothing to seal.
fn audit_checkpoint_seals_more_issuance(t: &Token, with_ca: &dyn Fn(&str, &str) -> Run) {
    with_ca("sign", "other.csr");
    let checkpoint = [
        "audit",
        "checkpoint",
        "--db",
        "p11ca-certs.db",
        "--ca",
        "ca.pem",
        "--ca-key",
        "ca-key.uri",
    ];
    let c = t.run(&checkpoint);
    c.ok();
    assert!(
        c.stdout.contains("checkpoint signed at record 8"),
        "{}",
        c.stdout
    );
    let again = t.run(&checkpoint);
    again.ok();
    assert!(
        again.stdout.contains("no records since"),
        "{}",
        again.stdout
    );
    t.run(&verify_args()).ok();
}

/// `audit checkpoint` with a key that is not the CA's appends nothing: a checkpoint cannot be
/// signed by whatever key happens to be in the token.
#[test]
fn audit_checkpoint_with_another_ca_key_changes_nothing() {
    let t = Token::new("audit-wrongkey");
    setup(&t);
    t.write(
        "other-csr.json",
        r#"{"CN":"other CA","key":{"algo":"ecdsa","size":256}}"#,
    );
    t.initca("other-csr.json", "other");
    let before = t.run(&["audit", "list", "--db", "p11ca-certs.db", "--json"]);
    before.ok();
    t.run(&[
        "audit",
        "checkpoint",
        "--db",
        "p11ca-certs.db",
        "--ca",
        "ca.pem",
        "--ca-key",
        "other-key.uri",
    ])
    .fails(3, "does not belong to the key");
    let after = t.run(&["audit", "list", "--db", "p11ca-certs.db", "--json"]);
    assert_eq!(before.stdout, after.stdout);
}
