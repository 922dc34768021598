//! `gencert -ca --key-in-token`: a certificate issued by the CA for a key generated in the
//! token (a delegated OCSP responder's, say), which, like a CA key, never leaves it.
//!
//! Order of work, as in [`crate::ca::init`]: everything that can be checked without the token
//! is checked first; then the key is generated, its CSR signed by it, the certificate issued by
//! the CA key (each signature verified in software) and stored next to the key, and the caller
//! records it. If any step after key generation fails, every object this run created is
//! destroyed, so the token is as before.

use x509_cert::name::Name;

use crate::ca::issue::{self, CaKey, Issuer, LeafRequest};
use crate::cfssl::config::Profile;
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
use crate::x509::build;
use crate::x509::hosts::{self, San};
use crate::x509::name::{self, SubjectSpec};

/// A validated request for a certificate whose key is made in the token.
#[derive(Clone, Debug)]
pub struct TokenLeafPlan {
    file: String,
    spec: KeySpec,
    subject: Name,
    sans: Vec<San>,
    label: String,
    key_id: Option<Vec<u8>>,
}

/// What a run produced.
#[derive(Clone, Debug)]
pub struct TokenLeafOutput {
    /// The certificate, DER (signature verified).
    pub cert_der: Vec<u8>,
    /// The CSR the new key signed, PEM.
    pub csr_pem: String,
    /// The handle of the new private key.
    pub key_uri: Pkcs11Uri,
    /// Notes for the user (a clipped validity and the like).
    pub warnings: Vec<String>,
}

impl TokenLeafPlan {
    /// Validate `req` (read from `file`): the CN replaced by `cn`, its hosts by `sans`; the
    /// key's label is `label`, else the CN; its CKA_ID `key_id`, else random.
    pub fn new(
        req: &CsrRequest,
        file: &str,
        cn: Option<&str>,
        sans: Option<Vec<San>>,
        label: Option<&str>,
        key_id: Option<Vec<u8>>,
    ) -> Result<Self> {
        if req.ca.is_some() {
            return Err(Error::input(format!(
                "{file}: the \"ca\" section is only allowed with -initca"
            )));
        }
        let spec = req.key_spec(file)?;
        let cn = cn.unwrap_or(&req.cn);
        let subject = name::build(&SubjectSpec {
            cn,
            names: &req.names,
            serial_number: &req.serialnumber,
        })
        .map_err(|e| e.context(file))?;
        let sans = match sans {
            Some(s) => s,
            None => hosts::parse_list(&req.hosts, &format!("{file}: hosts"))?,
        };
        let label = match label {
            Some("") => return Err(Error::input("--key-label must not be empty")),
            Some(l) => l.to_string(),
            None if !cn.is_empty() => cn.to_string(),
            None => {
                return Err(Error::input(format!(
                    "{file}: no CN to label the new key with; give --key-label"
                )));
            }
        };
        if key_id.as_ref().is_some_and(Vec::is_empty) {
            return Err(Error::input("--key-id must not be empty"));
        }
        Ok(Self {
            file: file.to_string(),
            spec,
            subject,
            sans,
            label,
            key_id,
        })
    }

    /// Make the key in `token` (logged in on `session`, where `ca` signs too), have `ca` issue
    /// its certificate under `profile`, store it next to the key, and pass it to `record`
    /// (which may refuse it); any failure after the key exists removes the new objects.
    /// Where keys are made under the SO login (ykcs11), `session` is the SO's and the new
    /// key signs its CSR after a context-specific login with the user `pin`: the SO's login
    /// does not verify the card's PIN.
    pub fn run(
        &self,
        module: &Module,
        token: &TokenSummary,
        (session, pin): (&Session, &AuthPin),
        ca: &CaKey,
        profile: &Profile,
        record: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<TokenLeafOutput> {
        let rules = quirks::for_token(token);
        let context_pin = rules.keygen_needs_so.then_some(pin);
        // The profile's rules are checked on the planned key before the token makes it.
        let ca_subject = ca.certificate().tbs_certificate().subject();
        issue::check_planned(
            &self.subject,
            &self.sans,
            self.spec.into(),
            profile,
            ca_subject,
        )
        .map_err(|e| e.context(&self.file))?;
        key::check_capability(module, token, self.spec.into())?;
        let mech = SignMech::choose_for_key(
            &module.mechanisms(token.slot)?,
            SigAlg::for_key(self.spec.into()),
            &token.label,
            context_pin.is_some(),
        )?;
        let generated = key::generate_with(
            session,
            token,
            self.spec.into(),
            &self.label,
            self.key_id.clone(),
            false,
            &rules,
        )
        .map_err(|e| e.context(&self.file))?;
        // From here on, undo on failure.
        let mut created: Vec<KeyHandle> = vec![generated.private, generated.public];
        let finished = self
            .finish(
                (session, context_pin),
                &rules,
                &generated,
                mech,
                (ca, profile),
                &mut created,
            )
            .and_then(|done| record(&done.0).map(|()| done));
        match finished {
            Ok((cert_der, csr_pem, warnings)) => Ok(TokenLeafOutput {
                cert_der,
                csr_pem,
                key_uri: Pkcs11Uri::for_object(
                    &token.label,
                    &generated.id,
                    &generated.label,
                    ObjectType::Private,
                ),
                warnings,
            }),
            Err(e) => Err(key::undo_created(module, token, session, &created, e)),
        }
    }

    /// The CSR signed by the new key, the certificate issued by `ca`, stored next to the key.
    fn finish(
        &self,
        (session, context_pin): (&Session, Option<&AuthPin>),
        rules: &Quirks,
        generated: &GeneratedKey,
        mech: SignMech,
        (ca, profile): (&CaKey, &Profile),
        created: &mut Vec<KeyHandle>,
    ) -> Result<(Vec<u8>, String, Vec<String>)> {
        #[cfg(feature = "fault-injection")]
        fault::point("after-keygen")?;
        let mut signer =
            TokenSigner::new(session, generated.private, generated.spki.clone(), mech)?;
        if let Some(pin) = context_pin {
            signer = signer.with_context_login(pin);
        }
        let csr_exts = hosts::extension(&self.sans, self.subject.is_empty())?
            .into_iter()
            .collect();
        let csr_der = build::csr(&self.subject, csr_exts, &signer as &dyn x509::Signer)?;
        let leaf = LeafRequest {
            subject: self.subject.clone(),
            public_key: generated.spki.clone(),
            sans: self.sans.clone(),
            wants_ca: false,
        };
        let mut warnings = Vec::new();
        let cert_der = Issuer::new(ca, session)?
            .issue(&leaf, profile, &mut warnings)
            .map_err(|e| e.context(&self.file))?;
        #[cfg(feature = "fault-injection")]
        fault::point("before-store-cert")?;
        let handle =
            key::store_certificate(session, rules, &cert_der, &generated.label, &generated.id)?;
        created.push(handle);
        #[cfg(feature = "fault-injection")]
        fault::point("after-store-cert")?;
        Ok((
            cert_der,
            build::pem("CERTIFICATE REQUEST", &csr_der)?,
            warnings,
        ))
    }
}
