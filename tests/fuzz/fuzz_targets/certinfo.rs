//! `certinfo::cert_info`: cfssl-certinfo's view of a certificate (PEM or DER).
#![no_main]

use libfuzzer_sys::fuzz_target;
use p11ca::cfssl::certinfo::{cert_info, to_go_json};

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = cert_info(data, "ca.pem") {
        let _ = to_go_json(&info);
    }
});
