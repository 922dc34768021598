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
use crate::error::{Error, Result};
use crate::issue::{CaKey, Issuer, LeafRequest};
use crate::token::{Module, TokenSummary, ck};

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
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut n = requested.unwrap_or(cores).max(1).min(inputs.max(1));
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
    let results: Vec<Mutex<Option<Issued>>> = leaves.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let open_errors: Mutex<Vec<Error>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                // Sessions share the login made by the caller's session.
                let session = match module.context().open_rw_session(token.slot) {
                    Ok(s) => s,
                    Err(e) => {
                        open_errors
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(ck("cannot open a signing session", e));
                        return;
                    }
                };
                let issuer = match Issuer::new(ca, &session) {
                    Ok(i) => i,
                    Err(e) => {
                        open_errors
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(e);
                        return;
                    }
                };
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(leaf) = leaves.get(i) else { break };
                    let mut warnings = Vec::new();
                    let r = issuer
                        .issue(leaf, profile, &mut warnings)
                        .map(|der| (der, warnings));
                    on_done(i, &r, done.fetch_add(1, Ordering::Relaxed) + 1);
                    *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                }
            });
        }
    });
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
