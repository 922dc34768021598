//! RFC 6960 OCSP: requests parsed, responses built and signed through a [`Signer`] and
//! verified in software before they are returned.
//!
//! The ASN.1 types are declared here with `der`'s derive macros, so every byte is encoded and
//! decoded by `der`: RustCrypto's `x509-ocsp` has the same types but is published only for
//! der 0.7 / x509-cert 0.2, and its der 0.8 release is not out.
//!
//! What cfssl's responses look like (and p11ca's, so that both responders serve either):
//! responderID by name, producedAt to the minute, thisUpdate to the hour, no nonce, no
//! extensions, the responder's certificate included unless the responder is the issuer.

use const_oid::ObjectIdentifier;
use const_oid::db::rfc5280::ID_KP_OCSP_SIGNING;
use der::asn1::{BitString, GeneralizedTime, Int, Null, OctetString};
use der::{Any, Choice, Decode, Encode, Enumerated, Sequence};
use spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;
use x509_cert::ext::Extensions;
use x509_cert::ext::pkix::{CrlReason, ExtendedKeyUsage};
use x509_cert::name::Name;

use crate::error::{Error, Result, der_err};
use crate::x509::Signer;
use crate::x509::alg::SigAlg;
use crate::x509::crl::Reason;
use crate::x509::verify::verify;

/// id-pkix-ocsp-basic.
pub const ID_PKIX_OCSP_BASIC: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.1");
/// id-pkix-ocsp-nocheck: a delegated responder's certificate is not itself checked.
pub const ID_PKIX_OCSP_NOCHECK: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.5");
/// id-sha1, the CertID hash every client sends by default.
pub const ID_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");

/// CertID: which certificate a request or response is about.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct CertId {
    /// The hash of the two hashes below.
    pub hash_algorithm: AlgorithmIdentifierOwned,
    /// Hash of the issuer's DER subject.
    pub issuer_name_hash: OctetString,
    /// Hash of the issuer's subjectPublicKey BIT STRING contents.
    pub issuer_key_hash: OctetString,
    /// The certificate's serial (any INTEGER a client sends).
    pub serial_number: Int,
}

/// One certificate asked about.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct Request {
    /// The certificate.
    pub req_cert: CertId,
    /// Ignored.
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub single_request_extensions: Option<Extensions>,
}

/// TBSRequest.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct TbsRequest {
    /// v1 (0) only.
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub version: Option<u8>,
    /// Ignored.
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    pub requestor_name: Option<Any>,
    /// The certificates asked about.
    pub request_list: Vec<Request>,
    /// Ignored, the nonce among them (RFC 5019 responders may ignore nonces; a pre-signed
    /// response cannot carry one).
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", optional = "true")]
    pub request_extensions: Option<Extensions>,
}

/// OCSPRequest.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct OcspRequest {
    /// The request.
    pub tbs_request: TbsRequest,
    /// Ignored (signed requests are not required).
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub optional_signature: Option<Any>,
}

/// OCSPResponseStatus.
#[derive(Clone, Copy, Debug, Eq, PartialEq, Enumerated)]
#[repr(u32)]
pub enum ResponseStatus {
    /// A response follows.
    Successful = 0,
    /// The request does not parse.
    MalformedRequest = 1,
    /// The responder failed.
    InternalError = 2,
    /// Try again later.
    TryLater = 3,
    /// A signed request is required.
    SigRequired = 5,
    /// The responder does not answer for this certificate (RFC 5019: unknown issuer or serial).
    Unauthorized = 6,
}

/// ResponseBytes.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct ResponseBytes {
    /// id-pkix-ocsp-basic.
    pub response_type: ObjectIdentifier,
    /// The DER BasicOCSPResponse.
    pub response: OctetString,
}

/// OCSPResponse.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct OcspResponse {
    /// The status.
    pub response_status: ResponseStatus,
    /// The response, when successful.
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub response_bytes: Option<ResponseBytes>,
}

/// ResponderID.
#[derive(Clone, Debug, Eq, PartialEq, Choice)]
pub enum ResponderId {
    /// The responder certificate's subject.
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", constructed = "true")]
    ByName(Name),
    /// SHA-1 of the responder's public key.
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", constructed = "true")]
    ByKey(OctetString),
}

/// How a response names its responder: by the certificate's subject (cfssl's choice, the
/// default) or by the SHA-1 of its public key (what RFC 5019 §2.2.3 recommends, to save bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResponderIdForm {
    /// `byName`: the responder certificate's subject.
    #[default]
    Name,
    /// `byKey`: SHA-1 of the responder public key's BIT STRING value.
    Key,
}

impl std::str::FromStr for ResponderIdForm {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "name" => Ok(Self::Name),
            "key" => Ok(Self::Key),
            other => Err(Error::input(format!(
                "\"{other}\" is not a responder ID form; give name (the subject, as cfssl) or key (the key hash, RFC 5019)"
            ))),
        }
    }
}

/// RevokedInfo.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct RevokedInfo {
    /// When.
    pub revocation_time: GeneralizedTime,
    /// Why (absent for unspecified, as cfssl writes it).
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub revocation_reason: Option<CrlReason>,
}

/// CertStatus.
#[derive(Clone, Debug, Eq, PartialEq, Choice)]
pub enum CertStatus {
    /// Not revoked.
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT")]
    Good(Null),
    /// Revoked.
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", constructed = "true")]
    Revoked(RevokedInfo),
    /// Not known to the responder.
    #[asn1(context_specific = "2", tag_mode = "IMPLICIT")]
    Unknown(Null),
}

/// SingleResponse.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct SingleResponse {
    /// Which certificate.
    pub cert_id: CertId,
    /// Its status.
    pub cert_status: CertStatus,
    /// When the status was known correct.
    pub this_update: GeneralizedTime,
    /// When newer information will be available.
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub next_update: Option<GeneralizedTime>,
    /// None written.
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    pub single_extensions: Option<Extensions>,
}

/// ResponseData.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct ResponseData {
    /// v1 (absent).
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub version: Option<u8>,
    /// Who signed.
    pub responder_id: ResponderId,
    /// When it was signed.
    pub produced_at: GeneralizedTime,
    /// The answers.
    pub responses: Vec<SingleResponse>,
    /// None written.
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    pub response_extensions: Option<Extensions>,
}

/// BasicOCSPResponse.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct BasicOcspResponse {
    /// What is signed.
    pub tbs_response_data: ResponseData,
    /// The signature algorithm.
    pub signature_algorithm: AlgorithmIdentifierOwned,
    /// The signature.
    pub signature: BitString,
    /// The delegated responder's certificate.
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub certs: Option<Vec<Certificate>>,
}

/// The status to sign.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Not revoked.
    Good,
    /// Revoked at (Unix seconds) for a reason.
    Revoked {
        /// When, Unix seconds.
        at: i64,
        /// Why.
        reason: Reason,
    },
    /// Not known.
    Unknown,
}

/// A bare status answer (malformedRequest, internalError, unauthorized, ...).
pub fn status_only(status: ResponseStatus) -> Vec<u8> {
    let r = OcspResponse {
        response_status: status,
        response_bytes: None,
    };
    r.to_der().unwrap_or_default()
}

/// The ResponderID of `responder` in the form `form`.
fn responder_id(responder: &Certificate, form: ResponderIdForm) -> Result<ResponderId> {
    let tbs = responder.tbs_certificate();
    Ok(match form {
        ResponderIdForm::Name => ResponderId::ByName(tbs.subject().clone()),
        ResponderIdForm::Key => ResponderId::ByKey(octets(sha1(
            tbs.subject_public_key_info().subject_public_key.raw_bytes(),
        ))?),
    })
}

fn sha1(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, data)
        .as_ref()
        .to_vec()
}

/// The SHA-1 CertID of the certificate with `serial` (big-endian, unsigned; leading zero
/// octets allowed) issued by `issuer`.
pub fn cert_id(issuer: &Certificate, serial: &[u8]) -> Result<CertId> {
    let first = serial
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(serial.len().saturating_sub(1));
    let mut content = serial[first..].to_vec();
    if content.first().is_none_or(|b| b & 0x80 != 0) {
        content.insert(0, 0);
    }
    let tbs = issuer.tbs_certificate();
    let name = tbs
        .subject()
        .to_der()
        .map_err(|e| der_err("issuer name", e))?;
    let key = tbs.subject_public_key_info().subject_public_key.raw_bytes();
    Ok(CertId {
        hash_algorithm: AlgorithmIdentifierOwned {
            oid: ID_SHA1,
            parameters: Some(Any::from(Null)),
        },
        issuer_name_hash: octets(sha1(&name))?,
        issuer_key_hash: octets(sha1(key))?,
        serial_number: Int::new(&content).map_err(|e| der_err("serial", e))?,
    })
}

fn octets(v: Vec<u8>) -> Result<OctetString> {
    OctetString::new(v).map_err(|e| der_err("hash", e))
}

fn gtime(unix: i64) -> Result<GeneralizedTime> {
    let secs =
        u64::try_from(unix).map_err(|_| Error::input(format!("time {unix} is before 1970")))?;
    GeneralizedTime::from_unix_duration(std::time::Duration::from_secs(secs))
        .map_err(|e| der_err("time", e))
}

/// Check that `responder` may answer for certificates of `issuer`: it is the issuer, or it
/// was issued by the issuer (signature checked) for OCSP signing (RFC 6960 §4.2.2.2).
pub fn check_responder(issuer: &Certificate, responder: &Certificate) -> Result<()> {
    if responder == issuer {
        return Ok(());
    }
    let tbs = responder.tbs_certificate();
    if tbs.issuer() != issuer.tbs_certificate().subject() {
        return Err(Error::policy(
            "the responder certificate was not issued by the CA; use the CA itself or a delegated responder the CA issued",
        ));
    }
    let body = tbs
        .to_der()
        .map_err(|e| der_err("responder certificate", e))?;
    let alg = SigAlg::from_identifier(responder.signature_algorithm())?;
    verify(
        issuer.tbs_certificate().subject_public_key_info(),
        alg,
        &body,
        responder.signature().raw_bytes(),
    )
    .map_err(|e| e.context("the responder certificate's signature does not verify under the CA"))?;
    let eku = tbs.get_extension::<ExtendedKeyUsage>().ok().flatten();
    if !eku.is_some_and(|(_, e)| e.0.contains(&ID_KP_OCSP_SIGNING)) {
        return Err(Error::policy(
            "the delegated responder certificate lacks extended key usage OCSPSigning (a profile with usage \"ocsp signing\"); clients would reject its responses",
        ));
    }
    Ok(())
}

/// Check that `cert` was issued by `issuer` (name and signature); its serial's content octets.
pub fn issued_by(cert: &Certificate, issuer: &Certificate) -> Result<Vec<u8>> {
    let tbs = cert.tbs_certificate();
    if tbs.issuer() != issuer.tbs_certificate().subject() {
        return Err(Error::policy(
            "the certificate was not issued by this CA (its issuer is not the CA's subject)",
        ));
    }
    let body = tbs.to_der().map_err(|e| der_err("certificate", e))?;
    let alg = SigAlg::from_identifier(cert.signature_algorithm())?;
    verify(
        issuer.tbs_certificate().subject_public_key_info(),
        alg,
        &body,
        cert.signature().raw_bytes(),
    )
    .map_err(|e| e.context("the certificate's signature does not verify under the CA"))?;
    Ok(tbs.serial_number().as_bytes().to_vec())
}

/// When a response is signed and how long it holds: producedAt to the minute, thisUpdate to
/// the hour (as cfssl), nextUpdate `interval` seconds later.
#[derive(Clone, Copy, Debug)]
pub struct Validity {
    /// producedAt (Unix seconds; truncated to the minute).
    pub produced_at: i64,
    /// thisUpdate (truncated to the hour).
    pub this_update: i64,
    /// nextUpdate.
    pub next_update: i64,
}

impl Validity {
    /// The times of a response signed at `now` that holds for `interval` seconds.
    pub fn at(now: i64, interval: i64) -> Self {
        let this_update = now - now.rem_euclid(3600);
        Self {
            produced_at: now - now.rem_euclid(60),
            this_update,
            next_update: this_update + interval,
        }
    }
}

/// The signed OCSPResponse (DER) for `id` with `status`, by `responder` (the issuer or its
/// delegated responder) through `signer`, verified before it is returned.
pub fn sign_response(
    id: CertId,
    status: Status,
    times: Validity,
    responder: (&Certificate, ResponderIdForm),
    responder_is_issuer: bool,
    signer: &dyn Signer,
) -> Result<Vec<u8>> {
    let (responder, form) = responder;
    if signer.public_key() != responder.tbs_certificate().subject_public_key_info() {
        return Err(Error::policy(
            "the responder key does not match the responder certificate; give the certificate of that key",
        ));
    }
    let cert_status = match status {
        Status::Good => CertStatus::Good(Null),
        Status::Unknown => CertStatus::Unknown(Null),
        Status::Revoked { at, reason } => CertStatus::Revoked(RevokedInfo {
            revocation_time: gtime(at)?,
            revocation_reason: (reason != Reason::Unspecified).then(|| reason.x509()),
        }),
    };
    let data = ResponseData {
        version: None,
        responder_id: responder_id(responder, form)?,
        produced_at: gtime(times.produced_at)?,
        responses: vec![SingleResponse {
            cert_id: id,
            cert_status,
            this_update: gtime(times.this_update)?,
            next_update: Some(gtime(times.next_update)?),
            single_extensions: None,
        }],
        response_extensions: None,
    };
    let tbs = data
        .to_der()
        .map_err(|e| der_err("OCSP response data", e))?;
    let alg = signer.algorithm();
    let sig = signer.sign(&tbs)?;
    verify(signer.public_key(), alg, &tbs, &sig).map_err(|e| {
        e.context("the token's signature on the OCSP response was rejected; nothing was written")
    })?;
    let basic = BasicOcspResponse {
        tbs_response_data: data,
        signature_algorithm: alg.algorithm_identifier(),
        signature: BitString::from_bytes(&sig).map_err(|e| der_err("OCSP signature", e))?,
        certs: (!responder_is_issuer).then(|| vec![responder.clone()]),
    };
    let basic = basic.to_der().map_err(|e| der_err("OCSP response", e))?;
    OcspResponse {
        response_status: ResponseStatus::Successful,
        response_bytes: Some(ResponseBytes {
            response_type: ID_PKIX_OCSP_BASIC,
            response: OctetString::new(basic).map_err(|e| der_err("OCSP response", e))?,
        }),
    }
    .to_der()
    .map_err(|e| der_err("OCSP response", e))
}

/// The certificates an OCSP request asks about; an error (answered with malformedRequest)
/// when it does not parse or asks about none.
pub fn parse_request(der: &[u8]) -> Result<Vec<CertId>> {
    let req = OcspRequest::from_der(der)
        .map_err(|e| Error::input(format!("the OCSP request does not parse: {e}")))?;
    let ids: Vec<CertId> = req
        .tbs_request
        .request_list
        .into_iter()
        .map(|r| r.req_cert)
        .collect();
    if ids.is_empty() {
        return Err(Error::input("the OCSP request asks about no certificate"));
    }
    Ok(ids)
}

/// What a stored response is about and how long it holds: for serving and caching.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseInfo {
    /// The CertID of its (first) single response.
    pub cert_id: CertId,
    /// thisUpdate, Unix seconds.
    pub this_update: i64,
    /// nextUpdate, Unix seconds (thisUpdate when absent).
    pub next_update: i64,
}

/// Read a successful OCSPResponse's CertID and times.
pub fn response_info(der: &[u8]) -> Result<ResponseInfo> {
    let r = OcspResponse::from_der(der)
        .map_err(|e| Error::input(format!("the OCSP response does not parse: {e}")))?;
    let bytes = r
        .response_bytes
        .filter(|b| b.response_type == ID_PKIX_OCSP_BASIC)
        .ok_or_else(|| Error::input("the OCSP response is not a successful basic response"))?;
    let basic = BasicOcspResponse::from_der(bytes.response.as_bytes())
        .map_err(|e| Error::input(format!("the basic OCSP response does not parse: {e}")))?;
    let single = basic
        .tbs_response_data
        .responses
        .into_iter()
        .next()
        .ok_or_else(|| Error::input("the OCSP response holds no single response"))?;
    let unix = |t: GeneralizedTime| t.to_unix_duration().as_secs() as i64;
    let this_update = unix(single.this_update);
    Ok(ResponseInfo {
        cert_id: single.cert_id,
        this_update,
        next_update: single.next_update.map_or(this_update, unix),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_only_answers_are_cfssls_bytes() {
        assert_eq!(
            status_only(ResponseStatus::MalformedRequest),
            [0x30, 0x03, 0x0a, 0x01, 0x01]
        );
        assert_eq!(
            status_only(ResponseStatus::Unauthorized),
            [0x30, 0x03, 0x0a, 0x01, 0x06]
        );
    }

    #[test]
    fn validity_truncates_like_cfssl() {
        let v = Validity::at(7_265 + 3_600 * 10, 96 * 3600);
        assert_eq!(v.this_update, 3_600 * 12);
        assert_eq!(v.produced_at, 7_260 + 3_600 * 10);
        assert_eq!(v.next_update, 3_600 * 12 + 96 * 3600);
    }

    #[test]
    fn truncated_and_empty_requests_are_malformed() {
        assert!(parse_request(&[0x30, 0x05, 0x30]).is_err());
        // OCSPRequest { TBSRequest { requestList: {} } }
        assert!(parse_request(&[0x30, 0x04, 0x30, 0x02, 0x30, 0x00]).is_err());
    }
}
