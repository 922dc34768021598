//! cfssl's `hosts` → subjectAltName rules: each entry is an IP address, else an email
//! address, else a URI, else a DNS name (first match wins, as in cfssl 1.3.3+).

use std::net::IpAddr;

use der::Encode;
use der::asn1::{Ia5String, OctetString};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

use crate::error::{Error, Result};

/// One subjectAltName entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum San {
    /// dNSName
    Dns(String),
    /// rfc822Name (the bare address)
    Email(String),
    /// iPAddress
    Ip(IpAddr),
    /// uniformResourceIdentifier
    Uri(String),
}

/// Classify one host string as cfssl does.
pub fn classify(h: &str) -> San {
    if let Ok(ip) = h.parse::<IpAddr>() {
        return San::Ip(ip);
    }
    if let Some(addr) = email_address(h) {
        return San::Email(addr);
    }
    if is_request_uri(h) {
        return San::Uri(h.to_string());
    }
    San::Dns(h.to_string())
}

/// Parse a list of hosts from `source` (a file field or a flag): whitespace around entries is
/// trimmed and an empty entry is an error (cfssl would write an empty dNSName).
pub fn parse_list<S: AsRef<str>>(hosts: &[S], source: &str) -> Result<Vec<San>> {
    let mut out = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let t = h.as_ref().trim();
        if t.is_empty() {
            return Err(Error::input(format!(
                "{source}: entry {} is empty; remove it or give a host name, IP, email or URI",
                i + 1
            )));
        }
        if !t.is_ascii() {
            return Err(Error::input(format!(
                "{source}: \"{t}\" is not ASCII; write international domain names in punycode (xn--…)"
            )));
        }
        out.push(classify(t));
    }
    Ok(out)
}

/// Go's `mail.ParseAddress`, reduced to what matters here: `local@domain` or
/// `Display Name <local@domain>`; returns the bare address.
fn email_address(h: &str) -> Option<String> {
    let addr = match (h.find('<'), h.ends_with('>')) {
        (Some(i), true) => &h[i + 1..h.len() - 1],
        (None, false) => h,
        _ => return None,
    };
    let (local, domain) = addr.rsplit_once('@')?;
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c);
    let dot_atom =
        |s: &str| !s.is_empty() && s.split('.').all(|p| !p.is_empty() && p.chars().all(atext));
    if dot_atom(local) && dot_atom(domain) {
        Some(addr.to_string())
    } else {
        None
    }
}

/// Go's `url.ParseRequestURI` acceptance: an absolute path, or `scheme:` followed by anything
/// without spaces or control characters.
fn is_request_uri(h: &str) -> bool {
    if h.chars().any(|c| c.is_control() || c == ' ') {
        return false;
    }
    if h.starts_with('/') {
        return true;
    }
    let Some((scheme, _)) = h.split_once(':') else {
        return false;
    };
    let mut cs = scheme.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic())
        && cs.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
}

/// The subjectAltName extension, entries grouped DNS, email, IP, URI as Go writes them;
/// critical only when the subject is empty (RFC 5280 §4.2.1.6).
pub fn extension(sans: &[San], subject_empty: bool) -> Result<Option<Extension>> {
    if sans.is_empty() {
        return Ok(None);
    }
    let ia5 = |s: &str| {
        Ia5String::new(s).map_err(|e| Error::input(format!("SAN \"{s}\" is not IA5: {e}")))
    };
    let mut names = Vec::new();
    for s in sans {
        if let San::Dns(d) = s {
            names.push(GeneralName::DnsName(ia5(d)?));
        }
    }
    for s in sans {
        if let San::Email(m) = s {
            names.push(GeneralName::Rfc822Name(ia5(m)?));
        }
    }
    for s in sans {
        if let San::Ip(ip) = s {
            names.push(GeneralName::from(*ip));
        }
    }
    for s in sans {
        if let San::Uri(u) = s {
            names.push(GeneralName::UniformResourceIdentifier(ia5(u)?));
        }
    }
    let value = SubjectAltName(names)
        .to_der()
        .map_err(|e| crate::error::der_err("SAN", e))?;
    Ok(Some(Extension {
        extn_id: const_oid::db::rfc5280::ID_CE_SUBJECT_ALT_NAME,
        critical: subject_empty,
        extn_value: OctetString::new(value).map_err(|e| crate::error::der_err("SAN", e))?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cfssl_classification() {
        assert_eq!(classify("10.0.0.1"), San::Ip("10.0.0.1".parse().unwrap()));
        assert_eq!(classify("::1"), San::Ip("::1".parse().unwrap()));
        assert_eq!(classify("a@b.c"), San::Email("a@b.c".into()));
        assert_eq!(
            classify("Bob <bob@example.com>"),
            San::Email("bob@example.com".into())
        );
        assert_eq!(
            classify("spiffe://cluster/ns/x"),
            San::Uri("spiffe://cluster/ns/x".into())
        );
        assert_eq!(classify("urn:x:y"), San::Uri("urn:x:y".into()));
        assert_eq!(classify("/path"), San::Uri("/path".into()));
        assert_eq!(
            classify("*.wild.example.com"),
            San::Dns("*.wild.example.com".into())
        );
        assert_eq!(
            classify("node1.example.com"),
            San::Dns("node1.example.com".into())
        );
        assert_eq!(classify("1.2.3"), San::Dns("1.2.3".into()));
    }

    #[test]
    fn list_trims_and_rejects_empty() {
        let l = parse_list(&["a", " b "], "-hostname").unwrap();
        assert_eq!(l, [San::Dns("a".into()), San::Dns("b".into())]);
        let e = parse_list(&["a", ""], "-hostname").unwrap_err();
        assert!(e.message().contains("-hostname: entry 2 is empty"), "{e}");
        let e = parse_list(&["bücher.de"], "csr.json: hosts").unwrap_err();
        assert!(e.message().contains("punycode"), "{e}");
    }

    #[test]
    fn grouped_dns_email_ip_uri() {
        let sans = parse_list(&["10.0.0.1", "spiffe://a/b", "a@b.c", "x.example"], "t").unwrap();
        let ext = extension(&sans, false).unwrap().unwrap();
        let alt: SubjectAltName = der::Decode::from_der(ext.extn_value.as_bytes()).unwrap();
        let kinds: Vec<u8> = alt
            .0
            .iter()
            .map(|g| match g {
                GeneralName::DnsName(_) => 2,
                GeneralName::Rfc822Name(_) => 1,
                GeneralName::IpAddress(_) => 7,
                GeneralName::UniformResourceIdentifier(_) => 6,
                _ => 0,
            })
            .collect();
        assert_eq!(kinds, [2, 1, 7, 6]);
        assert!(!ext.critical);
    }
}
