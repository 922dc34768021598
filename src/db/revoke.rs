//! What `revoke` takes: serial numbers and key identifiers in the forms cfssl stores them, and
//! what a revocation did.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::text;

/// What [`super::Store::revoke`] did to one certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum RevokeOutcome {
    /// It was good and is now revoked.
    Revoked,
    /// It was already revoked for the same reason; nothing changed.
    AlreadyRevoked,
}

/// A serial number as cfssl's certdb stores it: decimal, no leading zeros. Decimal is taken as
/// it is (cfssl's `-serial`); hex is accepted only when it cannot be mistaken for decimal:
/// with a `0x` prefix or with colons (`01:a2:…`, as OpenSSL prints it).
pub fn parse_serial(s: &str) -> Result<String> {
    let t = s.trim();
    let bad = || {
        Error::input(format!(
            "serial \"{}\" is not a serial number; give it in decimal (as cfssl and `p11ca certinfo` show it) or as hex with 0x or colons",
            text::escape_for_log(&t.chars().take(80).collect::<String>())
        ))
    };
    let hex = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .map(str::to_string)
        .or_else(|| t.contains(':').then(|| t.replace(':', "")));
    let bytes = match hex {
        Some(h) if !h.is_empty() && h.len() <= 80 => {
            let padded = if h.len() % 2 == 1 { format!("0{h}") } else { h };
            text::unhex(&padded).ok_or_else(bad)?
        }
        Some(_) => return Err(bad()),
        None => text::from_decimal(t).ok_or_else(bad)?,
    };
    let significant: Vec<u8> = bytes.into_iter().skip_while(|b| *b == 0).collect();
    if significant.is_empty() || significant.len() > 20 {
        return Err(bad());
    }
    Ok(text::decimal(&significant))
}

/// An authority key identifier as cfssl's certdb stores it: lowercase hex without colons.
/// Upper case and colons (as OpenSSL prints it) are accepted and normalized.
pub fn parse_aki(s: &str) -> Result<String> {
    let t = s.trim().replace(':', "").to_ascii_lowercase();
    if t.is_empty() || t.len() > 128 || text::unhex(&t).is_none() {
        return Err(Error::input(format!(
            "AKI \"{}\" is not a key identifier; give the CA's key identifier in hex (as `openssl x509 -noout -ext authorityKeyIdentifier` or `p11ca certinfo` shows it)",
            text::escape_for_log(&s.chars().take(80).collect::<String>())
        )));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_in_cfssl_form() {
        assert_eq!(parse_serial("256").unwrap(), "256");
        assert_eq!(parse_serial("000256").unwrap(), "256");
        assert_eq!(parse_serial("0x100").unwrap(), "256");
        assert_eq!(parse_serial("01:00").unwrap(), "256");
        for bad in ["", "0", "abc", "12a", "-5", "0x", "0xzz", &"9".repeat(60)] {
            assert!(parse_serial(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn akis_in_cfssl_form() {
        assert_eq!(parse_aki("AB:cd:01").unwrap(), "abcd01");
        for bad in ["", "abc", "xyz0", "ab cd"] {
            assert!(parse_aki(bad).is_err(), "{bad}");
        }
    }
}
