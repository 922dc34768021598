//! cfssl's certificate request JSON (`ca-csr.json`, `csr.json`).
//!
//! Field names, defaults and key rules follow cfssl (see shared/reference/cfssl-behavior.md §1):
//! keys match case-insensitively, unknown keys are ignored, and a missing `key` means ECDSA P-256.

use serde::Deserialize;

use crate::cfssl::duration::GoDuration;
use crate::cfssl::json;
use crate::error::{Error, Result};

/// A cfssl certificate request.
#[derive(Clone, Debug, Default, Deserialize)]
#[non_exhaustive]
pub struct CsrRequest {
    /// Subject commonName.
    #[serde(default)]
    pub cn: String,
    /// Subject attributes; values of one type across entries form one multi-valued RDN.
    #[serde(default)]
    pub names: Vec<NameEntry>,
    /// SAN entries (IP, email, URI or DNS, classified as cfssl does).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// The key to generate.
    #[serde(default)]
    pub key: Option<KeyRequest>,
    /// CA options, only meaningful for `-initca`.
    #[serde(default)]
    pub ca: Option<CaSection>,
    /// Subject serialNumber attribute (2.5.4.5).
    #[serde(default)]
    pub serialnumber: String,
    /// CRL distribution point written into a CA certificate.
    #[serde(default)]
    pub crl_url: String,
}

/// One entry of `names[]` (a subject type, so it lives with the subject encoding).
pub use crate::x509::name::NameEntry;

/// The `key` object: both members optional, as in cfssl.
#[derive(Clone, Debug, Default, Deserialize)]
#[non_exhaustive]
pub struct KeyRequest {
    /// `rsa` or `ecdsa`.
    #[serde(default)]
    pub algo: Option<String>,
    /// Bits for RSA, curve size for ECDSA.
    #[serde(default)]
    pub size: Option<u32>,
}

/// The `ca` object.
#[derive(Clone, Debug, Default, Deserialize)]
#[non_exhaustive]
pub struct CaSection {
    /// Maximum path length; see [`CaSection::path_len`].
    #[serde(default)]
    pub pathlen: i64,
    /// Makes `pathlen: 0` mean "0" rather than "unlimited".
    #[serde(default)]
    pub pathlenzero: bool,
    /// CA validity (Go duration).
    #[serde(default)]
    pub expiry: String,
    /// How far notBefore is set back from now (Go duration).
    #[serde(default)]
    pub backdate: String,
}

impl CaSection {
    /// The basicConstraints pathLenConstraint as cfssl derives it (`None` = unlimited).
    pub fn path_len(&self) -> Option<u8> {
        match (self.pathlen, self.pathlenzero) {
            (0, true) => Some(0),
            (n, _) if n > 0 => Some(n.min(255) as u8),
            _ => None,
        }
    }
}

/// A validated key specification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySpec {
    /// RSA with this many bits.
    Rsa(u32),
    /// ECDSA on NIST P-256.
    EcP256,
    /// ECDSA on NIST P-384.
    EcP384,
}

impl KeySpec {
    /// Human name such as `RSA-2048` or `ECDSA P-256`.
    pub fn name(self) -> String {
        match self {
            KeySpec::Rsa(b) => format!("RSA-{b}"),
            KeySpec::EcP256 => "ECDSA P-256".into(),
            KeySpec::EcP384 => "ECDSA P-384".into(),
        }
    }
}

impl CsrRequest {
    /// Parse a request from the bytes of the file named `file`.
    pub fn from_json(bytes: &[u8], file: &str) -> Result<Self> {
        json::decode(bytes, file, &["oid"])
    }

    /// [`CsrRequest::from_json`], with one line in `notices` per field it ignores (as cfssl
    /// does, silently), suggesting the field meant when one is close: `FILE: unknown field
    /// "hsots" ignored; did you mean "hosts"?`.
    pub fn from_json_noting(bytes: &[u8], file: &str, notices: &mut Vec<String>) -> Result<Self> {
        let req = Self::from_json(bytes, file)?;
        if let Ok(raw) = serde_json::from_slice::<serde_json::Value>(bytes) {
            for note in ignored_fields(&raw) {
                notices.push(format!("{file}: {note}"));
            }
        }
        Ok(req)
    }

    /// The key to generate, with cfssl's defaults (ECDSA P-256 when `key` is absent; a
    /// missing `size` stays at 256 as in cfssl, which makes `{"algo":"rsa"}` too weak).
    pub fn key_spec(&self, file: &str) -> Result<KeySpec> {
        let algo = self
            .key
            .as_ref()
            .and_then(|k| k.algo.clone())
            .unwrap_or_else(|| "ecdsa".into());
        let size = self.key.as_ref().and_then(|k| k.size).unwrap_or(256);
        let bad = |m: String| Error::input(format!("{file}: {m}"));
        match algo.as_str() {
            "rsa" => match size {
                0..=2047 => Err(bad(format!(
                    "key.size {size}: RSA key is too weak; use 2048, 3072 or 4096"
                ))),
                2048..=8192 => Ok(KeySpec::Rsa(size)),
                _ => Err(bad(format!(
                    "key.size {size}: RSA key size too large; use 2048, 3072 or 4096"
                ))),
            },
            "ecdsa" => match size {
                256 => Ok(KeySpec::EcP256),
                384 => Ok(KeySpec::EcP384),
                521 => Err(bad(
                    "key.size 521: ECDSA P-521 is not supported by p11ca; use 256 or 384".into(),
                )),
                _ => Err(bad(format!(
                    "key.size {size}: invalid ECDSA curve size; use 256 (P-256) or 384 (P-384)"
                ))),
            },
            other => Err(bad(format!(
                "key.algo \"{other}\": invalid algorithm; use \"rsa\" or \"ecdsa\""
            ))),
        }
    }

    /// True when no subject attribute at all is set (cfssl: "missing subject information").
    pub fn subject_is_empty(&self) -> bool {
        self.cn.is_empty()
            && self.serialnumber.is_empty()
            && self.names.iter().all(|n| {
                n.c.is_empty()
                    && n.st.is_empty()
                    && n.l.is_empty()
                    && n.o.is_empty()
                    && n.ou.is_empty()
                    && n.e.is_empty()
                    && n.oid.values().all(String::is_empty)
            })
    }

    /// `ca.expiry` (default 43800h) and `ca.backdate` (default 5m), validated.
    pub fn ca_times(&self, file: &str) -> Result<(GoDuration, GoDuration)> {
        let ca = self.ca.clone().unwrap_or_default();
        let parse = |field: &str, v: &str, default: GoDuration| -> Result<GoDuration> {
            if v.is_empty() {
                return Ok(default);
            }
            let d = GoDuration::parse(v)
                .map_err(|m| Error::input(format!("{file}: field \"ca.{field}\": {m}")))?;
            if d.is_negative() {
                return Err(Error::input(format!(
                    "{file}: field \"ca.{field}\": \"{v}\" is negative; give a positive duration such as \"43800h\""
                )));
            }
            Ok(d)
        };
        let expiry = parse("expiry", &ca.expiry, GoDuration::from_secs(43800 * 3600))?;
        if expiry.as_secs() == 0 {
            return Err(Error::input(format!(
                "{file}: field \"ca.expiry\": must be longer than 0; e.g. \"43800h\""
            )));
        }
        let backdate = parse("backdate", &ca.backdate, GoDuration::from_secs(300))?;
        Ok((expiry, backdate))
    }
}

/// The request's fields as cfssl spells them, per object.
const TOP_FIELDS: &[&str] = &[
    "CN",
    "names",
    "hosts",
    "key",
    "ca",
    "serialnumber",
    "crl_url",
];
const NAME_FIELDS: &[&str] = &["C", "ST", "L", "O", "OU", "E", "OID"];
const KEY_FIELDS: &[&str] = &["algo", "size"];
const CA_FIELDS: &[&str] = &["pathlen", "pathlenzero", "expiry", "backdate"];
/// Fields cfssl reads that p11ca does not.
const CFSSL_ONLY_TOP: &[&str] = &["delegation_enabled", "extensions"];
const CFSSL_ONLY_NAME: &[&str] = &["SerialNumber"];

/// What to say about each ignored field of a request.
fn ignored_fields(raw: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    check_object(raw, "", TOP_FIELDS, CFSSL_ONLY_TOP, &mut out);
    for (field, known) in [("key", KEY_FIELDS), ("ca", CA_FIELDS)] {
        if let Some(v) = member(raw, field) {
            check_object(v, &format!("{field}."), known, &[], &mut out);
        }
    }
    if let Some(serde_json::Value::Array(names)) = member(raw, "names") {
        for (i, n) in names.iter().enumerate() {
            check_object(
                n,
                &format!("names[{i}]."),
                NAME_FIELDS,
                CFSSL_ONLY_NAME,
                &mut out,
            );
        }
    }
    out
}

/// A member of an object, its key matched case-insensitively as Go does.
fn member<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    v.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

fn check_object(
    v: &serde_json::Value,
    prefix: &str,
    known: &[&str],
    cfssl_only: &[&str],
    out: &mut Vec<String>,
) {
    let Some(obj) = v.as_object() else { return };
    for key in obj.keys() {
        let is = |f: &&str| f.eq_ignore_ascii_case(key);
        if known.iter().any(is) {
            continue;
        }
        out.push(if cfssl_only.iter().any(is) {
            format!("field \"{prefix}{key}\" is not supported by p11ca; ignored")
        } else {
            match closest(key, known) {
                Some(m) => {
                    format!(
                        "unknown field \"{prefix}{key}\" ignored; did you mean \"{prefix}{m}\"?"
                    )
                }
                None => format!("unknown field \"{prefix}{key}\" ignored"),
            }
        });
    }
}

/// The known field nearest to `key` within two edits (letter case aside), if it is closer
/// than the length of `key` itself (so "x" suggests nothing).
fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(&key.to_lowercase(), &k.to_lowercase()), *k))
        .filter(|(d, _)| *d <= 2 && *d < key.chars().count())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Edit distance counting an insertion, deletion, substitution or swap of neighbours as one.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d: Vec<Vec<usize>> = (0..=a.len())
        .map(|i| {
            (0..=b.len())
                .map(|j| if i == 0 { j } else { i * usize::from(j == 0) })
                .collect()
        })
        .collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(s: &str) -> CsrRequest {
        CsrRequest::from_json(s.as_bytes(), "t.json").unwrap()
    }

    #[test]
    fn seed_request() {
        let r = req(r#"{"CN":"mosquitood-k8s","key":{"algo":"rsa","size":2048},
            "names":[{"C":"CN","ST":"TianJin","L":"TianJin","O":"k8s","OU":"System"}]}"#);
        assert_eq!(r.cn, "mosquitood-k8s");
        assert_eq!(r.names[0].ou, "System");
        assert_eq!(r.key_spec("t").unwrap(), KeySpec::Rsa(2048));
    }

    #[test]
    fn cfssl_key_defaults() {
        assert_eq!(req(r#"{"CN":"a"}"#).key_spec("t").unwrap(), KeySpec::EcP256);
        assert_eq!(
            req(r#"{"key":{"size":384}}"#).key_spec("t").unwrap(),
            KeySpec::EcP384
        );
        let e = req(r#"{"key":{"algo":"rsa"}}"#).key_spec("t").unwrap_err();
        assert!(e.message().contains("too weak"), "{e}");
        let e = req(r#"{"key":{"algo":"dsa"}}"#).key_spec("t").unwrap_err();
        assert!(e.message().contains("key.algo \"dsa\""), "{e}");
        let e = req(r#"{"key":{"algo":"ecdsa","size":255}}"#)
            .key_spec("t")
            .unwrap_err();
        assert!(e.message().contains("curve"), "{e}");
        let e = req(r#"{"key":{"algo":"rsa","size":8193}}"#)
            .key_spec("t")
            .unwrap_err();
        assert!(e.message().contains("too large"), "{e}");
    }

    #[test]
    fn path_len_follows_cfssl() {
        let ca = |p, z| CaSection {
            pathlen: p,
            pathlenzero: z,
            ..Default::default()
        };
        assert_eq!(ca(0, false).path_len(), None);
        assert_eq!(ca(0, true).path_len(), Some(0));
        assert_eq!(ca(2, false).path_len(), Some(2));
        assert_eq!(ca(2, true).path_len(), Some(2));
        assert_eq!(ca(-1, false).path_len(), None);
    }

    #[test]
    fn ca_times() {
        let (e, b) = req("{}").ca_times("t").unwrap();
        assert_eq!(e.as_secs(), 43800 * 3600);
        assert_eq!(b.as_secs(), 300);
        let e = req(r#"{"ca":{"expiry":"1y"}}"#)
            .ca_times("t.json")
            .unwrap_err();
        assert!(
            e.message().starts_with("t.json: field \"ca.expiry\""),
            "{e}"
        );
        let e = req(r#"{"ca":{"expiry":"-1h"}}"#)
            .ca_times("t.json")
            .unwrap_err();
        assert!(e.message().contains("negative"), "{e}");
    }

    #[test]
    fn ignored_fields_are_noted() {
        let cases: &[(&str, &str, &[&str])] = &[
            (
                "known fields, any case",
                r#"{"cn":"a","HOSTS":[],"Key":{"ALGO":"rsa","size":2048}}"#,
                &[],
            ),
            (
                "transposed",
                r#"{"hsots":["a"]}"#,
                &[r#"t.json: unknown field "hsots" ignored; did you mean "hosts"?"#],
            ),
            (
                "nested",
                r#"{"key":{"sise":256},"ca":{"expirey":"1h"}}"#,
                &[
                    r#"t.json: unknown field "key.sise" ignored; did you mean "key.size"?"#,
                    r#"t.json: unknown field "ca.expirey" ignored; did you mean "ca.expiry"?"#,
                ],
            ),
            (
                "names entry",
                r#"{"names":[{"C":"US"},{"OUU":"x","x":"y"}]}"#,
                &[
                    r#"t.json: unknown field "names[1].OUU" ignored; did you mean "names[1].OU"?"#,
                    r#"t.json: unknown field "names[1].x" ignored"#,
                ],
            ),
            (
                "nothing close",
                r#"{"colour":"red"}"#,
                &[r#"t.json: unknown field "colour" ignored"#],
            ),
            (
                "cfssl only",
                r#"{"extensions":[]}"#,
                &[r#"t.json: field "extensions" is not supported by p11ca; ignored"#],
            ),
            (
                "oid keys are data",
                r#"{"names":[{"OID":{"1.2.3":"x"}}]}"#,
                &[],
            ),
        ];
        for (name, json, want) in cases {
            let mut notes = Vec::new();
            CsrRequest::from_json_noting(json.as_bytes(), "t.json", &mut notes).unwrap();
            assert_eq!(notes, *want, "{name}");
        }
    }

    #[test]
    fn edit_distances() {
        for (a, b, d) in [
            ("hosts", "hosts", 0),
            ("hsots", "hosts", 1),
            ("host", "hosts", 1),
            ("cn", "ca", 1),
            ("abc", "", 3),
        ] {
            assert_eq!(edit_distance(a, b), d, "{a} {b}");
        }
    }

    #[test]
    fn empty_subject() {
        assert!(req("{}").subject_is_empty());
        assert!(req(r#"{"names":[{"C":""}]}"#).subject_is_empty());
        assert!(!req(r#"{"names":[{"O":"x"}]}"#).subject_is_empty());
    }
}
