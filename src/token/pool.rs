//! The server's token sessions: opened once after the single login, lent to one request at a
//! time (a PKCS#11 session runs one operation at a time), and reopened when the token says a
//! session is gone.
//!
//! A session that went stale before `C_Sign` is replaced and the operation is run once more on
//! the new session; one that went stale *during* `C_Sign` is replaced but the request fails,
//! since the token may have signed (nothing is signed twice blindly).

#[cfg(feature = "fault-injection")]
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use cryptoki::context::Pkcs11;
use cryptoki::session::{Session, SessionState};
use cryptoki::types::AuthPin;

use super::login::Login;
use super::{Module, TokenSummary, ck};
use crate::error::{Error, Kind, Result, TokenFault};
use crate::sync::lock;

struct State {
    idle: Vec<Session>,
    /// Sessions lost and not yet reopened.
    missing: usize,
}

/// A fixed-size pool of read-write sessions on one token.
pub struct SessionPool {
    ctx: Pkcs11,
    path: std::path::PathBuf,
    /// The module's initialized state, shared with the [`Module`].
    initialized: std::sync::Arc<AtomicBool>,
    /// The token, its slot now and the kept PIN.
    token: Login,
    size: usize,
    /// Every use of the module holds this for reading; initializing the module again holds it
    /// for writing, so C_Finalize never runs under another thread's call.
    gate: RwLock<()>,
    /// The start-up login's session: kept open (closing every session would log out), and the
    /// one /health asks. `None` while the token is away.
    login_session: Mutex<Option<Session>>,
    /// A session could not be opened: the module may have lost its token.
    module_lost: AtomicBool,
    /// When the module was last initialized again (at most once a second).
    last_reinit: Mutex<Option<Instant>>,
    state: Mutex<State>,
    cv: Condvar,
    /// Sessions lent so far (fault injection counts them).
    #[cfg(feature = "fault-injection")]
    borrows: AtomicUsize,
}

/// With the `fault-injection` feature: `P11CA_FAULT=serve-stale-session` (or
/// `serve-stale-during-sign`) makes every third borrowed session report itself gone before (or
/// during) signing; `P11CA_FAULT=serve-logout` logs the server out of the token for real at the
/// fourth borrow (`s`), and `serve-health-logout` at every /health check.
#[cfg(feature = "fault-injection")]
fn injected_fault(s: &Session, borrow: usize) -> Option<Error> {
    if borrow == 3 && crate::fault::active("serve-logout") {
        // A real logout (for the whole application), as a token reset would cause.
        let _ = s.logout();
    }
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

/// Open `size` sessions on `token` (fewer if the token refuses more; none is an error).
fn open_sessions(ctx: &Pkcs11, token: &Login, size: usize) -> Result<Vec<Session>> {
    let mut idle = Vec::new();
    let mut first_err = None;
    for _ in 0..size.max(1) {
        match token.open_raw(ctx) {
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
    Ok(idle)
}

impl SessionPool {
    /// Open `size` sessions on `token` (already logged in through another session of this
    /// process). Fewer may be opened if the token refuses more; none is an error.
    pub fn open(
        module: &Module,
        token: &TokenSummary,
        size: usize,
        login: Session,
    ) -> Result<Self> {
        let ctx = module.context().clone();
        let token = Login::new(token);
        let idle = open_sessions(&ctx, &token, size)?;
        Ok(Self {
            ctx,
            path: module.path().to_path_buf(),
            initialized: module.initialized(),
            token,
            size: idle.len(),
            gate: RwLock::new(()),
            login_session: Mutex::new(Some(login)),
            module_lost: AtomicBool::new(false),
            last_reinit: Mutex::new(None),
            state: Mutex::new(State { idle, missing: 0 }),
            cv: Condvar::new(),
            #[cfg(feature = "fault-injection")]
            borrows: AtomicUsize::new(0),
        })
    }

    /// Keep `pin` to log in again when the token drops the login.
    pub fn with_relogin_pin(self, pin: AuthPin) -> Self {
        self.token.keep_pin(pin);
        self
    }

    /// Log in again after the token dropped the login (one attempt; a refused PIN is
    /// forgotten so no later request tries it again).
    fn relogin(&self, s: &Session) -> Result<()> {
        self.token.relogin(
            s,
            &format!(
                "token \"{}\" dropped the login and logging in again failed (not retried; restart p11ca serve)",
                self.token.label()
            ),
        )
    }

    /// Number of sessions.
    pub fn size(&self) -> usize {
        self.size
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn open_one(&self) -> Result<Session> {
        self.token.open_raw(&self.ctx).map_err(|e| {
            // The module may have lost its token: the next request initializes it again.
            self.module_lost.store(true, Ordering::Relaxed);
            // Nothing was signed without a session: marked so the request may be retried.
            ck(
                &format!(
                    "cannot open a signing session on token \"{}\"",
                    self.token.label()
                ),
                e,
            )
            .with_fault(TokenFault::Stale)
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

    /// Run `f` with a session (waiting up to `wait` for one). If the module lost its token (a
    /// network HSM or p11-kit server that restarted), it is initialized again, logged in with
    /// the kept PIN, and a request that had not reached C_Sign is tried once more.
    pub fn with_session<T>(
        &self,
        wait: Duration,
        mut f: impl FnMut(&Session) -> Result<T>,
    ) -> Result<T> {
        let r = self.with_session_once(wait, &mut f);
        let retry = matches!(&r, Err(e) if e.fault() == Some(TokenFault::Stale));
        if self.module_lost.load(Ordering::Relaxed) && self.reinitialize().is_ok() && retry {
            return self.with_session_once(wait, &mut f);
        }
        r
    }

    /// Whether the start-up login still holds (for /health). A login the token dropped is
    /// redone with the kept PIN, as a request would; only a session that is gone (the token
    /// went away) has the module initialized again.
    pub fn health(&self) -> Result<()> {
        #[cfg(feature = "fault-injection")]
        if crate::fault::active("serve-health-logout") {
            self.inject_logout();
        }
        match self.check_login() {
            LoginCheck::Holds => Ok(()),
            LoginCheck::LoggedOut(e) => {
                let again = {
                    let _in_use = self.gate.read().unwrap_or_else(PoisonError::into_inner);
                    let login = lock(&self.login_session);
                    login.as_ref().map_or(Err(e), |s| self.relogin(s))
                };
                again.and_then(|()| self.check_login().into_result())
            }
            LoginCheck::Unusable(e) => {
                self.module_lost.store(true, Ordering::Relaxed);
                if self.reinitialize().is_ok() {
                    return self.check_login().into_result();
                }
                Err(e)
            }
        }
    }

    /// A real C_Logout on the login session (`fault-injection` feature, `P11CA_FAULT`): as a
    /// token reset would leave it, with every session of the application logged out.
    #[cfg(feature = "fault-injection")]
    fn inject_logout(&self) {
        let _in_use = self.gate.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = lock(&self.login_session).as_ref() {
            let _ = s.logout();
        }
    }

    fn check_login(&self) -> LoginCheck {
        let _in_use = self.gate.read().unwrap_or_else(PoisonError::into_inner);
        let login = lock(&self.login_session);
        let Some(s) = login.as_ref() else {
            return LoginCheck::Unusable(Error::token(format!(
                "token \"{}\" is not reachable; p11ca serve keeps trying to reconnect",
                self.token.label()
            )));
        };
        match s.get_session_info() {
            Ok(i)
                if matches!(
                    i.session_state(),
                    SessionState::RwUser | SessionState::RoUser
                ) =>
            {
                LoginCheck::Holds
            }
            Ok(i) => LoginCheck::LoggedOut(Error::token(format!(
                "the token session is not logged in (state {:?})",
                i.session_state()
            ))),
            Err(e) => LoginCheck::Unusable(ck("the token session is unusable", e)),
        }
    }

    /// C_Finalize and C_Initialize with no other thread in the module, then find the token
    /// again (its slot may change), log in with the kept PIN and open every session anew. At
    /// most once a second; until it works, requests fail with a clear error.
    fn reinitialize(&self) -> Result<()> {
        {
            let mut last = lock(&self.last_reinit);
            if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
                return Err(Error::token("the token is being reconnected"));
            }
            *last = Some(Instant::now());
        }
        let _alone = self.gate.write().unwrap_or_else(PoisonError::into_inner);
        if !self.module_lost.load(Ordering::Relaxed) {
            return Ok(()); // another thread did it while this one waited
        }
        // Close the old sessions before C_Finalize: a handle closed afterwards could belong to
        // a new session.
        let mut st = self.lock();
        st.idle.clear();
        st.missing = self.size;
        *lock(&self.login_session) = None;
        super::initialize_again(&self.ctx, &self.path, &self.initialized)?;
        let login = self.token.reconnect(&self.ctx)?;
        self.relogin(&login)?;
        let idle = open_sessions(&self.ctx, &self.token, self.size)?;
        *lock(&self.login_session) = Some(login);
        st.missing = self.size - idle.len();
        st.idle = idle;
        self.module_lost.store(false, Ordering::Relaxed);
        self.cv.notify_all();
        eprintln!(
            "p11ca: serve: reconnected to token \"{}\" (module initialized again, logged in)",
            self.token.label()
        );
        Ok(())
    }

    fn with_session_once<T>(
        &self,
        wait: Duration,
        f: &mut impl FnMut(&Session) -> Result<T>,
    ) -> Result<T> {
        let _in_use = self.gate.read().unwrap_or_else(PoisonError::into_inner);
        let s = self.take(wait)?;
        #[cfg(feature = "fault-injection")]
        let injected = injected_fault(&s, self.borrows.fetch_add(1, Ordering::Relaxed));
        #[cfg(not(feature = "fault-injection"))]
        let injected = None;
        let r = match injected {
            Some(e) => Err(e),
            None => f(&s),
        };
        let fault = match &r {
            Err(e) if e.kind() == Kind::Token => e
                .fault()
                .or_else(|| super::logged_out(&s).then_some(TokenFault::LoggedOut)),
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

/// What /health found of the login session.
enum LoginCheck {
    /// Logged in.
    Holds,
    /// The session is there but the token dropped the login.
    LoggedOut(Error),
    /// The session is gone (or was never reopened after the token went away).
    Unusable(Error),
}

impl LoginCheck {
    fn into_result(self) -> Result<()> {
        match self {
            LoginCheck::Holds => Ok(()),
            LoginCheck::LoggedOut(e) | LoginCheck::Unusable(e) => Err(e),
        }
    }
}
