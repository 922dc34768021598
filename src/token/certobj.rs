//! A key's certificate object in the token, replaced without a moment where the key has none
//! (renewal, an intermediate's parent-signed certificate) and keys retired from signing.
//!
//! Replacing: every certificate object with the key's CKA_ID is first relabelled
//! `LABEL.old-YYYYMMDDTHHMMSSZ`, then the new one is created under the key's label and ID, and
//! only then are the old ones destroyed. A failure before the new object exists puts the old
//! labels back; a crash leaves the old certificate (dated) next to the new one or alone, and
//! the next replacement removes every dated leftover of that key.

use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use der::DateTime;

use crate::error::{Error, Result};
#[cfg(feature = "fault-injection")]
use crate::fault;
use crate::token::key::{self, FoundKey};
use crate::token::quirks::Quirks;
use crate::token::signer::{SignMech, TokenSigner};
use crate::token::{AuthPin, Module, Session, TokenSummary, ck};
use crate::x509::alg::{KeyAlg, SigAlg};

/// What a replacement did, for the user.
#[derive(Clone, Debug, Default)]
pub struct Replaced {
    /// How many old certificate objects were removed.
    pub removed: usize,
    /// Notes: a token that could not relabel, an old object that could not be removed.
    pub warnings: Vec<String>,
}

/// The certificate objects of the key with CKA_ID `id`.
pub fn certificates_of(session: &Session, id: &[u8]) -> Result<Vec<ObjectHandle>> {
    session
        .find_objects(&[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::Id(id.to_vec()),
        ])
        .map_err(|e| ck("cannot search the token for the key's certificate", e))
}

/// The CKA_VALUE (DER) of certificate object `h`.
pub fn certificate_der(session: &Session, h: ObjectHandle) -> Result<Vec<u8>> {
    let attrs = session
        .get_attributes(h, &[AttributeType::Value])
        .map_err(|e| ck("cannot read the certificate object", e))?;
    attrs
        .into_iter()
        .find_map(|a| match a {
            Attribute::Value(v) => Some(v),
            _ => None,
        })
        .ok_or_else(|| Error::token("the token did not return the certificate's value"))
}

fn label_of(session: &Session, h: ObjectHandle) -> Option<Vec<u8>> {
    let attrs = session.get_attributes(h, &[AttributeType::Label]).ok()?;
    attrs.into_iter().find_map(|a| match a {
        Attribute::Label(l) => Some(l),
        _ => None,
    })
}

/// Objects relabelled, each with the label it had.
type Relabelled = Vec<(ObjectHandle, Vec<u8>)>;

/// `LABEL.old-YYYYMMDDTHHMMSSZ` for now.
fn dated_label(label: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    match DateTime::from_unix_duration(now) {
        Ok(d) => format!(
            "{label}.old-{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            d.year(),
            d.month(),
            d.day(),
            d.hour(),
            d.minutes(),
            d.seconds()
        ),
        Err(_) => format!("{label}.old"),
    }
}

/// Relabel `olds` to a dated label; Ok(None) when the token refuses the first change (some
/// modules keep certificate attributes read-only), with nothing changed. A refusal after the
/// first puts the earlier labels back and fails.
fn relabel(session: &Session, olds: &[ObjectHandle], label: &str) -> Result<Option<Relabelled>> {
    let dated = dated_label(label);
    let mut done: Relabelled = Vec::new();
    for (i, h) in olds.iter().enumerate() {
        let before = label_of(session, *h).unwrap_or_default();
        match session.update_attributes(*h, &[Attribute::Label(dated.as_bytes().to_vec())]) {
            Ok(()) => done.push((*h, before)),
            Err(_) if i == 0 => return Ok(None),
            Err(e) => {
                restore(session, &done);
                return Err(ck(
                    "cannot relabel the old certificate object (nothing was changed)",
                    e,
                ));
            }
        }
    }
    Ok(Some(done))
}

fn restore(session: &Session, relabelled: &[(ObjectHandle, Vec<u8>)]) {
    for (h, label) in relabelled {
        let _ = session.update_attributes(*h, &[Attribute::Label(label.clone())]);
    }
}

/// Make `cert_der` the certificate of the key with `label` and `id`: the old certificate
/// objects (any with that ID) are kept under a dated label until the new one is stored, then
/// destroyed. On tokens whose certificate attributes cannot change, the new object is created
/// first and the old ones destroyed after, which is as safe but leaves no dated copy.
pub fn replace_certificate(
    module: &Module,
    token: &TokenSummary,
    session: &Session,
    rules: &Quirks,
    cert_der: &[u8],
    label: &str,
    id: &[u8],
) -> Result<Replaced> {
    let mut out = Replaced::default();
    if rules.placeholder_certificate {
        // The module keeps one certificate per PIV slot and replaces it on write.
        key::store_certificate(session, rules, cert_der, label, id)?;
        return Ok(out);
    }
    let olds = certificates_of(session, id)?;
    let relabelled = if olds.is_empty() {
        Some(Vec::new())
    } else {
        relabel(session, &olds, label)?
    };
    if relabelled.is_none() {
        out.warnings.push(format!(
            "token \"{}\" does not let certificate labels change: the new certificate was stored first and the old one removed after, without a dated copy",
            token.label
        ));
    }
    let undo = relabelled.clone().unwrap_or_default();
    let stored = (|| {
        #[cfg(feature = "fault-injection")]
        fault::point("cert-swap-after-relabel")?;
        key::store_certificate(session, rules, cert_der, label, id)
    })();
    if let Err(e) = stored {
        restore(session, &undo);
        return Err(e.context("the token's certificate objects are as before"));
    }
    #[cfg(feature = "fault-injection")]
    fault::crash_point("cert-swap-before-remove");
    let left = key::destroy_objects(module, token, session, &olds);
    out.removed = olds.len() - left;
    if left > 0 {
        out.warnings.push(format!(
            "{left} old certificate object(s) of key \"{label}\" could not be removed; they carry a dated label: remove them with pkcs11-tool --delete-object"
        ));
    }
    Ok(out)
}

/// How [`retire`] left the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retired {
    /// CKA_SIGN is now false: the token refuses to sign with the key.
    SignOff,
    /// The key pair and its certificates were destroyed.
    Deleted,
}

/// Stop `key` from signing: CKA_SIGN set to false, read back, and a probe signature made
/// to see the token refuse it (`pin` for keys that need a login per signature); or, with
/// `delete`, the private and public key and the certificate objects destroyed. A token that
/// refuses the change, or accepts it but still signs, is an error naming the way out, with
/// the key left as it was.
pub fn retire(
    module: &Module,
    token: &TokenSummary,
    session: &Session,
    key: &FoundKey,
    pin: Option<&AuthPin>,
    delete: bool,
) -> Result<Retired> {
    let (private, id) = (key.handle, key.id.as_slice());
    if delete {
        let mut objects = vec![private];
        let publics = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::Id(id.to_vec()),
            ])
            .map_err(|e| ck("cannot search the token", e))?;
        objects.extend(certificates_of(session, id)?);
        objects.extend(publics);
        // destroy_objects goes last first: the private key goes last.
        let left = key::destroy_objects(module, token, session, &objects);
        if left > 0 {
            return Err(Error::token(format!(
                "{left} of the key's {} objects could not be destroyed; check with p11ca key list",
                objects.len()
            )));
        }
        return Ok(Retired::Deleted);
    }
    session
        .update_attributes(private, &[Attribute::Sign(false)])
        .map_err(|e| {
            ck(
                &format!(
                    "token \"{}\" does not let the key's CKA_SIGN change; retire it with --delete --confirm-delete instead",
                    token.label
                ),
                e,
            )
        })?;
    let now = key::security_attributes(session, private)?;
    let reads_false = now
        .iter()
        .any(|(n, v)| *n == "CKA_SIGN" && *v == Some(false));
    // Some modules store the attribute but sign regardless (tpm2-pkcs11): a probe signature
    // tells. Where it still signs, the change is undone and the key is not called retired.
    if !reads_false || still_signs(module, token, session, key, pin)? {
        let _ = session.update_attributes(private, &[Attribute::Sign(true)]);
        return Err(Error::token(format!(
            "token \"{}\" accepts CKA_SIGN=false but still signs with the key, so it is NOT retired (left as it was); retire it with --delete --confirm-delete",
            token.label
        )));
    }
    Ok(Retired::SignOff)
}

/// Whether the token still signs with `key`, the way p11ca signs (the mechanism it would
/// choose, with the per-signature login where the key needs one): one signature over a fixed
/// message that certifies nothing and is thrown away.
fn still_signs(
    module: &Module,
    token: &TokenSummary,
    session: &Session,
    key: &FoundKey,
    pin: Option<&AuthPin>,
) -> Result<bool> {
    let alg = SigAlg::for_key(KeyAlg::of(&key.spki)?);
    let mech = SignMech::choose_for_key(
        &module.mechanisms(token.slot)?,
        alg,
        &token.label,
        key.always_authenticate,
    )?;
    let mut signer = TokenSigner::new(session, key.handle, key.spki.clone(), mech)?;
    if let (true, Some(pin)) = (key.always_authenticate, pin) {
        signer = signer.with_context_login(pin);
    }
    Ok(crate::x509::Signer::sign(&signer, b"p11ca key retire probe").is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dated_labels_name_the_key_and_the_time() {
        let l = dated_label("ca");
        assert!(l.starts_with("ca.old-20"), "{l}");
        assert!(
            l.ends_with('Z') && l.len() == "ca.old-YYYYMMDDTHHMMSSZ".len(),
            "{l}"
        );
    }
}
