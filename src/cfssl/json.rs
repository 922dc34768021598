//! Decoding cfssl's JSON files the way Go's `encoding/json` does.
//!
//! Go matches object keys to struct fields case-insensitively, ignores unknown keys and treats
//! `null` as "leave the default". We get the same by folding keys to lower case (except inside
//! fields that are real maps, such as `profiles`, whose keys are names) and dropping nulls, then
//! decoding with serde. Errors name the file and, for type errors, the field path.

use std::fmt;

use serde::de::{DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Parse `bytes` from the file called `file` into `T`.
///
/// `map_fields` names the (lower-case) fields whose object keys are data, not field names;
/// their keys are kept as written while their values are still folded.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], file: &str, map_fields: &[&str]) -> Result<T> {
    // Folded while parsing, in document order: of two spellings of one key the later wins.
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = Fold {
        keep_keys: false,
        map_fields,
    }
    .deserialize(&mut de)
    .and_then(|v| de.end().map(|()| v));
    let value: Value = parsed.map_err(|e| {
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
    serde_path_to_error::deserialize(value).map_err(|e| {
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

/// Builds a JSON value with object keys lower-cased (unless `keep_keys`) and null members
/// dropped, as the parser reads it, so that later duplicates win as in Go even when their
/// letter case differs (a parsed `Value` has lost the document order).
#[derive(Clone, Copy)]
struct Fold<'a> {
    keep_keys: bool,
    map_fields: &'a [&'a str],
}

impl<'de> DeserializeSeed<'de> for Fold<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Fold<'_> {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_bool<E>(self, v: bool) -> std::result::Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> std::result::Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> std::result::Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> std::result::Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> std::result::Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> std::result::Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> std::result::Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(i) = a.next_element_seed(Fold {
            keep_keys: false,
            ..self
        })? {
            items.push(i);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> std::result::Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(k) = a.next_key::<String>()? {
            let key = if self.keep_keys { k } else { k.to_lowercase() };
            let child_is_map = !self.keep_keys && self.map_fields.contains(&key.as_str());
            let v = a.next_value_seed(Fold {
                keep_keys: child_is_map,
                ..self
            })?;
            // null leaves the earlier value or the default; any other value replaces it.
            if !v.is_null() {
                out.insert(key, v);
            }
        }
        Ok(Value::Object(out))
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
