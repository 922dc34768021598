//! Every bad input: the documented exit code, one clear error line naming the file, field or
//! URI, nothing on stdout, no file written, and the token's objects unchanged.

use crate::util::{PIN, Token, run};

/// Run `gencert -initca` on `json` and check the failure contract.
fn refuse(t: &Token, json: &str, code: i32, needle: &str) {
    t.write("bad.json", json);
    let before = t.object_count();
    t.run(&["gencert", "-initca", "bad.json"])
        .fails(code, needle);
    assert_eq!(t.object_count(), before, "token changed for {json}");
    assert_eq!(t.files(), ["bad.json"], "files written for {json}");
}

#[test]
fn malformed_json_names_line_and_column() {
    let t = Token::new("bad");
    refuse(
        &t,
        "{\n  \"CN\": \"x\",\n}",
        1,
        "bad.json: malformed JSON at line 3 column 1",
    );
    refuse(&t, "{\"CN\": ", 1, "bad.json: unexpected end of JSON");
    refuse(&t, "[]", 1, "bad.json: expected a JSON object");
}

#[test]
fn wrong_types_name_the_field() {
    let t = Token::new("bad");
    refuse(
        &t,
        r#"{"CN": 5}"#,
        1,
        "bad.json: field \"cn\": invalid type: integer `5`",
    );
    refuse(
        &t,
        r#"{"CN":"x","key":{"algo":"rsa","size":"2048"}}"#,
        1,
        "field \"key.size\"",
    );
    refuse(&t, r#"{"CN":"x","names":{"C":"US"}}"#, 1, "field \"names\"");
    refuse(
        &t,
        r#"{"CN":"x","hosts":"a.example"}"#,
        1,
        "field \"hosts\"",
    );
}

#[test]
fn empty_subject() {
    let t = Token::new("bad");
    refuse(
        &t,
        r#"{"key":{"algo":"rsa","size":2048}}"#,
        1,
        "missing subject information",
    );
    refuse(
        &t,
        r#"{"names":[{"C":"","O":""}]}"#,
        1,
        "missing subject information",
    );
}

#[test]
fn unsupported_keys() {
    let t = Token::new("bad");
    refuse(
        &t,
        r#"{"CN":"x","key":{"algo":"dsa","size":2048}}"#,
        1,
        "key.algo \"dsa\": invalid algorithm",
    );
    refuse(
        &t,
        r#"{"CN":"x","key":{"algo":"rsa","size":1024}}"#,
        1,
        "key.size 1024: RSA key is too weak",
    );
    refuse(
        &t,
        r#"{"CN":"x","key":{"algo":"rsa"}}"#,
        1,
        "key.size 256: RSA key is too weak",
    );
    refuse(
        &t,
        r#"{"CN":"x","key":{"algo":"rsa","size":9000}}"#,
        1,
        "too large",
    );
    refuse(
        &t,
        r#"{"CN":"x","key":{"algo":"ecdsa","size":521}}"#,
        1,
        "P-521 is not supported",
    );
    refuse(
        &t,
        r#"{"CN":"x","key":{"algo":"ecdsa","size":255}}"#,
        1,
        "invalid ECDSA curve size",
    );
}

#[test]
fn bad_durations() {
    let t = Token::new("bad");
    refuse(
        &t,
        r#"{"CN":"x","ca":{"expiry":"1y"}}"#,
        1,
        "field \"ca.expiry\": invalid duration \"1y\": unknown unit \"y\"",
    );
    refuse(
        &t,
        r#"{"CN":"x","ca":{"expiry":"365d"}}"#,
        1,
        "unknown unit \"d\"",
    );
    refuse(
        &t,
        r#"{"CN":"x","ca":{"expiry":"3600"}}"#,
        1,
        "missing unit",
    );
    refuse(&t, r#"{"CN":"x","ca":{"expiry":"-1h"}}"#, 1, "negative");
    refuse(
        &t,
        r#"{"CN":"x","ca":{"backdate":"2y"}}"#,
        1,
        "field \"ca.backdate\"",
    );
    refuse(
        &t,
        r#"{"CN":"x","ca":{"expiry":"1h","backdate":"2h"}}"#,
        3,
        "already be expired",
    );
}

#[test]
fn bad_hosts_and_oids() {
    let t = Token::new("bad");
    refuse(
        &t,
        r#"{"CN":"x","hosts":["a",""]}"#,
        1,
        "hosts: entry 2 is empty",
    );
    refuse(
        &t,
        r#"{"CN":"x","names":[{"OID":{"abc":"v"}}]}"#,
        1,
        "invalid OID \"abc\"",
    );
}

#[test]
fn missing_input_file() {
    let t = Token::new("bad");
    t.run(&["gencert", "-initca", "nope.json"])
        .fails(1, "nope.json: cannot read");
}

#[test]
fn module_that_is_not_a_pkcs11_module() {
    let t = Token::new("bad");
    t.write("ca.json", r#"{"CN":"x"}"#);
    t.write("fake.so", "not a library");
    let fake = t.path("fake.so");
    let r = run(
        t.p11ca().args([
            "--module",
            fake.to_str().unwrap(),
            "gencert",
            "-initca",
            "ca.json",
        ]),
        None,
    );
    r.fails(2, "cannot load PKCS#11 module");
    assert!(r.stderr.contains("fake.so"));
    let r = run(
        t.p11ca()
            .env("P11CA_MODULE", "/no/such/module.so")
            .args(["key", "list"]),
        None,
    );
    r.fails(2, "/no/such/module.so does not exist");
}

#[test]
fn token_label_not_found_or_ambiguous() {
    let t = Token::softhsm("bad");
    t.write("ca.json", r#"{"CN":"x"}"#);
    let r = run(
        t.p11ca()
            .env("P11CA_TOKEN", "other")
            .args(["gencert", "-initca", "ca.json"]),
        None,
    );
    r.fails(2, "no token matches pkcs11:token=other");
    assert!(
        r.stderr.contains("\"bad\" (serial "),
        "lists the tokens that exist: {}",
        r.stderr
    );
    t.add_token("bad");
    t.run(&["gencert", "-initca", "ca.json"])
        .fails(2, "2 tokens match pkcs11:token=bad");
}

#[test]
fn wrong_pin_is_tried_once_and_not_echoed() {
    // Exact stderr: tpm2-pkcs11 adds its own lines; backends:: checks the other back-ends.
    let t = Token::softhsm("bad");
    t.write("ca.json", r#"{"CN":"x"}"#);
    let r = run(
        t.p11ca()
            .env("P11CA_PIN", "99999")
            .args(["gencert", "-initca", "ca.json"]),
        None,
    );
    r.fails(2, "wrong PIN for token \"bad\"");
    assert!(!r.stderr.contains("99999"), "PIN leaked: {}", r.stderr);
    // One failed login, not several: the token is not locked and the right PIN still works.
    t.run(&["gencert", "-initca", "ca.json"]).ok();
}

#[test]
fn missing_pin_in_a_non_interactive_run() {
    let t = Token::new("bad");
    t.write("ca.json", r#"{"CN":"x"}"#);
    run(
        t.p11ca()
            .env_remove("P11CA_PIN")
            .args(["gencert", "-initca", "ca.json"]),
        None,
    )
    .fails(1, "no PIN for token \"bad\": set P11CA_PIN");
}

#[test]
fn pin_sources() {
    let t = Token::new("bad");
    t.write("ca.json", r#"{"CN":"x"}"#);
    run(
        t.p11ca().env_remove("P11CA_PIN").args([
            "--pin-source",
            "file:/no/pin",
            "gencert",
            "-initca",
            "ca.json",
        ]),
        None,
    )
    .fails(1, "file:/no/pin: cannot read the PIN file");
    t.write("pin", &format!("{PIN}\n"));
    let r = run(
        t.p11ca().env_remove("P11CA_PIN").args([
            "--pin-source",
            "file:pin",
            "gencert",
            "-initca",
            "ca.json",
        ]),
        None,
    );
    r.ok();
    assert!(
        r.stderr
            .contains("p11ca: warning: PIN file pin is readable by group or others"),
        "{}",
        r.stderr
    );
    let r = run(
        t.p11ca().env_remove("P11CA_PIN").env("MY_PIN", PIN).args([
            "--pin-source",
            "env:MY_PIN",
            "key",
            "list",
        ]),
        None,
    );
    r.ok();
}

#[test]
fn no_pin_flag_exists() {
    let t = Token::new("bad");
    let r = t.run(&["--pin", "1234", "key", "list"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("unexpected argument '--pin'"),
        "{}",
        r.stderr
    );
}

#[test]
fn bad_key_uris() {
    let t = Token::new("bad");
    t.run(&["key", "show", "pkcs11:object=nope"]).fails(
        2,
        "no private key in token \"bad\" matches pkcs11:object=nope",
    );
    t.run(&["key", "show", "pkcs11:tokn=x"])
        .fails(1, "unknown path attribute \"tokn\"");
    t.run(&[
        "key",
        "show",
        "pkcs11:token=bad?pin-value=4321&pin-source=file:/x",
    ])
    .fails(1, "not both");
    let r = t.run(&["key", "show", "pkcs11:object=x?pin-value=4321"]);
    assert!(!r.stderr.contains("4321"), "{}", r.stderr);
}
