//! DER for certificates and CSRs, signed through a [`Signer`] and verified before return.
//!
//! The TBSCertificate is our own `der` structure (x509-cert 0.3 keeps its fields private), so
//! we control field and extension order exactly, and the result is parsed back with x509-cert
//! as a final well-formedness check.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use const_oid::ObjectIdentifier;
use const_oid::db::rfc5280;
use der::asn1::{Any, BitString, GeneralizedTime, Ia5String, OctetString, SetOfVec, UtcTime};
use der::{DateTime, Decode, Encode, Sequence};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::attr::Attribute;
use x509_cert::certificate::Certificate;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::certpolicy::{
    DisplayText, PolicyInformation, PolicyQualifierInfo, UserNotice,
};
use x509_cert::ext::pkix::crl::dp::DistributionPoint;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::{
    AccessDescription, AuthorityInfoAccessSyntax, AuthorityKeyIdentifier, BasicConstraints,
    CertificatePolicies, CrlDistributionPoints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectKeyIdentifier,
};
use x509_cert::name::Name;
use x509_cert::request::{CertReq, CertReqInfo, ExtensionReq, Version};
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Time;

use crate::error::{Error, Result, der_err};
use crate::x509::Signer;
use crate::x509::alg::SigAlg;
use crate::x509::verify::verify;

#[derive(Sequence)]
struct ValidityDer {
    not_before: Time,
    not_after: Time,
}

#[derive(Sequence)]
struct TbsDer {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    version: u8,
    serial_number: SerialNumber,
    signature: AlgorithmIdentifierOwned,
    issuer: Name,
    validity: ValidityDer,
    subject: Name,
    subject_public_key_info: SubjectPublicKeyInfoOwned,
    #[asn1(context_specific = "3", tag_mode = "EXPLICIT", optional = "true")]
    extensions: Option<Vec<Extension>>,
}

/// The certificate around the exact TBS bytes that were signed (no second encoding of the TBS).
#[derive(Sequence)]
struct CertDer<'a> {
    tbs: der::asn1::AnyRef<'a>,
    signature_algorithm: AlgorithmIdentifierOwned,
    signature: BitString,
}

/// Everything that goes into a certificate except the signature.
#[derive(Clone, Debug)]
pub struct CertParams {
    /// Serial number (positive, ≤ 20 octets).
    pub serial: SerialNumber,
    /// Issuer name (for a leaf: exactly the CA certificate's subject).
    pub issuer: Name,
    /// Subject name.
    pub subject: Name,
    /// Subject public key.
    pub subject_key: SubjectPublicKeyInfoOwned,
    /// notBefore, Unix seconds.
    pub not_before: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// Extensions in the order they should appear.
    pub extensions: Vec<Extension>,
}

/// A random positive serial of 20 octets from the signer's RNG (top bit cleared, first octet
/// non-zero so the DER INTEGER is exactly 20 bytes).
pub fn random_serial(signer: &dyn Signer) -> Result<SerialNumber> {
    let mut b = [0u8; 20];
    loop {
        signer.random(&mut b)?;
        b[0] &= 0x7f;
        if b[0] != 0 {
            break;
        }
    }
    SerialNumber::new(&b).map_err(|e| der_err("serial number", e))
}

/// X.509 time for Unix seconds: UTCTime through 2049, GeneralizedTime after (RFC 5280).
pub fn x509_time(unix: i64) -> Result<Time> {
    let secs =
        u64::try_from(unix).map_err(|_| Error::input("dates before 1970 are not supported"))?;
    let dt = DateTime::from_unix_duration(Duration::from_secs(secs))
        .map_err(|e| Error::input(format!("date out of range: {e}")))?;
    if dt.year() < 2050 {
        Ok(Time::UtcTime(
            UtcTime::from_date_time(dt).map_err(|e| der_err("time", e))?,
        ))
    } else {
        Ok(Time::GeneralTime(GeneralizedTime::from_date_time(dt)))
    }
}

/// Now, rounded to the minute half-up as cfssl does (`time.Now().Round(time.Minute)`).
pub fn now_rounded() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    (now + 30) / 60 * 60
}

/// RFC 5280 method-1 key identifier: SHA-1 of the subjectPublicKey BIT STRING contents.
pub fn key_id(spki: &SubjectPublicKeyInfoOwned) -> Vec<u8> {
    ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        spki.subject_public_key.raw_bytes(),
    )
    .as_ref()
    .to_vec()
}

fn ext_from<T: Encode>(
    oid: ObjectIdentifier,
    critical: bool,
    v: &T,
    what: &str,
) -> Result<Extension> {
    let der = v.to_der().map_err(|e| der_err(what, e))?;
    Ok(Extension {
        extn_id: oid,
        critical,
        extn_value: OctetString::new(der).map_err(|e| der_err(what, e))?,
    })
}

/// One certificatePolicies entry.
#[derive(Clone, Debug)]
pub struct PolicyInfo {
    /// The policy OID.
    pub id: ObjectIdentifier,
    /// id-qt-cps qualifiers (IA5String URIs).
    pub cps_uris: Vec<String>,
    /// id-qt-unotice qualifiers (explicitText, UTF8String).
    pub user_notices: Vec<String>,
}

/// certificatePolicies (non-critical), qualifiers encoded as cfssl does: a CPS URI as
/// IA5String, a user notice as `UserNotice { explicitText UTF8String }`.
pub fn policies_ext(policies: &[PolicyInfo]) -> Result<Extension> {
    let what = "certificatePolicies";
    let mut out = Vec::new();
    for p in policies {
        let mut qualifiers = Vec::new();
        for uri in &p.cps_uris {
            let ia5 = Ia5String::new(uri)
                .map_err(|e| Error::input(format!("policy CPS URI \"{uri}\" is not ASCII: {e}")))?;
            qualifiers.push(PolicyQualifierInfo {
                policy_qualifier_id: rfc5280::ID_QT_CPS,
                qualifier: Some(Any::encode_from(&ia5).map_err(|e| der_err(what, e))?),
            });
        }
        for text in &p.user_notices {
            let notice = UserNotice {
                notice_ref: None,
                explicit_text: Some(DisplayText::Utf8String(text.clone())),
            };
            qualifiers.push(PolicyQualifierInfo {
                policy_qualifier_id: rfc5280::ID_QT_UNOTICE,
                qualifier: Some(Any::encode_from(&notice).map_err(|e| der_err(what, e))?),
            });
        }
        out.push(PolicyInformation {
            policy_identifier: p.id,
            policy_qualifiers: if qualifiers.is_empty() {
                None
            } else {
                Some(qualifiers)
            },
        });
    }
    ext_from(
        rfc5280::ID_CE_CERTIFICATE_POLICIES,
        false,
        &CertificatePolicies(out),
        what,
    )
}

/// OCSP no-check (RFC 6960 §4.2.2.2.1): NULL, non-critical.
pub fn ocsp_no_check_ext() -> Result<Extension> {
    ext_from(
        const_oid::db::rfc6960::ID_PKIX_OCSP_NOCHECK,
        false,
        &der::asn1::Null,
        "OCSP no-check",
    )
}

/// keyUsage, always critical (as cfssl and the CA/B baseline do).
pub fn key_usage_ext(bits: der::flagset::FlagSet<KeyUsages>) -> Result<Extension> {
    ext_from(rfc5280::ID_CE_KEY_USAGE, true, &KeyUsage(bits), "keyUsage")
}

/// basicConstraints, always critical.
pub fn basic_constraints_ext(ca: bool, path_len: Option<u8>) -> Result<Extension> {
    let bc = BasicConstraints {
        ca,
        path_len_constraint: if ca { path_len } else { None },
    };
    ext_from(
        rfc5280::ID_CE_BASIC_CONSTRAINTS,
        true,
        &bc,
        "basicConstraints",
    )
}

/// subjectKeyIdentifier.
pub fn ski_ext(spki: &SubjectPublicKeyInfoOwned) -> Result<Extension> {
    let ski = SubjectKeyIdentifier(OctetString::new(key_id(spki)).map_err(|e| der_err("SKI", e))?);
    ext_from(
        rfc5280::ID_CE_SUBJECT_KEY_IDENTIFIER,
        false,
        &ski,
        "subjectKeyIdentifier",
    )
}

/// authorityKeyIdentifier with only the keyIdentifier.
pub fn aki_ext(key_identifier: &[u8]) -> Result<Extension> {
    let aki = AuthorityKeyIdentifier {
        key_identifier: Some(OctetString::new(key_identifier).map_err(|e| der_err("AKI", e))?),
        ..Default::default()
    };
    ext_from(
        rfc5280::ID_CE_AUTHORITY_KEY_IDENTIFIER,
        false,
        &aki,
        "authorityKeyIdentifier",
    )
}

/// extendedKeyUsage (non-critical, as cfssl writes it).
pub fn eku_ext(oids: Vec<ObjectIdentifier>) -> Result<Extension> {
    ext_from(
        rfc5280::ID_CE_EXT_KEY_USAGE,
        false,
        &ExtendedKeyUsage(oids),
        "extendedKeyUsage",
    )
}

fn uri_name(u: &str) -> Result<GeneralName> {
    Ia5String::new(u)
        .map(GeneralName::UniformResourceIdentifier)
        .map_err(|e| Error::input(format!("URL \"{u}\" is not ASCII: {e}")))
}

/// cRLDistributionPoints with one full-name URI.
pub fn crl_dp_ext(url: &str) -> Result<Extension> {
    let dp = DistributionPoint {
        distribution_point: Some(DistributionPointName::FullName(vec![uri_name(url)?])),
        reasons: None,
        crl_issuer: None,
    };
    ext_from(
        rfc5280::ID_CE_CRL_DISTRIBUTION_POINTS,
        false,
        &CrlDistributionPoints(vec![dp]),
        "cRLDistributionPoints",
    )
}

/// authorityInfoAccess with OCSP and caIssuers URIs.
pub fn aia_ext(ocsp: &[String], issuers: &[String]) -> Result<Extension> {
    let mut ads = Vec::new();
    for u in ocsp {
        ads.push(AccessDescription {
            access_method: rfc5280::ID_AD_OCSP,
            access_location: uri_name(u)?,
        });
    }
    for u in issuers {
        ads.push(AccessDescription {
            access_method: rfc5280::ID_AD_CA_ISSUERS,
            access_location: uri_name(u)?,
        });
    }
    ext_from(
        rfc5280::ID_PE_AUTHORITY_INFO_ACCESS,
        false,
        &AuthorityInfoAccessSyntax(ads),
        "authorityInfoAccess",
    )
}

/// Sign `tbs` with `signer` and verify the result against the signer's public key.
fn sign_checked(signer: &dyn Signer, tbs: &[u8], what: &str) -> Result<Vec<u8>> {
    let sig = signer.sign(tbs)?;
    verify(signer.public_key(), signer.algorithm(), tbs, &sig).map_err(|e| {
        e.context(format!(
            "the token's signature on the {what} was rejected; nothing was written"
        ))
    })?;
    Ok(sig)
}

/// A TBSCertificate encoded ahead of signing, its serial still to be drawn.
///
/// Serials are always 20 content octets (see [`random_serial`]), so the encoding's length does
/// not depend on the serial: a batch encodes the whole TBS on a helper thread with a
/// placeholder serial, and the signing thread only writes the serial in place and calls the
/// token ([`UnsignedCertificate::sign`]).
pub struct UnsignedCertificate {
    tbs: Vec<u8>,
    /// Where the serial's 20 content octets start in `tbs`.
    serial_at: usize,
    alg: SigAlg,
}

/// A serial that only reserves the place: [`UnsignedCertificate::sign`] replaces it.
pub fn serial_placeholder() -> Result<SerialNumber> {
    // Same shape as random_serial's: 20 octets, first octet non-zero with the top bit clear.
    SerialNumber::new(&[0x7f; 20]).map_err(|e| der_err("serial number", e))
}

/// Encode the TBSCertificate of `p` for a signature with `alg`. `p.serial` must have 20 octets
/// (use [`serial_placeholder`]); [`UnsignedCertificate::sign`] replaces it.
pub fn certificate_unsigned(p: &CertParams, alg: SigAlg) -> Result<UnsignedCertificate> {
    let tbs = encode_tbs(p, alg)?;
    let serial_at = serial_offset(&tbs)?;
    Ok(UnsignedCertificate {
        tbs,
        serial_at,
        alg,
    })
}

/// Offset of the serial's 20 content octets: after the outer header and `[0] version`.
fn serial_offset(tbs: &[u8]) -> Result<usize> {
    use der::{Header, Length, Reader, SliceReader, Tag};
    let at = (|| -> der::Result<Option<usize>> {
        let mut r = SliceReader::new(tbs)?;
        Header::decode(&mut r)?;
        der::asn1::AnyRef::decode(&mut r)?;
        let h = Header::decode(&mut r)?;
        Ok((h.tag() == Tag::Integer && h.length() == Length::new(20))
            .then(|| u32::from(r.position()) as usize))
    })()
    .map_err(|e| der_err("certificate", e))?;
    at.ok_or_else(|| Error::input("internal: the certificate's serial is not 20 octets"))
}

impl UnsignedCertificate {
    /// Draw a fresh serial from `signer`'s RNG, write it in place and sign. On an error nothing
    /// was signed unless the error says so; the certificate can be signed again (with another
    /// serial).
    pub fn sign(&mut self, signer: &dyn Signer) -> Result<SignedCertificate> {
        if signer.algorithm() != self.alg {
            return Err(Error::token(
                "internal: the certificate was prepared for another signature algorithm",
            ));
        }
        let serial = random_serial(signer)?;
        self.tbs[self.serial_at..self.serial_at + 20].copy_from_slice(serial.as_bytes());
        let sig = signer.sign(&self.tbs)?;
        Ok(SignedCertificate {
            tbs: self.tbs.clone(),
            signature: sig,
            alg: self.alg,
            issuer_key: signer.public_key().clone(),
        })
    }
}

/// A certificate the token has signed but that is not yet checked: only
/// [`SignedCertificate::verified`] gives out its DER.
pub struct SignedCertificate {
    tbs: Vec<u8>,
    signature: Vec<u8>,
    alg: SigAlg,
    issuer_key: SubjectPublicKeyInfoOwned,
}

impl SignedCertificate {
    /// Verify the signature against the issuer's public key, assemble the certificate and
    /// re-parse it; the DER is returned only if all succeed. Kept apart from signing so a batch
    /// can verify one certificate on another core while the token signs the next.
    pub fn verified(self) -> Result<Vec<u8>> {
        verify(&self.issuer_key, self.alg, &self.tbs, &self.signature).map_err(|e| {
            e.context("the token's signature on the certificate was rejected; nothing was written")
        })?;
        let cert = CertDer {
            tbs: der::asn1::AnyRef::try_from(self.tbs.as_slice())
                .map_err(|e| der_err("certificate", e))?,
            signature_algorithm: self.alg.algorithm_identifier(),
            signature: BitString::from_bytes(&self.signature)
                .map_err(|e| der_err("signature", e))?,
        };
        let der = cert.to_der().map_err(|e| der_err("certificate", e))?;
        Certificate::from_der(&der).map_err(|e| der_err("certificate (re-parse)", e))?;
        Ok(der)
    }
}

/// Build, sign and verify a v3 certificate; returns its DER.
pub fn certificate(p: &CertParams, signer: &dyn Signer) -> Result<Vec<u8>> {
    certificate_signed(p, signer)?.verified()
}

/// Build and sign a v3 certificate with the serial in `p`; the caller must call
/// [`SignedCertificate::verified`].
pub fn certificate_signed(p: &CertParams, signer: &dyn Signer) -> Result<SignedCertificate> {
    let tbs = encode_tbs(p, signer.algorithm())?;
    let sig = signer.sign(&tbs)?;
    Ok(SignedCertificate {
        tbs,
        signature: sig,
        alg: signer.algorithm(),
        issuer_key: signer.public_key().clone(),
    })
}

fn encode_tbs(p: &CertParams, alg: SigAlg) -> Result<Vec<u8>> {
    if p.not_after <= p.not_before {
        return Err(Error::policy("notAfter would not be after notBefore"));
    }
    let tbs = TbsDer {
        version: 2,
        serial_number: p.serial.clone(),
        signature: alg.algorithm_identifier(),
        issuer: p.issuer.clone(),
        validity: ValidityDer {
            not_before: x509_time(p.not_before)?,
            not_after: x509_time(p.not_after)?,
        },
        subject: p.subject.clone(),
        subject_public_key_info: p.subject_key.clone(),
        extensions: if p.extensions.is_empty() {
            None
        } else {
            Some(p.extensions.clone())
        },
    };
    tbs.to_der().map_err(|e| der_err("certificate", e))
}

/// Build, sign and verify a PKCS#10 CSR; returns its DER. With no extensions the attributes
/// are empty, as cfssl's are.
pub fn csr(subject: &Name, extensions: Vec<Extension>, signer: &dyn Signer) -> Result<Vec<u8>> {
    let mut attributes = SetOfVec::new();
    if !extensions.is_empty() {
        let attr = Attribute::try_from(ExtensionReq(extensions)).map_err(|e| der_err("CSR", e))?;
        attributes.insert(attr).map_err(|e| der_err("CSR", e))?;
    }
    let info = CertReqInfo {
        version: Version::V1,
        subject: subject.clone(),
        public_key: signer.public_key().clone(),
        attributes,
    };
    let info_der = info.to_der().map_err(|e| der_err("CSR", e))?;
    let sig = sign_checked(signer, &info_der, "CSR")?;
    let req = CertReq {
        info,
        algorithm: signer.algorithm().algorithm_identifier(),
        signature: BitString::from_bytes(&sig).map_err(|e| der_err("signature", e))?,
    };
    req.to_der().map_err(|e| der_err("CSR", e))
}

/// PEM-encode DER with the given label (64-column lines, `\n` endings, as Go writes).
pub fn pem(label: &str, der: &[u8]) -> Result<String> {
    der::pem::encode_string(label, der::pem::LineEnding::LF, der)
        .map_err(|e| Error::input(format!("cannot PEM-encode {label}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x509::alg::KeyAlg;
    use crate::x509::softkey::SoftKey;

    fn params(serial: SerialNumber, subject_key: SubjectPublicKeyInfoOwned) -> CertParams {
        let name: Name = "CN=test".parse().unwrap();
        CertParams {
            serial,
            issuer: name.clone(),
            subject: name,
            subject_key,
            not_before: 1_700_000_000,
            not_after: 1_800_000_000,
            extensions: vec![basic_constraints_ext(false, None).unwrap()],
        }
    }

    #[test]
    fn a_prepared_certificate_gets_a_fresh_serial_at_each_signature() {
        for spec in [KeyAlg::EcP256, KeyAlg::Rsa(2048)] {
            let ca = SoftKey::generate(spec).unwrap();
            let p = params(serial_placeholder().unwrap(), ca.public_key().clone());
            let mut unsigned = certificate_unsigned(&p, ca.algorithm()).unwrap();
            let serial_of = |der: &[u8]| {
                let c = Certificate::from_der(der).unwrap();
                c.tbs_certificate().serial_number().as_bytes().to_vec()
            };
            let a = unsigned.sign(&ca).unwrap().verified().unwrap();
            let b = unsigned.sign(&ca).unwrap().verified().unwrap();
            let (sa, sb) = (serial_of(&a), serial_of(&b));
            assert_ne!(sa, sb);
            for s in [&sa, &sb] {
                assert_eq!(s.len(), 20);
                assert!(s[0] != 0 && s[0] & 0x80 == 0);
                assert_ne!(s.as_slice(), serial_placeholder().unwrap().as_bytes());
            }
            // Apart from the serial and the signature, the same certificate as one built
            // with that serial directly.
            let mut direct = p.clone();
            direct.serial = SerialNumber::new(&sa).unwrap();
            let d = certificate(&direct, &ca).unwrap();
            let tbs = |der: &[u8]| {
                Certificate::from_der(der)
                    .unwrap()
                    .tbs_certificate()
                    .to_der()
                    .unwrap()
            };
            assert_eq!(tbs(&a), tbs(&d));
        }
    }

    #[test]
    fn a_serial_that_is_not_twenty_octets_cannot_be_prepared() {
        let ca = SoftKey::generate(KeyAlg::EcP256).unwrap();
        let p = params(
            SerialNumber::new(&[1, 2, 3]).unwrap(),
            ca.public_key().clone(),
        );
        let e = certificate_unsigned(&p, ca.algorithm()).err().unwrap();
        assert!(e.to_string().contains("not 20 octets"), "{e}");
    }

    #[test]
    fn a_prepared_certificate_refuses_another_algorithm() {
        let ca = SoftKey::generate(KeyAlg::EcP256).unwrap();
        let other = SoftKey::generate(KeyAlg::EcP384).unwrap();
        let p = params(serial_placeholder().unwrap(), ca.public_key().clone());
        let mut unsigned = certificate_unsigned(&p, ca.algorithm()).unwrap();
        assert!(unsigned.sign(&other).is_err());
    }
}
