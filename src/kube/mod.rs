//! kubeadm's PKI with the CA keys in the token: kubeadm's configuration file ([`config`]), its
//! certificate and kubeconfig table ([`pki`]), the external-CA layout ([`certs`]), files
//! already on disk checked against the table ([`check`]), kubeconfigs ([`kubeconfig`]) and
//! kubeadm's own CSRs signed ([`csrs`]). Uses `ca`, `token`, `x509`, `cfssl` and `fsio`; the
//! top of the library (nothing uses it but the CLI).

pub mod certs;
pub mod check;
pub mod config;
pub mod csrs;
pub mod kubeconfig;
pub mod pki;
