//! `p11ca gencrl SERIALS CERT KEY [TIME]` (cfssl's `gencrl`) and `p11ca crl -ca CERT -ca-key
//! KEY` (cfssl 1.6's `crl`, from the certificate store), with the CA key in the token. Inputs
//! are all checked before the token is opened; the CRL's signature is verified in software
//! before it is printed (base64 DER, as cfssl) or written with `--out` (DER, or PEM for .pem).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use x509_cert::Certificate;

use p11ca::ca::issue::parse_ca_cert;
use p11ca::cfssl::duration::GoDuration;
use p11ca::db::audit::{self, AuditEvent, AuditKind};
use p11ca::db::{DbConfig, Store};
use p11ca::fsio::{OutputSet, PUBLIC_MODE};
use p11ca::x509::Signer;
use p11ca::x509::crl::{RevokedEntry, build_crl, ca_key_identifier};
use p11ca::{Error, Result};

use super::args::{CrlArgs, GencrlArgs, TokenArgs};
use super::casigner::with_ca_signer;
use super::sign::ca_key_uri;
use super::{read_input, write_stdout};

/// cfssl's default lifetime when TIME is missing or 0: one week.
const ONE_WEEK: i64 = 7 * 24 * 3600;

pub(super) fn gencrl(targs: &TokenArgs, g: &GencrlArgs) -> Result<()> {
    let now = p11ca::db::now();
    let (list, list_name) = read_input(&g.serials)?;
    let serials = parse_serials(&list, &list_name)?;
    let (bytes, ca_source) = read_input(&g.cert)?;
    let ca = parse_ca_cert(&bytes, &ca_source)?;
    let key_uri = ca_key_uri(&g.key)?;
    let lifetime = lifetime(g.time.as_deref())?;
    let number = g.number.unwrap_or(now.unsigned_abs());

    // As cfssl: every serial is revoked "now", with no reason.
    let entries: Vec<RevokedEntry> = serials
        .into_iter()
        .map(|serial| RevokedEntry {
            serial,
            revoked_at: now,
            reason: None,
        })
        .collect();
    let crl = sign_crl(
        targs,
        (&ca, &ca_source),
        &key_uri,
        entries,
        &mut || Ok(number),
        (now, now + lifetime),
        &mut |_, _, _| {},
    )?;
    output(crl, g.out.as_deref())
}

/// `crl`: the store's revoked certificates of the CA `-ca`, the next CRL number of that CA
/// from the store. No CRL number is taken unless the key pairs with `-ca`.
pub(super) fn crl(targs: &TokenArgs, c: &CrlArgs) -> Result<()> {
    let now = p11ca::db::now();
    let (bytes, ca_source) = read_input(&c.ca)?;
    let ca = parse_ca_cert(&bytes, &ca_source)?;
    let key_uri = ca_key_uri(&c.ca_key)?;
    let d = GoDuration::parse(&c.expiry).map_err(|m| {
        Error::input(format!(
            "-expiry \"{}\": {m}; give a Go duration such as 168h",
            c.expiry
        ))
    })?;
    if d.as_secs() <= 0 {
        return Err(Error::input(format!(
            "-expiry \"{}\" must be positive",
            c.expiry
        )));
    }
    let aki = p11ca::text::hex(&ca_key_identifier(&ca).map_err(|e| e.context(&ca_source))?);
    let cfg = DbConfig::resolve(
        c.db.db_config.as_deref(),
        c.db.db.as_deref(),
        c.db.config.as_deref(),
    )?;
    let what = cfg.describe();
    let in_store = |e: Error| e.context(format!("certificate store {what}"));
    let store = std::cell::RefCell::new(Store::open_existing(&cfg)?);
    let entries = store
        .borrow_mut()
        .crl_entries(&aki, now)
        .map_err(in_store)?;
    // The CRL and a checkpoint over the audit log, signed by the same key while it is open:
    // each CRL published seals the log up to it.
    let mut seal = |signer: &dyn Signer, number: u64, count: usize| {
        let actor = audit::cli_actor();
        let event = AuditEvent::new(
            AuditKind::Crl,
            &actor,
            json!({"aki": aki, "number": number.to_string(), "entries": count, "this_update": now, "next_update": now + d.as_secs()}),
        );
        let mut s = store.borrow_mut();
        let r = s
            .audit_append(&[event])
            .and_then(|()| s.audit_checkpoint(signer, &actor));
        if let Err(e) = r {
            super::warn(&format!(
                "the CRL was signed but not logged: {}",
                in_store(e)
            ));
        }
    };
    let crl = sign_crl(
        targs,
        (&ca, &ca_source),
        &key_uri,
        entries,
        &mut || store.borrow_mut().next_crl_number(&aki).map_err(in_store),
        (now, now + d.as_secs()),
        &mut seal,
    )?;
    output(crl, c.out.as_deref())
}

/// Sign the CRL of `ca` listing `entries` with the key `key_uri`, exactly as `sign` signs
/// certificates (the key must pair with `ca`; the signer logs in per signature if the key
/// needs it). `number` is asked only once the key is known to pair with `ca`, so a wrong
/// `-ca` takes no CRL number; `after` then gets the signer and the number used.
fn sign_crl(
    targs: &TokenArgs,
    (ca, ca_source): (&Certificate, &str),
    key_uri: &p11ca::token::Pkcs11Uri,
    entries: Vec<RevokedEntry>,
    number: &mut dyn FnMut() -> Result<u64>,
    (this_update, next_update): (i64, i64),
    after: &mut dyn FnMut(&dyn Signer, u64, usize),
) -> Result<Vec<u8>> {
    with_ca_signer(targs, ca, ca_source, key_uri, |signer| {
        let number = number()?;
        let count = entries.len();
        let crl = build_crl(
            ca,
            entries,
            &number.to_be_bytes(),
            this_update,
            next_update,
            signer,
        )
        .map_err(|e| e.context(ca_source))?;
        after(signer, number, count);
        Ok(crl)
    })
}

/// Print the CRL as cfssl does (one line of base64 DER), or write it to `out`: PEM when the
/// name ends in `.pem`, else DER (atomically, as every output file).
fn output(crl: Vec<u8>, out: Option<&str>) -> Result<()> {
    let Some(path) = out else {
        let mut text = STANDARD.encode(&crl);
        drop(crl);
        text.push('\n');
        return write_stdout(&text);
    };
    let bytes = if path.to_ascii_lowercase().ends_with(".pem") {
        p11ca::x509::build::pem("X509 CRL", &crl)?.into_bytes()
    } else {
        crl
    };
    let mut set = OutputSet::new();
    set.add(path, bytes, PUBLIC_MODE);
    set.commit()
}

/// TIME: whole seconds until nextUpdate; missing or 0 is one week (cfssl).
fn lifetime(time: Option<&str>) -> Result<i64> {
    let Some(t) = time.map(str::trim) else {
        return Ok(ONE_WEEK);
    };
    match t.parse::<i64>() {
        Ok(0) => Ok(ONE_WEEK),
        Ok(s) if s > 0 && s <= i64::from(i32::MAX) => Ok(s),
        _ => Err(Error::input(format!(
            "TIME \"{t}\": give the CRL's lifetime as a whole number of seconds from 1 to {} (0 or nothing: one week)",
            i32::MAX
        ))),
    }
}

/// The serial list: one decimal serial number per line, blank lines skipped (as cfssl). Unlike
/// cfssl, which revokes serial 0 for a line it cannot read, a bad line is an error naming it.
fn parse_serials(text: &[u8], source: &str) -> Result<Vec<Vec<u8>>> {
    let text = std::str::from_utf8(text).map_err(|_| {
        Error::input(format!(
            "{source}: not text; give one decimal serial per line"
        ))
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let serial = p11ca::text::from_decimal(line).filter(|s| s.iter().any(|b| *b != 0));
        let serial = serial.ok_or_else(|| {
            Error::input(format!(
                "{source}: line {}: \"{}\" is not a serial number; give a positive decimal number",
                i + 1,
                p11ca::text::escape_for_log(&line.chars().take(60).collect::<String>())
            ))
        })?;
        out.push(serial);
    }
    Ok(out)
}
