//! One token's log-in, kept so that sessions can be got back: the token's label, serial and
//! current slot, and the user PIN (zeroized on drop). This is the single place where a session
//! that went stale is reopened, a dropped login is redone with the kept PIN, and a module that
//! lost its token is initialized again and the token found anew. The one-shot issue path, the
//! batch ([`crate::ca`] through `CaKey::reopen`) and the server's [`super::pool`] all use it.
//!
//! It does not find keys (that is [`super::key`]) and holds no policy.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use super::{Module, TokenSummary, ck, is_stale};
use crate::error::{Error, Kind, Result};
use crate::sync::lock;

/// A token's log-in: where the token is and the PIN to log in to it again.
pub struct Login {
    label: String,
    serial: String,
    /// The token's slot now (it can change when the module is initialized again).
    slot: Mutex<Slot>,
    /// The PIN of the first login, kept to log in again if the token drops the login; cleared
    /// once the token refuses it, so a changed PIN is never tried again and again towards a
    /// lockout.
    pin: Mutex<Option<AuthPin>>,
}

impl Login {
    /// The log-in of `token`, with no PIN kept yet.
    pub fn new(token: &TokenSummary) -> Self {
        Self {
            label: token.label.clone(),
            serial: token.serial.clone(),
            slot: Mutex::new(token.slot),
            pin: Mutex::new(None),
        }
    }

    /// Keep `pin` to log in again when the token drops the login.
    pub fn keep_pin(&self, pin: AuthPin) {
        *lock(&self.pin) = Some(pin);
    }

    /// Whether a PIN is kept.
    pub fn has_pin(&self) -> bool {
        lock(&self.pin).is_some()
    }

    /// The token's label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Open a read-write session in the token's current slot (the raw PKCS#11 error is kept so
    /// callers can tell a lost token from other failures).
    pub(super) fn open_raw(&self, ctx: &Pkcs11) -> std::result::Result<Session, CkError> {
        ctx.open_rw_session(*lock(&self.slot))
    }

    /// Log in again in `s` with the kept PIN (one attempt; a refused PIN is forgotten so no
    /// later call tries it again). `what` says what failed, for the error. Only the server
    /// logs in again without checking [`Login::has_pin`] first, hence the advice to restart it.
    pub fn relogin(&self, s: &Session, what: &str) -> Result<()> {
        let mut pin = lock(&self.pin);
        let Some(p) = pin.as_ref() else {
            return Err(Error::token(format!(
                "token \"{}\" dropped the login and no PIN is kept to log in again; restart p11ca serve",
                self.label
            )));
        };
        match s.login(UserType::User, Some(p)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
            Err(e) => {
                *pin = None;
                Err(ck(what, e))
            }
        }
    }

    /// After the module was initialized again: find the token by label and serial (its slot
    /// may have changed) and open a session in it, not yet logged in.
    pub(super) fn reconnect(&self, ctx: &Pkcs11) -> Result<Session> {
        let slot = ctx
            .get_slots_with_token()
            .map_err(|e| ck("cannot list the module's tokens", e))?
            .into_iter()
            .find(|s| {
                ctx.get_token_info(*s).is_ok_and(|i| {
                    i.label().trim_end() == self.label
                        && i.serial_number().trim_end() == self.serial
                })
            })
            .ok_or_else(|| Error::token(format!("token \"{}\" is not back yet", self.label)))?;
        let session = ctx
            .open_rw_session(slot)
            .map_err(|e| ck("cannot open a session after reconnecting", e))?;
        *lock(&self.slot) = slot;
        Ok(session)
    }

    /// A fresh session after the old one went stale, logged in again with the kept PIN (when
    /// one is kept). With `may_reinitialize` (only when no other thread is using the module:
    /// C_Finalize under another thread's call is undefined and crashes p11-kit's client), a
    /// module that lost its token is initialized again, and a token that is away (a network
    /// HSM or p11-kit server restarting) is waited for up to `P11CA_RECONNECT_SECS` seconds
    /// (default 5).
    pub fn reopen(&self, module: &Module, may_reinitialize: bool) -> Result<Session> {
        if !may_reinitialize {
            return self.try_reopen(module, false);
        }
        let wait = std::env::var("P11CA_RECONNECT_SECS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(5);
        let deadline = Instant::now() + Duration::from_secs(wait);
        loop {
            match self.try_reopen(module, true) {
                Ok(s) => return Ok(s),
                Err(e) if e.kind() == Kind::Token && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn try_reopen(&self, module: &Module, may_reinitialize: bool) -> Result<Session> {
        let seen = module.generation();
        let session = match self.open_raw(module.context()) {
            Ok(s) => s,
            // The module lost its token (device or server restarted): initialize the module
            // again, find the token by label and serial, log in.
            Err(CkError::Pkcs11(rv, _))
                if may_reinitialize && (is_stale(&rv) || rv == RvError::SlotIdInvalid) =>
            {
                module.reinitialize(seen)?;
                self.reconnect(module.context())?
            }
            Err(e) => return Err(ck("cannot reopen a session on the token", e)),
        };
        if self.has_pin() {
            self.relogin(&session, "cannot log in again after reopening the session")?;
        }
        Ok(session)
    }
}
