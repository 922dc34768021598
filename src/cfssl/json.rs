//! Decoding cfssl's JSON files the way Go's `encoding/json` does.
//!
//! Go matches object keys to struct fields case-insensitively, ignores unknown keys and treats
//! `null` as "leave the default". We get the same by folding keys to lower case (except inside
//! fields that are real maps, such as `profiles`, whose keys are names) and dropping nulls, then
//! decoding with serde. Errors name the file and, for type errors, the field path.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Parse `bytes` from the file called `file` into `T`.
///
/// `map_fields` names the (lower-case) fields whose object keys are data, not field names;
/// their keys are kept as written while their values are still folded.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], file: &str, map_fields: &[&str]) -> Result<T> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Eof => "unexpected end of JSON",
            _ => "malformed JSON",
        };
        // serde_json's text ends with " at line L column C"; say it our way once.
        let text = e.to_string();
        let text = text.split(" at line ").next().unwrap_or(&text).to_string();
        Error::input(format!(
            "{file}: {what} at line {} column {}: {text}",
            e.line(),
            e.column()
        ))
    })?;
    if !value.is_object() {
        return Err(Error::input(format!(
            "{file}: expected a JSON object at the top level, found {}",
            kind_of(&value)
        )));
    }
    let folded = fold(value, false, map_fields);
    serde_path_to_error::deserialize(folded).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if path == "." {
            Error::input(format!("{file}: {inner}"))
        } else {
            Error::input(format!("{file}: field \"{path}\": {inner}"))
        }
    })
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Lower-case object keys (unless `keep_keys`), drop null members, recurse.
fn fold(v: Value, keep_keys: bool, map_fields: &[&str]) -> Value {
    match v {
        Value::Object(obj) => {
            let mut out = Map::new();
            for (k, v) in obj {
                if v.is_null() {
                    continue;
                }
                let key = if keep_keys { k } else { k.to_lowercase() };
                let child_is_map = !keep_keys && map_fields.contains(&key.as_str());
                // Later duplicates win, as in Go.
                out.insert(key, fold(v, child_is_map, map_fields));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|i| fold(i, false, map_fields))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Deserialize, Debug)]
    struct Inner {
        #[serde(default)]
        size: u32,
    }
    #[derive(Deserialize, Debug)]
    struct Outer {
        #[serde(default)]
        cn: String,
        #[serde(default)]
        key: Option<Inner>,
        #[serde(default)]
        profiles: BTreeMap<String, Inner>,
    }

    #[test]
    fn keys_are_case_insensitive_and_maps_keep_theirs() {
        let o: Outer = decode(
            br#"{"Cn":"x","KEY":{"Size":3},"bogus":1,"profiles":{"Kube":{"SIZE":4}}}"#,
            "f.json",
            &["profiles"],
        )
        .unwrap();
        assert_eq!(o.cn, "x");
        assert_eq!(o.key.unwrap().size, 3);
        assert_eq!(o.profiles["Kube"].size, 4);
    }

    #[test]
    fn null_means_default() {
        let o: Outer = decode(br#"{"CN":null,"key":null}"#, "f.json", &[]).unwrap();
        assert_eq!(o.cn, "");
        assert!(o.key.is_none());
    }

    #[test]
    fn errors_name_file_position_and_field() {
        let e = decode::<Outer>(b"{\n  \"CN\": \"x\",\n}", "ca-csr.json", &[]).unwrap_err();
        assert_eq!(e.kind(), crate::error::Kind::Input);
        assert!(
            e.message()
                .starts_with("ca-csr.json: malformed JSON at line 3 column 1"),
            "{e}"
        );
        let e = decode::<Outer>(br#"{"key":{"size":"2048"}}"#, "ca-csr.json", &[]).unwrap_err();
        assert!(e.message().contains("field \"key.size\""), "{e}");
        let e = decode::<Outer>(b"[1]", "ca-csr.json", &[]).unwrap_err();
        assert!(e.message().contains("expected a JSON object"), "{e}");
        let e = decode::<Outer>(b"{\"cn\":", "ca-csr.json", &[]).unwrap_err();
        assert!(e.message().contains("unexpected end of JSON"), "{e}");
    }
}
