//! Serial numbers come from the token's RNG and never repeat: 100,000 drawn through the same
//! path certificates use (`build::random_serial` with a token signer), in this process, from a
//! fresh SoftHSM2 token.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

use p11ca::cfssl::csr::KeySpec;
use p11ca::token::key;
use p11ca::token::signer::{SignMech, TokenSigner};
use p11ca::token::{Module, Pkcs11Uri};
use p11ca::x509::alg::{KeyAlg, SigAlg};
use p11ca::x509::build::random_serial;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

#[test]
fn hundred_thousand_serials_from_the_token_never_repeat() {
    assert!(
        Path::new(MODULE).exists(),
        "SoftHSM2 is not installed: run ci/setup"
    );
    let dir = tempfile::tempdir().unwrap();
    let hsm = dir.path().join("hsm");
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("softhsm/new-token.sh"))
        .args([hsm.to_str().unwrap(), "serials", "1234", "12345678"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The only place this process sets the variable, before the module is loaded.
    // SAFETY: no other thread of this test binary reads the environment concurrently.
    unsafe { std::env::set_var("SOFTHSM2_CONF", hsm.join("softhsm2.conf")) };

    let module = Module::load(Path::new(MODULE)).unwrap();
    let mut sel = Pkcs11Uri::default();
    sel.token = Some("serials".into());
    let token = module.select_token(&sel).unwrap();
    let session = module
        .login(&token, &cryptoki::types::AuthPin::from("1234".to_string()))
        .unwrap();
    let k = key::generate(
        &session,
        &token,
        KeySpec::EcP256.into(),
        "serial-test",
        None,
    )
    .unwrap();
    let mech = SignMech::choose(
        &module.mechanisms(token.slot).unwrap(),
        SigAlg::for_key(KeyAlg::EcP256),
        "serials",
    )
    .unwrap();
    let signer = TokenSigner::new(&session, k.private, k.spki.clone(), mech).unwrap();

    let n = 100_000;
    let mut seen: HashSet<Vec<u8>> = HashSet::with_capacity(n);
    for _ in 0..n {
        let s = random_serial(&signer).unwrap();
        let b = s.as_bytes().to_vec();
        assert_eq!(b.len(), 20, "always 20 octets");
        assert!(b[0] & 0x80 == 0 && b[0] != 0, "positive, minimal encoding");
        assert!(seen.insert(b), "serial repeated after {} draws", seen.len());
    }
    assert_eq!(seen.len(), n);
}
