//! YubiKey PIV attestation, checked in software: the slot's attestation certificate is signed
//! by the device's attestation (f9) certificate, that one by the root the caller trusts
//! (Yubico's PIV root CA for a real key), and the attested public key is the CA
//! certificate's. The attestation extensions (Yubico's "PIV attestation" page) say which
//! firmware, serial and PIN/touch policy the key was generated with.

use der::{Decode, Encode};
use x509_cert::Certificate;

use crate::error::{Error, Result};
use crate::x509::alg::SigAlg;
use crate::x509::verify::verify;

/// Yubico's PIV attestation extensions (arc 1.3.6.1.4.1.41482.3).
const FIRMWARE: &str = "1.3.6.1.4.1.41482.3.3";
const SERIAL: &str = "1.3.6.1.4.1.41482.3.7";
const POLICY: &str = "1.3.6.1.4.1.41482.3.8";

/// What the attestation says about the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attested {
    /// Firmware version, e.g. "5.2.7".
    pub firmware: Option<String>,
    /// The device's serial number.
    pub serial: Option<u64>,
    /// PIN policy: never, once, always.
    pub pin_policy: Option<&'static str>,
    /// Touch policy: never, always, cached.
    pub touch_policy: Option<&'static str>,
}

fn parse(der: &[u8], what: &str) -> Result<Certificate> {
    Certificate::from_der(der)
        .map_err(|e| Error::verify(format!("the {what} is not an X.509 certificate: {e}")))
}

/// `child` is signed by `parent`'s key.
fn signed_by(child: &Certificate, parent: &Certificate, what: &str) -> Result<()> {
    let alg = SigAlg::from_identifier(child.signature_algorithm())?;
    let tbs = child
        .tbs_certificate()
        .to_der()
        .map_err(|e| Error::verify(format!("cannot encode the {what}: {e}")))?;
    let sig = child.signature().raw_bytes();
    verify(
        parent.tbs_certificate().subject_public_key_info(),
        alg,
        &tbs,
        sig,
    )
    .map_err(|e| Error::verify(format!("the {what} does not verify: {e}")))
}

fn extension<'a>(cert: &'a Certificate, oid: &str) -> Option<&'a [u8]> {
    cert.tbs_certificate()
        .extensions()?
        .iter()
        .find(|e| e.extn_id.to_string() == oid)
        .map(|e| e.extn_value.as_bytes())
}

/// Check the chain `leaf` ← `f9` ← `root` (all DER), and that `leaf` attests the key of the
/// certificate `ca` (DER). Returns what the attestation states.
pub fn check(leaf: &[u8], f9: &[u8], root: &[u8], ca: &[u8]) -> Result<Attested> {
    let leaf = parse(leaf, "attestation certificate")?;
    let f9 = parse(f9, "device attestation (f9) certificate")?;
    let root_cert = parse(root, "attestation root")?;
    let ca = parse(ca, "CA certificate")?;
    signed_by(&root_cert, &root_cert, "attestation root")?;
    signed_by(&f9, &root_cert, "device attestation (f9) certificate")?;
    signed_by(&leaf, &f9, "attestation certificate")?;
    if leaf.tbs_certificate().subject_public_key_info()
        != ca.tbs_certificate().subject_public_key_info()
    {
        return Err(Error::verify(
            "the attested key is not the key in the CA certificate: this CA's key was not attested by this device slot",
        ));
    }
    let firmware = extension(&leaf, FIRMWARE)
        .filter(|v| v.len() == 3)
        .map(|v| format!("{}.{}.{}", v[0], v[1], v[2]));
    let serial = extension(&leaf, SERIAL)
        .and_then(|v| der::asn1::Uint::from_der(v).ok())
        .and_then(|u| {
            let b = u.as_bytes();
            (b.len() <= 8).then(|| b.iter().fold(0u64, |n, &x| n << 8 | u64::from(x)))
        });
    let policy = extension(&leaf, POLICY).filter(|v| v.len() == 2);
    Ok(Attested {
        firmware,
        serial,
        pin_policy: policy.and_then(|p| match p[0] {
            1 => Some("never"),
            2 => Some("once"),
            3 => Some("always"),
            _ => None,
        }),
        touch_policy: policy.and_then(|p| match p[1] {
            1 => Some("never"),
            2 => Some("always"),
            3 => Some("cached"),
            _ => None,
        }),
    })
}
