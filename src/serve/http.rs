//! Just enough HTTP/1.1 for the cfssl API: request heads parsed by `httparse`, bodies by
//! Content-Length only (with a size limit), keep-alive, and responses with a JSON body.
//!
//! Reads poll with a short timeout ([`POLL`]) so that an idle connection notices shutdown and
//! deadlines are checked between reads. The deadlines cover a whole head or body, not each
//! read, so a client that dribbles a byte at a time gains nothing: a new connection has
//! [`HEAD_LIMIT`] to deliver its first request head, a kept-alive one may be idle for
//! [`IDLE_LIMIT`] and then has [`HEAD_LIMIT`] from the first byte of the next head; a body has
//! [`BODY_LIMIT`]. A request whose head has arrived is always read to its end and answered.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Longest request head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// How long an idle keep-alive connection is kept.
pub const IDLE_LIMIT: Duration = Duration::from_secs(30);
/// How long a request head may take to arrive, in all.
pub const HEAD_LIMIT: Duration = Duration::from_secs(5);
/// How long a request body may take to arrive once the head is in.
pub const BODY_LIMIT: Duration = Duration::from_secs(30);
/// The read poll interval (how fast an idle connection notices shutdown).
pub const POLL: Duration = Duration::from_millis(100);

/// One request.
#[derive(Debug)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// The body.
    pub body: Vec<u8>,
    /// Whether the client wants the connection kept open.
    pub keep_alive: bool,
    /// The `Host` header.
    pub host: Option<String>,
    /// The `Origin` header (sent by browsers).
    pub origin: Option<String>,
    /// The `Content-Type` header.
    pub content_type: Option<String>,
    /// The `If-None-Match` header (several joined with ", ", as RFC 9110 §5.3 allows).
    pub if_none_match: Option<String>,
}

/// Why no request was read.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed (or went idle too long, or the server is shutting down) between
    /// requests: close quietly.
    Closed,
    /// A malformed or unacceptable request: answer with this status and message, then close.
    Bad(u16, String),
    /// An I/O error mid-request: close.
    Io(io::Error),
}

/// A connection: the stream and what has been read ahead.
pub struct Conn<S> {
    stream: S,
    buf: Vec<u8>,
    /// When the current head must be in: set from the start for a new connection, and from
    /// the first byte of a head on a kept-alive one.
    head_deadline: Option<Instant>,
}

/// A parsed request head.
struct Head {
    len: usize,
    method: String,
    path: String,
    version: u8,
    content_length: Option<u64>,
    chunked: bool,
    connection: Option<String>,
    expect_continue: bool,
    host: Option<String>,
    origin: Option<String>,
    content_type: Option<String>,
    if_none_match: Option<String>,
}

fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Parse a complete head at the start of `buf`; `None` while it is incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, ReadError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(ReadError::Bad(
                431,
                format!("request head over {MAX_HEAD} bytes"),
            ));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => {
            return Err(ReadError::Bad(400, format!("malformed HTTP request: {e}")));
        }
    };
    let mut head = Head {
        len,
        method: req.method.unwrap_or("").to_string(),
        path: req.path.unwrap_or("/").to_string(),
        version: req.version.unwrap_or(1),
        content_length: None,
        chunked: false,
        connection: None,
        expect_continue: false,
        host: None,
        origin: None,
        content_type: None,
        if_none_match: None,
    };
    for h in req.headers.iter() {
        let raw = String::from_utf8_lossy(h.value).trim().to_string();
        let v = raw.to_ascii_lowercase();
        let name = h.name.to_ascii_lowercase();
        match name.as_str() {
            "content-length" => match v.parse::<u64>() {
                Ok(l) if head.content_length.is_none_or(|c| c == l) => {
                    head.content_length = Some(l)
                }
                _ => {
                    return Err(ReadError::Bad(
                        400,
                        format!("invalid Content-Length \"{v}\""),
                    ));
                }
            },
            "transfer-encoding" => head.chunked = v != "identity",
            "connection" => head.connection = Some(v),
            "expect" => head.expect_continue = v == "100-continue",
            // A second Host or Origin could hide the first from a check: refuse.
            "host" | "origin" if head.header(&name).is_some() => {
                return Err(ReadError::Bad(
                    400,
                    format!("more than one {} header", h.name),
                ));
            }
            "host" => head.host = Some(raw),
            "origin" => head.origin = Some(raw),
            "content-type" => head.content_type = Some(raw),
            "if-none-match" => {
                head.if_none_match = Some(match head.if_none_match.take() {
                    Some(first) => format!("{first}, {raw}"),
                    None => raw,
                })
            }
            _ => {}
        }
    }
    Ok(Some(head))
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        match name {
            "host" => self.host.as_deref(),
            "origin" => self.origin.as_deref(),
            _ => None,
        }
    }
}

impl<S: Read + Write> Conn<S> {
    /// Wrap a new connection's stream whose read timeout is [`POLL`]; its first request head
    /// is due within [`HEAD_LIMIT`] from now.
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            buf: Vec::with_capacity(4096),
            head_deadline: Some(Instant::now() + HEAD_LIMIT),
        }
    }

    /// The stream.
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// The stream, mutably.
    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Read more bytes into the buffer. `Ok(0)` is end of stream; a poll timeout is
    /// `Err(WouldBlock)`.
    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Read the next head. `stop` is checked while no byte of it has arrived.
    fn read_head(&mut self, stop: &AtomicBool) -> Result<Head, ReadError> {
        let idle_since = Instant::now();
        loop {
            let started = !self.buf.is_empty();
            if started {
                self.head_deadline
                    .get_or_insert_with(|| Instant::now() + HEAD_LIMIT);
                if let Some(head) = parse_head(&self.buf)? {
                    self.head_deadline = None;
                    return Ok(head);
                }
            }
            if !started && stop.load(Ordering::Relaxed) {
                return Err(ReadError::Closed);
            }
            match self.head_deadline {
                Some(d) if Instant::now() > d && started => {
                    return Err(ReadError::Bad(
                        408,
                        format!(
                            "the request head did not arrive within {} s",
                            HEAD_LIMIT.as_secs()
                        ),
                    ));
                }
                Some(d) if Instant::now() > d => return Err(ReadError::Closed),
                None if idle_since.elapsed() > IDLE_LIMIT => return Err(ReadError::Closed),
                _ => {}
            }
            match self.fill() {
                Ok(0) if !started => return Err(ReadError::Closed),
                Ok(0) => {
                    return Err(ReadError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed mid-request",
                    )));
                }
                Ok(_) => {}
                Err(e) if timed_out(&e) => {}
                Err(_) if !started => return Err(ReadError::Closed),
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
    }

    /// Read the next request. `stop` is checked while no byte of it has arrived.
    pub fn read_request(
        &mut self,
        max_body: usize,
        stop: &AtomicBool,
    ) -> Result<Request, ReadError> {
        let head = self.read_head(stop)?;
        let keep_alive = match head.connection.as_deref() {
            Some(c) if c.contains("close") => false,
            Some(c) if c.contains("keep-alive") => true,
            _ => head.version >= 1,
        };
        if head.chunked {
            return Err(ReadError::Bad(
                411,
                "chunked request bodies are not accepted; send Content-Length".into(),
            ));
        }
        let len = head.content_length.unwrap_or(0);
        if len > max_body as u64 {
            self.buf.drain(..head.len.min(self.buf.len()));
            self.discard(len);
            return Err(ReadError::Bad(
                413,
                format!("request body of {len} bytes is over the limit of {max_body} bytes"),
            ));
        }
        let body = self.read_body(head.len, len as usize, head.expect_continue)?;
        let path = head.path.split('?').next().unwrap_or("/").to_string();
        Ok(Request {
            method: head.method,
            path,
            body,
            keep_alive,
            host: head.host,
            origin: head.origin,
            content_type: head.content_type,
            if_none_match: head.if_none_match,
        })
    }

    /// The `len` body bytes after a head of `head_len` bytes, within [`BODY_LIMIT`].
    fn read_body(
        &mut self,
        head_len: usize,
        len: usize,
        expect_continue: bool,
    ) -> Result<Vec<u8>, ReadError> {
        if expect_continue && self.buf.len() < head_len + len {
            self.stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .map_err(ReadError::Io)?;
        }
        let t = Instant::now();
        while self.buf.len() < head_len + len {
            if t.elapsed() > BODY_LIMIT {
                return Err(ReadError::Bad(
                    408,
                    "the request body took too long to arrive".into(),
                ));
            }
            match self.fill() {
                Ok(0) => {
                    return Err(ReadError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed mid-body",
                    )));
                }
                Ok(_) => {}
                Err(e) if timed_out(&e) => {}
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
        let body = self.buf[head_len..head_len + len].to_vec();
        self.buf.drain(..head_len + len);
        Ok(body)
    }

    /// Read and drop up to `len` body bytes (bounded in time), so that a client still sending
    /// an oversized body gets to read our answer instead of a reset.
    fn discard(&mut self, len: u64) {
        let t = Instant::now();
        let mut left = len.saturating_sub(self.buf.len() as u64);
        self.buf.clear();
        let mut chunk = [0u8; 16384];
        while left > 0 && t.elapsed() < Duration::from_secs(2) && len <= 64 << 20 {
            match self.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => left = left.saturating_sub(n as u64),
                Err(e) if timed_out(&e) => {}
                Err(_) => break,
            }
        }
    }

    /// Write a response with a JSON body.
    pub fn respond(&mut self, status: u16, body: &[u8], keep_alive: bool) -> io::Result<()> {
        self.respond_with(status, JSON, &[], body, keep_alive)
    }

    /// Send a response with a body of `content_type` and extra `headers`.
    pub fn respond_with(
        &mut self,
        status: u16,
        content_type: &str,
        headers: &[(&'static str, String)],
        body: &[u8],
        keep_alive: bool,
    ) -> io::Result<()> {
        let out = response_with(status, content_type, headers, body, keep_alive);
        self.stream.write_all(&out)?;
        self.stream.flush()
    }
}

/// A response with a body of `content_type` and extra `headers`, as bytes.
pub fn response_with(
    status: u16,
    content_type: &str,
    headers: &[(&'static str, String)],
    body: &[u8],
    keep_alive: bool,
) -> Vec<u8> {
    let mut out = head(status, content_type, headers, body.len(), keep_alive);
    out.extend_from_slice(body);
    out
}

/// The content type of the API's envelopes.
pub const JSON: &str = "application/json";

/// A response with a JSON body, as bytes.
pub fn response(status: u16, body: &[u8], keep_alive: bool) -> Vec<u8> {
    response_with(status, JSON, &[], body, keep_alive)
}

/// A response head (status line and headers, up to the empty line).
fn head(
    status: u16,
    content_type: &str,
    headers: &[(&'static str, String)],
    len: usize,
    keep_alive: bool,
) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\n",
        reason(status)
    );
    // A 304 has no body, and a Content-Length there would have to be the 200's (RFC 9110
    // §8.6), which the caller does not give: none is sent.
    if status != 304 {
        out.push_str(&format!("Content-Length: {len}\r\n"));
    }
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(if keep_alive {
        "Connection: keep-alive\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    out.into_bytes()
}

/// The reason phrase of a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        421 => "Misdirected Request",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A stream that reads from a fixed input and collects output.
    struct Fake {
        input: Cursor<Vec<u8>>,
        out: Vec<u8>,
    }

    impl Read for Fake {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            self.input.read(b)
        }
    }

    impl Write for Fake {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.out.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn conn(s: &str) -> Conn<Fake> {
        Conn::new(Fake {
            input: Cursor::new(s.as_bytes().to_vec()),
            out: Vec::new(),
        })
    }

    #[test]
    fn keep_alive_pipeline() {
        let stop = AtomicBool::new(false);
        let mut c = conn(
            "POST /api/v1/cfssl/sign?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}GET /h HTTP/1.0\r\n\r\n",
        );
        let r = c.read_request(100, &stop).unwrap();
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/api/v1/cfssl/sign")
        );
        assert_eq!(r.body, b"{}");
        assert!(r.keep_alive);
        let r = c.read_request(100, &stop).unwrap();
        assert_eq!(r.path, "/h");
        assert!(!r.keep_alive);
        assert!(matches!(c.read_request(100, &stop), Err(ReadError::Closed)));
    }

    #[test]
    fn limits_and_errors() {
        let stop = AtomicBool::new(false);
        let mut c = conn("POST / HTTP/1.1\r\nContent-Length: 1000\r\n\r\n");
        assert!(matches!(
            c.read_request(100, &stop),
            Err(ReadError::Bad(413, _))
        ));
        let mut c = conn("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(matches!(
            c.read_request(100, &stop),
            Err(ReadError::Bad(411, _))
        ));
        let mut c = conn("BAD\x01 / HTTP/1.1\r\n\r\n");
        assert!(matches!(
            c.read_request(100, &stop),
            Err(ReadError::Bad(400, _))
        ));
        let mut c = conn("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab");
        assert!(matches!(c.read_request(100, &stop), Err(ReadError::Io(_))));
        let mut c = conn("POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n");
        assert!(matches!(
            c.read_request(100, &stop),
            Err(ReadError::Bad(400, _))
        ));
    }

    #[test]
    fn headers_for_the_guard() {
        let stop = AtomicBool::new(false);
        let mut c = conn(
            "POST / HTTP/1.1\r\nHOST: CA.example:8888 \r\norigin: http://a\r\nContent-Type: Application/JSON; charset=utf-8\r\nContent-Length: 0\r\n\r\nGET / HTTP/1.0\r\n\r\n",
        );
        let r = c.read_request(100, &stop).unwrap();
        assert_eq!(r.host.as_deref(), Some("CA.example:8888"));
        assert_eq!(r.origin.as_deref(), Some("http://a"));
        assert_eq!(
            r.content_type.as_deref(),
            Some("Application/JSON; charset=utf-8")
        );
        let r = c.read_request(100, &stop).unwrap();
        assert_eq!((r.host, r.origin, r.content_type), (None, None, None));
        for twice in [
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\nOrigin: a\r\norigin: a\r\n\r\n",
        ] {
            assert!(
                matches!(
                    conn(twice).read_request(100, &stop),
                    Err(ReadError::Bad(400, _))
                ),
                "{twice:?}"
            );
        }
    }

    #[test]
    fn response_format() {
        let mut c = conn("");
        c.respond(404, b"{}", false).unwrap();
        let out = String::from_utf8(c.stream.out.clone()).unwrap();
        assert!(out.starts_with("HTTP/1.1 404 Not Found\r\n"), "{out}");
        assert!(
            out.contains("Content-Length: 2\r\nConnection: close\r\n\r\n{}"),
            "{out}"
        );
    }
}
