//! The CSR readers: `request::parse` (PEM or DER, signature checked) and `certinfo::csr_info`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p11ca::cfssl::certinfo::{csr_info, to_go_json};
use p11ca::x509::request;

fuzz_target!(|data: &[u8]| {
    let _ = request::parse(data, "node.csr");
    if let Ok(info) = csr_info(data, "node.csr") {
        let _ = to_go_json(&info);
    }
});
