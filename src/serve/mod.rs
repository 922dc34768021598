//! `p11ca serve`: cfssl's signing API in front of a CA key that stays in the token.
//!
//! The design is synchronous on purpose. PKCS#11 calls block and a session runs one operation
//! at a time, so the server is a thread per connection (HTTP/1.1 with keep-alive) that hands
//! each prepared certificate to a few signing threads ([`signing`], the cores' number by
//! default) which borrow a token session from a fixed pool for the signature
//! ([`crate::token::pool`]); the login is done once at start. Every certificate is recorded
//! by the store's writer thread (group commit, [`crate::db`]) before its response is written;
//! on a plain keep-alive connection that thread writes the response itself
//! ([`Handler::handle_into`]), and the connection thread goes back to reading.
//!
//! Shutdown ([`Server::run`] returning after `stop` is set): the listener closes at once, idle
//! connections close within [`http::POLL`], requests already being read or signed are
//! finished, recorded and answered, and only then does `run` return.
//!
//! Hostile clients ([`guard`]): the accept thread never reads or writes TLS and never blocks
//! on a client. It takes a connection slot (a global cap and a per-client-address cap) or
//! refuses at once: a plain socket gets one non-blocking write of the 503/429 answer, a TLS
//! socket is just closed. The connection's own thread runs the TLS handshake within
//! [`TLS_HANDSHAKE_LIMIT`], and the request head must arrive within [`http::HEAD_LIMIT`] in
//! all (not per read). Each request then passes the per-client rate limit (429), the `Host`
//! check (421), the `Origin` check (403) and, for POST, a JSON `Content-Type` (415) before the
//! API sees it. Refusals are logged once per client and interval; every client-controlled
//! string in the log is escaped ([`crate::text::escape_for_log`]).
//!
//! Why this hand-written HTTP/1.1 layer and not hyper on tokio: the attack tests
//! (tests/serve_hostile.rs) pass with it, the signing path stays synchronous (PKCS#11 calls
//! block, see above), and the API needs only Content-Length bodies on four endpoints; an async
//! stack would bring a runtime and a second concurrency model for no gain `ci/bench-serve`
//! could show.
//!
//! Layer: the top of the library; it uses `ca`, `token`, `db`, `tls` and the formats below, and
//! nothing uses it but the CLI.

pub mod api;
pub mod auth;
pub mod crl;
pub mod guard;
pub mod handler;
pub mod http;
pub mod ocsp;
pub mod revoke;
pub mod signing;
pub mod upkeep;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::tls::Stream;
use guard::{Guard, Refusal};
use handler::{Handler, Reply};
use http::{Conn, ReadError, Request};
use regex::Regex;

use crate::text::escape_for_log;

/// TLS for the server: the rustls configuration, and cfssl's `-mutual-tls-cn` regular
/// expression that a client certificate's CN must match.
#[derive(Clone)]
pub struct TlsOptions {
    /// The rustls server configuration (with a client verifier for mutual TLS).
    pub config: Arc<rustls::ServerConfig>,
    /// Client certificates are required (mutual TLS).
    pub mutual: bool,
    /// Allowed client CNs, anchored: the whole CN must match.
    pub cn_regex: Option<Regex>,
}

/// Default request body limit: CSRs are a few KiB; this leaves room for large RSA keys and
/// base64 (authsign) while refusing junk.
pub const DEFAULT_MAX_BODY: usize = 256 * 1024;

/// How long a TLS handshake may take, on the connection's own thread.
pub const TLS_HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// How long a write may block (responses are small; a client that does not read is dropped).
const WRITE_LIMIT: Duration = Duration::from_secs(10);

/// A connection's socket send buffer (the kernel doubles it).
const SEND_BUFFER: usize = 128 * 1024;

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
    service: Arc<dyn Handler>,
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    tls: Option<TlsOptions>,
    guard: Arc<Guard>,
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

/// What a connection thread needs.
struct ConnContext {
    service: Arc<dyn Handler>,
    tls: Option<TlsOptions>,
    guard: Arc<Guard>,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    peer: SocketAddr,
}

impl Server {
    /// A server for `service` on `listener`, with `guard`'s limits and host names; it stops
    /// when `stop` is set (and [`wake`] is called with its address).
    pub fn new(
        service: Arc<dyn Handler>,
        listener: TcpListener,
        stop: Arc<AtomicBool>,
        guard: Guard,
    ) -> Self {
        Self {
            service,
            listener,
            stop,
            tls: None,
            guard: Arc::new(guard),
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
            let Ok(peer) = stream.peer_addr() else {
                continue;
            };
            let slot = match self.guard.admit(peer.ip()) {
                Ok(slot) => slot,
                Err(why) => {
                    self.refuse(stream, peer.ip(), why);
                    continue;
                }
            };
            let cx = ConnContext {
                service: self.service.clone(),
                tls: self.tls.clone(),
                guard: self.guard.clone(),
                stop: self.stop.clone(),
                stats: self.stats.clone(),
                peer,
            };
            let spawned = std::thread::Builder::new()
                .name("p11ca-conn".into())
                .spawn(move || {
                    connection(&cx, stream);
                    drop(slot);
                });
            if let Ok(h) = spawned {
                threads.push(h);
            }
        }
        // Stop accepting: the listening socket closes here.
        drop(self.listener);
        for h in threads {
            let _ = h.join();
        }
    }

    /// Refuse a connection without blocking the accept thread: one non-blocking write of the
    /// answer on a plain socket (a new socket's send buffer takes it), nothing on a TLS one
    /// (answering would need a handshake); then close. What the client already sent is read
    /// first, so that the close is not a reset that could discard the answer.
    fn refuse(&self, stream: TcpStream, ip: IpAddr, why: Refusal) {
        self.guard.log_refusal(ip, why);
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        let _ = (&stream).read(&mut [0u8; 4096]);
        if self.tls.is_none() {
            let (status, message) = why.answer(&self.guard.limits);
            let r = api::failure(status, &message);
            let _ = (&stream).write(&http::response(status, &r.body, false));
        }
    }
}

/// Serve one connection until it closes, goes idle too long, or the server stops.
fn connection(cx: &ConnContext, stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(http::POLL));
    let _ = stream.set_write_timeout(Some(WRITE_LIMIT));
    let _ = stream.set_nodelay(true);
    // A fixed send buffer instead of one that grows to 4 MiB: a client that does not read
    // what it asked for ties up this much kernel memory at most (an answer is about 2 KiB).
    let _ = socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER);
    let local = stream.local_addr().ok().map(|a| a.ip());
    // A plain connection's answers may be written by the thread that finishes the request
    // (see `serve_request`), through a second handle on the socket.
    let out = match cx.tls {
        None => stream.try_clone().ok().map(Arc::new),
        Some(_) => None,
    };
    let Ok(mut stream) = Stream::new(stream, cx.tls.as_ref().map(|t| &t.config)) else {
        return;
    };
    if stream.handshake(TLS_HANDSHAKE_LIMIT, &cx.stop).is_err() {
        if !cx.stop.load(Ordering::SeqCst) {
            cx.guard.log_refusal(cx.peer.ip(), Refusal::Handshake);
        }
        return;
    }
    let mut conn = Conn::new(stream);
    let mut in_flight = None;
    loop {
        let read = conn.read_request(cx.service.max_body(), &cx.stop);
        // The answer before is on the socket before anything else happens on it (a client
        // that waits for its answers has it long before this point).
        if !answered(&mut in_flight) {
            break;
        }
        match read {
            Ok(req) => match serve_request(cx, &mut conn, &req, local, out.as_ref()) {
                Next::Read => {}
                Next::After(answer) => in_flight = Some(answer),
                Next::Close => break,
            },
            Err(ReadError::Closed) | Err(ReadError::Io(_)) => break,
            Err(ReadError::Bad(status, message)) => {
                cx.stats.requests.fetch_add(1, Ordering::Relaxed);
                cx.stats.failed.fetch_add(1, Ordering::Relaxed);
                if status == 408 {
                    cx.guard.log_refusal(cx.peer.ip(), Refusal::SlowRequest);
                } else {
                    log_failure(status, "-", "-", &cx.peer.to_string(), &message);
                }
                let r = api::failure(status, &message);
                let _ = conn.respond(status, &r.body, false);
                break;
            }
        }
    }
    answered(&mut in_flight);
    conn.stream_mut().close();
}

/// What a connection does after a request.
enum Next {
    /// Read the next request.
    Read,
    /// Read the next request; the answer to this one is written by another thread, which
    /// says here whether it could be.
    After(mpsc::Receiver<bool>),
    /// Close.
    Close,
}

/// Wait for the answer in flight on this connection, if any; false if it was not written.
fn answered(in_flight: &mut Option<mpsc::Receiver<bool>>) -> bool {
    in_flight
        .take()
        .is_none_or(|answer| answer.recv().unwrap_or(false))
}

/// Check and answer one request (or see that it is answered); what the connection does next.
fn serve_request(
    cx: &ConnContext,
    conn: &mut Conn<Stream>,
    req: &Request,
    local: Option<IpAddr>,
    out: Option<&Arc<TcpStream>>,
) -> Next {
    let peer = cx.peer.to_string();
    // Mutual TLS: the handshake checked the chain; the CN rule is checked here.
    let cn = cx
        .tls
        .as_ref()
        .filter(|t| t.mutual)
        .and_then(|_| conn.stream().peer_cn());
    let who = match &cn {
        Some(cn) => format!("{peer} (client certificate CN={cn})"),
        None => peer.clone(),
    };
    let refused = if cx.guard.take_request(cx.peer.ip()) {
        let hosts = (!cx.service.any_host()).then_some(&cx.guard.hosts);
        guard::refuse_request(hosts, req, local, cx.service.accepts(req))
            .or_else(|| cn_refusal(cx.tls.as_ref(), cn.as_deref()))
    } else {
        cx.guard.log_refusal(cx.peer.ip(), Refusal::Rate);
        Some(Refusal::Rate.answer(&cx.guard.limits))
    };
    let keep = req.keep_alive && !cx.stop.load(Ordering::SeqCst);
    let later = refused.is_none() && keep && cx.service.answers_later(req);
    if let (true, Some(out)) = (later, out) {
        // The answer goes onto the socket from the thread that finishes the request (for a
        // certificate, the store's writer once it is committed), and this thread goes back to
        // reading: it sleeps once per request, in the read, instead of once more for the
        // answer.
        let (done, written) = mpsc::sync_channel(1);
        let (out, stats, line) = (out.clone(), cx.stats.clone(), LogLine::of(req, &who));
        let sink = Box::new(move |reply: Reply| {
            account(&stats, &reply, &line.method, &line.path, &line.who);
            let bytes = http::response_with(
                reply.status,
                reply.content_type,
                &reply.headers,
                &reply.body,
                true,
            );
            write_out(out, bytes, done);
        });
        cx.service.handle_into(req, &who, sink);
        return Next::After(written);
    }
    let reply = match refused {
        Some((status, m)) => api::failure(status, &m),
        None => cx.service.handle(req, &who),
    };
    account(&cx.stats, &reply, &req.method, &req.path, &who);
    let sent = conn.respond_with(
        reply.status,
        reply.content_type,
        &reply.headers,
        &reply.body,
        keep,
    );
    if sent.is_ok() && keep {
        Next::Read
    } else {
        Next::Close
    }
}

/// What the server log says of a failed request answered by another thread.
struct LogLine {
    method: String,
    path: String,
    who: String,
}

impl LogLine {
    fn of(req: &Request, who: &str) -> Self {
        Self {
            method: req.method.clone(),
            path: req.path.clone(),
            who: who.to_string(),
        }
    }
}

/// Count `reply` to `method path` from `who`, and log it if it is a failure.
fn account(stats: &Stats, reply: &Reply, method: &str, path: &str, who: &str) {
    stats.requests.fetch_add(1, Ordering::Relaxed);
    stats.issued.fetch_add(reply.issued, Ordering::Relaxed);
    if let Some(e) = &reply.error {
        stats.failed.fetch_add(1, Ordering::Relaxed);
        if reply.status != 429 {
            log_failure(reply.status, method, path, who, e);
        }
    }
}

/// Write `bytes` to `out` without blocking the calling thread (the store's writer must not
/// wait on a client): what the socket does not take at once (a client that does not read its
/// answers) is written by a thread of its own, within the socket's write timeout. `done` says
/// whether all of it was written.
fn write_out(out: Arc<TcpStream>, bytes: Vec<u8>, done: mpsc::SyncSender<bool>) {
    let sent = match send_now(&out, &bytes) {
        Ok(n) if n < bytes.len() => n,
        all_or_failed => {
            let _ = done.send(all_or_failed.is_ok());
            return;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("p11ca-answer".into())
        .spawn(move || {
            let _ = done.send((&*out).write_all(&bytes[sent..]).is_ok());
        });
    // Without a thread the answer stays cut short: its receiver sees `false` and closes.
    drop(spawned);
}

/// Send as much of `bytes` as the socket takes without waiting; how much that was.
fn send_now(out: &TcpStream, bytes: &[u8]) -> std::io::Result<usize> {
    let socket = socket2::SockRef::from(out);
    let mut sent = 0;
    while sent < bytes.len() {
        match socket.send_with_flags(&bytes[sent..], libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}

/// The 403 for a client certificate whose CN does not match `-mutual-tls-cn`.
fn cn_refusal(tls: Option<&TlsOptions>, cn: Option<&str>) -> Option<(u16, String)> {
    let re = tls.and_then(|t| t.cn_regex.as_ref())?;
    match cn {
        Some(cn) if re.is_match(cn) => None,
        cn => Some((
            403,
            format!(
                "client certificate CN \"{}\" does not match -mutual-tls-cn /{re}/",
                cn.unwrap_or("")
            ),
        )),
    }
}

/// One log line for a failed request; everything the client chose is escaped.
fn log_failure(status: u16, method: &str, path: &str, who: &str, message: &str) {
    let (method, path, who, message) = (
        escape_for_log(method),
        escape_for_log(path),
        escape_for_log(who),
        escape_for_log(message),
    );
    if status >= 500 {
        eprintln!("p11ca: warning: serve: {status} {method} {path} from {who}: {message}");
    } else {
        eprintln!("p11ca: serve: {status} {method} {path} from {who}: {message}");
    }
}
