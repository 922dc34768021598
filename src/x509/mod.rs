//! Building X.509 certificates and PKCS#10 requests, and checking signatures.
//!
//! Nothing here talks to a token: signing goes through the [`Signer`] trait, and every
//! signature a signer returns is verified in software before the DER is handed back.
//!
//! Layer: pure DER and software crypto, on `error` only; it must not use `token`,
//! `cfssl` or anything above (ARCHITECTURE.md).

pub mod alg;
pub mod attest;
pub mod build;
pub mod chain;
pub mod crl;
pub mod hosts;
pub mod name;
pub mod ocsp;
pub mod pem;
pub mod policy;
pub mod pubkey;
pub mod request;
pub mod softkey;
pub mod verify;

use spki::SubjectPublicKeyInfoOwned;

use crate::error::Result;
use alg::SigAlg;

/// Something that signs with a key it never reveals (a token key, or a software key in tests).
pub trait Signer {
    /// The signature algorithm this signer produces.
    fn algorithm(&self) -> SigAlg;
    /// The public key matching the signing key.
    fn public_key(&self) -> &SubjectPublicKeyInfoOwned;
    /// Sign `msg`, returning the signature in X.509 form (PKCS#1 v1.5 bytes or DER ECDSA).
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>>;
    /// Fill `buf` with random bytes (from the token's RNG for token signers).
    fn random(&self, buf: &mut [u8]) -> Result<()>;
}
