//! `p11ca json`: our cfssljson. Same files, atomic writes, nothing written on bad input.

use std::os::unix::fs::PermissionsExt;

use crate::util::Token;

fn mode(t: &Token, f: &str) -> u32 {
    std::fs::metadata(t.path(f)).unwrap().permissions().mode() & 0o777
}

#[test]
fn writes_cfssljson_files_with_modes() {
    let t = Token::new("j");
    let input =
        r#"{"cert":"CERT","csr":"CSR","key":"KEY","key_uri":"pkcs11:token=j;id=%01","extra":1}"#;
    // A pre-existing world-readable key file does not keep its mode.
    t.write("n-key.pem", "old");
    std::fs::set_permissions(t.path("n-key.pem"), std::fs::Permissions::from_mode(0o644)).unwrap();
    t.run_in(&["json", "-bare", "n"], input.as_bytes()).ok();
    assert_eq!(t.read("n.pem"), "CERT");
    assert_eq!(t.read("n.csr"), "CSR");
    assert_eq!(t.read("n-key.pem"), "KEY");
    assert_eq!(t.read("n-key.uri"), "pkcs11:token=j;id=%01");
    assert_eq!(mode(&t, "n-key.pem"), 0o600);
    assert_eq!(mode(&t, "n.pem"), 0o644);
    assert!(
        !t.files().iter().any(|f| f.contains("p11ca-tmp")),
        "no temp files left"
    );
}

#[test]
fn reads_f_file_and_envelopes() {
    let t = Token::new("j");
    t.write(
        "in.json",
        r#"{"success":true,"result":{"certificate":"C"},"errors":[],"messages":[]}"#,
    );
    t.run(&["json", "-f", "in.json", "out"]).ok();
    assert_eq!(t.read("out.pem"), "C");
    t.write("bad.json", r#"{"success":false,"result":null,"errors":[{"code":400,"message":"Unable to parse sign request"}]}"#);
    t.run(&["json", "-f", "bad.json", "out2"])
        .fails(1, "Unable to parse sign request");
    assert!(!t.path("out2.pem").exists());
}

#[test]
fn bad_json_writes_nothing_and_keeps_old_files() {
    let t = Token::new("j");
    t.write("n.pem", "OLD");
    for (input, needle) in [
        ("{\"cert\": \"x\",", "failed to parse input"),
        (
            r#"{"cert":"NEW","csr":5}"#,
            "field \"csr\" must be a string",
        ),
        (r#"{"unrelated":"x"}"#, "nothing to write"),
    ] {
        t.run_in(&["json", "-bare", "n"], input.as_bytes())
            .fails(1, needle);
        assert_eq!(t.read("n.pem"), "OLD");
    }
    assert_eq!(t.files(), ["n.pem"]);
}

#[test]
fn unwritable_folder_is_a_clear_error() {
    let t = Token::new("j");
    t.run_in(&["json", "-bare", "missing/dir/n"], br#"{"cert":"C"}"#)
        .fails(4, "missing/dir/n.pem");
}

#[test]
fn stdout_mode_prints_contents() {
    let t = Token::new("j");
    let r = t.run_in(&["json", "-bare", "-stdout"], br#"{"cert":"C","csr":"R"}"#);
    r.ok();
    assert_eq!(r.stdout, "C\nR\n");
    assert_eq!(t.files(), Vec::<String>::new());
}
