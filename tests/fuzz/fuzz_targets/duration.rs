//! `GoDuration::parse`: no panic; what parses prints as something that parses to the same
//! seconds; nothing with a day or year unit parses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p11ca::cfssl::duration::GoDuration;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(d) = GoDuration::parse(s) else {
        return;
    };
    assert!(!s.contains(['d', 'y']), "{s:?} parsed");
    let again = GoDuration::parse(&d.to_string()).expect("Display output parses");
    assert_eq!(again.as_secs(), d.as_secs(), "{s:?}");
});
