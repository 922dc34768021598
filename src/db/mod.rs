//! The issued-certificate store: every certificate p11ca issues is recorded here before it is
//! returned (serial, AKI, subject, SANs, profile, validity, PEM, requester, time), revoked here,
//! and the CRLs are made from it. The tables are cfssl's certdb (see [`schema`] and
//! docs/store.md), so cfssl's tools and p11ca share one store both ways.
//!
//! Two back ends with one schema: SQLite (the embedded default, a file next to the signing
//! config) and PostgreSQL (for several signer replicas), chosen by cfssl's db-config JSON
//! `{"driver": "sqlite3" | "postgres", "data_source": "..."}`. Schema migrations are applied at
//! open, under a lock, so replicas starting together do not race; `(serial, AKI)` is the
//! primary key, so a serial can never be recorded twice for one CA.
//!
//! Layer: above `cfssl` and `tls`; it must not use the server, the client or the CA workflows.

pub mod audit;
mod gotime;
pub mod ocsp;
mod pg;
mod recorder;
mod revoke;
pub mod schema;
mod sqlite;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use der::{Decode, Encode};
use serde::{Deserialize, Serialize};
use x509_cert::Certificate;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, SubjectAltName};

use crate::cfssl::json;
use crate::error::{Error, Result};
use crate::text;
use crate::x509::crl::{Reason, RevokedEntry};
use crate::x509::name;

pub use recorder::{RecordSender, Recorder};
pub use revoke::{RevokeOutcome, parse_aki, parse_serial};

/// The SQLite file name used next to the signing config when no database is named.
pub const DEFAULT_SQLITE_NAME: &str = "p11ca-certs.db";

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
    /// SQLite path is taken relative to the file's folder; a `file:` URI is kept as it is.
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
                // A `file:` URI goes to SQLite as it is (as with cfssl's driver).
                let p = if p.is_relative() && !raw.data_source.trim().starts_with("file:") {
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
    /// Only revoked certificates.
    pub revoked_only: bool,
}

/// A recorded certificate with its revocation state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Listed {
    /// What was recorded at issuance.
    #[serde(flatten)]
    pub record: CertRecord,
    /// cfssl's `ca_label` ("" when none).
    pub ca_label: String,
    /// cfssl's status: `good`, `revoked` (or `unknown`, which cfssl's certadd accepts).
    pub status: String,
    /// The CRLReason code (0 unless revoked with a reason).
    pub reason: i64,
    /// When it was revoked, Unix seconds.
    pub revoked_at: Option<i64>,
}

impl Listed {
    /// Whether the certificate is revoked.
    pub fn is_revoked(&self) -> bool {
        self.status == "revoked"
    }
}

/// A row as either back end reads it. cfssl's own rows lack p11ca's columns (and cfssl 1.2's
/// lack migration 002's): what is missing is read from the PEM.
#[derive(Default)]
struct RawRow {
    serial_number: String,
    aki: String,
    serial_hex: String,
    subject: String,
    common_name: String,
    p11ca_sans: String,
    profile: String,
    not_before: Option<i64>,
    expiry: Option<i64>,
    pem: String,
    requester: String,
    auth_key: String,
    issued_at: Option<i64>,
    status: String,
    reason: i64,
    revoked_at: Option<i64>,
    ca_label: String,
    sans: String,
}

impl RawRow {
    fn complete(self) -> Listed {
        let parsed =
            (self.serial_hex.is_empty() || self.subject.is_empty() || self.not_before.is_none())
                .then(|| pem_record(&self.pem))
                .flatten();
        let sans: Vec<String> = serde_json::from_str(&self.p11ca_sans)
            .or_else(|_| {
                serde_json::from_str::<Option<Vec<String>>>(&self.sans)
                    .map(Option::unwrap_or_default)
            })
            .unwrap_or_default();
        let mut record = CertRecord {
            serial_hex: self.serial_hex,
            subject: self.subject,
            common_name: self.common_name,
            sans,
            profile: self.profile,
            not_before: self.not_before.unwrap_or_default(),
            not_after: self.expiry.unwrap_or_default(),
            pem: self.pem,
            requester: self.requester,
            auth_key: self.auth_key,
            issued_at: self.issued_at.unwrap_or_default(),
            serial_number: self.serial_number,
            authority_key_identifier: self.aki,
        };
        if let Some(p) = parsed {
            if record.authority_key_identifier.is_empty() {
                record.authority_key_identifier = p.authority_key_identifier;
            }
            if record.serial_hex.is_empty() {
                record.serial_hex = p.serial_hex;
            }
            if record.subject.is_empty() {
                record.subject = p.subject;
            }
            if record.common_name.is_empty() {
                record.common_name = p.common_name;
            }
            if record.sans.is_empty() {
                record.sans = p.sans;
            }
            if self.not_before.is_none() {
                record.not_before = p.not_before;
            }
            if self.expiry.is_none() {
                record.not_after = p.not_after;
            }
        }
        let revoked = self.status == "revoked";
        Listed {
            record,
            ca_label: self.ca_label,
            status: self.status,
            reason: self.reason,
            revoked_at: self.revoked_at.filter(|_| revoked),
        }
    }
}

/// The record of a stored PEM certificate (for rows cfssl wrote).
fn pem_record(pem: &str) -> Option<CertRecord> {
    let der = crate::x509::pem::read_der(pem.as_bytes(), "store", &["CERTIFICATE"], "certificate")
        .ok()?;
    CertRecord::from_der(&der, "", "", "").ok()
}

/// The AKI (lowercase hex) of a stored PEM certificate, if it has one.
fn aki_of_pem(pem: &str) -> Option<String> {
    pem_record(pem)
        .map(|r| r.authority_key_identifier)
        .filter(|a| !a.is_empty())
}

/// cfssl's `sans` column: the certificate's DNS names only, as JSON, `null` when there are none
/// (Go marshals a nil slice so).
fn cfssl_sans(sans: &[String]) -> String {
    let dns: Vec<&String> = sans
        .iter()
        .filter(|s| !s.contains(['@', ':']) && s.parse::<std::net::IpAddr>().is_err())
        .collect();
    if dns.is_empty() {
        "null".into()
    } else {
        serde_json::to_string(&dns).unwrap_or_else(|_| "null".into())
    }
}

/// A certificate's issuer (AKI, lowercase hex) and subject: what a renewal keeps.
pub type AkiSubject = (String, String);

/// An open store with its schema migrated.
pub enum Store {
    /// SQLite.
    Sqlite(sqlite::Sqlite),
    /// PostgreSQL.
    Postgres(pg::Pg),
}

/// Call the same method on either back end.
macro_rules! each {
    ($self:ident, $b:ident => $e:expr) => {
        match $self {
            Store::Sqlite($b) => $e,
            Store::Postgres($b) => $e,
        }
    };
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
            && !sqlite::exists(p)
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
        each!(self, s => s.insert(records))
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
        Ok(self
            .list_status(filter)?
            .into_iter()
            .map(|l| l.record)
            .collect())
    }

    /// Certificates by notAfter (soonest first), with their revocation state.
    pub fn list_status(&mut self, filter: ListFilter) -> Result<Vec<Listed>> {
        let rows = each!(self, s => s.list(filter))?;
        Ok(rows.into_iter().map(RawRow::complete).collect())
    }

    /// `(AKI, subject)` of each certificate that is not revoked and expires after `after`
    /// (Unix seconds): what a certificate due before then may have been replaced by.
    ///
    /// Rows are read one at a time and only those in `wanted` kept, so that a check over a
    /// store of millions holds no more than the keys it asked about.
    pub fn live_after(
        &mut self,
        after: i64,
        wanted: &HashSet<AkiSubject>,
    ) -> Result<HashSet<AkiSubject>> {
        let mut found = HashSet::new();
        let mut keep = |k: AkiSubject| {
            if wanted.contains(&k) {
                found.insert(k);
            }
        };
        each!(self, s => s.live_after(after, &mut keep))?;
        Ok(found)
    }

    /// Certificates whose serial is `serial`: decimal, or hex (with or without colons or 0x).
    pub fn find(&mut self, serial: &str) -> Result<Vec<CertRecord>> {
        Ok(self
            .find_status(serial)?
            .into_iter()
            .map(|l| l.record)
            .collect())
    }

    /// [`Store::find`] with the revocation state.
    pub fn find_status(&mut self, serial: &str) -> Result<Vec<Listed>> {
        let s = serial.trim();
        let hexform = s
            .trim_start_matches("0x")
            .replace(':', "")
            .to_ascii_lowercase();
        let hexform = hexform.trim_start_matches('0');
        let hexform = if hexform.is_empty() { "0" } else { hexform };
        // The hex reading is looked up as its decimal form (cfssl's serial_number, the primary
        // key's first column), which every row has, cfssl's too; leading zeros do not count.
        let dec = text::unhex(&format!(
            "{}{hexform}",
            if hexform.len() % 2 == 1 { "0" } else { "" }
        ))
        .map(|b| text::decimal(&b));
        let rows = each!(self, db => db.find(s, dec.as_deref().unwrap_or(s)))?;
        Ok(rows.into_iter().map(RawRow::complete).collect())
    }

    /// Number of recorded certificates.
    pub fn count(&mut self) -> Result<u64> {
        each!(self, s => s.count())
    }

    /// Revoke the certificate `serial` (decimal, as cfssl stores it; see [`parse_serial`]) of
    /// the CA whose key identifier is `aki` (lowercase hex; see [`parse_aki`]), at `at` (Unix
    /// seconds), in one transaction. An unknown certificate, or one already revoked for
    /// another reason, is an error and nothing changes; one already revoked for this reason is
    /// left as it is and reported so.
    pub fn revoke(
        &mut self,
        serial: &str,
        aki: &str,
        reason: Reason,
        at: i64,
    ) -> Result<RevokeOutcome> {
        let items = [(serial.to_string(), aki.to_string())];
        Ok(self.revoke_many(&items, reason, at)?[0])
    }

    /// Revoke every `(serial, aki)` of `items` in ONE transaction: all of them, or (on the
    /// first unknown or conflicting one, or any failure) none. The outcome of each, in order.
    pub fn revoke_many(
        &mut self,
        items: &[(String, String)],
        reason: Reason,
        at: i64,
    ) -> Result<Vec<RevokeOutcome>> {
        self.revoke_recorded(items, reason, at, audit::RevokeAlso::default())
    }

    /// What [`Store::revoke`] would do now, changing nothing: for work worth doing only when
    /// the revocation will happen (signing its OCSP response). The same errors as the revocation.
    pub fn revoke_outcome(
        &mut self,
        serial: &str,
        aki: &str,
        reason: Reason,
    ) -> Result<RevokeOutcome> {
        let (serial, aki) = (parse_serial(serial)?, parse_aki(aki)?);
        // find_status also reads a decimal serial as hex: only the exact row counts.
        let found = self
            .find_status(&serial)?
            .into_iter()
            .find(|l| l.record.serial_number == serial && l.record.authority_key_identifier == aki)
            .map(|l| (l.status, Some(l.reason)));
        revoke_step(&serial, &aki, found, i64::from(reason.code()))
    }

    /// The revoked certificates of the CA whose key identifier is `aki`, for its CRL made at
    /// `now` (rows cfssl 1.2 wrote without an AKI are first given the one their PEM carries). An entry stays until a CRL made after its notAfter has listed it (RFC 5280 §3.3):
    /// it is dropped only once the previous CRL of this CA was itself made after its notAfter.
    pub fn crl_entries(&mut self, aki: &str, now: i64) -> Result<Vec<RevokedEntry>> {
        let aki = parse_aki(aki)?;
        each!(self, s => s.fill_missing_akis())?;
        each!(self, s => s.crl_entries(&aki, now))
    }

    /// The next CRL number of the CA `aki`: strictly greater than every number handed out
    /// before for it, by any process sharing the store (one atomic upsert), and at least `now`
    /// (Unix seconds), so it also stays above the numbers `p11ca gencrl` gives by default.
    pub fn next_crl_number(&mut self, aki: &str) -> Result<u64> {
        let aki = parse_aki(aki)?;
        let n = each!(self, s => s.next_crl_number(&aki, now()))?;
        u64::try_from(n).map_err(|_| Error::output("the stored CRL number is negative"))
    }
}

/// One certificate's revocation, given its stored `(status, reason)` (`None`: not stored).
fn revoke_step(
    serial: &str,
    aki: &str,
    found: Option<(String, Option<i64>)>,
    code: i64,
) -> Result<RevokeOutcome> {
    let name = |c: i64| {
        u8::try_from(c)
            .ok()
            .and_then(|c| Reason::ALL.into_iter().find(|r| r.code() == c))
            .map_or_else(|| format!("code {c}"), |r| r.name().to_string())
    };
    match found {
        None => Err(Error::input(format!(
            "serial {serial} of the CA with key identifier {aki} is not in the certificate store; nothing was revoked (`p11ca certs list` shows what is)"
        ))),
        Some((status, reason)) if status == "revoked" => {
            let had = reason.unwrap_or(0);
            if had == code {
                Ok(RevokeOutcome::AlreadyRevoked)
            } else {
                Err(Error::policy(format!(
                    "serial {serial} is already revoked with reason {}; it cannot be revoked again with reason {}; nothing was revoked",
                    name(had),
                    name(code)
                )))
            }
        }
        Some(_) => Ok(RevokeOutcome::Revoked),
    }
}

/// A CRL entry from a stored row: the serial from its hex form when p11ca wrote one, else
/// from cfssl's decimal; the reason when it is one a CRL can carry.
fn crl_entry(
    hex: &str,
    dec: &str,
    revoked_at: Option<i64>,
    reason: Option<i64>,
) -> Result<RevokedEntry> {
    let padded = if hex.len() % 2 == 1 {
        format!("0{hex}")
    } else {
        hex.to_string()
    };
    let serial = text::unhex(&padded)
        .filter(|s| !s.is_empty())
        .or_else(|| text::from_decimal(dec.trim()));
    let serial = serial.filter(|s| !s.is_empty()).ok_or_else(|| {
        Error::output(format!(
            "the store holds a revoked certificate whose serial \"{}\" is not a number; fix or delete that row",
            text::escape_for_log(dec)
        ))
    })?;
    let reason = reason
        .and_then(|c| u8::try_from(c).ok())
        .and_then(|c| Reason::ALL.into_iter().find(|r| r.code() == c));
    Ok(RevokedEntry {
        serial,
        revoked_at: revoked_at.unwrap_or(0),
        reason,
    })
}

/// Check the applied versions against [`schema::MIGRATIONS`]; the ones still to apply.
fn pending(applied: &[i64]) -> Result<Vec<&'static schema::Migration>> {
    let known = schema::CURRENT;
    if let Some(v) = applied.iter().find(|v| **v > known) {
        return Err(Error::output(format!(
            "the schema is at version {v}, newer than this p11ca knows ({known}); upgrade p11ca (nothing was changed)"
        )));
    }
    Ok(schema::MIGRATIONS
        .iter()
        .filter(|m| !applied.contains(&m.version))
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
        let c = DbConfig::from_json(
            br#"{"driver":"sqlite3","data_source":"file:/srv/c.db?mode=ro"}"#,
            "/etc/p/db.json",
        )
        .unwrap();
        assert_eq!(c, DbConfig::Sqlite("file:/srv/c.db?mode=ro".into()));
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
        // A lookup by serial is a search of the primary key, never a scan of the table.
        let Store::Sqlite(lite) = &mut s else {
            unreachable!()
        };
        let plan: Vec<String> = lite
            .conn_mut()
            .prepare(&format!(
                "EXPLAIN QUERY PLAN SELECT pem FROM certificates {}",
                sqlite::FIND
            ))
            .unwrap()
            .query_map(["256", "1"], |r| r.get(3))
            .unwrap()
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter()
                .any(|p| p.starts_with("SEARCH certificates USING INDEX sqlite_autoindex")),
            "{plan:?}"
        );
        assert_eq!(
            s.list(ListFilter {
                not_after_by: Some(19),
                revoked_only: false,
            })
            .unwrap()
            .len(),
            0
        );
        assert_eq!(s.list(ListFilter::default()).unwrap(), vec![rec]);
        let missing = DbConfig::Sqlite(d.path().join("none.db"));
        assert!(Store::open_existing(&missing).is_err());
    }

    #[test]
    fn revoke_states_and_crl_numbers() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Store::open(&DbConfig::Sqlite(d.path().join("c.db"))).unwrap();
        let rec = |serial: &str, hex: &str, not_after: i64| CertRecord {
            serial_number: serial.into(),
            authority_key_identifier: "ab".into(),
            serial_hex: hex.into(),
            subject: "CN=x".into(),
            common_name: "x".into(),
            sans: vec![],
            profile: "p".into(),
            not_before: 10,
            not_after,
            pem: "PEM".into(),
            requester: "r".into(),
            auth_key: String::new(),
            issued_at: 30,
        };
        let (a, b) = (rec("256", "0100", 4_000_000_000), rec("257", "0101", 100));
        s.insert(&[&a, &b]).unwrap();
        let t = 1_800_000_000;
        // What a revocation would do is told without doing it; "100" is decimal here, not
        // the hex serial 0x100 of the stored 256.
        let outcome = |s: &mut Store, serial: &str, reason| s.revoke_outcome(serial, "ab", reason);
        assert_eq!(
            outcome(&mut s, "0x100", Reason::KeyCompromise).unwrap(),
            RevokeOutcome::Revoked
        );
        assert!(outcome(&mut s, "100", Reason::KeyCompromise).is_err());
        assert_eq!(
            s.revoke("0x100", "AB", Reason::KeyCompromise, t).unwrap(),
            RevokeOutcome::Revoked
        );
        assert_eq!(
            outcome(&mut s, "256", Reason::KeyCompromise).unwrap(),
            RevokeOutcome::AlreadyRevoked
        );
        let e = outcome(&mut s, "256", Reason::Superseded).unwrap_err();
        assert!(e.message().contains("already revoked with reason"), "{e}");
        assert_eq!(
            s.revoke("256", "ab", Reason::KeyCompromise, t + 5).unwrap(),
            RevokeOutcome::AlreadyRevoked
        );
        let e = s.revoke("256", "ab", Reason::Superseded, t).unwrap_err();
        assert!(
            e.message()
                .contains("already revoked with reason keycompromise"),
            "{e}"
        );
        let e = s.revoke("999", "ab", Reason::Superseded, t).unwrap_err();
        assert!(e.message().contains("not in the certificate store"), "{e}");
        // All or nothing: the unknown last item undoes the first.
        let items = [
            ("257".to_string(), "ab".to_string()),
            ("999".to_string(), "ab".to_string()),
        ];
        assert!(s.revoke_many(&items, Reason::Superseded, t).is_err());
        let revoked = s
            .list_status(ListFilter {
                revoked_only: true,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(revoked.len(), 1);
        assert_eq!((revoked[0].reason, revoked[0].revoked_at), (1, Some(t)));
        // The expired certificate (notAfter 100) is listed on the first CRL, then dropped.
        s.revoke("257", "ab", Reason::Superseded, t).unwrap();
        let first = s.crl_entries("ab", t).unwrap();
        assert_eq!(first.len(), 2);
        assert_eq!(
            first.iter().find(|e| e.serial == [1, 0]).unwrap().reason,
            Some(Reason::KeyCompromise)
        );
        let n1 = s.next_crl_number("ab").unwrap();
        let n2 = s.next_crl_number("ab").unwrap();
        assert!(n2 > n1 && n1 >= now() as u64, "{n1} {n2}");
        assert_eq!(s.crl_entries("ab", now()).unwrap().len(), 1);
        assert!(s.crl_entries("zz", t).is_err());
    }
}
