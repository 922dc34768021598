//! Replays of cfssl's authsign requests ([`ReplayGuard`]); the token and its envelope are
//! [`crate::cfssl::auth`]. cfssl's own client (`api/client` `AuthReq`) sends the current Unix
//! time in `timestamp`, so a timestamp more than [`REPLAY_WINDOW_SECS`] away from the server's
//! clock is refused, and a token already accepted within that window is refused again. Since
//! the timestamp is outside the HMAC (cfssl's protocol), a capture replayed later with a fresh
//! timestamp is not caught: only TLS on the connection keeps captures from being made.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use crate::sync::lock;

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
        let mut seen = lock(&self.seen);
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
