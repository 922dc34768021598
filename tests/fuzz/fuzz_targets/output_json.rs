//! `files_from_json` (`p11ca json`): never panics, every error is an input error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p11ca::Kind;
use p11ca::cfssl::output::files_from_json;

fuzz_target!(|data: &[u8]| {
    for bare in [true, false] {
        if let Err(e) = files_from_json(data, "stdin", bare, "out/ca") {
            assert_eq!(e.kind(), Kind::Input);
        }
    }
});
