//! cfssl's v1 API on the token CA: request and result shapes, the response envelope
//! `{success, result, errors, messages}`, and the status codes (`api/api.go`).
//!
//! | endpoint | method | request | result |
//! |---|---|---|---|
//! | `/api/v1/cfssl/sign` | POST | `{certificate_request, hosts \| hostname, subject, profile, label}` | `{certificate}` |
//! | `/api/v1/cfssl/authsign` | POST | `{token, request, timestamp, remote_address}` (base64) | `{certificate}` |
//! | `/api/v1/cfssl/info` | POST | `{label, profile}` | `{certificate, usages, expiry}` |
//! | `/api/v1/cfssl/health` | GET | | `{healthy: true}` |
//! | `/api/v1/cfssl/revoke` | POST | authenticated `{serial, authority_key_id, reason}` | `{}` |
//! | `/api/v1/cfssl/crl` | GET | | base64 DER CRL (a JSON string, as cfssl) |
//! | `/crl.der`, `/crl.pem` | GET | | the same CRL, for profiles' `crl_url` |
//!
//! Client mistakes are 400 (as cfssl), failed or missing authentication 401 (as multirootca),
//! an oversized body 413, unknown paths 404 and wrong methods 405; failures of the server
//! itself (token, store) are 500, or 503 when retrying may help. Every certificate is
//! recorded in the store before it is returned; if it cannot be recorded it is not returned.

use std::sync::{Arc, mpsc};

use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::ReplayGuard;
use super::crl::{self, CrlCache};
use super::handler::{Handler, Reply, Sink};
use super::http::Request;
use super::ocsp::Responder;
use super::revoke;
use super::signing::Signers;
use crate::ca::issue::{CaKey, ExtensionCache, LeafRequest};
use crate::ca::ocsp::ResponderKey;
use crate::cfssl::auth::{self, AuthenticatedRequest};
use crate::cfssl::config::{AuthKey, Profile, SigningConfig};
use crate::cfssl::csr::NameEntry;
use crate::cfssl::json;
use crate::db::audit::{self, AuditEvent, AuditKind, RevokeAlso};
use crate::db::{CertRecord, Recorder, RevokeOutcome};
use crate::error::{Error, Kind};
use crate::token::pool::SessionPool;
use crate::x509::hosts;
use crate::x509::name::{self, SubjectOverride};
use crate::x509::ocsp::ResponderIdForm;
use crate::x509::request;

/// The API prefix.
pub const PREFIX: &str = "/api/v1/cfssl/";

thread_local! {
    /// The signing profiles' extensions, built once per connection thread.
    static PROFILE_EXTENSIONS: std::cell::RefCell<ExtensionCache> =
        std::cell::RefCell::new(ExtensionCache::default());
}

/// A success envelope.
pub fn success(result: Value, messages: &[String]) -> Reply {
    let messages: Vec<Value> = messages
        .iter()
        .map(|m| json!({"code": 0, "message": m}))
        .collect();
    let v = json!({"success": true, "result": result, "errors": [], "messages": messages});
    Reply {
        status: 200,
        body: serde_json::to_vec(&v).unwrap_or_default(),
        error: None,
        issued: 0,
        content_type: super::http::JSON,
        headers: Vec::new(),
    }
}

/// A failure envelope; the error code is the HTTP status (as cfssl does for request errors).
pub fn failure(status: u16, message: &str) -> Reply {
    let v = json!({
        "success": false,
        "result": null,
        "errors": [{"code": status, "message": message}],
        "messages": []
    });
    Reply {
        status,
        body: serde_json::to_vec(&v).unwrap_or_default(),
        error: Some(message.to_string()),
        issued: 0,
        content_type: super::http::JSON,
        headers: Vec::new(),
    }
}

/// The status for a library error.
fn status_of(e: &Error) -> u16 {
    match e.kind() {
        Kind::Input | Kind::Policy => 400,
        Kind::Token if e.fault().is_some() => 503,
        _ => 500,
    }
}

fn fail(e: &Error) -> Reply {
    failure(status_of(e), e.message())
}

/// A certificate signed but not committed to the store is not handed out.
fn not_recorded(e: &Error) -> Reply {
    failure(
        500,
        &format!(
            "{}; the certificate was not recorded, so it is not returned",
            e.message()
        ),
    )
}

/// The subject override of a sign request (`signer.Subject`).
#[derive(Debug, Default, Deserialize)]
struct RawSubject {
    #[serde(default)]
    cn: String,
    #[serde(default)]
    names: Vec<NameEntry>,
    #[serde(default)]
    serialnumber: String,
}

/// A sign request (`signer.SignRequest` plus the handler's `hostname`), keys folded.
#[derive(Debug, Default, Deserialize)]
struct SignRequest {
    #[serde(default)]
    certificate_request: String,
    hosts: Option<Vec<String>>,
    #[serde(default)]
    hostname: String,
    subject: Option<RawSubject>,
    #[serde(default)]
    profile: String,
}

#[derive(Debug, Default, Deserialize)]
struct InfoRequest {
    #[serde(default)]
    profile: String,
}

/// Everything the API needs: the CA key, the policy, the sessions and the store.
pub struct Service {
    /// The CA certificate and its key in the token.
    pub ca: Arc<CaKey>,
    /// The CA certificate, PEM (for /info).
    pub ca_pem: String,
    /// The signing policy.
    pub config: SigningConfig,
    /// Token sessions: the signing threads', and one more (where the token allows it) for
    /// /revoke's OCSP response and the CRL; /health checks the login session kept beside them.
    pub pool: Arc<SessionPool>,
    /// The threads that sign certificates ([`Signers`]).
    pub signers: Signers,
    /// The issued-certificate store.
    pub recorder: Recorder,
    /// Largest accepted request body.
    pub max_body: usize,
    /// authsign tokens accepted recently (replays are refused).
    pub replays: ReplayGuard,
    /// The `auth_keys` entry that authenticates /revoke (`None`: /revoke is off).
    pub revoke_key: Option<AuthKey>,
    /// The published CRL.
    pub crl: CrlCache,
    /// The OCSP responder on a path of its own (`serve -ocsp-path`), from the same store.
    pub ocsp: Option<Responder>,
    /// The delegated responder whose key signs the responses /revoke stores (`-responder`);
    /// `None`: the CA key signs them.
    pub responder: Option<ResponderKey>,
    /// How those responses name their responder (`-responder-id`).
    pub responder_id: ResponderIdForm,
}

impl Handler for Service {
    fn handle(&self, req: &Request, who: &str) -> Reply {
        let (tx, rx) = mpsc::sync_channel(1);
        self.handle_into(
            req,
            who,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv()
            .unwrap_or_else(|_| failure(500, "the request was dropped unanswered"))
    }

    fn handle_into(&self, req: &Request, who: &str, sink: Sink) {
        match &self.ocsp {
            Some(o) if o.serves(&req.path) => sink(o.handle(req, who)),
            _ => self.answer(&req.method, &req.path, &req.body, who, sink),
        }
    }

    fn answers_later(&self, req: &Request) -> bool {
        req.method == "POST"
            && matches!(req.path.strip_prefix(PREFIX), Some("sign" | "authsign"))
            && self.ocsp.as_ref().is_none_or(|o| !o.serves(&req.path))
    }

    fn max_body(&self) -> usize {
        self.max_body
    }

    fn accepts(&self, req: &Request) -> bool {
        match &self.ocsp {
            Some(o) if o.serves(&req.path) => o.accepts(req),
            _ => super::guard::is_json(req.content_type.as_deref()),
        }
    }
}

impl Service {
    /// Answer one request from `peer` into `sink` (an issued certificate from the thread that
    /// commits it).
    pub fn answer(&self, method: &str, path: &str, body: &[u8], peer: &str, sink: Sink) {
        if let Some(form) = path.strip_prefix("/crl.") {
            return sink(self.plain_crl(method, form));
        }
        let Some(endpoint) = path.strip_prefix(PREFIX) else {
            return sink(failure(
                404,
                &format!("no such endpoint {path}; the API is under {PREFIX}"),
            ));
        };
        let allowed = match endpoint {
            "sign" | "authsign" | "info" | "revoke" => "POST",
            "health" | "crl" => "GET",
            other => {
                return sink(failure(
                    404,
                    &format!(
                        "p11ca serve does not offer {PREFIX}{other}; it offers sign, authsign, info, health, revoke and crl"
                    ),
                ));
            }
        };
        if method != allowed {
            return sink(failure(405, &format!("Method is not allowed:\"{method}\"")));
        }
        match endpoint {
            "sign" => self.sign(body, peer, self.audited(endpoint, peer, sink)),
            "authsign" => self.authsign(body, peer, self.audited(endpoint, peer, sink)),
            "revoke" => self.audited(endpoint, peer, sink)(self.revoke(body, peer)),
            "info" => sink(self.info(body)),
            "crl" => sink(self.crl()),
            _ => sink(self.health()),
        }
    }

    /// Revoke, then publish the new CRL before answering, so the next GET /crl lists it.
    fn revoke(&self, body: &[u8], peer: &str) -> Reply {
        let r = match revoke::check(self.revoke_key.as_ref(), &self.replays, body) {
            Ok(r) => r,
            Err((status, m)) => return failure(status, &m),
        };
        // Nothing is signed for a revocation the store would refuse (an unknown serial, another
        // reason) or leave as it is.
        let (serial, aki, reason) = (r.serial.clone(), r.aki.clone(), r.reason);
        let will = self
            .recorder
            .with_store(move |s| s.revoke_outcome(&serial, &aki, reason));
        let will = match will {
            Ok(o) => o,
            Err(e) => return fail(&e),
        };
        let at = crate::db::now();
        let mut messages = Vec::new();
        // Only this CA's own certificates get a response signed by its key; it is signed
        // first and stored in the revocation's transaction.
        let mut ocsp = Vec::new();
        if self.crl.aki == r.aki && will == RevokeOutcome::Revoked {
            match revoke::revoked_response(self.signers(), &r, at) {
                Ok(signed) => ocsp.push(signed),
                Err(e) => messages.push(format!(
                    "the OCSP response was not refreshed: {}",
                    e.message()
                )),
            }
        }
        let items = [(r.serial.clone(), r.aki.clone())];
        let (reason, actor) = (r.reason, peer.to_string());
        let outcome = self.recorder.with_store(move |s| {
            let also = RevokeAlso {
                actor: Some(&actor),
                ocsp: &ocsp,
            };
            s.revoke_logged(&items, reason, at, also)
        });
        let outcome = match outcome {
            Ok((o, log_failure)) => {
                if let Some(e) = log_failure {
                    eprintln!("p11ca: warning: serve: {}", e.message());
                }
                o[0]
            }
            Err(e) => return fail(&e),
        };
        messages.insert(0, revoke::describe(&r, outcome));
        if let Err(e) = self.publish_crl(peer) {
            messages.push(format!("the CRL was not rebuilt: {}", e.message()));
        }
        success(json!({}), &messages)
    }

    /// Build, sign and publish the CA's CRL now.
    pub fn publish_crl(&self, actor: &str) -> crate::Result<std::sync::Arc<crl::Published>> {
        crl::publish(&self.ca, &self.pool, &self.recorder, &self.crl, actor)
    }

    /// cfssl's GET /crl: the current CRL, base64 DER as a JSON string.
    fn crl(&self) -> Reply {
        use base64::Engine;
        match self.crl.current() {
            Some(c) => success(
                json!(base64::engine::general_purpose::STANDARD.encode(&c.der)),
                &[],
            ),
            None => failure(503, "no CRL has been built yet; retry shortly"),
        }
    }

    /// `/crl.der` and `/crl.pem`: the current CRL as a file, for `crl_url`.
    fn plain_crl(&self, method: &str, form: &str) -> Reply {
        if method != "GET" {
            return failure(405, &format!("Method is not allowed:\"{method}\""));
        }
        let Some(c) = self.crl.current() else {
            return failure(503, "no CRL has been built yet; retry shortly");
        };
        let (body, content_type) = match form {
            "der" => (c.der.clone(), "application/pkix-crl"),
            "pem" => match crate::x509::build::pem("X509 CRL", &c.der) {
                Ok(p) => (p.into_bytes(), "application/x-pem-file"),
                Err(e) => return failure(500, e.message()),
            },
            _ => return failure(404, "the CRL is at /crl.der and /crl.pem"),
        };
        Reply {
            status: 200,
            body,
            error: None,
            issued: 0,
            content_type,
            headers: Vec::new(),
        }
    }

    /// A refused request to an endpoint that changes state goes into the audit log.
    /// What signs OCSP responses: the CA key through the pool's sessions, or the delegated
    /// responder's key in the same token.
    fn signers(&self) -> revoke::OcspSigners<'_> {
        revoke::OcspSigners {
            ca: &self.ca,
            pool: &self.pool,
            responder: self.responder.as_ref(),
            id_form: self.responder_id,
        }
    }

    /// `sink`, after appending a refusal to the audit log when the answer is one.
    fn audited(&self, endpoint: &str, peer: &str, sink: Sink) -> Sink {
        let (recorder, endpoint, peer) = (
            self.recorder.sender(),
            endpoint.to_string(),
            peer.to_string(),
        );
        Box::new(move |reply: Reply| {
            if let Some(why) = reply.error.as_deref().filter(|_| reply.issued == 0) {
                recorder.audit(AuditEvent::new(
                    AuditKind::Refuse,
                    &peer,
                    json!({"endpoint": endpoint, "status": reply.status, "reason": why}),
                ));
            }
            sink(reply);
        })
    }

    fn sign(&self, body: &[u8], peer: &str, sink: Sink) {
        let req = match parse_sign_request(body, "sign request") {
            Ok(r) => r,
            Err(e) => return sink(fail(&e)),
        };
        let profile = match self.config.profile(Some(&req.profile)) {
            Ok(p) => p,
            Err(e) => return sink(failure(400, e.message())),
        };
        if profile.auth_key.is_some() {
            return sink(failure(
                401,
                &format!(
                    "authentication required: profile \"{}\" has an auth_key; send the request to {PREFIX}authsign",
                    profile.name
                ),
            ));
        }
        self.issue(&req, profile, peer, "", sink)
    }

    fn authsign(&self, body: &[u8], peer: &str, sink: Sink) {
        let env: AuthenticatedRequest = match json::decode(body, "authenticated request", &[]) {
            Ok(a) => a,
            Err(e) => return sink(failure(400, e.message())),
        };
        let (Some(inner), Some(token)) = (auth::unbase64(&env.request), auth::unbase64(&env.token))
        else {
            return sink(failure(
                400,
                "authenticated request: \"request\" and \"token\" must be base64",
            ));
        };
        if inner.is_empty() || token.is_empty() {
            return sink(failure(
                401,
                "authentication required: the request or its token is empty",
            ));
        }
        let req = match parse_sign_request(&inner, "authenticated sign request") {
            Ok(r) => r,
            Err(e) => return sink(fail(&e)),
        };
        let profile = match self.config.profile(Some(&req.profile)) {
            Ok(p) => p,
            Err(e) => return sink(failure(400, e.message())),
        };
        let Some(key) = &profile.auth_key else {
            return sink(failure(
                400,
                &format!(
                    "no authentication provider: profile \"{}\" has no auth_key; use {PREFIX}sign",
                    profile.name
                ),
            ));
        };
        let matched: Option<&AuthKey> = if auth::verify(key, &inner, &token) {
            Some(key)
        } else {
            profile
                .prev_auth_key
                .as_ref()
                .filter(|k| auth::verify(k, &inner, &token))
        };
        let Some(used) = matched else {
            return sink(failure(401, "invalid token"));
        };
        if let Err(why) = self.replays.admit(&token, env.timestamp, crate::db::now()) {
            return sink(failure(401, &why));
        }
        let used = used.name.clone();
        self.issue(&req, profile, peer, &used, sink)
    }

    /// Build the certificate and hand it on: signed, verified and recorded by other threads,
    /// answered into `sink` once committed.
    fn issue(&self, req: &SignRequest, profile: &Profile, peer: &str, auth_key: &str, sink: Sink) {
        if profile.remote.is_some() {
            return sink(failure(
                400,
                &format!(
                    "profile \"{}\" forwards to a remote signer (remote/auth_remote); p11ca serve signs only with its own key",
                    profile.name
                ),
            ));
        }
        let leaf = match leaf_of(req) {
            Ok(l) => l,
            Err(e) => return sink(fail(&e)),
        };
        // The certificate is encoded here; a signing thread signs it, verifies it and hands
        // it to the store's writer, which answers into `sink` once it is committed: on a
        // plain keep-alive connection the answer goes onto the socket from there, and the
        // connection thread, already back at reading the next request, is not woken for it.
        let mut warnings = Vec::new();
        let prepared = PROFILE_EXTENSIONS
            .with_borrow_mut(|cache| self.ca.prepare(&leaf, profile, cache, &mut warnings));
        let unsigned = match prepared {
            Ok(u) => u,
            Err(e) => return sink(fail(&e)),
        };
        let recorder = self.recorder.sender();
        let (profile_name, peer, auth_key) =
            (profile.name.clone(), peer.to_string(), auth_key.to_string());
        self.signers.submit(unsigned, move |signed| {
            let der = match signed.and_then(|s| s.verified()) {
                Ok(der) => der,
                Err(e) => return sink(fail(&e)),
            };
            let record = match CertRecord::from_der(&der, &profile_name, &peer, &auth_key) {
                Ok(r) => r,
                Err(e) => return sink(failure(500, e.message())),
            };
            let event = audit::issue_event(&record, &peer);
            let pem = record.pem.clone();
            recorder.submit(record, event, move |committed| {
                sink(match committed {
                    Ok(()) => {
                        let mut r = success(json!({"certificate": pem}), &warnings);
                        r.issued = 1;
                        r
                    }
                    Err(e) => not_recorded(&e),
                });
            });
        });
    }

    fn info(&self, body: &[u8]) -> Reply {
        let req: InfoRequest = if body.trim_ascii().is_empty() {
            InfoRequest::default()
        } else {
            match json::decode(body, "info request", &[]) {
                Ok(r) => r,
                Err(e) => return failure(400, e.message()),
            }
        };
        // An unknown name is an error; the default is shown even without usages.
        if !req.profile.is_empty()
            && req.profile != "default"
            && !self.config.profile_names().contains(&req.profile)
            && let Err(e) = self.config.profile(Some(&req.profile))
        {
            return failure(400, e.message());
        }
        let p = self.config.client_profile(Some(&req.profile));
        success(
            json!({
                "certificate": self.ca_pem,
                "usages": p.usage_names(),
                "expiry": p.expiry_string(),
            }),
            &[],
        )
    }

    fn health(&self) -> Reply {
        match self.pool.health() {
            Ok(()) => success(json!({"healthy": true}), &[]),
            Err(e) => failure(503, e.message()),
        }
    }
}

fn parse_sign_request(body: &[u8], what: &str) -> crate::Result<SignRequest> {
    let req: SignRequest = json::decode(body, what, &[])?;
    if req.certificate_request.trim().is_empty() {
        return Err(Error::input(format!(
            "{what}: field \"certificate_request\" is missing or empty; give the PEM CSR"
        )));
    }
    Ok(req)
}

/// The leaf to certify: the CSR with the request's subject and host overrides.
fn leaf_of(req: &SignRequest) -> crate::Result<LeafRequest> {
    let csr = request::parse(req.certificate_request.as_bytes(), "certificate_request")?;
    let subj = req.subject.as_ref();
    let ov = SubjectOverride {
        cn: subj.map_or("", |s| s.cn.as_str()),
        names: subj.map_or(&[], |s| s.names.as_slice()),
        serial_number: subj.map_or("", |s| s.serialnumber.as_str()),
    };
    let subject = name::canonicalize(&csr.subject, &ov)?;
    let sans = if !req.hostname.trim().is_empty() {
        let list: Vec<&str> = req.hostname.split(',').collect();
        hosts::parse_list(&list, "hostname")?
    } else if let Some(h) = req.hosts.as_ref().filter(|h| !h.is_empty()) {
        hosts::parse_list(h, "hosts")?
    } else {
        csr.sans.clone()
    };
    Ok(LeafRequest {
        subject,
        public_key: csr.public_key,
        sans,
        wants_ca: csr.wants_ca,
    })
}
