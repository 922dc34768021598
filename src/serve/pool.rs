//! The server's token sessions: opened once after the single login, lent to one request at a
//! time (a PKCS#11 session runs one operation at a time), and reopened when the token says a
//! session is gone.
//!
//! A session that went stale before `C_Sign` is replaced and the operation is run once more on
//! the new session; one that went stale *during* `C_Sign` is replaced but the request fails,
//! since the token may have signed (nothing is signed twice blindly).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cryptoki::context::Pkcs11;
use cryptoki::session::Session;
use cryptoki::slot::Slot;

use crate::error::{Error, Result, TokenFault};
use crate::token::{Module, TokenSummary, ck};

struct State {
    idle: Vec<Session>,
    /// Sessions lost and not yet reopened.
    missing: usize,
}

/// A fixed-size pool of read-write sessions on one token.
pub struct SessionPool {
    ctx: Pkcs11,
    slot: Slot,
    label: String,
    size: usize,
    state: Mutex<State>,
    cv: Condvar,
    borrows: AtomicUsize,
}

/// Debug builds: `P11CA_FAULT=serve-stale-session` (or `serve-stale-during-sign`) makes every
/// third borrowed session report itself gone before (or during) signing.
fn injected_fault(borrow: usize) -> Option<Error> {
    if borrow % 3 != 1 {
        return None;
    }
    if crate::fault::active("serve-stale-session") {
        return Some(
            Error::token("injected: the session is gone (P11CA_FAULT)")
                .with_fault(TokenFault::Stale),
        );
    }
    if crate::fault::active("serve-stale-during-sign") {
        return Some(
            Error::token("injected: the session went away during C_Sign (P11CA_FAULT); the request was not signed and may be retried")
                .with_fault(TokenFault::StaleDuringSign),
        );
    }
    None
}

impl SessionPool {
    /// Open `size` sessions on `token` (already logged in through another session of this
    /// process). Fewer may be opened if the token refuses more; none is an error.
    pub fn open(module: &Module, token: &TokenSummary, size: usize) -> Result<Self> {
        let ctx = module.context().clone();
        let mut idle = Vec::new();
        let mut first_err = None;
        for _ in 0..size.max(1) {
            match ctx.open_rw_session(token.slot) {
                Ok(s) => idle.push(s),
                Err(e) => {
                    first_err = Some(ck("cannot open a signing session", e));
                    break;
                }
            }
        }
        if idle.is_empty() {
            return Err(first_err.unwrap_or_else(|| Error::token("no signing session")));
        }
        Ok(Self {
            ctx,
            slot: token.slot,
            label: token.label.clone(),
            size: idle.len(),
            state: Mutex::new(State { idle, missing: 0 }),
            cv: Condvar::new(),
            borrows: AtomicUsize::new(0),
        })
    }

    /// Number of sessions.
    pub fn size(&self) -> usize {
        self.size
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn open_one(&self) -> Result<Session> {
        self.ctx.open_rw_session(self.slot).map_err(|e| {
            ck(
                &format!(
                    "cannot reopen a signing session on token \"{}\"",
                    self.label
                ),
                e,
            )
        })
    }

    fn take(&self, wait: Duration) -> Result<Session> {
        let deadline = Instant::now() + wait;
        let mut st = self.lock();
        loop {
            if let Some(s) = st.idle.pop() {
                return Ok(s);
            }
            if st.missing > 0 {
                st.missing -= 1;
                drop(st);
                return self.open_one().inspect_err(|_| {
                    self.lock().missing += 1;
                });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::token(format!(
                    "all {} token sessions stayed busy for {} s; try again",
                    self.size,
                    wait.as_secs()
                ))
                .with_fault(TokenFault::Stale));
            }
            st = self
                .cv
                .wait_timeout(st, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    fn put(&self, s: Session) {
        self.lock().idle.push(s);
        self.cv.notify_one();
    }

    fn lost(&self) {
        self.lock().missing += 1;
        self.cv.notify_one();
    }

    /// Run `f` with a session (waiting up to `wait` for one).
    pub fn with_session<T>(
        &self,
        wait: Duration,
        mut f: impl FnMut(&Session) -> Result<T>,
    ) -> Result<T> {
        let s = self.take(wait)?;
        let r = match injected_fault(self.borrows.fetch_add(1, Ordering::Relaxed)) {
            Some(e) => Err(e),
            None => f(&s),
        };
        let fault = match &r {
            Err(e) => e.fault(),
            Ok(_) => None,
        };
        let Some(fault) = fault else {
            self.put(s);
            return r;
        };
        // The session is gone: close what is left of it and open a new one.
        drop(s);
        let fresh = match self.open_one() {
            Ok(f) => f,
            Err(_) => {
                self.lost();
                return r;
            }
        };
        if fault == TokenFault::Stale {
            let again = f(&fresh);
            if again.as_ref().err().and_then(Error::fault).is_some() {
                drop(fresh);
                self.lost();
            } else {
                self.put(fresh);
            }
            return again;
        }
        self.put(fresh);
        r
    }
}
