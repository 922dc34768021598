//! Signature and hash algorithms, chosen from the key as cfssl does.

use const_oid::ObjectIdentifier;
use const_oid::db::rfc5912;
use der::asn1::Any;
use sha2::Digest;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

use crate::error::{Error, Result};

/// Hash functions used in signatures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashAlg {
    /// SHA-256
    Sha256,
    /// SHA-384
    Sha384,
    /// SHA-512
    Sha512,
}

impl HashAlg {
    /// Hash `msg`.
    pub fn digest(self, msg: &[u8]) -> Vec<u8> {
        match self {
            HashAlg::Sha256 => sha2::Sha256::digest(msg).to_vec(),
            HashAlg::Sha384 => sha2::Sha384::digest(msg).to_vec(),
            HashAlg::Sha512 => sha2::Sha512::digest(msg).to_vec(),
        }
    }

    /// PKCS#1 v1.5 DigestInfo = this DER prefix followed by the hash (RFC 8017 §9.2 note 1).
    pub fn digest_info_prefix(self) -> &'static [u8] {
        match self {
            HashAlg::Sha256 => &[
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0x04, 0x20,
            ],
            HashAlg::Sha384 => &[
                0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x02, 0x05, 0x00, 0x04, 0x30,
            ],
            HashAlg::Sha512 => &[
                0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x03, 0x05, 0x00, 0x04, 0x40,
            ],
        }
    }

    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            HashAlg::Sha256 => "SHA-256",
            HashAlg::Sha384 => "SHA-384",
            HashAlg::Sha512 => "SHA-512",
        }
    }
}

/// The public key types p11ca handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAlg {
    /// RSA with this many modulus bits.
    Rsa(usize),
    /// ECDSA on P-256.
    EcP256,
    /// ECDSA on P-384.
    EcP384,
}

impl KeyAlg {
    /// Identify the key in an SPKI.
    pub fn of(spki: &SubjectPublicKeyInfoOwned) -> Result<Self> {
        let oid = spki.algorithm.oid;
        if oid == rfc5912::RSA_ENCRYPTION {
            let pk = rsa_key(spki)?;
            use rsa::traits::PublicKeyParts;
            return Ok(KeyAlg::Rsa(pk.n().bit_width() as usize));
        }
        if oid == rfc5912::ID_EC_PUBLIC_KEY {
            let curve: Option<ObjectIdentifier> = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
            return match curve {
                Some(c) if c == rfc5912::SECP_256_R_1 => Ok(KeyAlg::EcP256),
                Some(c) if c == rfc5912::SECP_384_R_1 => Ok(KeyAlg::EcP384),
                Some(c) => Err(Error::input(format!(
                    "unsupported elliptic curve {c}; p11ca supports P-256 and P-384"
                ))),
                None => Err(Error::input("EC public key without a named curve")),
            };
        }
        Err(Error::input(format!(
            "unsupported public key algorithm {oid}; p11ca supports RSA and ECDSA P-256/P-384"
        )))
    }

    /// Name such as `RSA-2048`.
    pub fn name(self) -> String {
        match self {
            KeyAlg::Rsa(b) => format!("RSA-{b}"),
            KeyAlg::EcP256 => "ECDSA P-256".into(),
            KeyAlg::EcP384 => "ECDSA P-384".into(),
        }
    }
}

/// The RSA public key in an SPKI.
pub fn rsa_key(spki: &SubjectPublicKeyInfoOwned) -> Result<rsa::PublicKey> {
    use der::Encode;
    use rsa::pkcs8::DecodePublicKey;
    let der = spki
        .to_der()
        .map_err(|e| Error::input(format!("cannot encode public key: {e}")))?;
    rsa::PublicKey::from_public_key_der(&der)
        .map_err(|e| Error::input(format!("invalid RSA public key: {e}")))
}

/// Signature algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigAlg {
    /// sha256WithRSAEncryption (PKCS#1 v1.5)
    RsaSha256,
    /// sha384WithRSAEncryption
    RsaSha384,
    /// sha512WithRSAEncryption
    RsaSha512,
    /// ecdsa-with-SHA256
    EcdsaSha256,
    /// ecdsa-with-SHA384
    EcdsaSha384,
    /// ecdsa-with-SHA512 (accepted on CSRs only)
    EcdsaSha512,
}

impl SigAlg {
    /// cfssl's `DefaultSigAlgo`: RSA ≥4096 → SHA-512, ≥3072 → SHA-384, else SHA-256;
    /// P-256 → SHA-256, P-384 → SHA-384.
    pub fn for_key(key: KeyAlg) -> Self {
        match key {
            KeyAlg::Rsa(b) if b >= 4096 => SigAlg::RsaSha512,
            KeyAlg::Rsa(b) if b >= 3072 => SigAlg::RsaSha384,
            KeyAlg::Rsa(_) => SigAlg::RsaSha256,
            KeyAlg::EcP256 => SigAlg::EcdsaSha256,
            KeyAlg::EcP384 => SigAlg::EcdsaSha384,
        }
    }

    /// The hash this algorithm uses.
    pub fn hash(self) -> HashAlg {
        match self {
            SigAlg::RsaSha256 | SigAlg::EcdsaSha256 => HashAlg::Sha256,
            SigAlg::RsaSha384 | SigAlg::EcdsaSha384 => HashAlg::Sha384,
            SigAlg::RsaSha512 | SigAlg::EcdsaSha512 => HashAlg::Sha512,
        }
    }

    /// True for RSA algorithms.
    pub fn is_rsa(self) -> bool {
        matches!(
            self,
            SigAlg::RsaSha256 | SigAlg::RsaSha384 | SigAlg::RsaSha512
        )
    }

    /// The OID.
    pub fn oid(self) -> ObjectIdentifier {
        match self {
            SigAlg::RsaSha256 => rfc5912::SHA_256_WITH_RSA_ENCRYPTION,
            SigAlg::RsaSha384 => rfc5912::SHA_384_WITH_RSA_ENCRYPTION,
            SigAlg::RsaSha512 => rfc5912::SHA_512_WITH_RSA_ENCRYPTION,
            SigAlg::EcdsaSha256 => rfc5912::ECDSA_WITH_SHA_256,
            SigAlg::EcdsaSha384 => rfc5912::ECDSA_WITH_SHA_384,
            SigAlg::EcdsaSha512 => rfc5912::ECDSA_WITH_SHA_512,
        }
    }

    /// AlgorithmIdentifier as it goes into certificates: NULL parameters for RSA (RFC 4055),
    /// absent for ECDSA (RFC 5758).
    pub fn algorithm_identifier(self) -> AlgorithmIdentifierOwned {
        AlgorithmIdentifierOwned {
            oid: self.oid(),
            parameters: if self.is_rsa() {
                Some(Any::null())
            } else {
                None
            },
        }
    }

    /// Recognize an AlgorithmIdentifier (from a CSR), or explain what is not supported.
    pub fn from_identifier(alg: &AlgorithmIdentifierOwned) -> Result<Self> {
        let all = [
            SigAlg::RsaSha256,
            SigAlg::RsaSha384,
            SigAlg::RsaSha512,
            SigAlg::EcdsaSha256,
            SigAlg::EcdsaSha384,
            SigAlg::EcdsaSha512,
        ];
        all.into_iter().find(|a| a.oid() == alg.oid).ok_or_else(|| {
            Error::input(format!(
                "unsupported signature algorithm {}; p11ca accepts RSA PKCS#1 v1.5 with SHA-256/384/512 and ECDSA with SHA-256/384/512",
                alg.oid
            ))
        })
    }

    /// Go's name for the algorithm, as cfssl-certinfo prints it.
    pub fn go_name(self) -> &'static str {
        match self {
            SigAlg::RsaSha256 => "SHA256WithRSA",
            SigAlg::RsaSha384 => "SHA384WithRSA",
            SigAlg::RsaSha512 => "SHA512WithRSA",
            SigAlg::EcdsaSha256 => "ECDSAWithSHA256",
            SigAlg::EcdsaSha384 => "ECDSAWithSHA384",
            SigAlg::EcdsaSha512 => "ECDSAWithSHA512",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::Encode;

    #[test]
    fn digest_info_prefixes_are_der() {
        // DigestInfo ::= SEQUENCE { AlgorithmIdentifier { oid, NULL }, OCTET STRING }
        for (h, oid) in [
            (HashAlg::Sha256, rfc5912::ID_SHA_256),
            (HashAlg::Sha384, rfc5912::ID_SHA_384),
            (HashAlg::Sha512, rfc5912::ID_SHA_512),
        ] {
            let alg = AlgorithmIdentifierOwned {
                oid,
                parameters: Some(Any::null()),
            };
            let digest = h.digest(b"x");
            #[derive(der::Sequence)]
            struct DigestInfo {
                alg: AlgorithmIdentifierOwned,
                digest: der::asn1::OctetString,
            }
            let di = DigestInfo {
                alg,
                digest: der::asn1::OctetString::new(digest.clone()).unwrap(),
            }
            .to_der()
            .unwrap();
            let mut expect = h.digest_info_prefix().to_vec();
            expect.extend_from_slice(&digest);
            assert_eq!(di, expect, "{h:?}");
        }
    }

    #[test]
    fn cfssl_default_sig_algo() {
        assert_eq!(SigAlg::for_key(KeyAlg::Rsa(2048)), SigAlg::RsaSha256);
        assert_eq!(SigAlg::for_key(KeyAlg::Rsa(2049)), SigAlg::RsaSha256);
        assert_eq!(SigAlg::for_key(KeyAlg::Rsa(3072)), SigAlg::RsaSha384);
        assert_eq!(SigAlg::for_key(KeyAlg::Rsa(4096)), SigAlg::RsaSha512);
        assert_eq!(SigAlg::for_key(KeyAlg::EcP384), SigAlg::EcdsaSha384);
    }
}
