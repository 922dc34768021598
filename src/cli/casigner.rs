//! The CA key in the token as a [`Signer`], for the commands that sign one thing with it
//! (`crl`, `gencrl`, `audit checkpoint`): the key found by its URI, paired with the CA
//! certificate before anything is signed, logged in per signature where the key needs it.

use x509_cert::Certificate;

use p11ca::Result;
use p11ca::ca::issue::{CaKey, Issuer};
use p11ca::token::{Pkcs11Uri, key};
use p11ca::x509::Signer;

use super::args::TokenArgs;
use super::open_and_login;

/// Run `f` with the signer of `ca`'s key `key_uri`; the token is finalized afterwards. `f` is
/// called only once the key is known to pair with `ca` (so a wrong `-ca` changes nothing).
pub(super) fn with_ca_signer<T>(
    targs: &TokenArgs,
    ca: &Certificate,
    ca_source: &str,
    key_uri: &Pkcs11Uri,
    f: impl FnOnce(&dyn Signer) -> Result<T>,
) -> Result<T> {
    let opened = open_and_login(targs, Some(key_uri))?;
    let found = key::find_private_key(&opened.session, &opened.token, key_uri)?;
    let mut ca_key = CaKey::new(
        &opened.module,
        &opened.token,
        ca.clone(),
        ca_source,
        &found,
        key_uri,
    )?;
    ca_key.set_pin(opened.pin.clone());
    let issuer = Issuer::new(&ca_key, &opened.session)?;
    let r = f(issuer.signer());
    drop(issuer);
    drop(ca_key);
    opened.module.finalize_for_exit();
    r
}
