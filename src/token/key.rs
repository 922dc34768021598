//! Key pairs and certificates inside the token: generation with a non-extractable template,
//! lookup by URI (exactly one match or an error), public keys as SPKI, and listings with the
//! security attributes an auditor asks for.

use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{
    Attribute, AttributeInfo, AttributeType, CertificateType, KeyType, ObjectClass, ObjectHandle,
};
use cryptoki::session::Session;
use der::asn1::ObjectIdentifier;
use der::{Decode, Encode};
use spki::SubjectPublicKeyInfoOwned;

use crate::error::{Error, Result};
use crate::token::quirks::{self, Quirks};
use crate::token::uri::{ObjectType, Pkcs11Uri};
use crate::token::{Module, TokenSummary, ck};
use crate::x509::alg::KeyAlg;
use crate::x509::pubkey;

const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// A key pair just generated in the token.
#[derive(Clone, Debug)]
pub struct GeneratedKey {
    /// The public key object.
    pub public: ObjectHandle,
    /// The private key object.
    pub private: ObjectHandle,
    /// CKA_LABEL of both objects.
    pub label: String,
    /// CKA_ID of both objects.
    pub id: Vec<u8>,
    /// The public key.
    pub spki: SubjectPublicKeyInfoOwned,
}

/// A private key found by URI.
#[derive(Clone, Debug)]
pub struct FoundKey {
    /// The private key object.
    pub handle: ObjectHandle,
    /// Its label.
    pub label: String,
    /// Its ID.
    pub id: Vec<u8>,
    /// Its public key.
    pub spki: SubjectPublicKeyInfoOwned,
    /// Whether every signature needs a context-specific login.
    pub always_authenticate: bool,
}

/// One object in a listing.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ObjectSummary {
    /// The object handle (valid in this session only).
    pub handle: ObjectHandle,
    /// Its class.
    pub class: ObjectType,
    /// Its label.
    pub label: String,
    /// Its ID.
    pub id: Vec<u8>,
    /// "RSA-2048", "EC P-256", or "X.509" for certificates.
    pub kind: String,
    /// Security attributes (name, value) for private keys.
    pub attributes: Vec<(&'static str, Option<bool>)>,
}

fn ec_params_der(oid: ObjectIdentifier) -> Vec<u8> {
    oid.to_der().unwrap_or_default()
}

/// Check that the token can make and use `alg` before anything is created.
pub fn check_capability(module: &Module, token: &TokenSummary, alg: KeyAlg) -> Result<()> {
    let mechs = module.mechanisms(token.slot)?;
    let find = |t: MechanismType| mechs.iter().find(|(m, _)| *m == t).map(|(_, i)| i);
    let (gen_mech, bits, family) = match alg {
        KeyAlg::Rsa(b) => (MechanismType::RSA_PKCS_KEY_PAIR_GEN, b, "RSA"),
        KeyAlg::EcP256 => (MechanismType::ECC_KEY_PAIR_GEN, 256, "EC"),
        KeyAlg::EcP384 => (MechanismType::ECC_KEY_PAIR_GEN, 384, "EC"),
    };
    let Some(info) = find(gen_mech) else {
        return Err(Error::token(format!(
            "token \"{}\" cannot generate {family} keys (no {gen_mech} mechanism); choose another key.algo",
            token.label
        )));
    };
    let (min, max) = (info.min_key_size(), info.max_key_size());
    // Some modules report EC sizes in bytes; accept either unit.
    let fits =
        |b: usize| (min <= b && b <= max) || (family == "EC" && min <= b / 8 && b / 8 <= max);
    if max != 0 && !fits(bits) {
        return Err(Error::token(format!(
            "token \"{}\" cannot make {}: its {family} key sizes are {min}..{max}; choose another key.size",
            token.label,
            alg.name()
        )));
    }
    Ok(())
}

/// Find any object whose label or ID collides, and name it by URI.
fn refuse_duplicates(
    session: &Session,
    token: &TokenSummary,
    label: &str,
    id: &[u8],
    check_label: bool,
) -> Result<()> {
    let mut templates = vec![vec![Attribute::Id(id.to_vec())]];
    if check_label {
        templates.insert(0, vec![Attribute::Label(label.as_bytes().to_vec())]);
    }
    for tpl in templates {
        let found = session
            .find_objects(&tpl)
            .map_err(|e| ck("cannot search the token", e))?;
        if let Some(h) = found.first() {
            let o = summarize(session, *h)?;
            let uri = Pkcs11Uri::for_object(&token.label, &o.id, &o.label, o.class);
            let what = if matches!(tpl[0], Attribute::Label(_)) {
                "label"
            } else {
                "ID"
            };
            return Err(Error::policy(format!(
                "token \"{}\" already has an object with {what} {}: {uri}; p11ca never overwrites keys: choose another --key-label / --key-id",
                token.label,
                if what == "label" {
                    format!("\"{label}\"")
                } else {
                    crate::text::hex(id)
                }
            )));
        }
    }
    Ok(())
}

/// Generate a key pair in the token: private key sensitive, non-extractable, sign-only.
/// If the token reports anything else afterwards, the pair is destroyed and this fails.
pub fn generate(
    session: &Session,
    token: &TokenSummary,
    alg: KeyAlg,
    label: &str,
    id: Option<Vec<u8>>,
) -> Result<GeneratedKey> {
    generate_with(session, token, alg, label, id, false, &quirks::GENERIC)
}

/// [`generate`], optionally with CKA_ALWAYS_AUTHENTICATE (a PIN for every signature).
pub fn generate_with(
    session: &Session,
    token: &TokenSummary,
    alg: KeyAlg,
    label: &str,
    id: Option<Vec<u8>>,
    always_authenticate: bool,
    rules: &Quirks,
) -> Result<GeneratedKey> {
    if rules.id_is_piv_slot && id.as_ref().is_none_or(|i| i.len() != 1) {
        return Err(Error::input(format!(
            "{} keys live in PIV slots: give --piv-slot (9a, 9c, 9d, 9e, 82..95; a CA key usually goes in 9c)",
            rules.name
        )));
    }
    let id = match id {
        Some(id) => id,
        None => {
            let mut b = vec![0u8; 16];
            session
                .generate_random_slice(&mut b)
                .map_err(|e| ck("cannot get random bytes from the token for the key ID", e))?;
            b
        }
    };
    // Where the module fixes labels, only the ID (the PIV slot) tells keys apart.
    refuse_duplicates(session, token, label, &id, !rules.fixed_labels)?;
    if rules.fixed_key_policy && always_authenticate && id != [2] {
        return Err(Error::input(format!(
            "{}: the PIN policy comes with the PIV slot; for a PIN on every signature use --piv-slot 9c",
            rules.name
        )));
    }
    let (mech, pub_tpl, mut priv_tpl) = templates(alg, label, &id, always_authenticate);
    if rules.fixed_key_policy {
        priv_tpl.retain(|a| {
            !matches!(
                a,
                Attribute::Extractable(_) | Attribute::AlwaysAuthenticate(_)
            )
        });
    }
    let (public, private) = session
        .generate_key_pair(&mech, &pub_tpl, &priv_tpl)
        .map_err(|e| {
            ck(
                &format!(
                    "token \"{}\" could not generate the {} key",
                    token.label,
                    alg.name()
                ),
                e,
            )
        })?;
    let checked = (|| {
        verify_never_extractable(session, private)?;
        let spki = public_key(session, private, Some(public))?;
        // The label the token really gave the key (ykcs11 sets its own).
        let actual = summarize(session, private)?.label;
        Ok::<_, Error>((spki, actual))
    })();
    match checked {
        Ok((spki, actual_label)) => Ok(GeneratedKey {
            public,
            private,
            label: if actual_label.is_empty() {
                label.to_string()
            } else {
                actual_label
            },
            id,
            spki,
        }),
        Err(e) => {
            let _ = session.destroy_object(private);
            let _ = session.destroy_object(public);
            Err(e.context("the new key pair was destroyed"))
        }
    }
}

/// The mechanism and the public and private key templates for a new key pair.
fn templates(
    alg: KeyAlg,
    label: &str,
    id: &[u8],
    always_authenticate: bool,
) -> (Mechanism<'static>, Vec<Attribute>, Vec<Attribute>) {
    let common = |v: &mut Vec<Attribute>| {
        v.push(Attribute::Token(true));
        v.push(Attribute::Label(label.as_bytes().to_vec()));
        v.push(Attribute::Id(id.to_vec()));
    };
    // The public half's usage flags (CKA_VERIFY, CKA_ENCRYPT) are left to the token: p11ca
    // verifies in software, and tpm2-pkcs11 derives them from the TPM object (VERIFY mirrors
    // DECRYPT, ENCRYPT mirrors SIGN) and fails key generation on any explicit value that differs.
    let mut pub_tpl = vec![Attribute::Wrap(false), Attribute::Private(false)];
    common(&mut pub_tpl);
    let mut priv_tpl = vec![
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
    ];
    if always_authenticate {
        priv_tpl.push(Attribute::AlwaysAuthenticate(true));
    }
    common(&mut priv_tpl);
    let mech = match alg {
        KeyAlg::Rsa(bits) => {
            pub_tpl.push(Attribute::ModulusBits((bits as u64).into()));
            pub_tpl.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
            Mechanism::RsaPkcsKeyPairGen
        }
        KeyAlg::EcP256 => {
            pub_tpl.push(Attribute::EcParams(ec_params_der(P256)));
            Mechanism::EccKeyPairGen
        }
        KeyAlg::EcP384 => {
            pub_tpl.push(Attribute::EcParams(ec_params_der(P384)));
            Mechanism::EccKeyPairGen
        }
    };
    (mech, pub_tpl, priv_tpl)
}

fn bool_attr(attrs: &[Attribute], t: AttributeType) -> Option<bool> {
    attrs.iter().find_map(|a| match (a, t) {
        (Attribute::Sensitive(v), AttributeType::Sensitive)
        | (Attribute::Extractable(v), AttributeType::Extractable)
        | (Attribute::AlwaysSensitive(v), AttributeType::AlwaysSensitive)
        | (Attribute::NeverExtractable(v), AttributeType::NeverExtractable)
        | (Attribute::Local(v), AttributeType::Local)
        | (Attribute::Private(v), AttributeType::Private)
        | (Attribute::AlwaysAuthenticate(v), AttributeType::AlwaysAuthenticate)
        | (Attribute::Sign(v), AttributeType::Sign) => Some(*v),
        _ => None,
    })
}

const SECURITY_ATTRS: [(&str, AttributeType); 8] = [
    ("CKA_SENSITIVE", AttributeType::Sensitive),
    ("CKA_EXTRACTABLE", AttributeType::Extractable),
    ("CKA_ALWAYS_SENSITIVE", AttributeType::AlwaysSensitive),
    ("CKA_NEVER_EXTRACTABLE", AttributeType::NeverExtractable),
    ("CKA_LOCAL", AttributeType::Local),
    ("CKA_PRIVATE", AttributeType::Private),
    ("CKA_ALWAYS_AUTHENTICATE", AttributeType::AlwaysAuthenticate),
    ("CKA_SIGN", AttributeType::Sign),
];

/// Read the security attributes of a private key.
pub fn security_attributes(
    session: &Session,
    h: ObjectHandle,
) -> Result<Vec<(&'static str, Option<bool>)>> {
    let types: Vec<AttributeType> = SECURITY_ATTRS.iter().map(|(_, t)| *t).collect();
    // get_attributes silently drops what it cannot read; a missing one shows as None.
    let attrs = session
        .get_attributes(h, &types)
        .map_err(|e| ck("cannot read key attributes", e))?;
    Ok(SECURITY_ATTRS
        .iter()
        .map(|(n, t)| (*n, bool_attr(&attrs, *t)))
        .collect())
}

fn verify_never_extractable(session: &Session, h: ObjectHandle) -> Result<()> {
    let attrs = security_attributes(session, h)?;
    let get = |n: &str| attrs.iter().find(|(k, _)| *k == n).and_then(|(_, v)| *v);
    if get("CKA_EXTRACTABLE") != Some(false)
        || get("CKA_ALWAYS_SENSITIVE") != Some(true)
        || get("CKA_NEVER_EXTRACTABLE") != Some(true)
        || get("CKA_SENSITIVE") != Some(true)
    {
        return Err(Error::token(format!(
            "the token did not create the key as non-extractable and always-sensitive (it reports {}); refusing to use it as a CA key",
            attrs
                .iter()
                .map(|(k, v)| format!("{k}={}", v.map_or("?".into(), |b| b.to_string())))
                .collect::<Vec<_>>()
                .join(" ")
        )));
    }
    Ok(())
}

/// The public key of `private` as an SPKI. RSA reads the modulus from the private object (it
/// is public there); EC reads CKA_EC_PARAMS and the point from the public object with the same
/// ID (or `public` when known), accepting a DER-wrapped or raw point.
pub fn public_key(
    session: &Session,
    private: ObjectHandle,
    public: Option<ObjectHandle>,
) -> Result<SubjectPublicKeyInfoOwned> {
    let attrs = session
        .get_attributes(private, &[AttributeType::KeyType, AttributeType::Id])
        .map_err(|e| ck("cannot read the key type", e))?;
    let key_type = attrs.iter().find_map(|a| {
        if let Attribute::KeyType(k) = a {
            Some(*k)
        } else {
            None
        }
    });
    let id = attrs.iter().find_map(|a| {
        if let Attribute::Id(i) = a {
            Some(i.clone())
        } else {
            None
        }
    });
    match key_type {
        Some(k) if k == KeyType::RSA => rsa_public_key(session, private),
        Some(k) if k == KeyType::EC => ec_public_key(session, public, id),
        _ => Err(Error::token(
            "the key is neither RSA nor EC; p11ca signs with RSA and ECDSA keys",
        )),
    }
}

/// The two byte-string parts of a public key (`types`) read from `object`; `what` names them
/// in the error when the token does not return both.
fn public_parts(
    session: &Session,
    object: ObjectHandle,
    types: [AttributeType; 2],
    what: &str,
) -> Result<(Vec<u8>, Vec<u8>)> {
    let attrs = session
        .get_attributes(object, &types)
        .map_err(|e| ck(&format!("cannot read {what}"), e))?;
    let value = |ty: AttributeType| {
        attrs.iter().find_map(|a| match a {
            Attribute::Modulus(v)
            | Attribute::PublicExponent(v)
            | Attribute::EcParams(v)
            | Attribute::EcPoint(v)
                if a.attribute_type() == ty =>
            {
                Some(v.clone())
            }
            _ => None,
        })
    };
    match (value(types[0]), value(types[1])) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => Err(Error::token(format!("the token did not return {what}"))),
    }
}

/// The SPKI of an RSA key from the private key's CKA_MODULUS and CKA_PUBLIC_EXPONENT.
fn rsa_public_key(session: &Session, private: ObjectHandle) -> Result<SubjectPublicKeyInfoOwned> {
    let parts = [AttributeType::Modulus, AttributeType::PublicExponent];
    let (n, e) = public_parts(session, private, parts, "the RSA modulus and exponent")?;
    pubkey::rsa_spki(&n, &e)
}

/// The SPKI of an EC key from its public key object (`public`, else the one with the private
/// key's CKA_ID).
fn ec_public_key(
    session: &Session,
    public: Option<ObjectHandle>,
    id: Option<Vec<u8>>,
) -> Result<SubjectPublicKeyInfoOwned> {
    let public = match public {
        Some(p) => p,
        None => {
            let mut tpl = vec![
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::KeyType(KeyType::EC),
            ];
            if let Some(id) = id {
                tpl.push(Attribute::Id(id));
            }
            let found = session
                .find_objects(&tpl)
                .map_err(|e| ck("cannot search the token", e))?;
            *found.first().ok_or_else(|| {
                Error::token("no EC public key object with the private key's CKA_ID; the token must keep the public key next to the private one")
            })?
        }
    };
    let parts = [AttributeType::EcParams, AttributeType::EcPoint];
    let (params, point) = public_parts(session, public, parts, "CKA_EC_PARAMS and CKA_EC_POINT")?;
    pubkey::ec_spki(&params, &point)
}

/// Find the one private key `uri` names (by `object` label and/or `id`); zero or several
/// matches are errors that list what is there.
pub fn find_private_key(
    session: &Session,
    token: &TokenSummary,
    uri: &Pkcs11Uri,
) -> Result<FoundKey> {
    if let Some(t) = uri.object_type.filter(|t| *t != ObjectType::Private) {
        return Err(Error::input(format!(
            "{uri}: type={} does not name a private key; use type=private or leave type out",
            t.as_str()
        )));
    }
    if uri.object.is_none() && uri.id.is_none() {
        return Err(Error::input(format!(
            "{uri}: name the key with object=LABEL and/or id=%XX… (see p11ca key list)"
        )));
    }
    let mut tpl = vec![Attribute::Class(ObjectClass::PRIVATE_KEY)];
    if let Some(l) = &uri.object {
        tpl.push(Attribute::Label(l.as_bytes().to_vec()));
    }
    if let Some(id) = &uri.id {
        tpl.push(Attribute::Id(id.clone()));
    }
    let found = session
        .find_objects(&tpl)
        .map_err(|e| ck("cannot search the token", e))?;
    let list = |hs: &[ObjectHandle]| -> String {
        hs.iter()
            .filter_map(|h| summarize(session, *h).ok())
            .map(|o| Pkcs11Uri::for_object(&token.label, &o.id, &o.label, o.class).to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match found.as_slice() {
        [h] => found_key(session, *h),
        [] => {
            let all = session
                .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
                .map_err(|e| ck("cannot search the token", e))?;
            let have = if all.is_empty() {
                "none".to_string()
            } else {
                list(&all)
            };
            Err(Error::token(format!(
                "no private key in token \"{}\" matches {uri}; private keys there: {have}",
                token.label
            )))
        }
        many => Err(Error::token(format!(
            "{} private keys in token \"{}\" match {uri}: {}; add id=… or object=… so that exactly one matches",
            many.len(),
            token.label,
            list(many)
        ))),
    }
}

/// The one key found: its label, ID, public key and whether it needs a PIN per signature.
fn found_key(session: &Session, h: ObjectHandle) -> Result<FoundKey> {
    // One attribute read for all a signer needs (each C_GetAttributeValue on a token
    // object costs SoftHSM a check of its files): an RSA key's public half is on the
    // private key object; otherwise public_key() finds it.
    let a = session
        .get_attributes(
            h,
            &[
                AttributeType::Label,
                AttributeType::Id,
                AttributeType::KeyType,
                AttributeType::Modulus,
                AttributeType::PublicExponent,
                AttributeType::AlwaysAuthenticate,
            ],
        )
        .map_err(|e| ck("cannot read the key's attributes", e))?;
    let (mut label, mut id, mut rsa, mut n, mut e, mut always) =
        (String::new(), Vec::new(), false, None, None, false);
    for x in a {
        match x {
            Attribute::Label(l) => label = String::from_utf8_lossy(&l).into_owned(),
            Attribute::Id(i) => id = i,
            Attribute::KeyType(k) => rsa = k == KeyType::RSA,
            Attribute::Modulus(m) => n = Some(m),
            Attribute::PublicExponent(x) => e = Some(x),
            Attribute::AlwaysAuthenticate(b) => always = b,
            _ => {}
        }
    }
    let spki = match (rsa, n, e) {
        (true, Some(n), Some(e)) => pubkey::rsa_spki(&n, &e)?,
        _ => public_key(session, h, None)?,
    };
    Ok(FoundKey {
        handle: h,
        label,
        id,
        spki,
        always_authenticate: always,
    })
}

/// Describe one object.
pub fn summarize(session: &Session, h: ObjectHandle) -> Result<ObjectSummary> {
    let a = session
        .get_attributes(
            h,
            &[
                AttributeType::Class,
                AttributeType::Label,
                AttributeType::Id,
                AttributeType::KeyType,
                AttributeType::ModulusBits,
                AttributeType::Modulus,
                AttributeType::EcParams,
                AttributeType::CertificateType,
            ],
        )
        .map_err(|e| ck("cannot read object attributes", e))?;
    let mut class = None;
    let mut label = String::new();
    let mut id = Vec::new();
    let mut kind = String::from("?");
    for x in &a {
        match x {
            Attribute::Class(c) => class = Some(*c),
            Attribute::Label(l) => label = String::from_utf8_lossy(l).into_owned(),
            Attribute::Id(i) => id = i.clone(),
            Attribute::Modulus(m) => {
                kind = format!("RSA-{}", m.iter().skip_while(|b| **b == 0).count() * 8)
            }
            Attribute::EcParams(p) => {
                kind = match ObjectIdentifier::from_der(p) {
                    Ok(c) if c == P256 => "EC P-256".into(),
                    Ok(c) if c == P384 => "EC P-384".into(),
                    Ok(c) => format!("EC {c}"),
                    Err(_) => "EC".into(),
                }
            }
            Attribute::CertificateType(t) if *t == CertificateType::X_509 => kind = "X.509".into(),
            _ => {}
        }
    }
    let class = match class {
        Some(c) if c == ObjectClass::PRIVATE_KEY => ObjectType::Private,
        Some(c) if c == ObjectClass::PUBLIC_KEY => ObjectType::Public,
        Some(c) if c == ObjectClass::CERTIFICATE => ObjectType::Cert,
        Some(c) if c == ObjectClass::SECRET_KEY => ObjectType::SecretKey,
        _ => ObjectType::Data,
    };
    let attributes = if class == ObjectType::Private {
        security_attributes(session, h)?
    } else {
        Vec::new()
    };
    Ok(ObjectSummary {
        handle: h,
        class,
        label,
        id,
        kind,
        attributes,
    })
}

/// Every object the logged-in user can see.
pub fn list_objects(session: &Session) -> Result<Vec<ObjectSummary>> {
    let all = session
        .find_objects(&[])
        .map_err(|e| ck("cannot list token objects", e))?;
    // Keys, certificates and data only: PKCS#11 3.x tokens (kryoptic) also expose one
    // CKO_MECHANISM object per mechanism, which are the token's, not the user's.
    const LISTED: [ObjectClass; 5] = [
        ObjectClass::PRIVATE_KEY,
        ObjectClass::PUBLIC_KEY,
        ObjectClass::CERTIFICATE,
        ObjectClass::SECRET_KEY,
        ObjectClass::DATA,
    ];
    let mut out = Vec::new();
    for h in all {
        let class = session
            .get_attributes(h, &[AttributeType::Class])
            .map_err(|e| ck("cannot read object attributes", e))?;
        if class
            .iter()
            .any(|a| matches!(a, Attribute::Class(c) if LISTED.contains(c)))
        {
            out.push(summarize(session, h)?);
        }
    }
    Ok(out)
}

/// Ask the token for the private half of a key; Ok(description) of how it refused.
/// Used to prove to an auditor that the key material cannot be read.
pub fn probe_secret(session: &Session, h: ObjectHandle) -> Result<Vec<(&'static str, String)>> {
    let probes = [
        ("CKA_PRIVATE_EXPONENT", AttributeType::PrivateExponent),
        ("CKA_PRIME_1", AttributeType::Prime1),
        ("CKA_VALUE", AttributeType::Value),
    ];
    let types: Vec<AttributeType> = probes.iter().map(|(_, t)| *t).collect();
    let info = session
        .get_attribute_info(h, &types)
        .map_err(|e| ck("cannot query key attributes", e))?;
    Ok(probes
        .iter()
        .zip(info)
        .map(|((n, _), i)| {
            let s = match i {
                AttributeInfo::Sensitive => "refused by the token (sensitive)".to_string(),
                AttributeInfo::TypeInvalid => "not applicable to this key type".to_string(),
                AttributeInfo::Unavailable => "unavailable".to_string(),
                AttributeInfo::Available(n) => format!("READABLE ({n} bytes)"),
            };
            (*n, s)
        })
        .collect())
}

/// Store a certificate next to its key (same CKA_ID and label), so other tools show the pair.
pub fn store_certificate(
    session: &Session,
    rules: &Quirks,
    cert_der: &[u8],
    label: &str,
    id: &[u8],
) -> Result<ObjectHandle> {
    // CKA_SUBJECT, CKA_ISSUER and CKA_SERIAL_NUMBER are the certificate's own DER fields.
    let cert = x509_cert::Certificate::from_der(cert_der)
        .map_err(|e| Error::token(format!("cannot store a malformed certificate: {e}")))?;
    let tbs = cert.tbs_certificate();
    let enc = |e: der::Error| Error::token(format!("cannot encode certificate fields: {e}"));
    let subject = tbs.subject().to_der().map_err(enc)?;
    let issuer = tbs.issuer().to_der().map_err(enc)?;
    let serial = tbs.serial_number().to_der().map_err(enc)?;
    let tpl = vec![
        Attribute::Class(ObjectClass::CERTIFICATE),
        Attribute::CertificateType(CertificateType::X_509),
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
        Attribute::Subject(subject.to_vec()),
        Attribute::Issuer(issuer.to_vec()),
        Attribute::SerialNumber(serial.to_vec()),
        Attribute::Value(cert_der.to_vec()),
    ];
    if rules.placeholder_certificate {
        // The module put a placeholder certificate in the new key's slot; the ID was free
        // before generation (refuse_duplicates), so any certificate with it is that placeholder.
        let placeholders = session
            .find_objects(&[
                Attribute::Class(ObjectClass::CERTIFICATE),
                Attribute::Id(id.to_vec()),
            ])
            .map_err(|e| ck("cannot search the token", e))?;
        for h in placeholders {
            session
                .destroy_object(h)
                .map_err(|e| ck("cannot replace the placeholder certificate", e))?;
        }
    }
    session
        .create_object(&tpl)
        .map_err(|e| ck("cannot store the CA certificate in the token", e))
}

/// Destroy `objects`, last first. A signing operation left active by a failure can make the
/// token refuse to destroy in `session` (tpm2-pkcs11 does): those are retried from a fresh
/// session. Returns how many could not be removed.
pub fn destroy_objects(
    module: &Module,
    token: &TokenSummary,
    session: &Session,
    objects: &[ObjectHandle],
) -> usize {
    let failed: Vec<ObjectHandle> = objects
        .iter()
        .rev()
        .copied()
        .filter(|h| session.destroy_object(*h).is_err())
        .collect();
    if failed.is_empty() {
        return 0;
    }
    match module.context().open_rw_session(token.slot) {
        Ok(fresh) => failed
            .iter()
            .filter(|h| fresh.destroy_object(**h).is_err())
            .count(),
        Err(_) => failed.len(),
    }
}

/// `e`, after destroying the `created` objects of a run that failed half-way (a new key and
/// its certificate): the message says whether the token is as it was.
pub fn undo_created(
    module: &Module,
    token: &TokenSummary,
    session: &Session,
    created: &[ObjectHandle],
    e: Error,
) -> Error {
    let note = match destroy_objects(module, token, session, created) {
        0 => "every object this run created was removed from the token".to_string(),
        n => format!(
            "{n} object(s) this run created could not be removed: check with p11ca key list"
        ),
    };
    Error::new(e.kind(), format!("{e}; {note}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(tpl: &[Attribute], want: &Attribute) -> bool {
        tpl.iter().any(|a| a == want)
    }

    #[test]
    fn rsa_templates_ask_for_the_size_and_f4() {
        let (mech, public, private) = templates(KeyAlg::Rsa(3072), "ca", &[1, 2], false);
        assert!(matches!(mech, Mechanism::RsaPkcsKeyPairGen));
        assert!(has(&public, &Attribute::ModulusBits(3072u64.into())));
        assert!(has(&public, &Attribute::PublicExponent(vec![1, 0, 1])));
        assert!(has(&private, &Attribute::Label(b"ca".to_vec())));
        assert!(has(&private, &Attribute::Id(vec![1, 2])));
        assert!(
            !private
                .iter()
                .any(|a| matches!(a, Attribute::AlwaysAuthenticate(_)))
        );
    }

    #[test]
    fn private_keys_never_leave_the_token_and_only_sign() {
        let (mech, public, private) = templates(KeyAlg::EcP384, "k", &[9], true);
        assert!(matches!(mech, Mechanism::EccKeyPairGen));
        assert!(has(&public, &Attribute::EcParams(ec_params_der(P384))));
        for want in [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
            Attribute::AlwaysAuthenticate(true),
        ] {
            assert!(has(&private, &want), "{want:?}");
        }
    }
}
