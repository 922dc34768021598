//! `gencert -initca`: a self-signed CA whose key is generated in, and never leaves, the token.
//!
//! Order of work: validate everything that can be validated without the token; check the token
//! can make the key; generate it; build and sign the CSR and certificate (each signature is
//! verified in software); store the certificate next to the key. If any step after key
//! generation fails, every object this run created is destroyed, so the token is as before.

use der::flagset::FlagSet;
use x509_cert::ext::pkix::KeyUsages;

use crate::cfssl::csr::{CsrRequest, KeySpec};
use crate::error::{Error, Result};
#[cfg(feature = "fault-injection")]
use crate::fault;
use crate::token::key::{self, GeneratedKey};
use crate::token::quirks::{self, Quirks};
use crate::token::signer::{SignMech, TokenSigner};
use crate::token::uri::{ObjectType, Pkcs11Uri};
use crate::token::{AuthPin, KeyHandle, Module, Session, TokenSummary};
use crate::x509;
use crate::x509::alg::SigAlg;
use crate::x509::build::{self, CertParams};
use crate::x509::hosts::{self, San};
use crate::x509::name::{self, SubjectSpec};

/// Options of `gencert -initca` beyond the request file.
#[derive(Clone, Debug, Default)]
pub struct InitCaOptions {
    /// CKA_LABEL for the key pair and certificate (default: the CN).
    pub key_label: Option<String>,
    /// CKA_ID (default: 16 random bytes from the token).
    pub key_id: Option<Vec<u8>>,
    /// Make the key need the PIN for every signature (CKA_ALWAYS_AUTHENTICATE).
    pub always_authenticate: bool,
    /// An intermediate's key: make only the key and the CSR, for the parent CA to sign; no
    /// self-signed certificate is made or stored (`p11ca key import-cert` stores the parent's).
    pub csr_only: bool,
}

/// What `gencert -initca` produced.
#[derive(Clone, Debug)]
pub struct InitCaOutput {
    /// The CA certificate, PEM (empty with [`InitCaOptions::csr_only`]).
    pub cert_pem: String,
    /// The CA's CSR, PEM.
    pub csr_pem: String,
    /// The handle of the private key in the token.
    pub key_uri: Pkcs11Uri,
    /// Notes for the user (dropped hosts and the like).
    pub warnings: Vec<String>,
}

/// A validated `gencert -initca` request: everything checked that can be checked without
/// the token, so bad input never needs a PIN and never touches the token.
#[derive(Clone, Debug)]
pub struct InitCaPlan {
    req: CsrRequest,
    file: String,
    spec: KeySpec,
    expiry: i64,
    backdate: i64,
    subject: x509_cert::name::Name,
    csr_sans: Vec<San>,
    cert_sans: Vec<San>,
    label: String,
    key_id: Option<Vec<u8>>,
    always_authenticate: bool,
    csr_only: bool,
    warnings: Vec<String>,
}

impl InitCaPlan {
    /// Validate the request `req`, read from the file called `file`.
    pub fn new(req: &CsrRequest, file: &str, opts: &InitCaOptions) -> Result<Self> {
        let mut warnings = Vec::new();
        if req.subject_is_empty() {
            return Err(Error::input(format!(
                "{file}: missing subject information: set \"CN\" or at least one of C, ST, L, O, OU in \"names\""
            )));
        }
        let spec = req.key_spec(file)?;
        let (expiry, backdate) = req.ca_times(file)?;
        if expiry <= backdate {
            return Err(Error::policy(format!(
                "{file}: ca.expiry {expiry} is not longer than ca.backdate {backdate}: the CA would already be expired when issued"
            )));
        }
        let subject = name::build(&SubjectSpec {
            cn: &req.cn,
            names: &req.names,
            serial_number: &req.serialnumber,
        })
        .map_err(|e| e.context(file))?;
        let csr_sans = hosts::parse_list(&req.hosts, &format!("{file}: hosts"))?;
        let dropped: Vec<String> = csr_sans
            .iter()
            .filter_map(|s| match s {
                San::Ip(_) => None,
                San::Dns(h) | San::Email(h) | San::Uri(h) => Some(h.clone()),
            })
            .collect();
        if !dropped.is_empty() {
            warnings.push(format!(
                "{file}: hosts {} are not put in the CA certificate (as in cfssl, only IP addresses are kept); they stay in the CSR",
                dropped.join(", ")
            ));
        }
        let cert_sans = csr_sans
            .iter()
            .filter(|s| matches!(s, San::Ip(_)))
            .cloned()
            .collect();
        let label = match &opts.key_label {
            Some(l) if l.is_empty() => return Err(Error::input("--key-label must not be empty")),
            Some(l) => l.clone(),
            None if !req.cn.is_empty() => req.cn.clone(),
            None => "p11ca CA".to_string(),
        };
        if opts.key_id.as_ref().is_some_and(Vec::is_empty) {
            return Err(Error::input("--key-id must not be empty"));
        }
        Ok(Self {
            req: req.clone(),
            file: file.to_string(),
            spec,
            expiry: expiry.as_secs(),
            backdate: backdate.as_secs(),
            subject,
            csr_sans,
            cert_sans,
            label,
            key_id: opts.key_id.clone(),
            always_authenticate: opts.always_authenticate,
            csr_only: opts.csr_only,
            warnings,
        })
    }

    /// The key that will be generated.
    pub fn key_spec(&self) -> KeySpec {
        self.spec
    }

    /// Create the CA in `token`, logged in on `session`.
    pub fn run(
        &self,
        module: &Module,
        token: &TokenSummary,
        session: &Session,
    ) -> Result<InitCaOutput> {
        self.run_with_pin(module, token, session, None)
    }

    /// [`InitCaPlan::run`]; `pin` (the user PIN) is needed when the key turns out to need a PIN
    /// for every signature, to sign the CSR and certificate. The token's rules (see
    /// [`crate::token::quirks`]) decide labels, IDs and placeholder certificates; the caller
    /// logs in as the SO where the rules say key generation needs it.
    pub fn run_with_pin(
        &self,
        module: &Module,
        token: &TokenSummary,
        session: &Session,
        pin: Option<&AuthPin>,
    ) -> Result<InitCaOutput> {
        self.run_recorded(module, token, session, pin, &mut |_| Ok(()))
    }

    /// [`InitCaPlan::run_with_pin`], with `record` called on the finished certificate (PEM)
    /// before it is returned: when it fails, the new objects are removed as for any failure.
    pub fn run_recorded(
        &self,
        module: &Module,
        token: &TokenSummary,
        session: &Session,
        pin: Option<&AuthPin>,
        record: &mut dyn FnMut(&str) -> Result<()>,
    ) -> Result<InitCaOutput> {
        let rules = quirks::for_token(token);
        // A PIV slot can decide it by itself (9c: a PIN for every signature).
        let always = self.always_authenticate || rules.always_authenticates(self.key_id.as_deref());
        if self.always_authenticate && !rules.context_login_signing {
            return Err(Error::token(format!(
                "{} cannot sign with always-authenticate keys (a per-signature login breaks the signature); leave out --always-authenticate",
                rules.name
            )));
        }
        if always && pin.is_none() {
            return Err(Error::input(
                "an always-authenticate key needs the PIN for its signatures",
            ));
        }
        // The token must be able to make and use this key before anything is created.
        key::check_capability(module, token, self.spec.into())?;
        let mech = SignMech::choose_for_key(
            &module.mechanisms(token.slot)?,
            SigAlg::for_key(self.spec.into()),
            &token.label,
            always,
        )?;
        let generated = key::generate_with(
            session,
            token,
            self.spec.into(),
            &self.label,
            self.key_id.clone(),
            self.always_authenticate,
            &rules,
        )
        .map_err(|e| e.context(&self.file))?;
        // From here on, undo on failure.
        let mut created: Vec<KeyHandle> = vec![generated.private, generated.public];
        let context_pin = if always { pin } else { None };
        let finished = self
            .finish(session, &rules, &generated, mech, context_pin, &mut created)
            .and_then(|(cert_pem, csr_pem)| record(&cert_pem).map(|()| (cert_pem, csr_pem)));
        match finished {
            Ok((cert_pem, csr_pem)) => Ok(InitCaOutput {
                cert_pem,
                csr_pem,
                key_uri: Pkcs11Uri::for_object(
                    &token.label,
                    &generated.id,
                    &generated.label,
                    ObjectType::Private,
                ),
                warnings: self.warnings.clone(),
            }),
            Err(e) => Err(key::undo_created(module, token, session, &created, e)),
        }
    }

    fn finish(
        &self,
        session: &Session,
        rules: &Quirks,
        generated: &GeneratedKey,
        mech: SignMech,
        pin: Option<&AuthPin>,
        created: &mut Vec<KeyHandle>,
    ) -> Result<(String, String)> {
        #[cfg(feature = "fault-injection")]
        fault::point("after-keygen")?;
        let mut signer =
            TokenSigner::new(session, generated.private, generated.spki.clone(), mech)?;
        if let Some(pin) = pin {
            signer = signer.with_context_login(pin);
        }
        let path_len = self.req.ca.as_ref().and_then(|c| c.path_len());
        let subject = &self.subject;

        // CSR: basicConstraints when a `ca` section is present, SAN when hosts are, as cfssl.
        let mut csr_exts = Vec::new();
        if self.req.ca.is_some() {
            csr_exts.push(build::basic_constraints_ext(true, path_len)?);
        }
        if let Some(e) = hosts::extension(&self.csr_sans, subject.is_empty())? {
            csr_exts.push(e);
        }
        let csr_der = build::csr(subject, csr_exts, &signer as &dyn x509::Signer)?;
        if self.csr_only {
            return Ok((String::new(), build::pem("CERTIFICATE REQUEST", &csr_der)?));
        }

        // Certificate, extensions in Go's order: KU, BC, SKI, SAN, CRL DP. No AKI on a root
        // (as cfssl and Go since 1.7): it would only repeat the SKI.
        let mut exts = vec![
            build::key_usage_ext(FlagSet::from(KeyUsages::KeyCertSign) | KeyUsages::CRLSign)?,
            build::basic_constraints_ext(true, path_len)?,
            build::ski_ext(&generated.spki)?,
        ];
        if let Some(e) = hosts::extension(&self.cert_sans, false)? {
            exts.push(e);
        }
        if !self.req.crl_url.is_empty() {
            exts.push(build::crl_dp_ext(&self.req.crl_url)?);
        }
        let not_before = build::now_rounded() - self.backdate;
        let params = CertParams {
            serial: build::random_serial(&signer)?,
            issuer: subject.clone(),
            subject: subject.clone(),
            subject_key: generated.spki.clone(),
            not_before,
            not_after: not_before + self.expiry,
            extensions: exts,
        };
        let cert_der = build::certificate(&params, &signer)?;

        #[cfg(feature = "fault-injection")]
        fault::point("before-store-cert")?;
        let cert_handle =
            key::store_certificate(session, rules, &cert_der, &generated.label, &generated.id)?;
        created.push(cert_handle);
        #[cfg(feature = "fault-injection")]
        fault::point("after-store-cert")?;
        Ok((
            build::pem("CERTIFICATE", &cert_der)?,
            build::pem("CERTIFICATE REQUEST", &csr_der)?,
        ))
    }
}
