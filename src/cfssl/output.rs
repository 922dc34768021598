//! cfssl's stdout JSON and our `cfssljson` (`p11ca json`).
//!
//! `gencert` prints one JSON object with alphabetically sorted keys (`cert`, `csr`, `key`,
//! `key_uri`); the real `cfssljson -bare` reads the keys it knows and ignores `key_uri`.
//! `p11ca json -bare NAME` writes the same files as cfssljson plus `NAME-key.uri`, the handle
//! of the key in the token, all atomically; a chain (`bundle`, `root`) goes to
//! `NAME-bundle.pem` and `NAME-root.pem`.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::fsio::{OutputSet, PUBLIC_MODE, SECRET_MODE};
use crate::token::Pkcs11Uri;

/// Render a cfssl-style result object: sorted keys, one line, trailing newline.
pub fn result_json(fields: &BTreeMap<&str, String>) -> String {
    let mut s = serde_json::to_string(fields).unwrap_or_default();
    s.push('\n');
    s
}

/// Which input keys go to which file suffix, and with which mode (cfssljson's table).
const FILES: &[(&[&str], &str, u32)] = &[
    (&["cert", "certificate"], ".pem", PUBLIC_MODE),
    (&["key", "private_key"], "-key.pem", SECRET_MODE),
    (&["csr", "certificate_request"], ".csr", PUBLIC_MODE),
    (&["key_uri"], "-key.uri", PUBLIC_MODE),
];

/// The files `cfssljson [-bare] BASE` would write for `input`, read from `source`.
///
/// Nothing is written here; the caller commits the set (or prints it with `-stdout`).
pub fn files_from_json(input: &[u8], source: &str, bare: bool, base: &str) -> Result<OutputSet> {
    let v: Value = serde_json::from_slice(input).map_err(|e| {
        Error::input(format!(
            "{source}: failed to parse input: {e}; expected the JSON printed by p11ca or cfssl"
        ))
    })?;
    let obj = if bare {
        v
    } else {
        // Without -bare the input is an API envelope {success, result, errors, messages}.
        let Some(env) = v.as_object() else {
            return Err(Error::input(format!("{source}: expected a JSON object")));
        };
        if env.get("success").and_then(Value::as_bool) == Some(false) {
            let msgs: Vec<String> = env
                .get("errors")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|e| {
                            e.get("message")
                                .and_then(Value::as_str)
                                .unwrap_or("?")
                                .to_string()
                        })
                        .collect()
                })
                .unwrap_or_default();
            return Err(Error::input(format!(
                "{source}: request failed: {}",
                msgs.join("; ")
            )));
        }
        match env.get("result") {
            Some(r) if r.is_object() => r.clone(),
            _ => {
                return Err(Error::input(format!(
                    "{source}: no \"result\" object; for the output of gencert/sign use -bare"
                )));
            }
        }
    };
    let Some(obj) = obj.as_object() else {
        return Err(Error::input(format!("{source}: expected a JSON object")));
    };
    let mut set = OutputSet::new();
    for (keys, suffix, mode) in FILES {
        for key in *keys {
            match obj.get(*key) {
                None | Some(Value::Null) => continue,
                Some(Value::String(s)) if s.is_empty() => {}
                Some(Value::String(s)) => {
                    if *key == "key_uri" {
                        check_key_uri(s, source)?;
                    }
                    set.add(format!("{base}{suffix}"), s.as_bytes().to_vec(), *mode);
                }
                Some(_) => {
                    return Err(Error::input(format!(
                        "{source}: field \"{key}\" must be a string; nothing was written"
                    )));
                }
            }
            break;
        }
    }
    bundle_files(obj, source, base, &mut set)?;
    if set.paths().next().is_none() {
        return Err(Error::input(format!(
            "{source}: no certificate, CSR, key or key_uri in the input; nothing to write"
        )));
    }
    Ok(set)
}

/// The chain files. cfssl 1.6's form, a `bundle` object `{bundle, root}` (in `result`, or the
/// result itself): `NAME-bundle.pem` = bundle + "\n" + root, and `NAME-root.pem`. p11ca's and
/// cfssl 1.2's form, top-level strings: `bundle` (certificate and intermediates) verbatim to
/// `NAME-bundle.pem`, `root` to `NAME-root.pem`.
fn bundle_files(
    obj: &serde_json::Map<String, Value>,
    source: &str,
    base: &str,
    set: &mut OutputSet,
) -> Result<()> {
    let nested = obj.get("bundle").filter(|v| v.is_object()).or_else(|| {
        obj.get("result")
            .and_then(|r| r.get("bundle"))
            .filter(|v| v.is_object())
    });
    if let Some(b) = nested {
        let part = |k: &str| {
            b.get(k).and_then(Value::as_str).ok_or_else(|| {
                Error::input(format!(
                    "{source}: the \"bundle\" object has no string \"{k}\"; nothing was written"
                ))
            })
        };
        let (chain, root) = (part("bundle")?, part("root")?);
        set.add(
            format!("{base}-bundle.pem"),
            format!("{chain}\n{root}").into_bytes(),
            PUBLIC_MODE,
        );
        set.add(
            format!("{base}-root.pem"),
            root.as_bytes().to_vec(),
            PUBLIC_MODE,
        );
        return Ok(());
    }
    for (key, suffix) in [("bundle", "-bundle.pem"), ("root", "-root.pem")] {
        match obj.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.is_empty() => {}
            Some(Value::String(s)) => set.add(
                format!("{base}{suffix}"),
                s.as_bytes().to_vec(),
                PUBLIC_MODE,
            ),
            Some(_) => {
                return Err(Error::input(format!(
                    "{source}: field \"{key}\" must be a string; nothing was written"
                )));
            }
        }
    }
    Ok(())
}

/// A `key_uri` is written only if it is a key handle and nothing more: the file is copied to
/// every signing machine, and a module path or PIN source in it would be obeyed by whoever
/// reads it next (see [`Pkcs11Uri::check_key_handle`]).
fn check_key_uri(text: &str, source: &str) -> Result<()> {
    let field = format!("{source}: field \"key_uri\"");
    Pkcs11Uri::parse(text.trim())
        .map_err(|e| e.context(&field))?
        .check_key_handle(&field)
}

/// Base name check: refuse names that would write outside the intended folder by surprise.
pub fn check_base(base: &str) -> Result<()> {
    if base.is_empty() || base.ends_with('/') || Path::new(base).file_name().is_none() {
        return Err(Error::input(format!(
            "output name \"{base}\" is not a file base name such as \"ca\" or \"out/ca\""
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_keys() {
        let mut m = BTreeMap::new();
        m.insert("key_uri", "pkcs11:token=t;object=x".to_string());
        m.insert("csr", "C".to_string());
        m.insert("cert", "A".to_string());
        assert_eq!(
            result_json(&m),
            "{\"cert\":\"A\",\"csr\":\"C\",\"key_uri\":\"pkcs11:token=t;object=x\"}\n"
        );
    }

    #[test]
    fn bare_files() {
        let set = files_from_json(
            br#"{"cert":"A","csr":"C","key_uri":"pkcs11:token=t;object=x","bogus":"z","key":""}"#,
            "stdin",
            true,
            "ca",
        )
        .unwrap();
        let p: Vec<_> = set.paths().map(|p| p.display().to_string()).collect();
        assert_eq!(p, ["ca.pem", "ca.csr", "ca-key.uri"]);
    }

    #[test]
    fn envelope_and_errors() {
        let set = files_from_json(
            br#"{"success":true,"result":{"certificate":"A"}}"#,
            "-",
            false,
            "n",
        )
        .unwrap();
        assert_eq!(set.paths().count(), 1);
        let e = files_from_json(
            br#"{"success":false,"errors":[{"code":1,"message":"boom"}]}"#,
            "-",
            false,
            "n",
        )
        .unwrap_err();
        assert!(e.message().contains("boom"));
        let e = files_from_json(br#"{"cert":5}"#, "in.json", true, "n").unwrap_err();
        assert!(
            e.message().contains("field \"cert\" must be a string"),
            "{e}"
        );
        let e = files_from_json(b"{", "in.json", true, "n").unwrap_err();
        assert!(
            e.message().starts_with("in.json: failed to parse input"),
            "{e}"
        );
        assert!(files_from_json(b"{}", "in.json", true, "n").is_err());
    }

    #[test]
    fn bundle_files_in_both_forms() {
        let names = |set: &OutputSet| -> Vec<String> {
            set.paths().map(|p| p.display().to_string()).collect()
        };
        let flat = files_from_json(
            br#"{"cert":"A","bundle":"A\nI","root":"R"}"#,
            "-",
            true,
            "n",
        )
        .unwrap();
        assert_eq!(names(&flat), ["n.pem", "n-bundle.pem", "n-root.pem"]);
        let got: Vec<_> = flat.contents().map(|(_, c)| c.to_vec()).collect();
        assert_eq!(got[1], b"A\nI");
        let nested = files_from_json(
            br#"{"cert":"A","result":{"bundle":{"bundle":"A\nI","root":"R"}}}"#,
            "-",
            true,
            "n",
        )
        .unwrap();
        let got: Vec<_> = nested.contents().map(|(_, c)| c.to_vec()).collect();
        assert_eq!(names(&nested), ["n.pem", "n-bundle.pem", "n-root.pem"]);
        assert_eq!(got[1], b"A\nI\nR", "cfssl 1.6: bundle + newline + root");
        let e = files_from_json(
            br#"{"cert":"A","bundle":{"root":"R"}}"#,
            "x.json",
            true,
            "n",
        )
        .unwrap_err();
        assert!(e.message().contains("has no string \"bundle\""), "{e}");
    }
}
