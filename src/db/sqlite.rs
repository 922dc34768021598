//! The SQLite back end: WAL journal, `synchronous=FULL` (a commit is on disk before the
//! certificate is returned), a busy timeout so that `p11ca certs` can read while the server
//! writes. Values are written as cfssl's Go driver writes them (text, JSON as BLOB, times as
//! text); they are read whatever their storage class.

use std::path::Path;
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, MAIN_DB, OpenFlags, OptionalExtension, Transaction, params};

use super::{
    AkiSubject, CertRecord, ListFilter, RawRow, RevokeOutcome, cfssl_sans, gotime, now, pending,
    schema,
};
use crate::error::{Error, Result};
use crate::x509::crl::RevokedEntry;

/// An open SQLite store.
pub struct Sqlite {
    conn: Connection,
    read_only: bool,
}

fn err(what: &str, e: rusqlite::Error) -> Error {
    Error::output(format!("{what}: {e}"))
}

/// Whether the store named `path` exists (a `file:` URI names the file before its `?`).
pub(super) fn exists(path: &Path) -> bool {
    let s = path.to_string_lossy();
    match s.strip_prefix("file:") {
        Some(rest) => Path::new(rest.split('?').next().unwrap_or(rest)).exists(),
        None => path.exists(),
    }
}

/// A column as text, whatever SQLite holds (cfssl binds Go strings as TEXT and []byte as BLOB).
fn text_at(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<String> {
    Ok(match r.get_ref(i)? {
        ValueRef::Null => String::new(),
        ValueRef::Integer(n) => n.to_string(),
        ValueRef::Real(f) => f.to_string(),
        ValueRef::Text(t) | ValueRef::Blob(t) => String::from_utf8_lossy(t).into_owned(),
    })
}

/// A time column: Go's driver text, or Unix seconds if some writer stored a number.
fn time_at(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<i64>> {
    Ok(match r.get_ref(i)? {
        ValueRef::Integer(n) => Some(n),
        ValueRef::Text(t) | ValueRef::Blob(t) => {
            std::str::from_utf8(t).ok().and_then(gotime::parse)
        }
        _ => None,
    })
}

/// [`Sqlite::find`]'s condition (tested to be a primary-key lookup, not a scan).
pub(super) const FIND: &str = "WHERE serial_number IN (?1, ?2) ORDER BY issued_at";

const SELECT: &str = "SELECT serial_number, authority_key_identifier, serial_hex, subject, common_name, p11ca_sans, profile, not_before, expiry, pem, requester, auth_key, issued_at, status, reason, revoked_at, ca_label, sans FROM certificates";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    Ok(RawRow {
        serial_number: text_at(r, 0)?,
        aki: text_at(r, 1)?,
        serial_hex: text_at(r, 2)?,
        subject: text_at(r, 3)?,
        common_name: text_at(r, 4)?,
        p11ca_sans: text_at(r, 5)?,
        profile: text_at(r, 6)?,
        not_before: time_at(r, 7)?,
        expiry: time_at(r, 8)?,
        pem: text_at(r, 9)?,
        requester: text_at(r, 10)?,
        auth_key: text_at(r, 11)?,
        issued_at: time_at(r, 12)?,
        status: text_at(r, 13)?,
        reason: r.get::<_, Option<i64>>(14)?.unwrap_or(0),
        revoked_at: time_at(r, 15)?,
        ca_label: text_at(r, 16)?,
        sans: text_at(r, 17)?,
    })
}

impl Sqlite {
    /// Open or create the file and migrate. A `file:` URI is passed to SQLite as one (so
    /// `file:certs.db?mode=ro` opens it read-only, as with cfssl's driver).
    pub fn open(path: &Path) -> Result<Self> {
        let is_uri = path.to_string_lossy().starts_with("file:");
        if !is_uri
            && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            return Err(Error::output(format!(
                "folder {} does not exist; create it first",
                dir.display()
            )));
        }
        let flags = OpenFlags::default() | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| err("cannot open", e))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(|e| err("cannot set the busy timeout", e))?;
        let read_only = conn
            .is_readonly(MAIN_DB)
            .map_err(|e| err("cannot open", e))?;
        if !read_only {
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(|e| err("cannot switch to WAL", e))?;
            conn.pragma_update(None, "synchronous", "FULL")
                .map_err(|e| err("cannot set synchronous=FULL", e))?;
        }
        let mut s = Self { conn, read_only };
        if read_only {
            s.check_read_only_schema()?;
        } else {
            s.migrate()?;
        }
        Ok(s)
    }

    /// The connection, for the audit log's own statements.
    pub(super) fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    fn applied(conn: &Connection) -> Result<Vec<i64>> {
        let has: bool = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .map_err(|e| err("cannot read the schema", e))?;
        if !has {
            return Ok(Vec::new());
        }
        let mut st = conn
            .prepare("SELECT version FROM schema_migrations")
            .map_err(|e| err("cannot read schema_migrations", e))?;
        st.query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| err("cannot read schema_migrations", e))
    }

    /// A read-only store can be read only if it needs no migration.
    fn check_read_only_schema(&self) -> Result<()> {
        let applied = Self::applied(&self.conn)?;
        if !pending(&applied)?.is_empty() {
            return Err(Error::output(format!(
                "the store is read-only and its schema is not at version {} yet; open it once with write access to migrate it",
                schema::CURRENT
            )));
        }
        Ok(())
    }

    fn columns(tx: &Transaction<'_>) -> Result<Vec<String>> {
        let mut st = tx
            .prepare("SELECT name FROM pragma_table_info('certificates')")
            .map_err(|e| err("cannot read the schema", e))?;
        st.query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| err("cannot read the schema", e))
    }

    fn migrate(&mut self) -> Result<()> {
        // IMMEDIATE takes the write lock first, so two processes cannot both migrate.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| err("cannot start the migration", e))?;
        let applied = Self::applied(&tx)?;
        let todo = pending(&applied)?;
        if todo.is_empty() {
            return Ok(());
        }
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version BIGINT PRIMARY KEY, description TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .map_err(|e| err("cannot create schema_migrations", e))?;
        let columns = Self::columns(&tx)?;
        let adopted = applied.is_empty() && !columns.is_empty();
        if adopted {
            // A store cfssl made (its own schema SQL, no p11ca version table).
            let sql = schema::adopt_sql(&columns, schema::Dialect::Sqlite)?;
            tx.execute_batch(&sql)
                .map_err(|e| err("cannot adopt cfssl's certificates table", e))?;
        }
        for m in todo {
            if !adopted || m.version > schema::ADOPTED_AT {
                tx.execute_batch(m.sqlite)
                    .map_err(|e| err(&format!("migration {} ({})", m.version, m.description), e))?;
            }
            tx.execute(
                "INSERT INTO schema_migrations (version, description, applied_at) VALUES (?1, ?2, ?3)",
                params![m.version, m.description, now()],
            )
            .map_err(|e| err("cannot record the migration", e))?;
        }
        tx.commit()
            .map_err(|e| err("cannot commit the migration", e))
    }

    fn writable(&self, what: &str) -> Result<()> {
        if self.read_only {
            return Err(Error::output(format!(
                "the store is read-only: cannot {what}; nothing was changed"
            )));
        }
        Ok(())
    }

    /// Insert in one transaction.
    pub fn insert(&mut self, records: &[&CertRecord]) -> Result<()> {
        self.insert_then(records, |_| Ok(()))
    }

    /// Insert `records` and run `then` (the audit log's append) in the same transaction, so
    /// that both reach the disk with one commit.
    pub(super) fn insert_then(
        &mut self,
        records: &[&CertRecord],
        then: impl FnOnce(&rusqlite::Transaction) -> Result<()>,
    ) -> Result<()> {
        self.writable("record certificates")?;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| err("cannot start a transaction", e))?;
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO certificates (serial_number, authority_key_identifier, ca_label, status, reason, expiry, revoked_at, pem, issued_at, not_before, metadata, sans, common_name, serial_hex, subject, profile, requester, auth_key, p11ca_sans)
                     VALUES (?1, ?2, '', 'good', 0, ?3, ?4, ?5, ?6, ?7, CAST('null' AS BLOB), ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                )
                .map_err(|e| err("cannot prepare the insert", e))?;
            for r in records {
                let sans = serde_json::to_string(&r.sans).unwrap_or_else(|_| "[]".into());
                st.execute(params![
                    r.serial_number,
                    r.authority_key_identifier,
                    gotime::format(r.not_after),
                    gotime::ZERO,
                    r.pem,
                    gotime::format(r.issued_at),
                    gotime::format(r.not_before),
                    cfssl_sans(&r.sans).into_bytes(),
                    r.common_name,
                    r.serial_hex,
                    r.subject,
                    r.profile,
                    r.requester,
                    r.auth_key,
                    sans
                ])
                .map_err(|e| err(&format!("cannot record serial {}", r.serial_hex), e))?;
            }
        }
        then(&tx)?;
        tx.commit().map_err(|e| err("cannot commit", e))
    }

    /// List by notAfter.
    pub(super) fn list(&mut self, f: ListFilter) -> Result<Vec<RawRow>> {
        let sql = format!(
            "{SELECT} WHERE (?1 IS NULL OR expiry <= ?1) AND (?2 = 0 OR status = 'revoked') ORDER BY expiry, serial_hex, serial_number"
        );
        let by = f.not_after_by.map(gotime::format);
        let mut st = self
            .conn
            .prepare(&sql)
            .map_err(|e| err("cannot query", e))?;
        st.query_map(params![by, f.revoked_only], row)
            .and_then(|rows| rows.collect())
            .map_err(|e| err("cannot query", e))
    }

    /// `(AKI, subject)` of every certificate not revoked whose notAfter is after `after`.
    pub(super) fn live_after(
        &mut self,
        after: i64,
        keep: &mut dyn FnMut(AkiSubject),
    ) -> Result<()> {
        let mut st = self
            .conn
            .prepare("SELECT authority_key_identifier, subject FROM certificates WHERE expiry > ?1 AND status != 'revoked'")
            .map_err(|e| err("cannot query", e))?;
        let rows = st
            .query_map(params![gotime::format(after)], |r| {
                Ok((text_at(r, 0)?, text_at(r, 1)?))
            })
            .map_err(|e| err("cannot query", e))?;
        for r in rows {
            keep(r.map_err(|e| err("cannot query", e))?);
        }
        Ok(())
    }

    /// Find by the serial as given (decimal) or by the decimal form of its hex reading; both
    /// through the primary key (serial_number, authority_key_identifier).
    pub(super) fn find(&mut self, dec: &str, hex_as_dec: &str) -> Result<Vec<RawRow>> {
        let sql = format!("{SELECT} {FIND}");
        let mut st = self
            .conn
            .prepare(&sql)
            .map_err(|e| err("cannot query", e))?;
        st.query_map(params![dec, hex_as_dec], row)
            .and_then(|rows| rows.collect())
            .map_err(|e| err("cannot query", e))
    }

    /// Row count.
    pub fn count(&mut self) -> Result<u64> {
        self.conn
            .query_row("SELECT count(*) FROM certificates", [], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
            .map(|n| n.unwrap_or(0) as u64)
            .map_err(|e| err("cannot count", e))
    }

    /// Give rows written without an AKI (cfssl 1.2 stores `''`) the one their PEM carries.
    pub(super) fn fill_missing_akis(&mut self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        let rows: Vec<(String, String)> = {
            let mut st = self
                .conn
                .prepare("SELECT serial_number, pem FROM certificates WHERE authority_key_identifier = ''")
                .map_err(|e| err("cannot query", e))?;
            st.query_map([], |r| Ok((text_at(r, 0)?, text_at(r, 1)?)))
                .and_then(|rows| rows.collect())
                .map_err(|e| err("cannot query", e))?
        };
        for (serial, pem) in rows {
            let Some(aki) = super::aki_of_pem(&pem) else {
                continue;
            };
            self.conn
                .execute(
                    "UPDATE OR IGNORE certificates SET authority_key_identifier = ?2 WHERE serial_number = ?1 AND authority_key_identifier = ''",
                    params![serial, aki],
                )
                .map_err(|e| err("cannot fill in a missing AKI", e))?;
        }
        Ok(())
    }

    /// Revoke all of `items` in one transaction, or none; `then` runs in the same transaction
    /// with the outcomes (the audit log's records, the new OCSP responses).
    pub(super) fn revoke_many(
        &mut self,
        items: &[(String, String)],
        (code, at): (i64, i64),
        then: impl FnOnce(&[RevokeOutcome], &rusqlite::Transaction) -> Result<()>,
    ) -> Result<Vec<RevokeOutcome>> {
        self.writable("revoke")?;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| err("cannot start a transaction", e))?;
        let mut out = Vec::with_capacity(items.len());
        {
            let mut get = tx
                .prepare("SELECT status, reason FROM certificates WHERE serial_number = ?1 AND authority_key_identifier = ?2")
                .map_err(|e| err("cannot prepare the revocation", e))?;
            let mut set = tx
                .prepare("UPDATE certificates SET status = 'revoked', reason = ?3, revoked_at = ?4 WHERE serial_number = ?1 AND authority_key_identifier = ?2")
                .map_err(|e| err("cannot prepare the revocation", e))?;
            let at = gotime::format(at);
            for (i, (serial, aki)) in items.iter().enumerate() {
                // Tests kill the process here, half-way through a large revocation.
                #[cfg(feature = "fault-injection")]
                if i == items.len() / 2 {
                    crate::fault::crash_point("revoke-midway");
                }
                #[cfg(not(feature = "fault-injection"))]
                let _ = i;
                let found = get
                    .query_row(params![serial, aki], |r| {
                        Ok((text_at(r, 0)?, r.get::<_, Option<i64>>(1)?))
                    })
                    .optional()
                    .map_err(|e| err("cannot read the certificate", e))?;
                match super::revoke_step(serial, aki, found, code)? {
                    RevokeOutcome::Revoked => {
                        set.execute(params![serial, aki, code, at])
                            .map_err(|e| err(&format!("cannot revoke serial {serial}"), e))?;
                        out.push(RevokeOutcome::Revoked);
                    }
                    o => out.push(o),
                }
            }
        }
        then(&out, &tx)?;
        tx.commit()
            .map_err(|e| err("cannot commit the revocation", e))?;
        Ok(out)
    }

    /// The revoked entries of CA `aki` for a CRL made at `now`.
    pub(super) fn crl_entries(&mut self, aki: &str, now: i64) -> Result<Vec<RevokedEntry>> {
        let last: Option<i64> = self
            .conn
            .query_row(
                "SELECT last_issued FROM p11ca_crl_numbers WHERE authority_key_identifier = ?1",
                [aki],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| err("cannot read the CRL state", e))?;
        let keep_from = gotime::format(last.unwrap_or(0).min(now));
        let mut st = self
            .conn
            .prepare(
                "SELECT serial_hex, serial_number, revoked_at, reason FROM certificates
                 WHERE authority_key_identifier = ?1 AND status = 'revoked' AND expiry >= ?2",
            )
            .map_err(|e| err("cannot query the revoked certificates", e))?;
        let rows = st
            .query_map(params![aki, keep_from], |r| {
                Ok((
                    text_at(r, 0)?,
                    text_at(r, 1)?,
                    time_at(r, 2)?,
                    r.get::<_, Option<i64>>(3)?,
                ))
            })
            .map_err(|e| err("cannot query the revoked certificates", e))?;
        let mut out = Vec::new();
        for r in rows {
            let (hex, dec, at, reason) =
                r.map_err(|e| err("cannot read a revoked certificate", e))?;
            out.push(super::crl_entry(&hex, &dec, at, reason)?);
        }
        Ok(out)
    }

    /// Take the next CRL number of `aki` (one atomic upsert).
    pub(super) fn next_crl_number(&mut self, aki: &str, now: i64) -> Result<i64> {
        self.writable("take a CRL number")?;
        self.conn
            .query_row(
                "INSERT INTO p11ca_crl_numbers (authority_key_identifier, last_number, last_issued) VALUES (?1, ?2, ?2)
                 ON CONFLICT (authority_key_identifier) DO UPDATE
                 SET last_number = max(last_number + 1, excluded.last_number), last_issued = excluded.last_issued
                 RETURNING last_number",
                params![aki, now],
                |r| r.get(0),
            )
            .map_err(|e| err("cannot take the next CRL number", e))
    }
}
