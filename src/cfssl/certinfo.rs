//! `cfssl certinfo` / `cfssl-certinfo`: describe a certificate or a CSR as JSON.
//!
//! For certificates the output matches cfssl 1.6's `certinfo.Certificate` field for field and in
//! key order (including 1.3+'s zero-padded key identifiers, where 1.2 printed `8` for `08`).
//! For CSRs cfssl dumps Go's `x509.CertificateRequest` struct, whose shape depends on the Go
//! version; p11ca prints a smaller, stable summary instead (see [`CsrInfo`]).
//!
//! Output is rendered by [`to_go_json`] exactly as Go's `json.MarshalIndent(v, "", "  ")`
//! would (two-space indent, `<` `>` `&` escaped as `\u003c` etc.), followed by a newline.

use std::net::{Ipv4Addr, Ipv6Addr};

use const_oid::ObjectIdentifier;
use const_oid::db::rfc5912;
use der::asn1::AnyRef;
use der::{Decode, Encode, Header, Reader, SliceReader, Tag, Tagged};
use serde::Serialize;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::certificate::Certificate;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, SubjectAltName, SubjectKeyIdentifier};
use x509_cert::name::Name;
use x509_cert::request::{CertReq, ExtensionReq};
use x509_cert::time::Time;

use crate::error::{Error, Result};
use crate::text;
use crate::x509::alg::{KeyAlg, SigAlg};
use crate::x509::pem::read_der;

/// A subject or issuer name as cfssl's `certinfo.Name` prints it.
///
/// Each single-valued field is omitted when empty; repeated attributes of one type are joined
/// with `,` (commonName and serialNumber keep the last value, as Go's `pkix.Name` does).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NameInfo {
    /// commonName (2.5.4.3)
    #[serde(skip_serializing_if = "String::is_empty")]
    pub common_name: String,
    /// serialNumber (2.5.4.5)
    #[serde(skip_serializing_if = "String::is_empty")]
    pub serial_number: String,
    /// countryName (2.5.4.6)
    #[serde(skip_serializing_if = "String::is_empty")]
    pub country: String,
    /// organizationName (2.5.4.10)
    #[serde(skip_serializing_if = "String::is_empty")]
    pub organization: String,
    /// organizationalUnitName (2.5.4.11)
    #[serde(skip_serializing_if = "String::is_empty")]
    pub organizational_unit: String,
    /// localityName (2.5.4.7)
    #[serde(skip_serializing_if = "String::is_empty")]
    pub locality: String,
    /// stateOrProvinceName (2.5.4.8)
    #[serde(skip_serializing_if = "String::is_empty")]
    pub province: String,
    /// streetAddress (2.5.4.9)
    #[serde(skip_serializing_if = "String::is_empty")]
    pub street_address: String,
    /// postalCode (2.5.4.17)
    #[serde(skip_serializing_if = "String::is_empty")]
    pub postal_code: String,
    /// Every attribute value in DER order, including ones without a field above (such as
    /// emailAddress). A value that is not a string is shown as `#` and its DER in hex
    /// (RFC 4514 style); Go's parser would reject such a name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
}

/// cfssl-certinfo's description of a certificate (`certinfo.Certificate`), keys in cfssl's order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    /// The subject name.
    pub subject: NameInfo,
    /// The issuer name.
    pub issuer: NameInfo,
    /// The serial number in decimal.
    pub serial_number: String,
    /// dNSName SANs, then iPAddress SANs; email and URI SANs are not listed (as in cfssl).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sans: Vec<String>,
    /// notBefore, RFC 3339 UTC.
    pub not_before: String,
    /// notAfter, RFC 3339 UTC.
    pub not_after: String,
    /// Go's name of the signature algorithm, or `Unknown Signature`.
    pub sigalg: String,
    /// The authorityKeyIdentifier's keyIdentifier as `AB:CD:...`, or `""`.
    pub authority_key_id: String,
    /// The subjectKeyIdentifier as `AB:CD:...`, or `""`.
    pub subject_key_id: String,
    /// The certificate as PEM, ending in a newline.
    pub pem: String,
}

/// p11ca's description of a CSR (cfssl prints Go's internal struct, which is not reproducible).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CsrInfo {
    /// The requested subject.
    pub subject: NameInfo,
    /// Requested dNSName SANs, then iPAddress SANs (as in [`CertInfo::sans`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sans: Vec<String>,
    /// Requested rfc822Name SANs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<String>,
    /// Requested uniformResourceIdentifier SANs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub uris: Vec<String>,
    /// `RSA`, `ECDSA`, `Ed25519`, `DSA` or `Unknown` (Go's names).
    pub public_key_algorithm: String,
    /// RSA modulus bits, or the curve size for ECDSA; absent when unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_size: Option<u32>,
    /// `P-256`, `P-384`, `P-521`, or the curve OID; ECDSA only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub curve: Option<String>,
    /// Go's name of the signature algorithm, or `Unknown Signature`.
    pub signature_algorithm: String,
    /// Whether the CSR's self-signature verifies (false for algorithms p11ca cannot check).
    pub signature_valid: bool,
    /// The CSR as PEM (`CERTIFICATE REQUEST`), ending in a newline.
    pub pem: String,
}

/// cfssl-certinfo's JSON for a certificate (PEM or DER input bytes). `source` (a file name or
/// `-`) prefixes every error message.
pub fn cert_info(input: &[u8], source: &str) -> Result<CertInfo> {
    let der = read_der(input, source, &["CERTIFICATE"], "certificate")?;
    let cert = Certificate::from_der(&der)
        .map_err(|e| Error::input(format!("{source}: cannot parse the certificate: {e}")))?;
    let tbs = cert.tbs_certificate();
    let bad_ext = |what: &str, e: der::Error| {
        Error::input(format!(
            "{source}: the certificate's {what} extension is invalid: {e}"
        ))
    };

    let mut sans = Vec::new();
    if let Some((_, alt)) = tbs
        .get_extension::<SubjectAltName>()
        .map_err(|e| bad_ext("subjectAltName", e))?
    {
        sans = split_sans(&alt.0).dns_then_ip();
    }
    let aki = tbs
        .get_extension::<AuthorityKeyIdentifier>()
        .map_err(|e| bad_ext("authorityKeyIdentifier", e))?
        .and_then(|(_, a)| a.key_identifier)
        .map(|k| key_id_hex(k.as_bytes()))
        .unwrap_or_default();
    let ski = tbs
        .get_extension::<SubjectKeyIdentifier>()
        .map_err(|e| bad_ext("subjectKeyIdentifier", e))?
        .map(|(_, s)| key_id_hex(s.0.as_bytes()))
        .unwrap_or_default();

    let validity = tbs.validity();
    Ok(CertInfo {
        subject: name_info(tbs.subject()),
        issuer: name_info(tbs.issuer()),
        serial_number: signed_decimal(tbs.serial_number().as_bytes()),
        sans,
        not_before: rfc3339(&validity.not_before),
        not_after: rfc3339(&validity.not_after),
        sigalg: go_signature_name(cert.signature_algorithm()).to_string(),
        authority_key_id: aki,
        subject_key_id: ski,
        pem: pem_string("CERTIFICATE", &der, source)?,
    })
}

/// cfssl-certinfo -csr style JSON for a CSR (PEM or DER). `source` prefixes every error message.
pub fn csr_info(input: &[u8], source: &str) -> Result<CsrInfo> {
    let der = read_der(
        input,
        source,
        &["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"],
        "certificate request",
    )?;
    let req = CertReq::from_der(&der).map_err(|e| {
        Error::input(format!(
            "{source}: cannot parse the certificate request: {e}"
        ))
    })?;

    let mut sans = Sans::default();
    for attr in req.info.attributes.iter() {
        if attr.oid != <ExtensionReq as const_oid::AssociatedOid>::OID {
            continue;
        }
        for value in attr.values.iter() {
            let exts = value.decode_as::<ExtensionReq>().map_err(|e| {
                Error::input(format!(
                    "{source}: the request's extensionRequest attribute is invalid: {e}"
                ))
            })?;
            for ext in exts
                .0
                .iter()
                .filter(|x| x.extn_id == const_oid::db::rfc5280::ID_CE_SUBJECT_ALT_NAME)
            {
                let alt = SubjectAltName::from_der(ext.extn_value.as_bytes()).map_err(|e| {
                    Error::input(format!(
                        "{source}: the requested subjectAltName is invalid: {e}"
                    ))
                })?;
                sans.extend(split_sans(&alt.0));
            }
        }
    }

    let spki = &req.info.public_key;
    let (public_key_algorithm, key_size, curve) = key_summary(spki);
    let signature_valid = match (
        SigAlg::from_identifier(&req.algorithm),
        request_info_bytes(&der),
        req.signature.as_bytes(),
    ) {
        (Ok(alg), Some(tbs), Some(sig)) => crate::x509::verify::verify(spki, alg, tbs, sig).is_ok(),
        _ => false,
    };

    Ok(CsrInfo {
        subject: name_info(&req.info.subject),
        sans: sans.dns_then_ip(),
        emails: sans.emails,
        uris: sans.uris,
        public_key_algorithm: public_key_algorithm.to_string(),
        key_size,
        curve,
        signature_algorithm: go_signature_name(&req.algorithm).to_string(),
        signature_valid,
        pem: pem_string("CERTIFICATE REQUEST", &der, source)?,
    })
}

/// Render `v` the way Go's `json.MarshalIndent(v, "", "  ")` does, plus a trailing newline.
///
/// Struct fields keep their declaration order (use [`CertInfo`] / [`CsrInfo`], not a
/// `serde_json::Value`, whose maps are sorted). Serializing the types of this module cannot
/// fail; should a foreign `Serialize` impl fail, the result is a JSON string naming the error.
pub fn to_go_json<T: Serialize + ?Sized>(v: &T) -> String {
    let mut buf = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(
        &mut buf,
        serde_json::ser::PrettyFormatter::with_indent(b"  "),
    );
    let json = match v.serialize(&mut ser) {
        Ok(()) => String::from_utf8(buf).unwrap_or_default(),
        Err(e) => serde_json::Value::String(format!("cannot serialize: {e}")).to_string(),
    };
    // Go's encoder escapes these inside strings (HTML safety, JavaScript line separators);
    // they never occur in JSON outside strings, so a plain replacement is exact.
    let mut out = String::with_capacity(json.len() + 1);
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.push('\n');
    out
}

// ---------------------------------------------------------------------------------------------
// Input

/// The raw DER of the first element of the outer SEQUENCE (CertificationRequestInfo).
fn request_info_bytes(der: &[u8]) -> Option<&[u8]> {
    let mut r = SliceReader::new(der).ok()?;
    let outer = Header::decode(&mut r).ok()?;
    if outer.tag() != Tag::Sequence {
        return None;
    }
    let start = usize::try_from(r.position()).ok()?;
    AnyRef::decode(&mut r).ok()?;
    let end = usize::try_from(r.position()).ok()?;
    der.get(start..end)
}

fn pem_string(label: &str, der: &[u8], source: &str) -> Result<String> {
    let mut s = crate::x509::build::pem(label, der).map_err(|e| e.context(source))?;
    if !s.ends_with('\n') {
        s.push('\n');
    }
    Ok(s)
}

// ---------------------------------------------------------------------------------------------
// Fields

/// Go's `pkix.Name.FillFromRDNSequence` followed by cfssl's `certinfo.ParseName`.
fn name_info(name: &Name) -> NameInfo {
    let mut n = NameInfo::default();
    let mut multi: [Vec<String>; 7] = Default::default();
    for atv in name.iter() {
        let Some(value) = attribute_string(atv.value.tag(), atv.value.value()) else {
            n.names.push(format!(
                "#{}",
                text::hex(&atv.value.to_der().unwrap_or_default())
            ));
            continue;
        };
        n.names.push(value.clone());
        let arcs: Vec<u32> = atv.oid.arcs().collect();
        let (prefix, last) = match arcs.as_slice() {
            [2, 5, 4, last] => (true, *last),
            _ => (false, 0),
        };
        if !prefix {
            continue;
        }
        match last {
            3 => n.common_name = value,
            5 => n.serial_number = value,
            6 => multi[0].push(value),
            10 => multi[1].push(value),
            11 => multi[2].push(value),
            7 => multi[3].push(value),
            8 => multi[4].push(value),
            9 => multi[5].push(value),
            17 => multi[6].push(value),
            _ => {}
        }
    }
    let [c, o, ou, l, st, street, postal] = multi;
    n.country = c.join(",");
    n.organization = o.join(",");
    n.organizational_unit = ou.join(",");
    n.locality = l.join(",");
    n.province = st.join(",");
    n.street_address = street.join(",");
    n.postal_code = postal.join(",");
    n
}

/// The string types Go's certificate parser accepts in names, decoded as Go does.
fn attribute_string(tag: Tag, bytes: &[u8]) -> Option<String> {
    match tag {
        Tag::PrintableString
        | Tag::Utf8String
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::TeletexString
        | Tag::VisibleString => Some(String::from_utf8_lossy(bytes).into_owned()),
        Tag::BmpString => {
            if !bytes.len().is_multiple_of(2) {
                return None;
            }
            let bytes = bytes.strip_suffix(&[0, 0]).unwrap_or(bytes);
            let units = bytes
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]));
            Some(
                char::decode_utf16(units)
                    .map(|c| c.unwrap_or('\u{fffd}'))
                    .collect(),
            )
        }
        _ => None,
    }
}

/// SAN entries by kind, each in certificate order.
#[derive(Default)]
struct Sans {
    dns: Vec<String>,
    ips: Vec<String>,
    emails: Vec<String>,
    uris: Vec<String>,
}

impl Sans {
    fn extend(&mut self, other: Sans) {
        self.dns.extend(other.dns);
        self.ips.extend(other.ips);
        self.emails.extend(other.emails);
        self.uris.extend(other.uris);
    }

    fn dns_then_ip(&self) -> Vec<String> {
        self.dns.iter().chain(&self.ips).cloned().collect()
    }
}

fn split_sans(names: &[GeneralName]) -> Sans {
    let mut s = Sans::default();
    for g in names {
        match g {
            GeneralName::DnsName(d) => s.dns.push(d.to_string()),
            GeneralName::IpAddress(ip) => s.ips.push(go_ip_string(ip.as_bytes())),
            GeneralName::Rfc822Name(m) => s.emails.push(m.to_string()),
            GeneralName::UniformResourceIdentifier(u) => s.uris.push(u.to_string()),
            _ => {}
        }
    }
    s
}

/// Go's `net.IP.String()`: IPv4 (also IPv4-mapped IPv6) dotted, IPv6 per RFC 5952, other
/// lengths as `?` and hex.
fn go_ip_string(b: &[u8]) -> String {
    if let Ok(v4) = <[u8; 4]>::try_from(b) {
        return Ipv4Addr::from(v4).to_string();
    }
    if let Ok(v6) = <[u8; 16]>::try_from(b) {
        let ip = Ipv6Addr::from(v6);
        return match ip.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => ip.to_string(),
        };
    }
    format!("?{}", text::hex(b))
}

/// cfssl 1.3+'s `formatKeyID`: `%02X` bytes joined with `:`.
fn key_id_hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A DER INTEGER's content bytes (two's complement, big-endian) in decimal, like Go's
/// `big.Int.String()`.
fn signed_decimal(bytes: &[u8]) -> String {
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    if !negative {
        return text::decimal(bytes);
    }
    // Magnitude = two's complement negation: invert, add one.
    let mut mag: Vec<u8> = bytes.iter().map(|b| !b).collect();
    for b in mag.iter_mut().rev() {
        let (v, carry) = b.overflowing_add(1);
        *b = v;
        if !carry {
            break;
        }
    }
    format!("-{}", text::decimal(&mag))
}

/// RFC 3339 in UTC with second precision, as Go's `time.Time` marshals a certificate time.
fn rfc3339(t: &Time) -> String {
    // der's DateTime prints exactly this form (YYYY-MM-DDTHH:MM:SSZ).
    t.to_date_time().to_string()
}

const MD2_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.2");
const MD5_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.4");
const SHA1_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.5");
/// The old ISO/OIW sha1WithRSASignature, which Go also maps to SHA1WithRSA.
const SHA1_WITH_RSA_OIW: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.29");
const DSA_WITH_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10040.4.3");
const DSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.3.2");
const ECDSA_WITH_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.1");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const DSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10040.4.1");
const SECP_521_R_1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");

/// cfssl's `helpers.SignatureString` of Go's parsed signature algorithm.
fn go_signature_name(alg: &AlgorithmIdentifierOwned) -> &'static str {
    if let Ok(a) = SigAlg::from_identifier(alg) {
        return a.go_name();
    }
    match alg.oid {
        o if o == MD2_WITH_RSA => "MD2WithRSA",
        o if o == MD5_WITH_RSA => "MD5WithRSA",
        o if o == SHA1_WITH_RSA || o == SHA1_WITH_RSA_OIW => "SHA1WithRSA",
        o if o == DSA_WITH_SHA1 => "DSAWithSHA1",
        o if o == DSA_WITH_SHA256 => "DSAWithSHA256",
        o if o == ECDSA_WITH_SHA1 => "ECDSAWithSHA1",
        o if o == ED25519 => "Ed25519",
        _ => "Unknown Signature",
    }
}

/// Go's public key algorithm name, key size in bits and curve name for an SPKI.
fn key_summary(spki: &SubjectPublicKeyInfoOwned) -> (&'static str, Option<u32>, Option<String>) {
    match KeyAlg::of(spki) {
        Ok(KeyAlg::Rsa(bits)) => return ("RSA", u32::try_from(bits).ok(), None),
        Ok(KeyAlg::EcP256) => return ("ECDSA", Some(256), Some("P-256".into())),
        Ok(KeyAlg::EcP384) => return ("ECDSA", Some(384), Some("P-384".into())),
        Err(_) => {}
    }
    let oid = spki.algorithm.oid;
    if oid == rfc5912::ID_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
        return match curve {
            Some(c) if c == SECP_521_R_1 => ("ECDSA", Some(521), Some("P-521".into())),
            Some(c) => ("ECDSA", None, Some(c.to_string())),
            None => ("ECDSA", None, None),
        };
    }
    match oid {
        o if o == rfc5912::RSA_ENCRYPTION => ("RSA", None, None),
        o if o == ED25519 => ("Ed25519", Some(256), None),
        o if o == DSA => ("DSA", None, None),
        _ => ("Unknown", None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Kind;
    use crate::cfssl::csr::NameEntry;
    use crate::x509::Signer;
    use crate::x509::build::{self, CertParams};
    use crate::x509::hosts;
    use crate::x509::name::{self, SubjectSpec};
    use crate::x509::pem::{base64_decode, find, pem_block};
    use signature::hazmat::PrehashSigner;
    use x509_cert::serial_number::SerialNumber;

    struct SoftKey {
        sk: p256::ecdsa::SigningKey,
        spki: SubjectPublicKeyInfoOwned,
    }

    impl SoftKey {
        fn new(seed: u8) -> Self {
            let sk = p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap();
            let point = sk.verifying_key().to_sec1_point(false);
            let params = rfc5912::SECP_256_R_1.to_der().unwrap();
            let spki = crate::x509::pubkey::ec_spki(&params, point.as_bytes()).unwrap();
            Self { sk, spki }
        }
    }

    impl Signer for SoftKey {
        fn algorithm(&self) -> SigAlg {
            SigAlg::EcdsaSha256
        }
        fn public_key(&self) -> &SubjectPublicKeyInfoOwned {
            &self.spki
        }
        fn sign(&self, msg: &[u8]) -> Result<Vec<u8>> {
            let digest = SigAlg::EcdsaSha256.hash().digest(msg);
            let sig: p256::ecdsa::Signature = self.sk.sign_prehash(&digest).unwrap();
            Ok(sig.to_der().as_bytes().to_vec())
        }
        fn random(&self, buf: &mut [u8]) -> Result<()> {
            buf.fill(0x42);
            Ok(())
        }
    }

    fn subject() -> Name {
        let mut oid = std::collections::BTreeMap::new();
        oid.insert("2.5.4.17".to_string(), "8001".to_string());
        let names = vec![
            NameEntry {
                c: "US".into(),
                st: "CA".into(),
                l: "San Francisco".into(),
                o: "Acme <Dev> & Co".into(),
                ou: "WWW".into(),
                e: "admin@example.com".into(),
                ..Default::default()
            },
            NameEntry {
                ou: "Ops".into(),
                oid,
                ..Default::default()
            },
        ];
        name::build(&SubjectSpec {
            cn: "leaf.example.com",
            names: &names,
            serial_number: "S-1",
        })
        .unwrap()
    }

    fn ca_name() -> Name {
        let names = vec![NameEntry {
            c: "US".into(),
            o: "Acme".into(),
            ..Default::default()
        }];
        name::build(&SubjectSpec {
            cn: "Acme Root",
            names: &names,
            serial_number: "",
        })
        .unwrap()
    }

    /// A leaf signed by key 1 for key 2, with every SAN kind and both key identifiers.
    fn leaf_der(serial: &[u8], with_aki: bool) -> Vec<u8> {
        let ca = SoftKey::new(1);
        let leaf = SoftKey::new(2);
        let sans = hosts::parse_list(
            &[
                "b.example.com",
                "10.0.0.1",
                "mail@example.com",
                "spiffe://x/y",
                "::1",
                "a.example.com",
            ],
            "t",
        )
        .unwrap();
        let mut extensions = vec![build::ski_ext(&leaf.spki).unwrap()];
        if with_aki {
            // Leading 0x0A/0x05 bytes check zero-padding (cfssl 1.2 printed "A:5").
            extensions.push(build::aki_ext(&[0x0a, 0x05, 0xff, 0x00]).unwrap());
        }
        extensions.push(hosts::extension(&sans, false).unwrap().unwrap());
        let p = CertParams {
            serial: SerialNumber::new(serial).unwrap(),
            issuer: ca_name(),
            subject: subject(),
            subject_key: leaf.spki.clone(),
            not_before: 1_764_345_600, // 2025-11-28T16:00:00Z
            not_after: 2_554_041_600,  // 2050-12-07T16:00:00Z (GeneralizedTime)
            extensions,
        };
        build::certificate(&p, &ca).unwrap()
    }

    #[test]
    fn cert_fields_like_cfssl() {
        let der = leaf_der(&[0x01, 0x00], true);
        let info = cert_info(&der, "leaf.der").unwrap();
        assert_eq!(info.serial_number, "256");
        assert_eq!(
            info.sans,
            ["b.example.com", "a.example.com", "10.0.0.1", "::1"]
        );
        assert_eq!(info.not_before, "2025-11-28T16:00:00Z");
        assert_eq!(info.not_after, "2050-12-07T16:00:00Z");
        assert_eq!(info.sigalg, "ECDSAWithSHA256");
        assert_eq!(info.authority_key_id, "0A:05:FF:00");
        let ski = build::key_id(&SoftKey::new(2).spki);
        assert_eq!(info.subject_key_id, key_id_hex(&ski));
        assert_eq!(info.subject_key_id.len(), 20 * 3 - 1);

        let s = &info.subject;
        assert_eq!(s.common_name, "leaf.example.com");
        assert_eq!(s.serial_number, "S-1");
        assert_eq!(s.country, "US");
        assert_eq!(s.province, "CA");
        assert_eq!(s.locality, "San Francisco");
        assert_eq!(s.organization, "Acme <Dev> & Co");
        assert_eq!(s.organizational_unit, "Ops,WWW"); // one RDN, DER (SET) order
        assert_eq!(s.postal_code, "8001");
        assert_eq!(s.street_address, "");
        // Every value in DER order, extras (emailAddress, OID map) after the standard ones.
        assert_eq!(
            s.names,
            [
                "US",
                "CA",
                "San Francisco",
                "Acme <Dev> & Co",
                "Ops",
                "WWW",
                "leaf.example.com",
                "S-1",
                "admin@example.com",
                "8001"
            ]
        );
        assert_eq!(info.issuer.common_name, "Acme Root");
        assert_eq!(info.issuer.names, ["US", "Acme", "Acme Root"]);

        let pem = build::pem("CERTIFICATE", &der).unwrap();
        assert_eq!(info.pem, pem);
        assert!(info.pem.ends_with("-----END CERTIFICATE-----\n") && !info.pem.ends_with("\n\n"));
        // PEM input gives the same answer; so does PEM with text around it and CRLF.
        assert_eq!(cert_info(pem.as_bytes(), "leaf.pem").unwrap(), info);
        let crlf = format!("Subject: x\r\n{}\r\n", pem.replace('\n', "\r\n"));
        assert_eq!(cert_info(crlf.as_bytes(), "leaf.pem").unwrap(), info);
    }

    #[test]
    fn rendered_json_key_order_and_escaping() {
        let der = leaf_der(&[0x01, 0x00], false);
        let json = to_go_json(&cert_info(&der, "x").unwrap());
        assert!(json.ends_with("}\n") && !json.ends_with("\n\n"));
        let top: Vec<&str> = json
            .lines()
            .filter(|l| l.starts_with("  \"") && !l.starts_with("    "))
            .map(|l| l.trim_start().split('"').nth(1).unwrap())
            .collect();
        assert_eq!(
            top,
            [
                "subject",
                "issuer",
                "serial_number",
                "sans",
                "not_before",
                "not_after",
                "sigalg",
                "authority_key_id",
                "subject_key_id",
                "pem"
            ]
        );
        let subject_keys: Vec<&str> = json
            .lines()
            .take_while(|l| !l.starts_with("  \"issuer\""))
            .filter(|l| l.starts_with("    \"") && !l.starts_with("      "))
            .map(|l| l.trim_start().split('"').nth(1).unwrap())
            .collect();
        assert_eq!(
            subject_keys,
            [
                "common_name",
                "serial_number",
                "country",
                "organization",
                "organizational_unit",
                "locality",
                "province",
                "postal_code",
                "names"
            ]
        );
        assert!(
            json.starts_with("{\n  \"subject\": {\n    \"common_name\": \"leaf.example.com\",\n")
        );
        assert!(
            json.contains("\"organization\": \"Acme \\u003cDev\\u003e \\u0026 Co\","),
            "{json}"
        );
        assert!(json.contains("  \"serial_number\": \"256\",\n"));
        assert!(json.contains("  \"sans\": [\n    \"b.example.com\",\n"));
        assert!(
            json.contains("  \"authority_key_id\": \"\",\n"),
            "absent AKI is an empty string"
        );
        assert!(json.contains("\"pem\": \"-----BEGIN CERTIFICATE-----\\n"));
        assert!(json.contains("-----END CERTIFICATE-----\\n\"\n}\n"));
        // Round-trips as JSON.
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["subject"]["organization"], "Acme <Dev> & Co");
    }

    #[test]
    fn sans_key_omitted_when_empty() {
        let ca = SoftKey::new(1);
        let p = CertParams {
            serial: SerialNumber::new(&[0x7f; 20]).unwrap(),
            issuer: ca_name(),
            subject: ca_name(),
            subject_key: ca.spki.clone(),
            not_before: 0,
            not_after: 86_400,
            extensions: vec![],
        };
        let der = build::certificate(&p, &ca).unwrap();
        let info = cert_info(&der, "root").unwrap();
        assert!(info.sans.is_empty());
        let json = to_go_json(&info);
        assert!(!json.contains("\"sans\""));
        assert!(json.contains("\"subject_key_id\": \"\""));
        assert_eq!(info.not_before, "1970-01-01T00:00:00Z");
        assert_eq!(info.serial_number, text::decimal(&[0x7f; 20]));
    }

    #[test]
    fn decimal_serials() {
        assert_eq!(signed_decimal(&[0x00]), "0");
        assert_eq!(signed_decimal(&[0x01, 0x00]), "256");
        assert_eq!(signed_decimal(&[0x00, 0xff]), "255");
        assert_eq!(signed_decimal(&[0xff]), "-1");
        assert_eq!(signed_decimal(&[0xff, 0x00]), "-256");
        assert_eq!(signed_decimal(&[0x80]), "-128");
        assert_eq!(text::decimal(&u64::MAX.to_be_bytes()), u64::MAX.to_string());
        assert_eq!(
            text::decimal(&u128::MAX.to_be_bytes()),
            "340282366920938463463374607431768211455"
        );
        assert_eq!(text::decimal(&[]), "0");
    }

    #[test]
    fn key_ids_and_ips() {
        assert_eq!(
            key_id_hex(&[0xd3, 0x33, 0x55, 0x08, 0x18]),
            "D3:33:55:08:18"
        );
        assert_eq!(key_id_hex(&[]), "");
        assert_eq!(go_ip_string(&[127, 0, 0, 1]), "127.0.0.1");
        let mapped = "::ffff:10.1.2.3".parse::<Ipv6Addr>().unwrap().octets();
        assert_eq!(go_ip_string(&mapped), "10.1.2.3");
        let v6 = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets();
        assert_eq!(go_ip_string(&v6), "2001:db8::1");
        assert_eq!(go_ip_string(&[1, 2, 3]), "?010203");
    }

    #[test]
    fn signature_names() {
        let ai = |o: ObjectIdentifier| AlgorithmIdentifierOwned {
            oid: o,
            parameters: None,
        };
        assert_eq!(
            go_signature_name(&SigAlg::RsaSha384.algorithm_identifier()),
            "SHA384WithRSA"
        );
        assert_eq!(go_signature_name(&ai(SHA1_WITH_RSA)), "SHA1WithRSA");
        assert_eq!(go_signature_name(&ai(ED25519)), "Ed25519");
        assert_eq!(
            go_signature_name(&ai(ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10"))),
            "Unknown Signature"
        );
    }

    #[test]
    fn bad_input_is_an_input_error_naming_the_source() {
        for (input, want) in [
            (&b"hello world"[..], "not a PEM or DER certificate"),
            (b"", "is empty"),
            (b"\x30\x03\x02\x01\x01", "cannot parse the certificate"),
            (
                b"-----BEGIN CERTIFICATE-----\nAAAA\n",
                "no \"-----END CERTIFICATE-----\" line",
            ),
            (
                b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
                "invalid base64",
            ),
            (
                b"-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n",
                "cannot parse",
            ),
            (
                b"-----BEGIN CERTIFICATE REQUEST-----\nMAA=\n-----END CERTIFICATE REQUEST-----\n",
                "this is a CSR, not a certificate",
            ),
        ] {
            let e = cert_info(input, "in.pem").unwrap_err();
            assert_eq!(e.kind(), Kind::Input);
            assert!(e.message().starts_with("in.pem: "), "{e}");
            assert!(e.message().contains(want), "{e} (want {want})");
            assert!(!e.message().contains('\n'));
        }
        let e = csr_info(b"garbage", "req.csr").unwrap_err();
        assert_eq!(e.kind(), Kind::Input);
        assert!(
            e.message()
                .starts_with("req.csr: not a PEM or DER certificate request"),
            "{e}"
        );

        let pem = build::pem("CERTIFICATE", &leaf_der(&[1], true)).unwrap();
        let two = format!("{pem}{pem}");
        let e = cert_info(two.as_bytes(), "chain.pem").unwrap_err();
        assert!(e.message().contains("only one object"), "{e}");
    }

    #[test]
    fn truncated_and_mutated_input_never_panics() {
        let der = leaf_der(&[1, 2, 3], true);
        for n in 0..der.len() {
            let _ = cert_info(&der[..n], "t");
            let _ = csr_info(&der[..n], "t");
        }
        for i in 0..der.len() {
            let mut d = der.clone();
            d[i] ^= 0xff;
            let _ = cert_info(&d, "t");
        }
    }

    fn csr_der() -> Vec<u8> {
        let key = SoftKey::new(3);
        let sans = hosts::parse_list(
            &[
                "csr.example.com",
                "192.168.1.1",
                "ops@example.com",
                "urn:x:y",
            ],
            "t",
        )
        .unwrap();
        let ext = hosts::extension(&sans, false).unwrap().unwrap();
        let names = vec![NameEntry {
            c: "DE".into(),
            o: "Acme".into(),
            ..Default::default()
        }];
        let subj = name::build(&SubjectSpec {
            cn: "csr.example.com",
            names: &names,
            serial_number: "",
        })
        .unwrap();
        build::csr(&subj, vec![ext], &key).unwrap()
    }

    #[test]
    fn csr_summary_and_signature() {
        let der = csr_der();
        let info = csr_info(&der, "req.der").unwrap();
        assert_eq!(info.subject.common_name, "csr.example.com");
        assert_eq!(info.subject.names, ["DE", "Acme", "csr.example.com"]);
        assert_eq!(info.sans, ["csr.example.com", "192.168.1.1"]);
        assert_eq!(info.emails, ["ops@example.com"]);
        assert_eq!(info.uris, ["urn:x:y"]);
        assert_eq!(info.public_key_algorithm, "ECDSA");
        assert_eq!(info.key_size, Some(256));
        assert_eq!(info.curve.as_deref(), Some("P-256"));
        assert_eq!(info.signature_algorithm, "ECDSAWithSHA256");
        assert!(info.signature_valid);
        assert!(
            info.pem
                .starts_with("-----BEGIN CERTIFICATE REQUEST-----\n")
        );
        assert_eq!(csr_info(info.pem.as_bytes(), "req.pem").unwrap(), info);

        let json = to_go_json(&info);
        let top: Vec<&str> = json
            .lines()
            .filter(|l| l.starts_with("  \"") && !l.starts_with("    "))
            .map(|l| l.trim_start().split('"').nth(1).unwrap())
            .collect();
        assert_eq!(
            top,
            [
                "subject",
                "sans",
                "emails",
                "uris",
                "public_key_algorithm",
                "key_size",
                "curve",
                "signature_algorithm",
                "signature_valid",
                "pem"
            ]
        );

        // Flip one byte of the subject's commonName: still parses, signature no longer valid.
        let mut bad = der.clone();
        let at = find(&bad, b"csr.example.com").unwrap();
        bad[at] = b'X';
        let info = csr_info(&bad, "req.der").unwrap();
        assert_eq!(info.subject.common_name, "Xsr.example.com");
        assert!(!info.signature_valid);

        // A certificate is not a CSR.
        let cert_pem = build::pem("CERTIFICATE", &leaf_der(&[1], false)).unwrap();
        let e = csr_info(cert_pem.as_bytes(), "leaf.pem").unwrap_err();
        assert!(
            e.message().contains("this is a certificate, not a CSR"),
            "{e}"
        );
    }

    #[test]
    fn request_info_is_sliced_not_reencoded() {
        let der = csr_der();
        let req = CertReq::from_der(&der).unwrap();
        assert_eq!(
            request_info_bytes(&der).unwrap(),
            req.info.to_der().unwrap().as_slice()
        );
        assert!(request_info_bytes(b"\x04\x00").is_none());
        assert!(request_info_bytes(b"\x30\x05\x30").is_none());
    }

    #[test]
    fn base64_and_pem_parsing() {
        assert_eq!(base64_decode(b"aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode(b"aGVs\n bG8").unwrap(), b"hello");
        assert!(base64_decode(b"aGVsbG8=x").is_err());
        assert!(base64_decode(b"a").is_err());
        let (label, der, rest) =
            pem_block(b"-----BEGIN X-----\nProc-Type: 4,ENCRYPTED\n\naGk=\n-----END X-----\ntail")
                .unwrap();
        assert_eq!(
            (label.as_str(), der.as_slice(), rest),
            ("X", &b"hi"[..], &b"\ntail"[..])
        );
    }

    #[test]
    fn bmp_and_non_string_values() {
        assert_eq!(
            attribute_string(Tag::BmpString, &[0, b'h', 0, b'i', 0, 0]).unwrap(),
            "hi"
        );
        assert_eq!(attribute_string(Tag::BmpString, &[0]), None);
        assert_eq!(attribute_string(Tag::Integer, &[1]), None);
    }
}
