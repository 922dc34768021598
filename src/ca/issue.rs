//! Issuing certificates with a CA key in the token (`gencert -ca`, `sign`).
//!
//! Before anything is signed, the token key must be the key of the CA certificate given with
//! `-ca`, and the certificate must be a CA. Each issued certificate follows the signing profile,
//! with cfssl's traps closed: validity is clipped to the CA's, ECDSA keys do not get encipherment
//! key usages (RFC 8813), and a CSR asking for CA:TRUE needs a CA profile.

use std::sync::Mutex;

use der::flagset::FlagSet;
use der::{Decode, Encode};
use x509_cert::Certificate;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsages, SubjectKeyIdentifier};
use x509_cert::name::Name;

use crate::cfssl::config::Profile;
use crate::error::{Error, Result};
use crate::sync::lock;
use crate::token::key::FoundKey;
use crate::token::login::Login;
use crate::token::signer::{SignMech, TokenSigner};
use crate::token::uri::Pkcs11Uri;
use crate::token::{AuthPin, KeyHandle, Module, Session, TokenSummary};
use crate::x509::alg::{KeyAlg, SigAlg};
use crate::x509::build::{self, CertParams};
use crate::x509::hosts::{self, San};
use crate::x509::name::{self, SubjectOverride};
use crate::x509::request::ParsedCsr;

/// Default backdate of notBefore, as cfssl.
pub const DEFAULT_BACKDATE_SECS: i64 = 300;

/// What is to be certified.
#[derive(Clone, Debug)]
pub struct LeafRequest {
    /// Subject, already in canonical order.
    pub subject: Name,
    /// The subject's public key.
    pub public_key: spki::SubjectPublicKeyInfoOwned,
    /// subjectAltName entries.
    pub sans: Vec<San>,
    /// The request asked for CA:TRUE.
    pub wants_ca: bool,
}

impl LeafRequest {
    /// What `csr` asks to be certified: its subject canonicalized with `ov` (the caller's
    /// subject overrides), its public key, its SANs unless `sans` replaces them, and whether
    /// it asks for CA:TRUE.
    pub fn from_csr(
        csr: &ParsedCsr,
        ov: &SubjectOverride<'_>,
        sans: Option<Vec<San>>,
    ) -> Result<Self> {
        Ok(Self {
            subject: name::canonicalize(&csr.subject, ov)?,
            public_key: csr.public_key.clone(),
            sans: sans.unwrap_or_else(|| csr.sans.clone()),
            wants_ca: csr.wants_ca,
        })
    }
}

/// Parse a CA certificate from PEM (text around the block allowed) or DER.
pub fn parse_ca_cert(bytes: &[u8], source: &str) -> Result<Certificate> {
    let der = crate::x509::pem::read_der(bytes, source, &["CERTIFICATE"], "certificate")?;
    Certificate::from_der(&der)
        .map_err(|e| Error::input(format!("{source}: not a valid X.509 certificate: {e}")))
}

/// A CA certificate and its key in the token, checked to belong together. Shared by all
/// sessions of a batch (object handles are valid in every session of the application).
pub struct CaKey {
    ca: Certificate,
    ca_source: String,
    /// The key's object handle, found again when the token hands out a new one.
    key: Mutex<KeyHandle>,
    spki: spki::SubjectPublicKeyInfoOwned,
    mech: SignMech,
    always_authenticate: bool,
    context_pin: Option<AuthPin>,
    key_uri: Pkcs11Uri,
    token: TokenSummary,
    /// The token's log-in, to get sessions back when they go stale.
    login: Login,
    /// The authorityKeyIdentifier every issued certificate carries.
    aki: Extension,
    /// The key's algorithm and size (the signature algorithm follows from it).
    key_alg: KeyAlg,
}

impl CaKey {
    /// Pair `ca_cert` (from `ca_source`) with `key` (found by `key_uri` in `token`).
    pub fn new(
        module: &Module,
        token: &TokenSummary,
        ca_cert: Certificate,
        ca_source: &str,
        key: &FoundKey,
        key_uri: &Pkcs11Uri,
    ) -> Result<Self> {
        let tbs = ca_cert.tbs_certificate();
        let cert_spki = tbs.subject_public_key_info();
        if cert_spki.to_der().ok() != key.spki.to_der().ok() {
            return Err(Error::policy(format!(
                "{ca_source} does not belong to the key {key_uri}: their public keys differ; give the certificate made for this key"
            )));
        }
        let is_ca = tbs
            .get_extension::<BasicConstraints>()
            .ok()
            .flatten()
            .is_some_and(|(_, bc)| bc.ca);
        if !is_ca {
            return Err(Error::policy(format!(
                "{ca_source} is not a CA certificate (no basicConstraints CA:TRUE); it cannot issue certificates"
            )));
        }
        // AKI of issued certificates = the CA's own SKI, so CAs made by other tools chain right.
        let ca_ski = match tbs.get_extension::<SubjectKeyIdentifier>().ok().flatten() {
            Some((_, ski)) => ski.0.as_bytes().to_vec(),
            None => build::key_id(&key.spki),
        };
        let key_alg = KeyAlg::of(&key.spki)?;
        let alg = SigAlg::for_key(key_alg);
        let mech = SignMech::choose_for_key(
            &module.mechanisms(token.slot)?,
            alg,
            &token.label,
            key.always_authenticate,
        )?;
        Ok(Self {
            ca: ca_cert,
            ca_source: ca_source.to_string(),
            key: Mutex::new(key.handle),
            spki: key.spki.clone(),
            mech,
            always_authenticate: key.always_authenticate,
            context_pin: None,
            key_uri: key_uri.clone(),
            token: token.clone(),
            login: Login::new(token),
            aki: build::aki_ext(&ca_ski)?,
            key_alg,
        })
    }

    /// Open a fresh session after the old one went stale (see [`Login::reopen`]: logged in
    /// again with the PIN given by [`CaKey::set_pin`], the module initialized again when
    /// `may_reinitialize`), and find the key again by its URI, since object handles may not
    /// survive. Checks the key is the same.
    pub fn reopen(&self, module: &Module, may_reinitialize: bool) -> Result<(Session, KeyHandle)> {
        let session = self.login.reopen(module, may_reinitialize)?;
        let key = self.find_key(&session)?;
        Ok((session, key))
    }

    /// Find the key again by its URI in `session` (object handles may change, e.g. after a
    /// new login), checking it is still the same key; the handle found is kept for
    /// [`CaKey::key_handle`].
    pub fn find_key(&self, session: &Session) -> Result<KeyHandle> {
        let found = crate::token::key::find_private_key(session, &self.token, &self.key_uri)?;
        if found.spki.to_der().ok() != self.spki.to_der().ok() {
            return Err(Error::policy(format!(
                "{} now names a different key; stopping",
                self.key_uri
            )));
        }
        *lock(&self.key) = found.handle;
        Ok(found.handle)
    }

    /// The CA certificate.
    pub fn certificate(&self) -> &Certificate {
        &self.ca
    }

    /// The key's object handle (as found at start, or last found again).
    pub fn key_handle(&self) -> KeyHandle {
        *lock(&self.key)
    }

    /// Keep the PIN (zeroized on drop) for re-login after a stale session and for keys that
    /// need it for every signature.
    pub fn set_pin(&mut self, pin: AuthPin) {
        self.login.keep_pin(pin.clone());
        self.context_pin = Some(pin);
    }

    /// The signing mechanism chosen for the token.
    pub fn mechanism(&self) -> SignMech {
        self.mech
    }
}

/// The profile's extensions, built once per profile and key-usage variant: they are the same
/// for every certificate of a batch. One per thread that prepares certificates.
#[derive(Default)]
pub struct ExtensionCache {
    /// (profile name, key-usage bits) → the profile's extensions (before SKI, after SAN).
    #[allow(clippy::type_complexity)] // a one-entry cache, used only here
    entry: Option<(String, u16, (Vec<Extension>, Vec<Extension>))>,
}

impl ExtensionCache {
    fn get(
        &mut self,
        profile: &Profile,
        key_usage: FlagSet<KeyUsages>,
    ) -> Result<(Vec<Extension>, Vec<Extension>)> {
        let fresh = self
            .entry
            .as_ref()
            .is_none_or(|(n, ku, _)| *n != profile.name || *ku != key_usage.bits());
        if fresh {
            let mut p = profile.clone();
            p.key_usage = key_usage;
            self.entry = Some((profile.name.clone(), key_usage.bits(), p.extensions()?));
        }
        Ok(self
            .entry
            .as_ref()
            .map(|(_, _, e)| e.clone())
            .unwrap_or_default())
    }
}

/// The issuance policy for `leaf` under `profile` (names, subject, key; see
/// [`crate::x509::policy`]) and cfssl's `name_whitelist`, against the CA whose subject is
/// `ca_subject`. Needs no token: callers run it before they log in, and [`CaKey::prepare`]
/// runs it again so no path can skip it.
pub fn check_leaf(leaf: &LeafRequest, profile: &Profile, ca_subject: &Name) -> Result<()> {
    profile.policy.check(
        &profile.name,
        &leaf.subject,
        &leaf.sans,
        &leaf.public_key,
        ca_subject,
    )?;
    check_whitelist(&leaf.subject, &leaf.sans, profile)
}

/// [`check_leaf`] for a key not made yet (`gencert --key-in-token`): the names, and the
/// planned key algorithm `alg`, so that a refusal comes before the token makes a key.
pub fn check_planned(
    subject: &Name,
    sans: &[San],
    alg: KeyAlg,
    profile: &Profile,
    ca_subject: &Name,
) -> Result<()> {
    check_named(subject, sans)?;
    let policy = &profile.policy;
    policy.check_names(&profile.name, subject, sans, ca_subject)?;
    policy.check_key(&profile.name, alg)?;
    check_whitelist(subject, sans, profile)
}

/// A certificate must name something: a subject or a subjectAltName.
fn check_named(subject: &Name, sans: &[San]) -> Result<()> {
    if subject.is_empty() && sans.is_empty() {
        return Err(Error::policy(
            "the certificate would have neither a subject nor a subjectAltName; give a CN or hosts",
        ));
    }
    Ok(())
}

/// cfssl's `name_whitelist` over the CN and every subjectAltName.
fn check_whitelist(subject: &Name, sans: &[San], profile: &Profile) -> Result<()> {
    if profile.name_whitelist.is_some() {
        let cn = subject
            .iter()
            .filter(|atv| atv.oid == const_oid::db::rfc4519::CN)
            .find_map(|atv| name::value_text(&atv.value))
            .unwrap_or_default();
        let san_texts: Vec<String> = sans
            .iter()
            .map(|s| match s {
                San::Dns(v) | San::Email(v) | San::Uri(v) => v.clone(),
                San::Ip(ip) => ip.to_string(),
            })
            .collect();
        profile.allows(&cn, &san_texts)?;
    }
    Ok(())
}

impl CaKey {
    /// Everything of issuing but the serial and the signature: the profile's rules (CA
    /// requests, names, RFC 8813, validity clipped to the CA's) and the encoded
    /// TBSCertificate. Needs no token, so a batch runs it ahead of the signing session.
    pub fn prepare(
        &self,
        leaf: &LeafRequest,
        profile: &Profile,
        cache: &mut ExtensionCache,
        warnings: &mut Vec<String>,
    ) -> Result<build::UnsignedCertificate> {
        if leaf.wants_ca && !profile.is_ca {
            return Err(Error::policy(format!(
                "the request asks for a CA certificate (CA:TRUE) but profile \"{}\" has no ca_constraint.is_ca",
                profile.name
            )));
        }
        check_named(&leaf.subject, &leaf.sans)?;
        check_leaf(leaf, profile, self.ca.tbs_certificate().subject())?;

        let key_usage = leaf_key_usage(leaf, profile, warnings)?;

        let (not_before, not_after) = self.validity(profile, warnings)?;

        let (mut exts, after) = cache.get(profile, key_usage)?;
        exts.push(build::ski_ext(&leaf.public_key)?);
        exts.push(self.aki.clone());
        if let Some(san) = hosts::extension(&leaf.sans, leaf.subject.is_empty())? {
            exts.push(san);
        }
        exts.extend(after);
        let params = CertParams {
            serial: build::serial_placeholder()?,
            issuer: self.ca.tbs_certificate().subject().clone(),
            subject: leaf.subject.clone(),
            subject_key: leaf.public_key.clone(),
            not_before,
            not_after,
            extensions: exts,
        };
        build::certificate_unsigned(&params, SigAlg::for_key(self.key_alg))
    }
}

impl CaKey {
    /// The certificate's notBefore and notAfter under `profile`, with notAfter clipped to the
    /// CA's (noted in `warnings`).
    fn validity(&self, profile: &Profile, warnings: &mut Vec<String>) -> Result<(i64, i64)> {
        let backdate = profile.backdate_secs.unwrap_or(DEFAULT_BACKDATE_SECS);
        let not_before = profile
            .not_before
            .unwrap_or_else(|| build::now_rounded() - backdate);
        let mut not_after = profile
            .not_after
            .unwrap_or(not_before + profile.expiry_secs);
        if not_after <= not_before {
            return Err(Error::policy(format!(
                "profile \"{}\": not_after is not after not_before",
                profile.name
            )));
        }
        let ca_not_after = self
            .ca
            .tbs_certificate()
            .validity()
            .not_after
            .to_unix_duration()
            .as_secs() as i64;
        if not_after > ca_not_after {
            warnings.push(format!(
                "the certificate would outlive the CA ({}); its notAfter is clipped to the CA's",
                self.ca_source
            ));
            not_after = ca_not_after;
            if not_after <= not_before {
                return Err(Error::policy(format!(
                    "{} has expired or expires before the certificate starts",
                    self.ca_source
                )));
            }
        }
        Ok((not_before, not_after))
    }
}

/// The profile's key usages for `leaf`, without encipherment for EC keys (RFC 8813; noted in
/// `warnings`).
fn leaf_key_usage(
    leaf: &LeafRequest,
    profile: &Profile,
    warnings: &mut Vec<String>,
) -> Result<FlagSet<KeyUsages>> {
    let mut key_usage = profile.key_usage;
    if leaf.public_key.algorithm.oid != const_oid::db::rfc5912::RSA_ENCRYPTION {
        let enc = FlagSet::from(KeyUsages::KeyEncipherment) | KeyUsages::DataEncipherment;
        if key_usage & enc != FlagSet::default() {
            key_usage -= enc;
            let leaf_alg = KeyAlg::of(&leaf.public_key)?;
            warnings.push(format!(
                "profile \"{}\": key/data encipherment dropped for the {} key (RFC 8813: ECDSA keys do not encipher)",
                profile.name,
                leaf_alg.name()
            ));
        }
    }
    Ok(key_usage)
}

/// A [`CaKey`] bound to one session: issues certificates one at a time.
pub struct Issuer<'s> {
    ca: &'s CaKey,
    signer: TokenSigner<'s>,
    cache: std::cell::RefCell<ExtensionCache>,
}

impl<'s> Issuer<'s> {
    /// Issue with `ca` in `session` (which must be logged in, directly or through another
    /// session of the same application).
    pub fn new(ca: &'s CaKey, session: &'s Session) -> Result<Self> {
        Self::with_handle(ca, session, ca.key_handle())
    }

    /// Like [`Issuer::new`], with the key's handle as found in this session.
    pub fn with_handle(ca: &'s CaKey, session: &'s Session, key: KeyHandle) -> Result<Self> {
        let mut signer =
            TokenSigner::for_key_alg(session, key, ca.spki.clone(), ca.key_alg, ca.mech);
        if ca.always_authenticate {
            let pin = ca.context_pin.as_ref().ok_or_else(|| {
                Error::token("the CA key needs a PIN for every signature (CKA_ALWAYS_AUTHENTICATE) and none was given")
            })?;
            signer = signer.with_context_login(pin);
        }
        Ok(Self {
            ca,
            signer,
            cache: std::cell::RefCell::new(ExtensionCache::default()),
        })
    }

    /// The token signer (for benchmarks and batch use).
    pub fn signer(&self) -> &TokenSigner<'s> {
        &self.signer
    }

    /// Issue one certificate; returns its DER (signature verified). `warnings` receives notes
    /// such as a clipped validity.
    pub fn issue(
        &self,
        leaf: &LeafRequest,
        profile: &Profile,
        warnings: &mut Vec<String>,
    ) -> Result<Vec<u8>> {
        self.issue_signed(leaf, profile, warnings)?.verified()
    }

    /// [`Issuer::issue`] up to the token's signature; the result must still be verified
    /// ([`build::SignedCertificate::verified`]) before its DER can be used.
    pub fn issue_signed(
        &self,
        leaf: &LeafRequest,
        profile: &Profile,
        warnings: &mut Vec<String>,
    ) -> Result<build::SignedCertificate> {
        let mut unsigned =
            self.ca
                .prepare(leaf, profile, &mut self.cache.borrow_mut(), warnings)?;
        self.sign(&mut unsigned)
    }

    /// Sign a certificate [`CaKey::prepared`](CaKey::prepare) for this CA: a fresh serial from
    /// the token's RNG, then C_Sign. The result must still be verified.
    pub fn sign(
        &self,
        unsigned: &mut build::UnsignedCertificate,
    ) -> Result<build::SignedCertificate> {
        unsigned.sign(&self.signer)
    }
}
