//! `p11ca ocspsign`: cfssl's `ocspsign` with the responder key in the token. The certificate,
//! the CA and the responder are all checked before the token is opened; the response's
//! signature is verified in software before it is printed.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use p11ca::ca::batch;
use p11ca::ca::issue::parse_ca_cert;
use p11ca::ca::ocsp::ResponderKey;
use p11ca::cfssl::duration::GoDuration;
use p11ca::db::ocsp::StoredResponse;
use p11ca::db::{DbConfig, ListFilter, Listed, Store};
use p11ca::token::key;
use p11ca::x509::crl::Reason;
use p11ca::x509::crl::ca_key_identifier;
use p11ca::x509::ocsp::{self, ResponderIdForm, Status, Validity};
use p11ca::{Error, Result};

use super::args::{OcsprefreshArgs, OcspserveArgs, OcspsignArgs, TokenArgs};
use super::sign::key_uri_of;
use super::{open_and_login, read_input, write_stdout};

fn cert(path: &str, what: &str) -> Result<x509_cert::Certificate> {
    use der::Decode;
    let (bytes, source) = read_input(path)?;
    let der = p11ca::x509::pem::read_der(&bytes, &source, &["CERTIFICATE"], what)?;
    x509_cert::Certificate::from_der(&der)
        .map_err(|e| Error::input(format!("{source}: not a certificate: {e}")))
}

/// `-status`, `-reason`, `-revoked-at` as cfssl reads them.
fn status(o: &OcspsignArgs, now: i64) -> Result<Status> {
    match o.status.to_ascii_lowercase().as_str() {
        "good" => Ok(Status::Good),
        "unknown" => Ok(Status::Unknown),
        "revoked" => {
            let reason = match o.reason.trim() {
                "0" => Reason::Unspecified,
                r => r.parse::<Reason>().map_err(|e| e.context("-reason"))?,
            };
            Ok(Status::Revoked {
                at: revoked_at(&o.revoked_at, now)?,
                reason,
            })
        }
        s => Err(Error::input(format!(
            "-status \"{}\": give good, revoked or unknown",
            p11ca::text::escape_for_log(s)
        ))),
    }
}

/// `YYYY-MM-DD` as UTC midnight, or `now`.
fn revoked_at(s: &str, now: i64) -> Result<i64> {
    if s == "now" {
        return Ok(now);
    }
    let bad = || {
        Error::input(format!(
            "-revoked-at \"{}\": give a date as YYYY-MM-DD (UTC) or now",
            p11ca::text::escape_for_log(s)
        ))
    };
    let parts: Vec<&str> = s.split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        return Err(bad());
    };
    let (y, m, d) = (
        y.parse::<u16>().map_err(|_| bad())?,
        m.parse::<u8>().map_err(|_| bad())?,
        d.parse::<u8>().map_err(|_| bad())?,
    );
    let dt = der::DateTime::new(y, m, d, 0, 0, 0).map_err(|_| bad())?;
    Ok(dt.unix_duration().as_secs() as i64)
}

fn interval(s: &str) -> Result<i64> {
    let d = GoDuration::parse(s).map_err(|m| {
        Error::input(format!(
            "-interval \"{s}\": {m}; give a Go duration such as 96h"
        ))
    })?;
    if d.as_secs() <= 0 {
        return Err(Error::input(format!("-interval \"{s}\" must be positive")));
    }
    Ok(d.as_secs())
}

/// The responder certificate for `ca` (read from `ca_source`) and the file it came from: the
/// CA itself, or the delegated responder `responder` names, checked now (issued by the CA,
/// extended key usage OCSPSigning) so that a wrong one never needs the token.
pub(super) fn responder_for(
    ca: &x509_cert::Certificate,
    ca_source: &str,
    responder: Option<&str>,
) -> Result<(x509_cert::Certificate, String)> {
    let Some(path) = responder else {
        return Ok((ca.clone(), ca_source.to_string()));
    };
    let cert = cert(path, "-responder")?;
    ocsp::check_responder(ca, &cert).map_err(|e| e.context(format!("-responder {path}")))?;
    Ok((cert, path.to_string()))
}

/// Log in to the token holding `-responder-key` and pair that key with the responder
/// certificate before anything is signed.
fn open_responder(
    targs: &TokenArgs,
    ca: &x509_cert::Certificate,
    responder: (x509_cert::Certificate, String, ResponderIdForm),
    key_value: &str,
) -> Result<(super::Opened, ResponderKey)> {
    let key_uri = key_uri_of(key_value, "-responder-key")?;
    let opened = open_and_login(targs, Some(&key_uri))?;
    let found = key::find_private_key(&opened.session, &opened.token, &key_uri)?;
    let (cert, source, form) = responder;
    let mut rk = ResponderKey::new(
        &opened.module,
        &opened.token,
        ca.clone(),
        (cert, &source),
        &found,
        &key_uri,
    )?;
    rk.set_pin(opened.pin.clone());
    rk.set_id_form(form);
    Ok((opened, rk))
}

/// `-responder-id`: name or key.
pub(super) fn responder_id_form(value: &str) -> Result<ResponderIdForm> {
    value.parse().map_err(|e: Error| e.context("-responder-id"))
}

pub(super) fn ocsprefresh(targs: &TokenArgs, o: &OcsprefreshArgs) -> Result<()> {
    let now = p11ca::db::now();
    let (ca_bytes, ca_source) = read_input(&o.ca)?;
    let ca = parse_ca_cert(&ca_bytes, &ca_source)?;
    let (cert, source) = responder_for(&ca, &ca_source, o.responder.as_deref())?;
    let responder = (cert, source, responder_id_form(&o.responder_id)?);
    let interval = interval(&o.interval)?;
    let aki = p11ca::text::hex(&ca_key_identifier(&ca).map_err(|e| e.context(&ca_source))?);
    let cfg = DbConfig::resolve(
        o.db.db_config.as_deref(),
        o.db.db.as_deref(),
        o.db.config.as_deref(),
    )?;
    let mut store = Store::open_existing(&cfg)?;
    let all = store.list_status(ListFilter::default())?;
    let (mine, others): (Vec<Listed>, Vec<Listed>) = all
        .into_iter()
        .filter(|l| l.record.not_after > now)
        .partition(|l| l.record.authority_key_identifier == aki);
    let (opened, responder) = open_responder(targs, &ca, responder, &o.responder_key)?;
    let times = Validity::at(now, interval);
    let items = mine
        .iter()
        .map(|l| {
            let serial = p11ca::text::from_decimal(&l.record.serial_number).ok_or_else(|| {
                Error::input(format!(
                    "store: serial \"{}\" is not decimal",
                    l.record.serial_number
                ))
            })?;
            Ok((serial, stored_status(l)))
        })
        .collect::<Result<Vec<_>>>()?;
    let jobs = batch::session_count(&opened.module, &opened.token, o.jobs, items.len());
    let bodies = p11ca::ca::ocsp::sign_all(
        &opened.module,
        &opened.token,
        &responder,
        &opened.session,
        &items,
        times,
        jobs,
    )?;
    let signed: Vec<(StoredResponse, i64)> = mine
        .iter()
        .zip(bodies)
        .map(|(l, body)| {
            let row = StoredResponse {
                serial: l.record.serial_number.clone(),
                aki: aki.clone(),
                body,
            };
            (row, now + interval)
        })
        .collect();
    drop(responder);
    opened.module.finalize_for_exit();
    store
        .upsert_ocsp(&signed)
        .map_err(|e| e.context(format!("certificate store {}", cfg.describe())))?;
    eprintln!(
        "p11ca: ocsprefresh: {} responses signed and stored{}",
        signed.len(),
        if others.is_empty() {
            String::new()
        } else {
            format!(
                "; {} unexpired certificates of other CAs left alone",
                others.len()
            )
        }
    );
    Ok(())
}

/// The status a stored certificate's response carries.
fn stored_status(l: &Listed) -> Status {
    if !l.is_revoked() {
        return Status::Good;
    }
    let reason = Reason::ALL
        .into_iter()
        .find(|r| i64::from(r.code()) == l.reason)
        .unwrap_or(Reason::Unspecified);
    Status::Revoked {
        at: l.revoked_at.unwrap_or(0),
        reason,
    }
}

pub(super) fn ocspsign(targs: &TokenArgs, o: &OcspsignArgs) -> Result<()> {
    let now = p11ca::db::now();
    let (ca_bytes, ca_source) = read_input(&o.ca)?;
    let ca = parse_ca_cert(&ca_bytes, &ca_source)?;
    let leaf = cert(&o.cert, "-cert")?;
    let serial = ocsp::issued_by(&leaf, &ca).map_err(|e| e.context(&o.cert))?;
    let (cert, source) = responder_for(&ca, &ca_source, o.responder.as_deref())?;
    let responder = (cert, source, responder_id_form(&o.responder_id)?);
    let status = status(o, now)?;
    let times = Validity::at(now, interval(&o.interval)?);

    let (opened, responder) = open_responder(targs, &ca, responder, &o.responder_key)?;
    let signer = responder.signer(&opened.session)?;
    let der = responder.sign(&signer, &serial, status, times)?;
    drop(signer);
    drop(responder);
    opened.module.finalize_for_exit();
    let line = serde_json::json!({"ocspResponse": STANDARD.encode(der)});
    write_stdout(&format!("{line}\n"))
}

pub(super) fn ocspserve(o: &OcspserveArgs) -> Result<()> {
    use std::net::ToSocketAddrs;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use p11ca::serve::guard::{Guard, HostPolicy, Limits};
    use p11ca::serve::ocsp::Responder;

    if !o.path.starts_with('/') {
        return Err(Error::input(format!(
            "-path \"{}\" must start with /",
            o.path
        )));
    }
    let (responder, what) = match &o.responses {
        Some(file) => {
            let (bytes, source) = read_input(file)?;
            let text = String::from_utf8_lossy(&bytes);
            let (r, n, skipped) = Responder::from_file(&text, &source, &o.path)?;
            if skipped > 0 {
                super::warn(&format!(
                    "{source}: {skipped} entries are not OCSP responses; skipped"
                ));
            }
            (r, format!("{n} responses from {source}"))
        }
        None => {
            let cfg = DbConfig::resolve(
                o.db.db_config.as_deref(),
                o.db.db.as_deref(),
                o.db.config.as_deref(),
            )?;
            let what = format!("the store {}", cfg.describe());
            (Responder::from_store(cfg, &o.path)?, what)
        }
    };
    let spec = if o.address.contains(':') && !o.address.starts_with('[') {
        format!("[{}]:{}", o.address, o.port)
    } else {
        format!("{}:{}", o.address, o.port)
    };
    let addrs: Vec<_> = spec
        .to_socket_addrs()
        .map_err(|e| Error::input(format!("-address {}: {e}", o.address)))?
        .collect();
    super::serve::raise_open_file_limit(o.max_connections);
    let listener = super::serve::listen(&addrs).map_err(|e| {
        Error::input(format!(
            "cannot listen on {spec}: {e}; choose another -port or -address"
        ))
    })?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::input(format!("cannot read the bound address: {e}")))?;
    let limits = Limits {
        max_connections: o.max_connections,
        per_client: o.max_conns_per_client,
        rate: o.rate_limit,
    };
    let guard = Guard::new(limits, HostPolicy::new(&o.address, addr.ip(), &[], &[]));
    let stop = Arc::new(AtomicBool::new(false));
    let server = p11ca::serve::Server::new(Arc::new(responder), listener, stop.clone(), guard);
    super::serve::stop_on_signals(stop, addr)?;
    eprintln!(
        "p11ca: ocspserve: listening on http://{addr}{} with {what}",
        o.path
    );
    server.run();
    eprintln!("p11ca: ocspserve: stopped");
    Ok(())
}
