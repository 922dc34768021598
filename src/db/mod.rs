//! The issued-certificate store: every certificate `p11ca serve` issues is recorded here before
//! it is returned (serial, AKI, subject, SANs, profile, validity, PEM, requester, time).
//!
//! Two back ends with one schema: SQLite (the embedded default, a file next to the signing
//! config) and PostgreSQL (for several signer replicas), chosen by cfssl's db-config JSON
//! `{"driver": "sqlite3" | "postgres", "data_source": "..."}`. Schema migrations are applied at
//! open, under a lock, so replicas starting together do not race; `(serial, AKI)` is the
//! primary key, so a serial can never be recorded twice for one CA.
//!
//! Layer: above `cfssl` and `tls`; it must not use the server, the client or the CA workflows.

pub mod audit;
mod pg;
mod recorder;
mod sqlite;

use std::path::{Path, PathBuf};

use der::{Decode, Encode};
use serde::{Deserialize, Serialize};
use x509_cert::Certificate;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, SubjectAltName};

use crate::cfssl::json;
use crate::error::{Error, Result};
use crate::text;
use crate::x509::name;

pub use recorder::Recorder;

/// The SQLite file name used next to the signing config when no database is named.
pub const DEFAULT_SQLITE_NAME: &str = "p11ca-certs.db";

/// Schema migrations, in order: `(version, description, SQL)`. The SQL is plain enough for
/// both SQLite and PostgreSQL. Never edit an applied migration; add a new one.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "certificates table",
        "CREATE TABLE certificates (
        serial_number TEXT NOT NULL,
        authority_key_identifier TEXT NOT NULL,
        serial_hex TEXT NOT NULL,
        subject TEXT NOT NULL,
        common_name TEXT NOT NULL,
        sans TEXT NOT NULL,
        profile TEXT NOT NULL,
        not_before BIGINT NOT NULL,
        not_after BIGINT NOT NULL,
        pem TEXT NOT NULL,
        requester TEXT NOT NULL,
        auth_key TEXT NOT NULL,
        issued_at BIGINT NOT NULL,
        PRIMARY KEY (serial_number, authority_key_identifier)
    );
    CREATE INDEX certificates_not_after ON certificates (not_after);
    CREATE INDEX certificates_serial_hex ON certificates (serial_hex);",
    ),
    (2, "audit log", audit::MIGRATION_SQL),
];

/// The columns, in the order [`CertRecord`] reads and writes them.
const COLUMNS: &str = "serial_number, authority_key_identifier, serial_hex, subject, common_name, sans, profile, not_before, not_after, pem, requester, auth_key, issued_at";

/// One issued certificate as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertRecord {
    /// The serial number in decimal (as cfssl's certdb stores it).
    pub serial_number: String,
    /// The authority key identifier, lower-case hex.
    pub authority_key_identifier: String,
    /// The serial number in lower-case hex (as openssl prints it, without colons).
    pub serial_hex: String,
    /// The subject, RFC 4514.
    pub subject: String,
    /// The subject's CN ("" if none).
    pub common_name: String,
    /// subjectAltName entries as text (DNS names, IPs, emails, URIs).
    pub sans: Vec<String>,
    /// The signing profile.
    pub profile: String,
    /// notBefore, Unix seconds.
    pub not_before: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// The certificate, PEM.
    pub pem: String,
    /// Who asked: the peer address.
    pub requester: String,
    /// The `auth_keys` name the request was authenticated with ("" for plain /sign).
    pub auth_key: String,
    /// When it was issued, Unix seconds.
    pub issued_at: i64,
}

/// Now, Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl CertRecord {
    /// The record of the certificate `der`, issued with `profile` for `requester`.
    pub fn from_der(der: &[u8], profile: &str, requester: &str, auth_key: &str) -> Result<Self> {
        let cert = Certificate::from_der(der)
            .map_err(|e| Error::input(format!("cannot parse the issued certificate: {e}")))?;
        let tbs = cert.tbs_certificate();
        let serial = tbs.serial_number().as_bytes();
        let serial = match serial {
            [0, rest @ ..] if !rest.is_empty() => rest,
            s => s,
        };
        let aki = tbs
            .get_extension::<AuthorityKeyIdentifier>()
            .ok()
            .flatten()
            .and_then(|(_, a)| a.key_identifier)
            .map(|k| text::hex(k.as_bytes()))
            .unwrap_or_default();
        let common_name = tbs
            .subject()
            .iter()
            .filter(|atv| atv.oid == const_oid::db::rfc4519::CN)
            .find_map(|atv| name::value_text(&atv.value))
            .unwrap_or_default();
        let mut sans = Vec::new();
        if let Some((_, alt)) = tbs.get_extension::<SubjectAltName>().ok().flatten() {
            for g in alt.0 {
                match g {
                    GeneralName::DnsName(d) => sans.push(d.to_string()),
                    GeneralName::Rfc822Name(m) => sans.push(m.to_string()),
                    GeneralName::UniformResourceIdentifier(u) => sans.push(u.to_string()),
                    GeneralName::IpAddress(ip) => {
                        let b = ip.as_bytes();
                        if let Ok(a) = <[u8; 4]>::try_from(b) {
                            sans.push(std::net::IpAddr::from(a).to_string());
                        } else if let Ok(a) = <[u8; 16]>::try_from(b) {
                            sans.push(std::net::IpAddr::from(a).to_string());
                        }
                    }
                    _ => {}
                }
            }
        }
        let validity = tbs.validity();
        let pem = crate::x509::build::pem("CERTIFICATE", &cert.to_der().unwrap_or(der.to_vec()))?;
        Ok(Self {
            serial_number: text::decimal(serial),
            authority_key_identifier: aki,
            serial_hex: text::hex(serial),
            subject: tbs.subject().to_string(),
            common_name,
            sans,
            profile: profile.to_string(),
            not_before: validity.not_before.to_unix_duration().as_secs() as i64,
            not_after: validity.not_after.to_unix_duration().as_secs() as i64,
            pem,
            requester: requester.to_string(),
            auth_key: auth_key.to_string(),
            issued_at: now(),
        })
    }
}

/// Where the store is: cfssl's db-config, or a SQLite file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DbConfig {
    /// A SQLite database file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection string (`postgres://user:pass@host:port/db` or key=value form).
    Postgres(String),
}

#[derive(Deserialize)]
struct RawDbConfig {
    #[serde(default)]
    driver: String,
    #[serde(default)]
    data_source: String,
}

impl DbConfig {
    /// Parse cfssl's db-config JSON (`{"driver", "data_source"}`) read from `file`. A relative
    /// SQLite path is taken relative to the file's folder.
    pub fn from_json(bytes: &[u8], file: &str) -> Result<Self> {
        let raw: RawDbConfig = json::decode(bytes, file, &[])?;
        if raw.data_source.trim().is_empty() {
            return Err(Error::input(format!(
                "{file}: field \"data_source\" is missing or empty; give a SQLite file or a postgres:// URL"
            )));
        }
        match raw.driver.as_str() {
            "sqlite3" | "sqlite" => {
                let p = PathBuf::from(raw.data_source.trim());
                let p = if p.is_relative() {
                    Path::new(file)
                        .parent()
                        .map_or(p.clone(), |dir| dir.join(&p))
                } else {
                    p
                };
                Ok(Self::Sqlite(p))
            }
            "postgres" | "postgresql" => Ok(Self::Postgres(raw.data_source.trim().to_string())),
            "mysql" => Err(Error::input(format!(
                "{file}: driver \"mysql\" is not supported by p11ca; use \"sqlite3\" or \"postgres\""
            ))),
            other => Err(Error::input(format!(
                "{file}: field \"driver\": unknown driver \"{other}\"; use \"sqlite3\" or \"postgres\""
            ))),
        }
    }

    /// Where the store is, for messages (a PostgreSQL password is never shown).
    pub fn describe(&self) -> String {
        match self {
            Self::Sqlite(p) => format!("SQLite {}", p.display()),
            Self::Postgres(dsn) => format!("PostgreSQL {}", pg::describe(dsn)),
        }
    }

    /// Choose the store from the command line: `-db-config FILE` wins, then `--db PATH`
    /// (SQLite), then [`DEFAULT_SQLITE_NAME`] next to the signing config (or in the current
    /// folder without one).
    pub fn resolve(
        db_config: Option<&str>,
        db: Option<&str>,
        config: Option<&str>,
    ) -> Result<Self> {
        if let Some(f) = db_config {
            let bytes =
                std::fs::read(f).map_err(|e| Error::input(format!("{f}: cannot read: {e}")))?;
            return Self::from_json(&bytes, f);
        }
        if let Some(p) = db {
            return Ok(Self::Sqlite(PathBuf::from(p)));
        }
        let dir = config
            .and_then(|c| Path::new(c).parent())
            .filter(|d| !d.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        Ok(Self::Sqlite(dir.join(DEFAULT_SQLITE_NAME)))
    }
}

/// Which records [`Store::list`] returns.
#[derive(Clone, Copy, Debug, Default)]
pub struct ListFilter {
    /// Only certificates whose notAfter is at or before this time (Unix seconds).
    pub not_after_by: Option<i64>,
}

/// An open store with its schema migrated.
pub enum Store {
    /// SQLite.
    Sqlite(sqlite::Sqlite),
    /// PostgreSQL.
    Postgres(pg::Pg),
}

impl Store {
    /// Open (creating a SQLite file if needed) and migrate the schema.
    pub fn open(cfg: &DbConfig) -> Result<Self> {
        let what = cfg.describe();
        let r = match cfg {
            DbConfig::Sqlite(p) => sqlite::Sqlite::open(p).map(Self::Sqlite),
            DbConfig::Postgres(dsn) => pg::Pg::open(dsn).map(Self::Postgres),
        };
        r.map_err(|e| e.context(format!("certificate store {what}")))
    }

    /// Open an existing store for reading (a missing SQLite file is an error, not created).
    pub fn open_existing(cfg: &DbConfig) -> Result<Self> {
        if let DbConfig::Sqlite(p) = cfg
            && !p.exists()
        {
            return Err(Error::input(format!(
                "certificate store {} does not exist; name it with --db PATH, -db-config FILE or -config (the store is next to the signing config)",
                p.display()
            )));
        }
        Self::open(cfg)
    }

    /// Record `records` in one transaction: all or none.
    pub fn insert(&mut self, records: &[&CertRecord]) -> Result<()> {
        match self {
            Self::Sqlite(s) => s.insert(records),
            Self::Postgres(p) => p.insert(records),
        }
    }

    /// Whether the connection is gone (PostgreSQL), so that reopening may help.
    pub fn is_broken(&self) -> bool {
        match self {
            Self::Sqlite(_) => false,
            Self::Postgres(p) => p.is_broken(),
        }
    }

    /// Certificates by notAfter (soonest first).
    pub fn list(&mut self, filter: ListFilter) -> Result<Vec<CertRecord>> {
        match self {
            Self::Sqlite(s) => s.list(filter),
            Self::Postgres(p) => p.list(filter),
        }
    }

    /// Certificates whose serial is `serial`: decimal, or hex (with or without colons or 0x).
    pub fn find(&mut self, serial: &str) -> Result<Vec<CertRecord>> {
        let s = serial.trim();
        let hexform = s
            .trim_start_matches("0x")
            .replace(':', "")
            .to_ascii_lowercase();
        let hexform = hexform.trim_start_matches('0');
        let hexform = if hexform.is_empty() { "0" } else { hexform };
        // Leading zero bytes are not stored; compare without leading zero digits.
        match self {
            Self::Sqlite(db) => db.find(s, hexform),
            Self::Postgres(db) => db.find(s, hexform),
        }
    }

    /// Number of recorded certificates.
    pub fn count(&mut self) -> Result<u64> {
        match self {
            Self::Sqlite(s) => s.count(),
            Self::Postgres(p) => p.count(),
        }
    }
}

/// SQL that selects records (for both back ends).
fn select_sql(filter: &str) -> String {
    format!("SELECT {COLUMNS} FROM certificates {filter}")
}

/// Check the applied versions against [`MIGRATIONS`]; the ones still to apply.
fn pending(applied: &[i64]) -> Result<Vec<&'static (i64, &'static str, &'static str)>> {
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if let Some(v) = applied.iter().find(|v| **v > known) {
        return Err(Error::output(format!(
            "the schema is at version {v}, newer than this p11ca knows ({known}); upgrade p11ca"
        )));
    }
    Ok(MIGRATIONS
        .iter()
        .filter(|m| !applied.contains(&m.0))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_config_json() {
        let c = DbConfig::from_json(
            br#"{"driver":"sqlite3","data_source":"certs.db"}"#,
            "/etc/p/db.json",
        )
        .unwrap();
        assert_eq!(c, DbConfig::Sqlite("/etc/p/certs.db".into()));
        let c = DbConfig::from_json(
            br#"{"driver":"postgres","data_source":"postgres://u:secret@127.0.0.1:5432/certs?sslmode=disable"}"#,
            "db.json",
        )
        .unwrap();
        assert!(!c.describe().contains("secret"), "{}", c.describe());
        assert!(
            c.describe().contains("u@127.0.0.1:5432"),
            "{}",
            c.describe()
        );
        let e =
            DbConfig::from_json(br#"{"driver":"mysql","data_source":"x"}"#, "db.json").unwrap_err();
        assert!(e.message().contains("not supported"), "{e}");
        let e = DbConfig::from_json(br#"{"driver":"postgres"}"#, "db.json").unwrap_err();
        assert!(e.message().contains("data_source"), "{e}");
    }

    #[test]
    fn no_spelling_of_a_postgres_password_is_described() {
        for (dsn, shown) in [
            (
                "postgres://u:hunter2@db:5433/certs",
                "postgres://u@db:5433/certs",
            ),
            (
                "postgres://u@db/certs?password=hunter2",
                "postgres://u@db:5432/certs",
            ),
            (
                "postgres://u:hun%40ter2@db/certs",
                "postgres://u@db:5432/certs",
            ),
            (
                "postgres://u:hun@ter2@db/certs",
                "(a connection string whose host name does not parse; not shown)",
            ),
            (
                "host=/tmp user=x password=hunter2 dbname=z",
                "postgres://x@/tmp/z",
            ),
            (
                "host=db user=x password='hunter2 with space' dbname=z",
                "postgres://x@db/z",
            ),
            (
                "host=db password=hunter2 sslmode=require sslrootcert=/ca.pem",
                "postgres://@db/",
            ),
            (
                "postgres://u:hunter2@db/certs?bogus=1",
                "(a connection string that does not parse; not shown)",
            ),
        ] {
            let d = DbConfig::Postgres(dsn.into()).describe();
            assert!(!d.contains("hunter2") && !d.contains("ter2"), "{dsn}: {d}");
            assert_eq!(d, format!("PostgreSQL {shown}"), "{dsn}");
        }
    }

    #[test]
    fn resolve_default_next_to_config() {
        assert_eq!(
            DbConfig::resolve(None, None, Some("/etc/p11ca/ca-config.json")).unwrap(),
            DbConfig::Sqlite("/etc/p11ca/p11ca-certs.db".into())
        );
        assert_eq!(
            DbConfig::resolve(None, None, Some("ca-config.json")).unwrap(),
            DbConfig::Sqlite("./p11ca-certs.db".into())
        );
        assert_eq!(
            DbConfig::resolve(None, Some("x.db"), Some("c.json")).unwrap(),
            DbConfig::Sqlite("x.db".into())
        );
    }

    #[test]
    fn sqlite_roundtrip_and_migrations() {
        let d = tempfile::tempdir().unwrap();
        let cfg = DbConfig::Sqlite(d.path().join("c.db"));
        let mut s = Store::open(&cfg).unwrap();
        let rec = CertRecord {
            serial_number: "256".into(),
            authority_key_identifier: "ab".into(),
            serial_hex: "0100".into(),
            subject: "CN=x".into(),
            common_name: "x".into(),
            sans: vec!["a.example".into(), "10.0.0.1".into()],
            profile: "p".into(),
            not_before: 10,
            not_after: 20,
            pem: "PEM".into(),
            requester: "127.0.0.1:1".into(),
            auth_key: String::new(),
            issued_at: 30,
        };
        s.insert(&[&rec]).unwrap();
        // The primary key refuses a second record of the same serial and CA.
        assert!(s.insert(&[&rec]).is_err());
        drop(s);
        // Reopening migrates nothing and keeps the data.
        let mut s = Store::open_existing(&cfg).unwrap();
        assert_eq!(s.count().unwrap(), 1);
        assert_eq!(s.find("256").unwrap(), vec![rec.clone()]);
        assert_eq!(s.find("01:00").unwrap(), vec![rec.clone()]);
        assert_eq!(s.find("0x100").unwrap().len(), 1);
        assert!(s.find("257").unwrap().is_empty());
        assert_eq!(
            s.list(ListFilter {
                not_after_by: Some(19)
            })
            .unwrap()
            .len(),
            0
        );
        assert_eq!(s.list(ListFilter::default()).unwrap(), vec![rec]);
        let missing = DbConfig::Sqlite(d.path().join("none.db"));
        assert!(Store::open_existing(&missing).is_err());
    }
}
