//! Per-module rules, kept in one place and keyed on what the token reports about itself
//! (manufacturer and model), so the rest of p11ca stays generic.
//!
//! YubiKey through ykcs11 (Yubico's documented rules; yubico-piv-tool's YKCS11 docs):
//! - key generation needs an SO login whose "PIN" is the PIV management key in hex;
//! - CKA_ID is one byte naming the PIV slot (1=9a, 2=9c, 3=9d, 4=9e, 5..24 = 82..95, 25=f9);
//! - CKA_LABEL is fixed by the module (find keys by ID, not by label);
//! - after generation the slot holds an empty placeholder certificate, to be replaced (as SO)
//!   by the real one;
//! - keys in slot 9c need the PIN for every signature (CKA_ALWAYS_AUTHENTICATE);
//! - the key templates take only the attributes ykcs11 2.2.0 lists (`mechanisms.c`
//!   check_pvtkey_template): CKA_EXTRACTABLE or CKA_ALWAYS_AUTHENTICATE in a template fails with
//!   CKR_ATTRIBUTE_TYPE_INVALID (seen on the emulated card); a PIV key is never extractable
//!   and the slot alone decides the PIN policy;
//! - batches sign in one session (see [`Quirks::one_session`]).

use crate::error::{Error, Result};
use crate::token::TokenSummary;

/// What is special about a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Quirks {
    /// A short name for messages.
    pub name: &'static str,
    /// C_GenerateKeyPair (and storing certificates) needs the SO logged in.
    pub keygen_needs_so: bool,
    /// CKA_ID is a one-byte PIV slot number; generation needs an explicit ID.
    pub id_is_piv_slot: bool,
    /// The module sets CKA_LABEL itself; the template's label is ignored.
    pub fixed_labels: bool,
    /// Generation leaves a placeholder certificate with the key's CKA_ID.
    pub placeholder_certificate: bool,
    /// Signing in parts around a CKU_CONTEXT_SPECIFIC login works (always-authenticate keys).
    pub context_login_signing: bool,
    /// The private-key template must leave out CKA_EXTRACTABLE and CKA_ALWAYS_AUTHENTICATE
    /// (the card fixes both; the PIN policy comes with the slot).
    pub fixed_key_policy: bool,
    /// Batches use one session: every session drives the same card, and a PIN-always (9c)
    /// signature must come right after its VERIFY, so signatures from parallel sessions
    /// interleave and the card refuses them (seen on the emulated card: C_SignFinal
    /// CKR_USER_NOT_LOGGED_IN with two sessions).
    pub one_session: bool,
}

/// No special rules.
pub const GENERIC: Quirks = Quirks {
    name: "generic PKCS#11",
    keygen_needs_so: false,
    id_is_piv_slot: false,
    fixed_labels: false,
    placeholder_certificate: false,
    context_login_signing: true,
    fixed_key_policy: false,
    one_session: false,
};

/// tpm2-pkcs11: a context-specific login in the middle of a signature breaks that signature
/// (seen with tpm2-pkcs11 1.9 on swtpm: the result does not verify), so always-authenticate
/// keys are refused before anything is created.
pub const TPM2_PKCS11: Quirks = Quirks {
    name: "tpm2-pkcs11",
    keygen_needs_so: false,
    id_is_piv_slot: false,
    fixed_labels: false,
    placeholder_certificate: false,
    context_login_signing: false,
    fixed_key_policy: false,
    one_session: false,
};

/// Yubico's ykcs11.
pub const YKCS11: Quirks = Quirks {
    name: "YubiKey (ykcs11)",
    keygen_needs_so: true,
    id_is_piv_slot: true,
    fixed_labels: true,
    placeholder_certificate: true,
    context_login_signing: true,
    fixed_key_policy: true,
    one_session: true,
};

impl Quirks {
    /// Whether a key with CKA_ID `id` needs the PIN for every signature whatever its template
    /// said: on a PIV card, the key in slot 9c (CKA_ID 2; PIN policy "always", ykcs11 sets
    /// CKA_ALWAYS_AUTHENTICATE for it).
    pub fn always_authenticates(&self, id: Option<&[u8]>) -> bool {
        self.fixed_key_policy && id == Some(&[2])
    }
}

/// How to unlock a locked user PIN on a token with these rules.
pub fn unlock_hint(rules: &Quirks) -> &'static str {
    if rules.id_is_piv_slot {
        "unblock it with the PUK (yubico-piv-tool -a unblock-pin)"
    } else {
        "unlock it with the SO PIN (e.g. softhsm2-util / pkcs11-tool --init-pin)"
    }
}

/// The rules for `token`.
pub fn for_token(token: &TokenSummary) -> Quirks {
    for_identity(&token.manufacturer, &token.model, &token.library)
}

/// The rules for a token reporting this manufacturer and model, in a module describing itself
/// as `library` ("manufacturer / description" from C_GetInfo).
pub fn for_identity(manufacturer: &str, model: &str, library: &str) -> Quirks {
    if manufacturer.starts_with("Yubico") && model.starts_with("YubiKey") {
        YKCS11
    } else if library.contains("tpm2-software") || library.contains("TPM2") {
        TPM2_PKCS11
    } else {
        GENERIC
    }
}

/// p11-kit's RPC client (a token served by `p11-kit server`): all calls share one connection,
/// which the server answers one at a time, so more sessions add nothing; and with p11-kit 0.24
/// a thread waiting for its reply can wait forever if the connection drops while another
/// thread is reading (seen here: a batch hung when the server stopped). One session, and so
/// one thread in the module, avoids both; it also lets a lost server be re-initialized.
pub fn serializes_calls(module_path: &std::path::Path) -> bool {
    module_path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().contains("p11-kit-client"))
}

/// The PIV slot name (`9c`, `82`, ...) for a ykcs11 CKA_ID byte.
pub fn piv_slot_name(id: u8) -> Option<String> {
    Some(match id {
        1 => "9a".into(),
        2 => "9c".into(),
        3 => "9d".into(),
        4 => "9e".into(),
        5..=24 => format!("{:02x}", id - 5 + 0x82),
        25 => "f9".into(),
        _ => return None,
    })
}

/// The ykcs11 CKA_ID for a PIV slot name such as `9c` or `82`.
pub fn piv_slot_id(slot: &str) -> Result<u8> {
    let s = slot.trim().to_ascii_lowercase();
    let id = match s.as_str() {
        "9a" => 1,
        "9c" => 2,
        "9d" => 3,
        "9e" => 4,
        "f9" => 25,
        _ => match u8::from_str_radix(&s, 16) {
            Ok(n @ 0x82..=0x95) if s.len() == 2 => n - 0x82 + 5,
            _ => {
                return Err(Error::input(format!(
                    "--piv-slot \"{slot}\": not a PIV slot; use 9a, 9c, 9d, 9e, 82..95 or f9"
                )));
            }
        },
    };
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p11kit_client_gets_one_session() {
        use std::path::Path;
        assert!(serializes_calls(Path::new(
            "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so"
        )));
        assert!(!serializes_calls(Path::new(
            "/usr/lib/softhsm/libsofthsm2.so"
        )));
        assert!(!serializes_calls(Path::new(
            "/usr/lib/x86_64-linux-gnu/p11-kit-proxy.so"
        )));
    }

    #[test]
    fn piv_slots() {
        assert_eq!(piv_slot_id("9a").unwrap(), 1);
        assert_eq!(piv_slot_id("9C").unwrap(), 2);
        assert_eq!(piv_slot_id("9d").unwrap(), 3);
        assert_eq!(piv_slot_id("9e").unwrap(), 4);
        assert_eq!(piv_slot_id("82").unwrap(), 5);
        assert_eq!(piv_slot_id("95").unwrap(), 24);
        assert_eq!(piv_slot_id("f9").unwrap(), 25);
        for name in ["9a", "9c", "9d", "9e", "82", "95", "f9"] {
            assert_eq!(piv_slot_name(piv_slot_id(name).unwrap()).unwrap(), name);
        }
        assert_eq!(piv_slot_name(0), None);
        assert_eq!(piv_slot_name(26), None);
        for bad in ["9b", "96", "81", "0x9c", "", "9"] {
            assert!(piv_slot_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn detection() {
        assert_eq!(
            for_identity("Yubico (www.yubico.com)", "YubiKey YK5", ""),
            YKCS11
        );
        let softhsm = "SoftHSM / Implementation of PKCS11";
        assert_eq!(
            for_identity("SoftHSM project", "SoftHSM v2", softhsm),
            GENERIC
        );
        let tpm = "tpm2-software.github.io / TPM2.0 Cryptoki";
        assert_eq!(for_identity("IBM", "SW   TPM", tpm), TPM2_PKCS11);
    }
}
