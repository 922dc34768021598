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
use cryptoki::error::RvError;
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use crate::error::{Error, Kind, Result, TokenFault};
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
    /// The PIN of the start-up login, kept (zeroized on drop) to log in again if the token
    /// drops the login; cleared once the token refuses it, so a changed PIN is never tried
    /// again and again towards a lockout.
    pin: Mutex<Option<AuthPin>>,
}

/// Debug builds: `P11CA_FAULT=serve-stale-session` (or `serve-stale-during-sign`) makes every
/// third borrowed session report itself gone before (or during) signing;
/// `P11CA_FAULT=serve-logout` logs the server out of the token for real at the fourth borrow.
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
            pin: Mutex::new(None),
        })
    }

    /// Keep `pin` to log in again when the token drops the login.
    pub fn with_relogin_pin(self, pin: AuthPin) -> Self {
        *self.pin.lock().unwrap_or_else(|p| p.into_inner()) = Some(pin);
        self
    }

    /// Log in again after the token dropped the login (one attempt; a refused PIN is
    /// forgotten so no later request tries it again).
    fn relogin(&self, s: &Session) -> Result<()> {
        let mut pin = self.pin.lock().unwrap_or_else(|p| p.into_inner());
        let Some(p) = pin.as_ref() else {
            return Err(Error::token(format!(
                "token \"{}\" dropped the login and no PIN is kept to log in again; restart p11ca serve",
                self.label
            )));
        };
        match s.login(UserType::User, Some(p)) {
            Ok(()) | Err(cryptoki::error::Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
            Err(e) => {
                *pin = None;
                Err(ck(
                    &format!(
                        "token \"{}\" dropped the login and logging in again failed (not retried; restart p11ca serve)",
                        self.label
                    ),
                    e,
                ))
            }
        }
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
        let borrow = self.borrows.fetch_add(1, Ordering::Relaxed);
        if borrow == 3 && crate::fault::active("serve-logout") {
            // A real logout (for the whole application), as a token reset would cause.
            let _ = s.logout();
        }
        let r = match injected_fault(borrow) {
            Some(e) => Err(e),
            None => f(&s),
        };
        let fault = match &r {
            Err(e) if e.kind() == Kind::Token => e
                .fault()
                .or_else(|| crate::token::logged_out(&s).then_some(TokenFault::LoggedOut)),
            _ => None,
        };
        let Some(fault) = fault else {
            self.put(s);
            return r;
        };
        if fault == TokenFault::LoggedOut {
            // The session is fine; the token refused to sign until we log in again.
            let again = self.relogin(&s).and_then(|()| f(&s));
            self.put(s);
            return again;
        }
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
