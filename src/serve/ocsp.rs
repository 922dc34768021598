//! The OCSP responder (`p11ca ocspserve`): RFC 6960 requests by RFC 5019 GET (base64 in the
//! path) and POST, answered only from pre-signed responses, so no request reaches the token.
//!
//! Responses come from a file (`-responses`: whitespace-separated base64 DER, as cfssl's
//! `ocspdump` writes and cfssl's `ocspserve` reads) held in memory, or from the store's
//! `ocsp_responses` table, looked up per request (so a revocation that refreshed a response is
//! served at once, and two responders sharing PostgreSQL give the same answers). A stored
//! response is returned only when its CertID is exactly the one asked about (hash algorithm,
//! issuer name and key hashes, serial); anything else is `unauthorized`, as RFC 5019 asks for
//! certificates the responder does not serve.
//!
//! A GET whose `If-None-Match` names the stored response's `ETag` (SHA-256 of its bytes) gets
//! 304 with no body, so caches revalidate without fetching it again.
//!
//! Nonces are ignored: a pre-signed response cannot carry the client's nonce (RFC 5019 §2.1.1
//! lets responders ignore them). Only the first certificate of a request is answered (RFC
//! 5019 §2.1.1: clients send one).

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use der::Encode;
use sha2::{Digest, Sha256};

use super::handler::{Handler, Reply};
use super::http::Request;
use crate::db::{DbConfig, Store};
use crate::error::{Error, Result};
use crate::sync::lock;
use crate::text;
use crate::x509::ocsp::{self, CertId, ResponseStatus};

/// The largest request read: one CertID is about 80 bytes; this leaves room for a few and
/// extensions, and refuses a request listing thousands (413).
pub const MAX_REQUEST: usize = 8 * 1024;

/// Where the responses come from.
enum Source {
    /// A response file, by CertID DER.
    Memory(HashMap<Vec<u8>, Vec<u8>>),
    /// The store, one connection per concurrent request (kept for reuse).
    Store {
        cfg: DbConfig,
        idle: Mutex<Vec<Store>>,
    },
}

/// The responder.
pub struct Responder {
    source: Source,
    /// The path prefix requests come under (`/` by default).
    prefix: String,
}

impl Responder {
    /// Answer from the responses in `file`'s text (base64 DER, separated by white space);
    /// how many were read, and the number of tokens that were not responses.
    pub fn from_file(text: &str, source: &str, prefix: &str) -> Result<(Self, usize, usize)> {
        let mut map = HashMap::new();
        let mut skipped = 0;
        for token in text.split_whitespace() {
            let Some(der) = STANDARD.decode(token).ok() else {
                skipped += 1;
                continue;
            };
            let Ok(info) = ocsp::response_info(&der) else {
                skipped += 1;
                continue;
            };
            let id = info
                .cert_id
                .to_der()
                .map_err(|e| Error::input(format!("{source}: {e}")))?;
            map.insert(id, der);
        }
        let n = map.len();
        Ok((
            Self {
                source: Source::Memory(map),
                prefix: prefix.to_string(),
            },
            n,
            skipped,
        ))
    }

    /// Answer from the store `cfg` (opened now, to fail early).
    pub fn from_store(cfg: DbConfig, prefix: &str) -> Result<Self> {
        let first = Store::open_existing(&cfg)?;
        Ok(Self {
            source: Source::Store {
                cfg,
                idle: Mutex::new(vec![first]),
            },
            prefix: prefix.to_string(),
        })
    }

    /// The stored response for `id`, if this responder has one for exactly that CertID.
    fn lookup(&self, id: &CertId) -> Result<Option<Vec<u8>>> {
        let key = id
            .to_der()
            .map_err(|e| Error::input(format!("CertID: {e}")))?;
        match &self.source {
            Source::Memory(map) => Ok(map.get(&key).cloned()),
            Source::Store { cfg, idle } => {
                let serial = text::decimal(id.serial_number.as_bytes());
                let aki = text::hex(id.issuer_key_hash.as_bytes());
                let popped = lock(idle).pop();
                let mut store = match popped {
                    Some(s) => s,
                    None => Store::open_existing(cfg)?,
                };
                let found = store.ocsp_response(&serial, &aki);
                if !store.is_broken() {
                    lock(idle).push(store);
                }
                // The row is keyed by serial and AKI only; the CertID must match as a whole.
                Ok(found?.filter(|der| {
                    ocsp::response_info(der)
                        .is_ok_and(|i| i.cert_id.to_der().ok() == Some(key.clone()))
                }))
            }
        }
    }

    /// Whether `path` is under this responder's prefix.
    pub fn serves(&self, path: &str) -> bool {
        path.starts_with(&self.prefix)
    }

    /// The request DER of a GET path (after the prefix) or a POST body.
    fn request_der(&self, req: &Request) -> Option<Vec<u8>> {
        if req.method == "POST" {
            return Some(req.body.clone());
        }
        let rest = req.path.strip_prefix(&self.prefix)?;
        // RFC 5019 GET: the URL-encoded base64 of the DER; a '+' may arrive as a space.
        let decoded = percent_encoding::percent_decode_str(rest)
            .decode_utf8()
            .ok()?;
        STANDARD.decode(decoded.replace(' ', "+")).ok()
    }
}

/// An OCSP answer with RFC 5019's caching headers when it is a response.
fn ocsp_reply(
    status: u16,
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
    error: Option<String>,
) -> Reply {
    Reply {
        status,
        body,
        error,
        issued: 0,
        content_type: "application/ocsp-response",
        headers,
    }
}

fn bare(status: u16, what: ResponseStatus, why: &str) -> Reply {
    ocsp_reply(
        status,
        ocsp::status_only(what),
        vec![("Cache-Control", "max-age=0, no-cache".into())],
        Some(why.to_string()),
    )
}

/// The response's strong entity tag: the SHA-256 of its bytes, so it changes exactly when
/// the response does.
fn etag(der: &[u8]) -> String {
    format!(
        "\"{}\"",
        text::hex(&Sha256::digest(der)).to_ascii_uppercase()
    )
}

/// Whether an `If-None-Match` value names `etag` (or is `*`); weak comparison, as RFC 9110
/// §13.1.2 asks for this header.
fn none_match(header: &str, etag: &str) -> bool {
    header
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

/// RFC 5019 §6.2 caching headers for a stored response, from its times.
fn caching_headers(der: &[u8], now: i64) -> Vec<(&'static str, String)> {
    let etag = etag(der);
    let Ok(info) = ocsp::response_info(der) else {
        return vec![("ETag", etag)];
    };
    let date = |t: i64| {
        httpdate::fmt_http_date(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64),
        )
    };
    vec![
        ("ETag", etag),
        ("Last-Modified", date(info.this_update)),
        ("Expires", date(info.next_update)),
        (
            "Cache-Control",
            format!(
                "max-age={}, public, no-transform, must-revalidate",
                (info.next_update - now).max(0)
            ),
        ),
    ]
}

impl Handler for Responder {
    fn handle(&self, req: &Request, _who: &str) -> Reply {
        if req.method != "GET" && req.method != "POST" {
            return bare(
                405,
                ResponseStatus::MalformedRequest,
                "OCSP takes GET and POST",
            );
        }
        let Some(der) = self.request_der(req) else {
            return bare(
                400,
                ResponseStatus::MalformedRequest,
                "the GET path is not base64 of an OCSP request",
            );
        };
        let ids = match ocsp::parse_request(&der) {
            Ok(ids) => ids,
            Err(e) => return bare(400, ResponseStatus::MalformedRequest, e.message()),
        };
        match self.lookup(&ids[0]) {
            Ok(Some(resp)) => {
                let headers = caching_headers(&resp, crate::db::now());
                // A client's cached copy is still the stored response: 304, no body, the same
                // caching headers (RFC 9110 §15.4.5).
                let cached = req.method == "GET"
                    && req
                        .if_none_match
                        .as_deref()
                        .is_some_and(|h| none_match(h, &etag(&resp)));
                if cached {
                    return ocsp_reply(304, Vec::new(), headers, None);
                }
                ocsp_reply(200, resp, headers, None)
            }
            Ok(None) => bare(
                200,
                ResponseStatus::Unauthorized,
                "no response for this certificate",
            ),
            Err(e) => bare(500, ResponseStatus::InternalError, e.message()),
        }
    }

    fn max_body(&self) -> usize {
        MAX_REQUEST
    }

    fn any_host(&self) -> bool {
        true
    }

    fn accepts(&self, req: &Request) -> bool {
        // RFC 6960 §A.1: application/ocsp-request; some clients send none.
        req.content_type.as_deref().is_none_or(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/ocsp-request"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_compares_weakly_and_takes_lists_and_star() {
        let tag = etag(b"response");
        assert!(tag.starts_with('"') && tag.ends_with('"') && tag.len() == 66);
        assert!(none_match(&tag, &tag));
        assert!(none_match(&format!("\"x\", W/{tag}"), &tag));
        assert!(none_match("*", &tag));
        assert!(!none_match("\"x\"", &tag));
        assert!(!none_match(&etag(b"another response"), &tag));
        assert!(!none_match(tag.trim_matches('"'), &tag));
    }
}
