//! cfssl's signing configuration (`ca-config.json`): profiles, usages, validity and extensions.
//!
//! The file format follows cfssl's `config/config.go` (shared/reference/cfssl-behavior.md §3):
//! keys match case-insensitively, unknown keys are ignored, durations use Go syntax. Where cfssl
//! sets traps, p11ca is explicit instead:
//! - an unknown `-profile` is an error listing the profiles (cfssl falls back to `default`);
//! - an unknown usage string is an error naming it (cfssl drops it silently);
//! - a negative expiry, `not_after` not after `not_before`, and signing with a profile that has
//!   no usages are errors (cfssl issues a backwards certificate, panics, or says
//!   "no key usage available").
//!
//! `auth_keys` / `auth_key` / `prev_auth_key` (cfssl's standard HMAC authentication, used by
//! `p11ca serve` and by the remote client) and `remotes` / `remote` / `auth_remote` (signing on a
//! cfssl-protocol server) are parsed and checked as cfssl does. The few signing options p11ca
//! does not implement are accepted and ignored with a notice.
//!
//! A profile's `policy` object (p11ca's own, not cfssl's) configures the issuance policy of
//! `x509::policy`; there an unknown key is an error, since a misspelt security setting must not
//! fall back to a default unnoticed. See docs/policy.md.
//!
//! This file reads the file and holds the types; a profile is built one concern at a time in
//! `profile`, `auth_keys` loads the HMAC keys and `time` reads RFC 3339 times. The extensions a
//! profile asks for are encoded by `x509::build`.

use std::collections::BTreeMap;

use const_oid::ObjectIdentifier;
use const_oid::db::rfc5280;
use der::flagset::FlagSet;
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::KeyUsages;

use crate::cfssl::duration::GoDuration;
use crate::cfssl::json;
use crate::error::{Error, Result};
use crate::x509::build::{self, PolicyInfo};
use crate::x509::policy::Policy;

mod auth_keys;
mod profile;
mod time;

pub use auth_keys::MIN_AUTH_KEY_BYTES;

/// cfssl's default expiry (`config.DefaultConfig`): one year.
const DEFAULT_EXPIRY_SECS: i64 = 8760 * 3600;

/// Microsoft Server Gated Crypto (Go's `ExtKeyUsageMicrosoftServerGatedCrypto`).
const MICROSOFT_SGC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.10.3.3");
/// Netscape Server Gated Crypto (Go's `ExtKeyUsageNetscapeServerGatedCrypto`).
const NETSCAPE_SGC: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.113730.4.1");
/// id-kp-ipsecEndSystem (RFC 2459; Go's `ExtKeyUsageIPSECEndSystem`).
const IPSEC_END_SYSTEM: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.5");
/// id-kp-ipsecTunnel.
const IPSEC_TUNNEL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.6");
/// id-kp-ipsecUser.
const IPSEC_USER: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.7");

/// cfssl's key usage strings (`config.KeyUsage`).
const KEY_USAGES: &[(&str, KeyUsages)] = &[
    ("signing", KeyUsages::DigitalSignature),
    ("digital signature", KeyUsages::DigitalSignature),
    ("content commitment", KeyUsages::NonRepudiation),
    // cfssl 1.2's spelling, still accepted so old configs keep working.
    ("content committment", KeyUsages::NonRepudiation),
    ("key encipherment", KeyUsages::KeyEncipherment),
    ("key agreement", KeyUsages::KeyAgreement),
    ("data encipherment", KeyUsages::DataEncipherment),
    ("cert sign", KeyUsages::KeyCertSign),
    ("crl sign", KeyUsages::CRLSign),
    ("encipher only", KeyUsages::EncipherOnly),
    ("decipher only", KeyUsages::DecipherOnly),
];

/// cfssl's extended key usage strings (`config.ExtKeyUsage`).
const EXT_KEY_USAGES: &[(&str, ObjectIdentifier)] = &[
    ("any", rfc5280::ANY_EXTENDED_KEY_USAGE),
    ("server auth", rfc5280::ID_KP_SERVER_AUTH),
    ("client auth", rfc5280::ID_KP_CLIENT_AUTH),
    ("code signing", rfc5280::ID_KP_CODE_SIGNING),
    ("email protection", rfc5280::ID_KP_EMAIL_PROTECTION),
    ("s/mime", rfc5280::ID_KP_EMAIL_PROTECTION),
    ("ipsec end system", IPSEC_END_SYSTEM),
    ("ipsec tunnel", IPSEC_TUNNEL),
    ("ipsec user", IPSEC_USER),
    ("timestamping", rfc5280::ID_KP_TIME_STAMPING),
    ("ocsp signing", rfc5280::ID_KP_OCSP_SIGNING),
    ("microsoft sgc", MICROSOFT_SGC),
    ("netscape sgc", NETSCAPE_SGC),
];

/// A shared secret of cfssl's "standard" authentication (an `auth_keys` entry): the key of an
/// HMAC-SHA256 over the request bytes. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthKey {
    /// The entry's name in `auth_keys`.
    pub name: String,
    key: Vec<u8>,
}

impl AuthKey {
    /// A key named `name` with the secret `key` (for tests and callers that build keys).
    pub fn new(name: impl Into<String>, key: Vec<u8>) -> Self {
        Self {
            name: name.into(),
            key,
        }
    }

    /// The secret bytes.
    pub fn secret(&self) -> &[u8] {
        &self.key
    }
}

impl std::fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuthKey({:?}, {} bytes)", self.name, self.key.len())
    }
}

/// Where a profile's requests are signed instead of locally (`remote`, or `auth_remote` with
/// its key), as a cfssl client config says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteSpec {
    /// `host:port` (or a URL) of the cfssl-protocol server, from `remotes`.
    pub server: String,
    /// `auth_remote.auth_key`: sign through /authsign with this key.
    pub auth_key: Option<AuthKey>,
}

/// A parsed `ca-config.json` (or cfssl's built-in default when no `-config` is given).
#[derive(Clone, Debug)]
pub struct SigningConfig {
    /// The file it came from, for messages; empty for the built-in default.
    file: String,
    default: Profile,
    profiles: BTreeMap<String, Profile>,
    /// The file's `auth_keys`, for keys named outside a profile (`serve -revoke-auth-key`).
    auth_keys: RawKeys,
}

/// `auth_keys` as written; its Debug shows the names only, never a key.
#[derive(Clone, Default)]
struct RawKeys(BTreeMap<String, RawAuthKey>);

impl std::fmt::Debug for RawKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// One fully resolved signing profile.
#[derive(Clone, Debug)]
pub struct Profile {
    /// `default` or the profile's name.
    pub name: String,
    /// keyUsage bits.
    pub key_usage: FlagSet<KeyUsages>,
    /// extKeyUsage OIDs in `usages` order, without duplicates.
    pub ext_key_usage: Vec<ObjectIdentifier>,
    /// Validity period in seconds (> 0).
    pub expiry_secs: i64,
    /// How far notBefore is set back from now; `None` means the caller's default (5 minutes).
    pub backdate_secs: Option<i64>,
    /// Fixed notBefore (Unix seconds) from `not_before`.
    pub not_before: Option<i64>,
    /// Fixed notAfter (Unix seconds) from `not_after`.
    pub not_after: Option<i64>,
    /// Issue CA certificates (`ca_constraint.is_ca`).
    pub is_ca: bool,
    /// pathLenConstraint as cfssl derives it (`None` = unlimited).
    pub max_path_len: Option<u8>,
    /// CRL distribution point URL.
    pub crl_url: Option<String>,
    /// AIA OCSP URLs.
    pub ocsp_urls: Vec<String>,
    /// AIA caIssuers URLs.
    pub issuer_urls: Vec<String>,
    /// Add id-pkix-ocsp-nocheck: `ocsp_no_check`, or by default with usage "ocsp signing".
    pub ocsp_no_check: bool,
    /// The `name_whitelist` regular expression, compiled once; see [`Profile::allows`].
    pub name_whitelist: Option<Regex>,
    /// The issuance policy (`policy`; [`Policy::default`] when absent).
    pub policy: Policy,
    /// certificatePolicies entries.
    pub policies: Vec<PolicyInfo>,
    /// `auth_key`: a server accepts this profile only through /authsign with this key.
    pub auth_key: Option<AuthKey>,
    /// `prev_auth_key`: a previous key a server still accepts (key rotation).
    pub prev_auth_key: Option<AuthKey>,
    /// `remote` / `auth_remote`: a client signs this profile on a remote server.
    pub remote: Option<RemoteSpec>,
}

// ---- the file as written (keys already folded to lower case by json::decode) ----

#[derive(Deserialize, Default)]
struct RawFile {
    signing: Option<RawSigning>,
    #[serde(default)]
    auth_keys: BTreeMap<String, RawAuthKey>,
    #[serde(default)]
    remotes: BTreeMap<String, String>,
    ocsp: Option<Value>,
}

#[derive(Deserialize, Default, Clone)]
struct RawAuthKey {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    key: String,
}

#[derive(Deserialize, Default)]
struct RawAuthRemote {
    #[serde(default)]
    remote: String,
    #[serde(default)]
    auth_key: String,
}

#[derive(Deserialize, Default)]
struct RawSigning {
    default: Option<RawProfile>,
    #[serde(default)]
    profiles: BTreeMap<String, RawProfile>,
}

#[derive(Deserialize, Default)]
struct RawProfile {
    usages: Option<Vec<String>>,
    expiry: Option<String>,
    backdate: Option<String>,
    not_before: Option<String>,
    not_after: Option<String>,
    ca_constraint: Option<RawCaConstraint>,
    crl_url: Option<String>,
    ocsp_url: Option<String>,
    issuer_urls: Option<Vec<String>>,
    ocsp_no_check: Option<bool>,
    name_whitelist: Option<String>,
    policies: Option<Vec<RawPolicy>>,
    /// p11ca's issuance policy (not in cfssl).
    policy: Option<RawIssuance>,
    // Authentication and remote signing.
    auth_key: Option<String>,
    prev_auth_key: Option<String>,
    remote: Option<String>,
    auth_remote: Option<RawAuthRemote>,
    // API only.
    allowed_extensions: Option<Value>,
    clientprovidesserialnumbers: Option<Value>,
    // Local signing options p11ca does not implement.
    copy_extensions: Option<Value>,
    csrwhitelist: Option<Value>,
    ct_log_servers: Option<Value>,
    cert_store: Option<Value>,
    lint_error_level: Option<Value>,
    ignored_lints: Option<Value>,
    ignored_lint_sources: Option<Value>,
}

#[derive(Deserialize, Default)]
struct RawCaConstraint {
    #[serde(default)]
    is_ca: bool,
    #[serde(default)]
    max_path_len: i64,
    #[serde(default)]
    max_path_len_zero: bool,
}

/// The `policy` object of a profile. p11ca's own section, so unlike cfssl's fields an unknown
/// key is an error: a misspelt security setting must not silently fall back to a default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIssuance {
    max_sans: Option<usize>,
    min_rsa_bits: Option<usize>,
    allowed_key_algorithms: Option<Vec<String>>,
    subject: Option<RawSubjectRules>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubjectRules {
    #[serde(default)]
    allow: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    deny: BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize)]
struct RawPolicy {
    #[serde(default)]
    id: String,
    #[serde(default)]
    qualifiers: Vec<RawQualifier>,
}

#[derive(Deserialize)]
struct RawQualifier {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    value: String,
}

/// Go's notion of a value that was set (not false, 0, "" or empty).
fn is_set(v: &Option<Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
    }
}

const API_ONLY: &str = "applies only to cfssl's signing API; ignored";
const UNSUPPORTED: &str = "is not supported by p11ca; ignored";

impl RawProfile {
    fn ignored(&self) -> [(&'static str, &Option<Value>, &'static str); 9] {
        [
            ("allowed_extensions", &self.allowed_extensions, API_ONLY),
            (
                "ClientProvidesSerialNumbers",
                &self.clientprovidesserialnumbers,
                API_ONLY,
            ),
            ("copy_extensions", &self.copy_extensions, UNSUPPORTED),
            ("CSRWhitelist", &self.csrwhitelist, UNSUPPORTED),
            ("ct_log_servers", &self.ct_log_servers, UNSUPPORTED),
            ("cert_store", &self.cert_store, UNSUPPORTED),
            ("lint_error_level", &self.lint_error_level, UNSUPPORTED),
            ("ignored_lints", &self.ignored_lints, UNSUPPORTED),
            (
                "ignored_lint_sources",
                &self.ignored_lint_sources,
                UNSUPPORTED,
            ),
        ]
    }
}

/// Look up a usage string; cfssl compares exactly, we also accept other letter case.
fn lookup<T: Copy>(table: &[(&str, T)], s: &str) -> Option<T> {
    let lower = s.to_lowercase();
    table.iter().find(|(k, _)| *k == lower).map(|(_, v)| *v)
}

/// Build context for one profile: where it is, for messages, and the file's `auth_keys` and
/// `remotes` that its fields refer to.
struct Ctx<'a> {
    file: &'a str,
    name: &'a str,
    /// Field path prefix, e.g. `signing.profiles.kubernetes`.
    path: String,
    auth_keys: &'a BTreeMap<String, RawAuthKey>,
    remotes: &'a BTreeMap<String, String>,
}

impl Ctx<'_> {
    fn field_err(&self, field: &str, msg: impl std::fmt::Display) -> Error {
        Error::input(format!(
            "{}: field \"{}.{field}\": {msg}",
            self.file, self.path
        ))
    }

    fn notice(&self, field: &str, msg: impl std::fmt::Display) -> String {
        format!("{}: field \"{}.{field}\" {msg}", self.file, self.path)
    }

    fn duration(&self, field: &str, v: &str) -> Result<GoDuration> {
        GoDuration::parse(v).map_err(|m| self.field_err(field, m))
    }

    fn time(&self, field: &str, v: &str) -> Result<i64> {
        time::parse_rfc3339(v).map_err(|m| {
            self.field_err(
                field,
                format!("invalid time \"{v}\": {m}; use RFC 3339 such as \"2030-01-01T00:00:00Z\""),
            )
        })
    }

    /// Resolve a `remotes` entry referred to by `field`.
    fn remote(&self, field: &str, name: &str) -> Result<String> {
        match self.remotes.get(name).filter(|s| !s.trim().is_empty()) {
            Some(s) => Ok(s.trim().to_string()),
            None => Err(self.field_err(
                field,
                format!("\"{name}\" is not in the remotes section; add \"remotes\": {{\"{name}\": \"host:port\"}}"),
            )),
        }
    }

    fn ascii_url(&self, field: &str, v: &str) -> Result<()> {
        if v.is_ascii() {
            Ok(())
        } else {
            Err(self.field_err(
                field,
                format!("URL \"{v}\" is not ASCII; percent-encode it"),
            ))
        }
    }
}

impl SigningConfig {
    /// Parse ca-config.json bytes read from `file`. Malformed JSON, wrong types, bad durations,
    /// bad regular expressions and unknown usage strings in any profile are input errors naming
    /// the file and the field path. `notices` receives one line per ignored field.
    pub fn from_json(bytes: &[u8], file: &str, notices: &mut Vec<String>) -> Result<Self> {
        let raw: RawFile = json::decode(bytes, file, &["profiles", "auth_keys", "remotes"])?;
        if is_set(&raw.ocsp) {
            notices.push(format!(
                "{file}: field \"ocsp\" configures cfssl's OCSP responder, which p11ca does not have; ignored"
            ));
        }
        let (auth_keys, remotes) = (raw.auth_keys, raw.remotes);
        let Some(signing) = raw.signing else {
            return Err(Error::input(format!(
                "{file}: no \"signing\" field; expected {{\"signing\": {{\"default\": {{...}}, \"profiles\": {{...}}}}}}"
            )));
        };
        // A missing `default` is cfssl's DefaultConfig, as in cfssl.
        let default = match &signing.default {
            Some(raw) => {
                let ctx = Ctx {
                    file,
                    name: "default",
                    path: "signing.default".into(),
                    auth_keys: &auth_keys,
                    remotes: &remotes,
                };
                profile::build(&ctx, raw, None, notices)?
            }
            None => Self::cfssl_default().default,
        };
        let mut profiles = BTreeMap::new();
        for (name, raw) in &signing.profiles {
            let ctx = Ctx {
                file,
                name,
                path: format!("signing.profiles.{name}"),
                auth_keys: &auth_keys,
                remotes: &remotes,
            };
            profiles.insert(
                name.clone(),
                profile::build(&ctx, raw, Some(&default), notices)?,
            );
        }
        Ok(Self {
            file: file.to_string(),
            default,
            profiles,
            auth_keys: RawKeys(auth_keys),
        })
    }

    /// The `auth_keys` entry `name`, for `flag` (checked as a profile's `auth_key` is).
    pub fn named_auth_key(&self, name: &str, flag: &str) -> Result<AuthKey> {
        let remotes = BTreeMap::new();
        let ctx = Ctx {
            file: &self.file,
            name: flag,
            path: flag.to_string(),
            auth_keys: &self.auth_keys.0,
            remotes: &remotes,
        };
        ctx.auth_key("auth_key", name)
    }

    /// cfssl's default when no `-config` is given: signing, key encipherment, server auth,
    /// client auth; 8760h.
    pub fn cfssl_default() -> Self {
        let default = Profile {
            name: "default".into(),
            key_usage: KeyUsages::DigitalSignature | KeyUsages::KeyEncipherment,
            ext_key_usage: vec![rfc5280::ID_KP_SERVER_AUTH, rfc5280::ID_KP_CLIENT_AUTH],
            expiry_secs: DEFAULT_EXPIRY_SECS,
            backdate_secs: None,
            not_before: None,
            not_after: None,
            is_ca: false,
            max_path_len: None,
            crl_url: None,
            ocsp_urls: Vec::new(),
            issuer_urls: Vec::new(),
            ocsp_no_check: false,
            name_whitelist: None,
            policy: Policy::default(),
            policies: Vec::new(),
            auth_key: None,
            prev_auth_key: None,
            remote: None,
        };
        Self {
            file: String::new(),
            default,
            profiles: BTreeMap::new(),
            auth_keys: RawKeys::default(),
        }
    }

    /// Point every profile at the remote server `server` (cfssl's `-remote`, which overrides
    /// the `remotes` of the config); an `auth_remote` key is kept.
    pub fn override_remote(&mut self, server: &str) {
        for p in std::iter::once(&mut self.default).chain(self.profiles.values_mut()) {
            let auth_key = p.remote.take().and_then(|r| r.auth_key);
            p.remote = Some(RemoteSpec {
                server: server.to_string(),
                auth_key,
            });
        }
    }

    /// The profile a client uses to reach a remote signer: the named one if the config has it,
    /// else the default (as cfssl: the server, not the client, checks the profile name).
    pub fn client_profile(&self, name: Option<&str>) -> &Profile {
        name.and_then(|n| self.profiles.get(n))
            .unwrap_or(&self.default)
    }

    /// Names of the profiles, sorted.
    pub fn profile_names(&self) -> Vec<String> {
        self.profiles.keys().cloned().collect()
    }

    fn available(&self) -> String {
        if self.profiles.is_empty() {
            "it defines no profiles".to_string()
        } else {
            format!("profiles: {}", self.profile_names().join(", "))
        }
    }

    /// The profile to sign with: `None` or `Some("")` gives `default`; an unknown name is a
    /// policy error listing the profiles (cfssl would silently use `default`). A profile with no
    /// usages is a policy error too.
    pub fn profile(&self, name: Option<&str>) -> Result<&Profile> {
        let name = name.unwrap_or("");
        // As in cfssl, a profile literally named "default" wins over signing.default.
        let profile = match self.profiles.get(name) {
            Some(p) => p,
            None if name.is_empty() || name == "default" => &self.default,
            None if self.file.is_empty() => {
                return Err(Error::policy(format!(
                    "unknown profile \"{name}\": no -config was given, so only the default profile exists; pass -config ca-config.json to use named profiles"
                )));
            }
            None => {
                return Err(Error::policy(format!(
                    "unknown profile \"{name}\" in {}; {} (or omit -profile for default)",
                    self.file,
                    self.available()
                )));
            }
        };
        if profile.key_usage.is_empty() && profile.ext_key_usage.is_empty() {
            let hint = if profile.name == "default" && !self.profiles.is_empty() {
                format!("; choose a profile with -profile ({})", self.available())
            } else {
                String::new()
            };
            return Err(Error::policy(format!(
                "profile \"{}\" in {} has no usages, so it cannot sign; add \"usages\" such as [\"signing\", \"key encipherment\", \"server auth\"]{hint}",
                profile.name,
                if self.file.is_empty() {
                    "the built-in configuration"
                } else {
                    &self.file
                },
            )));
        }
        Ok(profile)
    }
}

impl Profile {
    /// The profile's extensions in Go's order for a leaf, as two vectors around the ones the
    /// caller adds (SKI, AKI, SAN): `before_ski` = keyUsage (critical, if any bits), EKU (if
    /// any), basicConstraints (critical); `after_san` = AIA (if OCSP or issuer URLs), CRL DP (if
    /// `crl_url`), certificatePolicies (if any), OCSP no-check (NULL, if set).
    pub fn extensions(&self) -> Result<(Vec<Extension>, Vec<Extension>)> {
        let mut before_ski = Vec::new();
        if !self.key_usage.is_empty() {
            before_ski.push(build::key_usage_ext(self.key_usage)?);
        }
        if !self.ext_key_usage.is_empty() {
            before_ski.push(build::eku_ext(self.ext_key_usage.clone())?);
        }
        before_ski.push(build::basic_constraints_ext(self.is_ca, self.max_path_len)?);

        let mut after_san = Vec::new();
        if !self.ocsp_urls.is_empty() || !self.issuer_urls.is_empty() {
            after_san.push(build::aia_ext(&self.ocsp_urls, &self.issuer_urls)?);
        }
        if let Some(url) = &self.crl_url {
            after_san.push(build::crl_dp_ext(url)?);
        }
        if !self.policies.is_empty() {
            after_san.push(build::policies_ext(&self.policies)?);
        }
        if self.ocsp_no_check {
            after_san.push(build::ocsp_no_check_ext()?);
        }
        Ok((before_ski, after_san))
    }

    /// The profile's usages as cfssl's strings (the first name of each bit, then the EKUs).
    pub fn usage_names(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (name, bit) in KEY_USAGES {
            if self.key_usage.contains(*bit)
                && !KEY_USAGES
                    .iter()
                    .any(|(n, b)| b == bit && out.iter().any(|o| o == n))
            {
                out.push((*name).to_string());
            }
        }
        for oid in &self.ext_key_usage {
            if let Some((name, _)) = EXT_KEY_USAGES.iter().find(|(_, o)| o == oid) {
                out.push((*name).to_string());
            }
        }
        out
    }

    /// The validity period as a Go duration string (`8760h0m0s`), as cfssl's /info shows it.
    pub fn expiry_string(&self) -> String {
        let s = self.expiry_secs;
        format!("{}h{}m{}s", s / 3600, (s % 3600) / 60, s % 60)
    }

    /// The `name_whitelist` check (an unanchored Go regexp search) over the CN and every SAN
    /// string (DNS, email, URI; IPs as text). An empty CN is skipped, as in cfssl. `Ok(())` when
    /// there is no whitelist or everything matches; otherwise a policy error naming the first
    /// value that does not match.
    pub fn allows(&self, cn: &str, sans: &[String]) -> Result<()> {
        let Some(re) = &self.name_whitelist else {
            return Ok(());
        };
        let src = re.as_str();
        let cn_item = (!cn.is_empty()).then_some(("CN", cn));
        for (what, value) in cn_item
            .into_iter()
            .chain(sans.iter().map(|s| ("SAN", s.as_str())))
        {
            if !re.is_match(value) {
                return Err(Error::policy(format!(
                    "{what} \"{value}\" does not match the name_whitelist /{src}/ of profile \"{}\"",
                    self.name
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;
    use const_oid::db::rfc6960;
    use der::asn1::Ia5String;
    use der::{Decode, Encode};
    use x509_cert::ext::pkix::CertificatePolicies;

    use crate::x509::policy::SubjectAttr;
    use x509_cert::ext::pkix::crl::dp::DistributionPoint;
    use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
    use x509_cert::ext::pkix::{
        AuthorityInfoAccessSyntax, BasicConstraints, CrlDistributionPoints, ExtendedKeyUsage,
        KeyUsage,
    };

    const TUTORIAL: &[u8] = include_bytes!("../../../tests/data/ca-config.json");

    fn load(s: &str) -> Result<SigningConfig> {
        SigningConfig::from_json(s.as_bytes(), "ca-config.json", &mut Vec::new())
    }

    fn load_notices(s: &str) -> (SigningConfig, Vec<String>) {
        let mut n = Vec::new();
        let c = SigningConfig::from_json(s.as_bytes(), "ca-config.json", &mut n).unwrap();
        (c, n)
    }

    /// A config with one profile `p` whose body is `body` (JSON members, without braces).
    fn one(body: &str) -> Result<Profile> {
        load(&format!(
            r#"{{"signing":{{"default":{{"expiry":"8760h"}},"profiles":{{"p":{{{body}}}}}}}}}"#
        ))?
        .profile(Some("p"))
        .cloned()
    }

    fn input_err(r: Result<impl std::fmt::Debug>) -> String {
        let e = r.unwrap_err();
        assert_eq!(e.kind(), Kind::Input, "{e}");
        e.message().to_string()
    }

    #[test]
    fn tutorial_config() {
        let mut notices = Vec::new();
        let c = SigningConfig::from_json(TUTORIAL, "ca-config.json", &mut notices).unwrap();
        assert!(notices.is_empty(), "{notices:?}");
        assert_eq!(c.profile_names(), vec!["mosquitood-k8s".to_string()]);
        let p = c.profile(Some("mosquitood-k8s")).unwrap();
        assert_eq!(p.name, "mosquitood-k8s");
        assert_eq!(
            p.key_usage,
            KeyUsages::DigitalSignature | KeyUsages::KeyEncipherment
        );
        assert_eq!(
            p.ext_key_usage,
            vec![rfc5280::ID_KP_SERVER_AUTH, rfc5280::ID_KP_CLIENT_AUTH]
        );
        assert_eq!(p.expiry_secs, 8760 * 3600);
        assert_eq!(p.backdate_secs, None);
        assert!(!p.is_ca);

        for none in [None, Some("")] {
            let e = c.profile(none).unwrap_err();
            assert_eq!(e.kind(), Kind::Policy);
            assert!(
                e.message().contains("\"default\"") && e.message().contains("no usages"),
                "{e}"
            );
            assert!(e.message().contains("mosquitood-k8s"), "{e}");
        }
    }

    #[test]
    fn unknown_profile_lists_names() {
        let c = load(
            r#"{"signing":{"default":{"expiry":"1h"},"profiles":{
                "b":{"usages":["signing"],"expiry":"1h"},"A":{"usages":["signing"],"expiry":"1h"}}}}"#,
        )
        .unwrap();
        assert_eq!(c.profile_names(), vec!["A".to_string(), "b".to_string()]);
        let e = c.profile(Some("x")).unwrap_err();
        assert_eq!(e.kind(), Kind::Policy);
        assert_eq!(
            e.message(),
            "unknown profile \"x\" in ca-config.json; profiles: A, b (or omit -profile for default)"
        );
        // Profile names keep their case.
        assert!(c.profile(Some("a")).is_err());
        assert_eq!(c.profile(Some("A")).unwrap().name, "A");
        let e = SigningConfig::cfssl_default()
            .profile(Some("x"))
            .unwrap_err();
        assert!(e.message().contains("no -config"), "{e}");
    }

    #[test]
    fn cfssl_default_profile() {
        let c = SigningConfig::cfssl_default();
        assert!(c.profile_names().is_empty());
        let p = c.profile(None).unwrap();
        assert_eq!(p.name, "default");
        assert_eq!(
            p.key_usage,
            KeyUsages::DigitalSignature | KeyUsages::KeyEncipherment
        );
        assert_eq!(
            p.ext_key_usage,
            vec![rfc5280::ID_KP_SERVER_AUTH, rfc5280::ID_KP_CLIENT_AUTH]
        );
        assert_eq!(p.expiry_secs, 8760 * 3600);
        // A file without signing.default gets the same default.
        let c = load(r#"{"signing":{"profiles":{}}}"#).unwrap();
        assert_eq!(c.profile(Some("default")).unwrap().expiry_secs, 8760 * 3600);
        let m = input_err(load(r#"{"auth_keys":{}}"#));
        assert!(m.contains("\"signing\""), "{m}");
    }

    #[test]
    fn unknown_usage_is_an_error() {
        let m = input_err(one(r#""usages":["signing","server-auth"],"expiry":"1h""#));
        assert!(
            m.starts_with("ca-config.json: field \"signing.profiles.p.usages[1]\""),
            "{m}"
        );
        assert!(
            m.contains("unknown usage \"server-auth\" in profile \"p\""),
            "{m}"
        );
        assert!(m.contains("did you mean \"server auth\""), "{m}");
        // Also in a profile that is never used, and in the default.
        let m = input_err(load(
            r#"{"signing":{"default":{"expiry":"1h","usages":["bogus"]}}}"#,
        ));
        assert!(
            m.contains("signing.default.usages[0]") && m.contains("\"bogus\""),
            "{m}"
        );
        // A wrong type names the field.
        let m = input_err(one(r#""usages":"signing","expiry":"1h""#));
        assert!(m.contains("signing.profiles.p.usages"), "{m}");
    }

    #[test]
    fn full_usage_vocabulary() {
        for spelling in [
            "content commitment",
            "content committment",
            "Content Commitment",
        ] {
            let p = one(&format!(r#""usages":["{spelling}"],"expiry":"1h""#)).unwrap();
            assert_eq!(p.key_usage, FlagSet::from(KeyUsages::NonRepudiation));
        }
        let all: Vec<String> = KEY_USAGES.iter().map(|(k, _)| format!("\"{k}\"")).collect();
        let p = one(&format!(r#""usages":[{}],"expiry":"1h""#, all.join(","))).unwrap();
        assert_eq!(p.key_usage, FlagSet::<KeyUsages>::full());
        let ekus: Vec<String> = EXT_KEY_USAGES
            .iter()
            .map(|(k, _)| format!("\"{k}\""))
            .collect();
        let p = one(&format!(r#""usages":[{}],"expiry":"1h""#, ekus.join(","))).unwrap();
        assert!(p.key_usage.is_empty());
        // s/mime duplicates email protection and is dropped.
        assert_eq!(p.ext_key_usage.len(), EXT_KEY_USAGES.len() - 1);
        assert_eq!(p.ext_key_usage[0].to_string(), "2.5.29.37.0");
        assert!(
            p.ext_key_usage
                .contains(&"1.3.6.1.4.1.311.10.3.3".parse().unwrap())
        );
        assert!(
            p.ext_key_usage
                .contains(&"2.16.840.1.113730.4.1".parse().unwrap())
        );
        assert!(
            p.ext_key_usage
                .contains(&"1.3.6.1.5.5.7.3.7".parse().unwrap())
        );
    }

    #[test]
    fn empty_profile_is_refused_when_used() {
        let c = load(r#"{"signing":{"default":{"expiry":"1h"},"profiles":{"e":{"expiry":"1h","usages":[]}}}}"#)
            .unwrap();
        let e = c.profile(Some("e")).unwrap_err();
        assert_eq!(e.kind(), Kind::Policy);
        assert!(
            e.message().contains("profile \"e\"") && e.message().contains("no usages"),
            "{e}"
        );
    }

    #[test]
    fn expiry_and_backdate() {
        let m = input_err(one(r#""usages":["signing"],"expiry":"1y""#));
        assert!(
            m.starts_with(
                "ca-config.json: field \"signing.profiles.p.expiry\": invalid duration \"1y\""
            ),
            "{m}"
        );
        let m = input_err(one(r#""usages":["signing"],"expiry":"-1h""#));
        assert!(
            m.contains("signing.profiles.p.expiry") && m.contains("negative"),
            "{m}"
        );
        let m = input_err(one(r#""usages":["signing"],"expiry":3600"#));
        assert!(m.contains("signing.profiles.p.expiry"), "{m}");
        // A named profile without expiry, or with 0, takes the default's.
        assert_eq!(
            one(r#""usages":["signing"]"#).unwrap().expiry_secs,
            8760 * 3600
        );
        assert_eq!(
            one(r#""usages":["signing"],"expiry":"0s""#)
                .unwrap()
                .expiry_secs,
            8760 * 3600
        );
        assert_eq!(
            one(r#""usages":["signing"],"expiry":"1h30m""#)
                .unwrap()
                .expiry_secs,
            5400
        );
        // The default must have one.
        let m = input_err(load(r#"{"signing":{"default":{"usages":["signing"]}}}"#));
        assert!(
            m.contains("signing.default.expiry") && m.contains("missing"),
            "{m}"
        );
        let m = input_err(load(r#"{"signing":{"default":{"expiry":"0h"}}}"#));
        assert!(
            m.contains("signing.default.expiry") && m.contains("longer than 0"),
            "{m}"
        );

        let p = one(r#""usages":["signing"],"backdate":"1h""#).unwrap();
        assert_eq!(p.backdate_secs, Some(3600));
        assert_eq!(
            one(r#""usages":["signing"],"backdate":"0s""#)
                .unwrap()
                .backdate_secs,
            None
        );
        assert_eq!(
            one(r#""usages":["signing"],"backdate":"-10m""#)
                .unwrap()
                .backdate_secs,
            Some(-600)
        );
        let m = input_err(one(r#""usages":["signing"],"backdate":"5 m""#));
        assert!(m.contains("signing.profiles.p.backdate"), "{m}");
    }

    #[test]
    fn fixed_validity() {
        let p = one(r#""usages":["signing"],"not_before":"2030-01-01T00:00:00Z","not_after":"2031-01-01T00:00:00.5+01:00""#)
            .unwrap();
        assert_eq!(p.not_before, Some(1_893_456_000));
        assert_eq!(p.not_after, Some(1_924_992_000 - 3600));
        let m = input_err(one(
            r#""usages":["signing"],"not_before":"2031-01-01T00:00:00Z","not_after":"2030-01-01T00:00:00Z""#,
        ));
        assert!(
            m.contains("signing.profiles.p.not_after") && m.contains("not after not_before"),
            "{m}"
        );
        for bad in [
            "2030-01-01",
            "2030-02-30T00:00:00Z",
            "2030-01-01 00:00:00Z",
            "2030-01-01T00:00:00",
            "1969-12-31T23:59:59Z",
            "2030-01-01T00:00:00+1:00",
        ] {
            let m = input_err(one(&format!(
                r#""usages":["signing"],"not_before":"{bad}""#
            )));
            assert!(
                m.contains("signing.profiles.p.not_before") && m.contains("RFC 3339"),
                "{bad}: {m}"
            );
        }
    }

    #[test]
    fn ca_constraint_and_path_len() {
        let pl = |c: &str| {
            one(&format!(r#""usages":["cert sign"],"ca_constraint":{c}"#))
                .unwrap()
                .max_path_len
        };
        assert_eq!(pl(r#"{"is_ca":true}"#), None);
        assert_eq!(pl(r#"{"is_ca":true,"max_path_len":0}"#), None);
        assert_eq!(
            pl(r#"{"is_ca":true,"max_path_len":0,"max_path_len_zero":true}"#),
            Some(0)
        );
        assert_eq!(pl(r#"{"is_ca":true,"max_path_len":2}"#), Some(2));
        assert_eq!(
            pl(r#"{"is_ca":true,"max_path_len":2,"max_path_len_zero":true}"#),
            Some(2)
        );
        assert_eq!(pl(r#"{"is_ca":true,"max_path_len":-1}"#), None);
        let m = input_err(one(
            r#""usages":["cert sign"],"ca_constraint":{"is_ca":true,"max_path_len":256}"#,
        ));
        assert!(m.contains("ca_constraint.max_path_len"), "{m}");

        let p = one(
            r#""usages":["cert sign","crl sign"],"ca_constraint":{"is_ca":true,"max_path_len":1}"#,
        )
        .unwrap();
        assert!(p.is_ca);
        let (before, _) = p.extensions().unwrap();
        let bc = BasicConstraints::from_der(before[1].extn_value.as_bytes()).unwrap();
        assert!(before[1].critical);
        assert!(bc.ca);
        assert_eq!(bc.path_len_constraint, Some(1));

        // is_ca without "cert sign" is allowed, with a notice.
        let (_, n) = load_notices(
            r#"{"signing":{"default":{"expiry":"1h"},"profiles":{"ca":{"usages":["signing"],"ca_constraint":{"is_ca":true}}}}}"#,
        );
        assert!(n.len() == 1 && n[0].contains("\"cert sign\""), "{n:?}");
    }

    #[test]
    fn name_whitelist() {
        let p = one(r#""usages":["server auth"],"name_whitelist":"\\.example\\.com$""#).unwrap();
        assert!(
            p.allows(
                "www.example.com",
                &["a.example.com".into(), "x@mail.example.com".into()]
            )
            .is_ok()
        );
        assert!(p.allows("", &["a.example.com".into()]).is_ok());
        let e = p
            .allows(
                "www.example.com",
                &["a.example.com".into(), "evil.org".into()],
            )
            .unwrap_err();
        assert_eq!(e.kind(), Kind::Policy);
        assert!(e.message().contains("\"evil.org\""), "{e}");
        let e = p.allows("bad", &[]).unwrap_err();
        assert!(e.message().contains("CN \"bad\""), "{e}");
        assert!(
            one(r#""usages":["server auth"]"#)
                .unwrap()
                .allows("anything", &["x".into()])
                .is_ok()
        );
        let m = input_err(one(r#""usages":["server auth"],"name_whitelist":"(""#));
        assert!(m.contains("signing.profiles.p.name_whitelist"), "{m}");
    }

    #[test]
    fn issuance_policy_is_parsed_with_defaults() {
        let p = one(r#""usages":["server auth"]"#).unwrap();
        assert_eq!(p.policy, Policy::default());
        let p = one(
            r#""usages":["server auth"],"Policy":{"Max_SANs":5,"min_rsa_bits":3072,
               "allowed_key_algorithms":["ECDSA"],
               "subject":{"allow":{"O":["system:masters"]},"deny":{"cn":["root"]}}}"#,
        )
        .unwrap();
        assert_eq!(p.policy.max_sans, 5);
        assert_eq!(p.policy.min_rsa_bits, 3072);
        assert!(!p.policy.allow_rsa && p.policy.allow_ecdsa);
        assert_eq!(
            p.policy.allow,
            [(SubjectAttr::O, vec!["system:masters".to_string()])]
        );
        assert_eq!(p.policy.deny, [(SubjectAttr::Cn, vec!["root".to_string()])]);
        // Keys not given keep their defaults.
        let p = one(r#""usages":["server auth"],"policy":{"max_sans":7}"#).unwrap();
        assert_eq!(p.policy.min_rsa_bits, 2048);
        assert!(p.policy.allow_rsa && p.policy.allow_ecdsa);
    }

    #[test]
    fn profiles_inherit_the_default_policy() {
        let c = load(
            r#"{"signing":{"default":{"usages":["signing"],"expiry":"1h","policy":{"max_sans":3}},
                "profiles":{"a":{"usages":["signing"]},"b":{"usages":["signing"],"policy":{}}}}}"#,
        )
        .unwrap();
        assert_eq!(c.profile(None).unwrap().policy.max_sans, 3);
        assert_eq!(c.profile(Some("a")).unwrap().policy.max_sans, 3);
        assert_eq!(c.profile(Some("b")).unwrap().policy.max_sans, 100);
    }

    #[test]
    fn issuance_policy_errors_name_the_field() {
        let cases = [
            (r#"{"max_san":5}"#, "unknown field `max_san`"),
            (r#"{"max_sans":0}"#, "policy.max_sans\": 0 is out of range"),
            (r#"{"max_sans":-1}"#, "max_sans"),
            (
                r#"{"min_rsa_bits":1024}"#,
                "policy.min_rsa_bits\": 1024 is out of range",
            ),
            (
                r#"{"allowed_key_algorithms":["dsa"]}"#,
                "unknown algorithm \"dsa\"",
            ),
            (
                r#"{"allowed_key_algorithms":[]}"#,
                "nothing could be signed",
            ),
            (
                r#"{"subject":{"allow":{"L":["x"]}}}"#,
                "policy.subject.allow.l\": unknown subject attribute",
            ),
            (
                r#"{"subject":{"deny":{"O":[""]}}}"#,
                "policy.subject.deny.o[0]\": empty value",
            ),
            (r#"{"subject":{"permit":{}}}"#, "unknown field `permit`"),
        ];
        for (policy, needle) in cases {
            let m = input_err(one(&format!(r#""usages":["signing"],"policy":{policy}"#)));
            assert!(m.contains(needle), "{policy}: {m}");
            assert!(
                m.starts_with("ca-config.json: field \"signing.profiles.p"),
                "{m}"
            );
        }
    }

    #[test]
    fn auth_keys_and_remotes_are_parsed() {
        let (c, n) = load_notices(
            r#"{"signing":{"default":{"expiry":"1h","auth_key":"k"},"profiles":{
                "r":{"remote":"srv","copy_extensions":false},
                "a":{"auth_remote":{"remote":"srv","auth_key":"k"}},
                "s":{"usages":["signing"],"expiry":"1h","auth_key":"k","prev_auth_key":"old","copy_extensions":true}}},
               "auth_keys":{"k":{"type":"standard","key":"00ff00ff00ff00ff00ff00ff00ff00ff"},"old":{"type":"standard","key":"0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A"}},
               "remotes":{"srv":"127.0.0.1:8888"}}"#,
        );
        // Only the unsupported option is noticed now.
        assert_eq!(n.len(), 1, "{n:?}");
        assert!(
            n[0].contains("\"signing.profiles.s.copy_extensions\""),
            "{n:?}"
        );
        let s = c.profile(Some("s")).unwrap();
        assert_eq!(s.auth_key.as_ref().unwrap().secret(), [0, 0xff].repeat(8));
        assert_eq!(s.auth_key.as_ref().unwrap().name, "k");
        assert_eq!(s.prev_auth_key.as_ref().unwrap().secret(), [0x0a; 16]);
        assert!(s.remote.is_none());
        assert!(!format!("{s:?}").contains("255"), "Debug shows no secret");
        let r = c.client_profile(Some("r"));
        assert_eq!(r.remote.as_ref().unwrap().server, "127.0.0.1:8888");
        assert!(r.remote.as_ref().unwrap().auth_key.is_none());
        let a = c.client_profile(Some("a"));
        assert_eq!(
            a.remote.as_ref().unwrap().auth_key.as_ref().unwrap().name,
            "k"
        );
        // An unknown name falls back to the default for a client, as in cfssl.
        assert_eq!(c.client_profile(Some("zz")).name, "default");
        let mut o = c.clone();
        o.override_remote("h:1");
        assert_eq!(
            o.client_profile(Some("s")).remote.as_ref().unwrap().server,
            "h:1"
        );
        assert!(
            o.client_profile(Some("a"))
                .remote
                .as_ref()
                .unwrap()
                .auth_key
                .is_some()
        );
    }

    #[test]
    fn short_auth_keys_and_shared_key_files_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let cfg = |key: &str| {
            load(&format!(
                r#"{{"signing":{{"default":{{"expiry":"1h","auth_key":"k"}}}},
                   "auth_keys":{{"k":{{"type":"standard","key":"{key}"}}}}}}"#
            ))
        };
        let m = input_err(cfg("00ff"));
        assert!(
            m.contains("auth_keys.k.key") && m.contains("is 2 bytes"),
            "{m}"
        );
        assert!(input_err(cfg("")).contains("is 0 bytes"));
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("k.hex");
        std::fs::write(&f, "000102030405060708090a0b0c0d0e0f\n").unwrap();
        let src = format!("file:{}", f.display());
        for mode in [0o644, 0o640, 0o604, 0o620] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            let m = input_err(cfg(&src));
            assert!(
                m.contains("chmod 600") && m.contains(&format!("{mode:o}")),
                "{m}"
            );
        }
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(cfg(&src).is_ok());
    }

    #[test]
    fn auth_and_remote_errors() {
        let cfg = |prof: &str, keys: &str| {
            load(&format!(
                r#"{{"signing":{{"default":{{"expiry":"1h"}},"profiles":{{"p":{{"usages":["signing"],{prof}}}}}}},
                   "auth_keys":{{{keys}}},"remotes":{{"srv":"127.0.0.1:8888"}}}}"#
            ))
        };
        let m = input_err(cfg(
            r#""auth_key":"nope""#,
            r#""k":{"type":"standard","key":"000102030405060708090a0b0c0d0e0f"}"#,
        ));
        assert!(
            m.contains("signing.profiles.p.auth_key") && m.contains("it has: k"),
            "{m}"
        );
        let m = input_err(cfg(
            r#""auth_key":"k""#,
            r#""k":{"type":"hmac","key":"00"}"#,
        ));
        assert!(m.contains("unknown authentication type \"hmac\""), "{m}");
        let m = input_err(cfg(
            r#""auth_key":"k""#,
            r#""k":{"type":"standard","key":"xyz"}"#,
        ));
        assert!(
            m.contains("auth_keys.k.key") && m.contains("not hex"),
            "{m}"
        );
        let m = input_err(cfg(
            r#""auth_key":"k""#,
            r#""k":{"type":"standard","key":"env:P11CA_NO_SUCH_VAR_X"}"#,
        ));
        assert!(m.contains("P11CA_NO_SUCH_VAR_X is not set"), "{m}");
        let m = input_err(cfg(r#""remote":"other""#, ""));
        assert!(m.contains("\"other\" is not in the remotes section"), "{m}");
        let m = input_err(cfg(
            r#""remote":"srv","auth_remote":{"remote":"srv","auth_key":"k"}"#,
            r#""k":{"type":"standard","key":"000102030405060708090a0b0c0d0e0f"}"#,
        ));
        assert!(m.contains("not both"), "{m}");
        let m = input_err(cfg(r#""auth_remote":{"remote":"srv"}"#, ""));
        assert!(m.contains("auth_remote.auth_key"), "{m}");
        // Unreferenced keys are not resolved (as in cfssl).
        assert!(
            cfg(
                r#""expiry":"1h""#,
                r#""k":{"type":"odd","key":"env:P11CA_NO_SUCH_VAR_X"}"#
            )
            .is_ok()
        );
    }

    #[test]
    fn usage_names_and_expiry_string() {
        let p = one(r#""usages":["digital signature","key encipherment","server auth","s/mime"],"expiry":"90m""#).unwrap();
        assert_eq!(
            p.usage_names(),
            [
                "signing",
                "key encipherment",
                "server auth",
                "email protection"
            ]
        );
        assert_eq!(p.expiry_string(), "1h30m0s");
    }

    #[test]
    fn urls_fall_back_to_default_as_in_cfssl() {
        let c = load(
            r#"{"signing":{"default":{"expiry":"1h","crl_url":"http://c/crl","ocsp_url":"http://o","issuer_urls":["http://i"]},
               "profiles":{"p":{"usages":["signing"]},"q":{"usages":["signing"],"crl_url":"http://q/crl","issuer_urls":[]}}}}"#,
        )
        .unwrap();
        let p = c.profile(Some("p")).unwrap();
        assert_eq!(p.crl_url.as_deref(), Some("http://c/crl"));
        assert_eq!(p.ocsp_urls, vec!["http://o".to_string()]);
        assert_eq!(p.issuer_urls, vec!["http://i".to_string()]);
        let q = c.profile(Some("q")).unwrap();
        assert_eq!(q.crl_url.as_deref(), Some("http://q/crl"));
        assert!(q.issuer_urls.is_empty());
    }

    #[test]
    fn policies() {
        let p = one(
            r#""usages":["signing"],"Policies":[{"ID":"1.2.3.4","Qualifiers":[
                {"Type":"id-qt-cps","Value":"http://cps"},{"Type":"id-qt-unotice","Value":"Ünotice"}]},
                {"ID":"2.23.140.1.2.1"}]"#,
        )
        .unwrap();
        assert_eq!(p.policies.len(), 2);
        assert_eq!(p.policies[0].cps_uris, vec!["http://cps".to_string()]);
        assert_eq!(p.policies[0].user_notices, vec!["Ünotice".to_string()]);
        let m = input_err(one(
            r#""usages":["signing"],"policies":[{"ID":"1.2.3","Qualifiers":[{"type":"x","value":"v"}]}]"#,
        ));
        assert!(m.contains("invalid policy qualifier type \"x\""), "{m}");
        let m = input_err(one(r#""usages":["signing"],"policies":[{"ID":"nope"}]"#));
        assert!(m.contains("policies[0].ID"), "{m}");
    }

    #[test]
    fn ocsp_signing_profiles_get_nocheck_unless_they_say_no() {
        let ids = |body: &str| -> Vec<_> {
            let p = one(body).unwrap();
            let (before, after) = p.extensions().unwrap();
            before.iter().chain(&after).map(|e| e.extn_id).collect()
        };
        let with = ids(r#""usages":["digital signature","ocsp signing"]"#);
        assert!(with.contains(&rfc6960::ID_PKIX_OCSP_NOCHECK), "{with:?}");
        let eku = one(r#""usages":["digital signature","ocsp signing"]"#).unwrap();
        assert_eq!(eku.ext_key_usage, vec![rfc5280::ID_KP_OCSP_SIGNING]);
        let refused = ids(r#""usages":["ocsp signing"],"ocsp_no_check":false"#);
        assert!(!refused.contains(&rfc6960::ID_PKIX_OCSP_NOCHECK));
        let servers = ids(r#""usages":["signing","server auth"]"#);
        assert!(!servers.contains(&rfc6960::ID_PKIX_OCSP_NOCHECK));
    }

    #[test]
    fn extensions_order_and_criticality() {
        let p = one(
            r#""usages":["signing","key encipherment","server auth","client auth","server auth"],
               "crl_url":"http://crl.example/ca.crl","ocsp_url":"http://ocsp.example","issuer_urls":["http://ca.example/ca.der"],
               "ocsp_no_check":true,"policies":[{"ID":"1.2.3.4","Qualifiers":[{"type":"id-qt-cps","value":"http://cps"},{"type":"id-qt-unotice","value":"hi"}]}]"#,
        )
        .unwrap();
        let (before, after) = p.extensions().unwrap();
        let ids: Vec<_> = before.iter().map(|e| (e.extn_id, e.critical)).collect();
        assert_eq!(
            ids,
            vec![
                (rfc5280::ID_CE_KEY_USAGE, true),
                (rfc5280::ID_CE_EXT_KEY_USAGE, false),
                (rfc5280::ID_CE_BASIC_CONSTRAINTS, true),
            ]
        );
        let ku = KeyUsage::from_der(before[0].extn_value.as_bytes()).unwrap();
        assert_eq!(
            ku.0,
            KeyUsages::DigitalSignature | KeyUsages::KeyEncipherment
        );
        let eku = ExtendedKeyUsage::from_der(before[1].extn_value.as_bytes()).unwrap();
        assert_eq!(
            eku.0,
            vec![rfc5280::ID_KP_SERVER_AUTH, rfc5280::ID_KP_CLIENT_AUTH]
        );
        let bc = BasicConstraints::from_der(before[2].extn_value.as_bytes()).unwrap();
        assert!(!bc.ca && bc.path_len_constraint.is_none());

        let ids: Vec<_> = after.iter().map(|e| (e.extn_id, e.critical)).collect();
        assert_eq!(
            ids,
            vec![
                (rfc5280::ID_PE_AUTHORITY_INFO_ACCESS, false),
                (rfc5280::ID_CE_CRL_DISTRIBUTION_POINTS, false),
                (rfc5280::ID_CE_CERTIFICATE_POLICIES, false),
                (rfc6960::ID_PKIX_OCSP_NOCHECK, false),
            ]
        );
        let aia = AuthorityInfoAccessSyntax::from_der(after[0].extn_value.as_bytes()).unwrap();
        assert_eq!(aia.0.len(), 2);
        assert_eq!(aia.0[0].access_method, rfc5280::ID_AD_OCSP);
        assert_eq!(aia.0[1].access_method, rfc5280::ID_AD_CA_ISSUERS);
        let dps = CrlDistributionPoints::from_der(after[1].extn_value.as_bytes()).unwrap();
        let DistributionPoint {
            distribution_point: Some(DistributionPointName::FullName(names)),
            ..
        } = &dps.0[0]
        else {
            panic!("no full name");
        };
        assert!(
            matches!(&names[0], GeneralName::UniformResourceIdentifier(u) if u.as_str() == "http://crl.example/ca.crl")
        );
        let pol = CertificatePolicies::from_der(after[2].extn_value.as_bytes()).unwrap();
        assert_eq!(pol.0[0].policy_identifier.to_string(), "1.2.3.4");
        let q = pol.0[0].policy_qualifiers.as_ref().unwrap();
        assert_eq!(q[0].policy_qualifier_id, rfc5280::ID_QT_CPS);
        let cps: Ia5String = q[0].qualifier.as_ref().unwrap().decode_as().unwrap();
        assert_eq!(cps.as_str(), "http://cps");
        assert_eq!(q[1].policy_qualifier_id, rfc5280::ID_QT_UNOTICE);
        // UserNotice { explicitText UTF8String "hi" }
        assert_eq!(
            q[1].qualifier.as_ref().unwrap().to_der().unwrap(),
            vec![0x30, 0x04, 0x0c, 0x02, b'h', b'i']
        );
        assert_eq!(after[3].extn_value.as_bytes(), &[0x05, 0x00]);

        // A bare profile: only BC after the usages; nothing after the SAN.
        let (before, after) = one(r#""usages":["server auth"]"#)
            .unwrap()
            .extensions()
            .unwrap();
        assert_eq!(before.len(), 2);
        assert_eq!(before[0].extn_id, rfc5280::ID_CE_EXT_KEY_USAGE);
        assert!(after.is_empty());
    }
}
