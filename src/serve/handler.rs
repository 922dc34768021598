//! What a [`super::Server`] serves: cfssl's API (`api::Service`) or the OCSP responder
//! (`ocsp::Responder`), behind the same connection handling and guard.

use super::http::Request;

/// An HTTP answer: status, body (a JSON envelope for the API) and headers.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// The JSON envelope.
    pub body: Vec<u8>,
    /// For the server log: what went wrong (failures only).
    pub error: Option<String>,
    /// How many certificates this reply carries (0 or 1).
    pub issued: usize,
    /// The body's content type.
    pub content_type: &'static str,
    /// More response headers (caching headers of OCSP responses).
    pub headers: Vec<(&'static str, String)>,
}

/// Where an answer goes once it is ready: back to the waiting connection thread, or (a plain
/// keep-alive connection) straight onto the socket from whichever thread finishes the request.
pub type Sink = Box<dyn FnOnce(Reply) + Send>;

/// A request handler.
pub trait Handler: Send + Sync {
    /// Answer one request from `who` (the peer, and its client certificate's CN).
    fn handle(&self, req: &Request, who: &str) -> Reply;
    /// Answer one request into `sink`, exactly once, now or later from another thread (a
    /// certificate is answered by the thread that commits it, so the connection thread need
    /// not sleep until then). The default answers now.
    fn handle_into(&self, req: &Request, who: &str, sink: Sink) {
        sink(self.handle(req, who));
    }
    /// Whether `req` is answered later from another thread through
    /// [`handle_into`](Self::handle_into) (worth handing that thread the socket).
    fn answers_later(&self, _req: &Request) -> bool {
        false
    }
    /// The largest request body read.
    fn max_body(&self) -> usize;
    /// Whether the POST body of `req` is of a type the handler reads (others get 415 before
    /// it sees them).
    fn accepts(&self, req: &Request) -> bool {
        super::guard::is_json(req.content_type.as_deref())
    }
    /// Whether requests for any `Host` and from any `Origin` are answered: true only for a
    /// handler whose answers are public and change nothing (OCSP), where the DNS-rebinding
    /// and cross-origin checks protect nothing and clients use whatever name the
    /// certificate's AIA carries.
    fn any_host(&self) -> bool {
        false
    }
}
