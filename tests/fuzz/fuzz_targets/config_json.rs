//! `SigningConfig::from_json`, then every profile as signing uses it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p11ca::cfssl::config::SigningConfig;

fuzz_target!(|data: &[u8]| {
    let mut notices = Vec::new();
    let Ok(c) = SigningConfig::from_json(data, "ca-config.json", &mut notices) else {
        return;
    };
    let names = c.profile_names();
    for name in names
        .iter()
        .map(|n| Some(n.as_str()))
        .chain([None, Some("nope")])
    {
        if let Ok(p) = c.profile(name) {
            let _ = p.extensions();
            let _ = p.allows(
                "node.example.com",
                &["a.example.com".into(), "10.0.0.1".into()],
            );
        }
    }
});
