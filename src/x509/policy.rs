//! The issuance policy: what a leaf certificate may say, checked before anything is signed.
//!
//! A CA signs what it is asked to unless something stops it; these are the rules that stop
//! it. Some are fixed (a name must be a well-formed host name, email or URI; subject values
//! stay within RFC 5280's upper bounds; the CA's own subject is never a leaf's), others are per
//! profile ([`Policy`]: how many SANs, which key algorithms and sizes, which O/OU/CN values).
//! Every refusal is a policy error naming the value and the rule. Nothing here talks to a
//! token; the `policy` object of `ca-config.json` is parsed in `cfssl::config`.

use std::net::IpAddr;

use const_oid::ObjectIdentifier;
use const_oid::db::rfc4519;
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::name::Name;

use crate::error::{Error, Result};
use crate::x509::alg::KeyAlg;
use crate::x509::hosts::San;
use crate::x509::name::value_text;

/// Default `max_sans`: far more than a real node or cluster service needs, far fewer than an
/// attacker needs to bloat the certificate store.
pub const DEFAULT_MAX_SANS: usize = 100;
/// Default `min_rsa_bits` (NIST SP 800-131A: RSA under 2048 bits is disallowed).
pub const DEFAULT_MIN_RSA_BITS: usize = 2048;
/// The O value that makes a Kubernetes client cluster-admin: denied unless a profile allows it.
pub const SYSTEM_MASTERS: &str = "system:masters";

/// Longest URI SAN accepted (no standard bound; real URIs such as SPIFFE IDs are far shorter).
const MAX_URI_LEN: usize = 1024;
/// Most attributes a subject may have (a real subject has fewer than ten).
const MAX_SUBJECT_ATTRIBUTES: usize = 32;
/// Bound for subject attributes RFC 5280 gives no upper bound for here.
const MAX_OTHER_VALUE_LEN: usize = 256;

/// A subject attribute a profile may allow or deny values of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SubjectAttr {
    /// organizationName
    O,
    /// organizationalUnitName
    Ou,
    /// commonName
    Cn,
}

impl SubjectAttr {
    /// Parse `O`, `OU` or `CN` (any letter case, as cfssl's JSON keys).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "O" => Some(Self::O),
            "OU" => Some(Self::Ou),
            "CN" => Some(Self::Cn),
            _ => None,
        }
    }

    /// The attribute's short name.
    pub fn name(self) -> &'static str {
        match self {
            Self::O => "O",
            Self::Ou => "OU",
            Self::Cn => "CN",
        }
    }

    fn oid(self) -> ObjectIdentifier {
        match self {
            Self::O => rfc4519::O,
            Self::Ou => rfc4519::OU,
            Self::Cn => rfc4519::CN,
        }
    }
}

/// A profile's issuance policy; [`Policy::default`] is what applies when none is configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Most subjectAltName entries a certificate may have.
    pub max_sans: usize,
    /// Smallest RSA modulus accepted, in bits.
    pub min_rsa_bits: usize,
    /// RSA request keys are accepted.
    pub allow_rsa: bool,
    /// ECDSA request keys (P-256, P-384: the curves p11ca knows) are accepted.
    pub allow_ecdsa: bool,
    /// Per attribute: when present, every value must be one of these; naming a value here also
    /// lifts the built-in denial of it (`O=system:masters`).
    pub allow: Vec<(SubjectAttr, Vec<String>)>,
    /// Per attribute: values refused (besides the built-in `O=system:masters`).
    pub deny: Vec<(SubjectAttr, Vec<String>)>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_sans: DEFAULT_MAX_SANS,
            min_rsa_bits: DEFAULT_MIN_RSA_BITS,
            allow_rsa: true,
            allow_ecdsa: true,
            allow: Vec::new(),
            deny: Vec::new(),
        }
    }
}

/// A value as an error message shows it: control characters escaped, long values cut.
pub fn shown(s: &str) -> String {
    const SHOW: usize = 64;
    let n = s.chars().count();
    if n <= SHOW {
        return s.escape_debug().to_string();
    }
    let head: String = s.chars().take(SHOW).collect();
    format!("{}… ({n} characters)", head.escape_debug())
}

fn refuse(what: &str, value: &str, rule: impl std::fmt::Display) -> Error {
    Error::policy(format!("{what} \"{}\" is refused: {rule}", shown(value)))
}

/// Why `label` is not a letter-digit-hyphen label of 1 to 63 octets (RFC 1035 §2.3.1, RFC 1123
/// §2.1), if it is not.
fn label_fault(label: &str) -> Option<String> {
    if label.is_empty() {
        return Some("it has an empty label (two dots in a row, or a dot at an end)".into());
    }
    if label.len() > 63 {
        return Some(format!(
            "a label of {} octets; a label has at most 63 (RFC 1035)",
            label.len()
        ));
    }
    if let Some(c) = label
        .chars()
        .find(|c| !c.is_ascii_alphanumeric() && *c != '-')
    {
        return Some(format!(
            "the character '{}' is not allowed; a host name has only letters, digits, hyphens and dots",
            c.escape_debug()
        ));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Some(format!(
            "the label \"{label}\" starts or ends with a hyphen (RFC 1123)"
        ));
    }
    None
}

/// Why `name` is not a valid host name (wildcards only if `wildcard_ok`), if it is not.
pub fn host_fault(name: &str, wildcard_ok: bool) -> Option<String> {
    if name.len() > 253 {
        return Some(format!(
            "{} octets; a host name has at most 253 (RFC 1035)",
            name.len()
        ));
    }
    let mut labels: Vec<&str> = name.split('.').collect();
    let wildcard = labels.first() == Some(&"*");
    if wildcard {
        if !wildcard_ok {
            return Some("a wildcard is not allowed here".into());
        }
        labels.remove(0);
        if labels.is_empty() {
            return Some("a bare \"*\" would match every host".into());
        }
    }
    if let Some(fault) = labels.iter().find_map(|l| label_fault(l)) {
        return Some(fault);
    }
    // RFC 3696 §2: a top-level domain is not all digits, so `1.2.3.4`-like names are not
    // mistaken for addresses.
    if labels
        .last()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Some("the last label is all digits; give an IP address as an IP".into());
    }
    // Built-in stand-in for a public suffix list: `*.<one label>` covers a whole top-level
    // domain (`*.com`). Multi-label public suffixes (`*.co.uk`) are not known here.
    if wildcard && labels.len() == 1 {
        return Some(format!(
            "a wildcard directly on the top-level domain \"{}\" would match every host under it",
            labels[0]
        ));
    }
    None
}

/// Why `addr` is not `local@domain` with a dot-atom local part (RFC 5321/5322) and a valid
/// host name as domain, if it is not.
fn email_fault(addr: &str) -> Option<String> {
    let Some((local, domain)) = addr.rsplit_once('@') else {
        return Some("an email address needs local@domain".into());
    };
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c);
    let dot_atom = !local.is_empty()
        && local
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(atext));
    if !dot_atom || local.len() > 64 {
        return Some(
            "the local part must be a dot-atom of at most 64 characters (RFC 5321)".into(),
        );
    }
    host_fault(domain, false).map(|f| format!("its domain \"{}\": {f}", shown(domain)))
}

/// Why `uri` is not an absolute URI with a scheme, no spaces or control characters, and, when
/// it has an authority, a valid host name or IP as host (RFC 5280 §4.2.1.6), if it is not.
fn uri_fault(uri: &str) -> Option<String> {
    if uri.len() > MAX_URI_LEN {
        return Some(format!(
            "{} characters; a URI SAN has at most {MAX_URI_LEN}",
            uri.len()
        ));
    }
    if let Some(c) = uri.chars().find(|c| !c.is_ascii_graphic()) {
        return Some(format!(
            "the character '{}' is not allowed in a URI (RFC 3986)",
            c.escape_debug()
        ));
    }
    let Some((scheme, rest)) = uri.split_once(':') else {
        return Some("a URI SAN needs a scheme such as spiffe: (RFC 5280)".into());
    };
    let mut cs = scheme.chars();
    let scheme_ok = matches!(cs.next(), Some(c) if c.is_ascii_alphabetic())
        && cs.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !scheme_ok || rest.is_empty() {
        return Some("a URI SAN needs a scheme and a scheme-specific part (RFC 5280)".into());
    }
    // Without an authority (`urn:…`) there is no host to check.
    let after = rest.strip_prefix("//")?;
    let authority = after.split(['/', '?', '#']).next().unwrap_or_default();
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match hostport.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((ip, port)) if ip.parse::<std::net::Ipv6Addr>().is_ok() => {
                return port_fault(port);
            }
            _ => return Some("a bracketed host must be an IPv6 address".into()),
        },
        None => match hostport.rsplit_once(':') {
            Some((h, port)) => {
                if let Some(f) = port_fault(&format!(":{port}")) {
                    return Some(f);
                }
                h
            }
            None => hostport,
        },
    };
    if host.is_empty() {
        return Some("the URI's authority has no host".into());
    }
    if host.parse::<IpAddr>().is_ok() {
        return None;
    }
    host_fault(host, false).map(|f| format!("its host \"{}\": {f}", shown(host)))
}

fn port_fault(port: &str) -> Option<String> {
    match port.strip_prefix(':') {
        None if port.is_empty() => None,
        Some(p) if p.parse::<u16>().is_ok() => None,
        _ => Some("the URI's port is not a number from 0 to 65535".into()),
    }
}

/// Check one subjectAltName entry's syntax.
pub fn check_san(san: &San) -> Result<()> {
    let (what, value, fault) = match san {
        San::Dns(d) => ("DNS name", d, host_fault(d, true)),
        San::Email(m) => ("email address", m, email_fault(m)),
        San::Uri(u) => ("URI", u, uri_fault(u)),
        San::Ip(_) => return Ok(()),
    };
    match fault {
        Some(f) => Err(refuse(&format!("SAN {what}"), value, f)),
        None => Ok(()),
    }
}

/// RFC 5280 Appendix A upper bounds for the attributes cfssl requests carry.
fn upper_bound(oid: ObjectIdentifier) -> (&'static str, usize) {
    match oid {
        o if o == rfc4519::CN => ("CN", 64),
        o if o == rfc4519::O => ("O", 64),
        o if o == rfc4519::OU => ("OU", 64),
        o if o == rfc4519::L => ("L", 128),
        o if o == rfc4519::ST => ("ST", 128),
        o if o == rfc4519::C => ("C", 2),
        o if o == rfc4519::SERIAL_NUMBER => ("serialNumber", 64),
        _ => ("subject attribute", MAX_OTHER_VALUE_LEN),
    }
}

/// Subject values within RFC 5280's bounds and free of control characters (a NUL in a CN is
/// the null-prefix attack again).
fn check_subject_values(subject: &Name) -> Result<()> {
    let count = subject.iter().count();
    if count > MAX_SUBJECT_ATTRIBUTES {
        return Err(Error::policy(format!(
            "the subject has {count} attributes; at most {MAX_SUBJECT_ATTRIBUTES} are accepted"
        )));
    }
    for atv in subject.iter() {
        let (what, max) = upper_bound(atv.oid);
        let Some(text) = value_text(&atv.value) else {
            continue;
        };
        let what = format!("subject {what}");
        if text.chars().any(char::is_control) {
            return Err(refuse(&what, &text, "it contains a control character"));
        }
        let n = text.chars().count();
        if n > max {
            return Err(refuse(
                &what,
                &text,
                format!("{n} characters; at most {max} (RFC 5280 upper bound)"),
            ));
        }
    }
    Ok(())
}

/// A name as a sorted list of (type, value folded to lower case with spaces collapsed), so
/// that two encodings or orders of one DN compare equal (RFC 5280 §7.1, roughly).
fn folded(name: &Name) -> Vec<(ObjectIdentifier, String)> {
    let mut v: Vec<_> = name
        .iter()
        .map(|atv| {
            let text = value_text(&atv.value).map_or_else(
                || format!("{:?}", atv.value),
                |t| {
                    t.split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                        .to_lowercase()
                },
            );
            (atv.oid, text)
        })
        .collect();
    v.sort();
    v
}

fn values_of(subject: &Name, attr: SubjectAttr) -> Vec<String> {
    subject
        .iter()
        .filter(|atv| atv.oid == attr.oid())
        .filter_map(|atv| value_text(&atv.value))
        .collect()
}

fn listed(list: &[(SubjectAttr, Vec<String>)], attr: SubjectAttr) -> Option<&[String]> {
    list.iter()
        .find(|(a, _)| *a == attr)
        .map(|(_, v)| v.as_slice())
}

fn contains(list: &[String], value: &str) -> bool {
    list.iter()
        .any(|v| v.trim().eq_ignore_ascii_case(value.trim()))
}

impl Policy {
    /// Check a request against this policy (of `profile`) and the fixed rules; `ca_subject` is
    /// the issuing CA's subject.
    pub fn check(
        &self,
        profile: &str,
        subject: &Name,
        sans: &[San],
        key: &SubjectPublicKeyInfoOwned,
        ca_subject: &Name,
    ) -> Result<()> {
        self.check_names(profile, subject, sans, ca_subject)?;
        let alg = KeyAlg::of(key).map_err(|e| Error::policy(format!("request key: {e}")))?;
        self.check_key(profile, alg)
    }

    /// The rules on the subject and the subjectAltNames alone (no key yet: a key the token is
    /// about to make is checked with [`Policy::check_key`] on its planned algorithm).
    pub fn check_names(
        &self,
        profile: &str,
        subject: &Name,
        sans: &[San],
        ca_subject: &Name,
    ) -> Result<()> {
        if sans.len() > self.max_sans {
            return Err(Error::policy(format!(
                "{} subjectAltName entries are refused: profile \"{profile}\" allows at most {} (policy.max_sans)",
                sans.len(),
                self.max_sans
            )));
        }
        sans.iter().try_for_each(check_san)?;
        check_subject_values(subject)?;
        if !subject.is_empty() && folded(subject) == folded(ca_subject) {
            return Err(Error::policy(format!(
                "subject \"{subject}\" is refused: it is the CA's own subject, which no leaf may have"
            )));
        }
        self.check_subject_lists(profile, subject)
    }

    fn check_subject_lists(&self, profile: &str, subject: &Name) -> Result<()> {
        for attr in [SubjectAttr::O, SubjectAttr::Ou, SubjectAttr::Cn] {
            let allow = listed(&self.allow, attr);
            let deny = listed(&self.deny, attr).unwrap_or_default();
            for value in values_of(subject, attr) {
                let what = format!("subject {}", attr.name());
                if contains(deny, &value) {
                    return Err(refuse(
                        &what,
                        &value,
                        format!("profile \"{profile}\" denies it (policy.subject.deny)"),
                    ));
                }
                if let Some(allow) = allow
                    && !contains(allow, &value)
                {
                    return Err(refuse(
                        &what,
                        &value,
                        format!(
                            "profile \"{profile}\" allows only {allow:?} (policy.subject.allow)"
                        ),
                    ));
                }
                let built_in_denied =
                    attr == SubjectAttr::O && contains(&[SYSTEM_MASTERS.into()], &value);
                if built_in_denied && !allow.is_some_and(|a| contains(a, &value)) {
                    return Err(refuse(
                        &what,
                        &value,
                        format!(
                            "it grants cluster-admin in Kubernetes; profile \"{profile}\" must name it in policy.subject.allow.O to issue it"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The rules on the request's key algorithm and size.
    pub fn check_key(&self, profile: &str, alg: KeyAlg) -> Result<()> {
        let refused = |rule: String| {
            Error::policy(format!(
                "request key {} is refused: profile \"{profile}\" {rule}",
                alg.name()
            ))
        };
        match alg {
            KeyAlg::Rsa(_) if !self.allow_rsa => Err(refused(
                "does not allow RSA keys (policy.allowed_key_algorithms)".into(),
            )),
            KeyAlg::Rsa(bits) if bits < self.min_rsa_bits => Err(refused(format!(
                "needs RSA keys of at least {} bits (policy.min_rsa_bits)",
                self.min_rsa_bits
            ))),
            KeyAlg::EcP256 | KeyAlg::EcP384 if !self.allow_ecdsa => Err(refused(
                "does not allow ECDSA keys (policy.allowed_key_algorithms)".into(),
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;
    use std::str::FromStr;

    const RSA_1024: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC0DCFVfEVIOWVFOqJjk5spHN6z
MP6Hpn5615tZVjL8fKVVS9dvZWx1o4LtvdYFWI4gEwPfNSgQGQXrZNaRAN46s8PT
TIlKqgNaJ2gRJ5kfZG7I9muRykhy8lddTrXkZ+F7PQpPnK/NjwZnFZb5ijELH5HZ
m58DCjVVIUyzY5jD/wIDAQAB
-----END PUBLIC KEY-----";
    const RSA_2048: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAsFx/g/DT3Fr9pc7nv69L
4kpw6GyQI2umKTKxtgbqQq2xAb5eV7wZPWlzcQuHlVHW6ALKSwZq7032SJallp/v
4Ce7NG0ivt8Hcwsk0wFWIXimjrPz0jQ+kg0h9JJnl8Z6/8oAgYNxBII/hbktoe3K
uTWeHLktz7V/qFrtAOHWyMdVqt05zEcCPak1fDJjVrhvvctH+QxTcDl0tXiCPMQo
MbC3fq330O5xNVm1G7fJg2m6cId6GJRQYSLi7/b4q5ocleCD0io+3JW1K79ZMaVF
XOucV63V3lW11YEbEimYvIyxlIoqYEtRzfp8WJdbaTcNUgy/bjHvxEgHFZCT+TgF
HwIDAQAB
-----END PUBLIC KEY-----";
    const EC_P256: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE9GkFZlZw03vJF4rnuT0Jt8Cw0AGn
74bvvfOv1J17c2F+3JHb8Zk2bgURXQQthQQgPU83Em8IfIHntfoIORam1Q==
-----END PUBLIC KEY-----";

    fn key(pem: &str) -> SubjectPublicKeyInfoOwned {
        let (_, der) = der::pem::decode_vec(pem.as_bytes()).unwrap();
        der::Decode::from_der(&der).unwrap()
    }

    fn dn(s: &str) -> Name {
        Name::from_str(s).unwrap()
    }

    const CA: &str = "CN=Test CA,O=acme";

    /// Check with the default policy, an EC key and the CA `CN=Test CA,O=acme`.
    fn check(p: &Policy, subject: &str, sans: &[San]) -> Result<()> {
        p.check("p", &dn(subject), sans, &key(EC_P256), &dn(CA))
    }

    fn refused(r: Result<()>, needle: &str) {
        let e = r.unwrap_err();
        assert_eq!(e.kind(), Kind::Policy, "{e}");
        assert!(e.message().contains(needle), "{e}");
        assert!(!e.message().contains('\0'), "raw NUL in the message: {e:?}");
    }

    fn dns(s: &str) -> San {
        San::Dns(s.into())
    }

    #[test]
    fn bad_dns_names_are_refused_with_their_rule() {
        let long_label = format!("{}.example.com", "a".repeat(64));
        let long_name = format!("{}.com", vec!["a".repeat(62); 4].join("."));
        assert_eq!(long_name.len(), 255);
        let cases: &[(&str, &str, &str)] = &[
            ("null prefix", "evil.com\0.good.com", "'\\0' is not allowed"),
            ("control char", "evil\u{7}.com", "'\\u{7}' is not allowed"),
            ("space", "a b.example.com", "' ' is not allowed"),
            ("bare star", "*", "bare \"*\""),
            ("star on a TLD", "*.com", "top-level domain \"com\""),
            ("star on a NUL", "*.\0", "'\\0' is not allowed"),
            ("star inside", "a.*.example.com", "'*' is not allowed"),
            ("partial star", "a*.example.com", "'*' is not allowed"),
            ("64-octet label", &long_label, "a label of 64 octets"),
            ("254+ characters", &long_name, "255 octets"),
            ("empty label", "a..example.com", "empty label"),
            ("trailing dot", "example.com.", "empty label"),
            (
                "hyphen at start",
                "-a.example.com",
                "starts or ends with a hyphen",
            ),
            ("numeric TLD", "1.2.3", "all digits"),
            ("underscore", "_srv.example.com", "'_' is not allowed"),
        ];
        for (case, name, rule) in cases {
            let r = check(&Policy::default(), "CN=x", &[dns(name)]);
            assert!(r.is_err(), "{case}: {name:?} was accepted");
            refused(r, rule);
        }
    }

    #[test]
    fn good_names_pass() {
        let ok = [
            dns("node1.example.com"),
            dns("*.example.com"),
            dns("localhost"),
            dns(&format!("{}.example.com", "a".repeat(63))),
            San::Email("admin@example.com".into()),
            San::Uri("spiffe://cluster.local/ns/x/sa/y".into()),
            San::Uri("https://[::1]:8443/x".into()),
            San::Uri("https://10.0.0.1/x".into()),
            San::Uri("urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66".into()),
            San::Ip("10.0.0.1".parse().unwrap()),
        ];
        check(&Policy::default(), "CN=node1", &ok).unwrap();
    }

    #[test]
    fn bad_emails_and_uris_are_refused() {
        let cases = [
            (San::Email("a@evil.com\0.good.com".into()), "its domain"),
            (San::Email("@example.com".into()), "local part"),
            (
                San::Email("a@*.example.com".into()),
                "wildcard is not allowed",
            ),
            (San::Uri("spiffe://evil\0/x".into()), "not allowed in a URI"),
            (San::Uri("https://a b/".into()), "' ' is not allowed"),
            (San::Uri("/relative/path".into()), "needs a scheme"),
            (San::Uri("https:///nohost".into()), "no host"),
            (San::Uri("https://ex_ample.com/".into()), "its host"),
            (San::Uri("https://example.com:99999/".into()), "port"),
            (
                San::Uri(format!("urn:{}", "x".repeat(2000))),
                "at most 1024",
            ),
        ];
        for (san, rule) in cases {
            refused(check(&Policy::default(), "CN=x", &[san]), rule);
        }
    }

    #[test]
    fn san_count_is_limited() {
        let sans: Vec<San> = (0..101)
            .map(|i| dns(&format!("n{i}.example.com")))
            .collect();
        refused(
            check(&Policy::default(), "CN=x", &sans),
            "101 subjectAltName entries are refused: profile \"p\" allows at most 100",
        );
        check(&Policy::default(), "CN=x", &sans[..100]).unwrap();
    }

    #[test]
    fn subject_values_are_bounded_and_clean() {
        let cn65 = format!("CN={}", "a".repeat(65));
        refused(
            check(&Policy::default(), &cn65, &[]),
            "65 characters; at most 64",
        );
        let cn64 = format!("CN={}", "a".repeat(64));
        check(&Policy::default(), &cn64, &[]).unwrap();
        let with_nul = Name::from_str("CN=x").unwrap();
        let mut der = der::Encode::to_der(&with_nul).unwrap();
        *der.last_mut().unwrap() = 0; // the value "x" becomes "\0"
        let with_nul: Name = der::Decode::from_der(&der).unwrap();
        let r = Policy::default().check("p", &with_nul, &[], &key(EC_P256), &dn(CA));
        refused(r, "control character");
    }

    #[test]
    fn the_cas_own_subject_is_refused_in_any_order_or_case() {
        refused(check(&Policy::default(), CA, &[]), "the CA's own subject");
        refused(
            check(&Policy::default(), "O=ACME,CN=test  ca", &[]),
            "the CA's own subject",
        );
        check(&Policy::default(), "CN=Test CA,O=acme,OU=x", &[]).unwrap();
    }

    #[test]
    fn system_masters_needs_an_explicit_allow() {
        refused(
            check(&Policy::default(), "CN=admin,O=system:masters", &[]),
            "must name it in policy.subject.allow.O",
        );
        refused(
            check(&Policy::default(), "CN=admin,O=System:Masters", &[]),
            "cluster-admin",
        );
        let admin = Policy {
            allow: vec![(SubjectAttr::O, vec!["system:masters".into()])],
            ..Policy::default()
        };
        check(&admin, "CN=admin,O=system:masters", &[]).unwrap();
        refused(check(&admin, "CN=admin,O=other", &[]), "allows only");
    }

    #[test]
    fn deny_lists_win() {
        let p = Policy {
            allow: vec![(SubjectAttr::Cn, vec!["a".into(), "b".into()])],
            deny: vec![
                (SubjectAttr::Cn, vec!["b".into()]),
                (SubjectAttr::Ou, vec!["ops".into()]),
            ],
            ..Policy::default()
        };
        check(&p, "CN=a", &[]).unwrap();
        refused(check(&p, "CN=b", &[]), "denies it (policy.subject.deny)");
        refused(check(&p, "CN=a,OU=OPS", &[]), "subject OU \"OPS\"");
    }

    #[test]
    fn keys_follow_the_profile() {
        let p = Policy::default();
        let ca = dn(CA);
        let subject = dn("CN=x");
        let r = p.check("p", &subject, &[], &key(RSA_1024), &ca);
        refused(
            r,
            "request key RSA-1024 is refused: profile \"p\" needs RSA keys of at least 2048 bits",
        );
        p.check("p", &subject, &[], &key(RSA_2048), &ca).unwrap();
        let ec_only = Policy {
            allow_rsa: false,
            ..Policy::default()
        };
        refused(
            ec_only.check("p", &subject, &[], &key(RSA_2048), &ca),
            "does not allow RSA keys",
        );
        let strict = Policy {
            min_rsa_bits: 3072,
            allow_ecdsa: false,
            ..Policy::default()
        };
        refused(
            strict.check("p", &subject, &[], &key(RSA_2048), &ca),
            "3072",
        );
        refused(
            strict.check("p", &subject, &[], &key(EC_P256), &ca),
            "ECDSA",
        );
    }

    #[test]
    fn messages_cut_long_values() {
        let huge = "a".repeat(250_000);
        let e = check(&Policy::default(), "CN=x", &[dns(&huge)]).unwrap_err();
        assert!(e.message().len() < 400, "{}", e.message().len());
        assert!(e.message().contains("(250000 characters)"), "{e}");
    }
}
