//! `gencert -remote` and `sign -remote`: the same inputs and outputs as local signing, but the
//! certificate comes from a signer over cfssl's API (`p11ca serve`, `cfssl serve`,
//! multirootca). The node key of `gencert` is made here and never leaves this machine; only
//! its CSR is sent.
//!
//! Remote mode is chosen as cfssl chooses it: `-remote HOST:PORT`, or a profile in `-config`
//! with `remote` / `auth_remote` (whose `auth_key` makes the request go to /authsign).

use der::{Decode, Encode};
use serde_json::Value;
use x509_cert::Certificate;

use p11ca::ca::batch;
use p11ca::cfssl::config::{AuthKey, SigningConfig};
use p11ca::client::{RemoteClient, SignRequest, TlsClient};
use p11ca::x509::build;
use p11ca::x509::hosts::San;
use p11ca::{Error, Result};

use super::args::{CaArgs, GencertArgs, SignArgs};
use super::sign::{self, Item, LocalConfig};
use super::{read_input, warn};

/// Where and how to sign remotely.
pub(crate) struct Plan {
    server: String,
    auth: Option<AuthKey>,
    profile: String,
    label: String,
    tls: TlsClient,
    /// The profile, as the local config (or cfssl's default) knows it, is for TLS servers.
    for_servers: bool,
}

/// How these arguments sign: remotely, or locally with the signing config already read (so
/// the file is read and parsed once).
pub(crate) enum Mode {
    /// Over cfssl's API.
    Remote(Plan),
    /// With the token here; the config's notices are not printed yet.
    Local(Box<LocalConfig>),
}

/// Whether these arguments sign remotely, and the plan if so.
pub(crate) fn wanted(c: &CaArgs) -> Result<Mode> {
    let mut notices = Vec::new();
    let mut config = match c.config.as_deref() {
        Some(path) => {
            let (bytes, name) = read_input(path)?;
            SigningConfig::from_json(&bytes, &name, &mut notices)?
        }
        None => SigningConfig::cfssl_default(),
    };
    if let Some(r) = c.remote.as_deref() {
        config.override_remote(r);
    }
    let profile = config.client_profile(c.profile.as_deref());
    let Some(remote) = profile.remote.clone() else {
        return Ok(Mode::Local(Box::new(LocalConfig { config, notices })));
    };
    // Local signing prints these itself; in remote mode nobody else will.
    for n in &notices {
        warn(n);
    }
    if c.ca.is_some() || c.ca_key.is_some() {
        warn("-ca and -ca-key are not used when signing remotely");
    }
    if c.jobs.is_some() {
        warn("--jobs is not used when signing remotely");
    }
    Ok(Mode::Remote(Plan {
        for_servers: sign::for_servers(profile),
        server: remote.server,
        auth: remote.auth_key,
        profile: c.profile.clone().unwrap_or_default(),
        label: c.label.clone().unwrap_or_default(),
        tls: TlsClient {
            remote_ca: c.tls_remote_ca.clone(),
            client_cert: c.mutual_tls_client_cert.clone(),
            client_key: c.mutual_tls_client_key.clone(),
        },
    }))
}

fn host_strings(sans: &Option<Vec<San>>) -> Option<Vec<String>> {
    sans.as_ref().map(|v| {
        v.iter()
            .map(|s| match s {
                San::Dns(x) | San::Email(x) | San::Uri(x) => x.clone(),
                San::Ip(ip) => ip.to_string(),
            })
            .collect()
    })
}

/// Ask the signer for each item's certificate; check that each is for the item's key.
fn sign_items(
    plan: &Plan,
    items: &[Item],
    hosts: Option<Vec<String>>,
    subject: Option<Value>,
) -> Result<Vec<batch::Issued>> {
    let client = RemoteClient::with_tls(&plan.server, &plan.tls)?;
    let mut out = Vec::new();
    for item in items {
        let req = SignRequest {
            csr_pem: &item.csr_pem,
            hosts: hosts.clone(),
            profile: &plan.profile,
            label: &plan.label,
            subject: subject.clone(),
        };
        let r = client.sign(&req, plan.auth.as_ref()).and_then(|(pem, messages)| {
            let (label, der) = der::pem::decode_vec(pem.trim().as_bytes()).map_err(|e| {
                Error::verify(format!(
                    "remote signer {}: the certificate is not valid PEM: {e}",
                    client.base()
                ))
            })?;
            let cert = Certificate::from_der(&der)
                .ok()
                .filter(|_| label == "CERTIFICATE")
                .ok_or_else(|| {
                    Error::verify(format!(
                        "remote signer {}: the answer is not a certificate",
                        client.base()
                    ))
                })?;
            let spki = cert.tbs_certificate().subject_public_key_info();
            if spki.to_der().ok() != item.leaf.public_key.to_der().ok() {
                return Err(Error::verify(format!(
                    "remote signer {}: the certificate is for another public key than the request's; it was not written",
                    client.base()
                )));
            }
            Ok((der, messages))
        });
        out.push(r);
    }
    Ok(out)
}

/// Write `--out` files for the successes (local signing does this as it goes).
fn write_out(c: &CaArgs, items: &[Item], results: &mut [batch::Issued]) {
    let Some(dir) = c.out.as_deref() else { return };
    for (item, r) in items.iter().zip(results.iter_mut()) {
        if let Ok((der, _)) = r {
            let written = build::pem("CERTIFICATE", der)
                .and_then(|pem| sign::out_files(dir, item, &pem).commit());
            if let Err(e) = written {
                *r = Err(e);
            }
        }
    }
}

/// `gencert -remote`: node key and CSR here, certificate from the signer.
pub(crate) fn gencert(g: &GencertArgs, plan: &Plan) -> Result<()> {
    let host_override = sign::hostname_sans(&g.signing)?;
    if let Some(dir) = g
        .signing
        .out
        .as_deref()
        .filter(|d| !std::path::Path::new(d).is_dir())
    {
        return Err(Error::output(format!(
            "--out {dir}: not a folder; create it first"
        )));
    }
    let (items, failures) = sign::gencert_items(g, &host_override, plan.for_servers)?;
    // The CSR already holds the hosts; cfssl sends -hostname as the request's hosts too.
    let mut results = sign_items(plan, &items, host_strings(&host_override), None)?;
    write_out(&g.signing, &items, &mut results);
    sign::emit(&g.signing, &items, results, failures)
}

/// `sign -remote`: the CSRs as given, certificates from the signer.
pub(crate) fn sign(s: &SignArgs, plan: &Plan) -> Result<()> {
    let (inputs, subject_req) = sign::sign_inputs(s)?;
    // cfssl sends the subject file's JSON as the request's subject.
    let subject = match (subject_req.is_some(), s.inputs.get(1)) {
        (true, Some(path)) => {
            let (bytes, name) = read_input(path)?;
            Some(
                serde_json::from_slice::<Value>(&bytes)
                    .map_err(|e| Error::input(format!("{name}: malformed JSON: {e}")))?,
            )
        }
        _ => None,
    };
    let ov = sign::subject_override(subject_req.as_ref());
    let host_override = sign::hostname_sans(&s.signing)?;
    if let Some(dir) = s
        .signing
        .out
        .as_deref()
        .filter(|d| !std::path::Path::new(d).is_dir())
    {
        return Err(Error::output(format!(
            "--out {dir}: not a folder; create it first"
        )));
    }
    let made = inputs
        .iter()
        .map(|(name, bytes)| sign::csr_item(name, bytes, &ov, &host_override))
        .collect();
    let (items, failures) = sign::collect_items(made, s.signing.out.as_deref())?;
    let mut results = sign_items(plan, &items, host_strings(&host_override), subject)?;
    write_out(&s.signing, &items, &mut results);
    sign::emit(&s.signing, &items, results, failures)
}
