//! `POST /api/v1/cfssl/revoke`: cfssl's request (`{serial, authority_key_id, reason}`), but
//! never open: it must come in cfssl's authenticated envelope (`{token, request, timestamp}`,
//! HMAC-SHA256 with the `auth_keys` entry `serve -revoke-auth-key` names), replays refused.
//! cfssl's own /revoke takes anyone's request; a revocation changes what every relying party
//! believes, so p11ca does not.

use std::time::Duration;

use serde::Deserialize;

use super::auth::ReplayGuard;
use crate::ca::issue::{CaKey, Issuer};
use crate::ca::ocsp::ResponderKey;
use crate::cfssl::auth::{self, AuthenticatedRequest};
use crate::cfssl::config::AuthKey;
use crate::cfssl::json;
use crate::db::ocsp::StoredResponse;
use crate::db::{RevokeOutcome, parse_aki, parse_serial};
use crate::error::{Error, Result};
use crate::token::pool::SessionPool;
use crate::x509::crl::Reason;
use crate::x509::ocsp::{self, ResponderIdForm, Status, Validity};

/// How long an OCSP response signed at revocation holds (cfssl's ocsprefresh default).
pub const OCSP_INTERVAL: i64 = 96 * 3600;

/// cfssl's revoke request.
#[derive(Debug, Deserialize)]
struct RevokeRequest {
    #[serde(default)]
    serial: String,
    #[serde(default)]
    authority_key_id: String,
    #[serde(default)]
    reason: String,
}

/// What to revoke, once authenticated and checked.
#[derive(Debug, PartialEq, Eq)]
pub struct Revocation {
    /// Decimal serial, as the store keeps it.
    pub serial: String,
    /// Lower-case hex AKI.
    pub aki: String,
    /// Why.
    pub reason: Reason,
}

/// An HTTP status and message.
pub type Refusal = (u16, String);

/// Authenticate and parse a revoke request; `None` key: revocation over the network is off.
pub fn check(
    key: Option<&AuthKey>,
    replays: &ReplayGuard,
    body: &[u8],
) -> std::result::Result<Revocation, Refusal> {
    let Some(key) = key else {
        return Err((
            403,
            "revocation over the network is off; start serve with -revoke-auth-key NAME (an auth_keys entry) and send cfssl's authenticated envelope".into(),
        ));
    };
    let env: AuthenticatedRequest = json::decode(body, "authenticated revoke request", &[])
        .map_err(|e| (400, e.message().to_string()))?;
    let (Some(inner), Some(token)) = (auth::unbase64(&env.request), auth::unbase64(&env.token))
    else {
        return Err((401, "authentication required: send the revoke request in cfssl's authenticated envelope (base64 \"request\" and \"token\")".into()));
    };
    if inner.is_empty() || token.is_empty() || !auth::verify(key, &inner, &token) {
        return Err((401, "invalid token".into()));
    }
    replays
        .admit(&token, env.timestamp, crate::db::now())
        .map_err(|why| (401, why))?;
    let req: RevokeRequest =
        json::decode(&inner, "revoke request", &[]).map_err(|e| (400, e.message().to_string()))?;
    if req.serial.trim().is_empty() {
        return Err((400, "serial number is required but not provided".into()));
    }
    let bad = |field: &str, e: crate::Error| (400, format!("{field}: {}", e.message()));
    Ok(Revocation {
        serial: parse_serial(&req.serial).map_err(|e| bad("serial", e))?,
        aki: parse_aki(&req.authority_key_id).map_err(|e| bad("authority_key_id", e))?,
        reason: req.reason.trim().parse().map_err(|e| bad("reason", e))?,
    })
}

/// The message for an outcome.
pub fn describe(r: &Revocation, outcome: RevokeOutcome) -> String {
    match outcome {
        RevokeOutcome::Revoked => format!("revoked serial {} ({})", r.serial, r.reason.name()),
        _ => format!(
            "serial {} was already revoked for {}; left as it was",
            r.serial,
            r.reason.name()
        ),
    }
}

/// What signs the OCSP responses `serve` stores.
pub struct OcspSigners<'a> {
    /// The CA key (the signer when there is no delegated responder).
    pub ca: &'a CaKey,
    /// The token sessions both keys are used through.
    pub pool: &'a SessionPool,
    /// The delegated responder (`serve -responder`), in the CA key's token.
    pub responder: Option<&'a ResponderKey>,
    /// How the CA names itself in responses it signs (`-responder-id`).
    pub id_form: ResponderIdForm,
}

/// The OCSP response saying the certificate of `r` is revoked since `at`, signed before the
/// revocation is committed so that both go into the store in one transaction: responders
/// answering from the store say "revoked" at once, not after the next `ocsprefresh`. A
/// delegated responder signs it when there is one, as `ocsprefresh` would. With the time it
/// stops being served.
pub fn revoked_response(
    signers: OcspSigners<'_>,
    r: &Revocation,
    at: i64,
) -> Result<(StoredResponse, i64)> {
    let OcspSigners {
        ca,
        pool,
        responder,
        id_form,
    } = signers;
    let serial = crate::text::from_decimal(&r.serial)
        .ok_or_else(|| Error::input(format!("serial \"{}\" is not decimal", r.serial)))?;
    let status = Status::Revoked {
        at,
        reason: r.reason,
    };
    let times = Validity::at(at, OCSP_INTERVAL);
    // Every such signature fails (`fault-injection` feature): the test that /revoke signs
    // nothing for a revocation the store would refuse or leave as it is.
    #[cfg(feature = "fault-injection")]
    crate::fault::point("revoke-ocsp-sign")?;
    let der = pool.with_session(Duration::from_secs(30), |session| match responder {
        Some(rk) => rk.sign(&rk.signer(session)?, &serial, status, times),
        None => {
            let issuer = Issuer::new(ca, session)?;
            let id = ocsp::cert_id(ca.certificate(), &serial)?;
            let who = (ca.certificate(), id_form);
            ocsp::sign_response(id, status, times, who, true, issuer.signer())
        }
    })?;
    let row = StoredResponse {
        serial: r.serial.clone(),
        aki: r.aki.clone(),
        body: der,
    };
    Ok((row, at + OCSP_INTERVAL))
}
