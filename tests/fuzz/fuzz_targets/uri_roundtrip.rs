//! `Pkcs11Uri::parse` and Display: what parses prints as a URI that parses to the same fields
//! and prints identically (a pin-value is printed as `***` on purpose).
#![no_main]

use libfuzzer_sys::fuzz_target;
use p11ca::token::uri::Pkcs11Uri;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mut u) = Pkcs11Uri::parse(s) else {
        return;
    };
    let once = u.to_string();
    let mut again = Pkcs11Uri::parse(&once).expect("a printed URI parses");
    assert_eq!(again.to_string(), once, "{s:?}");
    assert_eq!(u.pin_value.is_some(), again.pin_value.is_some());
    u.pin_value = None;
    again.pin_value = None;
    assert_eq!(u, again, "{s:?}");
});
