//! `serve`'s signing threads: a few threads that do nothing but sign, fed by one queue.
//!
//! A connection thread prepares its certificate (the CSR's checks, the policy, the encoding)
//! and hands it to [`Signers::submit`] with what to do next; one of the signing threads
//! borrows a session from the pool for the serial and `C_Sign` and then runs that (for `/sign`:
//! verify the signature, hand the record to the store's writer, which answers). As in `sign
//! --batch`, signatures are made by a few long-running threads (the cores' number by default)
//! rather than by whichever of the connection threads holds a session: the cores stay busy
//! with signatures while requests wait for their commit, and a software token's signing stays
//! on threads that do nothing else (`ci/bench-serve`, docs/benchmarks.md).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::ca::issue::{CaKey, Issuer};
use crate::error::{Error, Result, TokenFault};
use crate::sync::lock;
use crate::token::pool::SessionPool;
use crate::x509::build::{SignedCertificate, UnsignedCertificate};

/// How long a signature may wait for a free session.
const SESSION_WAIT: Duration = Duration::from_secs(30);

/// The signing threads and their queue.
pub struct Signers {
    queue: Arc<Queue>,
    threads: Vec<JoinHandle<()>>,
}

struct Queue {
    jobs: Mutex<Jobs>,
    ready: Condvar,
}

#[derive(Default)]
struct Jobs {
    waiting: VecDeque<Job>,
    /// Signing threads asleep on `ready` (a job wakes one only if one is asleep).
    idle: usize,
    closed: bool,
}

struct Job {
    unsigned: UnsignedCertificate,
    then: Box<dyn FnOnce(Result<SignedCertificate>) + Send>,
}

impl Signers {
    /// Start `threads` signing threads (at least one) that sign with `ca`'s key through
    /// `pool`'s sessions.
    pub fn start(ca: Arc<CaKey>, pool: Arc<SessionPool>, threads: usize) -> Result<Self> {
        let queue = Arc::new(Queue {
            jobs: Mutex::new(Jobs::default()),
            ready: Condvar::new(),
        });
        let mut started = Self {
            queue,
            threads: Vec::new(),
        };
        for _ in 0..threads.max(1) {
            let (queue, ca, pool) = (started.queue.clone(), ca.clone(), pool.clone());
            let spawned = std::thread::Builder::new()
                .name("p11ca-sign".into())
                .spawn(move || work(&queue, &ca, &pool))
                .map_err(|e| Error::token(format!("cannot start a signing thread: {e}")))?;
            started.threads.push(spawned);
        }
        Ok(started)
    }

    /// Queue `unsigned` without waiting: `then` runs on the signing thread with the signed
    /// certificate (or the failure), and may go on with it there (verify it, hand it to the
    /// store), so the caller sleeps once for the whole of it rather than once per step.
    pub fn submit(
        &self,
        unsigned: UnsignedCertificate,
        then: impl FnOnce(Result<SignedCertificate>) + Send + 'static,
    ) {
        let then = Box::new(then);
        let wake = {
            let mut jobs = lock(&self.queue.jobs);
            if jobs.closed {
                drop(jobs);
                return then(Err(stopped()));
            }
            jobs.waiting.push_back(Job { unsigned, then });
            jobs.idle > 0
        };
        if wake {
            self.queue.ready.notify_one();
        }
    }
}

impl Drop for Signers {
    /// The jobs already queued are signed and answered; then the threads end.
    fn drop(&mut self) {
        lock(&self.queue.jobs).closed = true;
        self.queue.ready.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn stopped() -> Error {
    Error::token("the signing threads have stopped")
}

/// A signing thread: take jobs until the queue is closed and empty.
fn work(queue: &Queue, ca: &CaKey, pool: &SessionPool) {
    while let Some(job) = next(queue) {
        let mut unsigned = job.unsigned;
        (job.then)(sign_one(ca, pool, &mut unsigned));
    }
}

fn next(queue: &Queue) -> Option<Job> {
    let mut jobs = lock(&queue.jobs);
    loop {
        if let Some(job) = jobs.waiting.pop_front() {
            return Some(job);
        }
        if jobs.closed {
            return None;
        }
        jobs.idle += 1;
        jobs = queue
            .ready
            .wait(jobs)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        jobs.idle -= 1;
    }
}

/// The serial and `C_Sign` in a session borrowed from `pool` (the pool reopens a stale one).
fn sign_one(
    ca: &CaKey,
    pool: &SessionPool,
    unsigned: &mut UnsignedCertificate,
) -> Result<SignedCertificate> {
    pool.with_session(SESSION_WAIT, |session| {
        // A signature that holds its session a long while (`fault-injection` feature): the
        // test that /revoke does not queue behind issuance.
        #[cfg(feature = "fault-injection")]
        if crate::fault::active("serve-slow-sign") {
            std::thread::sleep(Duration::from_secs(2));
        }
        let r = Issuer::new(ca, session)?.sign(unsigned);
        if r.as_ref().err().and_then(Error::fault) != Some(TokenFault::KeyHandleInvalid) {
            return r;
        }
        // The token handed out a new handle (after a new login): find the key again.
        let key = ca.find_key(session)?;
        Issuer::with_handle(ca, session, key)?.sign(unsigned)
    })
}
