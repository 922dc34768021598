//! The `auth_keys` section: cfssl's "standard" HMAC keys, given as hex, `env:VAR` or
//! `file:PATH` (a file only its owner can read), and at least [`MIN_AUTH_KEY_BYTES`] long.

use super::{AuthKey, Ctx};
use crate::error::{Error, Result};

/// The shortest `auth_keys` key accepted: a shorter one can be guessed or searched for.
pub const MIN_AUTH_KEY_BYTES: usize = 16;

/// Read an `auth_keys` key file, which anyone who can read it can use to get certificates, so
/// it must be readable by its owner only (as PIN files should be).
fn read_key_file(path: &str, at: &str) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let cannot =
        |e: std::io::Error| Error::input(format!("{at}.key\": file:{path}: cannot read: {e}"));
    let mode = std::fs::metadata(path)
        .map_err(cannot)?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(Error::input(format!(
            "{at}.key\": file:{path} can be read or written by group or others (mode {:o}); chmod 600 it",
            mode & 0o777
        )));
    }
    std::fs::read_to_string(path).map_err(cannot)
}

impl Ctx<'_> {
    /// Resolve the `auth_keys` entry `name` referred to by `field`: type "standard" only (as
    /// cfssl), the key as hex, `env:VAR` or `file:PATH` (holding hex), and not empty.
    pub(super) fn auth_key(&self, field: &str, name: &str) -> Result<AuthKey> {
        let Some(raw) = self.auth_keys.get(name) else {
            let known: Vec<&str> = self.auth_keys.keys().map(String::as_str).collect();
            return Err(self.field_err(
                field,
                format!(
                    "\"{name}\" is not in the auth_keys section ({})",
                    if known.is_empty() {
                        "which is empty or missing".to_string()
                    } else {
                        format!("it has: {}", known.join(", "))
                    }
                ),
            ));
        };
        let at = format!("{}: field \"auth_keys.{name}", self.file);
        if raw.kind != "standard" {
            return Err(Error::input(format!(
                "{at}.type\": unknown authentication type \"{}\"; only \"standard\" (HMAC-SHA256) exists",
                raw.kind
            )));
        }
        let (text, origin) = if let Some(var) = raw.key.strip_prefix("env:") {
            let v = std::env::var(var).map_err(|_| {
                Error::input(format!(
                    "{at}.key\": env:{var}: the variable {var} is not set"
                ))
            })?;
            (v, format!("env:{var}"))
        } else if let Some(path) = raw.key.strip_prefix("file:") {
            (read_key_file(path, &at)?, format!("file:{path}"))
        } else {
            (raw.key.clone(), "the key".to_string())
        };
        let key = crate::text::unhex(text.trim()).ok_or_else(|| {
            Error::input(format!(
                "{at}.key\": {origin} is not hex; give the shared key as hex digits, env:VAR or file:PATH"
            ))
        })?;
        if key.len() < MIN_AUTH_KEY_BYTES {
            return Err(Error::input(format!(
                "{at}.key\": {origin} is {} bytes; an HMAC key needs at least {MIN_AUTH_KEY_BYTES} (make one with `openssl rand -hex 32`)",
                key.len()
            )));
        }
        Ok(AuthKey {
            name: name.to_string(),
            key,
        })
    }
}
