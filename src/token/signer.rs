//! Signing with a token key: the mechanism is chosen from what the token offers, the result is
//! put in X.509 form, and (through [`crate::x509::Signer`]) verified by the caller's builder.

use cryptoki::mechanism::{Mechanism, MechanismInfo, MechanismType};
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use spki::SubjectPublicKeyInfoOwned;

use crate::error::{Error, Result};
use crate::token::ck;
use crate::x509::Signer;
use crate::x509::alg::{HashAlg, KeyAlg, SigAlg};
use crate::x509::verify::ecdsa_raw_to_der;

/// How the token is asked to sign.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignMech {
    /// CKM_SHAxxx_RSA_PKCS: the token hashes and pads.
    RsaWithHash(HashAlg),
    /// CKM_RSA_PKCS over a DigestInfo we build (for tokens without the combined mechanism).
    RsaDigestInfo(HashAlg),
    /// CKM_ECDSA over a hash we compute; the raw r||s is converted to DER.
    Ecdsa(HashAlg),
}

impl SignMech {
    /// Pick the mechanism for `alg` from the token's list.
    pub fn choose(
        mechs: &[(MechanismType, MechanismInfo)],
        alg: SigAlg,
        token: &str,
    ) -> Result<Self> {
        let has = |t: MechanismType| mechs.iter().any(|(m, i)| *m == t && i.sign());
        let h = alg.hash();
        if alg.is_rsa() {
            let combined = match h {
                HashAlg::Sha256 => MechanismType::SHA256_RSA_PKCS,
                HashAlg::Sha384 => MechanismType::SHA384_RSA_PKCS,
                HashAlg::Sha512 => MechanismType::SHA512_RSA_PKCS,
            };
            if has(combined) {
                return Ok(SignMech::RsaWithHash(h));
            }
            if has(MechanismType::RSA_PKCS) {
                return Ok(SignMech::RsaDigestInfo(h));
            }
            return Err(Error::token(format!(
                "token \"{token}\" offers neither {combined} nor CKM_RSA_PKCS for signing"
            )));
        }
        if has(MechanismType::ECDSA) {
            return Ok(SignMech::Ecdsa(h));
        }
        Err(Error::token(format!(
            "token \"{token}\" does not offer CKM_ECDSA for signing"
        )))
    }

    /// Name for messages and benchmarks.
    pub fn name(self) -> String {
        match self {
            SignMech::RsaWithHash(h) => format!("CKM_{}_RSA_PKCS", h.name().replace('-', "")),
            SignMech::RsaDigestInfo(h) => format!("CKM_RSA_PKCS over {} DigestInfo", h.name()),
            SignMech::Ecdsa(h) => format!("CKM_ECDSA over {}", h.name()),
        }
    }
}

/// A token key, ready to sign in one session.
pub struct TokenSigner<'s> {
    session: &'s Session,
    key: ObjectHandle,
    spki: SubjectPublicKeyInfoOwned,
    key_alg: KeyAlg,
    alg: SigAlg,
    mech: SignMech,
}

impl<'s> TokenSigner<'s> {
    /// A signer for `key` (whose public key is `spki`) using `mech`.
    pub fn new(
        session: &'s Session,
        key: ObjectHandle,
        spki: SubjectPublicKeyInfoOwned,
        mech: SignMech,
    ) -> Result<Self> {
        let key_alg = KeyAlg::of(&spki)?;
        let alg = SigAlg::for_key(key_alg);
        Ok(Self {
            session,
            key,
            spki,
            key_alg,
            alg,
            mech,
        })
    }

    /// The mechanism in use.
    pub fn mechanism(&self) -> SignMech {
        self.mech
    }

    /// One raw C_Sign call on `msg` (for benchmarks: the token's limit).
    pub fn raw_sign(&self, msg: &[u8]) -> Result<Vec<u8>> {
        let r = match self.mech {
            SignMech::RsaWithHash(h) => {
                let m = match h {
                    HashAlg::Sha256 => Mechanism::Sha256RsaPkcs,
                    HashAlg::Sha384 => Mechanism::Sha384RsaPkcs,
                    HashAlg::Sha512 => Mechanism::Sha512RsaPkcs,
                };
                self.session.sign(&m, self.key, msg)
            }
            SignMech::RsaDigestInfo(h) => {
                let mut di = h.digest_info_prefix().to_vec();
                di.extend_from_slice(&h.digest(msg));
                self.session.sign(&Mechanism::RsaPkcs, self.key, &di)
            }
            SignMech::Ecdsa(h) => self
                .session
                .sign(&Mechanism::Ecdsa, self.key, &h.digest(msg)),
        };
        r.map_err(|e| ck("the token refused to sign", e))
    }
}

impl Signer for TokenSigner<'_> {
    fn algorithm(&self) -> SigAlg {
        self.alg
    }

    fn public_key(&self) -> &SubjectPublicKeyInfoOwned {
        &self.spki
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>> {
        let raw = self.raw_sign(msg)?;
        match self.mech {
            SignMech::Ecdsa(_) => ecdsa_raw_to_der(&raw, self.key_alg),
            _ => Ok(raw),
        }
    }

    fn random(&self, buf: &mut [u8]) -> Result<()> {
        self.session
            .generate_random_slice(buf)
            .map_err(|e| ck("cannot get random bytes from the token", e))
    }
}
