//! Getting the user PIN without ever putting it in argv, logs or error messages.
//!
//! Order: `--pin-source` (`file:PATH` or `env:VAR`), then the URI's `pin-source`, then its
//! `pin-value` (with a warning), then `P11CA_PIN`, then a no-echo prompt when stdin is a TTY.
//! The PIN is held in zeroizing memory (`AuthPin` is a `secrecy::SecretString`).

use std::io::IsTerminal;
use std::os::unix::fs::PermissionsExt;
use std::sync::Mutex;

use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::sync::lock;
use crate::token::uri::Pkcs11Uri;

/// Where the PIN came from, for messages (never the PIN itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinOrigin {
    /// A file.
    File(String),
    /// An environment variable.
    Env(String),
    /// The URI's pin-value.
    UriValue,
    /// A terminal prompt.
    Prompt,
}

/// `P11CA_PIN` as the program took it out of its environment at start (see
/// [`keep_environment_pin`]).
static ENVIRONMENT_PIN: Mutex<Option<Zeroizing<String>>> = Mutex::new(None);

/// Keep `P11CA_PIN`'s value for [`resolve`] after the program removed the variable from its
/// environment, where `/proc/PID/environ`, child processes and core dumps would show it.
/// Library users who never call this get the variable read as it is.
pub fn keep_environment_pin(pin: Zeroizing<String>) {
    *lock(&ENVIRONMENT_PIN) = Some(pin);
}

fn environment_pin() -> Option<Zeroizing<String>> {
    if let Some(pin) = lock(&ENVIRONMENT_PIN).as_ref() {
        return Some(pin.clone());
    }
    std::env::var_os("P11CA_PIN").map(|v| Zeroizing::new(v.to_string_lossy().into_owned()))
}

/// Resolve the PIN. `warnings` receives notes such as a world-readable PIN file.
pub fn resolve(
    flag: Option<&str>,
    uri: Option<&Pkcs11Uri>,
    token_label: &str,
    warnings: &mut Vec<String>,
) -> Result<(AuthPin, PinOrigin)> {
    if let Some(src) = flag {
        return from_source(src, "--pin-source", warnings);
    }
    if let Some(src) = uri.and_then(|u| u.pin_source.as_deref()) {
        return from_source(src, "the URI's pin-source", warnings);
    }
    if let Some(v) = uri.and_then(|u| u.pin_value.as_ref()) {
        warnings.push(
            "the PIN was given as pin-value in a URI, where shell history and process lists can see it; prefer pin-source=file:… or P11CA_PIN".into(),
        );
        return Ok((AuthPin::from(v.as_str().to_string()), PinOrigin::UriValue));
    }
    if let Some(v) = environment_pin() {
        return Ok((
            AuthPin::from(v.as_str().to_string()),
            PinOrigin::Env("P11CA_PIN".into()),
        ));
    }
    if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        let pin = rpassword::prompt_password(format!("PIN for token \"{token_label}\": "))
            .map(Zeroizing::new)
            .map_err(|e| Error::input(format!("cannot read the PIN from the terminal: {e}")))?;
        return Ok((AuthPin::from(pin.as_str().to_string()), PinOrigin::Prompt));
    }
    Err(Error::input(format!(
        "no PIN for token \"{token_label}\": set P11CA_PIN, or pass --pin-source file:PATH or env:VAR (this run is not interactive, so p11ca cannot prompt)"
    )))
}

fn from_source(src: &str, what: &str, warnings: &mut Vec<String>) -> Result<(AuthPin, PinOrigin)> {
    if let Some(var) = src.strip_prefix("env:") {
        let v = match (var == "P11CA_PIN").then(environment_pin).flatten() {
            Some(kept) => kept,
            None => {
                let v = std::env::var_os(var).ok_or_else(|| {
                    Error::input(format!("{what} env:{var}: the variable {var} is not set"))
                })?;
                Zeroizing::new(v.to_string_lossy().into_owned())
            }
        };
        return Ok((
            AuthPin::from(v.as_str().to_string()),
            PinOrigin::Env(var.into()),
        ));
    }
    let path = src.strip_prefix("file:").unwrap_or(src);
    if src.starts_with('|') {
        return Err(Error::input(format!(
            "{what} \"{src}\": running a command for the PIN is not supported; use file:PATH or env:VAR"
        )));
    }
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::input(format!("{what} file:{path}: cannot read the PIN file: {e}")))?;
    if meta.permissions().mode() & 0o044 != 0 {
        warnings.push(format!(
            "PIN file {path} is readable by group or others (mode {:o}); chmod 600 it",
            meta.permissions().mode() & 0o777
        ));
    }
    let bytes =
        Zeroizing::new(std::fs::read(path).map_err(|e| {
            Error::input(format!("{what} file:{path}: cannot read the PIN file: {e}"))
        })?);
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        Error::input(format!(
            "{what} file:{path}: the PIN file is not UTF-8 text"
        ))
    })?;
    // Files usually end with a newline that is not part of the PIN.
    let pin = text.trim_end_matches(['\n', '\r']);
    if pin.is_empty() {
        return Err(Error::input(format!(
            "{what} file:{path}: the PIN file is empty"
        )));
    }
    Ok((AuthPin::from(pin.to_string()), PinOrigin::File(path.into())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn file_source_trims_newline_and_warns_on_mode() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pin");
        std::fs::write(&p, "1234\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut w = Vec::new();
        let src = format!("file:{}", p.display());
        let (pin, origin) = resolve(Some(&src), None, "t", &mut w).unwrap();
        assert_eq!(pin.expose_secret(), "1234");
        assert!(matches!(origin, PinOrigin::File(_)));
        assert_eq!(w.len(), 1, "{w:?}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut w = Vec::new();
        resolve(Some(&src), None, "t", &mut w).unwrap();
        assert!(w.is_empty());
    }

    #[test]
    fn missing_file_and_var_are_clear() {
        let mut w = Vec::new();
        let e = resolve(Some("file:/nonexistent/pin"), None, "t", &mut w).unwrap_err();
        assert!(e.message().contains("/nonexistent/pin"), "{e}");
        let e = resolve(Some("env:P11CA_TEST_UNSET_VAR"), None, "t", &mut w).unwrap_err();
        assert!(
            e.message().contains("P11CA_TEST_UNSET_VAR is not set"),
            "{e}"
        );
    }

    #[test]
    fn uri_pin_value_warns() {
        let u = Pkcs11Uri::parse("pkcs11:token=t?pin-value=9876").unwrap();
        let mut w = Vec::new();
        let (pin, _) = resolve(None, Some(&u), "t", &mut w).unwrap();
        assert_eq!(pin.expose_secret(), "9876");
        assert!(w[0].contains("pin-value"));
        assert!(!w[0].contains("9876"));
    }
}
