//! The card: APDU transport rules (chaining, GET RESPONSE), the security state, and the PIV
//! and Yubico commands ykcs11, libykpiv, yubico-piv-tool and OpenSC send. The facts behind
//! each answer are cited beside it; "yesdk" is Yubico's published PIV APDU documentation
//! (docs.yubico.com/yesdk/users-manual/application-piv/apdu/), "ykpiv" is yubico-piv-tool
//! 2.2.0's `lib/ykpiv.c`.

use std::collections::BTreeMap;

use crate::keys::{self, Key};
use crate::state::{Persist, SlotKey, Store};
use crate::tlv::{self, tlv};

/// The YubiKey 5 (USB) ATR: T=1 offered (libykpiv connects with T=1 only), historical bytes
/// naming "YubiKey" (ykpiv.h YKPIV_ATR_YK5; OpenSC card-piv.c reads them).
pub(crate) const ATR: &[u8] = &[
    0x3b, 0xfd, 0x13, 0x00, 0x00, 0x81, 0x31, 0xfe, 0x15, 0x80, 0x73, 0xc0, 0x21, 0xc0, 0x57, 0x59,
    0x75, 0x62, 0x69, 0x4b, 0x65, 0x79, 0x40,
];
/// Firmware 5.2.7: has GET SERIAL (5.0) and ATTEST (4.3), has no GET METADATA (5.3) and no AES
/// management keys (5.4), which ykpiv 2.2.0 could not use anyway (yesdk; yubico-piv-tool NEWS).
pub(crate) const VERSION: [u8; 3] = [5, 2, 7];

const PIV_AID: &[u8] = &[0xa0, 0x00, 0x00, 0x03, 0x08];
/// Selecting it leaves PIV and drops authentication (ykpiv.c, the management AID).
const MGMT_AID: &[u8] = &[0xa0, 0x00, 0x00, 0x05, 0x27, 0x47, 0x11, 0x17];
/// The application property template a YubiKey answers SELECT with (yesdk, SELECT page).
const APT: &[u8] = &[
    0x61, 0x11, 0x4f, 0x06, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00, 0x79, 0x07, 0x4f, 0x05, 0xa0, 0x00,
    0x00, 0x03, 0x08,
];
/// The Discovery object (SP 800-73-4 part 1, 3.3.2): PIV AID, PIN usage policy 4000.
const DISCOVERY: &[u8] = &[
    0x7e, 0x12, 0x4f, 0x0b, 0xa0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00, 0x5f,
    0x2f, 0x02, 0x40, 0x00,
];

pub(crate) const OK: u16 = 0x9000;
const SECURITY: u16 = 0x6982;
const BLOCKED: u16 = 0x6983;
const CONDITIONS: u16 = 0x6985;
const BAD_DATA: u16 = 0x6a80;
const NOT_FOUND: u16 = 0x6a82;
const BAD_P1P2: u16 = 0x6a86;
const NO_KEY: u16 = 0x6a88;
const WRONG_LENGTH: u16 = 0x6700;
const BAD_INS: u16 = 0x6d00;
const WRONG_SLOT: u16 = 0x6b00;

/// An answer before transport framing.
pub(crate) struct Resp {
    data: Vec<u8>,
    sw: u16,
}

fn sw(sw: u16) -> Resp {
    Resp {
        data: Vec::new(),
        sw,
    }
}

fn data(data: Vec<u8>) -> Resp {
    Resp { data, sw: OK }
}

/// One command APDU, after chaining.
struct Apdu {
    ins: u8,
    p1: u8,
    p2: u8,
    data: Vec<u8>,
}

/// The card with its persistent and its volatile state.
pub(crate) struct Card {
    p: Persist,
    store: Store,
    keys: BTreeMap<u8, Key>,
    selected: bool,
    pin_ok: bool,
    /// The command just before this one was a successful VERIFY: what a PIN-always key
    /// needs (SP 800-73-4; Yubico's maintainer in yubico-piv-tool issue 234).
    just_verified: bool,
    mgm_ok: bool,
    witness: Option<[u8; 8]>,
    chain: Option<(u8, Vec<u8>)>,
    pending: Vec<u8>,
}

impl Card {
    pub(crate) fn open(store: Store, serial: u32) -> Result<Self, String> {
        let p = match store.load()? {
            Some(p) => p,
            None => {
                let p = Persist::factory(serial, crate::attest::DeviceCa::new()?);
                store.save(&p)?;
                p
            }
        };
        store.write_root(&p.device_ca.root_pem()?)?;
        let mut keys = BTreeMap::new();
        for (slot, k) in &p.keys {
            let slot = u8::from_str_radix(slot, 16).map_err(|e| e.to_string())?;
            let der = base16ct::mixed::decode_vec(&k.pkcs8).map_err(|e| e.to_string())?;
            keys.insert(slot, Key::from_pkcs8(k.alg, &der)?);
        }
        Ok(Card {
            p,
            store,
            keys,
            selected: false,
            pin_ok: false,
            just_verified: false,
            mgm_ok: false,
            witness: None,
            chain: None,
            pending: Vec::new(),
        })
    }

    /// Power off, on or reset: everything volatile goes, the card's contents stay.
    pub(crate) fn reset(&mut self) {
        self.selected = false;
        self.pin_ok = false;
        self.just_verified = false;
        self.mgm_ok = false;
        self.witness = None;
        self.chain = None;
        self.pending.clear();
    }

    fn save(&mut self) -> Result<(), String> {
        self.store.save(&self.p)
    }

    /// One command APDU in, one response APDU (data ‖ SW1 SW2) out.
    pub(crate) fn transmit(&mut self, raw: &[u8]) -> Vec<u8> {
        let r = match self.assemble(raw) {
            Ok(Some(apdu)) => self.command(apdu),
            Ok(None) => sw(OK),
            Err(code) => sw(code),
        };
        self.frame(r)
    }

    /// Short APDUs in the four ISO 7816-4 cases; Le is ignored (a full answer is fine for
    /// OpenSC, which asks for 8 bytes first). CLA bit 0x10 chains: each part is answered 9000
    /// and the whole chain is one command (ISO 7816-4 5.1.1.1).
    fn assemble(&mut self, raw: &[u8]) -> Result<Option<Apdu>, u16> {
        if raw.len() < 4 {
            return Err(WRONG_LENGTH);
        }
        let body = if raw.len() > 5 {
            let lc = usize::from(raw[4]);
            raw.get(5..5 + lc).ok_or(WRONG_LENGTH)?
        } else {
            &[][..]
        };
        let (cla, ins) = (raw[0], raw[1]);
        let mut full = match self.chain.take() {
            Some((i, prefix)) if i == ins => prefix,
            _ => Vec::new(),
        };
        full.extend_from_slice(body);
        if cla & 0x10 != 0 {
            self.chain = Some((ins, full));
            return Ok(None);
        }
        Ok(Some(Apdu {
            ins,
            p1: raw[2],
            p2: raw[3],
            data: full,
        }))
    }

    /// At most 256 bytes per answer; the rest through GET RESPONSE (`61 xx`, xx = 00 for 256
    /// or more; ISO 7816-4 and ykpiv.c _ykpiv_transfer_data).
    fn frame(&mut self, r: Resp) -> Vec<u8> {
        let mut all = r.data;
        let mut code = r.sw;
        if all.len() > 256 {
            self.pending = all.split_off(256);
            code = 0x6100 | self.pending.len().min(256) as u16 & 0xff;
        }
        all.extend_from_slice(&code.to_be_bytes());
        all
    }

    fn command(&mut self, a: Apdu) -> Resp {
        if a.ins == 0xc0 {
            return data(std::mem::take(&mut self.pending));
        }
        self.pending.clear();
        let always_ok = std::mem::take(&mut self.just_verified);
        if a.ins == 0xa4 {
            return self.select(&a);
        }
        if !self.selected {
            // Nothing selected: OpenSC's first probe is answered 6D00 (seen with a YubiKey).
            return sw(BAD_INS);
        }
        match a.ins {
            0x20 => self.verify(&a),
            0x24 => self.change_reference(&a),
            0x2c => self.reset_retry(&a),
            0x47 => self.generate(&a),
            0x87 if a.p2 == 0x9b => self.mgm_auth(&a),
            0x87 => self.sign(&a, always_ok),
            0xcb => self.get_data(&a),
            0xdb => self.put_data(&a),
            0xfd => data(VERSION.to_vec()),
            0xf8 => data(self.p.serial.to_be_bytes().to_vec()),
            0xff => self.set_mgm_key(&a),
            0xfa => self.set_pin_retries(&a),
            0xfb => self.factory_reset(),
            0xf9 => self.attest(&a),
            // GET METADATA (F7) arrived in firmware 5.3; ykcs11 treats 6D00 as "not
            // available" (ykcs11.c C_OpenSession).
            _ => sw(BAD_INS),
        }
    }

    fn select(&mut self, a: &Apdu) -> Resp {
        if a.p1 != 0x04 || a.data.is_empty() {
            return sw(NOT_FOUND);
        }
        if PIV_AID.starts_with(&a.data) || a.data.starts_with(PIV_AID) {
            // Re-selecting PIV keeps PIN and management state on a YubiKey 5 (NEWS 2.0.0).
            self.selected = true;
            return data(APT.to_vec());
        }
        if a.data == MGMT_AID {
            self.reset();
            return sw(OK);
        }
        sw(NOT_FOUND)
    }
}

/// `63 Cx`: wrong, x tries left, also for the try that uses up the last one (ISO 7816-4
/// 10.1.3; SP 800-73-4 part 2, 3.2.1); only a later VERIFY of a blocked PIN gets `69 83`.
fn tries_left(n: u8) -> u16 {
    0x63c0 | u16::from(n.min(15))
}

/// The 8-byte PIN/PUK field without its FF padding.
fn unpad(b: &[u8]) -> &[u8] {
    let end = b.iter().position(|&c| c == 0xff).unwrap_or(b.len());
    &b[..end]
}

impl Card {
    fn verify(&mut self, a: &Apdu) -> Resp {
        if a.p2 != 0x80 {
            return sw(NOT_FOUND);
        }
        if self.p.pin_left == 0 {
            return sw(BLOCKED);
        }
        if a.data.is_empty() {
            // A status query (SP 800-73-4 part 2, 3.2.1).
            return sw(if self.pin_ok {
                OK
            } else {
                tries_left(self.p.pin_left)
            });
        }
        if a.data.len() != 8 {
            return sw(WRONG_LENGTH);
        }
        if unpad(&a.data) == self.p.pin.as_slice() {
            self.p.pin_left = self.p.pin_tries;
            self.pin_ok = true;
            self.just_verified = true;
            return self.saved(sw(OK));
        }
        self.pin_ok = false;
        self.p.pin_left -= 1;
        let code = tries_left(self.p.pin_left);
        self.saved(sw(code))
    }

    /// Check `given` against the PIN (P2 80) or PUK (P2 81), counting a failure.
    fn check_ref(&mut self, p2: u8, given: &[u8]) -> Result<(), u16> {
        let (value, left, max) = match p2 {
            0x80 => (&self.p.pin, self.p.pin_left, self.p.pin_tries),
            0x81 => (&self.p.puk, self.p.puk_left, self.p.puk_tries),
            _ => return Err(NOT_FOUND),
        };
        if left == 0 {
            return Err(BLOCKED);
        }
        let ok = unpad(given) == value.as_slice();
        let new_left = if ok { max } else { left - 1 };
        if p2 == 0x80 {
            self.p.pin_left = new_left;
        } else {
            self.p.puk_left = new_left;
        }
        if ok {
            Ok(())
        } else {
            Err(tries_left(new_left))
        }
    }

    fn change_reference(&mut self, a: &Apdu) -> Resp {
        if a.data.len() != 16 {
            return sw(WRONG_LENGTH);
        }
        let new = unpad(&a.data[8..]).to_vec();
        if let Err(code) = self.check_ref(a.p2, &a.data[..8]) {
            return self.saved(sw(code));
        }
        // yesdk change-reference: PIN and PUK are 6 to 8 bytes.
        if !(6..=8).contains(&new.len()) {
            return self.saved(sw(BAD_DATA));
        }
        if a.p2 == 0x80 {
            self.p.pin = new;
        } else {
            self.p.puk = new;
        }
        self.saved(sw(OK))
    }

    fn reset_retry(&mut self, a: &Apdu) -> Resp {
        if a.data.len() != 16 || a.p2 != 0x80 {
            return sw(WRONG_LENGTH);
        }
        if let Err(code) = self.check_ref(0x81, &a.data[..8]) {
            return self.saved(sw(code));
        }
        let new = unpad(&a.data[8..]).to_vec();
        if !(6..=8).contains(&new.len()) {
            return self.saved(sw(BAD_DATA));
        }
        self.p.pin = new;
        self.p.pin_left = self.p.pin_tries;
        self.saved(sw(OK))
    }

    /// Persist, then answer `r`; a state that cannot be saved is a card fault (6F00).
    fn saved(&mut self, r: Resp) -> Resp {
        match self.save() {
            Ok(()) => r,
            Err(e) => {
                eprintln!("p11ca-piv-emulator: cannot save the card: {e}");
                sw(0x6f00)
            }
        }
    }
}

impl Card {
    /// Management-key mutual authentication, 3DES only (P1 03; ykpiv.c ykpiv_authenticate):
    /// step 1 `7C { 80 00 }` → the card's witness encrypted; step 2 `7C { 80 witness, 81
    /// challenge }` → `7C { 82 challenge encrypted }` when the witness matches.
    fn mgm_auth(&mut self, a: &Apdu) -> Resp {
        if a.p1 != keys::TDES {
            // No AES management keys before firmware 5.4 (yesdk, authenticate-management-key).
            return sw(BAD_P1P2);
        }
        let Some(inner) = tlv::find(&a.data, 0x7c) else {
            return sw(BAD_DATA);
        };
        let witness = tlv::find(inner, 0x80);
        let challenge = tlv::find(inner, 0x81);
        match (witness, challenge) {
            (Some([]), None) => {
                let w: [u8; 8] = keys::random();
                self.witness = Some(w);
                self.mgm_ok = false;
                match keys::tdes(&self.p.mgm_key, &w, true) {
                    Ok(e) => data(tlv(&[0x7c], &tlv(&[0x80], &e))),
                    Err(_) => sw(0x6f00),
                }
            }
            (Some(w), Some(c)) if w.len() == 8 && c.len() == 8 => {
                let expected = self.witness.take();
                if expected.as_ref().map(|e| &e[..]) != Some(w) {
                    return sw(SECURITY);
                }
                let c: [u8; 8] = c.try_into().unwrap_or_default();
                match keys::tdes(&self.p.mgm_key, &c, true) {
                    Ok(e) => {
                        self.mgm_ok = true;
                        data(tlv(&[0x7c], &tlv(&[0x82], &e)))
                    }
                    Err(_) => sw(0x6f00),
                }
            }
            _ => sw(BAD_DATA),
        }
    }

    /// SET MANAGEMENT KEY (Yubico, INS FF; yesdk set-management-key): `03 9B 18 <key>`.
    fn set_mgm_key(&mut self, a: &Apdu) -> Resp {
        if !self.mgm_ok {
            return sw(SECURITY);
        }
        match a.data.as_slice() {
            [keys::TDES, 0x9b, 24, key @ ..] if key.len() == 24 => {
                self.p.mgm_key = key.to_vec();
                self.saved(sw(OK))
            }
            _ => sw(BAD_DATA),
        }
    }

    /// SET PIN RETRIES (Yubico, INS FA; yesdk set-pin-retries): needs the management key and
    /// the PIN, and puts PIN and PUK back to their defaults.
    fn set_pin_retries(&mut self, a: &Apdu) -> Resp {
        if !self.mgm_ok || !self.pin_ok {
            return sw(SECURITY);
        }
        if a.p1 == 0 || a.p2 == 0 {
            return sw(BAD_P1P2);
        }
        self.p.pin_tries = a.p1;
        self.p.pin_left = a.p1;
        self.p.puk_tries = a.p2;
        self.p.puk_left = a.p2;
        self.p.pin = crate::state::DEFAULT_PIN.to_vec();
        self.p.puk = crate::state::DEFAULT_PUK.to_vec();
        self.saved(sw(OK))
    }

    /// RESET (Yubico, INS FB; yesdk reset): only once PIN and PUK are both blocked.
    fn factory_reset(&mut self) -> Resp {
        if self.p.pin_left != 0 || self.p.puk_left != 0 {
            return sw(CONDITIONS);
        }
        // The attestation key and certificate are the device's; a reset keeps them (Yubico's
        // PIV attestation page: slot f9 survives a PIV reset).
        self.p = Persist::factory(self.p.serial, self.p.device_ca.clone());
        self.keys.clear();
        self.reset();
        self.selected = true;
        self.saved(sw(OK))
    }
}

/// The PIN policy a slot's key gets when GENERATE names none (yesdk generate-asymmetric:
/// 9C always, 9E never, the others once).
fn default_pin_policy(slot: u8) -> u8 {
    match slot {
        0x9c => 3,
        0x9e => 1,
        _ => 2,
    }
}

fn key_slot(slot: u8) -> bool {
    matches!(slot, 0x9a | 0x9c | 0x9d | 0x9e | 0x82..=0x95)
}

impl Card {
    /// GENERATE ASYMMETRIC KEY PAIR (SP 800-73-4 part 2, 3.3.2): `AC { 80 alg [AA pin] [AB
    /// touch] }` (Yubico's policy tags: yesdk; yubico-piv-tool lib/util.c).
    fn generate(&mut self, a: &Apdu) -> Resp {
        if !self.mgm_ok {
            return sw(SECURITY);
        }
        if !key_slot(a.p2) {
            return sw(WRONG_SLOT);
        }
        let Some(ac) = tlv::find(&a.data, 0xac) else {
            return sw(BAD_DATA);
        };
        let Some(&[alg]) = tlv::find(ac, 0x80) else {
            return sw(BAD_DATA);
        };
        let pin_policy = match tlv::find(ac, 0xaa) {
            Some(&[p @ 1..=3]) => p,
            Some(_) => return sw(BAD_DATA),
            None => default_pin_policy(a.p2),
        };
        let touch_policy = match tlv::find(ac, 0xab) {
            Some(&[t @ 1..=3]) => t,
            Some(_) => return sw(BAD_DATA),
            None => 1,
        };
        let key = match Key::generate(alg) {
            None => return sw(BAD_DATA),
            Some(Err(e)) => {
                eprintln!("p11ca-piv-emulator: key generation failed: {e}");
                return sw(0x6f00);
            }
            Some(Ok(k)) => k,
        };
        let Ok(der) = key.to_pkcs8() else {
            return sw(0x6f00);
        };
        let public = key.public_tlv();
        self.p.keys.insert(
            format!("{:02x}", a.p2),
            SlotKey {
                alg,
                pkcs8: base16ct::lower::encode_string(&der),
                pin_policy,
                touch_policy,
            },
        );
        self.keys.insert(a.p2, key);
        self.saved(data(public))
    }

    /// GENERAL AUTHENTICATE with a slot key (SP 800-73-4 part 2, 3.2.4):
    /// `7C { 82 00, 81 input }` → `7C { 82 signature }`, under the key's PIN policy.
    fn sign(&mut self, a: &Apdu, always_ok: bool) -> Resp {
        let (Some(key), Some(meta)) = (
            self.keys.get(&a.p2),
            self.p.keys.get(&format!("{:02x}", a.p2)),
        ) else {
            return sw(NO_KEY);
        };
        if meta.alg != a.p1 {
            return sw(BAD_P1P2);
        }
        let allowed = match meta.pin_policy {
            1 => true,
            3 => always_ok && self.pin_ok,
            _ => self.pin_ok,
        };
        if !allowed {
            return sw(SECURITY);
        }
        let Some(input) = tlv::find(&a.data, 0x7c).and_then(|i| tlv::find(i, 0x81)) else {
            return sw(BAD_DATA);
        };
        match key.sign(input) {
            Ok(sig) => data(tlv(&[0x7c], &tlv(&[0x82], &sig))),
            Err(e) => {
                eprintln!("p11ca-piv-emulator: sign with {:02x}: {e}", a.p2);
                sw(BAD_DATA)
            }
        }
    }

    /// ATTEST (Yubico, INS F9, P1 slot; yesdk "create attestation statement"): a certificate
    /// for the slot's key signed by the f9 key; 6A88 for an empty slot.
    fn attest(&mut self, a: &Apdu) -> Resp {
        let (Some(key), Some(meta)) = (
            self.keys.get(&a.p1),
            self.p.keys.get(&format!("{:02x}", a.p1)),
        ) else {
            return sw(NO_KEY);
        };
        let policies = [meta.pin_policy, meta.touch_policy];
        match self
            .p
            .device_ca
            .attest(a.p1, key, policies, self.p.serial, VERSION)
        {
            Ok(cert) => data(cert),
            Err(e) => {
                eprintln!("p11ca-piv-emulator: attestation of {:02x}: {e}", a.p1);
                sw(0x6f00)
            }
        }
    }

    /// GET DATA (SP 800-73-4 part 2, 3.1.2): `5C id` → `53 content`, or the Discovery object.
    fn get_data(&mut self, a: &Apdu) -> Resp {
        let Some(id) = tlv::find(&a.data, 0x5c) else {
            return sw(BAD_DATA);
        };
        if id == [0x7e] {
            return data(DISCOVERY.to_vec());
        }
        let hex = base16ct::lower::encode_string(id);
        match self.p.objects.get(&hex) {
            Some(content) => match base16ct::mixed::decode_vec(content) {
                Ok(c) => data(tlv(&[0x53], &c)),
                Err(_) => sw(0x6f00),
            },
            None => sw(NOT_FOUND),
        }
    }

    /// PUT DATA (SP 800-73-4 part 2, 3.3.1): `5C id 53 content`; `53 00` deletes (yesdk
    /// put-data). Needs the management key (ykpiv.c ykpiv_save_object; yesdk).
    fn put_data(&mut self, a: &Apdu) -> Resp {
        if !self.mgm_ok {
            return sw(SECURITY);
        }
        let (Some(id), Some(content)) = (tlv::find(&a.data, 0x5c), tlv::find(&a.data, 0x53)) else {
            return sw(BAD_DATA);
        };
        let hex = base16ct::lower::encode_string(id);
        if content.is_empty() {
            self.p.objects.remove(&hex);
        } else {
            let value = base16ct::lower::encode_string(content);
            self.p.objects.insert(hex, value);
        }
        self.saved(sw(OK))
    }
}
