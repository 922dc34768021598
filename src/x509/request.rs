//! Reading PKCS#10 CSRs: PEM or DER, self-signature verified over the original bytes, and the
//! parts p11ca copies into a certificate (subject, public key, SANs, basicConstraints).

use der::{Decode, Header, Reader, SliceReader};
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, SubjectAltName};
use x509_cert::name::Name;
use x509_cert::request::{CertReq, ExtensionReq};

use crate::error::{Error, Result};
use crate::x509::alg::SigAlg;
use crate::x509::hosts::San;
use crate::x509::verify::verify;

/// A CSR whose signature has been checked.
#[derive(Clone, Debug)]
pub struct ParsedCsr {
    /// The CSR's DER.
    pub der: Vec<u8>,
    /// Subject as requested.
    pub subject: Name,
    /// The requested public key.
    pub public_key: SubjectPublicKeyInfoOwned,
    /// SANs from an extensionRequest.
    pub sans: Vec<San>,
    /// Whether the CSR asks for CA:TRUE.
    pub wants_ca: bool,
    /// Signature algorithm of the self-signature.
    pub sig_alg: SigAlg,
}

/// The DER of a PEM `CERTIFICATE REQUEST` (or `NEW CERTIFICATE REQUEST`, text around the
/// block allowed), or the input if it is already DER.
pub fn csr_der(input: &[u8], source: &str) -> Result<Vec<u8>> {
    crate::x509::pem::read_der(
        input,
        source,
        &["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"],
        "certificate request",
    )
}

/// The raw bytes of the first element of the outer SEQUENCE (the signed part).
fn signed_part(der: &[u8]) -> der::Result<&[u8]> {
    let mut outer = SliceReader::new(der)?;
    let header = Header::decode(&mut outer)?;
    let body = outer.read_slice(header.length())?;
    let mut inner = SliceReader::new(body)?;
    let tbs = inner.tlv_bytes()?;
    Ok(tbs)
}

/// Parse and verify a CSR.
pub fn parse(input: &[u8], source: &str) -> Result<ParsedCsr> {
    let der = csr_der(input, source)?;
    let req = CertReq::from_der(&der)
        .map_err(|e| Error::input(format!("{source}: not a PKCS#10 certificate request: {e}")))?;
    let sig_alg = SigAlg::from_identifier(&req.algorithm).map_err(|e| e.context(source))?;
    let tbs =
        signed_part(&der).map_err(|e| Error::input(format!("{source}: malformed CSR: {e}")))?;
    let sig = req.signature.as_bytes().ok_or_else(|| {
        Error::input(format!(
            "{source}: the CSR signature is not a whole number of bytes"
        ))
    })?;
    verify(&req.info.public_key, sig_alg, tbs, sig).map_err(|e| {
        Error::input(format!(
            "{source}: the CSR's self-signature does not verify ({e}); it was altered or made with another key"
        ))
    })?;
    let mut sans = Vec::new();
    let mut wants_ca = false;
    for attr in req.info.attributes.iter() {
        if attr.oid != const_oid::db::rfc5912::ID_EXTENSION_REQ {
            continue;
        }
        for value in attr.values.iter() {
            let ereq: ExtensionReq = value
                .decode_as()
                .map_err(|e| Error::input(format!("{source}: malformed extensionRequest: {e}")))?;
            for ext in ereq.0 {
                let bytes = ext.extn_value.as_bytes();
                if ext.extn_id == const_oid::db::rfc5280::ID_CE_SUBJECT_ALT_NAME {
                    let alt = SubjectAltName::from_der(bytes)
                        .map_err(|e| Error::input(format!("{source}: malformed SAN: {e}")))?;
                    for g in alt.0 {
                        sans.push(match g {
                            GeneralName::DnsName(d) => San::Dns(d.to_string()),
                            GeneralName::Rfc822Name(m) => San::Email(m.to_string()),
                            GeneralName::UniformResourceIdentifier(u) => San::Uri(u.to_string()),
                            GeneralName::IpAddress(ip) => match ip.as_bytes().len() {
                                4 => {
                                    let b: [u8; 4] = ip.as_bytes().try_into().unwrap_or_default();
                                    San::Ip(std::net::IpAddr::from(b))
                                }
                                16 => {
                                    let b: [u8; 16] = ip.as_bytes().try_into().unwrap_or_default();
                                    San::Ip(std::net::IpAddr::from(b))
                                }
                                n => {
                                    return Err(Error::input(format!(
                                        "{source}: SAN IP address of {n} bytes"
                                    )));
                                }
                            },
                            // Other name forms are not copied (cfssl copies DNS, email, IP, URI).
                            _ => continue,
                        });
                    }
                } else if ext.extn_id == const_oid::db::rfc5280::ID_CE_BASIC_CONSTRAINTS {
                    let bc = BasicConstraints::from_der(bytes).map_err(|e| {
                        Error::input(format!("{source}: malformed basicConstraints: {e}"))
                    })?;
                    wants_ca = bc.ca;
                }
            }
        }
    }
    Ok(ParsedCsr {
        der,
        subject: req.info.subject,
        public_key: req.info.public_key,
        sans,
        wants_ca,
        sig_alg,
    })
}
