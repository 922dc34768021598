//! The PKCS#11 side: loading a module, choosing a token, logging in, getting sessions back
//! when the token goes away, and everything done with keys inside the token. This is the only
//! part of p11ca that talks to `cryptoki`: the rest uses the types re-exported here
//! ([`Session`], [`KeyHandle`], [`AuthPin`]). It builds on [`crate::x509`] (algorithms, public
//! keys, the [`crate::x509::Signer`] it implements) and must not use `cfssl`, `ca` or anything
//! above them.

pub mod attest;
pub mod certobj;
pub mod key;
pub mod login;
pub mod pin;
pub mod pool;
pub mod quirks;
pub mod signer;
pub mod uri;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::{MechanismInfo, MechanismType};
use cryptoki::session::UserType;
use cryptoki::slot::{Limit, Slot, TokenInfo};

use crate::error::{Error, Result, TokenFault};
use crate::sync::lock;
/// A PKCS#11 session (one operation at a time; closed on drop).
pub use cryptoki::session::Session;
/// A PIN, held in zeroizing memory.
pub use cryptoki::types::AuthPin;
pub use uri::Pkcs11Uri;

/// A key's object handle in the token (valid in every session of the application, until the
/// token hands out new ones, e.g. after a new login).
pub type KeyHandle = cryptoki::object::ObjectHandle;

/// Where p11ca looks for the p11-kit proxy module when none is named.
const PROXY_CANDIDATES: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/p11-kit-proxy.so",
    "/usr/lib/aarch64-linux-gnu/p11-kit-proxy.so",
    "/usr/lib64/p11-kit-proxy.so",
    "/usr/lib/p11-kit-proxy.so",
];

/// `CKR_PIN_INCORRECT`-style name of a PKCS#11 return value.
pub fn ckr_name(rv: &RvError) -> String {
    let debug = format!("{rv:?}");
    let mut out = String::from("CKR_");
    for (i, c) in debug.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// `C_Sign`-style name of a PKCS#11 function.
fn fn_name(f: &Function) -> String {
    format!("C_{f:?}")
}

/// Return values after which the session (or the whole token) is gone.
pub fn is_stale(rv: &RvError) -> bool {
    matches!(
        rv,
        RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::DeviceRemoved
            | RvError::DeviceError
            | RvError::TokenNotPresent
            | RvError::CryptokiNotInitialized
    )
}

/// True when `session` is open but no longer logged in: the token dropped the login (it was
/// reset, or every session of the application was closed). Tokens then report a refused
/// signature in different ways (CKR_USER_NOT_LOGGED_IN, or SoftHSM's CKR_OBJECT_HANDLE_INVALID
/// for a private key it no longer shows), so callers ask the session itself.
pub fn logged_out(session: &cryptoki::session::Session) -> bool {
    use cryptoki::session::SessionState;
    session.get_session_info().is_ok_and(|i| {
        matches!(
            i.session_state(),
            SessionState::RoPublic | SessionState::RwPublic
        )
    })
}

/// Turn a cryptoki error into a one-line token error: "C_Sign failed: CKR_... (what)".
/// Stale-session errors are marked so callers can reopen; in C_Sign they are marked as
/// possibly signed, so nobody repeats them blindly.
pub fn ck(what: &str, e: CkError) -> Error {
    match e {
        CkError::Pkcs11(rv, f) => {
            let err = Error::token(format!(
                "{what}: {} returned {}{}",
                fn_name(&f),
                ckr_name(&rv),
                rv_hint(&rv)
            ));
            if rv == RvError::UserNotLoggedIn {
                return err.with_fault(TokenFault::LoggedOut);
            }
            if matches!(rv, RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid)
                && matches!(f, Function::SignInit)
            {
                return err.with_fault(TokenFault::KeyHandleInvalid);
            }
            if !is_stale(&rv) {
                return err;
            }
            let during_sign = matches!(
                f,
                Function::Sign | Function::SignFinal | Function::SignUpdate
            );
            err.with_fault(if during_sign {
                TokenFault::StaleDuringSign
            } else {
                TokenFault::Stale
            })
        }
        other => Error::token(format!("{what}: {other}")),
    }
}

fn rv_hint(rv: &RvError) -> &'static str {
    match rv {
        RvError::TokenNotPresent | RvError::DeviceRemoved => {
            "; the token is not present: plug it in or start its service, then run again"
        }
        RvError::DeviceError => {
            "; the device reported an error: check that it is plugged in or reachable and its service runs (pcscd for smart cards, the TPM resource manager, the p11-kit server or HSM client)"
        }
        RvError::SessionHandleInvalid | RvError::SessionClosed => {
            "; the session was closed under us (token removed or module restarted); run again"
        }
        RvError::UserNotLoggedIn => "; log in with a PIN (P11CA_PIN or --pin-source)",
        RvError::KeyFunctionNotPermitted => "; the key does not allow this use (CKA_SIGN is false)",
        RvError::MechanismInvalid => "; the token does not support this mechanism",
        _ => "",
    }
}

/// A loaded and initialized PKCS#11 module.
pub struct Module {
    ctx: Pkcs11,
    path: PathBuf,
    /// Counts re-initializations, so threads that all saw the token go away re-initialize it
    /// once, not once each.
    generation: std::sync::Mutex<u64>,
    /// Whether the module is initialized now (false after a re-initialization that failed, so
    /// C_Finalize is not called on a module that is not initialized: p11-kit's client prints
    /// an assertion on stderr then). Shared with whoever else re-initializes the context.
    initialized: Arc<AtomicBool>,
}

/// C_Finalize (if `initialized`) and C_Initialize on a shared context (`path` names it in
/// errors). The context is
/// shared (sessions hold clones): finalizing through a clone ends the module's state for all of
/// them, which is the point; every session and login is gone afterwards. The caller makes sure
/// no other thread is inside the module.
pub(crate) fn initialize_again(ctx: &Pkcs11, path: &Path, initialized: &AtomicBool) -> Result<()> {
    if initialized.swap(false, Ordering::SeqCst) {
        let _ = ctx.clone().finalize();
    }
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {
            initialized.store(true, Ordering::SeqCst);
            Ok(())
        }
        Err(e) => Err(ck(
            &format!("cannot initialize PKCS#11 module {} again", path.display()),
            e,
        )),
    }
}

impl Module {
    /// C_Finalize now, and never unload the library: for a process that is about to exit.
    /// Unloading (dlclose, which runs the module's and its crypto library's destructors)
    /// only frees what the kernel reclaims at exit anyway, and takes a one-shot run time.
    pub fn finalize_for_exit(self) {
        // A reference that is never dropped keeps the library loaded.
        std::mem::forget(self.ctx.clone());
        drop(self); // C_Finalize, as in `Drop`
    }
}

impl Drop for Module {
    /// C_Finalize before the library is unloaded, as PKCS#11 asks. Besides closing a remote
    /// module's connection cleanly, it is faster: SoftHSM left initialized costs more at
    /// process exit than its C_Finalize (`ci/bench`'s one-shot profile shows it).
    fn drop(&mut self) {
        if self.initialized.swap(false, Ordering::SeqCst) {
            let _ = self.ctx.clone().finalize();
        }
    }
}

/// A module's library loaded but not initialized yet: [`Module::load`] in its two steps, for
/// benchmarks that time them apart. The library is unloaded once this and every [`Module`]
/// made from it are dropped.
pub struct Library {
    ctx: Pkcs11,
    path: PathBuf,
}

impl Library {
    /// Load (dlopen) the module at `path` and get its function list.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::token(format!(
                "PKCS#11 module {} does not exist; install it or fix --module / P11CA_MODULE",
                path.display()
            )));
        }
        let ctx = Pkcs11::new(path).map_err(|e| {
            let why = match e {
                CkError::LibraryLoading(le) => le.to_string(),
                other => other.to_string(),
            };
            Error::token(format!(
                "cannot load PKCS#11 module {}: {why}; is it a PKCS#11 module (.so exporting C_GetFunctionList)?",
                path.display()
            ))
        })?;
        Ok(Self {
            ctx,
            path: path.to_path_buf(),
        })
    }

    /// C_Initialize (a module already initialized in this process is fine).
    pub fn initialize(&self) -> Result<Module> {
        match self
            .ctx
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => {
                return Err(ck(
                    &format!("cannot initialize PKCS#11 module {}", self.path.display()),
                    e,
                ));
            }
        }
        Ok(Module {
            ctx: self.ctx.clone(),
            path: self.path.clone(),
            generation: std::sync::Mutex::new(0),
            initialized: Arc::new(AtomicBool::new(true)),
        })
    }
}

/// One token as the module reports it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TokenSummary {
    /// The slot the token is in now (SoftHSM renumbers slots: never persist this).
    pub slot: Slot,
    /// CKA label of the token.
    pub label: String,
    /// Serial number.
    pub serial: String,
    /// Manufacturer ID.
    pub manufacturer: String,
    /// Model.
    pub model: String,
    /// Whether the token is initialized.
    pub initialized: bool,
    /// Token flags in words.
    pub flags: Vec<&'static str>,
    /// The module's own manufacturer and description (C_GetInfo), e.g. to tell tpm2-pkcs11
    /// apart, whose tokens report the TPM's vendor as their manufacturer.
    pub library: String,
}

impl Module {
    /// Resolve the module path: explicit > URI `module-path` > `P11CA_MODULE` > p11-kit proxy.
    pub fn resolve_path(explicit: Option<&Path>, uri: Option<&Pkcs11Uri>) -> Result<PathBuf> {
        if let Some(p) = explicit {
            return Ok(p.to_path_buf());
        }
        if let Some(p) = uri.and_then(|u| u.module_path.as_deref()) {
            return Ok(PathBuf::from(p));
        }
        if let Some(p) = std::env::var_os("P11CA_MODULE").filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(p));
        }
        for c in PROXY_CANDIDATES {
            if Path::new(c).exists() {
                return Ok(PathBuf::from(c));
            }
        }
        Err(Error::token(
            "no PKCS#11 module given and the p11-kit proxy is not installed; name one with --module PATH or P11CA_MODULE (e.g. /usr/lib/softhsm/libsofthsm2.so)",
        ))
    }

    /// Load and initialize the module at `path`.
    pub fn load(path: &Path) -> Result<Self> {
        Library::open(path)?.initialize()
    }

    /// Whether the module is initialized, shared with others that re-initialize its context
    /// (the server's session pool).
    pub(crate) fn initialized(&self) -> Arc<AtomicBool> {
        self.initialized.clone()
    }

    /// The current initialization generation (see [`Module::reinitialize`]).
    pub fn generation(&self) -> u64 {
        *lock(&self.generation)
    }

    /// C_Finalize and C_Initialize again, for a module that lost its device or server (a
    /// restarted network HSM, a p11-kit server that came back). Every session and login is
    /// gone afterwards. `seen` is the generation the caller worked with: if another thread
    /// has re-initialized since, nothing is done.
    pub fn reinitialize(&self, seen: u64) -> Result<()> {
        let mut generation = lock(&self.generation);
        if *generation != seen {
            return Ok(());
        }
        initialize_again(&self.ctx, &self.path, &self.initialized)?;
        *generation += 1;
        Ok(())
    }

    /// The module's file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying cryptoki context.
    pub(crate) fn context(&self) -> &Pkcs11 {
        &self.ctx
    }

    /// Open another read-write session on `token`; it shares the login of the application's
    /// other sessions.
    pub fn open_session(&self, token: &TokenSummary, what: &str) -> Result<Session> {
        self.ctx
            .open_rw_session(token.slot)
            .map_err(|e| ck(what, e))
    }

    /// How many more sessions the token in `slot` allows, if it says (sessions already open,
    /// at least the login's, count against its limit).
    pub fn sessions_left(&self, slot: Slot) -> Option<usize> {
        let info = self.ctx.get_token_info(slot).ok()?;
        let Limit::Max(max) = info.max_session_count() else {
            return None;
        };
        let open = info.session_count().unwrap_or(1);
        Some(max.saturating_sub(open) as usize)
    }

    /// All tokens present in the module's slots.
    pub fn tokens(&self) -> Result<Vec<TokenSummary>> {
        let slots = match self.ctx.get_slots_with_token() {
            Ok(s) => s,
            // ykcs11 without pcscd, a TPM without its daemon: the device itself is missing.
            Err(CkError::Pkcs11(
                RvError::DeviceError | RvError::DeviceRemoved | RvError::TokenNotPresent,
                _,
            )) => {
                return Err(Error::token(format!(
                    "no token present in module {}: the module reports no reachable device; plug the token in and start its service (for a YubiKey: pcscd)",
                    self.path.display()
                )));
            }
            Err(e) => {
                return Err(ck(
                    &format!("cannot list slots of {}", self.path.display()),
                    e,
                ));
            }
        };
        let library = self
            .ctx
            .get_library_info()
            .map(|i| {
                format!(
                    "{} / {}",
                    i.manufacturer_id().trim_end(),
                    i.library_description().trim_end()
                )
            })
            .unwrap_or_default();
        let mut out = Vec::new();
        for slot in slots {
            let info = match self.ctx.get_token_info(slot) {
                Ok(i) => i,
                // A slot whose token vanished between the two calls is simply not listed.
                Err(CkError::Pkcs11(RvError::TokenNotPresent, _)) => continue,
                Err(e) => return Err(ck("cannot read token information", e)),
            };
            let mut t = summary(slot, &info);
            t.library = library.clone();
            out.push(t);
        }
        Ok(out)
    }

    /// Choose exactly one initialized token matching `sel` (all tokens match an empty selector).
    pub fn select_token(&self, sel: &Pkcs11Uri) -> Result<TokenSummary> {
        let all = self.tokens()?;
        if all.is_empty() {
            return Err(Error::token(format!(
                "no token present in module {}; plug the device in, start its service, or create a token (softhsm2-util --init-token)",
                self.path.display()
            )));
        }
        let matching: Vec<&TokenSummary> = all
            .iter()
            .filter(|t| t.initialized)
            .filter(|t| sel.token.as_ref().is_none_or(|l| *l == t.label))
            .filter(|t| sel.serial.as_ref().is_none_or(|s| *s == t.serial))
            .filter(|t| sel.model.as_ref().is_none_or(|m| *m == t.model))
            .filter(|t| {
                sel.manufacturer
                    .as_ref()
                    .is_none_or(|m| *m == t.manufacturer)
            })
            .filter(|t| sel.slot_id.is_none_or(|id| id == t.slot.id()))
            .collect();
        let listing = || {
            all.iter()
                .map(|t| {
                    format!(
                        "\"{}\" (serial {}{})",
                        t.label,
                        t.serial,
                        if t.initialized {
                            ""
                        } else {
                            ", not initialized"
                        }
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        match matching.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Error::token(format!(
                "no token matches {sel}; tokens in {}: {}; choose one with --token LABEL",
                self.path.display(),
                listing()
            ))),
            many => Err(Error::token(format!(
                "{} tokens match {sel}: {}; name one by --token 'pkcs11:token=LABEL;serial=SERIAL'",
                many.len(),
                many.iter()
                    .map(|t| format!("\"{}\" (serial {})", t.label, t.serial))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Mechanisms the token in `slot` offers, with their info.
    pub fn mechanisms(&self, slot: Slot) -> Result<Vec<(MechanismType, MechanismInfo)>> {
        let list = self
            .ctx
            .get_mechanism_list(slot)
            .map_err(|e| ck("cannot read the token's mechanism list", e))?;
        let mut out = Vec::with_capacity(list.len());
        for m in list {
            if let Ok(info) = self.ctx.get_mechanism_info(slot, m) {
                out.push((m, info));
            }
        }
        Ok(out)
    }

    /// What the token can do for p11ca, in one line.
    pub fn capabilities(&self, t: &TokenSummary) -> String {
        let Ok(mechs) = self.mechanisms(t.slot) else {
            return "mechanisms unreadable".into();
        };
        let get = |m: MechanismType| mechs.iter().find(|(x, _)| *x == m).map(|(_, i)| i);
        let mut caps = Vec::new();
        if let Some(i) = get(MechanismType::RSA_PKCS_KEY_PAIR_GEN) {
            let sign = if get(MechanismType::SHA256_RSA_PKCS).is_some() {
                "CKM_SHA256_RSA_PKCS"
            } else if get(MechanismType::RSA_PKCS).is_some() {
                "CKM_RSA_PKCS+DigestInfo"
            } else {
                "no RSA signing"
            };
            caps.push(format!(
                "RSA {}-{} bits ({sign})",
                i.min_key_size(),
                i.max_key_size()
            ));
        }
        if let Some(i) = get(MechanismType::ECC_KEY_PAIR_GEN) {
            let sign = if get(MechanismType::ECDSA).is_some() {
                "CKM_ECDSA"
            } else {
                "no ECDSA signing"
            };
            caps.push(format!(
                "EC {}-{} bits ({sign})",
                i.min_key_size(),
                i.max_key_size()
            ));
        }
        if caps.is_empty() {
            "cannot generate RSA or EC keys".into()
        } else {
            caps.join("; ")
        }
    }

    /// Open a read-write session on the token and log the user in (exactly one C_Login).
    pub fn login(&self, token: &TokenSummary, pin: &AuthPin) -> Result<Session> {
        self.login_as(token, UserType::User, pin)
    }

    /// [`Module::login`] as the security officer (for tokens whose key generation needs it).
    pub fn login_so(&self, token: &TokenSummary, pin: &AuthPin) -> Result<Session> {
        self.login_as(token, UserType::So, pin)
    }

    fn login_as(&self, token: &TokenSummary, who: UserType, pin: &AuthPin) -> Result<Session> {
        let session = self.ctx.open_rw_session(token.slot).map_err(|e| {
            ck(
                &format!("cannot open a session on token \"{}\"", token.label),
                e,
            )
        })?;
        let who_name = if matches!(who, UserType::So) {
            "SO PIN"
        } else {
            "PIN"
        };
        match session.login(who, Some(pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
                let state = self
                    .ctx
                    .get_token_info(token.slot)
                    .map(|i| pin_state(&i))
                    .unwrap_or_default();
                Err(Error::token(format!(
                    "wrong {who_name} for token \"{}\"{state}; p11ca tried once and will not retry",
                    token.label
                )))
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(Error::token(format!(
                "the user PIN of token \"{}\" is locked; {}",
                token.label,
                quirks::unlock_hint(&quirks::for_token(token))
            ))),
            Err(e) => Err(ck(
                &format!("cannot log in to token \"{}\"", token.label),
                e,
            )),
        }
    }
}

fn pin_state(i: &TokenInfo) -> String {
    if i.user_pin_locked() {
        "; the PIN is now LOCKED".into()
    } else if i.user_pin_final_try() {
        "; one more wrong PIN will LOCK the token".into()
    } else if i.user_pin_count_low() {
        "; the token reports few tries left before it locks".into()
    } else {
        String::new()
    }
}

fn summary(slot: Slot, i: &TokenInfo) -> TokenSummary {
    let mut flags = Vec::new();
    let pairs: [(bool, &'static str); 9] = [
        (i.token_initialized(), "initialized"),
        (i.login_required(), "login-required"),
        (i.user_pin_initialized(), "user-pin-initialized"),
        (i.rng(), "rng"),
        (i.write_protected(), "write-protected"),
        (i.protected_authentication_path(), "protected-auth-path"),
        (i.user_pin_count_low(), "user-pin-count-low"),
        (i.user_pin_final_try(), "user-pin-final-try"),
        (i.user_pin_locked(), "user-pin-locked"),
    ];
    for (on, name) in pairs {
        if on {
            flags.push(name);
        }
    }
    TokenSummary {
        slot,
        label: i.label().trim_end().to_string(),
        serial: i.serial_number().trim_end().to_string(),
        manufacturer: i.manufacturer_id().trim_end().to_string(),
        model: i.model().trim_end().to_string(),
        initialized: i.token_initialized(),
        flags,
        library: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ckr_names() {
        assert_eq!(ckr_name(&RvError::PinIncorrect), "CKR_PIN_INCORRECT");
        assert_eq!(
            ckr_name(&RvError::UserAlreadyLoggedIn),
            "CKR_USER_ALREADY_LOGGED_IN"
        );
    }

    #[test]
    fn module_errors_name_the_path() {
        let e = Module::load(Path::new("/nonexistent/mod.so"))
            .err()
            .unwrap();
        assert!(e.message().contains("/nonexistent/mod.so"), "{e}");
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("fake.so");
        std::fs::write(&f, b"not an ELF").unwrap();
        let e = Module::load(&f).err().unwrap();
        assert!(e.message().contains("cannot load PKCS#11 module"), "{e}");
        assert!(e.message().contains("fake.so"), "{e}");
    }
}
