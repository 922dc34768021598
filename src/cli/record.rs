//! Recording what the command line issues (`gencert -ca`, `sign`, `gencert -initca`) in the
//! same store `serve` records into, before the certificate is printed or written, each one
//! also an `issue` event in the store's audit log.

use p11ca::db::audit;
use p11ca::db::{CertRecord, DbConfig, Store};
use p11ca::{Error, Result};

/// The store a run records into, opened at its first record (so a run that issues nothing
/// leaves no database file behind).
pub(super) struct Recording {
    cfg: DbConfig,
    store: Option<Store>,
    /// Who asked: `cli:USER@HOST`.
    pub(super) requester: String,
}

impl Recording {
    /// The store chosen by `-db-config FILE`, `--db PATH`, or the default next to `-config`
    /// (as `serve` chooses it).
    pub(super) fn new(
        db_config: Option<&str>,
        db: Option<&str>,
        config: Option<&str>,
    ) -> Result<Self> {
        Ok(Self {
            cfg: DbConfig::resolve(db_config, db, config)?,
            store: None,
            requester: audit::cli_actor(),
        })
    }

    /// Where the records go, for messages.
    pub(super) fn describe(&self) -> String {
        self.cfg.describe()
    }

    /// The record of the certificate `der`, issued with `profile`.
    pub(super) fn record_of(&self, der: &[u8], profile: &str) -> Result<CertRecord> {
        CertRecord::from_der(der, profile, &self.requester, "")
    }

    /// Record one CA certificate that a library call returned as PEM (`what` names it in
    /// errors), with `profile`.
    pub(super) fn insert_pem(&mut self, pem: &str, what: &str, profile: &str) -> Result<()> {
        let der =
            p11ca::x509::pem::read_der(pem.as_bytes(), what, &["CERTIFICATE"], "certificate")?;
        let r = self.record_of(&der, profile)?;
        self.insert(&[&r])
    }

    /// Record `records` in one transaction (all or none). A broken PostgreSQL connection is
    /// opened again once.
    pub(super) fn insert(&mut self, records: &[&CertRecord]) -> Result<()> {
        let not_output =
            |e: Error| Error::new(e.kind(), format!("{e}; the certificate was not output"));
        let what = self.describe();
        let store = match &mut self.store {
            Some(s) => s,
            None => self
                .store
                .insert(Store::open(&self.cfg).map_err(not_output)?),
        };
        let events: Vec<_> = records
            .iter()
            .map(|r| audit::issue_event(r, &self.requester))
            .collect();
        // Records and their events in one commit; when that fails (a broken audit log), the
        // records alone, and the events after them: a failure there is a warning, the
        // certificates are recorded; `p11ca audit verify` shows the chain as it stands.
        if store
            .insert_audited(records, &events.iter().collect::<Vec<_>>())
            .is_ok()
        {
            return Ok(());
        }
        let mut r = store.insert(records);
        if r.is_err() && store.is_broken() {
            *store = Store::open(&self.cfg).map_err(not_output)?;
            r = store.insert(records);
        }
        r.map_err(|e| not_output(e.context(format!("certificate store {what}"))))?;
        if let Err(e) = store.audit_append(&events) {
            super::warn(&format!("certificate store {what}: {}", e.message()));
        }
        Ok(())
    }
}
