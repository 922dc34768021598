//! The CA workflows, tying the token, X.509 building and cfssl's formats together: making a
//! CA ([`init`], `gencert -initca`), issuing one certificate ([`issue`]) and many at the
//! token's speed ([`batch`]), re-issuing a CA certificate around its key ([`renew`]), a
//! certificate for a key made in the token ([`token_leaf`], `gencert -ca --key-in-token`) and
//! OCSP responses signed by the CA's or a delegated responder's key ([`ocsp`]).
//! Uses `token`, `x509` and `cfssl`; must not use the server, the client, the store or the
//! CLI.

pub mod batch;
pub mod init;
pub mod issue;
pub mod ocsp;
pub mod renew;
pub mod token_leaf;
