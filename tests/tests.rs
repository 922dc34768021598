//! Integration tests: the p11ca binary against a fresh SoftHSM2 token per test, with outputs
//! checked by independent tools (OpenSSL, OpenSC's pkcs11-tool, cfssl's cfssljson).

mod util;

mod audit;
mod backends;
mod bad_input;
mod batch;
mod cli;
mod crl;
mod hygiene;
mod initca;
mod json;
mod kubeadm;
mod lifecycle;
mod ocsp;
mod p11kit;
mod piv;
mod policy;
mod security;
mod serve;
mod serve_hostile;
mod serve_revoke;
mod sign;
mod store;
mod tokens;
