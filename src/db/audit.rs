//! The tamper-evident audit log, in the store's `audit` table (so replicas sharing PostgreSQL
//! share one chain).
//!
//! Every record carries the SHA-256 of the record before it: editing, removing or reordering a
//! record breaks the chain at that record. Someone with write access to the database could
//! rewrite the whole chain after an edit, so at intervals a *checkpoint* record is appended
//! whose detail holds a signature, made by a key in the token, over the chain head before it.
//! A rewritten chain no longer matches its signed checkpoints, and new checkpoints cannot be
//! made without the token. `verify` walks the chain and the checkpoints and names the first
//! record that does not fit.
//!
//! The signed message starts with the ASCII tag below, never with the DER SEQUENCE tag
//! `0x30` that every certificate, CRL or OCSP response to-be-signed starts with, so a
//! checkpoint signature can never stand for one of those.

use std::fmt::Write as _;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use spki::SubjectPublicKeyInfoOwned;

use super::ocsp::StoredResponse;
use super::{RevokeOutcome, Store};
use crate::error::{Error, Kind, Result};
use crate::text;
use crate::x509::Signer;
use crate::x509::alg::SigAlg;
use crate::x509::crl::Reason;
use crate::x509::verify;

/// Domain tag of a record's hash.
const RECORD_TAG: &[u8] = b"p11ca audit record v1\0";
/// Domain tag of a checkpoint's signed message.
const CHECKPOINT_TAG: &[u8] = b"p11ca audit checkpoint v1\0";
/// The `prev_hash` of the first record.
const GENESIS: [u8; 32] = [0; 32];

/// The schema of the `audit` table (a migration of the store).
pub(super) const MIGRATION_SQL: &str = "CREATE TABLE audit (
        seq BIGINT PRIMARY KEY,
        at BIGINT NOT NULL,
        kind TEXT NOT NULL,
        actor TEXT NOT NULL,
        detail TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );";

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditKind {
    /// A key was generated in the token.
    KeyGen,
    /// A certificate was issued.
    Issue,
    /// A request was refused (policy, bad input, authentication).
    Refuse,
    /// A certificate was revoked.
    Revoke,
    /// A CRL was signed.
    Crl,
    /// A signed checkpoint over the chain so far.
    Checkpoint,
}

impl AuditKind {
    /// The name stored in the `kind` column.
    pub fn name(self) -> &'static str {
        match self {
            Self::KeyGen => "keygen",
            Self::Issue => "issue",
            Self::Refuse => "refuse",
            Self::Revoke => "revoke",
            Self::Crl => "crl",
            Self::Checkpoint => "checkpoint",
        }
    }
}

/// One event to append: what, who asked, and the details as JSON.
#[derive(Clone, Debug)]
pub struct AuditEvent {
    /// What happened.
    pub kind: AuditKind,
    /// Who asked: `cli:user@host`, or the peer address (and client certificate subject and
    /// auth-key name) for `serve`.
    pub actor: String,
    /// The details (serial, subject, SANs, profile, reason, ...).
    pub detail: serde_json::Value,
}

impl AuditEvent {
    /// An event of `kind` by `actor` with `detail`.
    pub fn new(kind: AuditKind, actor: &str, detail: serde_json::Value) -> Self {
        Self {
            kind,
            actor: actor.to_string(),
            detail,
        }
    }
}

/// The actor for the command line: `cli:USER@HOST`.
pub fn cli_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid{}", rustix::process::getuid().as_raw()));
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    format!("cli:{}@{}", text::escape_for_log(&user), host)
}

/// The audit event of an issued certificate.
pub fn issue_event(record: &super::CertRecord, actor: &str) -> AuditEvent {
    AuditEvent::new(
        AuditKind::Issue,
        actor,
        serde_json::json!({
            "serial": record.serial_number,
            "aki": record.authority_key_identifier,
            "subject": record.subject,
            "sans": record.sans,
            "profile": record.profile,
            "auth_key": record.auth_key,
        }),
    )
}

/// One stored record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// When, Unix seconds.
    pub at: i64,
    /// [`AuditKind::name`].
    pub kind: String,
    /// Who asked.
    pub actor: String,
    /// JSON details.
    pub detail: String,
    /// Hex SHA-256 of the record before (zeros for the first).
    pub prev_hash: String,
    /// Hex SHA-256 of this record.
    pub hash: String,
}

fn put(h: &mut Sha256, field: &[u8]) {
    h.update((field.len() as u64).to_be_bytes());
    h.update(field);
}

/// The hash of a record from its fields (each length-prefixed, so no two records collide by
/// moving bytes between fields).
fn record_hash(seq: i64, at: i64, kind: &str, actor: &str, detail: &str, prev: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(RECORD_TAG);
    put(&mut h, &seq.to_be_bytes());
    put(&mut h, &at.to_be_bytes());
    put(&mut h, kind.as_bytes());
    put(&mut h, actor.as_bytes());
    put(&mut h, detail.as_bytes());
    put(&mut h, prev);
    h.finalize().into()
}

impl AuditRecord {
    /// The record after `head` (`(seq, hash)` of the last record, `(0, zeros)` for none).
    fn next(head: (i64, [u8; 32]), at: i64, kind: &str, actor: &str, detail: String) -> Self {
        let seq = head.0 + 1;
        let hash = record_hash(seq, at, kind, actor, &detail, &head.1);
        Self {
            seq,
            at,
            kind: kind.to_string(),
            actor: actor.to_string(),
            detail,
            prev_hash: text::hex(&head.1),
            hash: text::hex(&hash),
        }
    }

    fn recomputed(&self, prev: &[u8]) -> [u8; 32] {
        record_hash(
            self.seq,
            self.at,
            &self.kind,
            &self.actor,
            &self.detail,
            prev,
        )
    }
}

/// What a checkpoint record's detail holds.
#[derive(Debug, Serialize, Deserialize)]
struct CheckpointDetail {
    /// The last record the checkpoint covers.
    covers: i64,
    /// Its hash (the chain head), hex.
    head: String,
    /// The signature algorithm (Go's name, as certinfo prints it).
    algorithm: String,
    /// The signer's public key, base64 DER SPKI (which anchor to check it with).
    public_key: String,
    /// The signature, base64.
    signature: String,
}

fn checkpoint_message(covers: i64, head: &[u8], at: i64) -> Vec<u8> {
    let mut m = CHECKPOINT_TAG.to_vec();
    m.extend_from_slice(&covers.to_be_bytes());
    m.extend_from_slice(head);
    m.extend_from_slice(&at.to_be_bytes());
    m
}

fn sig_alg_named(name: &str) -> Option<SigAlg> {
    [
        SigAlg::RsaSha256,
        SigAlg::RsaSha384,
        SigAlg::RsaSha512,
        SigAlg::EcdsaSha256,
        SigAlg::EcdsaSha384,
        SigAlg::EcdsaSha512,
    ]
    .into_iter()
    .find(|a| a.go_name() == name)
}

/// The checkpoint record after `head`, signed by `signer` (verified before it is returned).
fn checkpoint(
    head: (i64, [u8; 32]),
    at: i64,
    actor: &str,
    signer: &dyn Signer,
) -> Result<AuditRecord> {
    use der::Encode;
    let msg = checkpoint_message(head.0, &head.1, at);
    let sig = signer.sign(&msg)?;
    verify::verify(signer.public_key(), signer.algorithm(), &msg, &sig)
        .map_err(|e| e.context("the token's signature on the audit checkpoint was rejected"))?;
    let spki = signer
        .public_key()
        .to_der()
        .map_err(|e| Error::input(format!("cannot encode the checkpoint key: {e}")))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let detail = CheckpointDetail {
        covers: head.0,
        head: text::hex(&head.1),
        algorithm: signer.algorithm().go_name().to_string(),
        public_key: b64.encode(spki),
        signature: b64.encode(sig),
    };
    let detail = serde_json::to_string(&detail).unwrap_or_default();
    Ok(AuditRecord::next(
        head,
        at,
        AuditKind::Checkpoint.name(),
        actor,
        detail,
    ))
}

/// What [`verify_chain`] found in a chain that holds together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainReport {
    /// Records in the chain (checkpoints included).
    pub records: usize,
    /// Signed checkpoints that verified under an anchor.
    pub checkpoints: usize,
    /// The last record a verified checkpoint covers (0: none).
    pub covered: i64,
    /// Records after that checkpoint (not yet covered by a signature).
    pub uncovered: usize,
}

fn broken(seq: i64, why: &str) -> Error {
    Error::new(Kind::Verify, format!("audit record {seq}: {why}"))
}

/// Check one checkpoint record against the chain head before it and the trusted keys.
fn check_checkpoint(
    r: &AuditRecord,
    head: (i64, [u8; 32]),
    anchors: &[SubjectPublicKeyInfoOwned],
) -> Result<()> {
    use der::Decode;
    let d: CheckpointDetail = serde_json::from_str(&r.detail)
        .map_err(|e| broken(r.seq, &format!("checkpoint detail does not parse: {e}")))?;
    if d.covers != head.0 || d.head != text::hex(&head.1) {
        return Err(broken(
            r.seq,
            &format!(
                "the checkpoint signed a chain head (record {}, {}) that is not the chain before it: a record at or before {} was edited, removed or reordered and the chain re-hashed",
                d.covers, d.head, d.covers
            ),
        ));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64
        .decode(&d.public_key)
        .ok()
        .and_then(|k| SubjectPublicKeyInfoOwned::from_der(&k).ok())
        .ok_or_else(|| broken(r.seq, "checkpoint key does not parse"))?;
    if !anchors.contains(&key) {
        return Err(broken(
            r.seq,
            "checkpoint signed by a key that is none of the given CA certificates' (give the CA that signs checkpoints with -ca)",
        ));
    }
    let alg = sig_alg_named(&d.algorithm)
        .ok_or_else(|| broken(r.seq, "checkpoint names an unknown algorithm"))?;
    let sig = b64
        .decode(&d.signature)
        .map_err(|_| broken(r.seq, "checkpoint signature is not base64"))?;
    verify::verify(
        &key,
        alg,
        &checkpoint_message(d.covers, &head.1, r.at),
        &sig,
    )
    .map_err(|_| broken(r.seq, "checkpoint signature does not verify"))
}

/// Walk `records` (in `seq` order as stored) and name the first that was edited, removed or
/// reordered, or whose checkpoint does not verify under one of `anchors`.
pub fn verify_chain(
    records: &[AuditRecord],
    anchors: &[SubjectPublicKeyInfoOwned],
) -> Result<ChainReport> {
    let mut head: (i64, [u8; 32]) = (0, GENESIS);
    let mut report = ChainReport {
        records: records.len(),
        checkpoints: 0,
        covered: 0,
        uncovered: 0,
    };
    for r in records {
        let expected = head.0 + 1;
        if r.seq != expected {
            return Err(broken(
                expected,
                &format!(
                    "missing: the next stored record is {} (records {expected}..{} were removed)",
                    r.seq,
                    r.seq - 1
                ),
            ));
        }
        if r.prev_hash != text::hex(&head.1) {
            return Err(broken(
                r.seq,
                "does not follow the record before it (records removed or reordered before it)",
            ));
        }
        let hash = r.recomputed(&head.1);
        if r.hash != text::hex(&hash) {
            return Err(broken(
                r.seq,
                "its contents do not match its hash (the record was edited or swapped)",
            ));
        }
        if r.kind == AuditKind::Checkpoint.name() {
            check_checkpoint(r, head, anchors)?;
            report.checkpoints += 1;
            report.covered = head.0;
        }
        head = (r.seq, hash);
    }
    report.uncovered = records
        .iter()
        .filter(|r| r.seq > report.covered && r.kind != AuditKind::Checkpoint.name())
        .count();
    Ok(report)
}

/// The report as one line for the terminal.
pub fn describe(report: &ChainReport) -> String {
    let mut s = format!(
        "audit chain intact: {} records, {} signed checkpoints",
        report.records, report.checkpoints
    );
    if report.checkpoints > 0 {
        let _ = write!(s, ", records 1..{} covered by a signature", report.covered);
    }
    if report.uncovered > 0 {
        let _ = write!(
            s,
            "; {} records after the last checkpoint are chained but not yet signed",
            report.uncovered
        );
    }
    s
}

/// What a revocation writes in its own transaction besides the revocation.
#[derive(Clone, Copy, Debug, Default)]
pub struct RevokeAlso<'a> {
    /// The actor of the `revoke` audit records, one per certificate revoked; `None`: none.
    pub actor: Option<&'a str>,
    /// New OCSP responses, each with the time it stops being served; only those of
    /// certificates this revocation revoked are stored.
    pub ocsp: &'a [(StoredResponse, i64)],
}

/// `items` (serial, AKI) in the store's forms.
fn parse_items(items: &[(String, String)]) -> Result<Vec<(String, String)>> {
    items
        .iter()
        .map(|(s, a)| Ok((super::parse_serial(s)?, super::parse_aki(a)?)))
        .collect()
}

/// For the certificates of `items` that `out` says were revoked now: their `revoke` audit
/// events (when `also` names an actor) and their responses of `also.ocsp`.
fn revoked_with(
    items: &[(String, String)],
    out: &[RevokeOutcome],
    reason: Reason,
    also: &RevokeAlso<'_>,
) -> (Vec<AuditEvent>, Vec<(StoredResponse, i64)>) {
    let revoked: Vec<&(String, String)> = items
        .iter()
        .zip(out)
        .filter(|(_, o)| **o == RevokeOutcome::Revoked)
        .map(|(i, _)| i)
        .collect();
    let events = also.actor.map_or_else(Vec::new, |actor| {
        revoked
            .iter()
            .map(|(serial, aki)| {
                AuditEvent::new(
                    AuditKind::Revoke,
                    actor,
                    serde_json::json!({"serial": serial, "aki": aki, "reason": reason.name()}),
                )
            })
            .collect()
    });
    let responses = also
        .ocsp
        .iter()
        .filter(|(r, _)| revoked.iter().any(|(s, a)| *s == r.serial && *a == r.aki))
        .cloned()
        .collect();
    (events, responses)
}

/// The audit records for `events`, chained one after the other onto `head`.
fn chain_events(
    head: (i64, [u8; 32]),
    at: i64,
    events: &[&AuditEvent],
) -> Result<Vec<AuditRecord>> {
    let mut out = Vec::with_capacity(events.len());
    let mut head = head;
    for e in events {
        let r = AuditRecord::next(head, at, e.kind.name(), &e.actor, e.detail.to_string());
        head = head_of(r.seq, &r.hash)?;
        out.push(r);
    }
    Ok(out)
}

fn head_of(seq: i64, hash: &str) -> Result<(i64, [u8; 32])> {
    let h = text::unhex(hash)
        .and_then(|h| <[u8; 32]>::try_from(h).ok())
        .ok_or_else(|| {
            broken(
                seq,
                "the stored hash is not 32 bytes of hex; run `p11ca audit verify`",
            )
        })?;
    Ok((seq, h))
}

impl Store {
    /// Append `events` in one transaction, chained to the current head (the table is locked
    /// for the insert only, so concurrent writers, also other replicas, queue behind it).
    pub fn audit_append(&mut self, events: &[AuditEvent]) -> Result<()> {
        self.audit_append_refs(&events.iter().collect::<Vec<_>>())
    }

    /// [`Store::audit_append`] for events held elsewhere.
    pub fn audit_append_refs(&mut self, events: &[&AuditEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let at = super::now();
        self.audit_tx(&mut |head| chain_events(head, at, events))
            .map_err(|e| e.context("cannot append to the audit log"))
    }

    /// Insert `records` and append `events` to the audit log in one transaction: one commit
    /// (one flush to disk) instead of two, and no certificate without its event. Callers fall
    /// back to [`Store::insert`] then [`Store::audit_append`] when this fails, so that a broken
    /// audit log costs a warning and not the certificates.
    pub fn insert_audited(
        &mut self,
        records: &[&super::CertRecord],
        events: &[&AuditEvent],
    ) -> Result<()> {
        let at = super::now();
        let mut make = |head| chain_events(head, at, events);
        match self {
            Self::Sqlite(s) => s.insert_then(records, |tx| sqlite_chain(tx, &mut make)),
            Self::Postgres(p) => p.insert_then(records, |tx| pg_chain(tx, &mut make)),
        }
    }

    /// Revoke `items` as [`Store::revoke_many`] does and, in the same transaction, append a
    /// `revoke` record (by `also.actor`) for each certificate revoked and store the responses
    /// of `also.ocsp` that belong to one: no revocation on disk without its record and its new
    /// OCSP answer.
    pub fn revoke_recorded(
        &mut self,
        items: &[(String, String)],
        reason: Reason,
        at: i64,
        also: RevokeAlso<'_>,
    ) -> Result<Vec<RevokeOutcome>> {
        let items = parse_items(items)?;
        let code = (i64::from(reason.code()), at);
        match self {
            Self::Sqlite(s) => s.fill_missing_akis(),
            Self::Postgres(p) => p.fill_missing_akis(),
        }?;
        let follow = |out: &[RevokeOutcome]| revoked_with(&items, out, reason, &also);
        match self {
            Self::Sqlite(s) => s.revoke_many(&items, code, |out, tx| {
                let (events, responses) = follow(out);
                let refs: Vec<&AuditEvent> = events.iter().collect();
                if !refs.is_empty() {
                    sqlite_chain(tx, &mut |head| chain_events(head, at, &refs))?;
                }
                super::ocsp::sqlite_upsert(tx, &responses)
            }),
            Self::Postgres(p) => p.revoke_many(&items, code, |out, tx| {
                let (events, responses) = follow(out);
                let refs: Vec<&AuditEvent> = events.iter().collect();
                if !refs.is_empty() {
                    pg_chain(tx, &mut |head| chain_events(head, at, &refs))?;
                }
                super::ocsp::pg_upsert(tx, &responses)
            }),
        }
    }

    /// [`Store::revoke_recorded`]; when its transaction fails (a broken audit log), the
    /// revocation and the responses alone, then the audit records, whose failure is returned
    /// as a warning: a broken log costs a warning, not the revocation.
    pub fn revoke_logged(
        &mut self,
        items: &[(String, String)],
        reason: Reason,
        at: i64,
        also: RevokeAlso<'_>,
    ) -> Result<(Vec<RevokeOutcome>, Option<Error>)> {
        let first = match self.revoke_recorded(items, reason, at, also) {
            Ok(out) => return Ok((out, None)),
            Err(e) => e,
        };
        let alone = RevokeAlso {
            actor: None,
            ocsp: also.ocsp,
        };
        let out = self
            .revoke_recorded(items, reason, at, alone)
            .map_err(|_| first)?;
        let (events, _) = revoked_with(&parse_items(items)?, &out, reason, &also);
        Ok((out, self.audit_append(&events).err()))
    }

    /// Append a checkpoint over the current chain head, signed by `signer` (a token key).
    pub fn audit_checkpoint(&mut self, signer: &dyn Signer, actor: &str) -> Result<()> {
        let at = super::now();
        self.audit_tx(&mut |head| Ok(vec![checkpoint(head, at, actor, signer)?]))
            .map_err(|e| e.context("cannot append the audit checkpoint"))
    }

    /// Whether records were appended since the last checkpoint (so one is due).
    pub fn audit_needs_checkpoint(&mut self) -> Result<bool> {
        let last = self.audit_last_kind()?;
        Ok(last.is_some_and(|k| k != AuditKind::Checkpoint.name()))
    }

    fn audit_last_kind(&mut self) -> Result<Option<String>> {
        const LAST: &str = "SELECT kind FROM audit ORDER BY seq DESC LIMIT 1";
        match self {
            Self::Sqlite(s) => {
                use rusqlite::OptionalExtension;
                s.conn_mut()
                    .query_row(LAST, [], |r| r.get(0))
                    .optional()
                    .map_err(|e| sq("cannot read the audit head", e))
            }
            Self::Postgres(p) => Ok(p
                .client_mut()
                .query_opt(LAST, &[])
                .map_err(|e| pgerr("cannot read the audit head", e))?
                .map(|r| r.get(0))),
        }
    }

    /// Every audit record, in chain order.
    pub fn audit_records(&mut self) -> Result<Vec<AuditRecord>> {
        match self {
            Self::Sqlite(s) => sqlite_records(s.conn_mut()),
            Self::Postgres(p) => pg_records(p.client_mut()),
        }
    }

    /// Lock the table, read the head, insert what `make` builds on it, commit.
    fn audit_tx(
        &mut self,
        make: &mut dyn FnMut((i64, [u8; 32])) -> Result<Vec<AuditRecord>>,
    ) -> Result<()> {
        match self {
            Self::Sqlite(s) => sqlite_append(s.conn_mut(), make),
            Self::Postgres(p) => pg_append(p.client_mut(), make),
        }
    }
}

const SELECT: &str = "SELECT seq, at, kind, actor, detail, prev_hash, hash FROM audit";
const INSERT_SQLITE: &str = "INSERT INTO audit (seq, at, kind, actor, detail, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
const INSERT_PG: &str = "INSERT INTO audit (seq, at, kind, actor, detail, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7)";

fn sq(what: &str, e: rusqlite::Error) -> Error {
    Error::output(format!("{what}: {e}"))
}

fn sqlite_append(
    conn: &mut rusqlite::Connection,
    make: &mut dyn FnMut((i64, [u8; 32])) -> Result<Vec<AuditRecord>>,
) -> Result<()> {
    // IMMEDIATE takes the write lock before the head is read, so two writers cannot both
    // chain onto the same head.
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| sq("cannot start a transaction", e))?;
    sqlite_chain(&tx, make)?;
    tx.commit().map_err(|e| sq("cannot commit", e))
}

/// Read the head and insert what `make` builds on it, inside `tx` (which holds the write lock).
fn sqlite_chain(
    tx: &rusqlite::Transaction,
    make: &mut dyn FnMut((i64, [u8; 32])) -> Result<Vec<AuditRecord>>,
) -> Result<()> {
    use rusqlite::OptionalExtension;
    let last: Option<(i64, String)> = tx
        .prepare_cached("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
        .and_then(|mut st| st.query_row([], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(|e| sq("cannot read the audit head", e))?;
    let head = match last {
        Some((seq, hash)) => head_of(seq, &hash)?,
        None => (0, GENESIS),
    };
    let mut insert = tx
        .prepare_cached(INSERT_SQLITE)
        .map_err(|e| sq("cannot insert the audit record", e))?;
    for r in make(head)? {
        insert
            .execute(rusqlite::params![
                r.seq,
                r.at,
                r.kind,
                r.actor,
                r.detail,
                r.prev_hash,
                r.hash
            ])
            .map_err(|e| sq("cannot insert the audit record", e))?;
    }
    Ok(())
}

fn sqlite_records(conn: &mut rusqlite::Connection) -> Result<Vec<AuditRecord>> {
    let mut st = conn
        .prepare(&format!("{SELECT} ORDER BY seq"))
        .map_err(|e| sq("cannot read the audit log", e))?;
    st.query_map([], |r| {
        Ok(AuditRecord {
            seq: r.get(0)?,
            at: r.get(1)?,
            kind: r.get(2)?,
            actor: r.get(3)?,
            detail: r.get(4)?,
            prev_hash: r.get(5)?,
            hash: r.get(6)?,
        })
    })
    .and_then(|rows| rows.collect())
    .map_err(|e| sq("cannot read the audit log", e))
}

fn pgerr(what: &str, e: postgres::Error) -> Error {
    let detail = e
        .as_db_error()
        .map_or_else(|| e.to_string(), |d| d.message().to_string());
    Error::output(format!("{what}: {detail}"))
}

fn pg_append(
    client: &mut postgres::Client,
    make: &mut dyn FnMut((i64, [u8; 32])) -> Result<Vec<AuditRecord>>,
) -> Result<()> {
    let mut tx = client
        .transaction()
        .map_err(|e| pgerr("cannot start a transaction", e))?;
    pg_chain(&mut tx, make)?;
    tx.commit().map_err(|e| pgerr("cannot commit", e))
}

/// Lock the table, read the head and insert what `make` builds on it, inside `tx`.
fn pg_chain(
    tx: &mut postgres::Transaction,
    make: &mut dyn FnMut((i64, [u8; 32])) -> Result<Vec<AuditRecord>>,
) -> Result<()> {
    // Replicas append to one chain: the lock (held to commit) makes read-head-then-insert
    // atomic; readers are not blocked.
    tx.batch_execute("LOCK TABLE audit IN SHARE ROW EXCLUSIVE MODE")
        .map_err(|e| pgerr("cannot lock the audit log", e))?;
    let last = tx
        .query_opt("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", &[])
        .map_err(|e| pgerr("cannot read the audit head", e))?;
    let head = match last {
        Some(row) => head_of(row.get(0), row.get(1))?,
        None => (0, GENESIS),
    };
    for r in make(head)? {
        tx.execute(
            INSERT_PG,
            &[
                &r.seq,
                &r.at,
                &r.kind,
                &r.actor,
                &r.detail,
                &r.prev_hash,
                &r.hash,
            ],
        )
        .map_err(|e| pgerr("cannot insert the audit record", e))?;
    }
    Ok(())
}

fn pg_records(client: &mut postgres::Client) -> Result<Vec<AuditRecord>> {
    Ok(client
        .query(&format!("{SELECT} ORDER BY seq"), &[])
        .map_err(|e| pgerr("cannot read the audit log", e))?
        .iter()
        .map(|r| AuditRecord {
            seq: r.get(0),
            at: r.get(1),
            kind: r.get(2),
            actor: r.get(3),
            detail: r.get(4),
            prev_hash: r.get(5),
            hash: r.get(6),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x509::softkey;

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&super::super::DbConfig::Sqlite(d.path().join("a.db"))).unwrap();
        (d, s)
    }

    fn ev(i: u32) -> AuditEvent {
        AuditEvent::new(
            AuditKind::Issue,
            "cli:test@host",
            serde_json::json!({"serial": i.to_string()}),
        )
    }

    #[test]
    fn chain_and_checkpoint_verify_and_tampering_is_named() {
        let (_d, mut s) = store();
        let key = softkey::SoftKey::generate(crate::x509::alg::KeyAlg::EcP256).unwrap();
        let anchors = vec![key.public_key().clone()];
        s.audit_append(&[ev(1), ev(2), ev(3)]).unwrap();
        s.audit_checkpoint(&key, "cli:test@host").unwrap();
        s.audit_append(&[ev(5)]).unwrap();
        let recs = s.audit_records().unwrap();
        let rep = verify_chain(&recs, &anchors).unwrap();
        assert_eq!(
            rep,
            ChainReport {
                records: 5,
                checkpoints: 1,
                covered: 3,
                uncovered: 1
            }
        );
        // Edited.
        let mut t = recs.clone();
        t[1].detail = r#"{"serial":"9"}"#.into();
        let e = verify_chain(&t, &anchors).unwrap_err();
        assert!(e.message().starts_with("audit record 2:"), "{e}");
        assert!(e.message().contains("edited"), "{e}");
        // Removed.
        let mut t = recs.clone();
        t.remove(2);
        let e = verify_chain(&t, &anchors).unwrap_err();
        assert!(e.message().starts_with("audit record 3:"), "{e}");
        // Swapped (contents exchanged, sequence kept).
        let mut t = recs.clone();
        let (a, b) = (t[0].clone(), t[1].clone());
        t[0] = AuditRecord { seq: 1, ..b };
        t[1] = AuditRecord { seq: 2, ..a };
        let e = verify_chain(&t, &anchors).unwrap_err();
        assert!(e.message().starts_with("audit record 1:"), "{e}");
        // Edited and the chain re-hashed: only the signed checkpoint catches it.
        let mut t = recs.clone();
        t[0].detail = r#"{"serial":"7"}"#.into();
        let mut head = (0, GENESIS);
        for r in &mut t {
            r.prev_hash = text::hex(&head.1);
            let h = r.recomputed(&head.1);
            r.hash = text::hex(&h);
            head = (r.seq, h);
        }
        let e = verify_chain(&t, &anchors).unwrap_err();
        assert!(e.message().starts_with("audit record 4:"), "{e}");
        assert!(e.message().contains("re-hashed"), "{e}");
        // A checkpoint signed by another key is not trusted.
        let other = softkey::SoftKey::generate(crate::x509::alg::KeyAlg::EcP256).unwrap();
        let e = verify_chain(&recs, &[other.public_key().clone()]).unwrap_err();
        assert!(e.message().contains("none of the given CA"), "{e}");
    }

    fn cert(serial: u32) -> super::super::CertRecord {
        super::super::CertRecord {
            serial_number: serial.to_string(),
            authority_key_identifier: "ab".into(),
            serial_hex: format!("{serial:x}"),
            subject: format!("CN=n{serial}"),
            common_name: format!("n{serial}"),
            sans: vec![],
            profile: "p".into(),
            not_before: 10,
            not_after: 4_000_000_000,
            pem: "PEM".into(),
            requester: "test".into(),
            auth_key: String::new(),
            issued_at: 10,
        }
    }

    fn response(serial: u32, body: &[u8]) -> (StoredResponse, i64) {
        let r = StoredResponse {
            serial: serial.to_string(),
            aki: "ab".into(),
            body: body.to_vec(),
        };
        (r, 4_000_000_000)
    }

    #[test]
    fn a_revocation_its_record_and_its_response_are_written_together() {
        let (_d, mut s) = store();
        s.insert_audited(&[&cert(1), &cert(2)], &[&ev(1), &ev(2)])
            .unwrap();
        let items = [("1".to_string(), "ab".to_string())];
        let ocsp = [response(1, b"revoked"), response(2, b"not this one")];
        let also = RevokeAlso {
            actor: Some("serve"),
            ocsp: &ocsp,
        };
        let (out, warn) = s
            .revoke_logged(&items, Reason::KeyCompromise, 100, also)
            .unwrap();
        assert_eq!((out, warn.is_none()), (vec![RevokeOutcome::Revoked], true));
        assert_eq!(s.audit_records().unwrap().len(), 3);
        assert_eq!(s.ocsp_response("1", "ab").unwrap().unwrap(), b"revoked");
        // Only the responses of certificates this revocation revoked are stored.
        assert!(s.ocsp_response("2", "ab").unwrap().is_none());
        // Revoked again for the same reason: left as it was, no record, no new response.
        let again = [response(1, b"second")];
        let also = RevokeAlso {
            actor: Some("serve"),
            ocsp: &again,
        };
        let (out, _) = s
            .revoke_logged(&items, Reason::KeyCompromise, 200, also)
            .unwrap();
        assert_eq!(out, vec![RevokeOutcome::AlreadyRevoked]);
        assert_eq!(s.audit_records().unwrap().len(), 3);
        assert_eq!(s.ocsp_response("1", "ab").unwrap().unwrap(), b"revoked");
        // A broken audit log: the revocation and its response still happen, with a warning.
        let Store::Sqlite(lite) = &mut s else {
            unreachable!()
        };
        lite.conn_mut()
            .execute("UPDATE audit SET hash = 'broken' WHERE seq = 3", [])
            .unwrap();
        let items = [("2".to_string(), "ab".to_string())];
        let also = RevokeAlso {
            actor: Some("serve"),
            ocsp: &ocsp,
        };
        let (out, warn) = s
            .revoke_logged(&items, Reason::Superseded, 300, also)
            .unwrap();
        assert_eq!(out, vec![RevokeOutcome::Revoked]);
        assert!(warn.is_some_and(|e| e.message().contains("audit")));
        assert_eq!(
            s.ocsp_response("2", "ab").unwrap().unwrap(),
            b"not this one"
        );
        // An unknown serial revokes nothing and stores nothing.
        let items = [("9".to_string(), "ab".to_string())];
        let also = RevokeAlso {
            actor: Some("serve"),
            ocsp: &[response(9, b"x")],
        };
        assert!(
            s.revoke_logged(&items, Reason::Superseded, 400, also)
                .is_err()
        );
        assert!(s.ocsp_response("9", "ab").unwrap().is_none());
    }
}
