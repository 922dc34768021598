//! The emulated device CA behind YubiKey PIV attestation (Yubico's "PIV attestation" page,
//! developers.yubico.com/PIV/Introduction/PIV_attestation.html): a root CA stands in for
//! Yubico's PIV root, it certifies the card's attestation key (slot f9, certificate in object
//! 5FFF01), and ATTEST returns a certificate for a slot's public key signed by that f9 key,
//! with Yubico's extensions: firmware version (1.3.6.1.4.1.41482.3.3, 3 bytes), serial
//! (…3.7, INTEGER), PIN and touch policy (…3.8, 2 bytes), form factor (…3.9, 1 byte).

use std::str::FromStr;
use std::time::Duration;

use der::asn1::OctetString;
use der::{Decode, Encode};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use serde::{Deserialize, Serialize};
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder, CertificateBuilder};
use x509_cert::certificate::TbsCertificate;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{SubjectPublicKeyInfoOwned, SubjectPublicKeyInfoRef};
use x509_cert::time::Validity;

use crate::keys::{self, Key};

/// Subject of the emulated root; users of a real key trust Yubico's PIV root instead.
const ROOT_CN: &str = "CN=p11ca emulated Yubico PIV Root CA";
/// Subject of the f9 certificate (Yubico names it after the device).
const F9_CN: &str = "CN=Yubico PIV Attestation";
const YUBICO_PIV: &str = "1.3.6.1.4.1.41482.3";

/// The device CA a card is "born" with.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct DeviceCa {
    /// DER, hex: what a verifier trusts.
    pub root_cert: String,
    /// The f9 attestation key (P-256, PKCS#8 DER hex) and its certificate (DER hex).
    pub f9_key: String,
    pub f9_cert: String,
}

/// Names, and extensions as given.
struct Profile {
    issuer: Name,
    subject: Name,
    exts: Vec<Extension>,
}

impl BuilderProfile for Profile {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }
    fn get_subject(&self) -> Name {
        self.subject.clone()
    }
    fn build_extensions(
        &self,
        _spk: SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: SubjectPublicKeyInfoRef<'_>,
        _tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        Ok(self.exts.clone())
    }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn name(s: &str) -> Result<Name, String> {
    Name::from_str(s).map_err(err)
}

fn ext(oid: &str, critical: bool, value: Vec<u8>) -> Result<Extension, String> {
    Ok(Extension {
        extn_id: der::asn1::ObjectIdentifier::new(oid).map_err(err)?,
        critical,
        extn_value: OctetString::new(value).map_err(err)?,
    })
}

/// basicConstraints CA:TRUE and keyUsage keyCertSign, for the two CA certificates.
fn ca_exts() -> Result<Vec<Extension>, String> {
    let bc = BasicConstraints {
        ca: true,
        path_len_constraint: None,
    };
    let ku = KeyUsage(KeyUsages::KeyCertSign.into());
    Ok(vec![
        ext("2.5.29.19", true, bc.to_der().map_err(err)?)?,
        ext("2.5.29.15", true, ku.to_der().map_err(err)?)?,
    ])
}

/// A certificate for `spki`, signed by `signer`.
fn issue(
    signer: &p256::ecdsa::SigningKey,
    issuer: Name,
    subject: Name,
    spki: SubjectPublicKeyInfoOwned,
    exts: Vec<Extension>,
) -> Result<Vec<u8>, String> {
    let serial = SerialNumber::new(&keys::random::<8>().map(|b| b & 0x7f)).map_err(err)?;
    let validity = Validity::from_now(Duration::from_secs(20 * 365 * 86_400)).map_err(err)?;
    let profile = Profile {
        issuer,
        subject,
        exts,
    };
    let builder = CertificateBuilder::new(profile, serial, validity, spki).map_err(err)?;
    let cert = builder
        .build::<_, p256::ecdsa::DerSignature>(signer)
        .map_err(err)?;
    cert.to_der().map_err(err)
}

fn spki_of(k: &p256::ecdsa::SigningKey) -> Result<SubjectPublicKeyInfoOwned, String> {
    let der = k.verifying_key().to_public_key_der().map_err(err)?;
    SubjectPublicKeyInfoOwned::from_der(der.as_bytes()).map_err(err)
}

fn p256_key() -> Result<p256::ecdsa::SigningKey, String> {
    use rsa::Generate;
    p256::ecdsa::SigningKey::try_generate_from_rng(&mut getrandom::SysRng).map_err(err)
}

impl DeviceCa {
    /// A new root and f9 key; the root's private key is dropped once it has signed.
    pub(crate) fn new() -> Result<Self, String> {
        let root = p256_key()?;
        let root_cert = issue(
            &root,
            name(ROOT_CN)?,
            name(ROOT_CN)?,
            spki_of(&root)?,
            ca_exts()?,
        )?;
        let f9 = p256_key()?;
        let f9_cert = issue(
            &root,
            name(ROOT_CN)?,
            name(F9_CN)?,
            spki_of(&f9)?,
            ca_exts()?,
        )?;
        let f9_der = f9.to_pkcs8_der().map_err(err)?;
        Ok(DeviceCa {
            root_cert: base16ct::lower::encode_string(&root_cert),
            f9_key: base16ct::lower::encode_string(f9_der.as_bytes()),
            f9_cert: base16ct::lower::encode_string(&f9_cert),
        })
    }

    /// The root certificate as PEM.
    pub(crate) fn root_pem(&self) -> Result<String, String> {
        let der = base16ct::mixed::decode_vec(&self.root_cert).map_err(err)?;
        der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, &der).map_err(err)
    }

    /// The f9 certificate object as the card stores it (`70 cert 71 00 FE 00`).
    pub(crate) fn f9_object(&self) -> Result<Vec<u8>, String> {
        let der = base16ct::mixed::decode_vec(&self.f9_cert).map_err(err)?;
        let mut v = crate::tlv::tlv(&[0x70], &der);
        v.extend_from_slice(&[0x71, 0x01, 0x00, 0xfe, 0x00]);
        Ok(v)
    }

    /// The attestation certificate for `key` in `slot`.
    pub(crate) fn attest(
        &self,
        slot: u8,
        key: &Key,
        policies: [u8; 2],
        serial: u32,
        version: [u8; 3],
    ) -> Result<Vec<u8>, String> {
        let der = base16ct::mixed::decode_vec(&self.f9_key).map_err(err)?;
        let f9 = p256::ecdsa::SigningKey::from_pkcs8_der(&der).map_err(err)?;
        let spki = SubjectPublicKeyInfoOwned::from_der(&key.spki_der()?).map_err(err)?;
        let serial_der = der::asn1::Uint::new(&serial.to_be_bytes())
            .and_then(|u| u.to_der())
            .map_err(err)?;
        let exts = vec![
            ext(&format!("{YUBICO_PIV}.3"), false, version.to_vec())?,
            ext(&format!("{YUBICO_PIV}.7"), false, serial_der)?,
            ext(&format!("{YUBICO_PIV}.8"), false, policies.to_vec())?,
            // Form factor 1: USB-A keychain.
            ext(&format!("{YUBICO_PIV}.9"), false, vec![0x01])?,
        ];
        let subject = name(&format!("CN=YubiKey PIV Attestation {slot:02x}"))?;
        issue(&f9, name(F9_CN)?, subject, spki, exts)
    }
}
