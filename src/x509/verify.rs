//! Software verification of signatures: every signature the token returns is checked here
//! before anything is written, and so is every CSR's self-signature.

use der::Encode;
use rsa::pkcs8::DecodePublicKey;
use signature::hazmat::PrehashVerifier;
use spki::SubjectPublicKeyInfoOwned;

use crate::error::{Error, Result};
use crate::x509::alg::{HashAlg, KeyAlg, SigAlg};

/// The RSA public key in an SPKI.
pub fn rsa_key(spki: &SubjectPublicKeyInfoOwned) -> Result<rsa::PublicKey> {
    let der = spki
        .to_der()
        .map_err(|e| Error::input(format!("cannot encode public key: {e}")))?;
    rsa::PublicKey::from_public_key_der(&der)
        .map_err(|e| Error::input(format!("invalid RSA public key: {e}")))
}

/// Check `sig` (as it appears in a certificate: PKCS#1 v1.5 bytes, or a DER ECDSA-Sig-Value)
/// over `msg` with the key in `spki`.
pub fn verify(spki: &SubjectPublicKeyInfoOwned, alg: SigAlg, msg: &[u8], sig: &[u8]) -> Result<()> {
    let key = KeyAlg::of(spki)?;
    let fail = |why: String| Error::verify(format!("signature does not verify: {why}"));
    match (key, alg.is_rsa()) {
        (KeyAlg::Rsa(_), true) => {
            let pk = rsa_key(spki)?;
            let s = rsa::pkcs1v15::Signature::try_from(sig).map_err(|e| fail(e.to_string()))?;
            use signature::Verifier;
            let r = match alg.hash() {
                HashAlg::Sha256 => {
                    rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(pk).verify(msg, &s)
                }
                HashAlg::Sha384 => {
                    rsa::pkcs1v15::VerifyingKey::<sha2::Sha384>::new(pk).verify(msg, &s)
                }
                HashAlg::Sha512 => {
                    rsa::pkcs1v15::VerifyingKey::<sha2::Sha512>::new(pk).verify(msg, &s)
                }
            };
            r.map_err(|e| fail(e.to_string()))
        }
        (KeyAlg::EcP256, false) => {
            let point = spki.subject_public_key.raw_bytes();
            let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(point)
                .map_err(|e| Error::input(format!("invalid P-256 public key: {e}")))?;
            let s = p256::ecdsa::Signature::from_der(sig).map_err(|e| fail(e.to_string()))?;
            vk.verify_prehash(&alg.hash().digest(msg), &s)
                .map_err(|e| fail(e.to_string()))
        }
        (KeyAlg::EcP384, false) => {
            let point = spki.subject_public_key.raw_bytes();
            let vk = p384::ecdsa::VerifyingKey::from_sec1_bytes(point)
                .map_err(|e| Error::input(format!("invalid P-384 public key: {e}")))?;
            let s = p384::ecdsa::Signature::from_der(sig).map_err(|e| fail(e.to_string()))?;
            vk.verify_prehash(&alg.hash().digest(msg), &s)
                .map_err(|e| fail(e.to_string()))
        }
        (k, _) => Err(Error::input(format!(
            "signature algorithm {alg:?} does not match the {} key",
            k.name()
        ))),
    }
}

/// Convert a raw PKCS#11 ECDSA signature (r || s, each padded to the field size) to the DER
/// ECDSA-Sig-Value X.509 needs.
pub fn ecdsa_raw_to_der(raw: &[u8], key: KeyAlg) -> Result<Vec<u8>> {
    let bad = || {
        Error::token(format!(
            "the token returned a {}-byte ECDSA signature, which is not r||s for {}",
            raw.len(),
            key.name()
        ))
    };
    match key {
        KeyAlg::EcP256 => p256::ecdsa::Signature::from_slice(raw)
            .map(|s| s.to_der().as_bytes().to_vec())
            .map_err(|_| bad()),
        KeyAlg::EcP384 => p384::ecdsa::Signature::from_slice(raw)
            .map(|s| s.to_der().as_bytes().to_vec())
            .map_err(|_| bad()),
        KeyAlg::Rsa(_) => Err(bad()),
    }
}
