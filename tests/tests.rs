//! Integration tests: the p11ca binary against a fresh SoftHSM2 token per test, with outputs
//! checked by independent tools (OpenSSL, OpenSC's pkcs11-tool, cfssl's cfssljson).

mod util;

mod backends;
mod bad_input;
mod cli;
mod crl;
mod hygiene;
mod initca;
mod json;
mod p11kit;
mod piv;
mod policy;
mod security;
mod serve;
mod serve_hostile;
mod sign;
mod tokens;
