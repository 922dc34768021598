//! Building one [`Profile`] from its raw JSON, one concern at a time: authentication and
//! remote signing, usages, validity, the CA constraint, URLs, the name whitelist, the issuance
//! policy and certificate policies. Parsing the file and the profile types are the parent's.

use std::collections::BTreeMap;

use const_oid::ObjectIdentifier;
use der::flagset::FlagSet;
use regex::Regex;
use x509_cert::ext::pkix::KeyUsages;

use super::{
    Ctx, DEFAULT_EXPIRY_SECS, EXT_KEY_USAGES, KEY_USAGES, PolicyInfo, Profile, RawIssuance,
    RawProfile, RemoteSpec, is_set, lookup,
};
use crate::cfssl::duration::GoDuration;
use crate::error::Result;
use crate::x509::policy::{Policy, SubjectAttr};

/// Turn one raw profile into a [`Profile`]. `default` is the already-built default profile
/// (`None` while building the default itself).
pub(super) fn build(
    ctx: &Ctx<'_>,
    raw: &RawProfile,
    default: Option<&Profile>,
    notices: &mut Vec<String>,
) -> Result<Profile> {
    for (field, value, why) in raw.ignored() {
        if is_set(value) {
            notices.push(ctx.notice(field, why));
        }
    }

    let (auth_key, prev_auth_key, remote) = authentication(ctx, raw)?;
    let (key_usage, ext_key_usage) = usages(ctx, raw)?;
    let expiry_secs = expiry(ctx, raw, default, remote.is_some())?;
    let backdate_secs = backdate(ctx, raw)?;
    let (not_before, not_after) = fixed_validity(ctx, raw)?;
    let (is_ca, max_path_len) = ca_constraint(ctx, raw, key_usage, notices)?;
    let (crl_url, ocsp_urls, issuer_urls) = urls(ctx, raw, default)?;
    let name_whitelist = name_whitelist(ctx, raw)?;
    // A profile without a policy takes the default profile's (itself the built-in default).
    let policy = match &raw.policy {
        Some(p) => issuance_policy(ctx, p)?,
        None => default.map(|d| d.policy.clone()).unwrap_or_default(),
    };

    let policies = certificate_policies(ctx, raw)?;
    // A delegated OCSP responder's certificate gets id-pkix-ocsp-nocheck unless the profile
    // says otherwise: clients would else look for its status from the responder it signs for
    // (RFC 6960 §4.2.2.2.1). cfssl adds it only with `ocsp_no_check`.
    let ocsp_signing = ext_key_usage.contains(&const_oid::db::rfc5280::ID_KP_OCSP_SIGNING);

    Ok(Profile {
        name: ctx.name.to_string(),
        key_usage,
        ext_key_usage,
        expiry_secs,
        backdate_secs,
        not_before,
        not_after,
        is_ca,
        max_path_len,
        crl_url,
        ocsp_urls,
        issuer_urls,
        ocsp_no_check: raw.ocsp_no_check.unwrap_or(ocsp_signing),
        name_whitelist,
        policy,
        policies,
        auth_key,
        prev_auth_key,
        remote,
    })
}

/// A profile's `auth_key`, `prev_auth_key` and `remote` / `auth_remote` (cfssl's
/// `populate`): names must resolve.
fn authentication(
    ctx: &Ctx<'_>,
    raw: &RawProfile,
) -> Result<(
    Option<super::AuthKey>,
    Option<super::AuthKey>,
    Option<RemoteSpec>,
)> {
    let nonempty = |v: &Option<String>| v.as_deref().filter(|s| !s.is_empty()).map(str::to_string);
    let auth_key = nonempty(&raw.auth_key)
        .map(|n| ctx.auth_key("auth_key", &n))
        .transpose()?;
    let prev_auth_key = nonempty(&raw.prev_auth_key)
        .map(|n| ctx.auth_key("prev_auth_key", &n))
        .transpose()?;
    let auth_remote = raw
        .auth_remote
        .as_ref()
        .filter(|a| !a.remote.is_empty() || !a.auth_key.is_empty());
    let remote = match (nonempty(&raw.remote), auth_remote) {
        (Some(_), Some(_)) => {
            return Err(ctx.field_err(
                "auth_remote",
                "a profile has either \"remote\" or \"auth_remote\", not both",
            ));
        }
        (Some(name), None) => Some(RemoteSpec {
            server: ctx.remote("remote", &name)?,
            auth_key: None,
        }),
        (None, Some(a)) => {
            if a.remote.is_empty() {
                return Err(ctx.field_err(
                    "auth_remote.remote",
                    "missing; name the server in the remotes section",
                ));
            }
            if a.auth_key.is_empty() {
                return Err(ctx.field_err(
                    "auth_remote.auth_key",
                    "missing; name the shared key in the auth_keys section (or use \"remote\" for unauthenticated signing)",
                ));
            }
            Some(RemoteSpec {
                server: ctx.remote("auth_remote.remote", &a.remote)?,
                auth_key: Some(ctx.auth_key("auth_remote.auth_key", &a.auth_key)?),
            })
        }
        (None, None) => None,
    };

    Ok((auth_key, prev_auth_key, remote))
}

/// The usages: every string must be known (cfssl silently drops unknown ones).
fn usages(ctx: &Ctx<'_>, raw: &RawProfile) -> Result<(FlagSet<KeyUsages>, Vec<ObjectIdentifier>)> {
    let mut key_usage = FlagSet::<KeyUsages>::default();
    let mut ext_key_usage: Vec<ObjectIdentifier> = Vec::new();
    for (i, u) in raw.usages.iter().flatten().enumerate() {
        if let Some(ku) = lookup(KEY_USAGES, u) {
            key_usage |= ku;
        } else if let Some(oid) = lookup(EXT_KEY_USAGES, u) {
            if !ext_key_usage.contains(&oid) {
                ext_key_usage.push(oid);
            }
        } else {
            let spaced = u.replace(['-', '_'], " ");
            let hint = if lookup(KEY_USAGES, &spaced).is_some()
                || lookup(EXT_KEY_USAGES, &spaced).is_some()
            {
                format!(" (did you mean \"{}\"?)", spaced.to_lowercase())
            } else {
                String::new()
            };
            let known: Vec<&str> = KEY_USAGES
                .iter()
                .map(|(k, _)| *k)
                .chain(EXT_KEY_USAGES.iter().map(|(k, _)| *k))
                .collect();
            return Err(ctx.field_err(
                &format!("usages[{i}]"),
                format!(
                    "unknown usage \"{u}\" in profile \"{}\"{hint}; known usages: {}",
                    ctx.name,
                    known.join(", ")
                ),
            ));
        }
    }

    Ok((key_usage, ext_key_usage))
}

/// The validity period in seconds. cfssl requires `expiry` in every local profile ("empty
/// expiry string") but uses the default profile's expiry when a named profile's is zero
/// ("0s"). We go one step further and let a named profile without `expiry` take the default's
/// too, since that is what such a config obviously means; only the default profile must state
/// it. A remote profile needs none.
fn expiry(ctx: &Ctx<'_>, raw: &RawProfile, default: Option<&Profile>, remote: bool) -> Result<i64> {
    let own_expiry = match raw.expiry.as_deref() {
        None | Some("") => None,
        Some(v) => {
            let d = ctx.duration("expiry", v)?;
            if d.is_negative() {
                return Err(ctx.field_err(
                    "expiry",
                    format!("\"{v}\" is negative; give a positive duration such as \"8760h\""),
                ));
            }
            if d == GoDuration::from_secs(0) {
                None
            } else if d.as_secs() == 0 {
                return Err(ctx.field_err("expiry", format!("\"{v}\" is shorter than one second")));
            } else {
                Some(d.as_secs())
            }
        }
    };
    let expiry_secs = match (own_expiry, default) {
        (Some(s), _) => s,
        (None, Some(def)) => def.expiry_secs,
        // A remote profile needs no expiry (as in cfssl): the server decides.
        (None, None) if remote => DEFAULT_EXPIRY_SECS,
        (None, None) => {
            let why = if raw.expiry.as_deref().is_some_and(|v| !v.is_empty()) {
                "must be longer than 0; e.g. \"8760h\" for one year"
            } else {
                "missing; every profile needs an expiry such as \"8760h\" (one year)"
            };
            return Err(ctx.field_err("expiry", why));
        }
    };

    Ok(expiry_secs)
}

/// The backdate: as in cfssl, zero (or absent) means the 5-minute default; a negative value
/// is allowed and moves notBefore into the future, as cfssl does.
fn backdate(ctx: &Ctx<'_>, raw: &RawProfile) -> Result<Option<i64>> {
    let backdate_secs = match raw.backdate.as_deref() {
        None | Some("") => None,
        Some(v) => {
            let d = ctx.duration("backdate", v)?;
            if d.as_secs() == 0 {
                None
            } else {
                Some(d.as_secs())
            }
        }
    };

    Ok(backdate_secs)
}

/// `not_before` and `not_after`, fixed times that must be in order.
fn fixed_validity(ctx: &Ctx<'_>, raw: &RawProfile) -> Result<(Option<i64>, Option<i64>)> {
    let not_before = raw
        .not_before
        .as_deref()
        .filter(|v| !v.is_empty())
        .map(|v| ctx.time("not_before", v))
        .transpose()?;
    let not_after = raw
        .not_after
        .as_deref()
        .filter(|v| !v.is_empty())
        .map(|v| ctx.time("not_after", v))
        .transpose()?;
    if let (Some(nb), Some(na)) = (not_before, not_after)
        && na <= nb
    {
        return Err(ctx.field_err(
            "not_after",
            format!(
                "\"{}\" is not after not_before \"{}\"",
                raw.not_after.as_deref().unwrap_or_default(),
                raw.not_before.as_deref().unwrap_or_default()
            ),
        ));
    }

    Ok((not_before, not_after))
}

/// `ca_constraint`, with Go's pathlen rules (MaxPathLen 0 means unlimited unless
/// MaxPathLenZero; -1 means unlimited).
fn ca_constraint(
    ctx: &Ctx<'_>,
    raw: &RawProfile,
    key_usage: FlagSet<KeyUsages>,
    notices: &mut Vec<String>,
) -> Result<(bool, Option<u8>)> {
    let ca = raw.ca_constraint.as_ref();
    let is_ca = ca.is_some_and(|c| c.is_ca);
    let max_path_len = match ca {
        None => None,
        Some(c) => match (c.max_path_len, c.max_path_len_zero) {
            (0, true) => Some(0),
            (0, false) | (-1, _) => None,
            (n, _) if (1..=255).contains(&n) => Some(n as u8),
            (n, _) => {
                return Err(ctx.field_err(
                    "ca_constraint.max_path_len",
                    format!("{n} is out of range; use 0 to 255, or -1 for no limit"),
                ));
            }
        },
    };
    if is_ca && !key_usage.contains(KeyUsages::KeyCertSign) {
        notices.push(format!(
            "{}: profile \"{}\" has ca_constraint.is_ca but no \"cert sign\" usage; the CA certificates it issues cannot sign certificates",
            ctx.file, ctx.name
        ));
    }
    if !is_ca && max_path_len.is_some() {
        notices.push(ctx.notice(
            "ca_constraint.max_path_len",
            "has no effect because ca_constraint.is_ca is false; ignored",
        ));
    }

    Ok((is_ca, max_path_len))
}

/// `crl_url`, `ocsp_url` and `issuer_urls`: as in cfssl's FillTemplate, an empty crl_url /
/// ocsp_url or a missing issuer_urls in a named profile falls back to the default profile's.
fn urls(
    ctx: &Ctx<'_>,
    raw: &RawProfile,
    default: Option<&Profile>,
) -> Result<(Option<String>, Vec<String>, Vec<String>)> {
    let crl_url = match raw.crl_url.as_deref().filter(|v| !v.is_empty()) {
        Some(u) => {
            ctx.ascii_url("crl_url", u)?;
            Some(u.to_string())
        }
        None => default.and_then(|d| d.crl_url.clone()),
    };
    let ocsp_urls = match raw.ocsp_url.as_deref().filter(|v| !v.is_empty()) {
        Some(u) => {
            ctx.ascii_url("ocsp_url", u)?;
            vec![u.to_string()]
        }
        None => default.map(|d| d.ocsp_urls.clone()).unwrap_or_default(),
    };
    let issuer_urls = match &raw.issuer_urls {
        Some(urls) => {
            for (i, u) in urls.iter().enumerate() {
                ctx.ascii_url(&format!("issuer_urls[{i}]"), u)?;
            }
            urls.clone()
        }
        None => default.map(|d| d.issuer_urls.clone()).unwrap_or_default(),
    };

    Ok((crl_url, ocsp_urls, issuer_urls))
}

/// `name_whitelist`, a Go (RE2) regular expression.
fn name_whitelist(ctx: &Ctx<'_>, raw: &RawProfile) -> Result<Option<Regex>> {
    let name_whitelist = match raw.name_whitelist.as_deref().filter(|v| !v.is_empty()) {
        Some(re) => {
            let compiled = Regex::new(re).map_err(|e| {
                ctx.field_err(
                    "name_whitelist",
                    format!("invalid regular expression \"{re}\": {e}"),
                )
            })?;
            Some(compiled)
        }
        None => None,
    };
    Ok(name_whitelist)
}

/// `policies`: certificatePolicies entries with CPS URI and user notice qualifiers.
fn certificate_policies(ctx: &Ctx<'_>, raw: &RawProfile) -> Result<Vec<PolicyInfo>> {
    let mut policies = Vec::new();
    for (i, p) in raw.policies.iter().flatten().enumerate() {
        let id = ObjectIdentifier::new(&p.id).map_err(|e| {
            ctx.field_err(
                &format!("policies[{i}].ID"),
                format!("invalid OID \"{}\": {e}", p.id),
            )
        })?;
        let mut info = PolicyInfo {
            id,
            cps_uris: Vec::new(),
            user_notices: Vec::new(),
        };
        for (j, q) in p.qualifiers.iter().enumerate() {
            let field = format!("policies[{i}].Qualifiers[{j}]");
            if q.value.is_empty() {
                return Err(ctx.field_err(&field, "empty value"));
            }
            match q.kind.as_str() {
                "id-qt-cps" => {
                    ctx.ascii_url(&field, &q.value)?;
                    info.cps_uris.push(q.value.clone());
                }
                "id-qt-unotice" => {
                    if q.value.chars().count() > 200 {
                        return Err(ctx.field_err(
                            &field,
                            "a user notice may be at most 200 characters (RFC 5280)",
                        ));
                    }
                    info.user_notices.push(q.value.clone());
                }
                other => {
                    return Err(ctx.field_err(
                        &field,
                        format!(
                            "invalid policy qualifier type \"{other}\"; use \"id-qt-cps\" or \"id-qt-unotice\""
                        ),
                    ));
                }
            }
        }
        policies.push(info);
    }

    Ok(policies)
}

/// Upper bound for `max_sans`: beyond this a certificate is a store-bloating attack, not a
/// cluster.
const MAX_SANS_LIMIT: usize = 10_000;

/// The `policy` object of a profile; keys not given take the built-in defaults.
fn issuance_policy(ctx: &Ctx<'_>, raw: &RawIssuance) -> Result<Policy> {
    let mut p = Policy::default();
    if let Some(n) = raw.max_sans {
        if !(1..=MAX_SANS_LIMIT).contains(&n) {
            return Err(ctx.field_err(
                "policy.max_sans",
                format!("{n} is out of range; give 1 to {MAX_SANS_LIMIT}"),
            ));
        }
        p.max_sans = n;
    }
    if let Some(bits) = raw.min_rsa_bits {
        if !(2048..=8192).contains(&bits) {
            return Err(ctx.field_err(
                "policy.min_rsa_bits",
                format!("{bits} is out of range; give 2048 to 8192 (RSA under 2048 bits is broken-grade)"),
            ));
        }
        p.min_rsa_bits = bits;
    }
    if let Some(algs) = &raw.allowed_key_algorithms {
        (p.allow_rsa, p.allow_ecdsa) = (false, false);
        for (i, a) in algs.iter().enumerate() {
            match a.to_ascii_lowercase().as_str() {
                "rsa" => p.allow_rsa = true,
                "ecdsa" => p.allow_ecdsa = true,
                _ => {
                    return Err(ctx.field_err(
                        &format!("policy.allowed_key_algorithms[{i}]"),
                        format!("unknown algorithm \"{a}\"; use \"rsa\" or \"ecdsa\""),
                    ));
                }
            }
        }
        if algs.is_empty() {
            return Err(ctx.field_err(
                "policy.allowed_key_algorithms",
                "empty, so nothing could be signed; list \"rsa\" and/or \"ecdsa\"",
            ));
        }
    }
    if let Some(s) = &raw.subject {
        p.allow = subject_lists(ctx, "policy.subject.allow", &s.allow)?;
        p.deny = subject_lists(ctx, "policy.subject.deny", &s.deny)?;
    }
    Ok(p)
}

/// `{"O": [...], "OU": [...], "CN": [...]}`: attribute names checked, values non-empty.
fn subject_lists(
    ctx: &Ctx<'_>,
    field: &str,
    raw: &BTreeMap<String, Vec<String>>,
) -> Result<Vec<(SubjectAttr, Vec<String>)>> {
    let mut out = Vec::new();
    for (key, values) in raw {
        let attr = SubjectAttr::parse(key).ok_or_else(|| {
            ctx.field_err(
                &format!("{field}.{key}"),
                "unknown subject attribute; use \"O\", \"OU\" or \"CN\"",
            )
        })?;
        if let Some(i) = values.iter().position(|v| v.trim().is_empty()) {
            return Err(ctx.field_err(&format!("{field}.{key}[{i}]"), "empty value"));
        }
        out.push((attr, values.clone()));
    }
    Ok(out)
}
