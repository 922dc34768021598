//! RFC 7512 `pkcs11:` URIs: parsing, matching fields, and printing.
//!
//! Values are byte strings, percent-decoded on parse. On print, `id` is percent-encoded byte by
//! byte (as p11-kit does) and other values only where RFC 7512 requires it, so a printed URI
//! parses back to the same value and prints identically again.

use std::fmt;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Characters left as they are in a path value: unreserved plus pk11-path-res-avail.
const PATH_KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b':')
    .remove(b'@')
    .remove(b'!')
    .remove(b'$')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b'=')
    .remove(b'&');
/// Characters left as they are in a query value: unreserved plus pk11-query-res-avail.
const QUERY_KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b':')
    .remove(b'@')
    .remove(b'!')
    .remove(b'$')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b'=')
    .remove(b'/')
    .remove(b'?')
    .remove(b'|');

/// The object type of an RFC 7512 `type` attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectType {
    /// A public key.
    Public,
    /// A private key.
    Private,
    /// A certificate.
    Cert,
    /// A secret key.
    SecretKey,
    /// A data object.
    Data,
}

impl ObjectType {
    /// The RFC 7512 spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectType::Public => "public",
            ObjectType::Private => "private",
            ObjectType::Cert => "cert",
            ObjectType::SecretKey => "secret-key",
            ObjectType::Data => "data",
        }
    }
}

/// A parsed `pkcs11:` URI.
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Pkcs11Uri {
    /// Token label.
    pub token: Option<String>,
    /// Token manufacturer ID.
    pub manufacturer: Option<String>,
    /// Token serial number.
    pub serial: Option<String>,
    /// Token model.
    pub model: Option<String>,
    /// Slot description.
    pub slot_description: Option<String>,
    /// Slot manufacturer.
    pub slot_manufacturer: Option<String>,
    /// Slot ID (not stable across SoftHSM runs; prefer token/serial).
    pub slot_id: Option<u64>,
    /// Library manufacturer.
    pub library_manufacturer: Option<String>,
    /// Library description.
    pub library_description: Option<String>,
    /// Library version.
    pub library_version: Option<String>,
    /// Object label (CKA_LABEL).
    pub object: Option<String>,
    /// Object ID (CKA_ID), raw bytes.
    pub id: Option<Vec<u8>>,
    /// Object type.
    pub object_type: Option<ObjectType>,
    /// Where to read the PIN from (`file:...`, `env:...`).
    pub pin_source: Option<String>,
    /// The PIN itself (discouraged; printed only as `***`).
    pub pin_value: Option<Zeroizing<String>>,
    /// Path of the PKCS#11 module.
    pub module_path: Option<String>,
    /// Name of the PKCS#11 module.
    pub module_name: Option<String>,
}

impl fmt::Debug for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Display never shows pin-value; Debug must not either.
        write!(f, "Pkcs11Uri({self})")
    }
}

fn decode(raw: &str, name: &str, uri: &str) -> Result<Vec<u8>> {
    // Reject a '%' that is not followed by two hex digits instead of passing it through.
    let b = raw.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let ok = b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            if !ok {
                return Err(Error::input(format!(
                    "{}: attribute \"{name}\" has a bad percent-encoding; write bytes as %XX",
                    redact(uri)
                )));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(percent_decode_str(raw).collect())
}

fn text(bytes: Vec<u8>, name: &str, uri: &str) -> Result<String> {
    String::from_utf8(bytes).map_err(|_| {
        Error::input(format!(
            "{}: attribute \"{name}\" is not valid UTF-8",
            redact(uri)
        ))
    })
}

/// The URI with any pin-value replaced, for error messages.
pub fn redact(uri: &str) -> String {
    match uri.find("pin-value=") {
        Some(i) => {
            let end = uri[i..].find('&').map_or(uri.len(), |e| i + e);
            format!("{}pin-value=***{}", &uri[..i], &uri[end..])
        }
        None => uri.to_string(),
    }
}

impl Pkcs11Uri {
    /// Parse a `pkcs11:` URI. Unknown attributes (other than `x-…`) and duplicates are errors.
    pub fn parse(uri: &str) -> Result<Self> {
        let Some(rest) = uri.strip_prefix("pkcs11:") else {
            return Err(Error::input(format!(
                "\"{}\" is not a PKCS#11 URI; it must start with \"pkcs11:\"",
                redact(uri)
            )));
        };
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let mut out = Self::default();
        let mut seen: Vec<String> = Vec::new();
        let parts = path.split(';').map(|p| (p, true)).chain(
            query
                .into_iter()
                .flat_map(|q| q.split('&'))
                .map(|p| (p, false)),
        );
        for (attr, in_path) in parts {
            if attr.is_empty() {
                continue;
            }
            let Some((name, raw)) = attr.split_once('=') else {
                return Err(Error::input(format!(
                    "{}: attribute \"{attr}\" has no value; write name=value",
                    redact(uri)
                )));
            };
            if seen.iter().any(|s| s == name) {
                return Err(Error::input(format!(
                    "{}: attribute \"{name}\" appears twice",
                    redact(uri)
                )));
            }
            seen.push(name.to_string());
            out.set(name, in_path, decode(raw, name, uri)?, uri)?;
        }
        if out.pin_source.is_some() && out.pin_value.is_some() {
            return Err(Error::input(format!(
                "{}: give either pin-source or pin-value, not both",
                redact(uri)
            )));
        }
        Ok(out)
    }

    /// Set attribute `name` (of the path, or of the query) to its decoded value `val`.
    fn set(&mut self, name: &str, in_path: bool, val: Vec<u8>, uri: &str) -> Result<()> {
        let s = |v: Vec<u8>| text(v, name, uri);
        match (name, in_path) {
            ("token", true) => self.token = Some(s(val)?),
            ("manufacturer", true) => self.manufacturer = Some(s(val)?),
            ("serial", true) => self.serial = Some(s(val)?),
            ("model", true) => self.model = Some(s(val)?),
            ("slot-description", true) => self.slot_description = Some(s(val)?),
            ("slot-manufacturer", true) => self.slot_manufacturer = Some(s(val)?),
            ("library-manufacturer", true) => self.library_manufacturer = Some(s(val)?),
            ("library-description", true) => self.library_description = Some(s(val)?),
            ("library-version", true) => self.library_version = Some(s(val)?),
            ("slot-id", true) => {
                let v = s(val)?;
                self.slot_id = Some(v.parse().map_err(|_| {
                    Error::input(format!("{}: slot-id \"{v}\" is not a number", redact(uri)))
                })?);
            }
            ("object", true) => self.object = Some(s(val)?),
            ("id", true) => self.id = Some(val),
            ("type", true) => {
                self.object_type = Some(match s(val)?.as_str() {
                    "public" => ObjectType::Public,
                    "private" => ObjectType::Private,
                    "cert" => ObjectType::Cert,
                    "secret-key" => ObjectType::SecretKey,
                    "data" => ObjectType::Data,
                    other => {
                        return Err(Error::input(format!(
                            "{}: type \"{other}\" is not one of public, private, cert, secret-key, data",
                            redact(uri)
                        )));
                    }
                })
            }
            ("pin-source", false) => self.pin_source = Some(s(val)?),
            ("pin-value", false) => self.pin_value = Some(Zeroizing::new(s(val)?)),
            ("module-path", false) => self.module_path = Some(s(val)?),
            ("module-name", false) => self.module_name = Some(s(val)?),
            (n, _) if n.starts_with("x-") => {}
            (n, p) => {
                let where_ = if p { "path" } else { "query" };
                return Err(Error::input(format!(
                    "{}: unknown {where_} attribute \"{n}\" (RFC 7512 path: token, serial, model, manufacturer, slot-id, object, id, type; query: pin-source, pin-value, module-path, module-name)",
                    redact(uri)
                )));
            }
        }
        Ok(())
    }

    /// Check that this URI, read from `source` (a `-ca-key` file, flag or variable), is a key
    /// handle and nothing more. A handle file is copied to every machine that signs, so whoever
    /// can write it must not choose the code p11ca loads (`module-path`, `module-name`) or where
    /// the PIN goes and comes from (`pin-source`, `pin-value`): those are the operator's, given
    /// with `--module`/`P11CA_MODULE` and `--pin-source`/`P11CA_PIN`.
    pub fn check_key_handle(&self, source: &str) -> Result<()> {
        let carried: Vec<&str> = [
            ("module-path", self.module_path.is_some()),
            ("module-name", self.module_name.is_some()),
            ("pin-source", self.pin_source.is_some()),
            ("pin-value", self.pin_value.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, present)| present.then_some(name))
        .collect();
        if carried.is_empty() {
            return Ok(());
        }
        Err(Error::input(format!(
            "{source}: a key handle names a token and a key, nothing more, but this one carries {}; remove it, and give the module with --module or P11CA_MODULE and the PIN with --pin-source or P11CA_PIN",
            carried.join(", ")
        )))
    }

    /// The operator's own token selector (`--token` / `P11CA_TOKEN`): a label, or a URI that
    /// may also name the module and the PIN source (the operator's own command line or
    /// environment, unlike a key handle). Nothing given selects every token.
    pub fn operator(token: Option<&str>) -> Result<Self> {
        Ok(match token {
            Some(t) if t.starts_with("pkcs11:") => {
                Self::parse(t).map_err(|e| e.context("--token"))?
            }
            Some(t) if !t.is_empty() => Self {
                token: Some(t.to_string()),
                ..Self::default()
            },
            _ => Self::default(),
        })
    }

    /// The token selector for signing with the key `handle`, given the operator's own selector
    /// (`--token`, a label or a URI, which may also name the module and the PIN source). The
    /// handle's token attributes must agree with the operator's: a contradiction is an error,
    /// never silently resolved in favour of either.
    pub fn selector_for_key(handle: &Pkcs11Uri, operator: Pkcs11Uri) -> Result<Pkcs11Uri> {
        handle.check_key_handle("the key handle")?;
        let mut sel = operator;
        let pairs = [
            ("token", &handle.token, &mut sel.token),
            ("serial", &handle.serial, &mut sel.serial),
            ("model", &handle.model, &mut sel.model),
            ("manufacturer", &handle.manufacturer, &mut sel.manufacturer),
        ];
        for (name, from_handle, from_operator) in pairs {
            match (from_handle, from_operator.as_deref()) {
                (Some(h), Some(o)) if h != o => {
                    return Err(Error::input(format!(
                        "the key handle names {name} \"{h}\" but --token (or P11CA_TOKEN) names {name} \"{o}\"; make them agree or unset P11CA_TOKEN"
                    )));
                }
                (Some(h), _) => *from_operator = Some(h.clone()),
                (None, _) => {}
            }
        }
        match (handle.slot_id, sel.slot_id) {
            (Some(h), Some(o)) if h != o => Err(Error::input(format!(
                "the key handle names slot-id {h} but --token (or P11CA_TOKEN) names slot-id {o}; make them agree"
            ))),
            (Some(h), _) => {
                sel.slot_id = Some(h);
                Ok(sel)
            }
            (None, _) => Ok(sel),
        }
    }

    /// Whether any attribute selecting a token is present.
    pub fn selects_token(&self) -> bool {
        self.token.is_some()
            || self.serial.is_some()
            || self.model.is_some()
            || self.manufacturer.is_some()
            || self.slot_id.is_some()
    }

    /// The URI of a key or certificate object (no PIN, no module path): what `json` writes
    /// into `NAME-key.uri`.
    pub fn for_object(token: &str, id: &[u8], label: &str, ty: ObjectType) -> Self {
        Self {
            token: Some(token.to_string()),
            id: Some(id.to_vec()),
            object: Some(label.to_string()),
            object_type: Some(ty),
            ..Self::default()
        }
    }
}

impl fmt::Display for Pkcs11Uri {
    /// Prints the URI; a pin-value is shown as `***` so a URI can be logged safely.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut path: Vec<String> = Vec::new();
        let mut put = |name: &str, v: &Option<String>| {
            if let Some(v) = v {
                path.push(format!("{name}={}", utf8_percent_encode(v, PATH_KEEP)));
            }
        };
        put("library-manufacturer", &self.library_manufacturer);
        put("library-description", &self.library_description);
        put("library-version", &self.library_version);
        put("slot-manufacturer", &self.slot_manufacturer);
        put("slot-description", &self.slot_description);
        put("slot-id", &self.slot_id.map(|s| s.to_string()));
        put("manufacturer", &self.manufacturer);
        put("model", &self.model);
        put("serial", &self.serial);
        put("token", &self.token);
        let id = self
            .id
            .as_ref()
            .map(|id| id.iter().map(|b| format!("%{b:02x}")).collect::<String>());
        put("object", &self.object);
        put("type", &self.object_type.map(|t| t.as_str().to_string()));
        if let Some(enc) = id {
            // id goes before object: insert it after the token attributes.
            let at = path.len()
                - usize::from(self.object.is_some())
                - usize::from(self.object_type.is_some());
            path.insert(at, format!("id={enc}"));
        }
        let mut query: Vec<String> = Vec::new();
        let mut putq = |name: &str, v: Option<&str>| {
            if let Some(v) = v {
                query.push(format!("{name}={}", utf8_percent_encode(v, QUERY_KEEP)));
            }
        };
        putq("module-name", self.module_name.as_deref());
        putq("module-path", self.module_path.as_deref());
        putq("pin-source", self.pin_source.as_deref());
        if self.pin_value.is_some() {
            query.push("pin-value=***".into());
        }
        write!(f, "pkcs11:{}", path.join(";"))?;
        if !query.is_empty() {
            write!(f, "?{}", query.join("&"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        let u = Pkcs11Uri::parse(
            "pkcs11:token=k8s%20CA;id=%01%ab;object=ca;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/pin",
        )
        .unwrap();
        assert_eq!(u.token.as_deref(), Some("k8s CA"));
        assert_eq!(u.id.as_deref(), Some(&[1u8, 0xab][..]));
        assert_eq!(u.object_type, Some(ObjectType::Private));
        assert_eq!(u.pin_source.as_deref(), Some("file:/run/pin"));
        assert_eq!(
            u.to_string(),
            "pkcs11:token=k8s%20CA;id=%01%ab;object=ca;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/pin"
        );
    }

    #[test]
    fn round_trip_is_stable() {
        for s in [
            "pkcs11:",
            "pkcs11:token=a;b=c",
            "pkcs11:object=%3b%3f%23;token=x%2Fy",
            "pkcs11:id=abc;slot-id=7;serial=1234&5",
            "pkcs11:model=a?module-name=softhsm2&x-foo=1",
        ] {
            let Ok(u) = Pkcs11Uri::parse(s) else { continue };
            let once = u.to_string();
            let twice = Pkcs11Uri::parse(&once).unwrap().to_string();
            assert_eq!(once, twice, "{s}");
        }
    }

    #[test]
    fn errors() {
        for (s, want) in [
            ("token=x", "must start with"),
            ("pkcs11:token=a;token=b", "appears twice"),
            ("pkcs11:tokn=a", "unknown path attribute \"tokn\""),
            ("pkcs11:token=a?pin-value=1&pin-source=file:/x", "not both"),
            ("pkcs11:id=%zz", "percent-encoding"),
            ("pkcs11:id=%1", "percent-encoding"),
            ("pkcs11:type=key", "type \"key\""),
            ("pkcs11:slot-id=x", "not a number"),
            ("pkcs11:token", "no value"),
        ] {
            let e = Pkcs11Uri::parse(s).unwrap_err();
            assert!(e.message().contains(want), "{s}: {e}");
        }
    }

    #[test]
    fn pin_value_never_printed() {
        let u = Pkcs11Uri::parse("pkcs11:token=a?pin-value=secret123").unwrap();
        assert!(!u.to_string().contains("secret123"));
        assert!(!format!("{u:?}").contains("secret123"));
        let e = Pkcs11Uri::parse("pkcs11:tokn=a?pin-value=secret123").unwrap_err();
        assert!(!e.message().contains("secret123"), "{e}");
    }
}
