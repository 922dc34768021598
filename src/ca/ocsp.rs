//! OCSP responses signed in the token: the responder's key (the CA's own, or a delegated
//! responder's that the CA certified for OCSP signing) paired with its certificate before
//! anything is signed, and responses for many certificates at once (`ocsprefresh`) signed
//! through several token sessions in parallel, one thread each, taking the next certificate
//! from a shared counter; every response is verified before it is kept (in `x509::ocsp`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use der::Encode;
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::Certificate;

use crate::error::{Error, Result};
use crate::sync::lock;
use crate::token::key::{self, FoundKey};
use crate::token::signer::{SignMech, TokenSigner};
use crate::token::uri::Pkcs11Uri;
use crate::token::{AuthPin, Module, Session, TokenSummary};
use crate::x509::alg::{KeyAlg, SigAlg};
use crate::x509::ocsp::{self, ResponderIdForm, Status, Validity};

/// One certificate to answer for: its serial (big-endian, unsigned) and status.
pub type Subject = (Vec<u8>, Status);

/// The key that signs a CA's OCSP responses, checked to belong to the responder certificate.
pub struct ResponderKey {
    issuer: Certificate,
    responder: Certificate,
    key_uri: Pkcs11Uri,
    token: TokenSummary,
    spki: SubjectPublicKeyInfoOwned,
    key_alg: KeyAlg,
    mech: SignMech,
    always_authenticate: bool,
    pin: Option<AuthPin>,
    id_form: ResponderIdForm,
}

impl ResponderKey {
    /// Pair `responder` (read from `source`; the CA `issuer` itself or a delegated responder it
    /// issued for OCSP signing) with `key`, found by `key_uri` in `token`. A key whose public
    /// key is not the certificate's is refused here, before anything is signed.
    pub fn new(
        module: &Module,
        token: &TokenSummary,
        issuer: Certificate,
        (responder, source): (Certificate, &str),
        key: &FoundKey,
        key_uri: &Pkcs11Uri,
    ) -> Result<Self> {
        ocsp::check_responder(&issuer, &responder).map_err(|e| e.context(source))?;
        let cert_spki = responder.tbs_certificate().subject_public_key_info();
        if cert_spki.to_der().ok() != key.spki.to_der().ok() {
            return Err(Error::policy(format!(
                "{source} does not belong to the key {key_uri}: their public keys differ; give the responder certificate made for this key. Nothing was signed"
            )));
        }
        let key_alg = KeyAlg::of(&key.spki)?;
        let mech = SignMech::choose_for_key(
            &module.mechanisms(token.slot)?,
            SigAlg::for_key(key_alg),
            &token.label,
            key.always_authenticate,
        )?;
        Ok(Self {
            issuer,
            responder,
            key_uri: key_uri.clone(),
            token: token.clone(),
            spki: key.spki.clone(),
            key_alg,
            mech,
            always_authenticate: key.always_authenticate,
            pin: None,
            id_form: ResponderIdForm::Name,
        })
    }

    /// Name the responder in responses by `form` (by subject unless told otherwise).
    pub fn set_id_form(&mut self, form: ResponderIdForm) {
        self.id_form = form;
    }

    /// Keep the PIN (zeroized on drop) for keys that need it for every signature.
    pub fn set_pin(&mut self, pin: AuthPin) {
        self.pin = Some(pin);
    }

    /// The CA whose certificates are answered for.
    pub fn issuer(&self) -> &Certificate {
        &self.issuer
    }

    /// A signer for the key in `session` (found again there: handles may differ per login).
    pub fn signer<'s>(&'s self, session: &'s Session) -> Result<TokenSigner<'s>> {
        let found = key::find_private_key(session, &self.token, &self.key_uri)?;
        if found.spki.to_der().ok() != self.spki.to_der().ok() {
            return Err(Error::policy(format!(
                "{} now names a different key; stopping",
                self.key_uri
            )));
        }
        let signer = TokenSigner::for_key_alg(
            session,
            found.handle,
            self.spki.clone(),
            self.key_alg,
            self.mech,
        );
        if !self.always_authenticate {
            return Ok(signer);
        }
        let pin = self.pin.as_ref().ok_or_else(|| {
            Error::token("the responder key needs a PIN for every signature (CKA_ALWAYS_AUTHENTICATE) and none was given")
        })?;
        Ok(signer.with_context_login(pin))
    }

    /// The signed and verified response for the certificate `serial` of the CA. A delegated
    /// responder's certificate goes in the response's `certs` (RFC 6960 §4.2.1), so that
    /// clients can check it chains to the CA.
    pub fn sign(
        &self,
        signer: &TokenSigner<'_>,
        serial: &[u8],
        status: Status,
        times: Validity,
    ) -> Result<Vec<u8>> {
        let id = ocsp::cert_id(&self.issuer, serial)?;
        let is_issuer = self.responder == self.issuer;
        ocsp::sign_response(
            id,
            status,
            times,
            (&self.responder, self.id_form),
            is_issuer,
            signer,
        )
    }
}

/// Sign the response of each of `items` with `responder`, through `jobs` sessions (the first
/// is `session`, the others are opened on `token`); the responses in `items`' order, or the
/// first error (then nothing is returned).
pub fn sign_all(
    module: &Module,
    token: &TokenSummary,
    responder: &ResponderKey,
    session: &Session,
    items: &[Subject],
    times: Validity,
    jobs: usize,
) -> Result<Vec<Vec<u8>>> {
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<Vec<u8>>>> = Mutex::new(vec![None; items.len()]);
    let failed: Mutex<Option<crate::Error>> = Mutex::new(None);
    let work = |session: &Session| -> Result<()> {
        let signer = responder.signer(session)?;
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= items.len() || lock(&failed).is_some() {
                return Ok(());
            }
            let (serial, status) = &items[i];
            let der = responder.sign(&signer, serial, *status, times)?;
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
