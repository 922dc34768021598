//! The SQLite back end: WAL journal, `synchronous=FULL` (a commit is on disk before the
//! certificate is returned), a busy timeout so that `p11ca certs` can read while the server
//! writes.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::{COLUMNS, CertRecord, ListFilter, now, pending, select_sql};
use crate::error::{Error, Result};

/// An open SQLite store.
pub struct Sqlite {
    conn: Connection,
}

fn err(what: &str, e: rusqlite::Error) -> Error {
    Error::output(format!("{what}: {e}"))
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CertRecord> {
    let sans: String = r.get(5)?;
    Ok(CertRecord {
        serial_number: r.get(0)?,
        authority_key_identifier: r.get(1)?,
        serial_hex: r.get(2)?,
        subject: r.get(3)?,
        common_name: r.get(4)?,
        sans: serde_json::from_str(&sans).unwrap_or_default(),
        profile: r.get(6)?,
        not_before: r.get(7)?,
        not_after: r.get(8)?,
        pem: r.get(9)?,
        requester: r.get(10)?,
        auth_key: r.get(11)?,
        issued_at: r.get(12)?,
    })
}

impl Sqlite {
    /// Open or create the file and migrate.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            return Err(Error::output(format!(
                "folder {} does not exist; create it first",
                dir.display()
            )));
        }
        let conn = Connection::open(path).map_err(|e| err("cannot open", e))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(|e| err("cannot set the busy timeout", e))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| err("cannot switch to WAL", e))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| err("cannot set synchronous=FULL", e))?;
        let mut s = Self { conn };
        s.migrate()?;
        Ok(s)
    }

    /// The connection, for the audit log's own statements.
    pub(super) fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    fn migrate(&mut self) -> Result<()> {
        // IMMEDIATE takes the write lock first, so two processes cannot both migrate.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| err("cannot start the migration", e))?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version BIGINT PRIMARY KEY, description TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .map_err(|e| err("cannot create schema_migrations", e))?;
        let applied: Vec<i64> = {
            let mut st = tx
                .prepare("SELECT version FROM schema_migrations")
                .map_err(|e| err("cannot read schema_migrations", e))?;
            st.query_map([], |r| r.get(0))
                .and_then(|rows| rows.collect())
                .map_err(|e| err("cannot read schema_migrations", e))?
        };
        for (version, description, sql) in pending(&applied)? {
            tx.execute_batch(sql)
                .map_err(|e| err(&format!("migration {version} ({description})"), e))?;
            tx.execute(
                "INSERT INTO schema_migrations (version, description, applied_at) VALUES (?1, ?2, ?3)",
                params![version, description, now()],
            )
            .map_err(|e| err("cannot record the migration", e))?;
        }
        tx.commit()
            .map_err(|e| err("cannot commit the migration", e))
    }

    /// Insert in one transaction.
    pub fn insert(&mut self, records: &[&CertRecord]) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| err("cannot start a transaction", e))?;
        {
            let mut st = tx
                .prepare_cached(&format!(
                    "INSERT INTO certificates ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
                ))
                .map_err(|e| err("cannot prepare the insert", e))?;
            for r in records {
                let sans = serde_json::to_string(&r.sans).unwrap_or_else(|_| "[]".into());
                st.execute(params![
                    r.serial_number,
                    r.authority_key_identifier,
                    r.serial_hex,
                    r.subject,
                    r.common_name,
                    sans,
                    r.profile,
                    r.not_before,
                    r.not_after,
                    r.pem,
                    r.requester,
                    r.auth_key,
                    r.issued_at
                ])
                .map_err(|e| err(&format!("cannot record serial {}", r.serial_hex), e))?;
            }
        }
        tx.commit().map_err(|e| err("cannot commit", e))
    }

    /// List by notAfter.
    pub fn list(&mut self, f: ListFilter) -> Result<Vec<CertRecord>> {
        let sql = select_sql("WHERE ?1 IS NULL OR not_after <= ?1 ORDER BY not_after, serial_hex");
        let mut st = self
            .conn
            .prepare(&sql)
            .map_err(|e| err("cannot query", e))?;
        st.query_map(params![f.not_after_by], row)
            .and_then(|rows| rows.collect())
            .map_err(|e| err("cannot query", e))
    }

    /// Find by decimal or (normalized) hex serial.
    pub fn find(&mut self, dec: &str, hex: &str) -> Result<Vec<CertRecord>> {
        let sql = select_sql(
            "WHERE serial_number = ?1 OR ltrim(serial_hex, '0') = ?2 ORDER BY issued_at",
        );
        let mut st = self
            .conn
            .prepare(&sql)
            .map_err(|e| err("cannot query", e))?;
        st.query_map(params![dec, hex], row)
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
}
