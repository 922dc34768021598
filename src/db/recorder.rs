//! Group commit: one writer thread owns the store connection; other threads hand it their
//! record with what to do once it is committed ([`RecordSender::submit`]: `serve` writes the
//! answer from there). Records that arrive while a commit is on its way go into the next
//! transaction together, so a durable commit per certificate does not cap the signing rate.
//!
//! A certificate and its audit event are committed together (one flush to disk, and never one
//! without the other).

use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use super::audit::AuditEvent;
use super::{CertRecord, DbConfig, Store};
use crate::error::{Error, Result};

/// At most this many records per transaction.
const MAX_BATCH: usize = 256;

/// What runs on the writer thread once a record is committed (or failed to be).
type Then = Box<dyn FnOnce(Result<()>) + Send>;

enum Job {
    /// A certificate and its audit event; `then` gets the outcome of their commit.
    Record {
        record: Box<CertRecord>,
        event: AuditEvent,
        then: Then,
    },
    /// An audit event nobody waits for (a refusal).
    Audit(AuditEvent),
    /// Answered once everything handed in before it is written.
    Barrier(mpsc::SyncSender<Result<()>>),
    /// Work on the store itself (revocation, CRL entries), after the records before it.
    Run(Box<dyn FnOnce(&mut Store) + Send>),
}

/// The handle request threads use to record certificates.
pub struct Recorder {
    sender: RecordSender,
    writer: Option<JoinHandle<()>>,
}

/// A handle that only hands in records and events ([`Recorder::sender`]), for closures that
/// run on other threads, the writer's own included: dropping it never waits for the writer
/// (dropping the [`Recorder`] does).
#[derive(Clone)]
pub struct RecordSender {
    tx: Option<mpsc::Sender<Job>>,
    what: Arc<str>,
}

impl Recorder {
    /// Start the writer thread on `store` (reopened from `cfg` if its connection breaks).
    pub fn start(store: Store, cfg: DbConfig) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let what = cfg.describe().into();
        let writer = std::thread::Builder::new()
            .name("p11ca-db".into())
            .spawn(move || writer(store, &cfg, &rx))
            .ok();
        Self {
            sender: RecordSender { tx: Some(tx), what },
            writer,
        }
    }

    /// Where the records go, for messages.
    pub fn describe(&self) -> &str {
        &self.sender.what
    }

    /// A handle for handing in records and events from other threads.
    pub fn sender(&self) -> RecordSender {
        self.sender.clone()
    }

    /// Append `event` to the audit log without waiting (a failure is reported on stderr).
    pub fn audit(&self, event: AuditEvent) {
        self.sender.audit(event);
    }

    /// Run `f` on the writer's store, after every record handed in before it, and return its
    /// result (one connection does all the writing, so revocations queue with issuance).
    pub fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (done, wait) = mpsc::sync_channel(1);
        let job = Job::Run(Box::new(move |s: &mut Store| {
            let _ = done.send(f(s));
        }));
        let gone = || self.sender.gone();
        self.sender
            .tx
            .as_ref()
            .ok_or_else(gone)?
            .send(job)
            .map_err(|_| gone())?;
        wait.recv().map_err(|_| gone())?
    }

    /// Wait until every record and event handed in so far is written.
    pub fn sync(&self) {
        let (done, wait) = mpsc::sync_channel(1);
        if let Some(tx) = &self.sender.tx
            && tx.send(Job::Barrier(done)).is_ok()
        {
            let _ = wait.recv();
        }
    }

    /// Finish: every record handed in so far is written before this returns.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.sender.tx.take();
        if let Some(h) = self.writer.take() {
            let _ = h.join();
        }
    }
}

impl RecordSender {
    /// Hand in one certificate and its audit event without waiting: `then` runs on the writer
    /// thread with the outcome of their commit (here, at once, if the writer has stopped).
    /// A caller that answers from `then` need not sleep until the commit and be woken for it.
    pub fn submit(
        &self,
        record: CertRecord,
        event: AuditEvent,
        then: impl FnOnce(Result<()>) + Send + 'static,
    ) {
        let job = Job::Record {
            record: Box::new(record),
            event,
            then: Box::new(then),
        };
        let refused = match &self.tx {
            Some(tx) => tx.send(job).err().map(|e| e.0),
            None => Some(job),
        };
        if let Some(Job::Record { then, .. }) = refused {
            then(Err(self.gone()));
        }
    }

    /// Append `event` to the audit log without waiting (a failure is reported on stderr).
    pub fn audit(&self, event: AuditEvent) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Job::Audit(event));
        }
    }

    fn gone(&self) -> Error {
        Error::output(format!(
            "certificate store {}: the writer has stopped",
            self.what
        ))
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn writer(mut store: Store, cfg: &DbConfig, rx: &mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let mut events = Vec::new();
        let mut records = Vec::new();
        let mut barriers = Vec::new();
        let mut runs = Vec::new();
        for j in jobs {
            match j {
                Job::Record {
                    record,
                    event,
                    then,
                } => records.push((*record, event, then)),
                Job::Audit(e) => events.push(e),
                Job::Barrier(done) => barriers.push(done),
                Job::Run(f) => runs.push(f),
            }
        }
        let ok = commit(&mut store, cfg, &records, &events);
        for ((_, _, then), ok) in records.into_iter().zip(ok) {
            then(ok);
        }
        for f in runs {
            f(&mut store);
        }
        for b in barriers {
            let _ = b.send(Ok(()));
        }
    }
}

type Pending = (CertRecord, AuditEvent, Then);

/// Insert `records` with their audit events and the `refusals` (events nobody waits for) in
/// one transaction. When that fails, insert the records alone (one at a time if need be) and
/// then append the events of those recorded, a failure there being only a warning. Each
/// record's result.
fn commit(
    store: &mut Store,
    cfg: &DbConfig,
    records: &[Pending],
    refusals: &[AuditEvent],
) -> Vec<Result<()>> {
    if records.is_empty() && refusals.is_empty() {
        return Vec::new();
    }
    let all: Vec<&CertRecord> = records.iter().map(|r| &r.0).collect();
    let events: Vec<&AuditEvent> = refusals
        .iter()
        .chain(records.iter().map(|r| &r.1))
        .collect();
    if store.insert_audited(&all, &events).is_ok() {
        return records.iter().map(|_| Ok(())).collect();
    }
    let ok = insert_alone(store, cfg, &all);
    let recorded = records.iter().zip(&ok).filter(|(_, ok)| ok.is_ok());
    let events: Vec<&AuditEvent> = refusals.iter().chain(recorded.map(|(r, _)| &r.1)).collect();
    if let Err(e) = store.audit_append_refs(&events) {
        eprintln!("p11ca: warning: {}", e.message());
    }
    ok
}

/// Insert `records` in one transaction (one at a time if that fails); each one's result.
fn insert_alone(store: &mut Store, cfg: &DbConfig, all: &[&CertRecord]) -> Vec<Result<()>> {
    if all.is_empty() {
        return Vec::new();
    }
    let mut result = store.insert(all);
    if result.is_err() && store.is_broken() {
        // The connection went away (database restart): reconnect once and retry.
        if let Ok(s) = Store::open(cfg) {
            *store = s;
            result = store.insert(all);
        }
    }
    match result {
        Ok(()) => all.iter().map(|_| Ok(())).collect(),
        Err(e) if all.len() == 1 => vec![Err(e)],
        // One bad record must not fail the others: retry each alone.
        Err(_) => all.iter().map(|r| store.insert(&[r])).collect(),
    }
}
