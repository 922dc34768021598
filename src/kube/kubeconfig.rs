//! kubeadm's kubeconfig files (admin, super-admin, controller-manager, scheduler, kubelet)
//! and `kubeconfig user`: a client certificate from the Kubernetes CA in the token, embedded
//! with the CA certificate and the software client key, in client-go's layout.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::ca::issue::{CaKey, Issuer};
use crate::error::{Error, Result};
use crate::fsio::{OutputSet, SECRET_MODE};
use crate::kube::certs::{self, TokenContext};
use crate::kube::check;
use crate::kube::config::KubeadmConfig;
use crate::kube::pki::{self, CaKind, KubeconfigSpec, Usage};
use crate::x509::alg::KeyAlg;

#[derive(Serialize, Deserialize, Default)]
struct Kubeconfig {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    clusters: Vec<NamedCluster>,
    #[serde(default)]
    contexts: Vec<NamedContext>,
    #[serde(rename = "current-context", default)]
    current_context: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    users: Vec<NamedUser>,
}

#[derive(Serialize, Deserialize, Default)]
struct NamedCluster {
    cluster: Cluster,
    name: String,
}

#[derive(Serialize, Deserialize, Default)]
struct Cluster {
    #[serde(rename = "certificate-authority-data", default)]
    certificate_authority_data: String,
    #[serde(default)]
    server: String,
}

#[derive(Serialize, Deserialize, Default)]
struct NamedContext {
    context: Context,
    name: String,
}

#[derive(Serialize, Deserialize, Default)]
struct Context {
    cluster: String,
    user: String,
}

#[derive(Serialize, Deserialize, Default)]
struct NamedUser {
    name: String,
    user: User,
}

#[derive(Serialize, Deserialize, Default)]
struct User {
    #[serde(rename = "client-certificate-data", default)]
    client_certificate_data: String,
    #[serde(rename = "client-key-data", default)]
    client_key_data: String,
}

/// The parts of one kubeconfig.
pub struct Credentials<'a> {
    /// `clusterName`.
    pub cluster: &'a str,
    /// The API server URL.
    pub server: &'a str,
    /// The CA certificate, PEM.
    pub ca_pem: &'a str,
    /// The user name (the client certificate's CN).
    pub user: &'a str,
    /// The client certificate, PEM.
    pub cert_pem: &'a str,
    /// The client key, PEM.
    pub key_pem: &'a str,
}

/// A kubeconfig as client-go writes it: one cluster, one user, one context `user@cluster`.
pub fn render(c: &Credentials<'_>) -> Result<String> {
    let context = format!("{}@{}", c.user, c.cluster);
    let k = Kubeconfig {
        api_version: "v1".into(),
        clusters: vec![NamedCluster {
            cluster: Cluster {
                certificate_authority_data: STANDARD.encode(c.ca_pem),
                server: c.server.into(),
            },
            name: c.cluster.into(),
        }],
        contexts: vec![NamedContext {
            context: Context {
                cluster: c.cluster.into(),
                user: c.user.into(),
            },
            name: context.clone(),
        }],
        current_context: context,
        kind: "Config".into(),
        users: vec![NamedUser {
            name: c.user.into(),
            user: User {
                client_certificate_data: STANDARD.encode(c.cert_pem),
                client_key_data: STANDARD.encode(c.key_pem),
            },
        }],
    };
    serde_norway::to_string(&k)
        .map_err(|e| Error::input(format!("cannot write the kubeconfig: {e}")))
}

/// The CA PEM a kubeconfig's current context names (kubeadm's check of an existing file).
fn embedded_ca(text: &str, source: &str) -> Result<String> {
    let k: Kubeconfig = serde_norway::from_str(text)
        .map_err(|e| Error::input(format!("{source}: not a kubeconfig: {e}")))?;
    let ctx = k
        .contexts
        .iter()
        .find(|c| c.name == k.current_context)
        .ok_or_else(|| {
            Error::input(format!(
                "{source}: current-context \"{}\" names no context",
                k.current_context
            ))
        })?;
    let cluster = k
        .clusters
        .iter()
        .find(|c| c.name == ctx.context.cluster)
        .ok_or_else(|| {
            Error::input(format!(
                "{source}: context names cluster \"{}\", which is not there",
                ctx.context.cluster
            ))
        })?;
    let pem = STANDARD
        .decode(cluster.cluster.certificate_authority_data.trim())
        .map_err(|e| Error::input(format!("{source}: certificate-authority-data: {e}")))?;
    Ok(String::from_utf8_lossy(&pem).into_owned())
}

/// What `kubeadm kubeconfig` will do, checked without the token.
pub struct KubeconfigPlan {
    cfg: KubeadmConfig,
    ca_crt: PathBuf,
    ca_pem: String,
    /// Specs with the path and whether the file is kept.
    files: Vec<(KubeconfigSpec, PathBuf, bool)>,
}

impl KubeconfigPlan {
    /// Check the folders: `ca.crt` (and no `ca.key`) in `cert_dir`; existing kubeconfigs in
    /// `kc_dir` must embed this `ca.crt`.
    pub fn new(cfg: &KubeadmConfig, cert_dir: &Path, kc_dir: &Path) -> Result<Self> {
        certs::refuse_ca_key_files(cert_dir)?;
        let ca_crt = certs::path(cert_dir, CaKind::Kubernetes.base(), "crt");
        let ca = check::read_cert(&ca_crt).map_err(|e| {
            Error::input(format!(
                "{e}; make it first with p11ca kubeadm certs --config {} --cert-dir {}",
                cfg.file,
                cert_dir.display()
            ))
        })?;
        let ca_pem = certs::cert_pem(&ca)?;
        let mut files = Vec::new();
        for spec in pki::kubeconfigs(cfg) {
            let p = kc_dir.join(&spec.file);
            let kept = p.exists();
            if kept {
                let shown = p.display().to_string();
                let text = std::fs::read_to_string(&p)
                    .map_err(|e| Error::input(format!("{shown}: cannot read: {e}")))?;
                if embedded_ca(&text, &shown)?.trim() != ca_pem.trim() {
                    return Err(Error::policy(format!(
                        "{shown} embeds another CA than {}; move it away to have it made again",
                        ca_crt.display()
                    )));
                }
            }
            files.push((spec, p, kept));
        }
        Ok(Self {
            cfg: cfg.clone(),
            ca_crt,
            ca_pem,
            files,
        })
    }

    /// Make the missing kubeconfigs (mode 0600, all or nothing); returns report lines.
    pub fn run(&self, t: &TokenContext<'_>, cert_dir: &Path) -> Result<Vec<String>> {
        let mut report = Vec::new();
        if self.files.iter().all(|(_, _, kept)| *kept) {
            for (_, p, _) in &self.files {
                report.push(format!("[kubeconfig] Using existing {}", p.display()));
            }
            return Ok(report);
        }
        let ca = self.open_ca(t, cert_dir)?;
        let issuer = Issuer::new(&ca, t.session)?;
        let mut out = OutputSet::new();
        for (spec, p, kept) in &self.files {
            if *kept {
                report.push(format!("[kubeconfig] Using existing {}", p.display()));
                continue;
            }
            let server = if spec.control_plane {
                self.cfg.control_plane_url()
            } else {
                self.cfg.local_url()
            };
            let orgs: Vec<String> = spec.o.iter().cloned().collect();
            let text = self.client(&issuer, &spec.cn, &orgs, &server, true)?;
            out.add(p, text.into_bytes(), SECRET_MODE);
            report.push(format!(
                "[kubeconfig] Writing {} (CN {}{}, server {server})",
                p.display(),
                spec.cn,
                spec.o
                    .as_ref()
                    .map(|o| format!(", O {o}"))
                    .unwrap_or_default()
            ));
        }
        if let Some(dir) = self.files.first().and_then(|(_, p, _)| p.parent()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::output(format!("{}: cannot create the folder: {e}", dir.display()))
            })?;
        }
        out.commit()?;
        Ok(report)
    }

    /// `kubeadm kubeconfig user --client-name NAME [--org O]…`: one kubeconfig for the
    /// control-plane endpoint, returned (not written). `system:masters` stays refused here:
    /// super-admin.conf is the one credential that carries it.
    pub fn user(
        &self,
        t: &TokenContext<'_>,
        cert_dir: &Path,
        name: &str,
        orgs: &[String],
    ) -> Result<String> {
        if name.is_empty() {
            return Err(Error::input("--client-name must not be empty"));
        }
        let ca = self.open_ca(t, cert_dir)?;
        let issuer = Issuer::new(&ca, t.session)?;
        self.client(&issuer, name, orgs, &self.cfg.control_plane_url(), false)
    }

    fn open_ca(&self, t: &TokenContext<'_>, cert_dir: &Path) -> Result<CaKey> {
        let cert = check::read_cert(&self.ca_crt)?;
        Ok(certs::open_ca(t, &self.cfg, cert_dir, CaKind::Kubernetes, Some(cert))?.0)
    }

    fn client(
        &self,
        issuer: &Issuer<'_>,
        cn: &str,
        orgs: &[String],
        server: &str,
        table: bool,
    ) -> Result<String> {
        // Only kubeadm's own super-admin.conf may carry system:masters.
        let allow =
            (table && orgs.iter().any(|o| o == "system:masters")).then_some("system:masters");
        let profile = certs::profile(
            "kubeconfig",
            Usage::Client,
            matches!(self.cfg.key_alg, KeyAlg::Rsa(_)),
            self.cfg.cert_validity,
            allow,
        )?;
        let (cert, key) = certs::issue_with_new_key(
            issuer,
            self.cfg.key_alg,
            certs::subject_orgs(cn, orgs)?,
            Vec::new(),
            &profile,
        )?;
        render(&Credentials {
            cluster: &self.cfg.cluster_name,
            server,
            ca_pem: &self.ca_pem,
            user: cn,
            cert_pem: &cert,
            key_pem: &key,
        })
    }
}
