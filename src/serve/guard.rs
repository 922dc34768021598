//! What `serve` refuses before a request reaches the API: connections over the global or the
//! per-client cap, requests over a client's rate, requests for a host name the server does not
//! serve (DNS rebinding), requests from a foreign web origin, and POST bodies that are not
//! JSON (a cross-site form or `fetch` without a CORS preflight cannot send `application/json`).
//!
//! A client is its IPv4 address, or the /64 prefix of its IPv6 address (one host usually has a
//! whole /64). Refusals are logged at most once per client, reason and [`LOG_INTERVAL`], with
//! the number left unlogged, so that a flood does not flood the log.

use crate::sync::lock;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// At most one log line per client and reason in this interval.
pub const LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Entries kept in the per-client tables before idle ones are dropped.
const TABLE_TRIM: usize = 4096;
/// Most clients whose refusals are tracked for the log; more are counted but not logged.
const LOG_TABLE_MAX: usize = 16384;

/// Connection and request limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once, all clients together.
    pub max_connections: usize,
    /// Connections served at once for one client address.
    pub per_client: usize,
    /// Requests per second per client address (also the burst); 0 means no limit.
    pub rate: u32,
}

/// Defaults: one address cannot take more than a sixteenth of the connection slots, and the
/// request rate is limited only well above what a token signs per second on a small machine,
/// so that a load test from one address (ci/bench-serve) or a busy deployment tool is never
/// refused; a shared signer sets `--rate-limit` lower.
impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            per_client: 64,
            rate: 10_000,
        }
    }
}

/// Why a connection or request was refused (one log stream each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// All connection slots are taken.
    Busy,
    /// This client has its share of connections open.
    ClientConnections,
    /// This client sends requests faster than the rate limit.
    Rate,
    /// A request head (or body) that did not arrive in time.
    SlowRequest,
    /// A TLS handshake that failed or did not finish in time.
    Handshake,
}

impl Refusal {
    /// The HTTP status and message for the client.
    pub fn answer(self, limits: &Limits) -> (u16, String) {
        match self {
            Self::Busy => (
                503,
                format!(
                    "too many connections ({} open); try again",
                    limits.max_connections
                ),
            ),
            Self::ClientConnections => (
                429,
                format!(
                    "too many connections from your address (limit {}); reuse a keep-alive connection",
                    limits.per_client
                ),
            ),
            Self::Rate => (
                429,
                format!(
                    "too many requests from your address (limit {} per second); slow down",
                    limits.rate
                ),
            ),
            Self::SlowRequest => (408, "the request took too long to arrive".into()),
            Self::Handshake => (0, "TLS handshake failed or took too long".into()),
        }
    }
}

/// A token bucket.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// When a client's refusals were last logged, and how many since.
struct LogEntry {
    at: Instant,
    unlogged: u64,
}

/// Shared by the accept loop and every connection thread.
pub struct Guard {
    /// The limits.
    pub limits: Limits,
    /// The host names served.
    pub hosts: HostPolicy,
    live: AtomicUsize,
    per_client: Mutex<HashMap<IpAddr, usize>>,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    logged: Mutex<HashMap<(IpAddr, Refusal), LogEntry>>,
}

/// A connection slot, given back when dropped.
pub struct Slot {
    guard: Arc<Guard>,
    client: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.guard.live.fetch_sub(1, Ordering::SeqCst);
        let mut m = lock(&self.guard.per_client);
        if let Some(n) = m.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.client);
            }
        }
    }
}

/// The client an address belongs to: IPv4 as is, IPv6 by its /64.
pub fn client_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) if !v6.is_loopback() => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        other => other,
    }
}

impl Guard {
    /// A guard with these limits and host names.
    pub fn new(limits: Limits, hosts: HostPolicy) -> Self {
        Self {
            limits,
            hosts,
            live: AtomicUsize::new(0),
            per_client: Mutex::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
            logged: Mutex::new(HashMap::new()),
        }
    }

    /// A connection slot for a client at `ip`, or why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        let client = client_of(ip);
        let mut m = lock(&self.per_client);
        let n = m.get(&client).copied().unwrap_or(0);
        if n >= self.limits.per_client {
            return Err(Refusal::ClientConnections);
        }
        if self.live.fetch_add(1, Ordering::SeqCst) >= self.limits.max_connections {
            self.live.fetch_sub(1, Ordering::SeqCst);
            return Err(Refusal::Busy);
        }
        m.insert(client, n + 1);
        Ok(Slot {
            guard: self.clone(),
            client,
        })
    }

    /// Connections open now.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// Take one request from the client's bucket; false if it is empty.
    pub fn take_request(&self, ip: IpAddr) -> bool {
        let rate = f64::from(self.limits.rate);
        if self.limits.rate == 0 {
            return true;
        }
        let now = Instant::now();
        let mut m = lock(&self.buckets);
        if m.len() > TABLE_TRIM {
            // A bucket that has refilled is the same as no bucket.
            m.retain(|_, b| now.duration_since(b.at).as_secs_f64() * rate < rate);
        }
        let b = m.entry(client_of(ip)).or_insert(Bucket {
            tokens: rate,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(rate);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Log a refusal, unless this client's refusals of this kind were logged within
    /// [`LOG_INTERVAL`]; then it is only counted, and the count is told in the next line.
    pub fn log_refusal(&self, ip: IpAddr, why: Refusal) {
        let client = client_of(ip);
        let now = Instant::now();
        let mut m = lock(&self.logged);
        if m.len() >= LOG_TABLE_MAX {
            m.retain(|_, e| now.duration_since(e.at) < LOG_INTERVAL);
        }
        let full = m.len() >= LOG_TABLE_MAX;
        let unlogged = match m.get_mut(&(client, why)) {
            Some(e) if now.duration_since(e.at) < LOG_INTERVAL => {
                e.unlogged += 1;
                return;
            }
            Some(e) => std::mem::take(&mut e.unlogged),
            None if full => return,
            None => 0,
        };
        m.insert((client, why), LogEntry { at: now, unlogged });
        drop(m);
        let (status, message) = why.answer(&self.limits);
        let what = if status == 0 {
            String::new()
        } else {
            format!("{status} ")
        };
        let more = if unlogged > 0 {
            format!(" ({unlogged} more since the last such line)")
        } else {
            String::new()
        };
        eprintln!(
            "p11ca: serve: refused {what}{ip}: {message}; further refusals of this kind from {client} are logged at most every {} s{more}",
            LOG_INTERVAL.as_secs()
        );
    }
}

/// The names a request's `Host` (and `Origin`) may carry: a browser tricked by DNS rebinding
/// sends the attacker's name, which is not among them.
#[derive(Clone, Debug, Default)]
pub struct HostPolicy {
    names: HashSet<String>,
    ips: HashSet<IpAddr>,
    /// `*.example.com` entries, as `.example.com`.
    suffixes: Vec<String>,
}

impl HostPolicy {
    /// The names of a server listening on `bound` (given as `address`), with TLS certificate
    /// names `tls_names` and the operator's `extra` names; loopback listeners (and wildcard
    /// ones, which loopback reaches too) also answer to `localhost`, 127.0.0.1 and ::1.
    pub fn new(address: &str, bound: IpAddr, tls_names: &[String], extra: &[String]) -> Self {
        let mut p = Self::default();
        if bound.is_loopback() || bound.is_unspecified() {
            for n in ["localhost", "127.0.0.1", "::1"] {
                p.add(n);
            }
        }
        if !bound.is_unspecified() {
            p.ips.insert(bound.to_canonical());
        }
        let address = address.trim_start_matches('[').trim_end_matches(']');
        if address.parse::<IpAddr>().is_err() {
            p.add(address);
        }
        for n in tls_names.iter().chain(extra) {
            p.add(n);
        }
        p
    }

    fn add(&mut self, name: &str) {
        let n = normalize(name);
        if let Ok(ip) = n.parse::<IpAddr>() {
            self.ips.insert(ip.to_canonical());
        } else if let Some(rest) = n.strip_prefix("*.") {
            self.suffixes.push(format!(".{rest}"));
        } else if !n.is_empty() {
            self.names.insert(n);
        }
    }

    /// Whether `host` (a `Host` header value, port allowed) names this server; `local` is the
    /// address the connection came in on (an IP literal for it cannot be a rebinding attack).
    pub fn allows(&self, host: &str, local: Option<IpAddr>) -> bool {
        let Some(h) = host_part(host) else {
            return false;
        };
        if let Ok(ip) = h.parse::<IpAddr>() {
            let ip = ip.to_canonical();
            return self.ips.contains(&ip) || local.is_some_and(|l| l.to_canonical() == ip);
        }
        self.names.contains(&h)
            || self.suffixes.iter().any(|s| {
                h.strip_suffix(s.as_str())
                    .is_some_and(|label| !label.is_empty() && !label.contains('.'))
            })
    }

    /// Whether an `Origin` header (`scheme://host[:port]`) is one of this server's names.
    pub fn allows_origin(&self, origin: &str, local: Option<IpAddr>) -> bool {
        let origin = origin.trim();
        let rest = ["http://", "https://"]
            .iter()
            .find_map(|s| origin.get(..s.len()).filter(|p| p.eq_ignore_ascii_case(s)))
            .map(|p| &origin[p.len()..]);
        match rest {
            Some(r) if !r.contains(['/', '@', '?', '#']) => self.allows(r, local),
            _ => false,
        }
    }
}

fn normalize(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The host of `host[:port]` or `[v6][:port]`, lower case, without a trailing dot.
fn host_part(h: &str) -> Option<String> {
    let h = h.trim();
    let host = if let Some(rest) = h.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || port_ok(after.strip_prefix(':')?)) {
            return None;
        }
        inside
    } else {
        match h.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') && port_ok(port) => host,
            Some(_) => return None,
            None => h,
        }
    };
    if host.is_empty() || host.contains(|c: char| c.is_control() || c == ' ' || c == '/') {
        return None;
    }
    Some(normalize(host))
}

fn port_ok(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

/// Whether a `Content-Type` value is JSON (`application/json`, parameters allowed).
pub fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
    })
}

/// Why a request is refused before the API sees it: a foreign `Host` (421), a foreign
/// `Origin` (403), a POST body of a type the handler does not read (415; `body_ok` says).
pub fn refuse_request(
    hosts: Option<&HostPolicy>,
    req: &super::http::Request,
    local: Option<IpAddr>,
    body_ok: bool,
) -> Option<(u16, String)> {
    if let Some(refused) = hosts.and_then(|h| foreign(h, req, local)) {
        return Some(refused);
    }
    if req.method == "POST" && !body_ok {
        return Some((
            415,
            format!(
                "Content-Type \"{}\" is not one this server reads (the API takes application/json)",
                req.content_type.as_deref().unwrap_or("")
            ),
        ));
    }
    None
}

/// A foreign `Host` (421) or `Origin` (403).
fn foreign(
    hosts: &HostPolicy,
    req: &super::http::Request,
    local: Option<IpAddr>,
) -> Option<(u16, String)> {
    if let Some(h) = req.host.as_deref().filter(|h| !hosts.allows(h, local)) {
        return Some((
            421,
            format!(
                "this server does not serve the host \"{h}\"; the operator can allow it with -allowed-host"
            ),
        ));
    }
    req.origin
        .as_deref()
        .filter(|o| !hosts.allows_origin(o, local))
        .map(|o| {
            (
                403,
                format!("cross-origin request from \"{o}\" refused: the API is not for web pages"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn hosts_of_a_loopback_listener_with_tls_names() {
        let p = HostPolicy::new(
            "127.0.0.1",
            ip("127.0.0.1"),
            &["ca.example.com".into(), "*.ca.example.net".into()],
            &["Signer.Internal.".into()],
        );
        for h in [
            "localhost",
            "LOCALHOST:8888",
            "127.0.0.1:8888",
            "[::1]:8888",
            "[::1]",
            "ca.example.com",
            "ca.example.com.:443",
            "a.ca.example.net",
            "signer.internal",
        ] {
            assert!(p.allows(h, None), "{h}");
        }
        for h in [
            "evil.example",
            "evil.example:8888",
            "localhost.evil.example",
            "a.b.ca.example.net",
            "ca.example.net",
            "127.0.0.2",
            "",
            "[::1",
            "::1",
            "localhost:x",
            "localhost:8888:1",
        ] {
            assert!(!p.allows(h, None), "{h}");
        }
        // The connection's own address is fine.
        assert!(p.allows("127.0.0.2:1", Some(ip("127.0.0.2"))));
    }

    #[test]
    fn origins() {
        let p = HostPolicy::new("localhost", ip("127.0.0.1"), &[], &[]);
        assert!(p.allows_origin("http://localhost:8888", None));
        assert!(p.allows_origin("HTTPS://127.0.0.1", None));
        for o in [
            "null",
            "http://evil.example",
            "http://localhost.evil.example",
            "file://",
            "http://evil.example@localhost",
            "localhost",
        ] {
            assert!(!p.allows_origin(o, None), "{o}");
        }
    }

    #[test]
    fn a_wildcard_listener_answers_to_its_names_only() {
        let p = HostPolicy::new("0.0.0.0", ip("0.0.0.0"), &["ca.example.com".into()], &[]);
        assert!(p.allows("ca.example.com:8888", None));
        assert!(p.allows("10.1.2.3:8888", Some(ip("10.1.2.3"))));
        assert!(!p.allows("10.1.2.4:8888", Some(ip("10.1.2.3"))));
        assert!(!p.allows("0.0.0.0", None));
    }

    #[test]
    fn json_content_types() {
        assert!(is_json(Some("application/json")));
        assert!(is_json(Some("Application/JSON; charset=utf-8")));
        for ct in [
            None,
            Some(""),
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            Some("application/jsonx"),
        ] {
            assert!(!is_json(ct), "{ct:?}");
        }
    }

    #[test]
    fn connection_caps_per_client_and_in_all() {
        let g = Arc::new(Guard::new(
            Limits {
                max_connections: 3,
                per_client: 2,
                rate: 0,
            },
            HostPolicy::default(),
        ));
        let a = [
            g.admit(ip("10.0.0.1")).unwrap(),
            g.admit(ip("10.0.0.1")).unwrap(),
        ];
        assert_eq!(
            g.admit(ip("10.0.0.1")).err(),
            Some(Refusal::ClientConnections)
        );
        // The same /64 is the same client.
        let b = g.admit(ip("2001:db8::1")).unwrap();
        assert_eq!(
            g.admit(ip("10.0.0.2")).err(),
            Some(Refusal::Busy),
            "global cap"
        );
        drop(a);
        let _c = g.admit(ip("2001:db8::2")).unwrap();
        assert_eq!(
            g.admit(ip("2001:db8::3")).err(),
            Some(Refusal::ClientConnections)
        );
        drop(b);
        assert_eq!(g.live(), 1);
    }

    #[test]
    fn rate_limit_per_client() {
        let g = Guard::new(
            Limits {
                max_connections: 10,
                per_client: 10,
                rate: 5,
            },
            HostPolicy::default(),
        );
        let taken = (0..20).filter(|_| g.take_request(ip("10.0.0.1"))).count();
        assert!((5..=6).contains(&taken), "{taken}");
        assert!(g.take_request(ip("10.0.0.2")));
        std::thread::sleep(Duration::from_millis(450));
        assert!(g.take_request(ip("10.0.0.1")), "refilled");
    }
}
