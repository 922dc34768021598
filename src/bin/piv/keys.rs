//! The card's cryptography, all through RustCrypto crates: key generation, the raw RSA
//! private-key operation and ECDSA over a client-supplied hash (a PIV card signs what it is
//! given, the client pads or hashes), and 3DES for the management key.

use des::TdesEde3;
use des::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use getrandom::SysRng;
use rsa::BoxedUint;
use rsa::Generate;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use rsa::traits::PublicKeyParts;

use crate::tlv::tlv;

/// PIV algorithm bytes (`lib/ykpiv.h` YKPIV_ALGO_*).
pub(crate) const RSA1024: u8 = 0x06;
pub(crate) const RSA2048: u8 = 0x07;
pub(crate) const P256: u8 = 0x11;
pub(crate) const P384: u8 = 0x14;
pub(crate) const TDES: u8 = 0x03;

/// A private key of one of the card's algorithms.
pub(crate) enum Key {
    Rsa(Box<rsa::PrivateKey>),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Key {
    /// A new key for PIV algorithm `alg`; `None` for an algorithm the card does not have.
    pub(crate) fn generate(alg: u8) -> Option<Result<Self, String>> {
        Some(match alg {
            RSA1024 | RSA2048 => {
                let bits = if alg == RSA1024 { 1024 } else { 2048 };
                rsa::PrivateKey::new(&mut SysRng, bits)
                    .map(|k| Key::Rsa(Box::new(k)))
                    .map_err(err)
            }
            P256 => p256::ecdsa::SigningKey::try_generate_from_rng(&mut SysRng)
                .map(Key::P256)
                .map_err(err),
            P384 => p384::ecdsa::SigningKey::try_generate_from_rng(&mut SysRng)
                .map(Key::P384)
                .map_err(err),
            _ => return None,
        })
    }

    pub(crate) fn from_pkcs8(alg: u8, der: &[u8]) -> Result<Self, String> {
        match alg {
            RSA1024 | RSA2048 => rsa::PrivateKey::from_pkcs8_der(der)
                .map(|k| Key::Rsa(Box::new(k)))
                .map_err(err),
            P256 => p256::ecdsa::SigningKey::from_pkcs8_der(der)
                .map(Key::P256)
                .map_err(err),
            P384 => p384::ecdsa::SigningKey::from_pkcs8_der(der)
                .map(Key::P384)
                .map_err(err),
            _ => Err(format!("unknown algorithm {alg:02x}")),
        }
    }

    pub(crate) fn to_pkcs8(&self) -> Result<Vec<u8>, String> {
        let doc = match self {
            Key::Rsa(k) => k.to_pkcs8_der(),
            Key::P256(k) => k.to_pkcs8_der(),
            Key::P384(k) => k.to_pkcs8_der(),
        };
        doc.map(|d| d.as_bytes().to_vec()).map_err(err)
    }

    /// The public key as a DER SubjectPublicKeyInfo.
    pub(crate) fn spki_der(&self) -> Result<Vec<u8>, String> {
        use rsa::pkcs8::EncodePublicKey;
        let doc = match self {
            Key::Rsa(k) => k.to_public_key().to_public_key_der(),
            Key::P256(k) => k.verifying_key().to_public_key_der(),
            Key::P384(k) => k.verifying_key().to_public_key_der(),
        };
        doc.map(|d| d.as_bytes().to_vec()).map_err(err)
    }

    /// The public key as GENERATE returns it: `7F49 { 81 n 82 e }` for RSA, `7F49 { 86 point }`
    /// for EC (SP 800-73-4 part 2, table 30; the uncompressed point as yubico-piv-tool's
    /// `lib/util.c` parses it).
    pub(crate) fn public_tlv(&self) -> Vec<u8> {
        let inner = match self {
            Key::Rsa(k) => {
                let mut v = tlv(&[0x81], &k.n().to_be_bytes_trimmed_vartime());
                v.extend(tlv(&[0x82], &k.e().to_be_bytes_trimmed_vartime()));
                v
            }
            Key::P256(k) => tlv(&[0x86], k.verifying_key().to_sec1_point(false).as_bytes()),
            Key::P384(k) => tlv(&[0x86], k.verifying_key().to_sec1_point(false).as_bytes()),
        };
        tlv(&[0x7f, 0x49], &inner)
    }

    /// The card's signature over `input`: RSA, the raw private-key operation on a block the
    /// size of the modulus; ECDSA, a DER signature over `input` taken as the hash, left-padded
    /// to the field size (Yubico's PIV docs, "sign/decrypt"; `lib/ykpiv.c` ykpiv_sign_data).
    pub(crate) fn sign(&self, input: &[u8]) -> Result<Vec<u8>, String> {
        use p256::ecdsa::signature::hazmat::PrehashSigner;
        match self {
            Key::Rsa(k) => {
                let size = k.size();
                if input.len() != size {
                    return Err(format!("RSA input is {} bytes, not {size}", input.len()));
                }
                let c = BoxedUint::from_be_slice(input, k.n().bits_precision()).map_err(err)?;
                let m = rsa::hazmat::rsa_decrypt_and_check(k.as_ref(), Some(&mut SysRng), &c)
                    .map_err(err)?;
                let raw = m.to_be_bytes_trimmed_vartime();
                let mut out = vec![0u8; size - raw.len()];
                out.extend_from_slice(&raw);
                Ok(out)
            }
            Key::P256(k) => {
                let h = left_pad(input, 32)?;
                let s: p256::ecdsa::Signature = k.sign_prehash(&h).map_err(err)?;
                Ok(s.to_der().as_bytes().to_vec())
            }
            Key::P384(k) => {
                let h = left_pad(input, 48)?;
                let s: p384::ecdsa::Signature = k.sign_prehash(&h).map_err(err)?;
                Ok(s.to_der().as_bytes().to_vec())
            }
        }
    }
}

fn left_pad(input: &[u8], n: usize) -> Result<Vec<u8>, String> {
    if input.len() > n {
        return Err(format!(
            "hash of {} bytes for a {n}-byte curve",
            input.len()
        ));
    }
    let mut v = vec![0u8; n - input.len()];
    v.extend_from_slice(input);
    Ok(v)
}

/// Encrypt (or decrypt) one 8-byte block with the 24-byte 3DES-EDE management key (K1‖K2‖K3,
/// ECB; `lib/internal.c` des_import_key / des_encrypt).
pub(crate) fn tdes(key: &[u8], block: &[u8; 8], encrypt: bool) -> Result<[u8; 8], String> {
    let c = TdesEde3::new_from_slice(key).map_err(err)?;
    let mut b = (*block).into();
    if encrypt {
        c.encrypt_block(&mut b);
    } else {
        c.decrypt_block(&mut b);
    }
    Ok(b.into())
}

/// `n` random bytes from the OS.
pub(crate) fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the OS random source");
    b
}
