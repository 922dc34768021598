//! Signing with a token key: the mechanism is chosen from what the token offers, the result is
//! put in X.509 form, and (through [`crate::x509::Signer`]) verified by the caller's builder.

use cryptoki::error::RvError;
use cryptoki::mechanism::{Mechanism, MechanismInfo, MechanismType};
use cryptoki::object::ObjectHandle;
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
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
    /// CKM_ECDSA_SHAxxx: the token hashes (needed for always-authenticate keys, which must
    /// be signed in parts around the context-specific login).
    EcdsaWithHash(HashAlg),
}

impl SignMech {
    /// Pick the mechanism for `alg` from the token's list.
    pub fn choose(
        mechs: &[(MechanismType, MechanismInfo)],
        alg: SigAlg,
        token: &str,
    ) -> Result<Self> {
        Self::choose_for_key(mechs, alg, token, false)
    }

    /// Pick the mechanism; `always_authenticate` keys need a mechanism that hashes on the
    /// token, since they are signed in parts (C_SignInit, context login, update, final).
    pub fn choose_for_key(
        mechs: &[(MechanismType, MechanismInfo)],
        alg: SigAlg,
        token: &str,
        always_authenticate: bool,
    ) -> Result<Self> {
        let has = |t: MechanismType| mechs.iter().any(|(m, i)| *m == t && i.sign());
        let h = alg.hash();
        if always_authenticate {
            let (combined, mech) = match (alg.is_rsa(), h) {
                (true, HashAlg::Sha256) => {
                    (MechanismType::SHA256_RSA_PKCS, SignMech::RsaWithHash(h))
                }
                (true, HashAlg::Sha384) => {
                    (MechanismType::SHA384_RSA_PKCS, SignMech::RsaWithHash(h))
                }
                (true, HashAlg::Sha512) => {
                    (MechanismType::SHA512_RSA_PKCS, SignMech::RsaWithHash(h))
                }
                (false, HashAlg::Sha256) => {
                    (MechanismType::ECDSA_SHA256, SignMech::EcdsaWithHash(h))
                }
                (false, HashAlg::Sha384) => {
                    (MechanismType::ECDSA_SHA384, SignMech::EcdsaWithHash(h))
                }
                (false, HashAlg::Sha512) => {
                    (MechanismType::ECDSA_SHA512, SignMech::EcdsaWithHash(h))
                }
            };
            if has(combined) {
                return Ok(mech);
            }
            return Err(Error::token(format!(
                "the key needs a PIN for every signature (CKA_ALWAYS_AUTHENTICATE) and token \"{token}\" does not offer {combined}, which p11ca needs to sign such keys"
            )));
        }
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
            SignMech::EcdsaWithHash(h) => format!("CKM_ECDSA_{}", h.name().replace('-', "")),
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
    context_pin: Option<&'s AuthPin>,
    /// Bytes from the token's RNG not used yet: one C_GenerateRandom serves many serials.
    rng_pool: std::cell::RefCell<Vec<u8>>,
    /// C_GenerateRandom was called before: the first call asks only for what is needed, so a
    /// signer made for one certificate (a request of `serve`) does not draw a whole pool.
    rng_drawn: std::cell::Cell<bool>,
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
        Ok(Self::for_key_alg(session, key, spki, key_alg, mech))
    }

    /// [`TokenSigner::new`] with the key's algorithm already known (parsing an RSA key for its
    /// size costs about 10 us, too much to repeat for every request of a signing service).
    pub fn for_key_alg(
        session: &'s Session,
        key: ObjectHandle,
        spki: SubjectPublicKeyInfoOwned,
        key_alg: KeyAlg,
        mech: SignMech,
    ) -> Self {
        let alg = SigAlg::for_key(key_alg);
        Self {
            session,
            key,
            spki,
            key_alg,
            alg,
            mech,
            context_pin: None,
            rng_pool: std::cell::RefCell::new(Vec::new()),
            rng_drawn: std::cell::Cell::new(false),
        }
    }

    /// For CKA_ALWAYS_AUTHENTICATE keys: log in with `pin` as CKU_CONTEXT_SPECIFIC before every
    /// signature (the same PIN as the run's login; nothing is prompted again).
    pub fn with_context_login(mut self, pin: &'s AuthPin) -> Self {
        self.context_pin = Some(pin);
        self
    }

    /// The mechanism in use.
    pub fn mechanism(&self) -> SignMech {
        self.mech
    }

    /// One raw C_Sign call on `msg` (for benchmarks: the token's limit).
    pub fn raw_sign(&self, msg: &[u8]) -> Result<Vec<u8>> {
        if let Some(pin) = self.context_pin {
            return self.sign_with_context_login(msg, pin);
        }
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
            SignMech::EcdsaWithHash(h) => self.session.sign(&ecdsa_with(h), self.key, msg),
        };
        r.map_err(|e| ck("the token refused to sign", e))
    }

    /// C_SignInit, C_Login(CKU_CONTEXT_SPECIFIC), C_SignUpdate, C_SignFinal.
    fn sign_with_context_login(&self, msg: &[u8], pin: &AuthPin) -> Result<Vec<u8>> {
        let m = match self.mech {
            SignMech::RsaWithHash(HashAlg::Sha256) => Mechanism::Sha256RsaPkcs,
            SignMech::RsaWithHash(HashAlg::Sha384) => Mechanism::Sha384RsaPkcs,
            SignMech::RsaWithHash(HashAlg::Sha512) => Mechanism::Sha512RsaPkcs,
            SignMech::EcdsaWithHash(h) => ecdsa_with(h),
            other => {
                return Err(Error::token(format!(
                    "{} cannot be used with a key that needs a PIN for every signature",
                    other.name()
                )));
            }
        };
        self.session
            .sign_init(&m, self.key)
            .map_err(|e| ck("the token refused to start signing", e))?;
        // Tests skip the login to show that the token itself enforces it.
        #[cfg(feature = "fault-injection")]
        let login = if crate::fault::active("skip-context-login") {
            Ok(())
        } else {
            self.session.login(UserType::ContextSpecific, Some(pin))
        };
        #[cfg(not(feature = "fault-injection"))]
        let login = self.session.login(UserType::ContextSpecific, Some(pin));
        match login {
            Ok(()) => {}
            Err(cryptoki::error::Error::Pkcs11(RvError::PinIncorrect, _)) => {
                return Err(Error::token(
                    "the token refused the PIN for the key's per-signature login (CKR_PIN_INCORRECT); not retried",
                ));
            }
            Err(e) => {
                return Err(ck(
                    "the per-signature login (CKU_CONTEXT_SPECIFIC) failed",
                    e,
                ));
            }
        }
        self.session
            .sign_update(msg)
            .and_then(|()| self.session.sign_final())
            .map_err(|e| ck("the token refused to sign", e))
    }
}

fn ecdsa_with(h: HashAlg) -> Mechanism<'static> {
    match h {
        HashAlg::Sha256 => Mechanism::EcdsaSha256,
        HashAlg::Sha384 => Mechanism::EcdsaSha384,
        HashAlg::Sha512 => Mechanism::EcdsaSha512,
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
            SignMech::Ecdsa(_) | SignMech::EcdsaWithHash(_) => ecdsa_raw_to_der(&raw, self.key_alg),
            _ => Ok(raw),
        }
    }

    fn random(&self, buf: &mut [u8]) -> Result<()> {
        const REFILL: usize = 1024;
        let mut pool = self.rng_pool.borrow_mut();
        if pool.len() < buf.len() {
            let want = if !self.rng_drawn.replace(true) {
                buf.len()
            } else {
                REFILL.max(buf.len())
            };
            let mut fresh = vec![0u8; want];
            self.session
                .generate_random_slice(&mut fresh)
                .map_err(|e| ck("cannot get random bytes from the token", e))?;
            *pool = fresh;
        }
        let at = pool.len() - buf.len();
        buf.copy_from_slice(&pool[at..]);
        // Used bytes are dropped (and overwritten) so none is handed out twice.
        pool[at..].fill(0);
        pool.truncate(at);
        Ok(())
    }
}
