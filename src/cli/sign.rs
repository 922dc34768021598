//! `gencert -ca` and `sign`: certificates signed by the CA key in the token.

use std::collections::BTreeMap;

use p11ca::cfssl::config::{Profile, SigningConfig};
use p11ca::cfssl::csr::CsrRequest;
use p11ca::cfssl::output;
use p11ca::issue::{Issuer, LeafRequest, parse_ca_cert};
use p11ca::softkey::SoftKey;
use p11ca::token::Pkcs11Uri;
use p11ca::token::key;
use p11ca::x509::hosts::{self, San};
use p11ca::x509::name::{self, SubjectOverride, SubjectSpec};
use p11ca::x509::{build, request};
use p11ca::{Error, Result};

use super::args::{CaArgs, GencertArgs, SignArgs, TokenArgs};
use super::{open_and_login, read_input, warn, write_stdout};

/// Turn a `-ca-key` value into the key's URI.
pub fn ca_key_uri(value: &str) -> Result<Pkcs11Uri> {
    let (text, source) = if value.starts_with("pkcs11:") {
        (value.to_string(), "-ca-key".to_string())
    } else if let Some(var) = value.strip_prefix("env:") {
        let v = std::env::var(var).map_err(|_| {
            Error::input(format!("-ca-key env:{var}: the variable {var} is not set"))
        })?;
        (v, format!("-ca-key env:{var}"))
    } else {
        let path = value.strip_prefix("file:").unwrap_or(value);
        let (bytes, name) = read_input(path)?;
        (String::from_utf8_lossy(&bytes).into_owned(), name)
    };
    let text = text.trim();
    if text.contains("PRIVATE KEY") {
        return Err(Error::input(format!(
            "{source} is a private key file: p11ca signs only with keys in a token; create the CA with `p11ca gencert -initca` and use its NAME-key.uri"
        )));
    }
    if !text.starts_with("pkcs11:") {
        return Err(Error::input(format!(
            "{source} does not hold a pkcs11: URI; give the NAME-key.uri written by `p11ca json -bare` or a URI such as 'pkcs11:token=T;object=ca'"
        )));
    }
    Pkcs11Uri::parse(text).map_err(|e| e.context(source))
}

/// Everything needed from -ca/-ca-key/-config/-profile, validated before the token is opened.
struct Prepared {
    ca_cert: x509_cert::Certificate,
    ca_source: String,
    key_uri: Pkcs11Uri,
    profile: Profile,
}

fn prepare(c: &CaArgs) -> Result<Prepared> {
    let ca =
        c.ca.as_deref()
            .ok_or_else(|| Error::input("-ca is required: the CA certificate, e.g. -ca ca.pem"))?;
    let ca_key = c.ca_key.as_deref().ok_or_else(|| {
        Error::input("-ca-key is required: the key handle, e.g. -ca-key ca-key.uri")
    })?;
    let (bytes, ca_source) = read_input(ca)?;
    let ca_cert = parse_ca_cert(&bytes, &ca_source)?;
    let key_uri = ca_key_uri(ca_key)?;
    let mut notices = Vec::new();
    let config = match c.config.as_deref() {
        Some(path) => {
            let (bytes, name) = read_input(path)?;
            SigningConfig::from_json(&bytes, &name, &mut notices)?
        }
        None => SigningConfig::cfssl_default(),
    };
    for n in &notices {
        warn(n);
    }
    let profile = config.profile(c.profile.as_deref())?;
    Ok(Prepared {
        ca_cert,
        ca_source,
        key_uri,
        profile,
    })
}

fn hostname_sans(c: &CaArgs) -> Result<Option<Vec<San>>> {
    c.hostname
        .as_deref()
        .map(|h| hosts::parse_list(&h.split(',').collect::<Vec<_>>(), "-hostname"))
        .transpose()
}

/// Open the token of the CA key, find the key, pair it with the CA certificate, issue.
fn issue_with_token(targs: &TokenArgs, p: Prepared, leaf: &LeafRequest) -> Result<Vec<u8>> {
    let opened = open_and_login(targs, Some(&p.key_uri))?;
    let found = key::find_private_key(&opened.session, &opened.token, &p.key_uri)?;
    let issuer = Issuer::new(
        &opened.module,
        &opened.token,
        &opened.session,
        p.ca_cert,
        &p.ca_source,
        &found,
        &p.key_uri,
    )?;
    let mut warnings = Vec::new();
    let der = issuer.issue(leaf, &p.profile, &mut warnings)?;
    for w in &warnings {
        warn(w);
    }
    Ok(der)
}

pub(super) fn gencert_ca(targs: &TokenArgs, g: &GencertArgs) -> Result<()> {
    let (bytes, name) = read_input(&g.csr_json)?;
    let req = CsrRequest::from_json(&bytes, &name)?;
    if req.ca.is_some() {
        return Err(Error::input(format!(
            "{name}: the \"ca\" section is only allowed with -initca"
        )));
    }
    let spec = req.key_spec(&name)?;
    let cn = g.cn.as_deref().unwrap_or(&req.cn);
    let subject = name::build(&SubjectSpec {
        cn,
        names: &req.names,
        serial_number: &req.serialnumber,
    })
    .map_err(|e| e.context(&name))?;
    let sans = match hostname_sans(&g.signing)? {
        Some(s) => s,
        None => hosts::parse_list(&req.hosts, &format!("{name}: hosts"))?,
    };
    if sans.is_empty() {
        warn(
            "this certificate lacks a \"hosts\" field, so it is not suitable for websites (as cfssl warns)",
        );
    }
    let prepared = prepare(&g.signing)?;
    // The node key is made in software, as in cfssl: it is shipped to the node.
    let node_key = SoftKey::generate(spec)?;
    let mut csr_exts = Vec::new();
    if let Some(e) = hosts::extension(&sans, subject.is_empty())? {
        csr_exts.push(e);
    }
    let csr_der = build::csr(&subject, csr_exts, &node_key)?;
    let leaf = LeafRequest {
        subject,
        public_key: p11ca::x509::Signer::public_key(&node_key).clone(),
        sans,
        wants_ca: false,
    };
    let cert = issue_with_token(targs, prepared, &leaf)?;
    let mut fields = BTreeMap::new();
    fields.insert("cert", build::pem("CERTIFICATE", &cert)?);
    fields.insert("csr", build::pem("CERTIFICATE REQUEST", &csr_der)?);
    fields.insert("key", node_key.to_pem()?.to_string());
    write_stdout(&output::result_json(&fields))
}

pub(super) fn sign(targs: &TokenArgs, s: &SignArgs) -> Result<()> {
    let (bytes, csr_name) = read_input(&s.csr)?;
    let csr = request::parse(&bytes, &csr_name)?;
    let subject_req = match &s.subject {
        Some(path) => {
            let (b, n) = read_input(path)?;
            Some(CsrRequest::from_json(&b, &n)?)
        }
        None => None,
    };
    let ov = match &subject_req {
        Some(r) => SubjectOverride {
            cn: &r.cn,
            names: &r.names,
            serial_number: &r.serialnumber,
        },
        None => SubjectOverride::default(),
    };
    let subject = name::canonicalize(&csr.subject, &ov).map_err(|e| e.context(&csr_name))?;
    let sans = match hostname_sans(&s.signing)? {
        Some(h) => h,
        None => csr.sans.clone(),
    };
    let prepared = prepare(&s.signing)?;
    let leaf = LeafRequest {
        subject,
        public_key: csr.public_key.clone(),
        sans,
        wants_ca: csr.wants_ca,
    };
    let cert = issue_with_token(targs, prepared, &leaf)?;
    let mut fields = BTreeMap::new();
    fields.insert("cert", build::pem("CERTIFICATE", &cert)?);
    fields.insert("csr", build::pem("CERTIFICATE REQUEST", &csr.der)?);
    write_stdout(&output::result_json(&fields))
}
