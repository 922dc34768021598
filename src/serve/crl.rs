//! The CRL `serve` publishes: built from the store and signed by the CA key when the server
//! starts, after every revocation, and again when half its lifetime has passed. Requests get
//! the last one built, so no request can make the token sign (or take a CRL number).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::ca::issue::{CaKey, Issuer};
use crate::db::Recorder;
use crate::db::audit::{AuditEvent, AuditKind};
use crate::error::Result;
use crate::sync::lock;
use crate::text;
use crate::token::pool::SessionPool;
use crate::x509::crl::{build_crl, ca_key_identifier};

/// How long building the CRL waits for a free session.
const SESSION_WAIT: Duration = Duration::from_secs(30);

/// A signed CRL and its times.
#[derive(Debug)]
pub struct Published {
    /// DER.
    pub der: Vec<u8>,
    /// thisUpdate, Unix seconds.
    pub this_update: i64,
    /// nextUpdate, Unix seconds.
    pub next_update: i64,
    /// cRLNumber.
    pub number: u64,
}

/// The current CRL and how long each one holds.
#[derive(Debug)]
pub struct CrlCache {
    current: Mutex<Option<Arc<Published>>>,
    /// Seconds from thisUpdate to nextUpdate.
    pub lifetime: i64,
    /// The CA's key identifier, lower-case hex (the AKI of what it issued).
    pub aki: String,
}

impl CrlCache {
    /// An empty cache for the CRLs of `ca` that hold `lifetime` seconds.
    pub fn new(ca: &x509_cert::Certificate, lifetime: i64) -> Result<Self> {
        Ok(Self {
            current: Mutex::new(None),
            lifetime,
            aki: text::hex(&ca_key_identifier(ca)?),
        })
    }

    /// The last CRL built.
    pub fn current(&self) -> Option<Arc<Published>> {
        lock(&self.current).clone()
    }

    /// Whether the current CRL is past half its lifetime at `now` (or there is none).
    pub fn due(&self, now: i64) -> bool {
        self.current()
            .is_none_or(|c| now >= c.this_update + self.lifetime / 2)
    }
}

/// Build and sign the CA's CRL from the store (entries and the next CRL number through the
/// writer's connection), verify it, publish it and note it in the audit log.
pub fn publish(
    ca_key: &CaKey,
    pool: &SessionPool,
    recorder: &Recorder,
    cache: &CrlCache,
    actor: &str,
) -> Result<Arc<Published>> {
    let ca = ca_key.certificate();
    let aki = cache.aki.clone();
    let now = crate::db::now();
    let key = aki.clone();
    let (entries, number) = recorder.with_store(move |s| {
        let entries = s.crl_entries(&key, now)?;
        Ok((entries, s.next_crl_number(&key)?))
    })?;
    let next_update = now + cache.lifetime;
    let der = pool.with_session(SESSION_WAIT, |session| {
        let issuer = Issuer::new(ca_key, session)?;
        build_crl(
            ca,
            entries.iter().cloned(),
            &number.to_be_bytes(),
            now,
            next_update,
            issuer.signer(),
        )
    })?;
    recorder.audit(AuditEvent::new(
        AuditKind::Crl,
        actor,
        json!({"aki": aki, "number": number.to_string(), "entries": entries.len(), "this_update": now, "next_update": next_update}),
    ));
    let p = Arc::new(Published {
        der,
        this_update: now,
        next_update,
        number,
    });
    *lock(&cache.current) = Some(p.clone());
    Ok(p)
}
