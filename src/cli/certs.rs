//! `p11ca certs list [--expiring 720h] [--revoked]` and `p11ca certs show SERIAL`: read the
//! store (the same `--db` / `-db-config` / `-config` choice as `serve`), with each
//! certificate's revocation state.

use std::collections::HashSet;

use p11ca::cfssl::duration::GoDuration;
use p11ca::db::{self, DbConfig, ListFilter, Listed, Store};
use p11ca::text::escape_for_log;
use p11ca::x509::crl::Reason;
use p11ca::{Error, Result};

use super::args::{CertsCommand, DbArgs};
use super::write_stdout;

fn open(a: &DbArgs) -> Result<Store> {
    let cfg = DbConfig::resolve(a.db_config.as_deref(), a.db.as_deref(), a.config.as_deref())?;
    Store::open_existing(&cfg)
}

/// Unix seconds as RFC 3339 UTC.
pub(super) fn time(t: i64) -> String {
    u64::try_from(t)
        .ok()
        .and_then(|s| der::DateTime::from_unix_duration(std::time::Duration::from_secs(s)).ok())
        .map_or_else(|| t.to_string(), |d| d.to_string())
}

pub(super) fn run(c: &CertsCommand) -> Result<()> {
    match c {
        CertsCommand::List {
            db,
            expiring,
            revoked,
            check,
            json,
        } => list(db, expiring.as_deref(), *revoked, *check, *json),
        CertsCommand::Show { db, serial, json } => show(db, serial, *json),
    }
}

/// `certs list`: the table or JSON; with `--expiring --check`, exit 6 when one is due.
fn list(db: &DbArgs, expiring: Option<&str>, revoked: bool, check: bool, json: bool) -> Result<()> {
    let not_after_by = match expiring {
        None => None,
        Some(s) => {
            let d = GoDuration::parse(s).map_err(|m| {
                Error::input(format!(
                    "--expiring \"{s}\": {m}; give a Go duration such as 720h"
                ))
            })?;
            if d.is_negative() {
                return Err(Error::input(format!("--expiring \"{s}\" is negative")));
            }
            Some(db::now() + d.as_secs())
        }
    };
    let mut store = open(db)?;
    let records = store.list_status(ListFilter {
        not_after_by,
        revoked_only: revoked,
    })?;
    let now = db::now();
    // --check: a failure prints nothing on stdout (as every failure), only its line.
    if let (Some(window), Some(by), true) = (expiring, not_after_by, check) {
        let wanted = records
            .iter()
            .map(|l| {
                let r = &l.record;
                (r.authority_key_identifier.clone(), r.subject.clone())
            })
            .collect();
        let newer = store.live_after(by, &wanted)?;
        check_expiring(&records, newer, window, now)?;
    }
    if json {
        write_stdout(&format!("{}\n", to_json(&records)))
    } else {
        write_stdout(&table(&records, now))
    }
}

/// `certs show SERIAL`: every stored certificate with that serial (one per CA).
fn show(db: &DbArgs, serial: &str, json: bool) -> Result<()> {
    let mut store = open(db)?;
    let records = store.find_status(serial)?;
    if records.is_empty() {
        return Err(Error::input(format!(
            "serial {serial} is not in the certificate store; `p11ca certs list` shows what is"
        )));
    }
    if json {
        return write_stdout(&format!("{}\n", to_json(&records)));
    }
    let mut out = String::new();
    for l in &records {
        let r = &l.record;
        out.push_str(&format!(
            "serial:         {} (hex {})\nstate:          {}\nissuer AKI:     {}\nsubject:        {}\nSANs:           {}\nprofile:        {}\nnot before:     {}\nnot after:      {}\nissued at:      {}\nrequested by:   {}{}\n{}",
            r.serial_number,
            r.serial_hex,
            state(l, db::now()),
            r.authority_key_identifier,
            escape_for_log(&r.subject),
            escape_for_log(&r.sans.join(", ")),
            escape_for_log(&r.profile),
            time(r.not_before),
            time(r.not_after),
            time(r.issued_at),
            escape_for_log(&r.requester),
            if r.auth_key.is_empty() {
                String::new()
            } else {
                format!(" (auth_key {})", escape_for_log(&r.auth_key))
            },
            r.pem
        ));
    }
    write_stdout(&out)
}

/// `valid`, `expired`, or `revoked REASON TIME`.
fn state(l: &Listed, now: i64) -> String {
    if l.is_revoked() {
        let reason = u8::try_from(l.reason)
            .ok()
            .and_then(|c| Reason::ALL.into_iter().find(|r| r.code() == c))
            .map_or_else(|| format!("code{}", l.reason), |r| r.name().to_string());
        return format!(
            "revoked {reason} {}",
            l.revoked_at.map_or_else(|| "-".into(), time)
        );
    }
    let left = l.record.not_after - now;
    if left <= 0 {
        format!("expired {}", time(l.record.not_after))
    } else {
        format!("valid, {} days left", left / 86_400)
    }
}

fn table(records: &[Listed], now: i64) -> String {
    let mut out = String::from("SERIAL (hex)\tNOT AFTER\tSTATE\tPROFILE\tSUBJECT\tSANS\n");
    for l in records {
        let r = &l.record;
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\n",
            r.serial_hex,
            time(r.not_after),
            state(l, now),
            escape_for_log(&r.profile),
            escape_for_log(&r.subject),
            escape_for_log(&r.sans.join(","))
        ));
    }
    out
}

/// `--check`: the listed certificates that are not revoked and not replaced (a certificate of
/// the same subject from the same CA, not revoked, expires later: a renewal) are an exit-6
/// error naming the first of them. `newer` holds the `(AKI, subject)` of those expiring after
/// the window.
fn check_expiring(
    records: &[Listed],
    mut newer: HashSet<(String, String)>,
    window: &str,
    now: i64,
) -> Result<()> {
    // Soonest first: walking back from the latest, each one's successors are in `newer`.
    let mut due = Vec::new();
    for l in records.iter().rev().filter(|l| !l.is_revoked()) {
        let key = (
            l.record.authority_key_identifier.clone(),
            l.record.subject.clone(),
        );
        if !newer.contains(&key) {
            due.push(l);
        }
        newer.insert(key);
    }
    let Some(first) = due.last() else {
        return Ok(());
    };
    let r = &first.record;
    Err(Error::new(
        p11ca::Kind::Expiring,
        format!(
            "{} certificate{} expire{} within {window} or already did, the first {} (serial {}, {}); renew, or revoke the ones no longer used (without --check the list is printed)",
            due.len(),
            if due.len() == 1 { "" } else { "s" },
            if due.len() == 1 { "s" } else { "" },
            escape_for_log(&r.subject),
            r.serial_hex,
            state(first, now),
        ),
    ))
}

fn to_json(records: &[Listed]) -> String {
    serde_json::to_string(records).unwrap_or_else(|_| "[]".into())
}
