//! Optional TLS for `p11ca serve` (cfssl's `-tls-cert`, `-tls-key`, `-mutual-tls-ca`,
//! `-mutual-tls-cn`) and for the client's https remotes (`-tls-remote-ca`,
//! `-mutual-tls-client-cert`, `-mutual-tls-client-key`), with rustls on the `ring` provider.
//!
//! The server's TLS key is an ordinary key file: it protects the connection, not the CA.
//!
//! Layer: above `x509`; it must not use the server, the client or the store, which all use it.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use der::Decode;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection, StreamOwned};
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

use crate::error::{Error, Result};
use crate::x509::name;

/// The crypto provider used everywhere (ring).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file.
pub fn load_certs(path: &str, flag: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(Path::new(path))
        .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| Error::input(format!("{flag} {path}: cannot read certificates: {e}")))?;
    if certs.is_empty() {
        return Err(Error::input(format!(
            "{flag} {path}: no CERTIFICATE block found"
        )));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &str, flag: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(Path::new(path))
        .map_err(|e| Error::input(format!("{flag} {path}: cannot read a private key: {e}")))
}

/// A root store from a PEM file of CA certificates.
pub fn roots(path: &str, flag: &str) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    for c in load_certs(path, flag)? {
        store.add(c).map_err(|e| {
            Error::input(format!("{flag} {path}: not a usable CA certificate: {e}"))
        })?;
    }
    Ok(store)
}

/// The server's TLS configuration; with `client_ca`, callers must present a certificate that
/// chains to it.
pub fn server_config(cert: &str, key: &str, client_ca: Option<&str>) -> Result<Arc<ServerConfig>> {
    let chain = load_certs(cert, "-tls-cert")?;
    let key = load_key(key, "-tls-key")?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::input(format!("TLS: {e}")))?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca, "-mutual-tls-ca")?),
                provider(),
            )
            .build()
            .map_err(|e| Error::input(format!("-mutual-tls-ca {ca}: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(chain, key).map_err(|e| {
        Error::input(format!(
            "-tls-cert {cert} / -tls-key: {e}; give the server certificate and its key"
        ))
    })?;
    Ok(Arc::new(config))
}

/// The DNS names and IP addresses in the subjectAltName of the first certificate in `path`
/// (the server's own): the names clients may use to reach it.
pub fn cert_names(path: &str) -> Result<Vec<String>> {
    let certs = load_certs(path, "-tls-cert")?;
    let bad = |e: der::Error| {
        Error::input(format!(
            "-tls-cert {path}: cannot parse the certificate: {e}"
        ))
    };
    let cert = x509_cert::Certificate::from_der(certs[0].as_ref()).map_err(bad)?;
    let Some((_, alt)) = cert
        .tbs_certificate()
        .get_extension::<SubjectAltName>()
        .map_err(bad)?
    else {
        return Ok(Vec::new());
    };
    Ok(alt
        .0
        .iter()
        .filter_map(|g| match g {
            GeneralName::DnsName(d) => Some(d.to_string()),
            GeneralName::IpAddress(ip) => match ip.as_bytes().len() {
                4 => <[u8; 4]>::try_from(ip.as_bytes())
                    .ok()
                    .map(|b| std::net::IpAddr::from(b).to_string()),
                16 => <[u8; 16]>::try_from(ip.as_bytes())
                    .ok()
                    .map(|b| std::net::IpAddr::from(b).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect())
}

/// A connection, plain or TLS.
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
}

impl Stream {
    /// Wrap `tcp` for `tls` (if any).
    pub fn new(tcp: TcpStream, tls: Option<&Arc<ServerConfig>>) -> io::Result<Self> {
        Ok(match tls {
            None => Self::Plain(tcp),
            Some(cfg) => {
                let conn = ServerConnection::new(cfg.clone()).map_err(io::Error::other)?;
                Self::Tls(Box::new(StreamOwned::new(conn, tcp)))
            }
        })
    }

    /// Finish the TLS handshake (nothing for plain TCP) within `limit`, giving up early if
    /// `stop` is set. The socket's read timeout is the poll interval, so the deadline is
    /// checked between reads.
    pub fn handshake(&mut self, limit: Duration, stop: &AtomicBool) -> io::Result<()> {
        let Self::Tls(s) = self else { return Ok(()) };
        let t = Instant::now();
        while s.conn.is_handshaking() {
            if t.elapsed() > limit || stop.load(Ordering::Relaxed) {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake did not finish in time",
                ));
            }
            match s.conn.complete_io(&mut s.sock) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The CN of the client certificate (mutual TLS), once the handshake is done.
    pub fn peer_cn(&self) -> Option<String> {
        let Self::Tls(s) = self else { return None };
        let der = s.conn.peer_certificates()?.first()?;
        let cert = x509_cert::Certificate::from_der(der.as_ref()).ok()?;
        cert.tbs_certificate()
            .subject()
            .iter()
            .filter(|atv| atv.oid == const_oid::db::rfc4519::CN)
            .find_map(|atv| name::value_text(&atv.value))
            .or(Some(String::new()))
    }
}

impl Stream {
    /// End a TLS session cleanly (close_notify) before the socket closes.
    pub fn close(&mut self) {
        if let Self::Tls(s) = self {
            s.conn.send_close_notify();
            let _ = s.flush();
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf),
            Self::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.write(buf),
            Self::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(s) => s.flush(),
            Self::Tls(s) => s.flush(),
        }
    }
}
