//! `token list`, `key list`, `key show` and `key attest`: what is in the module and the token.

use serde_json::json;

use p11ca::token::Module;
use p11ca::token::key::{self, ObjectSummary};
use p11ca::token::uri::Pkcs11Uri;
use p11ca::{Error, Result};

use super::args::TokenArgs;
use super::{open_and_login, read_input, write_stdout};

pub(super) fn token_list(args: &TokenArgs) -> Result<()> {
    let path = Module::resolve_path(args.module.as_deref(), None)?;
    let module = Module::load(&path)?;
    let tokens = module.tokens()?;
    let mut s = format!("module {}\n", module.path().display());
    if tokens.is_empty() {
        s.push_str("no token present\n");
    }
    for t in &tokens {
        let mut u = Pkcs11Uri::default();
        u.token = Some(t.label.clone());
        u.serial = Some(t.serial.clone());
        s.push_str(&format!(
            "token \"{}\"\n  serial {}  manufacturer {}  model {}  slot {}\n  flags {}\n  can {}\n  uri {u}\n",
            t.label,
            t.serial,
            t.manufacturer,
            t.model,
            t.slot.id(),
            t.flags.join(","),
            module.capabilities(t),
        ));
    }
    write_stdout(&s)
}

fn object_json(token: &str, o: &ObjectSummary) -> serde_json::Value {
    let uri = Pkcs11Uri::for_object(token, &o.id, &o.label, o.class);
    let attrs: serde_json::Map<String, serde_json::Value> = o
        .attributes
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    json!({
        "class": o.class.as_str(),
        "kind": o.kind,
        "label": o.label,
        "id": p11ca::text::hex(&o.id),
        "uri": uri.to_string(),
        "attributes": attrs,
    })
}

fn object_text(token: &str, o: &ObjectSummary) -> String {
    let uri = Pkcs11Uri::for_object(token, &o.id, &o.label, o.class);
    let mut s = format!("{:<8} {:<9} {uri}\n", o.class.as_str(), o.kind);
    if !o.attributes.is_empty() {
        let a: Vec<String> = o
            .attributes
            .iter()
            .map(|(k, v)| format!("{k}={}", v.map_or("?".to_string(), |b| b.to_string())))
            .collect();
        s.push_str(&format!("         {}\n", a.join(" ")));
    }
    s
}

pub(super) fn key_list(args: &TokenArgs, as_json: bool) -> Result<()> {
    let o = open_and_login(args, None)?;
    let objects = key::list_objects(&o.session)?;
    if as_json {
        let v: Vec<_> = objects
            .iter()
            .map(|x| object_json(&o.token.label, x))
            .collect();
        return write_stdout(&format!(
            "{}\n",
            json!({"token": o.token.label, "objects": v})
        ));
    }
    let mut s = format!(
        "token \"{}\" (serial {}): {} objects\n",
        o.token.label,
        o.token.serial,
        objects.len()
    );
    for x in &objects {
        s.push_str(&object_text(&o.token.label, x));
    }
    write_stdout(&s)
}

pub(super) fn key_show(args: &TokenArgs, uri: &str, as_json: bool) -> Result<()> {
    let u = Pkcs11Uri::parse(uri)?;
    let o = open_and_login(args, Some(&u))?;
    let k = key::find_private_key(&o.session, &o.token, &u)?;
    let summary = key::summarize(&o.session, k.handle)?;
    let probes = key::probe_secret(&o.session, k.handle)?;
    let spki_pem = der::EncodePem::to_pem(&k.spki, der::pem::LineEnding::LF)
        .map_err(|e| Error::input(format!("cannot encode the public key: {e}")))?;
    if as_json {
        let mut v = object_json(&o.token.label, &summary);
        v["secret_probe"] = json!(
            probes
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect::<serde_json::Map<_, _>>()
        );
        v["public_key"] = json!(spki_pem);
        return write_stdout(&format!("{v}\n"));
    }
    let mut s = object_text(&o.token.label, &summary);
    for (name, result) in probes {
        s.push_str(&format!("         read {name}: {result}\n"));
    }
    s.push_str(&spki_pem);
    write_stdout(&s)
}

/// `key retire HANDLE [--delete --confirm-delete]`: the key stops signing; destroyed only
/// when both flags say so.
pub(super) fn key_retire(
    args: &TokenArgs,
    handle: &str,
    delete: bool,
    confirm: bool,
) -> Result<()> {
    use p11ca::token::certobj::{self, Retired};
    let u = super::sign::ca_key_uri(handle)?;
    if delete && !confirm {
        return Err(Error::input(format!(
            "key retire --delete destroys {u} for good: add --confirm-delete to do so, or leave out --delete to only stop it from signing"
        )));
    }
    let o = open_and_login(args, Some(&u))?;
    let k = key::find_private_key(&o.session, &o.token, &u)?;
    let done = certobj::retire(&o.module, &o.token, &o.session, &k, Some(&o.pin), delete)?;
    let uri = Pkcs11Uri::for_object(
        &o.token.label,
        &k.id,
        &k.label,
        p11ca::token::uri::ObjectType::Private,
    );
    write_stdout(&match done {
        Retired::SignOff => {
            format!("retired {uri}: CKA_SIGN=false, the token refuses to sign with it\n")
        }
        Retired::Deleted => format!("deleted {uri} with its public key and certificates\n"),
    })
}

/// `key attest URI --cert CERT --root PEM`: the chain, checked, and what it says.
pub(super) fn key_attest(args: &TokenArgs, uri: &str, cert: &str, root: &str) -> Result<()> {
    use p11ca::x509::{attest, pem};
    let read_cert = |path: &str| {
        let (bytes, name) = read_input(path)?;
        pem::read_der(&bytes, &name, &["CERTIFICATE"], "certificate")
    };
    let ca = read_cert(cert)?;
    let root_der = read_cert(root)?;
    let u = Pkcs11Uri::parse(uri)?;
    let o = open_and_login(args, Some(&u))?;
    let k = key::find_private_key(&o.session, &o.token, &u)?;
    let id = key::summarize(&o.session, k.handle)?.id;
    let (leaf, f9) = p11ca::token::attest::piv_attestation(&o.session, &o.token.label, &id)?;
    let a = attest::check(&leaf, &f9, &root_der, &ca).map_err(|e| e.context(uri))?;
    let or_unknown = |v: Option<String>| v.unwrap_or_else(|| "unknown".into());
    let mut s = format!(
        "attested by {root}: key {uri}\n  generated on the card (serial {}, firmware {}), PIN policy {}, touch policy {}\n  the key in {cert} is the attested key\n",
        or_unknown(a.serial.map(|n| n.to_string())),
        or_unknown(a.firmware),
        a.pin_policy.unwrap_or("unknown"),
        a.touch_policy.unwrap_or("unknown"),
    );
    for der in [&leaf, &f9] {
        let pem = der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, der)
            .map_err(|e| Error::input(format!("cannot encode a certificate: {e}")))?;
        s.push_str(&pem);
    }
    write_stdout(&s)
}
