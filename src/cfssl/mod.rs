//! cfssl's formats: request JSON, signing config, durations, certinfo, cfssljson output and the
//! authsign envelope shared by the API client and server. Formats only: uses `x509` (and
//! `token` for key URIs), never the CA workflows, the server, the client or the CLI.

pub mod auth;
pub mod certinfo;
pub mod config;
pub mod csr;
pub mod duration;
pub mod json;
pub mod output;

use crate::x509::alg::KeyAlg;

/// The key a cfssl request asks for, as the algorithm the lower layers make.
impl From<csr::KeySpec> for KeyAlg {
    fn from(spec: csr::KeySpec) -> Self {
        match spec {
            csr::KeySpec::Rsa(b) => KeyAlg::Rsa(b as usize),
            csr::KeySpec::EcP256 => KeyAlg::EcP256,
            csr::KeySpec::EcP384 => KeyAlg::EcP384,
        }
    }
}
