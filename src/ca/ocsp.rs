//! OCSP responses for many certificates at once (`ocsprefresh`): the CA key signs through
//! several token sessions in parallel, one thread each, taking the next certificate from a
//! shared counter; every response is verified before it is kept (in `x509::ocsp`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::ca::issue::{CaKey, Issuer};
use crate::error::Result;
use crate::sync::lock;
use crate::token::{Module, Session, TokenSummary};
use crate::x509::ocsp::{self, Status, Validity};

/// One certificate to answer for: its serial (big-endian, unsigned) and status.
pub type Subject = (Vec<u8>, Status);

/// Sign the response of each of `items` with `ca`, through `jobs` sessions (the first is
/// `session`, the others are opened on `token`); the responses in `items`' order, or the
/// first error (then nothing is returned).
pub fn sign_all(
    module: &Module,
    token: &TokenSummary,
    ca: &CaKey,
    session: &Session,
    items: &[Subject],
    times: Validity,
    jobs: usize,
) -> Result<Vec<Vec<u8>>> {
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<Vec<u8>>>> = Mutex::new(vec![None; items.len()]);
    let failed: Mutex<Option<crate::Error>> = Mutex::new(None);
    let work = |session: &Session| -> Result<()> {
        let key = ca.find_key(session)?;
        let issuer = Issuer::with_handle(ca, session, key)?;
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= items.len() || lock(&failed).is_some() {
                return Ok(());
            }
            let (serial, status) = &items[i];
            let id = ocsp::cert_id(ca.certificate(), serial)?;
            let der =
                ocsp::sign_response(id, *status, times, ca.certificate(), true, issuer.signer())?;
            lock(&out)[i] = Some(der);
        }
    };
    let record = |r: Result<()>| {
        if let Err(e) = r {
            lock(&failed).get_or_insert(e);
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..jobs.max(1) {
            scope.spawn(|| {
                let r = module
                    .open_session(token, "cannot open a signing session")
                    .and_then(|s| work(&s));
                record(r);
            });
        }
        record(work(session));
    });
    if let Some(e) = lock(&failed).take() {
        return Err(e);
    }
    let out = out.into_inner().unwrap_or_else(|p| p.into_inner());
    Ok(out.into_iter().flatten().collect())
}
