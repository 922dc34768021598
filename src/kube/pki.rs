//! kubeadm's certificate table: which CA signs what, with which subject, usages and names
//! (Kubernetes' "PKI certificates and requirements", as kubeadm's certlist.go writes it).

use std::net::IpAddr;

use const_oid::ObjectIdentifier;
use const_oid::db::rfc5280::{ID_KP_CLIENT_AUTH, ID_KP_SERVER_AUTH};

use crate::kube::config::KubeadmConfig;
use crate::x509::hosts::San;
use crate::x509::policy::host_fault;

/// One of kubeadm's three CAs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaKind {
    /// `ca.crt`, CN `kubernetes`.
    Kubernetes,
    /// `front-proxy-ca.crt`, CN `front-proxy-ca`.
    FrontProxy,
    /// `etcd/ca.crt`, CN `etcd-ca`.
    Etcd,
}

impl CaKind {
    /// All three, in the order they are made.
    pub const ALL: [CaKind; 3] = [CaKind::Kubernetes, CaKind::FrontProxy, CaKind::Etcd];

    /// The file base name under the certificate folder (`NAME.crt`).
    pub fn base(self) -> &'static str {
        match self {
            CaKind::Kubernetes => "ca",
            CaKind::FrontProxy => "front-proxy-ca",
            CaKind::Etcd => "etcd/ca",
        }
    }

    /// The CA certificate's CN, as kubeadm writes it.
    pub fn cn(self) -> &'static str {
        match self {
            CaKind::Kubernetes => "kubernetes",
            CaKind::FrontProxy => "front-proxy-ca",
            CaKind::Etcd => "etcd-ca",
        }
    }

    /// CKA_LABEL of the CA's key (and certificate) in the token: the cluster name and the
    /// CA's role, so one token can hold the CAs of several clusters and a second run finds
    /// them again.
    pub fn key_label(self, cluster_name: &str) -> String {
        let role = match self {
            CaKind::Kubernetes => "ca",
            CaKind::FrontProxy => "front-proxy-ca",
            CaKind::Etcd => "etcd-ca",
        };
        format!("{cluster_name}-{role}")
    }
}

/// What a certificate is used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// serverAuth.
    Server,
    /// clientAuth.
    Client,
    /// serverAuth and clientAuth.
    Both,
}

impl Usage {
    /// The usages as the report prints them.
    pub fn name(self) -> &'static str {
        match self {
            Usage::Server => "serverAuth",
            Usage::Client => "clientAuth",
            Usage::Both => "serverAuth+clientAuth",
        }
    }

    /// The extended key usages, in kubeadm's order.
    pub fn ekus(self) -> Vec<ObjectIdentifier> {
        match self {
            Usage::Server => vec![ID_KP_SERVER_AUTH],
            Usage::Client => vec![ID_KP_CLIENT_AUTH],
            Usage::Both => vec![ID_KP_SERVER_AUTH, ID_KP_CLIENT_AUTH],
        }
    }
}

/// One leaf certificate of the table.
#[derive(Clone, Debug)]
pub struct LeafSpec {
    /// File base name under the certificate folder (`etcd/server` → `etcd/server.crt`).
    pub base: String,
    /// The CA that signs it.
    pub ca: CaKind,
    /// Subject CN.
    pub cn: String,
    /// Subject O, if any.
    pub o: Option<String>,
    /// Usages.
    pub usage: Usage,
    /// subjectAltNames.
    pub sans: Vec<San>,
}

/// `apiServer.certSANs`-style entries: IPs, DNS names (wildcards allowed); anything else is
/// dropped with a warning, as kubeadm does.
fn extra_sans(entries: &[String], field: &str, out: &mut Vec<San>, warnings: &mut Vec<String>) {
    for e in entries {
        if let Ok(ip) = e.parse::<IpAddr>() {
            out.push(San::Ip(ip));
        } else if host_fault(&e.to_lowercase(), true).is_none() {
            out.push(San::Dns(e.clone()));
        } else {
            warnings.push(format!(
                "{field}: \"{}\" is neither an IP address nor a DNS name; left out (as kubeadm does)",
                e.escape_debug()
            ));
        }
    }
}

/// kubeadm's `RemoveDuplicateAltNames`: DNS names de-duplicated and sorted, IPs de-duplicated
/// in first-seen order.
fn dedup(sans: Vec<San>) -> Vec<San> {
    let mut dns: Vec<String> = sans
        .iter()
        .filter_map(|s| match s {
            San::Dns(d) => Some(d.clone()),
            _ => None,
        })
        .collect();
    dns.sort();
    dns.dedup();
    let mut out: Vec<San> = dns.into_iter().map(San::Dns).collect();
    for s in sans.into_iter().filter(|s| matches!(s, San::Ip(_))) {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

fn api_server_sans(c: &KubeadmConfig, warnings: &mut Vec<String>) -> Vec<San> {
    let mut sans = vec![San::Dns(c.node_name.clone())];
    for n in [
        "kubernetes".to_string(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        format!("kubernetes.default.svc.{}", c.dns_domain),
    ] {
        sans.push(San::Dns(n));
    }
    sans.push(San::Ip(c.api_server_vip));
    sans.push(San::Ip(c.advertise_address));
    if let Some((host, _)) = &c.control_plane_endpoint {
        sans.push(match host.parse::<IpAddr>() {
            Ok(ip) => San::Ip(ip),
            Err(_) => San::Dns(host.clone()),
        });
    }
    extra_sans(&c.cert_sans, "apiServer.certSANs", &mut sans, warnings);
    dedup(sans)
}

fn etcd_sans(
    c: &KubeadmConfig,
    extra: &[String],
    field: &str,
    warnings: &mut Vec<String>,
) -> Vec<San> {
    let mut sans = vec![
        San::Dns(c.node_name.clone()),
        San::Dns("localhost".into()),
        San::Ip(c.advertise_address),
        San::Ip(IpAddr::from([127, 0, 0, 1])),
        San::Ip(IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
    ];
    extra_sans(extra, field, &mut sans, warnings);
    dedup(sans)
}

fn leaf(
    base: &str,
    ca: CaKind,
    cn: &str,
    o: Option<&str>,
    usage: Usage,
    sans: Vec<San>,
) -> LeafSpec {
    LeafSpec {
        base: base.to_string(),
        ca,
        cn: cn.to_string(),
        o: o.map(str::to_string),
        usage,
        sans,
    }
}

/// Every leaf certificate kubeadm makes for this node (no etcd ones with external etcd);
/// `warnings` receives the SANs left out.
pub fn leaves(c: &KubeadmConfig, warnings: &mut Vec<String>) -> Vec<LeafSpec> {
    use CaKind::*;
    let mut out = vec![
        leaf(
            "apiserver",
            Kubernetes,
            "kube-apiserver",
            None,
            Usage::Server,
            api_server_sans(c, warnings),
        ),
        leaf(
            "apiserver-kubelet-client",
            Kubernetes,
            "kube-apiserver-kubelet-client",
            Some("kubeadm:cluster-admins"),
            Usage::Client,
            vec![],
        ),
        leaf(
            "front-proxy-client",
            FrontProxy,
            "front-proxy-client",
            None,
            Usage::Client,
            vec![],
        ),
    ];
    if !c.external_etcd {
        let server = etcd_sans(
            c,
            &c.etcd_server_sans,
            "etcd.local.serverCertSANs",
            warnings,
        );
        let peer = etcd_sans(c, &c.etcd_peer_sans, "etcd.local.peerCertSANs", warnings);
        out.extend([
            leaf("etcd/server", Etcd, &c.node_name, None, Usage::Both, server),
            leaf("etcd/peer", Etcd, &c.node_name, None, Usage::Both, peer),
            leaf(
                "etcd/healthcheck-client",
                Etcd,
                "kube-etcd-healthcheck-client",
                None,
                Usage::Client,
                vec![],
            ),
            leaf(
                "apiserver-etcd-client",
                Etcd,
                "kube-apiserver-etcd-client",
                None,
                Usage::Client,
                vec![],
            ),
        ]);
    }
    out
}

/// One kubeconfig kubeadm writes: file name, client CN and O, and whether it talks to the
/// control-plane endpoint (else the local API server).
#[derive(Clone, Debug)]
pub struct KubeconfigSpec {
    /// File name in the kubeconfig folder (`admin.conf`).
    pub file: String,
    /// Client certificate CN (also the kubeconfig's user name).
    pub cn: String,
    /// Client certificate O, if any.
    pub o: Option<String>,
    /// Uses the control-plane endpoint URL (else the local one).
    pub control_plane: bool,
}

/// The kubeconfigs of this node: super-admin.conf only on the first control-plane node
/// (`InitConfiguration`), as kubeadm.
pub fn kubeconfigs(c: &KubeadmConfig) -> Vec<KubeconfigSpec> {
    let k = |file: &str, cn: &str, o: Option<&str>, cp: bool| KubeconfigSpec {
        file: file.into(),
        cn: cn.into(),
        o: o.map(str::to_string),
        control_plane: cp,
    };
    let mut out = vec![k(
        "admin.conf",
        "kubernetes-admin",
        Some("kubeadm:cluster-admins"),
        true,
    )];
    if !c.joining {
        out.push(k(
            "super-admin.conf",
            "kubernetes-super-admin",
            Some("system:masters"),
            true,
        ));
    }
    out.extend([
        k(
            "controller-manager.conf",
            "system:kube-controller-manager",
            None,
            false,
        ),
        k("scheduler.conf", "system:kube-scheduler", None, false),
        k(
            "kubelet.conf",
            &format!("system:node:{}", c.node_name),
            Some("system:nodes"),
            true,
        ),
    ]);
    out
}
