//! DER for certificates and CSRs, signed through a [`Signer`] and verified before return.
//!
//! The TBSCertificate is our own `der` structure (x509-cert 0.3 keeps its fields private), so
//! we control field and extension order exactly, and the result is parsed back with x509-cert
//! as a final well-formedness check.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use const_oid::ObjectIdentifier;
use const_oid::db::rfc5280;
use der::asn1::{BitString, GeneralizedTime, Ia5String, OctetString, SetOfVec, UtcTime};
use der::{DateTime, Decode, Encode, Sequence};
use sha1::Digest;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::attr::Attribute;
use x509_cert::certificate::Certificate;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::crl::dp::DistributionPoint;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::{
    AccessDescription, AuthorityInfoAccessSyntax, AuthorityKeyIdentifier, BasicConstraints,
    CrlDistributionPoints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectKeyIdentifier,
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
    sha1::Sha1::digest(spki.subject_public_key.raw_bytes()).to_vec()
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

/// A certificate the token has signed but that is not yet checked: only
/// [`SignedCertificate::verified`] gives out its DER.
pub struct SignedCertificate {
    der: Vec<u8>,
    tbs: Vec<u8>,
    signature: Vec<u8>,
    alg: SigAlg,
    issuer_key: SubjectPublicKeyInfoOwned,
}

impl SignedCertificate {
    /// Verify the signature against the issuer's public key and re-parse the result; the DER
    /// is returned only if both succeed. Kept apart from signing so a batch can verify one
    /// certificate on another core while the token signs the next.
    pub fn verified(self) -> Result<Vec<u8>> {
        verify(&self.issuer_key, self.alg, &self.tbs, &self.signature).map_err(|e| {
            e.context("the token's signature on the certificate was rejected; nothing was written")
        })?;
        Certificate::from_der(&self.der).map_err(|e| der_err("certificate (re-parse)", e))?;
        Ok(self.der)
    }
}

/// Build, sign and verify a v3 certificate; returns its DER.
pub fn certificate(p: &CertParams, signer: &dyn Signer) -> Result<Vec<u8>> {
    certificate_signed(p, signer)?.verified()
}

/// Build and sign a v3 certificate; the caller must call [`SignedCertificate::verified`].
pub fn certificate_signed(p: &CertParams, signer: &dyn Signer) -> Result<SignedCertificate> {
    if p.not_after <= p.not_before {
        return Err(Error::policy("notAfter would not be after notBefore"));
    }
    let alg = signer.algorithm().algorithm_identifier();
    let tbs = TbsDer {
        version: 2,
        serial_number: p.serial.clone(),
        signature: alg.clone(),
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
    let tbs_der = tbs.to_der().map_err(|e| der_err("certificate", e))?;
    let sig = signer.sign(&tbs_der)?;
    let cert = CertDer {
        tbs: der::asn1::AnyRef::try_from(tbs_der.as_slice())
            .map_err(|e| der_err("certificate", e))?,
        signature_algorithm: alg,
        signature: BitString::from_bytes(&sig).map_err(|e| der_err("signature", e))?,
    };
    let der = cert.to_der().map_err(|e| der_err("certificate", e))?;
    Ok(SignedCertificate {
        der,
        tbs: tbs_der,
        signature: sig,
        alg: signer.algorithm(),
        issuer_key: signer.public_key().clone(),
    })
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
