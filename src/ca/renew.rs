//! A CA certificate re-issued around the key it already has in the token: `gencert -renewca`
//! (a root: new serial and validity, same key, subject and extensions, so certificates issued
//! under the old one verify under the new one) and `key import-cert` (an intermediate's
//! certificate signed by its parent, put next to its key).
//!
//! Everything that needs no token is checked first ([`RenewPlan::new`]); the token's
//! certificate object is swapped only after the new certificate's signature has verified, by
//! [`crate::token::certobj::replace_certificate`], so a failure leaves the old one.

use der::{Decode, Encode};
use x509_cert::Certificate;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::{BasicConstraints, SubjectKeyIdentifier};
use x509_cert::name::Name;

use crate::ca::issue::{DEFAULT_BACKDATE_SECS, parse_ca_cert};
use crate::cfssl::csr::CsrRequest;
use crate::error::{Error, Result};
#[cfg(feature = "fault-injection")]
use crate::fault;
use crate::token::certobj;
use crate::token::key::{self, FoundKey};
use crate::token::quirks;
use crate::token::signer::{SignMech, TokenSigner};
use crate::token::uri::{ObjectType, Pkcs11Uri};
use crate::token::{AuthPin, Module, Session, TokenSummary};
use crate::x509;
use crate::x509::alg::SigAlg;
use crate::x509::build::{self, CertParams};
use crate::x509::name::{self as xname, SubjectSpec};

/// Options of `gencert -renewca`.
#[derive(Clone, Debug, Default)]
pub struct RenewOptions {
    /// Take the subject of the CSR JSON even though it differs from the old certificate's
    /// (certificates issued under the old name then no longer chain to the new one).
    pub allow_subject_change: bool,
}

/// What a renewal or an import produced.
#[derive(Clone, Debug)]
pub struct RenewOutput {
    /// The new CA certificate, PEM.
    pub cert_pem: String,
    /// A CSR for the same key and subject, PEM (empty for an import).
    pub csr_pem: String,
    /// The key's handle.
    pub key_uri: Pkcs11Uri,
    /// Notes for the user.
    pub warnings: Vec<String>,
}

/// A validated renewal: the old certificate, the subject, validity and extensions of the
/// new one.
#[derive(Clone, Debug)]
pub struct RenewPlan {
    old: Certificate,
    source: String,
    subject: Name,
    expiry: i64,
    backdate: i64,
    extensions: Vec<Extension>,
    warnings: Vec<String>,
}

fn unix(t: &x509_cert::time::Time) -> i64 {
    t.to_unix_duration().as_secs() as i64
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl RenewPlan {
    /// Check the old CA certificate `old` (bytes of the file `source`) and the optional CSR
    /// JSON `req` (with its file name): the certificate must be a self-signed CA; a CSR JSON
    /// subject must be the certificate's unless `opts` allows a change; `ca.expiry` (else the
    /// old lifetime) and `ca.backdate` give the validity.
    pub fn new(
        old: &[u8],
        source: &str,
        req: Option<(&CsrRequest, &str)>,
        opts: &RenewOptions,
    ) -> Result<Self> {
        let cert = parse_ca_cert(old, source)?;
        let tbs = cert.tbs_certificate();
        let is_ca = tbs
            .get_extension::<BasicConstraints>()
            .ok()
            .flatten()
            .is_some_and(|(_, bc)| bc.ca);
        if !is_ca {
            return Err(Error::policy(format!(
                "{source} is not a CA certificate (no basicConstraints CA:TRUE): -renewca renews a CA; a leaf is re-issued with sign or gencert -ca"
            )));
        }
        if tbs.issuer() != tbs.subject() {
            return Err(Error::policy(format!(
                "{source} is issued by another CA (its issuer is not its subject): -renewca renews a root; have the parent sign the intermediate's CSR again and store the result with p11ca key import-cert"
            )));
        }
        let mut warnings = Vec::new();
        let (old_nb, old_na) = (
            unix(&tbs.validity().not_before),
            unix(&tbs.validity().not_after),
        );
        if old_na < now() {
            warnings.push(format!(
                "{source} expired already; the renewed certificate is valid again, but clients may have refused the old one since it expired"
            ));
        }
        let mut subject = tbs.subject().clone();
        let (mut expiry, mut backdate) = (old_na - old_nb, DEFAULT_BACKDATE_SECS);
        if let Some((req, file)) = req {
            let (e, b) = req.ca_times(file)?;
            let ca = req.ca.clone().unwrap_or_default();
            if !ca.expiry.is_empty() {
                expiry = e.as_secs();
            }
            backdate = b.as_secs();
            if !req.subject_is_empty() {
                subject =
                    Self::subject_from(req, file, tbs.subject(), source, opts, &mut warnings)?;
            }
        }
        if expiry <= backdate {
            return Err(Error::policy(format!(
                "the new certificate's lifetime ({expiry}s) is not longer than its backdate ({backdate}s): set ca.expiry in the CSR JSON"
            )));
        }
        Ok(Self {
            extensions: renewed_extensions(&cert)?,
            old: cert,
            source: source.to_string(),
            subject,
            expiry,
            backdate,
            warnings,
        })
    }

    /// The CSR JSON's subject: the old one's unless a change is allowed.
    fn subject_from(
        req: &CsrRequest,
        file: &str,
        old: &Name,
        source: &str,
        opts: &RenewOptions,
        warnings: &mut Vec<String>,
    ) -> Result<Name> {
        let wanted = xname::build(&SubjectSpec {
            cn: &req.cn,
            names: &req.names,
            serial_number: &req.serialnumber,
        })
        .map_err(|e| e.context(file))?;
        if wanted.to_der().ok() == old.to_der().ok() {
            return Ok(wanted);
        }
        if !opts.allow_subject_change {
            return Err(Error::policy(format!(
                "{file}: its subject ({wanted}) differs from {source}'s ({old}); certificates issued under the old name would not chain to the renewed CA: fix the CSR JSON, leave it out, or give --allow-subject-change"
            )));
        }
        warnings.push(format!(
            "the subject changes from {old} to {wanted}: certificates issued under the old name do not chain to the renewed CA"
        ));
        Ok(wanted)
    }

    /// Renew with the key `key_uri` in `token`, logged in on `session`; `pin` for keys that
    /// need it for every signature.
    pub fn run(
        &self,
        module: &Module,
        token: &TokenSummary,
        session: &Session,
        key_uri: &Pkcs11Uri,
        pin: Option<&AuthPin>,
    ) -> Result<RenewOutput> {
        let found = key::find_private_key(session, token, key_uri)?;
        check_same_key(&self.old, &self.source, &found, key_uri)?;
        let mech = SignMech::choose_for_key(
            &module.mechanisms(token.slot)?,
            SigAlg::for_key(x509::alg::KeyAlg::of(&found.spki)?),
            &token.label,
            found.always_authenticate,
        )?;
        let mut signer = TokenSigner::new(session, found.handle, found.spki.clone(), mech)?;
        if let (true, Some(pin)) = (found.always_authenticate, pin) {
            signer = signer.with_context_login(pin);
        }
        let (cert_der, csr_der) = self.sign(&signer)?;
        #[cfg(feature = "fault-injection")]
        fault::point("renew-before-swap")?;
        let rules = quirks::for_token(token);
        let mut warnings = self.warnings.clone();
        if rules.keygen_needs_so {
            // A PIV slot holds one certificate, written only with the management key; a new
            // one would overwrite the old before it could be checked, so the card is left as
            // it is and the operator imports the printed certificate.
            let slot = found
                .id
                .first()
                .and_then(|id| quirks::piv_slot_name(*id))
                .unwrap_or_else(|| "SLOT".into());
            warnings.push(format!(
                "{}: the card's certificate for slot {slot} is left as it was; put the renewed one on the card with `yubico-piv-tool -a import-certificate -s {slot} -i NEW.pem` (it asks for the management key)",
                rules.name
            ));
        } else {
            let swapped = certobj::replace_certificate(
                module,
                token,
                session,
                &rules,
                &cert_der,
                &found.label,
                &found.id,
            )?;
            warnings.extend(swapped.warnings);
        }
        Ok(RenewOutput {
            cert_pem: build::pem("CERTIFICATE", &cert_der)?,
            csr_pem: build::pem("CERTIFICATE REQUEST", &csr_der)?,
            key_uri: Pkcs11Uri::for_object(
                &token.label,
                &found.id,
                &found.label,
                ObjectType::Private,
            ),
            warnings,
        })
    }

    /// The new certificate and a CSR for the same key, both verified.
    fn sign(&self, signer: &TokenSigner<'_>) -> Result<(Vec<u8>, Vec<u8>)> {
        let spki = self.old.tbs_certificate().subject_public_key_info().clone();
        let bc: Vec<Extension> = self
            .extensions
            .iter()
            .filter(|e| e.extn_id == const_oid::db::rfc5280::ID_CE_BASIC_CONSTRAINTS)
            .cloned()
            .collect();
        let csr_der = build::csr(&self.subject, bc, signer as &dyn x509::Signer)?;
        let not_before = build::now_rounded() - self.backdate;
        let params = CertParams {
            serial: build::random_serial(signer)?,
            issuer: self.subject.clone(),
            subject: self.subject.clone(),
            subject_key: spki,
            not_before,
            not_after: not_before + self.expiry,
            extensions: self.extensions.clone(),
        };
        Ok((build::certificate(&params, signer)?, csr_der))
    }
}

/// The old certificate's extensions, unchanged (same SKI, key usage, path length, names and
/// CRL points), with an SKI added if it had none, so issued certificates' AKI keeps matching.
fn renewed_extensions(cert: &Certificate) -> Result<Vec<Extension>> {
    let tbs = cert.tbs_certificate();
    let mut exts: Vec<Extension> = tbs.extensions().cloned().unwrap_or_default();
    let has_ski = tbs
        .get_extension::<SubjectKeyIdentifier>()
        .ok()
        .flatten()
        .is_some();
    if !has_ski {
        exts.push(build::ski_ext(tbs.subject_public_key_info())?);
    }
    Ok(exts)
}

/// `cert` (from `source`) must carry the public key of `key`.
fn check_same_key(
    cert: &Certificate,
    source: &str,
    key: &FoundKey,
    key_uri: &Pkcs11Uri,
) -> Result<()> {
    let spki = cert.tbs_certificate().subject_public_key_info();
    if spki.to_der().ok() != key.spki.to_der().ok() {
        return Err(Error::policy(format!(
            "{source} does not belong to the key {key_uri}: their public keys differ; nothing was changed in the token"
        )));
    }
    Ok(())
}

/// `key import-cert`: store the certificate in `cert_bytes` (from `source`; one PEM or DER
/// certificate) as the certificate of the key `key_uri`, replacing the
/// certificate object it had (the self-signed placeholder `gencert -initca` made), after
/// checking that the certificate is for that key. Nothing changes when it is not.
pub fn import_certificate(
    module: &Module,
    token: &TokenSummary,
    session: &Session,
    key_uri: &Pkcs11Uri,
    cert_bytes: &[u8],
    source: &str,
) -> Result<RenewOutput> {
    let cert = parse_ca_cert(cert_bytes, source)?;
    let cert_der = cert
        .to_der()
        .map_err(|e| Error::input(format!("{source}: cannot re-encode the certificate: {e}")))?;
    Certificate::from_der(&cert_der)
        .map_err(|e| Error::input(format!("{source}: not a valid X.509 certificate: {e}")))?;
    let found = key::find_private_key(session, token, key_uri)?;
    check_same_key(&cert, source, &found, key_uri)?;
    let mut warnings = Vec::new();
    let na = unix(&cert.tbs_certificate().validity().not_after);
    if na < now() {
        warnings.push(format!("{source} has expired; it was stored all the same"));
    }
    let rules = quirks::for_token(token);
    let swapped = certobj::replace_certificate(
        module,
        token,
        session,
        &rules,
        &cert_der,
        &found.label,
        &found.id,
    )?;
    warnings.extend(swapped.warnings);
    Ok(RenewOutput {
        cert_pem: build::pem("CERTIFICATE", &cert_der)?,
        csr_pem: String::new(),
        key_uri: Pkcs11Uri::for_object(&token.label, &found.id, &found.label, ObjectType::Private),
        warnings,
    })
}
