//! `gencert -renewca` and `key import-cert`: a CA certificate re-issued or replaced around the
//! key the token already holds (the work is in `p11ca::ca::renew`).

use std::collections::BTreeMap;

use p11ca::Result;
use p11ca::ca::renew::{self, RenewOptions, RenewOutput, RenewPlan};
use p11ca::cfssl::output;

use super::args::{GencertArgs, TokenArgs};
use super::record::Recording;
use super::sign::{ca_and_key, ca_key_uri, parse_request};
use super::{open_and_login, read_input, warn, write_stdout};

/// `gencert -renewca -ca CERT -ca-key HANDLE [CSR.json]`: prints `cert`, `csr` and `key_uri`
/// as `-initca` does.
pub(super) fn gencert_renewca(targs: &TokenArgs, g: &GencertArgs) -> Result<()> {
    let (_, _, key_uri) = ca_and_key(g.signing.ca.as_deref(), g.signing.ca_key.as_deref())?;
    let ca_path = g.signing.ca.as_deref().unwrap_or_default();
    let (old, source) = read_input(ca_path)?;
    let req = match g.csr_json.as_slice() {
        [] => None,
        [file] => {
            let (bytes, name) = read_input(file)?;
            Some((parse_request(&bytes, &name)?, name))
        }
        _ => {
            return Err(p11ca::Error::input(
                "gencert -renewca takes at most one CSR JSON file",
            ));
        }
    };
    let opts = RenewOptions {
        allow_subject_change: g.allow_subject_change,
    };
    // Everything that needs no token is checked before a PIN is asked for.
    let plan = RenewPlan::new(
        &old,
        &source,
        req.as_ref().map(|(r, n)| (r, n.as_str())),
        &opts,
    )?;
    let mut rec = Recording::new(
        g.signing.db_config.as_deref(),
        g.signing.db.as_deref(),
        None,
    )?;
    let o = open_and_login(targs, Some(&key_uri))?;
    let out = plan.run(&o.module, &o.token, &o.session, &key_uri, Some(&o.pin))?;
    // Recorded (profile `renewca`) before it is printed, like every issued certificate; the
    // token already holds it, which the error then says.
    rec.insert_pem(&out.cert_pem, "the renewed CA certificate", "renewca")
        .map_err(|e| e.context("the renewed certificate is in the token"))?;
    print(out, true)
}

/// `key import-cert HANDLE CERT`: prints `cert` and `key_uri`.
pub(super) fn import_cert(targs: &TokenArgs, handle: &str, cert: &str) -> Result<()> {
    let key_uri = ca_key_uri(handle)?;
    let (bytes, source) = read_input(cert)?;
    let o = open_and_login(targs, Some(&key_uri))?;
    let out =
        renew::import_certificate(&o.module, &o.token, &o.session, &key_uri, &bytes, &source)?;
    print(out, false)
}

fn print(out: RenewOutput, with_csr: bool) -> Result<()> {
    for w in &out.warnings {
        warn(w);
    }
    let mut fields = BTreeMap::new();
    fields.insert("cert", out.cert_pem);
    if with_csr {
        fields.insert("csr", out.csr_pem);
    }
    fields.insert("key_uri", out.key_uri.to_string());
    write_stdout(&output::result_json(&fields))
}
