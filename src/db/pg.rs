//! The PostgreSQL back end, for several signer replicas sharing one store. Migrations run
//! under a transaction-scoped advisory lock, so replicas that start together apply each
//! migration once.

use std::str::FromStr;
use std::time::Duration;

use postgres::config::SslMode;
use postgres::{Client, Config, NoTls};

use super::{
    AkiSubject, CertRecord, ListFilter, RawRow, RevokeOutcome, cfssl_sans, now, pending, schema,
};
use crate::error::{Error, Result};
use crate::x509::crl::RevokedEntry;

/// The advisory lock key that serializes migrations ("p11c").
const MIGRATION_LOCK: i64 = 0x7031_3163;

/// Take lib/pq's TLS options out of `dsn` (the driver knows only disable/prefer/require and no
/// `sslrootcert`) and return the rest with the roots to verify the server against, if TLS is
/// asked for. `sslmode=require`, `verify-ca` and `verify-full` all mean TLS with the server's
/// certificate and name checked against `sslrootcert`, which is then required: unlike lib/pq,
/// p11ca never sends the CA's records over TLS it has not verified. `disable`, `allow` and
/// `prefer` (and no sslmode) connect in plain text, as before.
/// The connection string without p11ca's own TLS keys, and their values (sslmode, sslrootcert),
/// which the driver's parser does not take.
fn split_tls(dsn: &str) -> (String, Option<String>, Option<String>) {
    let mut mode = None;
    let mut root = None;
    let rest = if let Some((base, query)) = dsn
        .split_once('?')
        .filter(|_| dsn.starts_with("postgres://") || dsn.starts_with("postgresql://"))
    {
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned();
            match k {
                "sslmode" => mode = Some(v),
                "sslrootcert" => root = Some(v),
                _ => kept.push(pair),
            }
        }
        if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        }
    } else if dsn.contains("://") {
        dsn.to_string()
    } else {
        let mut kept = Vec::new();
        for word in dsn.split_whitespace() {
            match word.split_once('=') {
                Some(("sslmode", v)) => mode = Some(v.trim_matches('\'').to_string()),
                Some(("sslrootcert", v)) => root = Some(v.trim_matches('\'').to_string()),
                _ => kept.push(word),
            }
        }
        kept.join(" ")
    };
    (rest, mode, root)
}

fn tls_options(dsn: &str) -> Result<(String, Option<rustls::RootCertStore>)> {
    let (rest, mode, root) = split_tls(dsn);
    match mode.as_deref() {
        None | Some("disable" | "allow" | "prefer") => Ok((rest, None)),
        Some(m @ ("require" | "verify-ca" | "verify-full")) => {
            let Some(root) = root else {
                return Err(Error::input(format!(
                    "PostgreSQL connection string: sslmode={m} needs sslrootcert=FILE (the CA of the server's certificate); p11ca always verifies the server"
                )));
            };
            let roots = crate::tls::roots(&root, "PostgreSQL sslrootcert")?;
            Ok((rest, Some(roots)))
        }
        Some(m) => Err(Error::input(format!(
            "PostgreSQL connection string: unknown sslmode={m}; use disable, require, verify-ca or verify-full"
        ))),
    }
}

/// An open PostgreSQL store.
pub struct Pg {
    client: Client,
}

fn err(what: &str, e: postgres::Error) -> Error {
    // The driver's Display is terse ("db error"); the source says what the server said.
    let detail = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(x) = src {
                s = format!("{s}: {x}");
                src = x.source();
            }
            s
        });
    Error::output(format!("{what}: {detail}"))
}

/// cfssl's columns are bytea, timestamptz and jsonb: read back as text and Unix seconds.
const SELECT: &str = "SELECT convert_from(serial_number, 'UTF8'), convert_from(authority_key_identifier, 'UTF8'),
    serial_hex, subject, COALESCE(common_name, ''), p11ca_sans, profile,
    extract(epoch FROM not_before)::BIGINT, extract(epoch FROM expiry)::BIGINT, convert_from(pem, 'UTF8'),
    requester, auth_key, extract(epoch FROM issued_at)::BIGINT, convert_from(status, 'UTF8'),
    COALESCE(reason, 0)::BIGINT, extract(epoch FROM revoked_at)::BIGINT,
    convert_from(COALESCE(ca_label, ''::bytea), 'UTF8'), COALESCE(sans::TEXT, 'null')
    FROM certificates";

fn row(r: &postgres::Row) -> RawRow {
    RawRow {
        serial_number: r.get(0),
        aki: r.get(1),
        serial_hex: r.get(2),
        subject: r.get(3),
        common_name: r.get(4),
        p11ca_sans: r.get(5),
        profile: r.get(6),
        not_before: r.get(7),
        expiry: r.get(8),
        pem: r.get(9),
        requester: r.get(10),
        auth_key: r.get(11),
        issued_at: r.get(12),
        status: r.get(13),
        reason: r.get(14),
        revoked_at: r.get::<_, Option<i64>>(15).filter(|t| *t > 0),
        ca_label: r.get(16),
        sans: r.get(17),
    }
}

/// Where the store is, for messages: rebuilt from what the driver's own parser read, so no
/// spelling of the password (in the URL, as `?password=`, quoted with spaces) can survive. A
/// string the parser refuses is not shown at all.
pub(crate) fn describe(dsn: &str) -> String {
    use postgres::config::Host;
    let Ok(c) = Config::from_str(&split_tls(dsn).0) else {
        return "(a connection string that does not parse; not shown)".into();
    };
    // An unencoded '@' in a URL password leaves part of it in the host name.
    let odd = |h: &Host| match h {
        Host::Tcp(name) => !name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ".-_:[]%".contains(ch)),
        Host::Unix(_) => false,
    };
    if c.get_hosts().iter().any(odd) {
        return "(a connection string whose host name does not parse; not shown)".into();
    }
    let ports = c.get_ports();
    let hosts: Vec<String> = c
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            };
            match ports.get(i).or(ports.first()) {
                Some(port) => format!("{host}:{port}"),
                None => host,
            }
        })
        .collect();
    format!(
        "postgres://{}@{}/{}",
        c.get_user().unwrap_or(""),
        hosts.join(","),
        c.get_dbname().unwrap_or("")
    )
}

impl Pg {
    /// Connect and migrate.
    pub fn open(dsn: &str) -> Result<Self> {
        let (dsn, tls) = tls_options(dsn)?;
        let mut config = Config::from_str(&dsn).map_err(|e| {
            Error::input(format!(
                "invalid connection string: {e}; use postgres://user:password@host:port/dbname"
            ))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let client = match tls {
            None => config.connect(NoTls),
            Some(roots) => {
                config.ssl_mode(SslMode::Require);
                let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| Error::input(format!("TLS for PostgreSQL: {e}")))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                config.connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
            }
        }
        .map_err(|e| err("cannot connect", e))?;
        let mut s = Self { client };
        s.migrate()?;
        Ok(s)
    }

    /// The client, for the audit log's own statements.
    pub(super) fn client_mut(&mut self) -> &mut Client {
        &mut self.client
    }

    fn migrate(&mut self) -> Result<()> {
        let mut tx = self
            .client
            .transaction()
            .map_err(|e| err("cannot start the migration", e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .map_err(|e| err("cannot lock for the migration", e))?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version BIGINT PRIMARY KEY, description TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .map_err(|e| err("cannot create schema_migrations", e))?;
        let applied: Vec<i64> = tx
            .query("SELECT version FROM schema_migrations", &[])
            .map_err(|e| err("cannot read schema_migrations", e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let todo = pending(&applied)?;
        if todo.is_empty() {
            return Ok(());
        }
        let columns: Vec<String> = tx
            .query(
                "SELECT column_name::TEXT FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'certificates'",
                &[],
            )
            .map_err(|e| err("cannot read the schema", e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let adopted = applied.is_empty() && !columns.is_empty();
        if adopted {
            // A store cfssl made (its own schema SQL, no p11ca version table).
            let sql = schema::adopt_sql(&columns, schema::Dialect::Postgres)?;
            tx.batch_execute(&sql)
                .map_err(|e| err("cannot adopt cfssl's certificates table", e))?;
        }
        for m in todo {
            if !adopted || m.version > schema::ADOPTED_AT {
                tx.batch_execute(m.postgres)
                    .map_err(|e| err(&format!("migration {} ({})", m.version, m.description), e))?;
            }
            tx.execute(
                "INSERT INTO schema_migrations (version, description, applied_at) VALUES ($1, $2, $3)",
                &[&m.version, &m.description, &now()],
            )
            .map_err(|e| err("cannot record the migration", e))?;
        }
        tx.commit()
            .map_err(|e| err("cannot commit the migration", e))
    }

    /// Whether the connection is closed.
    pub fn is_broken(&self) -> bool {
        self.client.is_closed()
    }

    /// Insert in one transaction.
    pub fn insert(&mut self, records: &[&CertRecord]) -> Result<()> {
        self.insert_then(records, |_| Ok(()))
    }

    /// Insert `records` and run `then` (the audit log's append) in the same transaction, so
    /// that both are committed with one round trip and one flush.
    pub(super) fn insert_then(
        &mut self,
        records: &[&CertRecord],
        then: impl FnOnce(&mut postgres::Transaction) -> Result<()>,
    ) -> Result<()> {
        let mut tx = self
            .client
            .transaction()
            .map_err(|e| err("cannot start a transaction", e))?;
        let st = tx
            .prepare(
                "INSERT INTO certificates (serial_number, authority_key_identifier, ca_label, status, reason, expiry, revoked_at, pem, issued_at, not_before, metadata, sans, common_name, serial_hex, subject, profile, requester, auth_key, p11ca_sans)
                 VALUES (convert_to($1, 'UTF8'), convert_to($2, 'UTF8'), ''::bytea, 'good'::bytea, 0, to_timestamp($3::BIGINT),
                 '0001-01-01 00:00:00+00', convert_to($4, 'UTF8'), to_timestamp($5::BIGINT), to_timestamp($6::BIGINT), 'null'::jsonb,
                 $7::TEXT::jsonb, $8, $9, $10, $11, $12, $13, $14)",
            )
            .map_err(|e| err("cannot prepare the insert", e))?;
        for r in records {
            let sans = serde_json::to_string(&r.sans).unwrap_or_else(|_| "[]".into());
            tx.execute(
                &st,
                &[
                    &r.serial_number,
                    &r.authority_key_identifier,
                    &r.not_after,
                    &r.pem,
                    &r.issued_at,
                    &r.not_before,
                    &cfssl_sans(&r.sans),
                    &r.common_name,
                    &r.serial_hex,
                    &r.subject,
                    &r.profile,
                    &r.requester,
                    &r.auth_key,
                    &sans,
                ],
            )
            .map_err(|e| err(&format!("cannot record serial {}", r.serial_hex), e))?;
        }
        then(&mut tx)?;
        tx.commit().map_err(|e| err("cannot commit", e))
    }

    /// List by notAfter.
    pub(super) fn list(&mut self, f: ListFilter) -> Result<Vec<RawRow>> {
        let sql = format!(
            "{SELECT} WHERE ($1::BIGINT IS NULL OR expiry <= to_timestamp($1::BIGINT)) AND (NOT $2 OR status = 'revoked'::bytea)
             ORDER BY expiry, serial_hex, serial_number"
        );
        self.client
            .query(&sql, &[&f.not_after_by, &f.revoked_only])
            .map(|rows| rows.iter().map(row).collect())
            .map_err(|e| err("cannot query", e))
    }

    /// `(AKI, subject)` of every certificate not revoked whose notAfter is after `after`.
    pub(super) fn live_after(
        &mut self,
        after: i64,
        keep: &mut dyn FnMut(AkiSubject),
    ) -> Result<()> {
        use postgres::fallible_iterator::FallibleIterator;
        let mut rows = self
            .client
            .query_raw(
                "SELECT convert_from(authority_key_identifier, 'UTF8'), subject FROM certificates
                 WHERE expiry > to_timestamp($1::BIGINT) AND status != 'revoked'::bytea",
                [&after],
            )
            .map_err(|e| err("cannot query", e))?;
        while let Some(r) = rows.next().map_err(|e| err("cannot query", e))? {
            keep((r.get(0), r.get(1)));
        }
        Ok(())
    }

    /// Find by the serial as given (decimal) or by the decimal form of its hex reading; both
    /// through the primary key (serial_number, authority_key_identifier).
    pub(super) fn find(&mut self, dec: &str, hex_as_dec: &str) -> Result<Vec<RawRow>> {
        let sql = format!(
            "{SELECT} WHERE serial_number IN (convert_to($1, 'UTF8'), convert_to($2, 'UTF8')) ORDER BY issued_at"
        );
        self.client
            .query(&sql, &[&dec, &hex_as_dec])
            .map(|rows| rows.iter().map(row).collect())
            .map_err(|e| err("cannot query", e))
    }

    /// Row count.
    pub fn count(&mut self) -> Result<u64> {
        self.client
            .query_one("SELECT count(*) FROM certificates", &[])
            .map(|r| r.get::<_, i64>(0) as u64)
            .map_err(|e| err("cannot count", e))
    }

    /// Give rows written without an AKI (cfssl 1.2 stores `''`) the one their PEM carries.
    pub(super) fn fill_missing_akis(&mut self) -> Result<()> {
        let rows = self
            .client
            .query(
                "SELECT convert_from(serial_number, 'UTF8'), convert_from(pem, 'UTF8') FROM certificates WHERE authority_key_identifier = ''::bytea",
                &[],
            )
            .map_err(|e| err("cannot query", e))?;
        for r in rows {
            let (serial, pem): (String, String) = (r.get(0), r.get(1));
            let Some(aki) = super::aki_of_pem(&pem) else {
                continue;
            };
            self.client
                .execute(
                    "UPDATE certificates SET authority_key_identifier = convert_to($2, 'UTF8')
                     WHERE serial_number = convert_to($1, 'UTF8') AND authority_key_identifier = ''::bytea
                     AND NOT EXISTS (SELECT 1 FROM certificates c WHERE c.serial_number = convert_to($1, 'UTF8') AND c.authority_key_identifier = convert_to($2, 'UTF8'))",
                    &[&serial, &aki],
                )
                .map_err(|e| err("cannot fill in a missing AKI", e))?;
        }
        Ok(())
    }

    /// Revoke all of `items` in one transaction, or none (rows locked as they are read);
    /// `then` runs in the same transaction with the outcomes.
    pub(super) fn revoke_many(
        &mut self,
        items: &[(String, String)],
        (code, at): (i64, i64),
        then: impl FnOnce(&[RevokeOutcome], &mut postgres::Transaction) -> Result<()>,
    ) -> Result<Vec<RevokeOutcome>> {
        let mut tx = self
            .client
            .transaction()
            .map_err(|e| err("cannot start a transaction", e))?;
        let get = tx
            .prepare(
                "SELECT convert_from(status, 'UTF8'), reason::BIGINT FROM certificates
                 WHERE serial_number = convert_to($1, 'UTF8') AND authority_key_identifier = convert_to($2, 'UTF8') FOR UPDATE",
            )
            .map_err(|e| err("cannot prepare the revocation", e))?;
        let set = tx
            .prepare(
                "UPDATE certificates SET status = 'revoked'::bytea, reason = $3::BIGINT::INT, revoked_at = to_timestamp($4::BIGINT)
                 WHERE serial_number = convert_to($1, 'UTF8') AND authority_key_identifier = convert_to($2, 'UTF8')",
            )
            .map_err(|e| err("cannot prepare the revocation", e))?;
        let mut out = Vec::with_capacity(items.len());
        for (serial, aki) in items {
            let found = tx
                .query_opt(&get, &[serial, aki])
                .map_err(|e| err("cannot read the certificate", e))?
                .map(|r| (r.get::<_, String>(0), r.get::<_, Option<i64>>(1)));
            match super::revoke_step(serial, aki, found, code)? {
                RevokeOutcome::Revoked => {
                    tx.execute(&set, &[serial, aki, &code, &at])
                        .map_err(|e| err(&format!("cannot revoke serial {serial}"), e))?;
                    out.push(RevokeOutcome::Revoked);
                }
                o => out.push(o),
            }
        }
        then(&out, &mut tx)?;
        tx.commit()
            .map_err(|e| err("cannot commit the revocation", e))?;
        Ok(out)
    }

    /// The revoked entries of CA `aki` for a CRL made at `now`.
    pub(super) fn crl_entries(&mut self, aki: &str, now: i64) -> Result<Vec<RevokedEntry>> {
        let last: Option<i64> = self
            .client
            .query_opt(
                "SELECT last_issued FROM p11ca_crl_numbers WHERE authority_key_identifier = $1",
                &[&aki],
            )
            .map_err(|e| err("cannot read the CRL state", e))?
            .map(|r| r.get(0));
        let keep_from = last.unwrap_or(0).min(now);
        let rows = self
            .client
            .query(
                "SELECT serial_hex, convert_from(serial_number, 'UTF8'), extract(epoch FROM revoked_at)::BIGINT, reason::BIGINT
                 FROM certificates WHERE authority_key_identifier = convert_to($1, 'UTF8') AND status = 'revoked'::bytea
                 AND expiry >= to_timestamp($2::BIGINT)",
                &[&aki, &keep_from],
            )
            .map_err(|e| err("cannot query the revoked certificates", e))?;
        rows.iter()
            .map(|r| {
                super::crl_entry(
                    r.get::<_, &str>(0),
                    r.get::<_, &str>(1),
                    r.get::<_, Option<i64>>(2),
                    r.get::<_, Option<i64>>(3),
                )
            })
            .collect()
    }

    /// Take the next CRL number of `aki`: one upsert, which locks the row, so replicas
    /// sharing the database never get the same number.
    pub(super) fn next_crl_number(&mut self, aki: &str, now: i64) -> Result<i64> {
        self.client
            .query_one(
                "INSERT INTO p11ca_crl_numbers (authority_key_identifier, last_number, last_issued) VALUES ($1, $2, $2)
                 ON CONFLICT (authority_key_identifier) DO UPDATE
                 SET last_number = GREATEST(p11ca_crl_numbers.last_number + 1, EXCLUDED.last_number),
                     last_issued = EXCLUDED.last_issued
                 RETURNING last_number",
                &[&aki, &now],
            )
            .map(|r| r.get(0))
            .map_err(|e| err("cannot take the next CRL number", e))
    }
}
