//! `kubeadm sign-csrs`: sign the tree `kubeadm certs generate-csr` leaves (`NAME.key` +
//! `NAME.csr` under the certificate folder, `NAME.conf` + `NAME.conf.csr` under the kubeconfig
//! folder) with the right CA in the token, the CA and usages chosen from kubeadm's file name.
//!
//! kubeadm's CSRs ask for no usages; the signer applies the table's. Every CSR's subject must
//! be the one kubeadm's table gives its file, so a renamed or edited CSR cannot borrow another
//! file's CA or groups; its names pass the issuance policy like every other path.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use der::Encode;
use serde_norway::Value;

use crate::ca::issue::{CaKey, Issuer, LeafRequest};
use crate::error::{Error, Result};
use crate::fsio::{OutputSet, PUBLIC_MODE, SECRET_MODE};
use crate::kube::certs::{self, TokenContext};
use crate::kube::check;
use crate::kube::config::KubeadmConfig;
use crate::kube::pki::{CaKind, Usage};
use crate::x509::build;
use crate::x509::request::{self, ParsedCsr};

/// The CN a file's CSR must carry.
#[derive(Clone, Copy, Debug)]
enum Cn {
    Fixed(&'static str),
    /// The node name (etcd server and peer): any valid host name.
    Node,
    /// `system:node:<node name>` (kubelet.conf).
    KubeletNode,
}

/// One file of kubeadm's CSR tree: base name, CA, usage, CN, O.
type Entry = (&'static str, CaKind, Usage, Cn, Option<&'static str>);

/// The certificate CSRs, under the certificate folder.
const CERT_CSRS: [Entry; 7] = [
    (
        "apiserver",
        CaKind::Kubernetes,
        Usage::Server,
        Cn::Fixed("kube-apiserver"),
        None,
    ),
    (
        "apiserver-kubelet-client",
        CaKind::Kubernetes,
        Usage::Client,
        Cn::Fixed("kube-apiserver-kubelet-client"),
        Some("kubeadm:cluster-admins"),
    ),
    (
        "front-proxy-client",
        CaKind::FrontProxy,
        Usage::Client,
        Cn::Fixed("front-proxy-client"),
        None,
    ),
    ("etcd/server", CaKind::Etcd, Usage::Both, Cn::Node, None),
    ("etcd/peer", CaKind::Etcd, Usage::Both, Cn::Node, None),
    (
        "etcd/healthcheck-client",
        CaKind::Etcd,
        Usage::Client,
        Cn::Fixed("kube-etcd-healthcheck-client"),
        None,
    ),
    (
        "apiserver-etcd-client",
        CaKind::Etcd,
        Usage::Client,
        Cn::Fixed("kube-apiserver-etcd-client"),
        None,
    ),
];

/// The kubeconfig CSRs, under the kubeconfig folder.
const CONF_CSRS: [Entry; 5] = [
    (
        "admin.conf",
        CaKind::Kubernetes,
        Usage::Client,
        Cn::Fixed("kubernetes-admin"),
        Some("kubeadm:cluster-admins"),
    ),
    (
        "super-admin.conf",
        CaKind::Kubernetes,
        Usage::Client,
        Cn::Fixed("kubernetes-super-admin"),
        Some("system:masters"),
    ),
    (
        "controller-manager.conf",
        CaKind::Kubernetes,
        Usage::Client,
        Cn::Fixed("system:kube-controller-manager"),
        None,
    ),
    (
        "scheduler.conf",
        CaKind::Kubernetes,
        Usage::Client,
        Cn::Fixed("system:kube-scheduler"),
        None,
    ),
    (
        "kubelet.conf",
        CaKind::Kubernetes,
        Usage::Client,
        Cn::KubeletNode,
        Some("system:nodes"),
    ),
];

/// One CSR to sign.
struct Job {
    entry: Entry,
    csr_path: PathBuf,
    csr: ParsedCsr,
    cn: String,
    /// Where the certificate goes: `NAME.crt`, or the kubeconfig to complete.
    target: Target,
}

enum Target {
    Crt(PathBuf),
    Conf(PathBuf, Value),
}

/// What `sign-csrs` will do, checked without the token.
pub struct SignCsrsPlan {
    cfg: KubeadmConfig,
    cert_dir: PathBuf,
    jobs: Vec<Job>,
}

fn read(p: &Path) -> Result<Vec<u8>> {
    std::fs::read(p).map_err(|e| Error::input(format!("{}: cannot read: {e}", p.display())))
}

/// The CSR's CN, checked against the table's rule for its file.
fn check_subject(entry: &Entry, csr: &ParsedCsr, source: &str) -> Result<String> {
    let (cns, os) = check::name_cn_and_o(&csr.subject);
    let (_, _, _, rule, want_o) = entry;
    let bad = |what: String| {
        Error::policy(format!(
            "{source}: {what}; kubeadm's table gives this file {}{}",
            match rule {
                Cn::Fixed(cn) => format!("CN \"{cn}\""),
                Cn::Node => "the node name as CN".into(),
                Cn::KubeletNode => "CN \"system:node:<node name>\"".into(),
            },
            want_o
                .map(|o| format!(" and O \"{o}\""))
                .unwrap_or_default()
        ))
    };
    let [cn] = cns.as_slice() else {
        return Err(bad(format!("the subject has {} CNs", cns.len())));
    };
    let ok = match rule {
        Cn::Fixed(want) => cn == want,
        Cn::Node => crate::x509::policy::host_fault(&cn.to_lowercase(), false).is_none(),
        Cn::KubeletNode => cn
            .strip_prefix("system:node:")
            .is_some_and(|n| crate::x509::policy::host_fault(&n.to_lowercase(), false).is_none()),
    };
    let want_os: Vec<String> = want_o.iter().map(|o| o.to_string()).collect();
    if !ok || os != want_os {
        return Err(bad(format!("the request is for CN \"{cn}\" O {os:?}")));
    }
    Ok(cn.clone())
}

/// The kubeconfig beside `NAME.conf.csr`, and the public key of its client-key-data.
fn read_conf(path: &Path) -> Result<(Value, spki::SubjectPublicKeyInfoOwned)> {
    let shown = path.display().to_string();
    let text = String::from_utf8(read(path)?)
        .map_err(|_| Error::input(format!("{shown}: not UTF-8 text")))?;
    let v: Value = serde_norway::from_str(&text)
        .map_err(|e| Error::input(format!("{shown}: not a kubeconfig: {e}")))?;
    let key_b64 = v["users"][0]["user"]["client-key-data"]
        .as_str()
        .ok_or_else(|| {
            Error::input(format!("{shown}: users[0].user.client-key-data is missing"))
        })?;
    let key = STANDARD
        .decode(key_b64.trim())
        .map_err(|e| Error::input(format!("{shown}: client-key-data: {e}")))?;
    let spki = check::key_spki(
        &String::from_utf8_lossy(&key),
        &format!("{shown}: client-key-data"),
    )?;
    Ok((v, spki))
}

impl SignCsrsPlan {
    /// Find the CSRs kubeadm left in `cert_dir` and `kc_dir` that have no certificate yet,
    /// and check each (signature, subject against the table, key beside it).
    pub fn new(cfg: &KubeadmConfig, cert_dir: &Path, kc_dir: Option<&Path>) -> Result<Self> {
        certs::refuse_ca_key_files(cert_dir)?;
        let mut jobs = Vec::new();
        for entry in CERT_CSRS {
            let csr_path = certs::path(cert_dir, entry.0, "csr");
            let crt = certs::path(cert_dir, entry.0, "crt");
            if !csr_path.exists() || crt.exists() {
                continue;
            }
            let key = certs::path(cert_dir, entry.0, "key");
            let key_spki = check::key_spki(
                &String::from_utf8_lossy(&read(&key)?),
                &key.display().to_string(),
            )?;
            jobs.push(Self::job(entry, csr_path, key_spki, Target::Crt(crt))?);
        }
        if let Some(dir) = kc_dir {
            for entry in CONF_CSRS {
                let conf = dir.join(entry.0);
                let csr_path = dir.join(format!("{}.csr", entry.0));
                if !csr_path.exists() {
                    continue;
                }
                let (value, key_spki) = read_conf(&conf)?;
                let signed = value["users"][0]["user"]["client-certificate-data"]
                    .as_str()
                    .is_some_and(|d| !d.trim().is_empty());
                if signed {
                    continue;
                }
                jobs.push(Self::job(
                    entry,
                    csr_path,
                    key_spki,
                    Target::Conf(conf, value),
                )?);
            }
        }
        if jobs.is_empty() {
            return Err(Error::input(format!(
                "no unsigned kubeadm CSR (NAME.csr without NAME.crt) in {}{}; run kubeadm certs generate-csr first",
                cert_dir.display(),
                kc_dir
                    .map(|d| format!(" or *.conf.csr in {}", d.display()))
                    .unwrap_or_default()
            )));
        }
        Ok(Self {
            cfg: cfg.clone(),
            cert_dir: cert_dir.to_path_buf(),
            jobs,
        })
    }

    fn job(
        entry: Entry,
        csr_path: PathBuf,
        key_spki: spki::SubjectPublicKeyInfoOwned,
        target: Target,
    ) -> Result<Job> {
        let shown = csr_path.display().to_string();
        let csr = request::parse(&read(&csr_path)?, &shown)?;
        let cn = check_subject(&entry, &csr, &shown)?;
        if csr.public_key.to_der().ok() != key_spki.to_der().ok() {
            return Err(Error::policy(format!(
                "{shown} is not for the key kubeadm left beside it; run kubeadm certs generate-csr again"
            )));
        }
        Ok(Job {
            entry,
            csr_path,
            csr,
            cn,
            target,
        })
    }

    /// Sign every CSR (making a missing CA in the token first), write `NAME.crt` files and
    /// complete the kubeconfigs, all together; returns report lines.
    pub fn run(&self, t: &TokenContext<'_>) -> Result<Vec<String>> {
        let mut report = Vec::new();
        let mut cas: Vec<(CaKind, CaKey, String)> = Vec::new();
        for kind in CaKind::ALL {
            if !self.jobs.iter().any(|j| j.entry.1 == kind) {
                continue;
            }
            let crt = certs::path(&self.cert_dir, kind.base(), "crt");
            let existing = if crt.exists() {
                Some(check::read_cert(&crt)?)
            } else {
                None
            };
            let (ca, line) = certs::open_ca(t, &self.cfg, &self.cert_dir, kind, existing)?;
            report.push(line);
            let ca_pem = certs::cert_pem(&check::read_cert(&crt)?)?;
            cas.push((kind, ca, ca_pem));
        }
        let mut out = OutputSet::new();
        for job in &self.jobs {
            let Some((_, ca, ca_pem)) = cas.iter().find(|(k, _, _)| *k == job.entry.1) else {
                continue;
            };
            let pem = self.sign(t, ca, job)?;
            match &job.target {
                Target::Crt(p) => {
                    out.add(p, pem.into_bytes(), PUBLIC_MODE);
                    report.push(format!(
                        "[certs] Signed {} → {}",
                        job.csr_path.display(),
                        p.display()
                    ));
                }
                Target::Conf(p, value) => {
                    let text = complete_conf(value.clone(), ca_pem, &pem, p)?;
                    out.add(p, text.into_bytes(), SECRET_MODE);
                    report.push(format!(
                        "[kubeconfig] Signed {} → {}",
                        job.csr_path.display(),
                        p.display()
                    ));
                }
            }
        }
        out.commit()?;
        Ok(report)
    }

    fn sign(&self, t: &TokenContext<'_>, ca: &CaKey, job: &Job) -> Result<String> {
        let (_, _, usage, _, o) = job.entry;
        let issuer = Issuer::new(ca, t.session)?;
        let rsa = job.csr.public_key.algorithm.oid == const_oid::db::rfc5912::RSA_ENCRYPTION;
        let allow = o.filter(|o| *o == "system:masters");
        let profile = certs::profile(job.entry.0, usage, rsa, self.cfg.cert_validity, allow)?;
        // Client certificates in kubeadm's table carry no names; server ones the CSR's.
        let sans = if usage == Usage::Client {
            Vec::new()
        } else {
            job.csr.sans.clone()
        };
        let orgs: Vec<String> = o.iter().map(|o| o.to_string()).collect();
        let leaf = LeafRequest {
            subject: certs::subject_orgs(&job.cn, &orgs)?,
            public_key: job.csr.public_key.clone(),
            sans,
            wants_ca: false,
        };
        let mut warnings = Vec::new();
        let der = issuer
            .issue(&leaf, &profile, &mut warnings)
            .map_err(|e| e.context(job.csr_path.display()))?;
        build::pem("CERTIFICATE", &der)
    }
}

/// Fill a generate-csr kubeconfig's empty `certificate-authority-data` and
/// `client-certificate-data`, keeping everything else.
fn complete_conf(mut v: Value, ca_pem: &str, cert_pem: &str, path: &Path) -> Result<String> {
    let shown = path.display();
    let set = |node: &mut Value, key: &str, data: &str| -> Result<()> {
        match node {
            Value::Mapping(m) => {
                m.insert(
                    Value::String(key.into()),
                    Value::String(STANDARD.encode(data)),
                );
                Ok(())
            }
            _ => Err(Error::input(format!("{shown}: no place for {key}"))),
        }
    };
    set(
        &mut v["clusters"][0]["cluster"],
        "certificate-authority-data",
        ca_pem,
    )?;
    set(
        &mut v["users"][0]["user"],
        "client-certificate-data",
        cert_pem,
    )?;
    serde_norway::to_string(&v).map_err(|e| Error::input(format!("{shown}: {e}")))
}
