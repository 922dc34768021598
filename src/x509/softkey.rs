//! Node keys made in software by `gencert -ca`.
//!
//! A node's key is shipped to the node (`NAME-key.pem`, mode 0600), exactly as cfssl does; only
//! the CA key is kept in the token. PEM forms follow cfssl: PKCS#1 `RSA PRIVATE KEY` and SEC1
//! `EC PRIVATE KEY`.

use getrandom::SysRng;
use rsa::Generate;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::EncodePublicKey;
use signature::hazmat::PrehashSigner;
use spki::{SubjectPublicKeyInfoOwned, der::Decode};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::x509::Signer;
use crate::x509::alg::{KeyAlg, SigAlg};

enum Inner {
    Rsa(Box<rsa::PrivateKey>),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
}

/// A private key held in memory (zeroized on drop by the RustCrypto types).
pub struct SoftKey {
    inner: Inner,
    spki: SubjectPublicKeyInfoOwned,
    alg: SigAlg,
}

fn gen_err(e: impl std::fmt::Display) -> Error {
    Error::input(format!("cannot generate the node key: {e}"))
}

impl SoftKey {
    /// Generate a key from the OS CSPRNG.
    pub fn generate(alg: KeyAlg) -> Result<Self> {
        let inner = match alg {
            KeyAlg::Rsa(bits) => Inner::Rsa(Box::new(
                rsa::PrivateKey::new(&mut SysRng, bits).map_err(gen_err)?,
            )),
            KeyAlg::EcP256 => Inner::P256(
                p256::ecdsa::SigningKey::try_generate_from_rng(&mut SysRng).map_err(gen_err)?,
            ),
            KeyAlg::EcP384 => Inner::P384(
                p384::ecdsa::SigningKey::try_generate_from_rng(&mut SysRng).map_err(gen_err)?,
            ),
        };
        let spki_der = match &inner {
            Inner::Rsa(k) => k.to_public_key().to_public_key_der().map_err(gen_err)?,
            Inner::P256(k) => k.verifying_key().to_public_key_der().map_err(gen_err)?,
            Inner::P384(k) => k.verifying_key().to_public_key_der().map_err(gen_err)?,
        };
        let spki = SubjectPublicKeyInfoOwned::from_der(spki_der.as_bytes()).map_err(gen_err)?;
        let alg = SigAlg::for_key(KeyAlg::of(&spki)?);
        Ok(Self { inner, spki, alg })
    }

    /// The private key in cfssl's PEM form.
    pub fn to_pem(&self) -> Result<Zeroizing<String>> {
        let lf = der::pem::LineEnding::LF;
        match &self.inner {
            Inner::Rsa(k) => k.to_pkcs1_pem(lf).map_err(gen_err),
            Inner::P256(k) => p256::SecretKey::from(k.as_nonzero_scalar())
                .to_sec1_pem(lf)
                .map_err(gen_err),
            Inner::P384(k) => p384::SecretKey::from(k.as_nonzero_scalar())
                .to_sec1_pem(lf)
                .map_err(gen_err),
        }
    }
}

impl Signer for SoftKey {
    fn algorithm(&self) -> SigAlg {
        self.alg
    }

    fn public_key(&self) -> &SubjectPublicKeyInfoOwned {
        &self.spki
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>> {
        let fail = |e: signature::Error| Error::input(format!("software signing failed: {e}"));
        let digest = self.alg.hash().digest(msg);
        match &self.inner {
            Inner::Rsa(k) => {
                let prefix = self.alg.hash().digest_info_prefix();
                // PKCS#1 v1.5 over the DigestInfo, the same bytes CKM_SHAxxx_RSA_PKCS makes.
                let scheme = rsa::pkcs1v15::Pkcs1v15Sign {
                    hash_len: Some(digest.len()),
                    prefix: prefix.into(),
                };
                k.sign(scheme, &digest)
                    .map_err(|e| Error::input(format!("software signing failed: {e}")))
            }
            Inner::P256(k) => {
                let s: p256::ecdsa::Signature = k.sign_prehash(&digest).map_err(fail)?;
                Ok(s.to_der().as_bytes().to_vec())
            }
            Inner::P384(k) => {
                let s: p384::ecdsa::Signature = k.sign_prehash(&digest).map_err(fail)?;
                Ok(s.to_der().as_bytes().to_vec())
            }
        }
    }

    fn random(&self, buf: &mut [u8]) -> Result<()> {
        getrandom::fill(buf).map_err(|e| Error::input(format!("no randomness from the OS: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x509::verify::verify;

    #[test]
    fn keys_sign_and_verify() {
        for spec in [KeyAlg::EcP256, KeyAlg::EcP384, KeyAlg::Rsa(2048)] {
            let k = SoftKey::generate(spec).unwrap();
            let sig = k.sign(b"hello").unwrap();
            verify(k.public_key(), k.algorithm(), b"hello", &sig).unwrap();
            assert!(verify(k.public_key(), k.algorithm(), b"hellO", &sig).is_err());
            let pem = k.to_pem().unwrap();
            let want = if matches!(spec, KeyAlg::Rsa(_)) {
                "RSA PRIVATE KEY"
            } else {
                "EC PRIVATE KEY"
            };
            assert!(
                pem.starts_with(&format!("-----BEGIN {want}-----\n")),
                "{}",
                &pem[..40]
            );
        }
    }
}
