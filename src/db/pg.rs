//! The PostgreSQL back end, for several signer replicas sharing one store. Migrations run
//! under a transaction-scoped advisory lock, so replicas that start together apply each
//! migration once.

use std::str::FromStr;
use std::time::Duration;

use postgres::config::SslMode;
use postgres::{Client, Config, NoTls};

use super::{COLUMNS, CertRecord, ListFilter, now, pending, select_sql};
use crate::error::{Error, Result};

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

fn row(r: &postgres::Row) -> CertRecord {
    let sans: String = r.get(5);
    CertRecord {
        serial_number: r.get(0),
        authority_key_identifier: r.get(1),
        serial_hex: r.get(2),
        subject: r.get(3),
        common_name: r.get(4),
        sans: serde_json::from_str(&sans).unwrap_or_default(),
        profile: r.get(6),
        not_before: r.get(7),
        not_after: r.get(8),
        pem: r.get(9),
        requester: r.get(10),
        auth_key: r.get(11),
        issued_at: r.get(12),
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
        for (version, description, sql) in pending(&applied)? {
            tx.batch_execute(sql)
                .map_err(|e| err(&format!("migration {version} ({description})"), e))?;
            tx.execute(
                "INSERT INTO schema_migrations (version, description, applied_at) VALUES ($1, $2, $3)",
                &[version, description, &now()],
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
        let mut tx = self
            .client
            .transaction()
            .map_err(|e| err("cannot start a transaction", e))?;
        let st = tx
            .prepare(&format!(
                "INSERT INTO certificates ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
            ))
            .map_err(|e| err("cannot prepare the insert", e))?;
        for r in records {
            let sans = serde_json::to_string(&r.sans).unwrap_or_else(|_| "[]".into());
            tx.execute(
                &st,
                &[
                    &r.serial_number,
                    &r.authority_key_identifier,
                    &r.serial_hex,
                    &r.subject,
                    &r.common_name,
                    &sans,
                    &r.profile,
                    &r.not_before,
                    &r.not_after,
                    &r.pem,
                    &r.requester,
                    &r.auth_key,
                    &r.issued_at,
                ],
            )
            .map_err(|e| err(&format!("cannot record serial {}", r.serial_hex), e))?;
        }
        tx.commit().map_err(|e| err("cannot commit", e))
    }

    /// List by notAfter.
    pub fn list(&mut self, f: ListFilter) -> Result<Vec<CertRecord>> {
        let sql = select_sql(
            "WHERE $1::BIGINT IS NULL OR not_after <= $1::BIGINT ORDER BY not_after, serial_hex",
        );
        self.client
            .query(&sql, &[&f.not_after_by])
            .map(|rows| rows.iter().map(row).collect())
            .map_err(|e| err("cannot query", e))
    }

    /// Find by decimal or (normalized) hex serial.
    pub fn find(&mut self, dec: &str, hex: &str) -> Result<Vec<CertRecord>> {
        let sql = select_sql(
            "WHERE serial_number = $1 OR ltrim(serial_hex, '0') = $2 ORDER BY issued_at",
        );
        self.client
            .query(&sql, &[&dec, &hex])
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
}
