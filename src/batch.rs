//! Issuing many certificates at the token's speed: one module, one login, one key lookup, and
//! N sessions signing in parallel, one thread per session (a PKCS#11 session runs one operation
//! at a time, so parallelism needs a session per worker).
//!
//! Each input gets its own result: a failure on one input is reported for that input and does
//! not stop the others. Nothing is retried: a signature that may have been made is never made
//! twice.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use cryptoki::slot::Limit;

use crate::cfssl::config::Profile;
use crate::error::{Error, Result, TokenFault};
use crate::issue::{CaKey, Issuer, LeafRequest};
use crate::token::{Module, TokenSummary, ck};
use crate::x509::build::SignedCertificate;
use cryptoki::session::Session;

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
    if inputs <= 1 || requested == Some(1) {
        return 1;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut n = requested.unwrap_or(cores).max(1).min(inputs);
    let info = module.context().get_token_info(token.slot);
    if let Ok(Limit::Max(max)) = info.as_ref().map(|i| i.max_session_count()) {
        // Sessions already open (at least the login's) count against the limit.
        let open = info
            .as_ref()
            .ok()
            .and_then(|i| i.session_count())
            .unwrap_or(1);
        n = n.min((max.saturating_sub(open) as usize).max(1));
    }
    n
}

/// Issue a certificate for each of `leaves` with `jobs` parallel sessions. `on_done` is called
/// from the worker as soon as input `i` is finished (so outputs can be written while the batch
/// goes on) with the number done so far. Results are returned in input order.
pub fn issue_all(
    module: &Module,
    token: &TokenSummary,
    ca: &CaKey,
    profile: &Profile,
    leaves: &[LeafRequest],
    jobs: usize,
    on_done: &(dyn Fn(usize, &Issued, usize) + Sync),
) -> Result<Vec<Issued>> {
    issue_all_with(module, token, ca, profile, leaves, jobs, on_done, None)
}

/// [`issue_all`], with the caller's (logged-in) session used by the first worker; with one
/// job that worker runs on the calling thread, so a one-shot run needs no thread and no
/// second session.
#[allow(clippy::too_many_arguments)] // issue_all's arguments plus the session to reuse
pub fn issue_all_with(
    module: &Module,
    token: &TokenSummary,
    ca: &CaKey,
    profile: &Profile,
    leaves: &[LeafRequest],
    jobs: usize,
    on_done: &(dyn Fn(usize, &Issued, usize) + Sync),
    login_session: Option<Session>,
) -> Result<Vec<Issued>> {
    let results: Vec<Mutex<Option<Issued>>> = leaves.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let open_errors: Mutex<Vec<Error>> = Mutex::new(Vec::new());
    // Record one input's outcome (from a signing or a verifying thread).
    let finish = |i: usize, r: Issued| {
        on_done(i, &r, done.fetch_add(1, Ordering::Relaxed) + 1);
        *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
    };
    let work = |given: Option<Session>| {
        // Each signing session has a verifier beside it: the token signs certificate k+1
        // while certificate k is checked, and nothing is handed on before its check passes.
        std::thread::scope(|vs| {
            let (to_verify, verify_queue) =
                std::sync::mpsc::sync_channel::<(usize, SignedCertificate, Vec<String>)>(16);
            let finish = &finish;
            vs.spawn(move || {
                for (i, signed, warnings) in verify_queue {
                    finish(i, signed.verified().map(|der| (der, warnings)));
                }
            });
            let fail = |e: Error| {
                open_errors
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(e)
            };
            // Sessions share the login made by the caller's session.
            let mut session = match given
                .map(Ok)
                .unwrap_or_else(|| module.context().open_rw_session(token.slot))
            {
                Ok(s) => s,
                Err(e) => return fail(ck("cannot open a signing session", e)),
            };
            let mut key = None;
            let mut pending: Option<usize> = None;
            loop {
                let issuer = match key {
                    Some(h) => Issuer::with_handle(ca, &session, h),
                    None => Issuer::new(ca, &session),
                };
                let issuer = match issuer {
                    Ok(i) => i,
                    Err(e) => return fail(e),
                };
                let mut stale = false;
                let mut retried = pending.is_some();
                loop {
                    let i = pending
                        .take()
                        .unwrap_or_else(|| next.fetch_add(1, Ordering::Relaxed));
                    let Some(leaf) = leaves.get(i) else { break };
                    let mut warnings = Vec::new();
                    let signed = inject_stale(i)
                        .and_then(|()| issuer.issue_signed(leaf, profile, &mut warnings));
                    let r: Issued = match signed {
                        Ok(signed) => {
                            retried = false;
                            if to_verify.send((i, signed, warnings)).is_err() {
                                return fail(Error::token("the verifying thread stopped"));
                            }
                            continue;
                        }
                        Err(e) => Err(e),
                    };
                    match r.as_ref().err().and_then(Error::fault) {
                        // Nothing was signed yet: reopen and try this input once more.
                        Some(TokenFault::Stale) if !retried => {
                            pending = Some(i);
                            stale = true;
                            break;
                        }
                        // C_Sign itself failed: the token may have signed; report, never
                        // repeat, but reopen for the inputs that follow.
                        Some(TokenFault::StaleDuringSign | TokenFault::Stale) => stale = true,
                        _ => {}
                    }
                    retried = false;
                    finish(i, r);
                    if stale {
                        break;
                    }
                }
                if !stale {
                    break;
                }
                drop(issuer);
                match ca.reopen(module, jobs <= 1) {
                    Ok((s, h)) => {
                        session = s;
                        key = Some(h);
                    }
                    Err(e) => {
                        // The token is gone for good: the pending input (if any) fails.
                        if let Some(i) = pending.take() {
                            finish(i, Err(e.clone()));
                        }
                        return fail(e);
                    }
                }
            }
        })
    };
    let jobs = jobs.max(1);
    if jobs == 1 {
        work(login_session);
    } else {
        let work = &work;
        std::thread::scope(|scope| {
            let mut first = login_session;
            for _ in 0..jobs {
                let given = first.take();
                scope.spawn(move || work(given));
            }
        });
    }
    let open_errors = open_errors.into_inner().unwrap_or_else(|p| p.into_inner());
    let out: Vec<Issued> = results
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(open_errors
                    .first()
                    .cloned()
                    .unwrap_or_else(|| Error::token("no signing session could be opened")))
            })
        })
        .collect();
    Ok(out)
}

/// Tests simulate a session that goes stale before (`stale-before-sign`) or inside
/// (`stale-during-sign`) the signature of input 3 (debug builds only).
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
