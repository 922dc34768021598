//! `p11ca audit verify` and `p11ca audit list`: the store's audit chain, checked against the
//! CA certificates whose keys sign its checkpoints.

use std::fmt::Write as _;

use p11ca::Result;
use p11ca::ca::issue::parse_ca_cert;
use p11ca::db::audit::{self, AuditRecord};
use p11ca::db::{DbConfig, Store};
use p11ca::text::escape_for_log;

use super::args::{AuditCommand, DbArgs, TokenArgs};
use super::casigner::with_ca_signer;
use super::sign::ca_key_uri;
use super::{read_input, write_stdout};

fn open(a: &DbArgs) -> Result<Store> {
    let cfg = DbConfig::resolve(a.db_config.as_deref(), a.db.as_deref(), a.config.as_deref())?;
    Store::open_existing(&cfg)
}

pub(super) fn run(c: &AuditCommand, before: &TokenArgs) -> Result<()> {
    match c {
        AuditCommand::Verify { db, ca } => {
            let mut anchors = Vec::new();
            for f in ca {
                let (bytes, source) = read_input(f)?;
                let cert = parse_ca_cert(&bytes, &source)?;
                anchors.push(cert.tbs_certificate().subject_public_key_info().clone());
            }
            let records = open(db)?.audit_records()?;
            let report = audit::verify_chain(&records, &anchors)?;
            write_stdout(&format!("{}\n", audit::describe(&report)))
        }
        AuditCommand::List { db, last, json } => {
            let records = open(db)?.audit_records()?;
            let skip = last.map_or(0, |n| records.len().saturating_sub(n));
            write_stdout(&listing(&records[skip..], *json))
        }
        AuditCommand::Checkpoint {
            db,
            ca,
            ca_key,
            token,
        } => checkpoint(&token.over(before)?, db, ca, ca_key),
    }
}

/// `audit checkpoint`: the chain's head signed by the CA key, after the key is shown to pair
/// with `ca` (nothing is appended otherwise).
fn checkpoint(targs: &TokenArgs, db: &DbArgs, ca: &str, ca_key: &str) -> Result<()> {
    let (bytes, source) = read_input(ca)?;
    let cert = parse_ca_cert(&bytes, &source)?;
    let key_uri = ca_key_uri(ca_key)?;
    let mut store = open(db)?;
    if !store.audit_needs_checkpoint()? {
        return write_stdout("the audit log has no records since its last checkpoint\n");
    }
    with_ca_signer(targs, &cert, &source, &key_uri, |signer| {
        store.audit_checkpoint(signer, &audit::cli_actor())
    })?;
    let n = store.audit_records()?.last().map_or(0, |r| r.seq);
    write_stdout(&format!("checkpoint signed at record {n}\n"))
}

/// Text (tab-separated, everything escaped) or JSON lines.
fn listing(records: &[AuditRecord], json: bool) -> String {
    let mut out = String::new();
    if !json {
        out.push_str("SEQ\tTIME\tKIND\tACTOR\tDETAIL\n");
    }
    for r in records {
        if json {
            let _ = writeln!(out, "{}", serde_json::to_string(r).unwrap_or_default());
        } else {
            let _ = writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}",
                r.seq,
                super::certs::time(r.at),
                r.kind,
                escape_for_log(&r.actor),
                escape_for_log(&r.detail)
            );
        }
    }
    out
}
