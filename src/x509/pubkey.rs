//! Building a SubjectPublicKeyInfo from the parts a PKCS#11 token reports (an RSA modulus and
//! exponent, an EC curve and point): pure DER, so the token code hands over bytes and gets an
//! SPKI back. Errors are token errors, since the bytes came from the token.

use const_oid::ObjectIdentifier;
use const_oid::db::rfc5912;
use der::asn1::{Any, BitString, OctetString, UintRef};
use der::{Decode, Encode};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

use crate::error::{Error, Result};

/// SPKI for an RSA key from its modulus and exponent (big-endian bytes).
pub fn rsa_spki(n: &[u8], e: &[u8]) -> Result<SubjectPublicKeyInfoOwned> {
    #[derive(der::Sequence)]
    struct RsaPublicKeyDer<'a> {
        modulus: UintRef<'a>,
        public_exponent: UintRef<'a>,
    }
    let bad =
        |e: der::Error| Error::token(format!("the token returned an invalid RSA public key: {e}"));
    let key = RsaPublicKeyDer {
        modulus: UintRef::new(n).map_err(bad)?,
        public_exponent: UintRef::new(e).map_err(bad)?,
    }
    .to_der()
    .map_err(bad)?;
    Ok(SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned {
            oid: rfc5912::RSA_ENCRYPTION,
            parameters: Some(Any::null()),
        },
        subject_public_key: BitString::from_bytes(&key).map_err(bad)?,
    })
}

/// SPKI for an EC key from CKA_EC_PARAMS (named curve OID) and CKA_EC_POINT.
pub fn ec_spki(params: &[u8], point: &[u8]) -> Result<SubjectPublicKeyInfoOwned> {
    let curve = ObjectIdentifier::from_der(params)
        .map_err(|_| Error::token("the EC key's CKA_EC_PARAMS is not a named curve"))?;
    let field = match curve {
        c if c == rfc5912::SECP_256_R_1 => 32,
        c if c == rfc5912::SECP_384_R_1 => 48,
        c => {
            return Err(Error::token(format!(
                "unsupported curve {c}; p11ca supports P-256 and P-384"
            )));
        }
    };
    // PKCS#11 says DER OCTET STRING; some tokens give the raw uncompressed point.
    let raw = if point.len() == 1 + 2 * field && point[0] == 0x04 {
        point.to_vec()
    } else {
        OctetString::from_der(point)
            .map(|o| o.as_bytes().to_vec())
            .map_err(|_| {
                Error::token(
                    "the token's CKA_EC_POINT is neither a DER OCTET STRING nor a raw point",
                )
            })?
    };
    let bad = |e: der::Error| Error::token(format!("invalid EC public key: {e}"));
    Ok(SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned {
            oid: rfc5912::ID_EC_PUBLIC_KEY,
            parameters: Some(Any::encode_from(&curve).map_err(bad)?),
        },
        subject_public_key: BitString::from_bytes(&raw).map_err(bad)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x509::alg::KeyAlg;

    #[test]
    fn ec_points_as_octet_string_or_raw() {
        let params = rfc5912::SECP_256_R_1.to_der().unwrap();
        let mut raw = vec![0x04];
        raw.extend([7u8; 64]);
        let wrapped = OctetString::new(raw.clone()).unwrap().to_der().unwrap();
        let a = ec_spki(&params, &raw).unwrap();
        let b = ec_spki(&params, &wrapped).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.subject_public_key.raw_bytes(), raw.as_slice());
        assert_eq!(KeyAlg::of(&a).unwrap(), KeyAlg::EcP256);
        assert!(ec_spki(&params, &raw[..40]).is_err());
        let other = ObjectIdentifier::new_unwrap("1.3.132.0.35")
            .to_der()
            .unwrap();
        assert!(ec_spki(&other, &raw).is_err());
    }

    #[test]
    fn rsa_from_modulus_and_exponent() {
        let mut n = vec![0xc5; 256];
        n[255] = 0x01;
        let spki = rsa_spki(&n, &[1, 0, 1]).unwrap();
        assert_eq!(KeyAlg::of(&spki).unwrap(), KeyAlg::Rsa(2048));
    }
}
