//! Reading a YubiKey PIV key's attestation through ykcs11, which exposes it as certificate
//! objects: `X.509 Certificate for PIV Attestation SLOT` (the slot's key, made by the card's
//! ATTEST command) under the key's CKA_ID, and the device's own attestation certificate,
//! "X.509 Certificate for PIV Attestation", under CKA_ID 25 (slot f9). Checking them is
//! [`crate::x509::attest`]'s work.

use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::Session;

use crate::error::{Error, Result};
use crate::token::ck;
use crate::token::quirks::piv_slot_name;

/// The ykcs11 label of an attestation certificate (`slot` none: the device's f9 one).
fn label(slot: Option<&str>) -> String {
    match slot {
        Some(s) => format!("X.509 Certificate for PIV Attestation {s}"),
        None => "X.509 Certificate for PIV Attestation".to_string(),
    }
}

fn certificate(session: &Session, id: &[u8], label: &str) -> Result<Option<Vec<u8>>> {
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::Id(id.to_vec()),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(|e| ck("cannot search the token", e))?;
    let Some(h) = found.first() else {
        return Ok(None);
    };
    let attrs = session
        .get_attributes(*h, &[AttributeType::Value])
        .map_err(|e| ck("cannot read the attestation certificate", e))?;
    Ok(attrs.into_iter().find_map(|a| match a {
        Attribute::Value(v) => Some(v),
        _ => None,
    }))
}

/// The attestation certificate of the PIV key with CKA_ID `id`, and the device's f9
/// certificate, both DER.
pub fn piv_attestation(session: &Session, token: &str, id: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    let slot = match id {
        [b] => piv_slot_name(*b),
        _ => None,
    }
    .ok_or_else(|| {
        Error::input(format!(
            "the key's ID {} is not a PIV slot; key attest is for YubiKey PIV keys",
            crate::text::hex(id)
        ))
    })?;
    let leaf = certificate(session, id, &label(Some(&slot)))?.ok_or_else(|| {
        Error::token(format!(
            "token \"{token}\" has no attestation for slot {slot}: only keys generated on the card are attested (an imported key cannot be)"
        ))
    })?;
    let f9 = certificate(session, &[25], &label(None))?.ok_or_else(|| {
        Error::token(format!(
            "token \"{token}\" has no device attestation certificate (slot f9)"
        ))
    })?;
    Ok((leaf, f9))
}
