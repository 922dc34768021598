//! kubeadm's configuration file (`kubeadm.k8s.io/v1beta3` and `v1beta4`): the fields that
//! decide certificates and kubeconfigs, read from its multi-document YAML and checked before
//! anything is made.

use std::net::IpAddr;

use serde::Deserialize;

use crate::cfssl::duration::GoDuration;
use crate::error::{Error, Result};
use crate::x509::alg::KeyAlg;

/// The kubeadm API versions p11ca reads.
const KUBEADM_VERSIONS: [&str; 2] = ["kubeadm.k8s.io/v1beta3", "kubeadm.k8s.io/v1beta4"];
/// Other documents kubeadm accepts in the same file; they do not affect the PKI.
const OTHER_DOCUMENTS: [(&str, &str); 2] = [
    ("kubelet.config.k8s.io/v1beta1", "KubeletConfiguration"),
    ("kubeproxy.config.k8s.io/v1alpha1", "KubeProxyConfiguration"),
];
/// kubeadm's defaults ([v1b4] defaults.go).
const DEFAULT_SERVICE_SUBNET: &str = "10.96.0.0/12";
const DEFAULT_DNS_DOMAIN: &str = "cluster.local";
const DEFAULT_BIND_PORT: u16 = 6443;
const DEFAULT_CERT_VALIDITY: i64 = 365 * 24 * 3600;
const DEFAULT_CA_VALIDITY: i64 = 10 * 365 * 24 * 3600;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Endpoint {
    advertise_address: Option<String>,
    bind_port: Option<u16>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct NodeRegistration {
    name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct InitDoc {
    #[serde(default)]
    node_registration: NodeRegistration,
    #[serde(default, rename = "localAPIEndpoint")]
    local_api_endpoint: Endpoint,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct JoinControlPlane {
    #[serde(default, rename = "localAPIEndpoint")]
    local_api_endpoint: Endpoint,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct JoinDoc {
    #[serde(default)]
    node_registration: NodeRegistration,
    control_plane: Option<JoinControlPlane>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Networking {
    service_subnet: Option<String>,
    dns_domain: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ApiServer {
    #[serde(default, rename = "certSANs")]
    cert_sans: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct LocalEtcd {
    #[serde(default, rename = "serverCertSANs")]
    server_cert_sans: Vec<String>,
    #[serde(default, rename = "peerCertSANs")]
    peer_cert_sans: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Etcd {
    local: Option<LocalEtcd>,
    external: Option<serde_norway::Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ClusterDoc {
    control_plane_endpoint: Option<String>,
    #[serde(default)]
    networking: Networking,
    #[serde(default)]
    api_server: ApiServer,
    #[serde(default)]
    etcd: Etcd,
    cluster_name: Option<String>,
    encryption_algorithm: Option<String>,
    certificate_validity_period: Option<String>,
    ca_certificate_validity_period: Option<String>,
}

/// What the PKI of one control-plane node depends on, with kubeadm's defaults filled in.
#[derive(Clone, Debug)]
pub struct KubeadmConfig {
    /// The file it was read from (for messages).
    pub file: String,
    /// `nodeRegistration.name`.
    pub node_name: String,
    /// `localAPIEndpoint.advertiseAddress`.
    pub advertise_address: IpAddr,
    /// `localAPIEndpoint.bindPort`.
    pub bind_port: u16,
    /// `controlPlaneEndpoint` as (host, port), the port defaulting to `bind_port`.
    pub control_plane_endpoint: Option<(String, u16)>,
    /// The first address of the first `networking.serviceSubnet` CIDR + 1.
    pub api_server_vip: IpAddr,
    /// `networking.dnsDomain`.
    pub dns_domain: String,
    /// `apiServer.certSANs`.
    pub cert_sans: Vec<String>,
    /// `etcd.local.serverCertSANs`.
    pub etcd_server_sans: Vec<String>,
    /// `etcd.local.peerCertSANs`.
    pub etcd_peer_sans: Vec<String>,
    /// `etcd.external` is set: no etcd PKI.
    pub external_etcd: bool,
    /// `clusterName`.
    pub cluster_name: String,
    /// `encryptionAlgorithm`.
    pub key_alg: KeyAlg,
    /// `certificateValidityPeriod`, seconds.
    pub cert_validity: i64,
    /// `caCertificateValidityPeriod`, seconds.
    pub ca_validity: i64,
    /// The node joins an existing control plane (a `JoinConfiguration`): no super-admin.conf.
    pub joining: bool,
}

fn yaml_err(file: &str, what: &str, e: impl std::fmt::Display) -> Error {
    Error::input(format!("{file}: {what}: {e}"))
}

impl KubeadmConfig {
    /// Read kubeadm's configuration from `text` (the file `file`).
    pub fn parse(text: &str, file: &str) -> Result<Self> {
        let mut init: Option<InitDoc> = None;
        let mut join: Option<JoinDoc> = None;
        let mut cluster: Option<ClusterDoc> = None;
        for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
            let value = serde_norway::Value::deserialize(doc)
                .map_err(|e| yaml_err(file, "not valid YAML", e))?;
            if value.is_null() {
                continue;
            }
            let what = format!("document {}", i + 1);
            let h: Header =
                serde_norway::from_value(value.clone()).map_err(|e| yaml_err(file, &what, e))?;
            if OTHER_DOCUMENTS.contains(&(h.api_version.as_str(), h.kind.as_str())) {
                continue;
            }
            if !KUBEADM_VERSIONS.contains(&h.api_version.as_str()) {
                return Err(Error::input(format!(
                    "{file}: {what}: unknown apiVersion \"{}\"; kubeadm's configuration is kubeadm.k8s.io/v1beta4 (or v1beta3)",
                    h.api_version.escape_debug()
                )));
            }
            let field = |e: serde_norway::Error| yaml_err(file, &format!("{what} ({})", h.kind), e);
            match h.kind.as_str() {
                "InitConfiguration" => init = Some(serde_norway::from_value(value).map_err(field)?),
                "JoinConfiguration" => join = Some(serde_norway::from_value(value).map_err(field)?),
                "ClusterConfiguration" => {
                    cluster = Some(serde_norway::from_value(value).map_err(field)?)
                }
                "ResetConfiguration" | "UpgradeConfiguration" => {}
                other => {
                    return Err(Error::input(format!(
                        "{file}: {what}: unknown kind \"{}\"; expected InitConfiguration, ClusterConfiguration or JoinConfiguration",
                        other.escape_debug()
                    )));
                }
            }
        }
        Self::build(file, init, join, cluster.unwrap_or_default())
    }

    fn build(
        file: &str,
        init: Option<InitDoc>,
        join: Option<JoinDoc>,
        cluster: ClusterDoc,
    ) -> Result<Self> {
        let joining = init.is_none() && join.is_some();
        let (node, endpoint) = match (init, join) {
            (Some(i), _) => (i.node_registration, i.local_api_endpoint),
            (None, Some(j)) => {
                let cp = j.control_plane.ok_or_else(|| {
                    Error::input(format!(
                        "{file}: JoinConfiguration has no controlPlane: only a control-plane node needs this PKI (a worker needs only its kubelet.conf)"
                    ))
                })?;
                (j.node_registration, cp.local_api_endpoint)
            }
            (None, None) => {
                return Err(Error::input(format!(
                    "{file}: no InitConfiguration or JoinConfiguration: the node name and advertise address come from one of them"
                )));
            }
        };
        let node_name = node_name(file, node.name)?;
        let advertise_address = advertise_address(file, endpoint.advertise_address)?;
        let bind_port = endpoint.bind_port.unwrap_or(DEFAULT_BIND_PORT);
        let control_plane_endpoint = match cluster.control_plane_endpoint.as_deref() {
            None | Some("") => None,
            Some(e) => Some(parse_endpoint(file, e, bind_port)?),
        };
        let subnet = cluster
            .networking
            .service_subnet
            .unwrap_or_else(|| DEFAULT_SERVICE_SUBNET.into());
        let api_server_vip = first_service_ip(&subnet).ok_or_else(|| {
            Error::input(format!(
                "{file}: networking.serviceSubnet \"{}\" is not a CIDR such as 10.96.0.0/12 (or a comma-separated list of them)",
                subnet.escape_debug()
            ))
        })?;
        let dns_domain = cluster
            .networking
            .dns_domain
            .unwrap_or_else(|| DEFAULT_DNS_DOMAIN.into());
        if crate::x509::policy::host_fault(&dns_domain, false).is_some() {
            return Err(Error::input(format!(
                "{file}: networking.dnsDomain \"{}\" is not a DNS domain",
                dns_domain.escape_debug()
            )));
        }
        let local = cluster.etcd.local.unwrap_or_default();
        Ok(Self {
            file: file.to_string(),
            node_name,
            advertise_address,
            bind_port,
            control_plane_endpoint,
            api_server_vip,
            dns_domain,
            cert_sans: cluster.api_server.cert_sans,
            etcd_server_sans: local.server_cert_sans,
            etcd_peer_sans: local.peer_cert_sans,
            external_etcd: cluster.etcd.external.is_some(),
            cluster_name: cluster.cluster_name.unwrap_or_else(|| "kubernetes".into()),
            key_alg: key_alg(file, cluster.encryption_algorithm.as_deref())?,
            cert_validity: validity(
                file,
                "certificateValidityPeriod",
                cluster.certificate_validity_period.as_deref(),
                DEFAULT_CERT_VALIDITY,
            )?,
            ca_validity: validity(
                file,
                "caCertificateValidityPeriod",
                cluster.ca_certificate_validity_period.as_deref(),
                DEFAULT_CA_VALIDITY,
            )?,
            joining,
        })
    }

    /// kubeadm's cluster-wide defaults without a file, for signing kubeadm's CSRs: cluster
    /// `kubernetes`, RSA-2048, one-year certificates, ten-year CAs. The node fields are left
    /// empty (the CSRs carry the node's names).
    pub fn signing_defaults() -> Self {
        Self {
            file: "kubeadm's defaults".into(),
            node_name: String::new(),
            advertise_address: IpAddr::from([0, 0, 0, 0]),
            bind_port: DEFAULT_BIND_PORT,
            control_plane_endpoint: None,
            api_server_vip: IpAddr::from([10, 96, 0, 1]),
            dns_domain: DEFAULT_DNS_DOMAIN.into(),
            cert_sans: Vec::new(),
            etcd_server_sans: Vec::new(),
            etcd_peer_sans: Vec::new(),
            external_etcd: false,
            cluster_name: "kubernetes".into(),
            key_alg: KeyAlg::Rsa(2048),
            cert_validity: DEFAULT_CERT_VALIDITY,
            ca_validity: DEFAULT_CA_VALIDITY,
            joining: false,
        }
    }

    /// The control-plane URL (admin, super-admin and kubelet kubeconfigs).
    pub fn control_plane_url(&self) -> String {
        match &self.control_plane_endpoint {
            Some((host, port)) => url(host, *port),
            None => self.local_url(),
        }
    }

    /// The local API server URL (controller-manager and scheduler kubeconfigs).
    pub fn local_url(&self) -> String {
        url(&self.advertise_address.to_string(), self.bind_port)
    }
}

fn url(host: &str, port: u16) -> String {
    if host.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    }
}

fn node_name(file: &str, name: Option<String>) -> Result<String> {
    let name = name.unwrap_or_default();
    if name.is_empty() {
        return Err(Error::input(format!(
            "{file}: nodeRegistration.name is missing; p11ca does not guess it from this machine's host name: set it to the node's name"
        )));
    }
    if let Some(f) = crate::x509::policy::host_fault(&name.to_lowercase(), false) {
        return Err(Error::input(format!(
            "{file}: nodeRegistration.name \"{}\" is not a valid node name: {f}",
            name.escape_debug()
        )));
    }
    Ok(name)
}

fn advertise_address(file: &str, addr: Option<String>) -> Result<IpAddr> {
    let addr = addr.unwrap_or_default();
    if addr.is_empty() {
        return Err(Error::input(format!(
            "{file}: localAPIEndpoint.advertiseAddress is missing; p11ca does not guess the node's address: set it"
        )));
    }
    addr.parse().map_err(|_| {
        Error::input(format!(
            "{file}: localAPIEndpoint.advertiseAddress \"{}\" is not an IP address",
            addr.escape_debug()
        ))
    })
}

/// `host`, `host:port` or `[v6]:port`.
fn parse_endpoint(file: &str, e: &str, bind_port: u16) -> Result<(String, u16)> {
    let bad = || {
        Error::input(format!(
            "{file}: controlPlaneEndpoint \"{}\" is not HOST or HOST:PORT",
            e.escape_debug()
        ))
    };
    let (host, port) = if let Some(rest) = e.strip_prefix('[') {
        let (h, p) = rest.split_once(']').ok_or_else(bad)?;
        match p.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if p.is_empty() => (h, None),
            None => return Err(bad()),
        }
    } else if e.parse::<std::net::Ipv6Addr>().is_ok() {
        (e, None)
    } else {
        match e.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (e, None),
        }
    };
    let port = match port {
        Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad)?,
        None => bind_port,
    };
    let is_ip = host.parse::<IpAddr>().is_ok();
    if host.is_empty()
        || (!is_ip && crate::x509::policy::host_fault(&host.to_lowercase(), false).is_some())
    {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

/// The first IP of the first CIDR in a comma-separated list (kubeadm's
/// `GetAPIServerVirtualIP`): the network address plus one.
fn first_service_ip(list: &str) -> Option<IpAddr> {
    let first = list.split(',').next()?.trim();
    let (addr, prefix) = first.split_once('/')?;
    let prefix: u32 = prefix.parse().ok()?;
    match addr.parse::<IpAddr>().ok()? {
        IpAddr::V4(a) if prefix <= 30 => {
            let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
            Some(IpAddr::V4((u32::from(a) & mask).wrapping_add(1).into()))
        }
        IpAddr::V6(a) if prefix <= 126 => {
            let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
            Some(IpAddr::V6((u128::from(a) & mask).wrapping_add(1).into()))
        }
        _ => None,
    }
}

fn key_alg(file: &str, name: Option<&str>) -> Result<KeyAlg> {
    match name.unwrap_or("RSA-2048") {
        "" | "RSA-2048" => Ok(KeyAlg::Rsa(2048)),
        "RSA-3072" => Ok(KeyAlg::Rsa(3072)),
        "RSA-4096" => Ok(KeyAlg::Rsa(4096)),
        "ECDSA-P256" => Ok(KeyAlg::EcP256),
        "ECDSA-P384" => Ok(KeyAlg::EcP384),
        other => Err(Error::input(format!(
            "{file}: encryptionAlgorithm \"{}\" is not one of RSA-2048, RSA-3072, RSA-4096, ECDSA-P256, ECDSA-P384",
            other.escape_debug()
        ))),
    }
}

fn validity(file: &str, field: &str, value: Option<&str>, default: i64) -> Result<i64> {
    let Some(v) = value else {
        return Ok(default);
    };
    match GoDuration::parse(v) {
        Ok(d) if d.as_secs() > 0 => Ok(d.as_secs()),
        Ok(_) => Err(Error::input(format!(
            "{file}: {field} \"{}\" must be positive",
            v.escape_debug()
        ))),
        Err(m) => Err(Error::input(format!(
            "{file}: {field} \"{}\": {m}; give a duration such as 8760h0m0s",
            v.escape_debug()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nnodeRegistration:\n  name: cp1\nlocalAPIEndpoint:\n  advertiseAddress: 192.0.2.10\n";

    #[test]
    fn defaults_follow_kubeadm() {
        let c = KubeadmConfig::parse(BASE, "k.yaml").unwrap();
        assert_eq!(c.api_server_vip.to_string(), "10.96.0.1");
        assert_eq!(c.dns_domain, "cluster.local");
        assert_eq!(c.local_url(), "https://192.0.2.10:6443");
        assert_eq!(c.control_plane_url(), c.local_url());
        assert_eq!(c.key_alg, KeyAlg::Rsa(2048));
        assert_eq!(c.cert_validity, 365 * 86400);
        assert!(!c.joining && !c.external_etcd);
    }

    #[test]
    fn service_subnets() {
        assert_eq!(
            first_service_ip("10.96.0.0/12").unwrap().to_string(),
            "10.96.0.1"
        );
        assert_eq!(
            first_service_ip("10.100.7.9/16,fd00::/108")
                .unwrap()
                .to_string(),
            "10.100.0.1"
        );
        assert_eq!(
            first_service_ip("fd00:10::/108").unwrap().to_string(),
            "fd00:10::1"
        );
        for bad in ["10.96.0.0", "10.96.0.0/33", "300.1.1.1/8", "x/12", ""] {
            assert!(first_service_ip(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            parse_endpoint("f", "cp.example.com", 6443).unwrap(),
            ("cp.example.com".into(), 6443)
        );
        assert_eq!(
            parse_endpoint("f", "10.0.0.1:443", 6443).unwrap(),
            ("10.0.0.1".into(), 443)
        );
        assert_eq!(
            parse_endpoint("f", "[fd00::1]:8443", 6443).unwrap(),
            ("fd00::1".into(), 8443)
        );
        for bad in ["cp:x", "cp:0", "[fd00::1", "bad host:1", ":443"] {
            assert!(parse_endpoint("f", bad, 6443).is_err(), "{bad}");
        }
    }

    #[test]
    fn join_and_v1beta3() {
        let join = "apiVersion: kubeadm.k8s.io/v1beta3\nkind: JoinConfiguration\nnodeRegistration:\n  name: cp2\ncontrolPlane:\n  localAPIEndpoint:\n    advertiseAddress: fd00::2\n    bindPort: 7443\n---\napiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\ncontrolPlaneEndpoint: \"[fd00::1]\"\netcd:\n  external:\n    endpoints: [https://10.0.0.9:2379]\n";
        let c = KubeadmConfig::parse(join, "j.yaml").unwrap();
        assert!(c.joining && c.external_etcd);
        assert_eq!(c.node_name, "cp2");
        assert_eq!(c.local_url(), "https://[fd00::2]:7443");
        assert_eq!(c.control_plane_url(), "https://[fd00::1]:7443");
        let names: Vec<String> = crate::kube::pki::kubeconfigs(&c)
            .into_iter()
            .map(|k| k.file)
            .collect();
        assert!(
            !names.contains(&"super-admin.conf".to_string()),
            "{names:?}"
        );
        let mut w = Vec::new();
        let leaves = crate::kube::pki::leaves(&c, &mut w);
        assert_eq!(leaves.len(), 3, "no etcd certificates with external etcd");
        let worker = join.replace("controlPlane:\n  localAPIEndpoint:\n    advertiseAddress: fd00::2\n    bindPort: 7443\n", "");
        let e = KubeadmConfig::parse(&worker, "j.yaml").unwrap_err();
        assert!(
            e.to_string()
                .contains("JoinConfiguration has no controlPlane"),
            "{e}"
        );
    }

    #[test]
    fn bad_inputs_name_the_field() {
        let e = KubeadmConfig::parse(&BASE.replace("v1beta4", "v1beta9"), "k.yaml").unwrap_err();
        assert!(
            e.to_string()
                .contains("unknown apiVersion \"kubeadm.k8s.io/v1beta9\""),
            "{e}"
        );
        let e = KubeadmConfig::parse(&BASE.replace("  name: cp1\n", ""), "k.yaml").unwrap_err();
        assert!(
            e.to_string().contains("nodeRegistration.name is missing"),
            "{e}"
        );
        let cluster = "---\napiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nnetworking:\n  serviceSubnet: 10.96.0.0/40\n";
        let e = KubeadmConfig::parse(&format!("{BASE}{cluster}"), "k.yaml").unwrap_err();
        assert!(
            e.to_string()
                .contains("networking.serviceSubnet \"10.96.0.0/40\""),
            "{e}"
        );
    }
}
