//! The CA workflows, tying the token, X.509 building and cfssl's formats together: making a
//! CA ([`init`], `gencert -initca`), issuing one certificate ([`issue`]) and many at the
//! token's speed ([`batch`]), and re-issuing a CA certificate around its key ([`renew`]).
//! Uses `token`, `x509` and `cfssl`; must not use the server, the client, the store or the
//! CLI.

pub mod batch;
pub mod init;
pub mod issue;
pub mod ocsp;
pub mod renew;
