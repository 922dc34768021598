//! Group commit: one writer thread owns the store connection; request threads hand it their
//! record and wait until it is committed. Records that arrive while a commit is on its way go
//! into the next transaction together, so a durable commit per certificate does not cap the
//! signing rate.

use std::sync::mpsc;
use std::thread::JoinHandle;

use super::{CertRecord, DbConfig, Store};
use crate::error::{Error, Result};

/// At most this many records per transaction.
const MAX_BATCH: usize = 256;

struct Job {
    record: CertRecord,
    done: mpsc::SyncSender<Result<()>>,
}

/// The handle request threads use to record certificates.
pub struct Recorder {
    tx: Option<mpsc::Sender<Job>>,
    writer: Option<JoinHandle<()>>,
    what: String,
}

impl Recorder {
    /// Start the writer thread on `store` (reopened from `cfg` if its connection breaks).
    pub fn start(store: Store, cfg: DbConfig) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let what = cfg.describe();
        let writer = std::thread::Builder::new()
            .name("p11ca-db".into())
            .spawn(move || writer(store, &cfg, &rx))
            .ok();
        Self {
            tx: Some(tx),
            writer,
            what,
        }
    }

    /// Where the records go, for messages.
    pub fn describe(&self) -> &str {
        &self.what
    }

    /// Record one certificate; returns once it is committed (or failed to be).
    pub fn record(&self, record: CertRecord) -> Result<()> {
        let (done, wait) = mpsc::sync_channel(1);
        let gone = || {
            Error::output(format!(
                "certificate store {}: the writer has stopped",
                self.what
            ))
        };
        self.tx
            .as_ref()
            .ok_or_else(gone)?
            .send(Job { record, done })
            .map_err(|_| gone())?;
        wait.recv().map_err(|_| gone())?
    }

    /// Finish: every record handed in so far is written before this returns.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.tx.take();
        if let Some(h) = self.writer.take() {
            let _ = h.join();
        }
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
        let records: Vec<&CertRecord> = jobs.iter().map(|j| &j.record).collect();
        let mut result = store.insert(&records);
        if result.is_err() && store.is_broken() {
            // The connection went away (database restart): reconnect once and retry.
            if let Ok(s) = Store::open(cfg) {
                store = s;
                result = store.insert(&records);
            }
        }
        match result {
            Ok(()) => {
                for j in &jobs {
                    let _ = j.done.send(Ok(()));
                }
            }
            Err(e) if jobs.len() == 1 => {
                let _ = jobs[0].done.send(Err(e));
            }
            Err(_) => {
                // One bad record must not fail the others: retry each alone.
                for j in &jobs {
                    let _ = j.done.send(store.insert(&[&j.record]));
                }
            }
        }
    }
}
