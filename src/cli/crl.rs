//! `p11ca gencrl SERIALS CERT KEY [TIME]`: cfssl's `gencrl` with the CA key in the token. The
//! serial list, the CA certificate and the key handle are all checked before the token is
//! opened; the CRL's signature is verified in software before it is printed.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use p11ca::ca::issue::{CaKey, Issuer, parse_ca_cert};
use p11ca::token::key;
use p11ca::x509::crl::{RevokedEntry, build_crl};
use p11ca::{Error, Result};

use super::args::{GencrlArgs, TokenArgs};
use super::sign::ca_key_uri;
use super::{open_and_login, read_input, write_stdout};

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

    // Paired with the key, and signing, exactly as `sign` does (CaKey checks the certificate
    // belongs to the key and is a CA; the Issuer's signer logs in per signature if the key
    // needs it).
    let opened = open_and_login(targs, Some(&key_uri))?;
    let found = key::find_private_key(&opened.session, &opened.token, &key_uri)?;
    let mut ca_key = CaKey::new(
        &opened.module,
        &opened.token,
        ca.clone(),
        &ca_source,
        &found,
        &key_uri,
    )?;
    ca_key.set_pin(opened.pin.clone());
    let issuer = Issuer::new(&ca_key, &opened.session)?;
    // As cfssl: every serial is revoked "now", with no reason.
    let entries = serials.into_iter().map(|serial| RevokedEntry {
        serial,
        revoked_at: now,
        reason: None,
    });
    let crl = build_crl(
        &ca,
        entries,
        &number.to_be_bytes(),
        now,
        now + lifetime,
        issuer.signer(),
    )
    .map_err(|e| e.context(&ca_source))?;
    drop(issuer);
    drop(ca_key);
    opened.module.finalize_for_exit();
    let mut out = STANDARD.encode(&crl);
    drop(crl);
    out.push('\n');
    write_stdout(&out)
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
