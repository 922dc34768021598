//! `p11ca serve`: cfssl's signing API in front of a CA key that stays in the token.
//!
//! The design is synchronous on purpose. PKCS#11 calls block and a session runs one operation
//! at a time, so the server is a thread per connection (HTTP/1.1 with keep-alive) that borrows
//! a token session from a fixed pool for the signature ([`pool`]); the pool is sized to the
//! token's session limit and the machine's cores, and the login is done once at start. Every
//! certificate is recorded by the store's writer thread (group commit, [`crate::db`]) before
//! its response is written.
//!
//! Shutdown ([`Server::run`] returning after `stop` is set): the listener closes at once, idle
//! connections close within [`http::POLL`], requests already being read or signed are
//! finished, recorded and answered, and only then does `run` return.

pub mod api;
pub mod auth;
pub mod http;
pub mod pool;
pub mod tls;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use api::Service;
use http::{Conn, ReadError};
use regex::Regex;
use tls::Stream;

/// TLS for the server: the rustls configuration, and cfssl's `-mutual-tls-cn` regular
/// expression that a client certificate's CN must match.
#[derive(Clone)]
pub struct TlsOptions {
    /// The rustls server configuration (with a client verifier for mutual TLS).
    pub config: Arc<rustls::ServerConfig>,
    /// Client certificates are required (mutual TLS).
    pub mutual: bool,
    /// Allowed client CNs.
    pub cn_regex: Option<Regex>,
}

/// Default request body limit: CSRs are a few KiB; this leaves room for large RSA keys and
/// base64 (authsign) while refusing junk.
pub const DEFAULT_MAX_BODY: usize = 256 * 1024;

/// Most connections served at once; more are answered 503 and closed.
const MAX_CONNECTIONS: usize = 1024;

/// Counters for the log line at exit.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests answered.
    pub requests: AtomicUsize,
    /// Certificates issued (recorded and returned).
    pub issued: AtomicUsize,
    /// Requests answered with an error.
    pub failed: AtomicUsize,
}

/// A bound server.
pub struct Server {
    service: Arc<Service>,
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    tls: Option<TlsOptions>,
    /// Counters.
    pub stats: Arc<Stats>,
}

/// Make a blocked `accept` on `addr` return (after `stop` was set).
pub fn wake(addr: SocketAddr) {
    let target = match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], a.port()))
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
        }
        a => a,
    };
    let _ = TcpStream::connect_timeout(&target, Duration::from_secs(1));
}

impl Server {
    /// A server for `service` on `listener`; it stops when `stop` is set (and [`wake`] is
    /// called with its address).
    pub fn new(service: Arc<Service>, listener: TcpListener, stop: Arc<AtomicBool>) -> Self {
        Self {
            service,
            listener,
            stop,
            tls: None,
            stats: Arc::new(Stats::default()),
        }
    }

    /// Serve over TLS.
    pub fn with_tls(mut self, tls: TlsOptions) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accept and serve until `stop`; then finish in-flight requests and return.
    pub fn run(self) {
        let live = Arc::new(AtomicUsize::new(0));
        let mut threads: Vec<JoinHandle<()>> = Vec::new();
        for incoming in self.listener.incoming() {
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            let Ok(stream) = incoming else {
                // EMFILE and the like: back off a little rather than spin.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            threads.retain(|h| !h.is_finished());
            if live.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
                let Ok(s) = Stream::new(stream, self.tls.as_ref().map(|t| &t.config)) else {
                    continue;
                };
                let mut c = Conn::new(s);
                let r = api::failure(503, "too many connections; try again");
                let _ = c.respond(r.status, &r.body, false);
                continue;
            }
            let peer = stream
                .peer_addr()
                .map_or_else(|_| "unknown".to_string(), |a| a.to_string());
            let (service, stop, stats, live2, tls) = (
                self.service.clone(),
                self.stop.clone(),
                self.stats.clone(),
                live.clone(),
                self.tls.clone(),
            );
            live.fetch_add(1, Ordering::SeqCst);
            let spawned = std::thread::Builder::new()
                .name("p11ca-conn".into())
                .spawn(move || {
                    connection(&service, stream, tls.as_ref(), &peer, &stop, &stats);
                    live2.fetch_sub(1, Ordering::SeqCst);
                });
            match spawned {
                Ok(h) => threads.push(h),
                Err(_) => {
                    live.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
        // Stop accepting: the listening socket closes here.
        drop(self.listener);
        for h in threads {
            let _ = h.join();
        }
    }
}

/// Serve one connection until it closes, goes idle too long, or the server stops.
fn connection(
    service: &Service,
    stream: TcpStream,
    tls: Option<&TlsOptions>,
    peer: &str,
    stop: &AtomicBool,
    stats: &Stats,
) {
    let _ = stream.set_read_timeout(Some(http::POLL));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    let _ = stream.set_nodelay(true);
    let Ok(stream) = Stream::new(stream, tls.map(|t| &t.config)) else {
        return;
    };
    let mut conn = Conn::new(stream);
    loop {
        match conn.read_request(service.max_body, stop) {
            Ok(req) => {
                // Mutual TLS: the handshake checked the chain; the CN rule is checked here.
                let cn = tls
                    .filter(|t| t.mutual)
                    .and_then(|_| conn.stream().peer_cn());
                let who = match &cn {
                    Some(cn) => format!("{peer} (client certificate CN={cn})"),
                    None => peer.to_string(),
                };
                let forbidden = match (tls.and_then(|t| t.cn_regex.as_ref()), &cn) {
                    (Some(re), Some(cn)) if re.is_match(cn) => None,
                    (Some(re), cn) => Some(format!(
                        "client certificate CN \"{}\" does not match -mutual-tls-cn /{re}/",
                        cn.as_deref().unwrap_or("")
                    )),
                    (None, _) => None,
                };
                let reply = match forbidden {
                    Some(m) => api::failure(403, &m),
                    None => service.handle(&req.method, &req.path, &req.body, &who),
                };
                stats.requests.fetch_add(1, Ordering::Relaxed);
                stats.issued.fetch_add(reply.issued, Ordering::Relaxed);
                if let Some(e) = &reply.error {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    log_failure(reply.status, &req.method, &req.path, peer, e);
                }
                let keep = req.keep_alive && !stop.load(Ordering::SeqCst);
                if conn.respond(reply.status, &reply.body, keep).is_err() || !keep {
                    break;
                }
            }
            Err(ReadError::Closed) | Err(ReadError::Io(_)) => break,
            Err(ReadError::Bad(status, message)) => {
                stats.requests.fetch_add(1, Ordering::Relaxed);
                stats.failed.fetch_add(1, Ordering::Relaxed);
                log_failure(status, "-", "-", peer, &message);
                let r = api::failure(status, &message);
                let _ = conn.respond(status, &r.body, false);
                break;
            }
        }
    }
    conn.stream_mut().close();
}

fn log_failure(status: u16, method: &str, path: &str, peer: &str, message: &str) {
    if status >= 500 {
        eprintln!("p11ca: warning: serve: {status} {method} {path} from {peer}: {message}");
    } else {
        eprintln!("p11ca: serve: {status} {method} {path} from {peer}: {message}");
    }
}
