//! `p11ca key openssl-conf HANDLE`: an OpenSSL configuration with which OpenSSL's pkcs11
//! engine signs with the key, loading the same module p11ca uses (not the p11-kit proxy it
//! falls back to) and asking for the PIN on the terminal, so the PIN is in no file and no
//! argument.

use p11ca::Result;

use super::args::TokenArgs;
use super::sign::ca_key_uri;
use super::{open_module, write_stdout};

/// The file name the printed command expects the configuration under.
const CONF_NAME: &str = "openssl-pkcs11.cnf";

pub(super) fn openssl_conf(targs: &TokenArgs, handle: &str) -> Result<()> {
    let uri = ca_key_uri(handle)?;
    // The module p11ca would use for this handle, checked to hold its token.
    let (module, token, _) = open_module(targs, Some(&uri))?;
    let key = if handle.starts_with("pkcs11:") {
        format!("'{uri}'")
    } else {
        let file = handle.strip_prefix("file:").unwrap_or(handle);
        format!("\"$(cat {file})\"")
    };
    let module_path = module.path().display().to_string();
    let label = token.label;
    let text = format!(
        "# OpenSSL configuration for the key {uri}, written by p11ca key openssl-conf.
# Save it as {CONF_NAME}. It needs OpenSSL's pkcs11 engine (Debian: libengine-pkcs11-openssl),
# which loads the module below directly, not through the p11-kit proxy. The engine asks for
# the PIN of token \"{label}\" on the terminal (\"Enter PKCS#11 token PIN for {label}:\"), so
# the PIN is in no file and no argument. Sign a CSR with the key:
#   OPENSSL_CONF={CONF_NAME} openssl x509 -req -engine pkcs11 -CAkeyform engine -CAkey {key} -CA ca.pem -in node.csr -copy_extensions copy -days 365 -out node.pem
openssl_conf = p11ca_openssl_init

[p11ca_openssl_init]
engines = p11ca_engines

[p11ca_engines]
pkcs11 = p11ca_pkcs11

[p11ca_pkcs11]
engine_id = pkcs11
MODULE_PATH = {module_path}
init = 0
"
    );
    write_stdout(&text)
}
