//! `kubeadm certs`: kubeadm's external-CA layout with the three CA keys in the token.
//!
//! Everything that can be checked without the token is checked first ([`CertsPlan::new`]):
//! the configuration, no `*.key` of a CA in the folder, and every file already there. Then
//! each missing CA is made in the token (its certificate written at once, so a later failure
//! leaves a CA a second run finds again), and the missing leaves and `sa.*` are written
//! together, all or nothing.

use std::path::{Path, PathBuf};

use der::flagset::FlagSet;
use der::{Encode, EncodePem};
use x509_cert::Certificate;
use x509_cert::ext::pkix::KeyUsages;

use crate::ca::init::{InitCaOptions, InitCaPlan};
use crate::ca::issue::{CaKey, Issuer, LeafRequest};
use crate::cfssl::config::{Profile, SigningConfig};
use crate::cfssl::csr::{CaSection, CsrRequest, KeyRequest, NameEntry};
use crate::error::{Error, Result};
use crate::fsio::{OutputSet, PUBLIC_MODE, SECRET_MODE};
use crate::kube::check;
use crate::kube::config::KubeadmConfig;
use crate::kube::pki::{self, CaKind, LeafSpec, Usage};
use crate::token::key::{self, ObjectSummary};
use crate::token::uri::{ObjectType, Pkcs11Uri};
use crate::token::{AuthPin, Module, Session, TokenSummary};
use crate::x509::alg::KeyAlg;
use crate::x509::build;
use crate::x509::hosts::San;
use crate::x509::name::{self, SubjectSpec};
use crate::x509::policy::{Policy, SubjectAttr};
use crate::x509::softkey::SoftKey;

/// A logged-in token to make and use the CA keys in.
pub struct TokenContext<'a> {
    /// The loaded module.
    pub module: &'a Module,
    /// The chosen token.
    pub token: &'a TokenSummary,
    /// A logged-in read-write session.
    pub session: &'a Session,
    /// The user PIN (for keys that need it for every signature).
    pub pin: &'a AuthPin,
}

/// A CA's certificate, if its file exists.
#[derive(Clone, Debug)]
struct CaState {
    kind: CaKind,
    cert: Option<Certificate>,
}

/// What `kubeadm certs` will do, checked without the token.
#[derive(Debug)]
pub struct CertsPlan {
    cfg: KubeadmConfig,
    dir: PathBuf,
    cas: Vec<CaState>,
    /// Leaves with whether they are kept (true) or made.
    leaves: Vec<(LeafSpec, bool)>,
    sa_kept: bool,
    /// Notes for the user (SANs left out).
    pub warnings: Vec<String>,
}

/// A path under the certificate folder.
pub fn path(dir: &Path, base: &str, ext: &str) -> PathBuf {
    dir.join(format!("{base}.{ext}"))
}

/// Refuse a folder holding a CA key file: kubeadm would then not use external-CA mode.
pub fn refuse_ca_key_files(dir: &Path) -> Result<()> {
    for kind in CaKind::ALL {
        let p = path(dir, kind.base(), "key");
        if std::fs::symlink_metadata(&p).is_ok() {
            return Err(Error::policy(format!(
                "{} exists: with a CA key file kubeadm does not use external-CA mode, and p11ca keeps CA keys in the token; move it out of {} (nothing was written)",
                p.display(),
                dir.display()
            )));
        }
    }
    Ok(())
}

fn both_or_neither(crt: &Path, key: &Path) -> Result<bool> {
    match (crt.exists(), key.exists()) {
        (true, true) => Ok(true),
        (false, false) => Ok(false),
        (true, false) => Err(Error::policy(format!(
            "{} exists without {}; move it away to have both made, or supply the key",
            crt.display(),
            key.display()
        ))),
        (false, true) => Err(Error::policy(format!(
            "{} exists without {}; move it away to have both made, or supply the certificate",
            key.display(),
            crt.display()
        ))),
    }
}

impl CertsPlan {
    /// Check `cfg` against the folder `dir` (which may not exist yet).
    pub fn new(cfg: &KubeadmConfig, dir: &Path) -> Result<Self> {
        refuse_ca_key_files(dir)?;
        let mut warnings = Vec::new();
        let leaves = pki::leaves(cfg, &mut warnings);
        let mut cas = Vec::new();
        for kind in CaKind::ALL {
            if kind == CaKind::Etcd && cfg.external_etcd {
                continue;
            }
            let p = path(dir, kind.base(), "crt");
            let cert = if p.exists() {
                let c = check::read_cert(&p)?;
                if !check::is_ca(&c) {
                    return Err(Error::policy(format!(
                        "{} is not a CA certificate (no CA:TRUE)",
                        p.display()
                    )));
                }
                Some(c)
            } else {
                None
            };
            cas.push(CaState { kind, cert });
        }
        let mut planned = Vec::new();
        for spec in leaves {
            // The issuance policy sees these names again when they are signed; checking them
            // here makes a bad name fail before any CA key is made.
            precheck_names(&spec, &cfg.file)?;
            let (crt, key) = (path(dir, &spec.base, "crt"), path(dir, &spec.base, "key"));
            let kept = both_or_neither(&crt, &key)?;
            if kept {
                let ca = cas
                    .iter()
                    .find(|c| c.kind == spec.ca)
                    .and_then(|c| c.cert.as_ref())
                    .ok_or_else(|| {
                        Error::policy(format!(
                            "{} exists but its CA {} does not; move the leaf away or restore the CA certificate",
                            crt.display(),
                            path(dir, spec.ca.base(), "crt").display()
                        ))
                    })?;
                check::existing_leaf(&spec, &crt, &key, ca)?;
            }
            planned.push((spec, kept));
        }
        let sa = dir.join("sa.key");
        let sa_kept = sa.exists();
        if sa_kept {
            let pem = std::fs::read_to_string(&sa)
                .map_err(|e| Error::input(format!("{}: cannot read: {e}", sa.display())))?;
            check::key_spki(&pem, &sa.display().to_string())?;
        }
        Ok(Self {
            cfg: cfg.clone(),
            dir: dir.to_path_buf(),
            cas,
            leaves: planned,
            sa_kept,
            warnings,
        })
    }

    /// What a run would do, one line per file (`--dry-run`).
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        for c in &self.cas {
            let p = path(&self.dir, c.kind.base(), "crt");
            let label = c.kind.key_label(&self.cfg.cluster_name);
            out.push(match c.cert {
                Some(_) => format!("keep {} (CA key in the token: {label})", p.display()),
                None => format!(
                    "make {} (CN {}, key generated in the token as {label})",
                    p.display(),
                    c.kind.cn()
                ),
            });
        }
        for (spec, kept) in &self.leaves {
            let verb = if *kept { "keep" } else { "make" };
            out.push(format!(
                "{verb} {} and .key ({})",
                path(&self.dir, &spec.base, "crt").display(),
                describe_leaf(spec)
            ));
        }
        let verb = if self.sa_kept { "keep" } else { "make" };
        out.push(format!("{verb} {}/sa.key and sa.pub", self.dir.display()));
        out
    }
}

fn precheck_names(spec: &LeafSpec, file: &str) -> Result<()> {
    let max = Policy::default().max_sans;
    if spec.sans.len() > max {
        return Err(Error::policy(format!(
            "{file}: {} would get {} subjectAltNames; the issuance policy allows at most {max}",
            spec.base,
            spec.sans.len()
        )));
    }
    for san in &spec.sans {
        crate::x509::policy::check_san(san)
            .map_err(|e| e.context(format!("{file}: {}", spec.base)))?;
    }
    Ok(())
}

fn describe_leaf(spec: &LeafSpec) -> String {
    let mut s = format!("CN {}", spec.cn);
    if let Some(o) = &spec.o {
        s.push_str(&format!(", O {o}"));
    }
    s.push_str(&format!(
        ", {}, signed by {}",
        spec.usage.name(),
        spec.ca.cn()
    ));
    if !spec.sans.is_empty() {
        let names: Vec<String> = spec
            .sans
            .iter()
            .map(|x| match x {
                San::Ip(ip) => ip.to_string(),
                San::Dns(v) | San::Email(v) | San::Uri(v) => v.clone(),
            })
            .collect();
        s.push_str(&format!(", SANs {}", names.join(" ")));
    }
    s
}

/// The token URI that names a CA's key by its label.
pub fn ca_key_uri(token: &TokenSummary, label: &str) -> Pkcs11Uri {
    Pkcs11Uri {
        token: Some(token.label.clone()),
        object: Some(label.to_string()),
        object_type: Some(ObjectType::Private),
        ..Pkcs11Uri::default()
    }
}

fn private_keys_labelled(session: &Session, label: &str) -> Result<Vec<ObjectSummary>> {
    Ok(key::list_objects(session)?
        .into_iter()
        .filter(|o| o.class == ObjectType::Private && o.label == label)
        .collect())
}

/// The kubeadm-shaped signing profile for one usage: digitalSignature (+ keyEncipherment for
/// RSA keys), the usage's EKUs, notBefore 5 minutes back and notAfter `validity` seconds from
/// now.
pub fn profile(
    name: &str,
    usage: Usage,
    rsa: bool,
    validity: i64,
    allow_o: Option<&str>,
) -> Result<Profile> {
    let mut p = SigningConfig::cfssl_default().profile(None)?.clone();
    p.name = name.to_string();
    p.key_usage = if rsa {
        FlagSet::from(KeyUsages::DigitalSignature) | KeyUsages::KeyEncipherment
    } else {
        FlagSet::from(KeyUsages::DigitalSignature)
    };
    p.ext_key_usage = usage.ekus();
    p.expiry_secs = validity;
    p.backdate_secs = Some(300);
    // As kubeadm: notBefore 5 minutes back, notAfter the whole period from now.
    p.not_after = Some(build::now_rounded() + validity);
    if let Some(o) = allow_o {
        // Only the profile that must issue this O (system:masters for super-admin.conf)
        // lifts the built-in refusal.
        p.policy = Policy {
            allow: vec![(SubjectAttr::O, vec![o.to_string()])],
            ..Policy::default()
        };
    }
    Ok(p)
}

/// The subject kubeadm writes: O (if any), then CN.
pub fn subject(cn: &str, o: Option<&str>) -> Result<x509_cert::name::Name> {
    let orgs: Vec<String> = o.map(str::to_string).into_iter().collect();
    subject_orgs(cn, &orgs)
}

/// The subject with several O values (one multi-valued RDN, as Go writes them), then CN.
pub fn subject_orgs(cn: &str, orgs: &[String]) -> Result<x509_cert::name::Name> {
    let names: Vec<NameEntry> = orgs
        .iter()
        .map(|o| NameEntry {
            o: o.clone(),
            ..NameEntry::default()
        })
        .collect();
    name::build(&SubjectSpec {
        cn,
        names: &names,
        serial_number: "",
    })
}

/// Make one certificate for a fresh software key; returns (cert PEM, key PEM).
pub fn issue_with_new_key(
    issuer: &Issuer<'_>,
    alg: KeyAlg,
    subject: x509_cert::name::Name,
    sans: Vec<San>,
    profile: &Profile,
) -> Result<(String, zeroize::Zeroizing<String>)> {
    let k = SoftKey::generate(alg)?;
    let leaf = LeafRequest {
        subject,
        public_key: crate::x509::Signer::public_key(&k).clone(),
        sans,
        wants_ca: false,
    };
    let mut warnings = Vec::new();
    let der = issuer.issue(&leaf, profile, &mut warnings)?;
    Ok((build::pem("CERTIFICATE", &der)?, k.to_pem()?))
}

/// Open (or make) the CA `kind` in the token; returns its key and a line for the report.
pub fn open_ca(
    t: &TokenContext<'_>,
    cfg: &KubeadmConfig,
    dir: &Path,
    kind: CaKind,
    existing: Option<Certificate>,
) -> Result<(CaKey, String)> {
    let label = kind.key_label(&cfg.cluster_name);
    let crt = path(dir, kind.base(), "crt");
    let uri = ca_key_uri(t.token, &label);
    let (cert, line) = match existing {
        Some(c) => {
            if private_keys_labelled(t.session, &label)?.is_empty() {
                return Err(Error::policy(format!(
                    "{} exists but token \"{}\" has no key labelled \"{label}\"; use the token that holds its key, or move the certificate away to make a new CA",
                    crt.display(),
                    t.token.label
                )));
            }
            let line = format!(
                "[certs] Using existing {} keyless certificate authority (key in the token: {uri})",
                kind.base()
            );
            (c, line)
        }
        None => {
            if !private_keys_labelled(t.session, &label)?.is_empty() {
                return Err(Error::policy(format!(
                    "token \"{}\" already holds a key labelled \"{label}\" but {} is missing; restore the certificate, or delete that key to make a new CA",
                    t.token.label,
                    crt.display()
                )));
            }
            let cert = make_ca(t, cfg, kind, &label, &crt)?;
            (
                cert,
                format!(
                    "[certs] Generating \"{}\" certificate authority, key in the token: {uri}",
                    kind.base()
                ),
            )
        }
    };
    let found = key::find_private_key(t.session, t.token, &uri)?;
    let mut ca = CaKey::new(
        t.module,
        t.token,
        cert,
        &crt.display().to_string(),
        &found,
        &uri,
    )?;
    ca.set_pin(t.pin.clone());
    Ok((ca, line))
}

fn key_request(alg: KeyAlg) -> KeyRequest {
    let (algo, size) = match alg {
        KeyAlg::Rsa(bits) => ("rsa", bits as u32),
        KeyAlg::EcP256 => ("ecdsa", 256),
        KeyAlg::EcP384 => ("ecdsa", 384),
    };
    KeyRequest {
        algo: Some(algo.into()),
        size: Some(size),
    }
}

/// Generate the CA key in the token and its self-signed certificate (through `gencert
/// -initca`'s plan, which undoes the key on failure); the certificate is written at once.
fn make_ca(
    t: &TokenContext<'_>,
    cfg: &KubeadmConfig,
    kind: CaKind,
    label: &str,
    crt: &Path,
) -> Result<Certificate> {
    let req = CsrRequest {
        cn: kind.cn().to_string(),
        key: Some(key_request(cfg.key_alg)),
        ca: Some(CaSection {
            expiry: format!("{}s", cfg.ca_validity),
            ..CaSection::default()
        }),
        ..CsrRequest::default()
    };
    let opts = InitCaOptions {
        key_label: Some(label.to_string()),
        ..InitCaOptions::default()
    };
    let plan = InitCaPlan::new(&req, &cfg.file, &opts)?;
    let out = plan.run_with_pin(t.module, t.token, t.session, Some(t.pin))?;
    if let Some(parent) = crt.parent() {
        std::fs::create_dir_all(parent).map_err(|e| {
            Error::output(format!(
                "{}: cannot create the folder: {e}",
                parent.display()
            ))
        })?;
    }
    let mut files = OutputSet::new();
    files.add(crt, out.cert_pem.as_bytes(), PUBLIC_MODE);
    files.commit()?;
    crate::ca::issue::parse_ca_cert(out.cert_pem.as_bytes(), &crt.display().to_string())
}

fn sa_files(dir: &Path, alg: KeyAlg, files: &mut OutputSet) -> Result<()> {
    // The service-account key is not a certificate: kube-apiserver and the controller-manager
    // read it as a file, so it is made in software as kubeadm does.
    let k = SoftKey::generate(alg)?;
    let spki = crate::x509::Signer::public_key(&k);
    let pub_pem = spki
        .to_pem(der::pem::LineEnding::LF)
        .map_err(|e| Error::input(format!("cannot encode sa.pub: {e}")))?;
    files.add(dir.join("sa.key"), k.to_pem()?.as_bytes(), SECRET_MODE);
    files.add(dir.join("sa.pub"), pub_pem.into_bytes(), SECRET_MODE);
    Ok(())
}

fn sa_pub_from_key(dir: &Path, files: &mut OutputSet) -> Result<()> {
    let p = dir.join("sa.key");
    let pem = std::fs::read_to_string(&p)
        .map_err(|e| Error::input(format!("{}: cannot read: {e}", p.display())))?;
    let spki = check::key_spki(&pem, &p.display().to_string())?;
    let pub_pem = spki
        .to_pem(der::pem::LineEnding::LF)
        .map_err(|e| Error::input(format!("cannot encode sa.pub: {e}")))?;
    files.add(dir.join("sa.pub"), pub_pem.into_bytes(), SECRET_MODE);
    Ok(())
}

impl CertsPlan {
    /// Make what is missing; returns the report lines (kubeadm's `[certs]` style).
    pub fn run(&self, t: &TokenContext<'_>) -> Result<Vec<String>> {
        let mut report = Vec::new();
        let mut cas: Vec<(CaKind, CaKey)> = Vec::new();
        for c in &self.cas {
            let (ca, line) = open_ca(t, &self.cfg, &self.dir, c.kind, c.cert.clone())?;
            report.push(line);
            cas.push((c.kind, ca));
        }
        let rsa = matches!(self.cfg.key_alg, KeyAlg::Rsa(_));
        let mut files = OutputSet::new();
        for (spec, kept) in &self.leaves {
            let crt = path(&self.dir, &spec.base, "crt");
            if *kept {
                report.push(format!(
                    "[certs] Using existing {} certificate and key on disk",
                    spec.base
                ));
                continue;
            }
            let ca = cas
                .iter()
                .find(|(k, _)| *k == spec.ca)
                .map(|(_, c)| c)
                .ok_or_else(|| Error::input(format!("no CA for {}", spec.base)))?;
            let issuer = Issuer::new(ca, t.session)?;
            let prof = profile(&spec.base, spec.usage, rsa, self.cfg.cert_validity, None)?;
            let (cert, key) = issue_with_new_key(
                &issuer,
                self.cfg.key_alg,
                subject(&spec.cn, spec.o.as_deref())?,
                spec.sans.clone(),
                &prof,
            )?;
            files.add(&crt, cert.into_bytes(), PUBLIC_MODE);
            files.add(
                path(&self.dir, &spec.base, "key"),
                key.as_bytes(),
                SECRET_MODE,
            );
            report.push(format!(
                "[certs] Generating \"{}\" certificate and key ({})",
                spec.base,
                describe_leaf(spec)
            ));
        }
        if self.sa_kept {
            if !self.dir.join("sa.pub").exists() {
                sa_pub_from_key(&self.dir, &mut files)?;
            }
            report.push("[certs] Using the existing \"sa\" key".into());
        } else {
            sa_files(&self.dir, self.cfg.key_alg, &mut files)?;
            report.push("[certs] Generating \"sa\" key and public key: sa.key is a software key file, because kube-apiserver and kube-controller-manager read the service-account signing key from disk".into());
        }
        if !self.cfg.external_etcd {
            std::fs::create_dir_all(self.dir.join("etcd")).map_err(|e| {
                Error::output(format!(
                    "{}/etcd: cannot create the folder: {e}",
                    self.dir.display()
                ))
            })?;
        }
        files.commit()?;
        Ok(report)
    }
}

/// A certificate as PEM.
pub fn cert_pem(cert: &Certificate) -> Result<String> {
    let der = cert
        .to_der()
        .map_err(|e| Error::input(format!("cannot encode the certificate: {e}")))?;
    build::pem("CERTIFICATE", &der)
}
