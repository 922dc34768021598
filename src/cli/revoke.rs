//! `p11ca revoke`: cfssl's `revoke -db-config FILE -serial S -aki AKI [-reason R]`, plus
//! certificate files and a `--list` of `SERIAL AKI` lines. Everything named in one call is
//! revoked in one transaction: all of it, or (on any unknown or conflicting certificate) none.

use p11ca::db::audit::{self, RevokeAlso};
use p11ca::db::{CertRecord, DbConfig, RevokeOutcome, Store};
use p11ca::x509::crl::Reason;
use p11ca::x509::pem::read_der;
use p11ca::{Error, Result};

use super::args::RevokeArgs;
use super::read_input;

pub(super) fn revoke(a: &RevokeArgs) -> Result<()> {
    let reason: Reason = a
        .reason
        .trim()
        .parse()
        .map_err(|e: Error| e.context("-reason"))?;
    let items = targets(a)?;
    let cfg = DbConfig::resolve(
        a.db.db_config.as_deref(),
        a.db.db.as_deref(),
        a.db.config.as_deref(),
    )?;
    let mut store = Store::open_existing(&cfg)?;
    // The revocation and its audit records are one transaction.
    let actor = audit::cli_actor();
    let also = RevokeAlso {
        actor: Some(&actor),
        ocsp: &[],
    };
    let (outcomes, log_failure) = store
        .revoke_logged(&items, reason, p11ca::db::now(), also)
        .map_err(|e| e.context(format!("certificate store {}", cfg.describe())))?;
    if let Some(e) = log_failure {
        super::warn(&format!(
            "certificate store {}: {}",
            cfg.describe(),
            e.message()
        ));
    }
    let revoked = outcomes
        .iter()
        .filter(|o| **o == RevokeOutcome::Revoked)
        .count();
    let already = outcomes.len() - revoked;
    eprintln!(
        "p11ca: revoked {revoked} certificate{} ({}){}",
        if revoked == 1 { "" } else { "s" },
        reason.name(),
        if already > 0 {
            format!("; {already} already revoked for this reason, left as they were")
        } else {
            String::new()
        }
    );
    Ok(())
}

/// Every `(serial, aki)` the command line names, checked before the store is opened.
fn targets(a: &RevokeArgs) -> Result<Vec<(String, String)>> {
    let mut items = Vec::new();
    if let (Some(serial), Some(aki)) = (&a.serial, &a.aki) {
        items.push((
            p11ca::db::parse_serial(serial).map_err(|e| e.context("-serial"))?,
            p11ca::db::parse_aki(aki).map_err(|e| e.context("-aki"))?,
        ));
    }
    if let Some(list) = &a.list {
        let (bytes, name) = read_input(list)?;
        items.extend(parse_list(&bytes, &name)?);
    }
    for file in &a.certs {
        let (bytes, name) = read_input(file)?;
        let der = read_der(&bytes, &name, &["CERTIFICATE"], "certificate")?;
        let r = CertRecord::from_der(&der, "", "", "").map_err(|e| e.context(&name))?;
        if r.authority_key_identifier.is_empty() {
            return Err(Error::input(format!(
                "{name}: the certificate has no authority key identifier; revoke it with -serial and -aki"
            )));
        }
        items.push((r.serial_number, r.authority_key_identifier));
    }
    if items.is_empty() {
        return Err(Error::input(
            "nothing to revoke: give -serial and -aki, certificate files, or --list FILE",
        ));
    }
    Ok(items)
}

/// `SERIAL AKI` per line (blank lines and `#` comments skipped); a bad line is an error naming
/// it.
fn parse_list(bytes: &[u8], name: &str) -> Result<Vec<(String, String)>> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| Error::input(format!("{name}: not text; give SERIAL AKI per line")))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |e: Error| e.context(format!("{name}: line {}", i + 1));
        let mut words = line.split_whitespace();
        let (Some(serial), Some(aki), None) = (words.next(), words.next(), words.next()) else {
            return Err(Error::input(format!(
                "{name}: line {}: give SERIAL AKI (two words)",
                i + 1
            )));
        };
        out.push((
            p11ca::db::parse_serial(serial).map_err(at)?,
            p11ca::db::parse_aki(aki).map_err(at)?,
        ));
    }
    Ok(out)
}
