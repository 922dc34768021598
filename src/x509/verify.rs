//! Software verification of signatures: every signature the token returns is checked here
//! before anything is written, and so is every CSR's self-signature.

use signature::hazmat::PrehashVerifier;
use spki::SubjectPublicKeyInfoOwned;

use crate::error::{Error, Result};
use crate::x509::alg::{HashAlg, KeyAlg, SigAlg};

/// Check `sig` (as it appears in a certificate: PKCS#1 v1.5 bytes, or a DER ECDSA-Sig-Value)
/// over `msg` with the key in `spki`.
pub fn verify(spki: &SubjectPublicKeyInfoOwned, alg: SigAlg, msg: &[u8], sig: &[u8]) -> Result<()> {
    if let Some(ring_alg) = ring_covers(spki, alg) {
        // ring checks RSA about six times faster than the pure-Rust path below, and a batch
        // verifies every signature on a core the token could be signing with.
        return ring::signature::UnparsedPublicKey::new(
            ring_alg,
            spki.subject_public_key.raw_bytes(),
        )
        .verify(msg, sig)
        .map_err(|_| Error::verify("signature does not verify with the issuer's public key"));
    }
    verify_rustcrypto(spki, alg, msg, sig)
}

/// ring's verifier for `spki` and `alg` when ring takes that key: RSA with a 2048–8192-bit
/// modulus and an odd exponent of at most 33 bits (every CA key p11ca makes), or an
/// uncompressed P-256/P-384 point with SHA-256/384. Other keys (small or odd RSA keys in
/// CSRs, SHA-512 with ECDSA) go to the RustCrypto path, so ring's narrower limits never turn a
/// valid signature into a rejected one.
fn ring_covers(
    spki: &SubjectPublicKeyInfoOwned,
    alg: SigAlg,
) -> Option<&'static dyn ring::signature::VerificationAlgorithm> {
    use ring::signature as rs;
    let oid = spki.algorithm.oid;
    let key = spki.subject_public_key.as_bytes()?;
    if oid == const_oid::db::rfc5912::RSA_ENCRYPTION {
        #[derive(der::Sequence)]
        struct RsaPub<'a> {
            n: der::asn1::UintRef<'a>,
            e: der::asn1::UintRef<'a>,
        }
        let k = <RsaPub as der::Decode>::from_der(key).ok()?;
        let (n, e) = (k.n.as_bytes(), k.e.as_bytes());
        let bits = |b: &[u8]| match b.first() {
            Some(f) => (b.len() - 1) * 8 + (8 - f.leading_zeros() as usize),
            None => 0,
        };
        let exponent_ok = bits(e) <= 33 && e.last().is_some_and(|l| l & 1 == 1) && bits(e) >= 2;
        if !(2048..=8192).contains(&bits(n)) || !exponent_ok {
            return None;
        }
        return match alg {
            SigAlg::RsaSha256 => Some(&rs::RSA_PKCS1_2048_8192_SHA256),
            SigAlg::RsaSha384 => Some(&rs::RSA_PKCS1_2048_8192_SHA384),
            SigAlg::RsaSha512 => Some(&rs::RSA_PKCS1_2048_8192_SHA512),
            _ => None,
        };
    }
    if key.first() != Some(&4) {
        return None;
    }
    match (KeyAlg::of(spki).ok()?, alg) {
        (KeyAlg::EcP256, SigAlg::EcdsaSha256) => Some(&rs::ECDSA_P256_SHA256_ASN1),
        (KeyAlg::EcP256, SigAlg::EcdsaSha384) => Some(&rs::ECDSA_P256_SHA384_ASN1),
        (KeyAlg::EcP384, SigAlg::EcdsaSha256) => Some(&rs::ECDSA_P384_SHA256_ASN1),
        (KeyAlg::EcP384, SigAlg::EcdsaSha384) => Some(&rs::ECDSA_P384_SHA384_ASN1),
        _ => None,
    }
}

/// The pure-Rust (RustCrypto) check, for the keys ring does not take (public for the
/// benchmark's comparison).
pub fn verify_rustcrypto(
    spki: &SubjectPublicKeyInfoOwned,
    alg: SigAlg,
    msg: &[u8],
    sig: &[u8],
) -> Result<()> {
    let key = KeyAlg::of(spki)?;
    let fail = |why: String| Error::verify(format!("signature does not verify: {why}"));
    match (key, alg.is_rsa()) {
        (KeyAlg::Rsa(_), true) => {
            let pk = crate::x509::alg::rsa_key(spki)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x509::Signer;
    use crate::x509::alg::KeyAlg;
    use crate::x509::softkey::SoftKey;

    #[test]
    fn ring_and_the_pure_rust_path_agree() {
        for spec in [KeyAlg::EcP256, KeyAlg::EcP384, KeyAlg::Rsa(2048)] {
            let k = SoftKey::generate(spec).unwrap();
            let (spki, alg) = (k.public_key(), k.algorithm());
            assert!(ring_covers(spki, alg).is_some(), "{}", spec.name());
            let sig = k.sign(b"to be signed").unwrap();
            verify(spki, alg, b"to be signed", &sig).unwrap();
            verify_rustcrypto(spki, alg, b"to be signed", &sig).unwrap();
            let mut bad = sig.clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            for (msg, s) in [(&b"to be signeD"[..], &sig), (&b"to be signed"[..], &bad)] {
                assert!(verify(spki, alg, msg, s).is_err(), "{}", spec.name());
                assert!(verify_rustcrypto(spki, alg, msg, s).is_err());
            }
        }
    }

    #[test]
    fn keys_ring_does_not_take_still_verify() {
        // RSA-1024 (an old CSR's key): ring refuses keys under 2048 bits.
        let k = SoftKey::generate(KeyAlg::Rsa(1024)).unwrap();
        assert!(ring_covers(k.public_key(), k.algorithm()).is_none());
        let sig = k.sign(b"csr info").unwrap();
        verify(k.public_key(), k.algorithm(), b"csr info", &sig).unwrap();
        assert!(verify(k.public_key(), k.algorithm(), b"csr infO", &sig).is_err());
        // ECDSA P-256 with SHA-512: ring has no such verifier.
        let k = SoftKey::generate(KeyAlg::EcP256).unwrap();
        assert!(ring_covers(k.public_key(), SigAlg::EcdsaSha512).is_none());
        // A key and an algorithm of different families never pass.
        let sig = k.sign(b"x").unwrap();
        assert!(verify(k.public_key(), SigAlg::RsaSha256, b"x", &sig).is_err());
    }
}
