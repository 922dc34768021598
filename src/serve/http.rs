//! Just enough HTTP/1.1 for the cfssl API: request heads parsed by `httparse`, bodies by
//! Content-Length only (with a size limit), keep-alive, and responses with a JSON body.
//!
//! Reads poll with a short timeout so that an idle connection notices shutdown; a request that
//! has started arriving is always read to its end and answered.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Longest request head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// How long an idle keep-alive connection is kept.
const IDLE_LIMIT: Duration = Duration::from_secs(60);
/// How long a request may take to arrive once it has started.
const REQUEST_LIMIT: Duration = Duration::from_secs(30);
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
}

fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

impl<S: Read + Write> Conn<S> {
    /// Wrap a stream whose read timeout is [`POLL`].
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            buf: Vec::with_capacity(4096),
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

    /// Read the next request. `stop` is checked while no byte of a request has arrived.
    pub fn read_request(
        &mut self,
        max_body: usize,
        stop: &AtomicBool,
    ) -> Result<Request, ReadError> {
        let idle_since = Instant::now();
        let mut started: Option<Instant> = None;
        // The head.
        let (
            head_len,
            method,
            path,
            version,
            content_length,
            chunked,
            keep_alive_hdr,
            expect_continue,
        ) = loop {
            if !self.buf.is_empty() {
                started.get_or_insert_with(Instant::now);
                let mut headers = [httparse::EMPTY_HEADER; 64];
                let mut req = httparse::Request::new(&mut headers);
                match req.parse(&self.buf) {
                    Ok(httparse::Status::Complete(n)) => {
                        let mut content_length: Option<u64> = None;
                        let mut chunked = false;
                        let mut connection = None;
                        let mut expect = false;
                        for h in req.headers.iter() {
                            let v = String::from_utf8_lossy(h.value).trim().to_ascii_lowercase();
                            if h.name.eq_ignore_ascii_case("content-length") {
                                match v.parse::<u64>() {
                                    Ok(l) if content_length.is_none_or(|c| c == l) => {
                                        content_length = Some(l)
                                    }
                                    _ => {
                                        return Err(ReadError::Bad(
                                            400,
                                            format!("invalid Content-Length \"{v}\""),
                                        ));
                                    }
                                }
                            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                                chunked = v != "identity";
                            } else if h.name.eq_ignore_ascii_case("connection") {
                                connection = Some(v);
                            } else if h.name.eq_ignore_ascii_case("expect") {
                                expect = v == "100-continue";
                            }
                        }
                        break (
                            n,
                            req.method.unwrap_or("").to_string(),
                            req.path.unwrap_or("/").to_string(),
                            req.version.unwrap_or(1),
                            content_length,
                            chunked,
                            connection,
                            expect,
                        );
                    }
                    Ok(httparse::Status::Partial) if self.buf.len() > MAX_HEAD => {
                        return Err(ReadError::Bad(
                            431,
                            format!("request head over {MAX_HEAD} bytes"),
                        ));
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(e) => {
                        return Err(ReadError::Bad(400, format!("malformed HTTP request: {e}")));
                    }
                }
            }
            match (started, stop.load(Ordering::Relaxed)) {
                (None, true) => return Err(ReadError::Closed),
                (None, false) if idle_since.elapsed() > IDLE_LIMIT => {
                    return Err(ReadError::Closed);
                }
                (Some(t), _) if t.elapsed() > REQUEST_LIMIT => {
                    return Err(ReadError::Bad(
                        408,
                        "the request took too long to arrive".into(),
                    ));
                }
                _ => {}
            }
            match self.fill() {
                Ok(0) if started.is_none() => return Err(ReadError::Closed),
                Ok(0) => {
                    return Err(ReadError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed mid-request",
                    )));
                }
                Ok(_) => {}
                Err(e) if timed_out(&e) => {}
                Err(e) if started.is_none() => {
                    let _ = e;
                    return Err(ReadError::Closed);
                }
                Err(e) => return Err(ReadError::Io(e)),
            }
        };
        let keep_alive = match keep_alive_hdr.as_deref() {
            Some(c) if c.contains("close") => false,
            Some(c) if c.contains("keep-alive") => true,
            _ => version >= 1,
        };
        if chunked {
            return Err(ReadError::Bad(
                411,
                "chunked request bodies are not accepted; send Content-Length".into(),
            ));
        }
        let len = content_length.unwrap_or(0);
        if len > max_body as u64 {
            self.buf.drain(..head_len.min(self.buf.len()));
            self.discard(len);
            return Err(ReadError::Bad(
                413,
                format!("request body of {len} bytes is over the limit of {max_body} bytes"),
            ));
        }
        let len = len as usize;
        if expect_continue && self.buf.len() < head_len + len {
            self.stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .map_err(ReadError::Io)?;
        }
        let t = started.unwrap_or_else(Instant::now);
        while self.buf.len() < head_len + len {
            if t.elapsed() > REQUEST_LIMIT {
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
        let path = path.split('?').next().unwrap_or("/").to_string();
        Ok(Request {
            method,
            path,
            body,
            keep_alive,
        })
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
        let mut out = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
            reason(status),
            body.len(),
            if keep_alive { "keep-alive" } else { "close" }
        )
        .into_bytes();
        out.extend_from_slice(body);
        self.stream.write_all(&out)?;
        self.stream.flush()
    }
}

/// The reason phrase of a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
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
