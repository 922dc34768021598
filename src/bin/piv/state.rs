//! What survives "unplugging" the card: PIN, PUK and their counters, the management key, the
//! keys and the data objects. Saved to `DIR/card.json` after every change (written to a
//! temporary file and renamed, so a stop mid-write never leaves half a card).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Factory PIN, PUK and management key of a YubiKey (yubico-piv-tool
/// doc/YubiKey_PIV_introduction.adoc; `lib/ykpiv.c` DEFAULT_AUTH_KEY).
pub(crate) const DEFAULT_PIN: &[u8] = b"123456";
pub(crate) const DEFAULT_PUK: &[u8] = b"12345678";
pub(crate) const DEFAULT_MGM_KEY: [u8; 24] = [
    1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8,
];
/// Factory retry counts (Yubico's PIV docs: 3 tries for PIN and PUK).
pub(crate) const DEFAULT_TRIES: u8 = 3;

/// A private key in a slot.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct SlotKey {
    /// The PIV algorithm byte: 06 RSA-1024, 07 RSA-2048, 11 P-256, 14 P-384.
    pub alg: u8,
    /// PKCS#8 DER, hex.
    pub pkcs8: String,
    /// 1 never, 2 once, 3 always (Yubico's PIN policy bytes).
    pub pin_policy: u8,
    /// 1 never, 2 always, 3 cached (recorded; the emulator has no button).
    pub touch_policy: u8,
}

/// The card's persistent state.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Persist {
    pub serial: u32,
    pub pin: Vec<u8>,
    pub puk: Vec<u8>,
    pub pin_tries: u8,
    pub pin_left: u8,
    pub puk_tries: u8,
    pub puk_left: u8,
    pub mgm_key: Vec<u8>,
    /// Slot byte (hex) → key.
    pub keys: BTreeMap<String, SlotKey>,
    /// Object ID (hex) → content (the value inside tag 53, hex).
    pub objects: BTreeMap<String, String>,
    /// The device CA the card was made with (attestation, slot f9).
    pub device_ca: crate::attest::DeviceCa,
}

impl Persist {
    /// A card as it leaves the factory.
    pub(crate) fn factory(serial: u32, device_ca: crate::attest::DeviceCa) -> Self {
        let mut objects = BTreeMap::new();
        if let Ok(f9) = device_ca.f9_object() {
            objects.insert("5fff01".to_string(), base16ct::lower::encode_string(&f9));
        }
        Persist {
            serial,
            pin: DEFAULT_PIN.to_vec(),
            puk: DEFAULT_PUK.to_vec(),
            pin_tries: DEFAULT_TRIES,
            pin_left: DEFAULT_TRIES,
            puk_tries: DEFAULT_TRIES,
            puk_left: DEFAULT_TRIES,
            mgm_key: DEFAULT_MGM_KEY.to_vec(),
            keys: BTreeMap::new(),
            objects,
            device_ca,
        }
    }
}

/// Where the state lives.
pub(crate) struct Store {
    path: PathBuf,
}

impl Store {
    pub(crate) fn new(dir: &Path) -> Self {
        Store {
            path: dir.join("card.json"),
        }
    }

    /// The saved card, or `None` for a first start.
    pub(crate) fn load(&self) -> Result<Option<Persist>, String> {
        match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| format!("{}: {e}", self.path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", self.path.display())),
        }
    }

    /// The device CA's root certificate, for verifiers: `DIR/attestation-root.pem`.
    pub(crate) fn write_root(&self, pem: &str) -> Result<(), String> {
        let path = self.path.with_file_name("attestation-root.pem");
        std::fs::write(&path, pem).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub(crate) fn save(&self, p: &Persist) -> Result<(), String> {
        let tmp = self.path.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(p).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, body)
            .and_then(|()| std::fs::rename(&tmp, &self.path))
            .map_err(|e| format!("{}: {e}", self.path.display()))
    }
}
