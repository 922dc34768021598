//! Issuing many certificates at the token's speed: one module, one login, one key lookup, and
//! N sessions signing in parallel, one thread per session (a PKCS#11 session runs one operation
//! at a time, so parallelism needs a session per worker).
//!
//! The sessions' threads do nothing but draw serials and call `C_Sign`: one builder thread
//! encodes every TBSCertificate ahead of them into a shared queue, and a verifier thread beside
//! each session checks its signatures in groups, so threads wake each other rarely.
//!
//! Inputs are taken from an iterator as the sessions need them ([`Batch::issue_stream`]), a few
//! dozen ahead, so the batch holds no more than that whatever the number of inputs.
//!
//! Each input gets its own result: a failure on one input is reported for that input and does
//! not stop the others. An input whose session went stale before `C_Sign` (or whose login or
//! key handle the token dropped) is tried once more in a reopened session; one lost inside
//! `C_Sign` is never retried: a signature that may have been made is never made twice.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};

use crate::ca::issue::{CaKey, ExtensionCache, Issuer, LeafRequest};
use crate::cfssl::config::Profile;
use crate::error::{Error, Kind, Result, TokenFault};
use crate::sync::lock;
use crate::token::{Module, Session, TokenSummary};
use crate::x509::build::{SignedCertificate, UnsignedCertificate};

/// One issued certificate (DER) and its warnings, or the error for that input.
pub type Issued = Result<(Vec<u8>, Vec<String>)>;

/// How many sessions to use: `requested` (default: the machine's cores), capped by the
/// number of inputs and the token's session limit.
pub fn session_count(
    module: &Module,
    token: &TokenSummary,
    requested: Option<usize>,
    inputs: usize,
) -> usize {
    if inputs <= 1
        || requested == Some(1)
        || crate::token::quirks::serializes_calls(module.path())
        || crate::token::quirks::for_token(token).one_session
    {
        return 1;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut n = requested.unwrap_or(cores).max(1).min(inputs);
    if let Some(left) = module.sessions_left(token.slot) {
        n = n.min(left.max(1));
    }
    n
}

/// What a batch issues with: the token, the CA key in it, and the profile.
#[derive(Clone, Copy)]
pub struct Batch<'a> {
    /// The module.
    pub module: &'a Module,
    /// The token the CA key is in.
    pub token: &'a TokenSummary,
    /// The CA certificate and key.
    pub ca: &'a CaKey,
    /// The signing profile.
    pub profile: &'a Profile,
}

/// `on_done` of [`Batch::issue_all`]: input `i` is finished, with the number done so far.
pub type OnDone<'f> = &'f (dyn Fn(usize, &Issued, usize) + Sync);

/// `on_issued` of [`Batch::issue_stream`]: input `i` is finished, with its result.
pub type OnIssued<'f> = &'f (dyn Fn(usize, Issued) + Sync);

/// The inputs of [`Batch::issue_stream`]: each with the caller's index for it, read lazily.
pub type Leaves<'a> = &'a mut (dyn Iterator<Item = (usize, LeafRequest)> + Send);

impl Batch<'_> {
    /// Issue a certificate for each of `leaves` with `jobs` parallel sessions. `on_done` is
    /// called from the worker as soon as input `i` is finished (so outputs can be written while
    /// the batch goes on) with the number done so far. Results are returned in input order.
    pub fn issue_all(
        &self,
        leaves: &[LeafRequest],
        jobs: usize,
        on_done: OnDone<'_>,
    ) -> Result<Vec<Issued>> {
        self.issue_all_with(leaves, jobs, on_done, None)
    }

    /// [`Batch::issue_all`], with the caller's (logged-in) session used by the first worker;
    /// with one input everything runs on the calling thread, so a one-shot run needs no thread
    /// and no second session.
    pub fn issue_all_with(
        &self,
        leaves: &[LeafRequest],
        jobs: usize,
        on_done: OnDone<'_>,
        login_session: Option<Session>,
    ) -> Result<Vec<Issued>> {
        let results: Vec<Mutex<Option<Issued>>> = leaves.iter().map(|_| Mutex::new(None)).collect();
        let done = AtomicUsize::new(0);
        let finish = |i: usize, r: Issued| {
            on_done(i, &r, done.fetch_add(1, Ordering::Relaxed) + 1);
            *lock(&results[i]) = Some(r);
        };
        let mut all = leaves.iter().cloned().enumerate();
        let open_error = self
            .issue_stream(&mut all, jobs, &finish, login_session)
            .err();
        let out: Vec<Issued> = results
            .into_iter()
            .map(|m| m.into_inner().unwrap_or_else(PoisonError::into_inner))
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(open_error
                        .clone()
                        .unwrap_or_else(|| Error::token("no signing session could be opened")))
                })
            })
            .collect();
        Ok(out)
    }

    /// Issue a certificate for each input `leaves` gives, read as the sessions need them (a
    /// few dozen ahead), so memory does not grow with the number of inputs. `on_issued` gets
    /// every input taken from `leaves`, exactly once, as soon as it is finished (in completion
    /// order). With one input everything runs on the calling thread in `login_session`.
    ///
    /// An error return means no session was left to sign with before `leaves` ran out: the
    /// inputs taken so far have all been given to `on_issued` (those not signed with this
    /// error), and the rest were not read.
    pub fn issue_stream(
        &self,
        leaves: Leaves<'_>,
        jobs: usize,
        on_issued: OnIssued<'_>,
        login_session: Option<Session>,
    ) -> Result<()> {
        let open_errors: Mutex<Vec<Error>> = Mutex::new(Vec::new());
        let first = leaves.next();
        let second = leaves.next();
        let exhausted = match (first, second) {
            (None, _) => return Ok(()),
            (Some((i, leaf)), None) => {
                if let Err(e) = self.one_shot(i, &leaf, login_session, on_issued) {
                    lock(&open_errors).push(e);
                }
                true
            }
            (Some(a), Some(b)) => {
                let mut all = [a, b].into_iter().chain(leaves);
                self.in_parallel(
                    &mut all,
                    jobs.max(1),
                    login_session,
                    on_issued,
                    &open_errors,
                )
            }
        };
        let open_errors = open_errors
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        match open_errors.into_iter().next() {
            Some(e) if !exhausted => Err(e),
            _ => Ok(()),
        }
    }

    /// One input: prepare, sign and verify right here, in the caller's session.
    fn one_shot(
        &self,
        i: usize,
        leaf: &LeafRequest,
        login_session: Option<Session>,
        finish: &(dyn Fn(usize, Issued) + Sync),
    ) -> Result<()> {
        let mut cache = ExtensionCache::default();
        let mut first = Some(queued(self.ca, self.profile, i, leaf, &mut cache));
        let deliver = |batch: Vec<Signed>| {
            for (i, signed, warnings) in batch {
                finish(i, signed.verified().map(|der| (der, warnings)));
            }
        };
        let session = SessionPlan {
            given: login_session,
            may_reinitialize: true,
        };
        let with = SessionWork {
            module: self.module,
            token: self.token,
            ca: self.ca,
            deliver: &deliver,
            finish,
        };
        sign_in_session(&with, session, &mut |_| first.take())
    }

    /// Many inputs: a builder thread encodes the certificates ahead into one queue that every
    /// session takes from (so no session is left with a backlog at the end), each session's
    /// thread only writes the serial and calls C_Sign, and a verifier thread beside each
    /// session checks what it signed. Nothing is handed on before its check passes. A session
    /// that cannot go on leaves its error in `open_errors`; inputs no session was left to take
    /// get that error. Returns whether `leaves` was read to its end.
    fn in_parallel(
        &self,
        leaves: Leaves<'_>,
        jobs: usize,
        login_session: Option<Session>,
        finish: &(dyn Fn(usize, Issued) + Sync),
        open_errors: &Mutex<Vec<Error>>,
    ) -> bool {
        let Batch {
            module,
            token,
            ca,
            profile,
        } = *self;
        let queue = WorkQueue::new(jobs);
        let exhausted = std::thread::scope(|scope| {
            let queue = &queue;
            let builder = scope.spawn(move || {
                let mut cache = ExtensionCache::default();
                for (i, leaf) in leaves {
                    if !queue.push(queued(ca, profile, i, &leaf, &mut cache)) {
                        queue.close();
                        return false;
                    }
                }
                queue.close();
                true
            });
            let mut first = login_session;
            for _ in 0..jobs {
                let given = first.take();
                scope.spawn(move || {
                    let r = std::thread::scope(|vs| {
                        let (to_verify, verify_queue) =
                            std::sync::mpsc::sync_channel::<Vec<Signed>>(4);
                        vs.spawn(move || {
                            for (i, signed, warnings) in verify_queue.into_iter().flatten() {
                                finish(i, signed.verified().map(|der| (der, warnings)));
                            }
                        });
                        let deliver = |batch: Vec<Signed>| {
                            // The verifier ends only with this sender, so this cannot fail;
                            // if it did, the inputs would be reported by the fallback below.
                            let _ = to_verify.send(batch);
                        };
                        let session = SessionPlan {
                            given,
                            may_reinitialize: jobs <= 1,
                        };
                        let with = SessionWork {
                            module,
                            token,
                            ca,
                            deliver: &deliver,
                            finish,
                        };
                        sign_in_session(&with, session, &mut |before_wait| queue.pop(before_wait))
                    });
                    if let Err(e) = r {
                        lock(open_errors).push(e);
                    }
                    queue.signer_left();
                });
            }
            builder.join().unwrap_or(false)
        });
        // Taken from `leaves` but never signed: every session stopped.
        let left = std::mem::take(&mut queue.lock().buf);
        if !left.is_empty() {
            let why = lock(open_errors)
                .first()
                .cloned()
                .unwrap_or_else(|| Error::token("no signing session could be opened"));
            for (i, _, _) in left {
                finish(i, Err(why.clone()));
            }
        }
        exhausted
    }
}

/// An input with its certificate signed and not yet verified.
type Signed = (usize, SignedCertificate, Vec<String>);
/// An input with its certificate prepared for signing (or why it cannot be), and its warnings,
/// waiting for a signing session.
type Queued = (usize, Result<UnsignedCertificate>, Vec<String>);

/// Prepare input `i`'s certificate (or say why it cannot be), with its warnings.
fn queued(
    ca: &CaKey,
    profile: &Profile,
    i: usize,
    leaf: &LeafRequest,
    cache: &mut ExtensionCache,
) -> Queued {
    let mut warnings = Vec::new();
    let r = ca.prepare(leaf, profile, cache, &mut warnings);
    (i, r, warnings)
}

/// The session a signer uses: the caller's (already logged in) or a new one, and whether a
/// lost module may be initialized again (only when no other thread uses it: C_Finalize under
/// another thread's call crashes p11-kit's client).
struct SessionPlan {
    given: Option<Session>,
    may_reinitialize: bool,
}

/// Signed certificates are handed to the verifier in groups of this many (or sooner, when the
/// signer would otherwise wait for work), so that the two threads wake each other rarely.
const HAND_ON: usize = 8;

/// Sign, in one session, every input `next` gives until it gives `None`; signed certificates
/// go to `deliver` for verification, failures straight to `finish`. `next` calls its argument
/// before it waits for work, so nothing signed sits undelivered meanwhile.
///
/// A session that goes stale before `C_Sign` is reopened and the input tried once more (with
/// a fresh serial); one lost inside `C_Sign` reports that input, never signs it again, and is
/// reopened for the inputs that follow. An error return means this session cannot go on.
fn sign_in_session(
    with: &SessionWork,
    plan: SessionPlan,
    next: &mut dyn FnMut(&mut dyn FnMut()) -> Option<Queued>,
) -> Result<()> {
    let mut out = Vec::with_capacity(HAND_ON);
    let r = sign_loop(with, plan, next, &mut out);
    if !out.is_empty() {
        (with.deliver)(out);
    }
    r
}

/// What one signing session works with: the token, the CA key, and where results go.
struct SessionWork<'a> {
    module: &'a Module,
    token: &'a TokenSummary,
    ca: &'a CaKey,
    /// Signed certificates, to be verified.
    deliver: &'a dyn Fn(Vec<Signed>),
    /// An input's final result.
    finish: &'a dyn Fn(usize, Issued),
}

fn sign_loop(
    with: &SessionWork,
    plan: SessionPlan,
    next: &mut dyn FnMut(&mut dyn FnMut()) -> Option<Queued>,
    out: &mut Vec<Signed>,
) -> Result<()> {
    let SessionWork {
        module,
        token,
        ca,
        finish,
        ..
    } = *with;
    // Sessions share the login made by the caller's session.
    let mut session = match plan.given {
        Some(s) => s,
        None => module.open_session(token, "cannot open a signing session")?,
    };
    let mut key = None;
    let mut pending: Option<(usize, UnsignedCertificate, Vec<String>)> = None;
    loop {
        let issuer = match key {
            Some(h) => Issuer::with_handle(ca, &session, h),
            None => Issuer::new(ca, &session),
        };
        let issuer = match issuer {
            Ok(i) => i,
            Err(e) => {
                if let Some((i, _, _)) = pending.take() {
                    finish(i, Err(e.clone()));
                }
                return Err(e);
            }
        };
        let stale = sign_until_stale(with, &issuer, &session, &mut pending, next, out);
        if !stale {
            return Ok(());
        }
        drop(issuer);
        match ca.reopen(module, plan.may_reinitialize) {
            Ok((s, h)) => {
                session = s;
                key = Some(h);
            }
            Err(e) => {
                // The token is gone for good: the pending input (if any) fails.
                if let Some((i, _, _)) = pending.take() {
                    finish(i, Err(e.clone()));
                }
                return Err(e);
            }
        }
    }
}

/// Sign with `issuer` in `session` until the inputs run out (false) or the session must be
/// reopened (true); an input to try once more in the new session is left in `pending`.
fn sign_until_stale(
    with: &SessionWork,
    issuer: &Issuer<'_>,
    session: &Session,
    pending: &mut Option<(usize, UnsignedCertificate, Vec<String>)>,
    next: &mut dyn FnMut(&mut dyn FnMut()) -> Option<Queued>,
    out: &mut Vec<Signed>,
) -> bool {
    let SessionWork {
        deliver, finish, ..
    } = *with;
    let mut stale = false;
    let mut retried = pending.is_some();
    loop {
        let (i, mut unsigned, warnings) = match pending.take() {
            Some(p) => p,
            None => {
                let mut hand_on = || {
                    if !out.is_empty() {
                        deliver(std::mem::take(out));
                    }
                };
                match next(&mut hand_on) {
                    None => break,
                    Some((i, Err(e), _)) => {
                        finish(i, Err(e));
                        continue;
                    }
                    Some((i, Ok(u), w)) => (i, u, w),
                }
            }
        };
        #[cfg(feature = "fault-injection")]
        inject_logout(i, session);
        #[cfg(feature = "fault-injection")]
        let signed = inject_stale(i).and_then(|()| issuer.sign(&mut unsigned));
        #[cfg(not(feature = "fault-injection"))]
        let signed = issuer.sign(&mut unsigned);
        let e = match signed {
            Ok(signed) => {
                retried = false;
                out.push((i, signed, warnings));
                if out.len() >= HAND_ON {
                    deliver(std::mem::take(out));
                }
                continue;
            }
            Err(e) => e,
        };
        let fault = e.fault().or_else(|| {
            (e.kind() == Kind::Token && crate::token::logged_out(session))
                .then_some(TokenFault::LoggedOut)
        });
        match fault {
            // Nothing was signed yet: reopen (logging in again) and try this input once more.
            Some(TokenFault::Stale | TokenFault::LoggedOut | TokenFault::KeyHandleInvalid)
                if !retried =>
            {
                *pending = Some((i, unsigned, warnings));
                stale = true;
                break;
            }
            // C_Sign itself failed: the token may have signed; report, never repeat, but
            // reopen for the inputs that follow.
            Some(_) => stale = true,
            _ => {}
        }
        retried = false;
        finish(i, Err(e));
        if stale {
            break;
        }
    }
    stale
}

/// Queued inputs between the builder thread and the signing sessions: every session takes
/// the next input when it is free. The builder fills the queue up to `HIGH` and then sleeps
/// until it is down to `LOW`, so it is woken once per many inputs, not once per signature.
struct WorkQueue {
    state: Mutex<QueueState>,
    /// Signers wait here for inputs.
    items: Condvar,
    /// The builder waits here for room.
    room: Condvar,
}

struct QueueState {
    buf: VecDeque<Queued>,
    /// The builder has prepared every input.
    closed: bool,
    /// Signing sessions still at work; with none left the builder stops.
    signers: usize,
    /// Signers waiting on `items`.
    waiting: usize,
    /// The builder waits on `room`.
    builder_waiting: bool,
}

impl WorkQueue {
    const HIGH: usize = 64;
    const LOW: usize = 16;

    fn new(signers: usize) -> Self {
        Self {
            state: Mutex::new(QueueState {
                buf: VecDeque::with_capacity(Self::HIGH),
                closed: false,
                signers,
                waiting: 0,
                builder_waiting: false,
            }),
            items: Condvar::new(),
            room: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        lock(&self.state)
    }

    /// Add one input (the builder). Returns false once no signer is left to take it (it stays
    /// in the queue, to be reported).
    fn push(&self, p: Queued) -> bool {
        let mut st = self.lock();
        st.buf.push_back(p);
        if st.signers == 0 {
            return false;
        }
        if st.waiting > 0 {
            self.items.notify_one();
        }
        while st.buf.len() >= Self::HIGH && st.signers > 0 {
            st.builder_waiting = true;
            st = self.room.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
        st.signers > 0
    }

    /// No more inputs will come (the builder).
    fn close(&self) {
        self.lock().closed = true;
        self.items.notify_all();
    }

    /// The next input, waiting for the builder if need be; `None` when all are taken.
    /// `before_wait` runs (without the lock) before any wait.
    fn pop(&self, before_wait: &mut dyn FnMut()) -> Option<Queued> {
        let mut st = self.lock();
        let mut handed_on = false;
        loop {
            if let Some(p) = st.buf.pop_front() {
                if st.builder_waiting && st.buf.len() <= Self::LOW {
                    st.builder_waiting = false;
                    self.room.notify_one();
                }
                return Some(p);
            }
            if st.closed {
                return None;
            }
            if !handed_on {
                drop(st);
                before_wait();
                handed_on = true;
                st = self.lock();
                continue;
            }
            st.waiting += 1;
            st = self.items.wait(st).unwrap_or_else(PoisonError::into_inner);
            st.waiting -= 1;
        }
    }

    /// A signing session has stopped for good (the builder stops when none is left).
    fn signer_left(&self) {
        let mut st = self.lock();
        st.signers = st.signers.saturating_sub(1);
        if st.signers == 0 {
            self.room.notify_all();
        }
    }
}

/// Tests log the application out of the token for real (C_Logout) before input 3 is signed,
/// as a token reset would (`logout-mid-batch`, `fault-injection` feature only).
#[cfg(feature = "fault-injection")]
fn inject_logout(i: usize, session: &Session) {
    static FIRED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if i == 3 && !FIRED.swap(true, Ordering::Relaxed) && crate::fault::active("logout-mid-batch") {
        let _ = session.logout();
    }
}

/// Tests simulate a session that goes stale before (`stale-before-sign`) or inside
/// (`stale-during-sign`) the signature of input 3 (`fault-injection` feature only).
#[cfg(feature = "fault-injection")]
fn inject_stale(i: usize) -> Result<()> {
    static FIRED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if i != 3 || FIRED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let fault = if crate::fault::active("stale-before-sign") {
        TokenFault::Stale
    } else if crate::fault::active("stale-during-sign") {
        TokenFault::StaleDuringSign
    } else {
        return Ok(());
    };
    FIRED.store(true, Ordering::Relaxed);
    Err(
        Error::token("injected: C_Sign returned CKR_SESSION_HANDLE_INVALID (P11CA_FAULT)")
            .with_fault(fault),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(i: usize) -> Queued {
        (i, Err(Error::input(format!("input {i}"))), Vec::new())
    }

    #[test]
    fn every_input_is_taken_exactly_once_by_competing_sessions() {
        let n = 2000;
        let q = WorkQueue::new(3);
        let taken = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..n {
                    assert!(q.push(item(i)));
                }
                q.close();
            });
            for _ in 0..3 {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    while let Some((i, _, _)) = q.pop(&mut || {}) {
                        mine.push(i);
                    }
                    taken.lock().unwrap().extend(mine);
                    q.signer_left();
                });
            }
        });
        let mut taken = taken.into_inner().unwrap();
        taken.sort_unstable();
        assert_eq!(taken, (0..n).collect::<Vec<_>>());
    }

    #[test]
    fn the_builder_stops_when_no_session_is_left() {
        let q = WorkQueue::new(1);
        std::thread::scope(|s| {
            let builder = s.spawn(|| (0..).take_while(|i| q.push(item(*i))).count());
            // The builder fills the queue and waits; the last session leaving wakes it.
            while q.lock().buf.len() < WorkQueue::HIGH {
                std::thread::yield_now();
            }
            q.signer_left();
            assert_eq!(builder.join().unwrap(), WorkQueue::HIGH - 1);
        });
        assert!(!q.push(item(0)));
    }

    #[test]
    fn a_session_hands_on_its_signatures_before_it_waits() {
        let q = WorkQueue::new(1);
        let mut calls = 0;
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(std::time::Duration::from_millis(50));
                q.push(item(7));
                q.close();
            });
            let got = q.pop(&mut || calls += 1).map(|(i, _, _)| i);
            assert_eq!(got, Some(7));
        });
        assert_eq!(calls, 1, "called once, before waiting");
        assert!(
            q.pop(&mut || panic!("nothing to wait for once closed"))
                .is_none()
        );
    }
}
