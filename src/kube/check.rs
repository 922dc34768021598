//! Files already in the certificate folder: kept only when they are what kubeadm's table
//! says (signed by their CA, the expected names and usages, still valid, the key belonging to
//! the certificate); anything else is an error naming the file.

use std::path::Path;

use der::{Decode, Encode};
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::Certificate;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, SubjectAltName};

use crate::error::{Error, Result};
use crate::kube::pki::LeafSpec;
use crate::x509::alg::SigAlg;
use crate::x509::hosts::San;
use crate::x509::name;
use crate::x509::verify::verify;

/// Read and parse a PEM certificate file (the first certificate of a chain).
pub fn read_cert(path: &Path) -> Result<Certificate> {
    let shown = path.display().to_string();
    let bytes =
        std::fs::read(path).map_err(|e| Error::input(format!("{shown}: cannot read: {e}")))?;
    crate::ca::issue::parse_ca_cert(&bytes, &shown)
}

/// Whether the certificate says CA:TRUE.
pub fn is_ca(cert: &Certificate) -> bool {
    cert.tbs_certificate()
        .get_extension::<BasicConstraints>()
        .ok()
        .flatten()
        .is_some_and(|(_, bc)| bc.ca)
}

/// The subject's CN and O values.
pub fn cn_and_o(cert: &Certificate) -> (Vec<String>, Vec<String>) {
    name_cn_and_o(cert.tbs_certificate().subject())
}

/// A name's CN and O values.
pub fn name_cn_and_o(subject: &x509_cert::name::Name) -> (Vec<String>, Vec<String>) {
    let (mut cn, mut o) = (Vec::new(), Vec::new());
    for atv in subject.iter() {
        let v = name::value_text(&atv.value).unwrap_or_default();
        if atv.oid == const_oid::db::rfc4519::CN {
            cn.push(v);
        } else if atv.oid == const_oid::db::rfc4519::O {
            o.push(v);
        }
    }
    (cn, o)
}

/// The DNS names and IP addresses of the certificate's subjectAltName.
pub fn sans(cert: &Certificate) -> Vec<San> {
    let Ok(Some((_, alt))) = cert.tbs_certificate().get_extension::<SubjectAltName>() else {
        return Vec::new();
    };
    alt.0
        .iter()
        .filter_map(|g| match g {
            GeneralName::DnsName(d) => Some(San::Dns(d.to_string())),
            GeneralName::IpAddress(ip) => match ip.as_bytes().len() {
                4 => <[u8; 4]>::try_from(ip.as_bytes())
                    .ok()
                    .map(|b| San::Ip(b.into())),
                16 => <[u8; 16]>::try_from(ip.as_bytes())
                    .ok()
                    .map(|b| San::Ip(b.into())),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Whether `cert`'s signature verifies with `ca`'s public key.
pub fn signed_by(cert: &Certificate, ca: &Certificate) -> bool {
    let Ok(alg) = SigAlg::from_identifier(cert.signature_algorithm()) else {
        return false;
    };
    let Ok(tbs) = cert.tbs_certificate().to_der() else {
        return false;
    };
    let Some(sig) = cert.signature().as_bytes() else {
        return false;
    };
    verify(
        ca.tbs_certificate().subject_public_key_info(),
        alg,
        &tbs,
        sig,
    )
    .is_ok()
}

/// The public key of a PEM private key (PKCS#1, SEC1 or PKCS#8; RSA or ECDSA, the types
/// kubeadm loads).
pub fn key_spki(pem: &str, source: &str) -> Result<SubjectPublicKeyInfoOwned> {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
    let der = if let Ok(k) = rsa::PrivateKey::from_pkcs1_pem(pem) {
        k.to_public_key().to_public_key_der()
    } else if let Ok(k) = rsa::PrivateKey::from_pkcs8_pem(pem) {
        k.to_public_key().to_public_key_der()
    } else if let Ok(k) = p256::SecretKey::from_sec1_pem(pem) {
        k.public_key().to_public_key_der()
    } else if let Ok(k) = p256::SecretKey::from_pkcs8_pem(pem) {
        k.public_key().to_public_key_der()
    } else if let Ok(k) = p384::SecretKey::from_sec1_pem(pem) {
        k.public_key().to_public_key_der()
    } else if let Ok(k) = p384::SecretKey::from_pkcs8_pem(pem) {
        k.public_key().to_public_key_der()
    } else {
        return Err(Error::input(format!(
            "{source}: not an RSA or ECDSA (P-256, P-384) private key in PEM"
        )));
    };
    let der = der.map_err(|e| Error::input(format!("{source}: {e}")))?;
    SubjectPublicKeyInfoOwned::from_der(der.as_bytes())
        .map_err(|e| Error::input(format!("{source}: {e}")))
}

fn san_text(s: &San) -> String {
    match s {
        San::Ip(ip) => ip.to_string(),
        San::Dns(v) | San::Email(v) | San::Uri(v) => v.clone(),
    }
}

/// Check an existing `NAME.crt`/`NAME.key` pair against `spec` and its CA; an error names
/// the file and what differs.
pub fn existing_leaf(spec: &LeafSpec, crt: &Path, key: &Path, ca: &Certificate) -> Result<()> {
    let shown = crt.display();
    let cert = read_cert(crt)?;
    let bad = |what: String| {
        Error::policy(format!(
            "{shown} {what}; move it away to have it made again, or fix it"
        ))
    };
    if !signed_by(&cert, ca) {
        return Err(bad(format!(
            "is not signed by its CA ({}.crt)",
            spec.ca.base()
        )));
    }
    let (cn, o) = cn_and_o(&cert);
    if cn != [spec.cn.clone()] || o != spec.o.clone().into_iter().collect::<Vec<_>>() {
        return Err(bad(format!(
            "has CN {cn:?} O {o:?}; kubeadm's table says CN \"{}\" O {:?}",
            spec.cn, spec.o
        )));
    }
    let have = sans(&cert);
    let missing: Vec<String> = spec
        .sans
        .iter()
        .filter(|s| !have.contains(s))
        .map(san_text)
        .collect();
    if !missing.is_empty() {
        return Err(bad(format!(
            "lacks the subjectAltNames {}",
            missing.join(", ")
        )));
    }
    let ekus = cert
        .tbs_certificate()
        .get_extension::<ExtendedKeyUsage>()
        .ok()
        .flatten()
        .map(|(_, e)| e.0)
        .unwrap_or_default();
    if spec.usage.ekus().iter().any(|u| !ekus.contains(u)) {
        return Err(bad(format!(
            "lacks the extended key usages of {:?}",
            spec.usage
        )));
    }
    let not_after = cert
        .tbs_certificate()
        .validity()
        .not_after
        .to_unix_duration()
        .as_secs();
    if (not_after as i64) <= crate::x509::build::now_rounded() {
        return Err(bad("has expired".into()));
    }
    let key_shown = key.display().to_string();
    let pem = std::fs::read_to_string(key)
        .map_err(|e| Error::input(format!("{key_shown}: cannot read: {e}")))?;
    let spki = key_spki(&pem, &key_shown)?;
    if spki.to_der().ok()
        != cert
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .ok()
    {
        return Err(Error::policy(format!(
            "{key_shown} is not the key of {shown}; move both away to have them made again"
        )));
    }
    Ok(())
}
