//! `gencert -ca ... --key-in-token CSR.json`: the certificate's key is made in the CA key's
//! token and stays there (a delegated OCSP responder's key, for one); the output is gencert's
//! JSON with `key_uri` in place of `key`, which `json -bare` writes to NAME-key.uri.

use std::collections::BTreeMap;

use p11ca::ca::issue::CaKey;
use p11ca::ca::token_leaf::TokenLeafPlan;
use p11ca::cfssl::output;
use p11ca::token::key;
use p11ca::x509::build;
use p11ca::{Error, Result};

use super::args::{GencertArgs, TokenArgs};
use super::record::Recording;
use super::sign::{self, LocalConfig, Prepared};
use super::{Opened, new_key_id, open_for_keygen, read_input, warn, write_stdout};

pub(super) fn gencert(targs: &TokenArgs, g: &GencertArgs, local: LocalConfig) -> Result<()> {
    let [file] = g.csr_json.as_slice() else {
        return Err(Error::input(
            "gencert --key-in-token takes exactly one CSR JSON file",
        ));
    };
    let host_override = sign::hostname_sans(&g.signing)?;
    // Everything checked before the token is opened: bad input never makes a key.
    let Prepared {
        ca_cert,
        ca_source,
        key_uri,
        profile,
    } = sign::prepare(&g.signing, local)?;
    let (bytes, name) = read_input(file)?;
    let req = sign::parse_request(&bytes, &name)?;
    let key_id = new_key_id(g)?;
    let plan = TokenLeafPlan::new(
        &req,
        &name,
        g.cn.as_deref(),
        host_override,
        g.key_label.as_deref(),
        key_id,
    )?;
    let c = &g.signing;
    let mut rec = Recording::new(c.db_config.as_deref(), c.db.as_deref(), c.config.as_deref())?;
    let files = super::bundle::ChainFiles::read(c)?;

    let Opened {
        module,
        token,
        session,
        pin,
    } = open_for_keygen(targs, Some(&key_uri), g.so_pin_source.as_deref())?;
    let found = key::find_private_key(&session, &token, &key_uri)?;
    let mut ca = CaKey::new(&module, &token, ca_cert, &ca_source, &found, &key_uri)?;
    ca.set_pin(pin.clone());
    // The chain (-ca-bundle) is verified and the certificate recorded before anything is
    // printed; a failure there removes the new key as any other failure does.
    let mut chain = Vec::new();
    let mut record = |der: &[u8]| {
        chain = super::bundle::fields_of(files.as_ref(), der)?;
        let r = rec.record_of(der, &profile.name)?;
        rec.insert(&[&r])
    };
    let out = plan.run(
        &module,
        &token,
        (&session, &pin),
        &ca,
        &profile,
        &mut record,
    )?;
    drop(ca);
    drop(session);
    module.finalize_for_exit();
    for w in &out.warnings {
        warn(w);
    }
    let mut fields = BTreeMap::new();
    fields.insert("cert", build::pem("CERTIFICATE", &out.cert_der)?);
    fields.insert("csr", out.csr_pem);
    fields.insert("key_uri", out.key_uri.to_string());
    fields.extend(chain);
    write_stdout(&output::result_json(&fields))
}
