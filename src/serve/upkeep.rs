//! What `serve` does on its own while it runs: sign an audit checkpoint every interval (and
//! once when it stops) over the audit chain's head, with the CA key through one of the pool's
//! sessions, if anything was appended since the last one (on its own store connection, so the
//! writer thread never waits for the token); and rebuild the published CRL once half its
//! lifetime has passed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::api::Service;
use crate::ca::issue::Issuer;
use crate::db::{DbConfig, Store};
use crate::error::Result;

/// How long a checkpoint waits for a free session.
const SESSION_WAIT: Duration = Duration::from_secs(30);

/// The upkeep thread.
pub struct Upkeep {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The actor recorded on serve's checkpoints.
const ACTOR: &str = "serve";

/// Sign a checkpoint into `store` if records were appended since the last one; whether one was.
pub fn checkpoint(service: &Service, store: &mut Store) -> Result<bool> {
    if !store.audit_needs_checkpoint()? {
        return Ok(false);
    }
    service.pool.with_session(SESSION_WAIT, |session| {
        let issuer = Issuer::new(&service.ca, session)?;
        store.audit_checkpoint(issuer.signer(), ACTOR)
    })?;
    Ok(true)
}

impl Upkeep {
    /// Start: checkpoints every `every` into the store `db`, CRLs when due.
    pub fn start(service: Arc<Service>, db: DbConfig, every: Duration) -> Result<Self> {
        let mut store = Store::open(&db)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("p11ca-upkeep".into())
            .spawn(move || {
                let mut last = Instant::now();
                while !flag.load(Ordering::SeqCst) {
                    std::thread::park_timeout(Duration::from_millis(500));
                    if flag.load(Ordering::SeqCst) {
                        break;
                    }
                    if service.crl.due(crate::db::now())
                        && let Err(e) = service.publish_crl(ACTOR)
                    {
                        eprintln!("p11ca: warning: serve: CRL: {}", e.message());
                    }
                    if last.elapsed() < every {
                        continue;
                    }
                    last = Instant::now();
                    if let Err(e) = checkpoint(&service, &mut store) {
                        eprintln!("p11ca: warning: serve: audit checkpoint: {}", e.message());
                    }
                }
            })
            .ok();
        Ok(Self { stop, thread })
    }

    /// Stop the thread (the caller signs the last checkpoint once the writer is flushed).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}
