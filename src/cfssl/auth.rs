//! cfssl's "standard" authentication, the part client and server share: the token is
//! HMAC-SHA256 of the request bytes under the profile's shared key (`auth/auth.go`), carried
//! with the request in the authsign envelope; the timestamp and remote address in the envelope
//! are not covered, as in cfssl. Verification compares in constant time. The server's replay
//! guard is `serve::auth`.

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
    /// Unix seconds: within the server's replay window of its clock, or 0 (none sent).
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
        assert_eq!(
            crate::text::hex(&t),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(verify(&key, b"what do ya want for nothing?", &t));
        assert!(!verify(&key, b"what do ya want for nothing!", &t));
        assert!(!verify(&key, b"what do ya want for nothing?", &t[..31]));
        let other = AuthKey::new("k", b"Jeff".to_vec());
        assert!(!verify(&other, b"what do ya want for nothing?", &t));
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
