//! `CsrRequest::from_json` and everything a caller does with the request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p11ca::cfssl::csr::CsrRequest;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = CsrRequest::from_json(data, "csr.json") {
        let _ = r.key_spec("csr.json");
        let _ = r.ca_times("csr.json");
        let _ = r.subject_is_empty();
        if let Some(ca) = &r.ca {
            let _ = ca.path_len();
        }
    }
});
