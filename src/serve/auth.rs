//! cfssl's "standard" authentication: the token is HMAC-SHA256 of the request bytes under the
//! profile's shared key (`auth/auth.go`); the timestamp and remote address in the envelope are
//! not covered, as in cfssl. Verification compares in constant time.
//!
//! Replays ([`ReplayGuard`]): cfssl's own client (`api/client` `AuthReq`) sends the current Unix
//! time in `timestamp`, so a timestamp more than [`REPLAY_WINDOW_SECS`] away from the server's
//! clock is refused, and a token already accepted within that window is refused again. Since
//! the timestamp is outside the HMAC (cfssl's protocol), a capture replayed later with a fresh
//! timestamp is not caught: only TLS on the connection keeps captures from being made.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::cfssl::config::AuthKey;

type HmacSha256 = Hmac<Sha256>;

/// The authsign envelope (`auth.AuthenticatedRequest`): Go's `[]byte` fields are base64.
#[derive(Debug, Deserialize, Serialize)]
pub struct AuthenticatedRequest {
    /// Unix seconds: within [`REPLAY_WINDOW_SECS`] of the server's clock, or 0 (none sent).
    #[serde(default)]
    pub timestamp: i64,
    /// base64 of the caller's identity (not checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_address: Option<String>,
    /// base64 of the HMAC.
    #[serde(default)]
    pub token: String,
    /// base64 of the sign request JSON.
    #[serde(default)]
    pub request: String,
}

/// How far a request's timestamp may be from the server's clock, and how long an accepted token
/// is remembered.
pub const REPLAY_WINDOW_SECS: i64 = 300;

/// Tokens accepted within the replay window, oldest first.
#[derive(Default)]
pub struct ReplayGuard {
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    tokens: HashSet<Vec<u8>>,
    order: VecDeque<(i64, Vec<u8>)>,
}

impl ReplayGuard {
    /// Accept `token` (already verified) sent with `timestamp` (0: the client sent none) at
    /// `now`, or say why not. An accepted token is remembered for the window.
    pub fn admit(&self, token: &[u8], timestamp: i64, now: i64) -> Result<(), String> {
        if timestamp != 0 && (timestamp - now).abs() > REPLAY_WINDOW_SECS {
            return Err(format!(
                "the request's timestamp {timestamp} is more than {REPLAY_WINDOW_SECS} s from the server's clock ({now}); check both clocks, or this is a replayed request"
            ));
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((at, _)) = seen.order.front() {
            if now - at <= REPLAY_WINDOW_SECS {
                break;
            }
            if let Some((_, old)) = seen.order.pop_front() {
                seen.tokens.remove(&old);
            }
        }
        if !seen.tokens.insert(token.to_vec()) {
            return Err(
                "this token was already used: a replayed request (send a new request to sign again)"
                    .into(),
            );
        }
        seen.order.push_back((now, token.to_vec()));
        Ok(())
    }
}

/// The token for `request` under `key`.
pub fn token(key: &AuthKey, request: &[u8]) -> Vec<u8> {
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(key.secret())
        .expect("HMAC accepts keys of any length");
    m.update(request);
    m.finalize().into_bytes().to_vec()
}

/// Whether `token` is the HMAC of `request` under `key` (constant time).
pub fn verify(key: &AuthKey, request: &[u8], token: &[u8]) -> bool {
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(key.secret())
        .expect("HMAC accepts keys of any length");
    m.update(request);
    m.verify_slice(token).is_ok()
}

/// Wrap `request` (sign request JSON) for /authsign.
pub fn wrap(key: &AuthKey, request: &[u8]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let a = AuthenticatedRequest {
        timestamp: now,
        remote_address: None,
        token: STANDARD.encode(token(key, request)),
        request: STANDARD.encode(request),
    };
    serde_json::to_string(&a).unwrap_or_default()
}

/// Decode a base64 field of the envelope.
pub fn unbase64(s: &str) -> Option<Vec<u8>> {
    STANDARD.decode(s.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_known_answer() {
        // RFC 4231 test case 2.
        let key = AuthKey::new("k", b"Jefe".to_vec());
        let t = token(&key, b"what do ya want for nothing?");
        let hex: String = t.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(verify(&key, b"what do ya want for nothing?", &t));
        assert!(!verify(&key, b"what do ya want for nothing!", &t));
        assert!(!verify(&key, b"what do ya want for nothing?", &t[..31]));
        let other = AuthKey::new("k", b"Jeff".to_vec());
        assert!(!verify(&other, b"what do ya want for nothing?", &t));
    }

    #[test]
    fn replays_and_stale_timestamps_are_refused() {
        let g = ReplayGuard::default();
        let now = 1_800_000_000;
        assert!(g.admit(b"t1", now, now).is_ok());
        assert!(
            g.admit(b"t1", now, now + 1)
                .unwrap_err()
                .contains("already used")
        );
        // With a fresh timestamp too: the token itself is remembered.
        assert!(
            g.admit(b"t1", now + 60, now + 60)
                .unwrap_err()
                .contains("already used")
        );
        assert!(g.admit(b"t2", 0, now).is_ok(), "no timestamp sent");
        assert!(g.admit(b"t2", 0, now).is_err());
        let old = now - REPLAY_WINDOW_SECS - 1;
        assert!(g.admit(b"t3", old, now).unwrap_err().contains("timestamp"));
        let ahead = now + REPLAY_WINDOW_SECS + 1;
        assert!(
            g.admit(b"t3", ahead, now)
                .unwrap_err()
                .contains("timestamp")
        );
        // After the window a token is forgotten (and its timestamp must be fresh again).
        let later = now + REPLAY_WINDOW_SECS + 1;
        assert!(g.admit(b"t1", later, later).is_ok());
        assert_eq!(g.seen.lock().unwrap().tokens.len(), 1, "old tokens pruned");
    }

    #[test]
    fn envelope_roundtrip() {
        let key = AuthKey::new("k", vec![7; 16]);
        let w = wrap(&key, br#"{"profile":"p"}"#);
        let a: AuthenticatedRequest = serde_json::from_str(&w).unwrap();
        let req = unbase64(&a.request).unwrap();
        assert_eq!(req, br#"{"profile":"p"}"#);
        assert!(verify(&key, &req, &unbase64(&a.token).unwrap()));
    }
}
