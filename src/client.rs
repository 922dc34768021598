//! The client side of cfssl's signing API (`api/client`): what `gencert -remote`, `sign
//! -remote` and a client config's `remote` / `auth_remote` profiles use. It speaks to
//! `p11ca serve` and to `cfssl serve` / multirootca alike.
//!
//! Addresses are read as cfssl's `normalizeURL` does: `host:port`, `host` (port 8888), or an
//! `http://` / `https://` URL. For https the server is checked against the CAs of
//! `-tls-remote-ca` (default: the system's /etc/ssl/certs/ca-certificates.crt), and a client
//! certificate can be presented (`-mutual-tls-client-cert/-key`), as in cfssl.
//!
//! Layer: above `cfssl` (the wire types, the authsign envelope) and `tls`; it must not use the
//! server, the store or the CA workflows.

use std::time::Duration;

use serde_json::{Value, json};

use crate::cfssl::auth;
use crate::cfssl::config::AuthKey;
use crate::error::{Error, Kind, Result};

/// The system's CA bundle, the default roots for https remotes.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// TLS options of the client (cfssl's flag names).
#[derive(Clone, Debug, Default)]
pub struct TlsClient {
    /// `-tls-remote-ca`: PEM CAs the server must chain to.
    pub remote_ca: Option<String>,
    /// `-mutual-tls-client-cert`: the client certificate (PEM, chain allowed).
    pub client_cert: Option<String>,
    /// `-mutual-tls-client-key`: its key (PEM).
    pub client_key: Option<String>,
}

fn pem_items(path: &str, flag: &str) -> Result<Vec<ureq::tls::PemItem<'static>>> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::input(format!("{flag} {path}: cannot read: {e}")))?;
    ureq::tls::parse_pem(&bytes)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::input(format!("{flag} {path}: not PEM: {e}")))
}

fn certs(path: &str, flag: &str) -> Result<Vec<ureq::tls::Certificate<'static>>> {
    let v: Vec<_> = pem_items(path, flag)?
        .into_iter()
        .filter_map(|i| match i {
            ureq::tls::PemItem::Certificate(c) => Some(c),
            _ => None,
        })
        .collect();
    if v.is_empty() {
        return Err(Error::input(format!(
            "{flag} {path}: no CERTIFICATE block found"
        )));
    }
    Ok(v)
}

impl TlsClient {
    fn config(&self) -> Result<ureq::tls::TlsConfig> {
        use ureq::tls::{ClientCert, PemItem, RootCerts, TlsConfig, TlsProvider};
        let roots = match &self.remote_ca {
            Some(p) => certs(p, "-tls-remote-ca")?,
            None => certs(SYSTEM_ROOTS, "the system CA bundle")
                .map_err(|e| e.context("https needs CAs to trust; give -tls-remote-ca FILE"))?,
        };
        let client = match (&self.client_cert, &self.client_key) {
            (Some(c), Some(k)) => {
                let chain = certs(c, "-mutual-tls-client-cert")?;
                let key = pem_items(k, "-mutual-tls-client-key")?
                    .into_iter()
                    .find_map(|i| match i {
                        PemItem::PrivateKey(k) => Some(k),
                        _ => None,
                    })
                    .ok_or_else(|| {
                        Error::input(format!("-mutual-tls-client-key {k}: no private key found"))
                    })?;
                Some(ClientCert::new_with_certs(&chain, key))
            }
            (None, None) => None,
            _ => {
                return Err(Error::input(
                    "-mutual-tls-client-cert and -mutual-tls-client-key go together",
                ));
            }
        };
        Ok(TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .root_certs(RootCerts::new_with_certs(&roots))
            .client_cert(client)
            .unversioned_rustls_crypto_provider(crate::tls::provider())
            .build())
    }
}

/// How long one request to the signer may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// A signer reached over cfssl's API.
pub struct RemoteClient {
    base: String,
    agent: ureq::Agent,
}

/// What a sign request carries (`signer.SignRequest`).
#[derive(Clone, Debug, Default)]
pub struct SignRequest<'a> {
    /// The PEM CSR.
    pub csr_pem: &'a str,
    /// SANs replacing the CSR's (cfssl's `-hostname`); `None` keeps the CSR's.
    pub hosts: Option<Vec<String>>,
    /// The profile name ("" = the server's default).
    pub profile: &'a str,
    /// The signer label (multirootca).
    pub label: &'a str,
    /// A subject override (`{"CN", "names", "SerialNumber"}`).
    pub subject: Option<Value>,
}

impl SignRequest<'_> {
    /// The JSON body, as cfssl's client marshals it.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = json!({
            "hosts": self.hosts,
            "certificate_request": self.csr_pem,
            "profile": self.profile,
            "label": self.label,
        });
        if let Some(s) = &self.subject {
            v["subject"] = s.clone();
        }
        serde_json::to_vec(&v).unwrap_or_default()
    }
}

/// `host:port`, `host` or `http(s)://host[:port]` to a base URL (cfssl's default port 8888).
pub fn base_url(server: &str) -> Result<String> {
    let s = server.trim().trim_end_matches('/');
    let (scheme, hostport) = match s.strip_prefix("https://") {
        Some(h) => ("https", h),
        None => ("http", s.strip_prefix("http://").unwrap_or(s)),
    };
    if hostport.is_empty() || hostport.contains('/') || hostport.contains(char::is_whitespace) {
        return Err(Error::input(format!(
            "remote \"{server}\": give host:port, e.g. 127.0.0.1:8888"
        )));
    }
    // A bare host (no port; IPv6 needs brackets to carry one) gets cfssl's 8888.
    let has_port = match hostport.rsplit_once(':') {
        Some((h, p)) => {
            (!h.contains(':') || h.ends_with(']')) && !p.is_empty() && {
                p.parse::<u16>().map_err(|_| {
                    Error::input(format!("remote \"{server}\": port \"{p}\" is not a number"))
                })?;
                true
            }
        }
        None => false,
    };
    Ok(if has_port {
        format!("{scheme}://{hostport}")
    } else {
        format!("{scheme}://{hostport}:8888")
    })
}

impl RemoteClient {
    /// A client for `server` (see [`base_url`]), plain HTTP or https with the system's CAs.
    pub fn new(server: &str) -> Result<Self> {
        Self::with_tls(server, &TlsClient::default())
    }

    /// A client for `server` with TLS options (used for https remotes).
    pub fn with_tls(server: &str, tls: &TlsClient) -> Result<Self> {
        let base = base_url(server)?;
        let mut cfg = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(false);
        if base.starts_with("https://") {
            cfg = cfg.tls_config(tls.config()?);
        } else if tls.client_cert.is_some() || tls.remote_ca.is_some() {
            return Err(Error::input(format!(
                "TLS options were given but the remote {base} is plain http; write https://HOST:PORT"
            )));
        }
        let agent: ureq::Agent = cfg.build().into();
        Ok(Self { base, agent })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// POST `body` to `endpoint`; the envelope's result, or the server's error.
    fn post(&self, endpoint: &str, body: &[u8]) -> Result<(Value, Vec<String>)> {
        let url = format!("{}/api/v1/cfssl/{endpoint}", self.base);
        let mut resp = self
            .agent
            .post(&url)
            .header("Content-Type", "application/json")
            .send(body)
            .map_err(|e| {
                Error::token(format!(
                    "remote signer {}: cannot reach it: {e}; check -remote / remotes and that the server runs",
                    self.base
                ))
            })?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().map_err(|e| {
            Error::token(format!(
                "remote signer {}: cannot read the answer: {e}",
                self.base
            ))
        })?;
        let env: Option<Value> = serde_json::from_str(&text).ok();
        let ok = env
            .as_ref()
            .and_then(|v| v.get("success"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if status == 200 && ok {
            let env = env.unwrap_or_default();
            let messages = env
                .get("messages")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|m| m.get("message").and_then(Value::as_str))
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            return Ok((env.get("result").cloned().unwrap_or(Value::Null), messages));
        }
        let message = env
            .as_ref()
            .and_then(|v| v.get("errors"))
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| {
                let t = text.trim();
                if t.is_empty() {
                    "no error message".to_string()
                } else {
                    t.chars().take(300).collect()
                }
            });
        let kind = if (400..500).contains(&status) {
            Kind::Policy
        } else {
            Kind::Token
        };
        Err(Error::new(
            kind,
            format!(
                "remote signer {} refused the request (HTTP {status}): {message}",
                self.base
            ),
        ))
    }

    /// Sign: /sign, or /authsign with `auth`. Returns the certificate PEM and the server's
    /// messages.
    pub fn sign(
        &self,
        req: &SignRequest<'_>,
        auth: Option<&AuthKey>,
    ) -> Result<(String, Vec<String>)> {
        let body = req.to_json();
        let (result, messages) = match auth {
            Some(k) => self.post("authsign", auth::wrap(k, &body).as_bytes())?,
            None => self.post("sign", &body)?,
        };
        let cert = result
            .get("certificate")
            .and_then(Value::as_str)
            .filter(|c| c.contains("BEGIN CERTIFICATE"))
            .ok_or_else(|| {
                Error::token(format!(
                    "remote signer {}: the answer has no certificate",
                    self.base
                ))
            })?;
        Ok((cert.to_string(), messages))
    }

    /// /info for `profile`.
    pub fn info(&self, label: &str, profile: &str) -> Result<Value> {
        let body =
            serde_json::to_vec(&json!({"label": label, "profile": profile})).unwrap_or_default();
        self.post("info", &body).map(|(r, _)| r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_as_cfssl() {
        assert_eq!(base_url("127.0.0.1:8888").unwrap(), "http://127.0.0.1:8888");
        assert_eq!(base_url("ca.example").unwrap(), "http://ca.example:8888");
        assert_eq!(
            base_url("http://ca.example:9/").unwrap(),
            "http://ca.example:9"
        );
        assert_eq!(base_url("[::1]:7").unwrap(), "http://[::1]:7");
        assert_eq!(base_url("https://x").unwrap(), "https://x:8888");
        assert!(base_url("h:port").is_err());
        assert!(base_url("").is_err());
    }

    #[test]
    fn sign_request_json() {
        let r = SignRequest {
            csr_pem: "PEM",
            hosts: None,
            profile: "p",
            label: "",
            subject: None,
        };
        let v: Value = serde_json::from_slice(&r.to_json()).unwrap();
        assert_eq!(v["certificate_request"], "PEM");
        assert!(v["hosts"].is_null());
        assert_eq!(v["profile"], "p");
    }
}
