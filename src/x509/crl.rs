//! RFC 5280 v2 certificate revocation lists: the revocation reasons (cfssl's names), the
//! DER of a CRL for a CA certificate, signed through a [`Signer`] and verified in software
//! before it is returned.
//!
//! The revokedCertificates list is written entry by entry straight into one buffer with `der`
//! primitives instead of through x509-cert's owned structures: a CRL of a million entries then
//! costs about 55 bytes per entry and no allocation per entry (see the `crl` tests for the
//! cross-check against x509-cert's own `CertificateList` decoder).

use std::str::FromStr;

use const_oid::db::rfc5280;
use der::asn1::{BitString, OctetString, UintRef};
use der::{Encode, Header, Length, Tag};
use x509_cert::certificate::Certificate;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::{CrlReason, KeyUsage, KeyUsages, SubjectKeyIdentifier};

use crate::error::{Error, Result, der_err};
use crate::x509::Signer;
use crate::x509::alg::SigAlg;
use crate::x509::build::{aki_ext, key_id, x509_time};
use crate::x509::verify::verify;

/// Why a certificate was revoked: RFC 5280 §5.3.1 CRLReason (value 7 is unused there).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// unspecified (0): written as no reasonCode at all, as RFC 5280 recommends.
    Unspecified,
    /// keyCompromise (1)
    KeyCompromise,
    /// cACompromise (2)
    CaCompromise,
    /// affiliationChanged (3)
    AffiliationChanged,
    /// superseded (4)
    Superseded,
    /// cessationOfOperation (5)
    CessationOfOperation,
    /// certificateHold (6)
    CertificateHold,
    /// removeFromCRL (8)
    RemoveFromCrl,
    /// privilegeWithdrawn (9)
    PrivilegeWithdrawn,
    /// aACompromise (10)
    AaCompromise,
}

impl Reason {
    /// Every reason, in code order.
    pub const ALL: [Reason; 10] = [
        Reason::Unspecified,
        Reason::KeyCompromise,
        Reason::CaCompromise,
        Reason::AffiliationChanged,
        Reason::Superseded,
        Reason::CessationOfOperation,
        Reason::CertificateHold,
        Reason::RemoveFromCrl,
        Reason::PrivilegeWithdrawn,
        Reason::AaCompromise,
    ];

    /// The CRLReason code.
    pub fn code(self) -> u8 {
        self.x509() as u8
    }

    /// cfssl's name (lower case), as in its `revocationReasonCodes` map.
    pub fn name(self) -> &'static str {
        match self {
            Reason::Unspecified => "unspecified",
            Reason::KeyCompromise => "keycompromise",
            Reason::CaCompromise => "cacompromise",
            Reason::AffiliationChanged => "affiliationchanged",
            Reason::Superseded => "superseded",
            Reason::CessationOfOperation => "cessationofoperation",
            Reason::CertificateHold => "certificatehold",
            Reason::RemoveFromCrl => "removefromcrl",
            Reason::PrivilegeWithdrawn => "privilegewithdrawn",
            Reason::AaCompromise => "aacompromise",
        }
    }

    /// The x509-cert enumeration value.
    pub fn x509(self) -> CrlReason {
        match self {
            Reason::Unspecified => CrlReason::Unspecified,
            Reason::KeyCompromise => CrlReason::KeyCompromise,
            Reason::CaCompromise => CrlReason::CaCompromise,
            Reason::AffiliationChanged => CrlReason::AffiliationChanged,
            Reason::Superseded => CrlReason::Superseded,
            Reason::CessationOfOperation => CrlReason::CessationOfOperation,
            Reason::CertificateHold => CrlReason::CertificateHold,
            Reason::RemoveFromCrl => CrlReason::RemoveFromCRL,
            Reason::PrivilegeWithdrawn => CrlReason::PrivilegeWithdrawn,
            Reason::AaCompromise => CrlReason::AaCompromise,
        }
    }
}

impl FromStr for Reason {
    type Err = Error;

    /// cfssl's `ocsp.ReasonStringToCode` (cloudflare/cfssl, ocsp/ocsp.go): "" is unspecified,
    /// a name is matched case-insensitively, else a number from 1 to 9. Unlike cfssl, 7 is
    /// refused: RFC 5280 assigns it no reason, so a CRL carrying it would be malformed.
    fn from_str(s: &str) -> Result<Self> {
        if s.is_empty() {
            return Ok(Reason::Unspecified);
        }
        if let Some(r) = Reason::ALL
            .iter()
            .find(|r| r.name().eq_ignore_ascii_case(s))
        {
            return Ok(*r);
        }
        let code: Option<u8> = s.parse().ok().filter(|c| (1..=9).contains(c) && *c != 7);
        code.and_then(|c| Reason::ALL.into_iter().find(|r| r.code() == c))
            .ok_or_else(|| {
                Error::input(format!(
                    "unknown revocation reason \"{}\": use one of {} or a code from 1 to 9 except 7",
                    crate::text::escape_for_log(s),
                    Reason::ALL.map(Reason::name).join(", ")
                ))
            })
    }
}

/// One revoked certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokedEntry {
    /// Its serial number, big-endian unsigned (leading zero octets allowed); at most 20
    /// significant octets, since cfssl's 20 random octets may have the top bit set.
    pub serial: Vec<u8>,
    /// When it was revoked, Unix seconds.
    pub revoked_at: i64,
    /// Why; `None` and [`Reason::Unspecified`] both leave the reasonCode out.
    pub reason: Option<Reason>,
}

/// The most a DER header takes here: tag, 0x84 and four length octets (der caps lengths at
/// u32).
const MAX_HEADER: usize = 6;

/// Room kept after the entries for the crlExtensions, signature algorithm and signature (an
/// RSA-4096 signature takes 517 octets).
const TAIL_ROOM: usize = 1024;

/// Build the v2 CRL of the CA certificate `ca` listing `entries` (in the order given), with
/// cRLNumber `crl_number` (big-endian unsigned), thisUpdate and nextUpdate (Unix seconds);
/// sign it with `signer` (which must hold `ca`'s key) and verify that signature against
/// `ca`'s public key. Returns the DER CRL.
///
/// The whole CRL is made in one buffer: the entries are written after room left for the
/// headers in front of them (whose lengths are known only at the end), so a CRL of a million
/// entries is never copied whole.
pub fn build_crl(
    ca: &Certificate,
    entries: impl IntoIterator<Item = RevokedEntry>,
    crl_number: &[u8],
    this_update: i64,
    next_update: i64,
    signer: &dyn Signer,
) -> Result<Vec<u8>> {
    check_ca(ca, signer)?;
    if next_update <= this_update {
        return Err(Error::policy(
            "the CRL's nextUpdate would not be after its thisUpdate",
        ));
    }
    let alg = signer.algorithm();
    let head = tbs_head(ca, alg, this_update, next_update)?;
    let tail = crl_extensions(ca, crl_number)?;
    let lead = 3 * MAX_HEADER + head.len();
    let mut buf = revoked_certificates(entries, lead)?;
    let entries_len = buf.len() - lead;
    buf.extend_from_slice(&tail);
    let tbs_at = frame_tbs(&mut buf, lead, &head, entries_len)?;

    let sig = signer.sign(&buf[tbs_at..])?;
    let ca_key = ca.tbs_certificate().subject_public_key_info();
    verify(ca_key, alg, &buf[tbs_at..], &sig).map_err(|e| {
        e.context("the token's signature on the CRL was rejected; nothing was written")
    })?;
    alg.algorithm_identifier()
        .encode_to_vec(&mut buf)
        .map_err(|e| der_err("CRL signature algorithm", e))?;
    BitString::from_bytes(&sig)
        .and_then(|b| b.encode_to_vec(&mut buf))
        .map_err(|e| der_err("CRL signature", e))?;
    let outer = header(buf.len() - tbs_at)?;
    let start = put_before(&mut buf, tbs_at, &outer);
    buf.drain(..start);
    Ok(buf)
}

/// The TBSCertList's fields before revokedCertificates: version (v2), signature, issuer,
/// thisUpdate, nextUpdate.
fn tbs_head(ca: &Certificate, alg: SigAlg, this_update: i64, next_update: i64) -> Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    1u8.encode_to_vec(&mut head)
        .map_err(|e| der_err("CRL version", e))?;
    alg.algorithm_identifier()
        .encode_to_vec(&mut head)
        .map_err(|e| der_err("CRL signature algorithm", e))?;
    // x509-cert decodes only DER, so this re-encoding is the certificate's subject exactly.
    ca.tbs_certificate()
        .subject()
        .encode_to_vec(&mut head)
        .map_err(|e| der_err("CRL issuer", e))?;
    for t in [this_update, next_update] {
        x509_time(t)?
            .encode_to_vec(&mut head)
            .map_err(|e| der_err("CRL time", e))?;
    }
    Ok(head)
}

/// Write the TBSCertList header, `head` and the revokedCertificates header into the room that
/// ends at `lead`, in front of the entries (`entries_len` octets) and crlExtensions that fill
/// the rest of `buf`; returns where the TBSCertList starts. With no entries revokedCertificates
/// is left out, not written empty, as RFC 5280 §5.1.2.6 requires.
fn frame_tbs(buf: &mut [u8], lead: usize, head: &[u8], entries_len: usize) -> Result<usize> {
    let mut at = lead;
    if entries_len > 0 {
        at = put_before(buf, at, &header(entries_len)?);
    }
    at = put_before(buf, at, head);
    let tbs_len = buf.len() - at;
    Ok(put_before(buf, at, &header(tbs_len)?))
}

/// Copy `bytes` into `buf` so that they end at `end`; returns where they start.
fn put_before(buf: &mut [u8], end: usize, bytes: &[u8]) -> usize {
    let start = end - bytes.len();
    buf[start..end].copy_from_slice(bytes);
    start
}

/// A SEQUENCE header for `len` content octets.
fn header(len: usize) -> Result<Vec<u8>> {
    let len = Length::try_from(len).map_err(|e| der_err("CRL (too large)", e))?;
    Header::new(Tag::Sequence, len)
        .to_der()
        .map_err(|e| der_err("CRL", e))
}

/// The signer must hold the CA certificate's key (else no one could verify the CRL), and a
/// CA certificate with keyUsage must allow cRLSign (else RFC 5280 §6.3.3 verifiers refuse it).
fn check_ca(ca: &Certificate, signer: &dyn Signer) -> Result<()> {
    let tbs = ca.tbs_certificate();
    if signer.public_key() != tbs.subject_public_key_info() {
        return Err(Error::policy(
            "the CRL signing key is not the CA certificate's key; give the key made for this CA",
        ));
    }
    let ku = tbs
        .get_extension::<KeyUsage>()
        .map_err(|e| der_err("CA certificate keyUsage", e))?;
    if let Some((_, ku)) = ku
        && !ku.0.contains(KeyUsages::CRLSign)
    {
        return Err(Error::policy(
            "the CA certificate's keyUsage does not allow cRLSign, so verifiers would reject its CRLs",
        ));
    }
    Ok(())
}

/// The key identifier of `ca` that its CRLs and the certificates it issues carry as their
/// authorityKeyIdentifier: its SKI, or its RFC 5280 method-1 key identifier when it has none.
/// The certificate store files issued certificates under it (lowercase hex).
pub fn ca_key_identifier(ca: &Certificate) -> Result<Vec<u8>> {
    let tbs = ca.tbs_certificate();
    Ok(
        match tbs
            .get_extension::<SubjectKeyIdentifier>()
            .map_err(|e| der_err("CA certificate subjectKeyIdentifier", e))?
        {
            Some((_, ski)) => ski.0.as_bytes().to_vec(),
            None => key_id(tbs.subject_public_key_info()),
        },
    )
}

/// crlExtensions, `[0] EXPLICIT`: authorityKeyIdentifier (the CA's SKI, or its RFC 5280
/// method-1 key identifier when it has none, as issued certificates get) and cRLNumber.
fn crl_extensions(ca: &Certificate, crl_number: &[u8]) -> Result<Vec<u8>> {
    let ski = ca_key_identifier(ca)?;
    let number = UintRef::new(crl_number).map_err(|e| der_err("cRLNumber", e))?;
    // RFC 5280 §5.2.3: conforming CRL issuers use cRLNumber values of at most 20 octets.
    if number.is_empty()
        || number.encoded_len().map_err(|e| der_err("cRLNumber", e))? > Length::new(22)
    {
        return Err(Error::input(
            "the cRLNumber must be a non-negative integer of at most 20 octets",
        ));
    }
    let number_ext = Extension {
        extn_id: rfc5280::ID_CE_CRL_NUMBER,
        critical: false,
        extn_value: OctetString::new(number.to_der().map_err(|e| der_err("cRLNumber", e))?)
            .map_err(|e| der_err("cRLNumber", e))?,
    };
    let exts = vec![aki_ext(&ski)?, number_ext]
        .to_der()
        .map_err(|e| der_err("CRL extensions", e))?;
    let mut out = Vec::with_capacity(exts.len() + 4);
    push_header(
        &mut out,
        Tag::ContextSpecific {
            constructed: true,
            number: der::TagNumber(0),
        },
        exts.len(),
    )?;
    out.extend_from_slice(&exts);
    Ok(out)
}

/// `lead` zero octets, then the contents of revokedCertificates (without its SEQUENCE header):
/// each entry is SEQUENCE { userCertificate INTEGER, revocationDate Time, crlEntryExtensions
/// OPTIONAL }. Sized for the whole CRL when `entries` knows its length.
fn revoked_certificates(
    entries: impl IntoIterator<Item = RevokedEntry>,
    lead: usize,
) -> Result<Vec<u8>> {
    let entries = entries.into_iter();
    // A 20-octet serial, a UTCTime and a reasonCode take 55 octets.
    let guess = entries.size_hint().0.saturating_mul(56);
    let mut buf = Vec::with_capacity(lead.saturating_add(guess).saturating_add(TAIL_ROOM));
    buf.resize(lead, 0);
    let reasons = reason_extensions()?;
    let mut last_time: Option<(i64, Vec<u8>)> = None;
    for e in entries {
        let serial = entry_serial(&e.serial)?;
        // Revocations come in batches with equal times: encode each distinct time once.
        if last_time.as_ref().is_none_or(|(t, _)| *t != e.revoked_at) {
            let der = x509_time(e.revoked_at)?
                .to_der()
                .map_err(|err| der_err("revocationDate", err))?;
            last_time = Some((e.revoked_at, der));
        }
        let time = last_time.as_ref().map_or(&[][..], |(_, d)| d.as_slice());
        let ext: &[u8] = match e.reason {
            Some(r) => &reasons[r.code() as usize],
            None => &[],
        };
        let serial_len = serial
            .encoded_len()
            .map_err(|err| der_err("serial number", err))?;
        let len = usize::try_from(serial_len).map_err(|err| der_err("serial number", err))?;
        push_header(&mut buf, Tag::Sequence, len + time.len() + ext.len())?;
        serial
            .encode_to_vec(&mut buf)
            .map_err(|err| der_err("serial number", err))?;
        buf.extend_from_slice(time);
        buf.extend_from_slice(ext);
    }
    Ok(buf)
}

/// A revoked certificate's serial as an INTEGER: positive, at most 20 significant octets.
fn entry_serial(serial: &[u8]) -> Result<UintRef<'_>> {
    let u = UintRef::new(serial).map_err(|e| der_err("serial number", e))?;
    if u.as_bytes().iter().all(|b| *b == 0) || u.as_bytes().len() > 20 {
        let hex: String = serial.iter().map(|b| format!("{b:02x}")).collect();
        return Err(Error::input(format!(
            "revoked serial number {hex:?} is not a positive integer of at most 20 octets"
        )));
    }
    Ok(u)
}

/// crlEntryExtensions (SEQUENCE OF Extension) holding one reasonCode, indexed by code; empty
/// for unspecified, which RFC 5280 §5.3.1 says to leave out, and for the unused code 7.
fn reason_extensions() -> Result<Vec<Vec<u8>>> {
    let mut out = vec![Vec::new(); 11];
    for r in Reason::ALL
        .into_iter()
        .filter(|r| *r != Reason::Unspecified)
    {
        let value = r.x509().to_der().map_err(|e| der_err("reasonCode", e))?;
        let ext = Extension {
            extn_id: rfc5280::ID_CE_CRL_REASONS,
            critical: false,
            extn_value: OctetString::new(value).map_err(|e| der_err("reasonCode", e))?,
        };
        out[r.code() as usize] = vec![ext].to_der().map_err(|e| der_err("reasonCode", e))?;
    }
    Ok(out)
}

fn push_header(buf: &mut Vec<u8>, tag: Tag, len: usize) -> Result<()> {
    let len = Length::try_from(len).map_err(|e| der_err("CRL (too large)", e))?;
    Header::new(tag, len)
        .encode_to_vec(buf)
        .map_err(|e| der_err("CRL", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x509::alg::KeyAlg;
    use crate::x509::build::{self, CertParams};
    use crate::x509::softkey::SoftKey;
    use der::Decode;
    use x509_cert::crl::CertificateList;

    type Crl = CertificateList;
    use x509_cert::ext::pkix::{AuthorityKeyIdentifier, CrlNumber};
    use x509_cert::time::Time;

    const T0: i64 = 1_750_000_000;

    /// A self-signed CA certificate for `key`; `with_ski` adds its subjectKeyIdentifier.
    fn ca_cert(
        key: &SoftKey,
        with_ski: bool,
        usages: der::flagset::FlagSet<KeyUsages>,
    ) -> Certificate {
        let mut extensions = vec![
            build::basic_constraints_ext(true, None).unwrap(),
            build::key_usage_ext(usages).unwrap(),
        ];
        if with_ski {
            extensions.push(build::ski_ext(key.public_key()).unwrap());
        }
        let name: x509_cert::name::Name = "CN=crl test CA,O=p11ca".parse().unwrap();
        let p = CertParams {
            serial: x509_cert::serial_number::SerialNumber::new(&[1]).unwrap(),
            issuer: name.clone(),
            subject: name,
            subject_key: key.public_key().clone(),
            not_before: T0 - 86_400,
            not_after: T0 + 10 * 365 * 86_400,
            extensions,
        };
        Certificate::from_der(&build::certificate(&p, key).unwrap()).unwrap()
    }

    fn ca_usages() -> der::flagset::FlagSet<KeyUsages> {
        KeyUsages::KeyCertSign | KeyUsages::CRLSign
    }

    fn entry(serial: &[u8], revoked_at: i64, reason: Option<Reason>) -> RevokedEntry {
        RevokedEntry {
            serial: serial.to_vec(),
            revoked_at,
            reason,
        }
    }

    /// Build with `entries` and number 7, parse with x509-cert and check the signature.
    fn crl_of(key: &SoftKey, ca: &Certificate, entries: Vec<RevokedEntry>) -> (Vec<u8>, Crl) {
        let der = build_crl(ca, entries, &[7], T0, T0 + 7 * 86_400, key).unwrap();
        let crl = Crl::from_der(&der).unwrap();
        let tbs = crl.tbs_cert_list.to_der().unwrap();
        let spki = ca.tbs_certificate().subject_public_key_info();
        verify(spki, key.algorithm(), &tbs, crl.signature.raw_bytes()).unwrap();
        (der, crl)
    }

    /// The value of the extension `oid` in `exts`.
    fn ext_value(exts: &[Extension], oid: const_oid::ObjectIdentifier) -> Option<Vec<u8>> {
        exts.iter()
            .find(|e| e.extn_id == oid)
            .map(|e| e.extn_value.as_bytes().to_vec())
    }

    #[test]
    fn reasons_parse_as_cfssl_names_them() {
        for r in Reason::ALL {
            assert_eq!(r.name().parse::<Reason>().unwrap(), r);
            assert_eq!(r.name().to_uppercase().parse::<Reason>().unwrap(), r);
        }
        assert_eq!(
            "KeyCompromise".parse::<Reason>().unwrap(),
            Reason::KeyCompromise
        );
        assert_eq!(
            "aACompromise".parse::<Reason>().unwrap(),
            Reason::AaCompromise
        );
        assert_eq!("".parse::<Reason>().unwrap(), Reason::Unspecified);
        assert_eq!("1".parse::<Reason>().unwrap(), Reason::KeyCompromise);
        assert_eq!("8".parse::<Reason>().unwrap(), Reason::RemoveFromCrl);
        assert_eq!("9".parse::<Reason>().unwrap(), Reason::PrivilegeWithdrawn);
        let codes: Vec<u8> = Reason::ALL.map(Reason::code).to_vec();
        assert_eq!(codes, [0, 1, 2, 3, 4, 5, 6, 8, 9, 10]);
        for bad in [
            "0",
            "7",
            "10",
            "-1",
            "key compromise",
            "revoked",
            "keycompromise\n",
        ] {
            let e = bad.parse::<Reason>().unwrap_err();
            assert!(e.to_string().contains("unknown revocation reason"), "{e}");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
    }

    #[test]
    fn serials_encode_as_minimal_positive_integers() {
        let der = |s: &[u8]| entry_serial(s).unwrap().to_der().unwrap();
        assert_eq!(der(&[0x01]), [0x02, 0x01, 0x01]);
        assert_eq!(der(&[0x7f]), [0x02, 0x01, 0x7f]);
        assert_eq!(der(&[0x80]), [0x02, 0x02, 0x00, 0x80]);
        assert_eq!(der(&[0x00, 0x00, 0x01, 0x00]), [0x02, 0x02, 0x01, 0x00]);
        assert_eq!(der(&[0x00, 0xff]), [0x02, 0x02, 0x00, 0xff]);
        // cfssl's 20 random octets with the top bit set: 21 content octets.
        let high = [0xff; 20];
        assert_eq!(der(&high)[..3], [0x02, 21, 0x00]);
        assert_eq!(der(&[[0u8].as_slice(), &high].concat()).len(), 23);
        for bad in [&[][..], &[0], &[0, 0], &[1; 21]] {
            let e = entry_serial(bad).unwrap_err();
            assert!(e.to_string().contains("not a positive integer"), "{e}");
        }
    }

    #[test]
    fn entries_round_trip_through_x509_cert() {
        let key = SoftKey::generate(KeyAlg::EcP256).unwrap();
        let ca = ca_cert(&key, true, ca_usages());
        let mut entries: Vec<RevokedEntry> = (0..300u32)
            .map(|i| {
                let reason = Reason::ALL.get(i as usize % 11).copied();
                entry(&(i + 1).to_be_bytes(), T0 - i64::from(i / 7), reason)
            })
            .collect();
        entries.push(entry(&[0xff; 20], T0, Some(Reason::KeyCompromise)));
        let (_, crl) = crl_of(&key, &ca, entries.clone());
        let got = crl.tbs_cert_list.revoked_certificates.unwrap();
        assert_eq!(got.len(), entries.len());
        for (g, want) in got.iter().zip(&entries) {
            // x509-cert gives the INTEGER's content octets (a leading 0x00 kept).
            let got = UintRef::new(g.serial_number.as_bytes()).unwrap();
            assert_eq!(
                got.as_bytes(),
                UintRef::new(&want.serial).unwrap().as_bytes()
            );
            let at = g.revocation_date.to_unix_duration().as_secs() as i64;
            assert_eq!(at, want.revoked_at);
            let exts = g.crl_entry_extensions.clone().unwrap_or_default();
            match want.reason {
                None | Some(Reason::Unspecified) => assert!(g.crl_entry_extensions.is_none()),
                Some(r) => {
                    assert_eq!(exts.len(), 1);
                    assert!(!exts[0].critical);
                    let v = ext_value(&exts, rfc5280::ID_CE_CRL_REASONS).unwrap();
                    assert_eq!(CrlReason::from_der(&v).unwrap(), r.x509());
                }
            }
        }
    }

    #[test]
    fn the_crl_carries_issuer_times_aki_and_number() {
        let key = SoftKey::generate(KeyAlg::EcP384).unwrap();
        for with_ski in [true, false] {
            let ca = ca_cert(&key, with_ski, ca_usages());
            let (_, crl) = crl_of(&key, &ca, vec![entry(&[5], T0, None)]);
            let tbs = &crl.tbs_cert_list;
            assert_eq!(tbs.version, x509_cert::Version::V2);
            assert_eq!(
                tbs.issuer.to_der().unwrap(),
                ca.tbs_certificate().subject().to_der().unwrap()
            );
            assert_eq!(tbs.this_update.to_unix_duration().as_secs() as i64, T0);
            let next = tbs.next_update.unwrap().to_unix_duration().as_secs() as i64;
            assert_eq!(next, T0 + 7 * 86_400);
            let exts = tbs.crl_extensions.clone().unwrap();
            assert_eq!(exts.len(), 2);
            assert!(exts.iter().all(|e| !e.critical));
            let aki = ext_value(&exts, rfc5280::ID_CE_AUTHORITY_KEY_IDENTIFIER).unwrap();
            let aki = AuthorityKeyIdentifier::from_der(&aki).unwrap();
            let want = key_id(key.public_key());
            assert_eq!(aki.key_identifier.unwrap().as_bytes(), want.as_slice());
            let n = ext_value(&exts, rfc5280::ID_CE_CRL_NUMBER).unwrap();
            assert_eq!(n, [0x02, 0x01, 0x07]);
            assert_eq!(CrlNumber::from_der(&n).unwrap().0.as_bytes(), [7]);
        }
    }

    #[test]
    fn an_empty_crl_has_no_revoked_certificates_field() {
        let key = SoftKey::generate(KeyAlg::EcP256).unwrap();
        let ca = ca_cert(&key, true, ca_usages());
        {
            let (_, crl) = crl_of(&key, &ca, Vec::new());
            assert!(crl.tbs_cert_list.revoked_certificates.is_none());
            // Absent, not an empty SEQUENCE: nextUpdate is directly followed by [0].
            let tbs = crl.tbs_cert_list.to_der().unwrap();
            let next = crl.tbs_cert_list.next_update.unwrap().to_der().unwrap();
            let at = tbs.windows(next.len()).position(|w| w == next).unwrap() + next.len();
            assert_eq!(tbs[at], 0xa0);
        }
    }

    #[test]
    fn times_switch_to_generalized_time_in_2050() {
        let key = SoftKey::generate(KeyAlg::EcP256).unwrap();
        let ca = ca_cert(&key, true, ca_usages());
        let last_utc = 2_524_607_999; // 2049-12-31T23:59:59Z
        let entries = vec![entry(&[1], last_utc, None), entry(&[2], last_utc + 1, None)];
        let der = build_crl(&ca, entries, &[1], last_utc, last_utc + 1, &key).unwrap();
        let crl = Crl::from_der(&der).unwrap();
        let tbs = &crl.tbs_cert_list;
        assert!(matches!(tbs.this_update, Time::UtcTime(_)));
        assert!(matches!(tbs.next_update, Some(Time::GeneralTime(_))));
        let got = tbs.revoked_certificates.as_ref().unwrap();
        assert!(matches!(got[0].revocation_date, Time::UtcTime(_)));
        assert!(matches!(got[1].revocation_date, Time::GeneralTime(_)));
        let find = |s: &[u8]| der.windows(s.len()).any(|w| w == s);
        assert!(find(b"\x17\x0d491231235959Z"));
        assert!(find(b"\x18\x0f20500101000000Z"));
    }

    #[test]
    fn crl_numbers_are_at_most_twenty_octets() {
        let key = SoftKey::generate(KeyAlg::EcP256).unwrap();
        let ca = ca_cert(&key, true, ca_usages());
        let number = |n: &[u8]| -> Result<Vec<u8>> {
            let der = build_crl(&ca, vec![], n, T0, T0 + 60, &key)?;
            let crl = Crl::from_der(&der).unwrap();
            let exts = crl.tbs_cert_list.crl_extensions.unwrap();
            Ok(ext_value(&exts, rfc5280::ID_CE_CRL_NUMBER).unwrap())
        };
        assert_eq!(number(&[0]).unwrap(), [0x02, 0x01, 0x00]);
        assert_eq!(number(&1u64.to_be_bytes()).unwrap(), [0x02, 0x01, 0x01]);
        assert_eq!(number(&[0x80]).unwrap(), [0x02, 0x02, 0x00, 0x80]);
        let max = [[0x7f].as_slice(), &[0xff; 19]].concat();
        assert_eq!(number(&max).unwrap().len(), 22);
        for bad in [&[][..], &[0x80; 20], &[1; 21]] {
            let e = number(bad).unwrap_err();
            assert!(e.to_string().contains("cRLNumber"), "{e}");
        }
    }

    #[test]
    fn refuses_a_foreign_key_a_ca_without_crl_sign_and_backward_times() {
        let key = SoftKey::generate(KeyAlg::EcP256).unwrap();
        let other = SoftKey::generate(KeyAlg::EcP256).unwrap();
        let ca = ca_cert(&key, true, ca_usages());
        let e = build_crl(&ca, vec![], &[1], T0, T0 + 60, &other).unwrap_err();
        assert!(
            e.to_string().contains("not the CA certificate's key"),
            "{e}"
        );
        let no_crl_sign = ca_cert(&key, true, KeyUsages::KeyCertSign.into());
        let e = build_crl(&no_crl_sign, vec![], &[1], T0, T0 + 60, &key).unwrap_err();
        assert!(e.to_string().contains("cRLSign"), "{e}");
        let e = build_crl(&ca, vec![], &[1], T0, T0, &key).unwrap_err();
        assert!(e.to_string().contains("nextUpdate"), "{e}");
    }

    /// A signer whose signatures are garbage: the CRL must not come back.
    struct BadSigner<'a>(&'a SoftKey);

    impl Signer for BadSigner<'_> {
        fn algorithm(&self) -> crate::x509::alg::SigAlg {
            self.0.algorithm()
        }
        fn public_key(&self) -> &spki::SubjectPublicKeyInfoOwned {
            self.0.public_key()
        }
        fn sign(&self, msg: &[u8]) -> Result<Vec<u8>> {
            self.0.sign(&[msg, b"x"].concat())
        }
        fn random(&self, buf: &mut [u8]) -> Result<()> {
            self.0.random(buf)
        }
    }

    #[test]
    fn a_bad_signature_is_caught_before_return() {
        let key = SoftKey::generate(KeyAlg::EcP256).unwrap();
        let ca = ca_cert(&key, true, ca_usages());
        let e = build_crl(&ca, vec![], &[1], T0, T0 + 60, &BadSigner(&key)).unwrap_err();
        assert_eq!(e.kind(), crate::error::Kind::Verify, "{e}");
    }

    #[test]
    fn entries_of_unknown_count_give_the_same_crl() {
        // An iterator that cannot tell its length (a store's cursor) grows the buffer instead.
        let key = SoftKey::generate(KeyAlg::EcP256).unwrap();
        let ca = ca_cert(&key, true, ca_usages());
        let entries: Vec<RevokedEntry> = (1..=5000u32)
            .map(|i| entry(&i.to_be_bytes(), T0, Some(Reason::KeyCompromise)))
            .collect();
        let tbs = |der: Vec<u8>| Crl::from_der(&der).unwrap().tbs_cert_list.to_der().unwrap();
        let sized = build_crl(&ca, entries.clone(), &[3], T0, T0 + 60, &key).unwrap();
        let streamed = entries.into_iter().filter(|_| true);
        let grown = build_crl(&ca, streamed, &[3], T0, T0 + 60, &key).unwrap();
        assert_eq!(tbs(sized), tbs(grown));
    }

    /// Far above the measured figures (see tests/crl.rs for the timed runs), so it never flakes.
    #[test]
    fn a_hundred_thousand_entries_in_under_thirty_seconds() {
        let key = SoftKey::generate(KeyAlg::EcP256).unwrap();
        let ca = ca_cert(&key, true, ca_usages());
        let start = std::time::Instant::now();
        let entries = (0..100_000u32).map(|i| {
            let mut serial = [0x5a; 20];
            serial[16..].copy_from_slice(&i.to_be_bytes());
            entry(&serial, T0 - i64::from(i % 1000), Some(Reason::Superseded))
        });
        let der = build_crl(&ca, entries, &[2], T0, T0 + 60, &key).unwrap();
        assert!(start.elapsed().as_secs() < 30, "{:?}", start.elapsed());
        let crl = Crl::from_der(&der).unwrap();
        assert_eq!(
            crl.tbs_cert_list.revoked_certificates.unwrap().len(),
            100_000
        );
    }
}
