//! Subject names from cfssl's `CN` / `names[]`, encoded the way Go (and so cfssl) does.
//!
//! Order C, ST, L, O, OU, CN, serialNumber, then per-entry extras (`OID` map, `E`); the values
//! of one type across all `names[]` entries form a single multi-valued RDN; each value is a
//! PrintableString when it fits, else a UTF8String.

use std::collections::BTreeMap;
use std::str::FromStr;

use const_oid::ObjectIdentifier;
use const_oid::db::rfc4519;
use der::asn1::{Any, PrintableStringRef, SetOfVec, Utf8StringRef};
use der::{Decode, Encode};
use serde::Deserialize;
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};

use crate::error::{Error, Result};

/// emailAddress (PKCS#9).
const EMAIL_ADDRESS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.1");

/// One entry of cfssl's `names[]` (deserialized by `cfssl::csr` with its case-folded keys).
#[derive(Clone, Debug, Default, Deserialize)]
#[non_exhaustive]
pub struct NameEntry {
    /// countryName
    #[serde(default)]
    pub c: String,
    /// stateOrProvinceName
    #[serde(default)]
    pub st: String,
    /// localityName
    #[serde(default)]
    pub l: String,
    /// organizationName
    #[serde(default)]
    pub o: String,
    /// organizationalUnitName
    #[serde(default)]
    pub ou: String,
    /// emailAddress (cfssl 1.6+)
    #[serde(default)]
    pub e: String,
    /// Extra attributes by dotted OID (cfssl 1.6+).
    #[serde(default)]
    pub oid: BTreeMap<String, String>,
}

/// The subject parts p11ca reads from cfssl JSON.
#[derive(Clone, Debug, Default)]
pub struct SubjectSpec<'a> {
    /// commonName
    pub cn: &'a str,
    /// names[] entries
    pub names: &'a [NameEntry],
    /// serialNumber attribute
    pub serial_number: &'a str,
}

/// Encode a value as Go does: PrintableString if every character allows it, else UTF8String.
pub fn directory_string(s: &str) -> Result<Any> {
    let r = match PrintableStringRef::new(s) {
        Ok(p) => Any::encode_from(&p),
        Err(_) => Utf8StringRef::new(s).and_then(|u| Any::encode_from(&u)),
    };
    r.map_err(|e| Error::input(format!("cannot encode subject value \"{s}\": {e}")))
}

fn rdn(oid: ObjectIdentifier, values: &[&str]) -> Result<RelativeDistinguishedName> {
    let mut set = Vec::new();
    for v in values {
        set.push(AttributeTypeAndValue {
            oid,
            value: directory_string(v)?,
        });
    }
    // SetOfVec sorts by DER, as Go's marshalling of a SET does.
    let set = SetOfVec::try_from(set)
        .map_err(|e| Error::input(format!("subject has a repeated value: {e}")))?;
    RelativeDistinguishedName::try_from(set.into_vec())
        .map_err(|e| Error::input(format!("cannot build subject RDN: {e}")))
}

/// Build the subject `Name`. An empty subject gives an empty Name (callers decide if that is
/// allowed).
pub fn build(spec: &SubjectSpec<'_>) -> Result<Name> {
    let mut extra_oids: Vec<ObjectIdentifier> = Vec::new();
    let mut extras: Vec<(ObjectIdentifier, String)> = Vec::new();
    for (i, n) in spec.names.iter().enumerate() {
        for (k, v) in &n.oid {
            let oid = ObjectIdentifier::from_str(k).map_err(|_| {
                Error::input(format!("field \"names[{i}].OID\": invalid OID \"{k}\""))
            })?;
            if !v.is_empty() {
                extra_oids.push(oid);
                extras.push((oid, v.clone()));
            }
        }
        if !n.e.is_empty() {
            extras.push((EMAIL_ADDRESS, n.e.clone()));
        }
    }
    let mut seq = RdnSequence::default();
    let mut push = |oid: ObjectIdentifier, vals: Vec<&str>| -> Result<()> {
        let vals: Vec<&str> = vals.into_iter().filter(|v| !v.is_empty()).collect();
        // Go drops a standard attribute when an OID entry names the same type.
        if vals.is_empty() || extra_oids.contains(&oid) {
            return Ok(());
        }
        seq.push(rdn(oid, &vals)?);
        Ok(())
    };
    let names = spec.names;
    push(rfc4519::C, names.iter().map(|n| n.c.as_str()).collect())?;
    push(rfc4519::ST, names.iter().map(|n| n.st.as_str()).collect())?;
    push(rfc4519::L, names.iter().map(|n| n.l.as_str()).collect())?;
    push(rfc4519::O, names.iter().map(|n| n.o.as_str()).collect())?;
    push(rfc4519::OU, names.iter().map(|n| n.ou.as_str()).collect())?;
    push(rfc4519::CN, vec![spec.cn])?;
    push(rfc4519::SERIAL_NUMBER, vec![spec.serial_number])?;
    for (oid, v) in &extras {
        seq.push(rdn(*oid, &[v.as_str()])?);
    }
    let der = seq
        .to_der()
        .map_err(|e| crate::error::der_err("subject", e))?;
    Name::from_der(&der).map_err(|e| crate::error::der_err("subject", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(c: &str, o: &str) -> NameEntry {
        NameEntry {
            c: c.into(),
            o: o.into(),
            ..Default::default()
        }
    }

    #[test]
    fn order_and_multivalue_like_go() {
        let names = vec![
            NameEntry {
                ou: "System".into(),
                ..entry("US", "Org1")
            },
            entry("CN", "Org2 & co"),
        ];
        let n = build(&SubjectSpec {
            cn: "node",
            names: &names,
            serial_number: "",
        })
        .unwrap();
        // RFC 4514 prints in reverse order.
        assert_eq!(
            n.to_string(),
            "CN=node,OU=System,O=Org1+O=Org2 & co,C=CN+C=US"
        );
        assert_eq!(n.iter_rdn().count(), 4);
    }

    #[test]
    fn printable_else_utf8() {
        let names = vec![NameEntry {
            l: "Zürich".into(),
            ..entry("CH", "")
        }];
        let n = build(&SubjectSpec {
            cn: "a-b (c)",
            names: &names,
            serial_number: "",
        })
        .unwrap();
        let tags: Vec<der::Tag> = n.iter().map(|atv| der::Tagged::tag(&atv.value)).collect();
        assert_eq!(
            tags,
            [
                der::Tag::PrintableString,
                der::Tag::Utf8String,
                der::Tag::PrintableString
            ]
        );
    }

    #[test]
    fn bad_oid_is_named() {
        let mut e = NameEntry::default();
        e.oid.insert("abc".into(), "x".into());
        let err = build(&SubjectSpec {
            cn: "",
            names: &[e],
            serial_number: "",
        })
        .unwrap_err();
        assert!(err.message().contains("names[0].OID"), "{err}");
    }

    #[test]
    fn empty_is_empty() {
        assert!(build(&SubjectSpec::default()).unwrap().is_empty());
    }
}

/// The text of a directory string value, if it is one of the usual string types.
pub fn value_text(v: &Any) -> Option<String> {
    use der::asn1::{Ia5StringRef, TeletexStringRef};
    if let Ok(s) = v.decode_as::<PrintableStringRef<'_>>() {
        return Some(s.to_string());
    }
    if let Ok(s) = v.decode_as::<Utf8StringRef<'_>>() {
        return Some(s.to_string());
    }
    if let Ok(s) = v.decode_as::<Ia5StringRef<'_>>() {
        return Some(s.to_string());
    }
    if let Ok(s) = v.decode_as::<TeletexStringRef<'_>>() {
        return Some(s.to_string());
    }
    None
}

/// Field-by-field replacements for a requested subject (`-cn`, cfssl's subject.json).
#[derive(Clone, Debug, Default)]
pub struct SubjectOverride<'a> {
    /// Replaces the CN when non-empty.
    pub cn: &'a str,
    /// Non-empty fields replace all values of that type.
    pub names: &'a [NameEntry],
    /// Replaces serialNumber when non-empty.
    pub serial_number: &'a str,
}

/// Re-encode `name` as cfssl would issue it: C, ST, L, O, OU, CN, serialNumber (all values of a
/// type in one RDN, strings re-encoded Printable-else-UTF8), then other attributes in their
/// original order; types given in `ov` replace the requested values.
pub fn canonicalize(name: &Name, ov: &SubjectOverride<'_>) -> Result<Name> {
    let standard = [
        rfc4519::C,
        rfc4519::ST,
        rfc4519::L,
        rfc4519::O,
        rfc4519::OU,
        rfc4519::CN,
        rfc4519::SERIAL_NUMBER,
    ];
    let mut values: Vec<Vec<String>> = vec![Vec::new(); standard.len()];
    let mut others: Vec<AttributeTypeAndValue> = Vec::new();
    for atv in name.iter() {
        match standard.iter().position(|o| *o == atv.oid) {
            Some(i) => match value_text(&atv.value) {
                Some(t) => values[i].push(t),
                None => others.push(atv.clone()),
            },
            None => others.push(atv.clone()),
        }
    }
    let pick = |f: fn(&NameEntry) -> &str| -> Vec<String> {
        ov.names
            .iter()
            .map(|n| f(n).to_string())
            .filter(|v| !v.is_empty())
            .collect()
    };
    let replacements: [Vec<String>; 7] = [
        pick(|n| &n.c),
        pick(|n| &n.st),
        pick(|n| &n.l),
        pick(|n| &n.o),
        pick(|n| &n.ou),
        if ov.cn.is_empty() {
            Vec::new()
        } else {
            vec![ov.cn.to_string()]
        },
        if ov.serial_number.is_empty() {
            Vec::new()
        } else {
            vec![ov.serial_number.to_string()]
        },
    ];
    let mut seq = RdnSequence::default();
    for (i, oid) in standard.iter().enumerate() {
        let vals = if replacements[i].is_empty() {
            &values[i]
        } else {
            &replacements[i]
        };
        let vals: Vec<&str> = vals.iter().map(String::as_str).collect();
        if !vals.is_empty() {
            seq.push(rdn(*oid, &vals)?);
        }
    }
    for atv in others {
        seq.push(
            RelativeDistinguishedName::try_from(vec![atv])
                .map_err(|e| Error::input(format!("cannot build subject RDN: {e}")))?,
        );
    }
    let der = seq
        .to_der()
        .map_err(|e| crate::error::der_err("subject", e))?;
    Name::from_der(&der).map_err(|e| crate::error::der_err("subject", e))
}

#[cfg(test)]
mod canonical_tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn reorders_like_go_and_applies_overrides() {
        // RFC 4514 string: last RDN first. Encoded order: C, O, OU, L, ST, CN.
        let n = Name::from_str("CN=node,ST=TJ,L=TJ,OU=System,O=acme,C=US").unwrap();
        let c = canonicalize(&n, &SubjectOverride::default()).unwrap();
        assert_eq!(c.to_string(), "CN=node,OU=System,O=acme,L=TJ,ST=TJ,C=US");
        let names = [NameEntry {
            o: "system:nodes".into(),
            ..Default::default()
        }];
        let ov = SubjectOverride {
            cn: "system:node:n1",
            names: &names,
            serial_number: "",
        };
        let c = canonicalize(&n, &ov).unwrap();
        assert_eq!(
            c.to_string(),
            "CN=system:node:n1,OU=System,O=system:nodes,L=TJ,ST=TJ,C=US"
        );
    }
}
