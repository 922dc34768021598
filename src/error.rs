//! One error type for the whole library.
//!
//! Every error carries a [`Kind`] (which decides the process exit code) and a single-line message
//! that says what went wrong, naming the file, field or URI involved, and what to do about it.
//! The CLI prints it as one line on stderr; nothing else is printed on failure.
//!
//! Layer: the bottom; it uses nothing of the crate.

use std::fmt;

/// What class of failure this is; each maps to a documented exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// Bad command line or bad input file (JSON, CSR, duration, URI): exit 1.
    Input,
    /// The PKCS#11 module or token failed or refused (module load, login, key lookup, C_Sign): exit 2.
    Token,
    /// The request is well-formed but p11ca's policy refuses it (unknown profile, CA cert/key mismatch): exit 3.
    Policy,
    /// Writing an output file failed: exit 4.
    Output,
    /// A signature returned by the token did not verify: exit 5. Nothing was written.
    Verify,
    /// `certs list --check` found certificates that expire within the window: exit 6.
    Expiring,
}

impl Kind {
    /// Every kind, in exit-code order (the CLI's `--help` lists them; a test checks it).
    pub const ALL: [Kind; 6] = [
        Kind::Input,
        Kind::Token,
        Kind::Policy,
        Kind::Output,
        Kind::Verify,
        Kind::Expiring,
    ];

    /// The process exit code for this kind (documented in the README). The one place exit
    /// codes are defined.
    pub fn exit_code(self) -> u8 {
        match self {
            Kind::Input => 1,
            Kind::Token => 2,
            Kind::Policy => 3,
            Kind::Output => 4,
            Kind::Verify => 5,
            Kind::Expiring => 6,
        }
    }
}

/// What a token failure means for retrying (set on token errors only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenFault {
    /// The session or token went away (CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED,
    /// CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT): reopening may help.
    Stale,
    /// Stale, and it happened in C_Sign: the token may have made the signature, so the
    /// operation must not be repeated blindly.
    StaleDuringSign,
    /// The token dropped the login (CKR_USER_NOT_LOGGED_IN: it was reset, or every session was
    /// closed): it refused to sign, so logging in again and retrying is safe.
    LoggedOut,
    /// C_SignInit refused the key's object handle (CKR_OBJECT_HANDLE_INVALID,
    /// CKR_KEY_HANDLE_INVALID): nothing was signed; the key may be found again by its URI (a
    /// token hands out new handles after a new login), or it was deleted.
    KeyHandleInvalid,
}

/// A p11ca error: a kind and a one-line, self-explaining message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    kind: Kind,
    message: String,
    fault: Option<TokenFault>,
}

impl Error {
    /// An error of the given kind.
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        let message: String = message.into();
        // One line on stderr, whatever a token or parser put into its text.
        let message = message.replace(['\n', '\r'], " ");
        Self {
            kind,
            message,
            fault: None,
        }
    }

    /// Mark a token error with what it means for retrying.
    pub fn with_fault(mut self, fault: TokenFault) -> Self {
        self.fault = Some(fault);
        self
    }

    /// The retry meaning of a token error, if any.
    pub fn fault(&self) -> Option<TokenFault> {
        self.fault
    }

    /// Bad input (exit 1).
    pub fn input(message: impl Into<String>) -> Self {
        Self::new(Kind::Input, message)
    }

    /// Token or module failure (exit 2).
    pub fn token(message: impl Into<String>) -> Self {
        Self::new(Kind::Token, message)
    }

    /// Policy refusal (exit 3).
    pub fn policy(message: impl Into<String>) -> Self {
        Self::new(Kind::Policy, message)
    }

    /// Output failure (exit 4).
    pub fn output(message: impl Into<String>) -> Self {
        Self::new(Kind::Output, message)
    }

    /// Signature verification failure (exit 5).
    pub fn verify(message: impl Into<String>) -> Self {
        Self::new(Kind::Verify, message)
    }

    /// The kind of this error.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The message without the kind.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefix the message with context such as a file name (`ca-csr.json: ...`).
    pub fn context(mut self, prefix: impl fmt::Display) -> Self {
        self.message = format!("{prefix}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Result with the p11ca error.
pub type Result<T> = std::result::Result<T, Error>;

/// Describe a `der` encoding error in words (used where we encode our own structures).
pub(crate) fn der_err(what: &str, e: der::Error) -> Error {
    Error::input(format!("cannot encode {what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_is_one_line() {
        let e = Error::token("first\nsecond\r\nthird").context("pkcs11:token=x");
        assert_eq!(e.to_string(), "pkcs11:token=x: first second  third");
        assert_eq!(e.kind().exit_code(), 2);
    }
}
