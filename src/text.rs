//! Text helpers for the whole crate: untrusted text made safe for logs and terminals, hex,
//! and big integers in decimal. Depends on nothing of the crate.

use std::fmt::Write;

/// `s` made safe to print on one log line or terminal row: control characters (newline, CR,
/// ESC, DEL, C1), Unicode line/paragraph separators and bidirectional or invisible formatting
/// characters are written as escapes (`\n`, `\r`, `\t`, `\x1b`, `\u{202e}`), and a backslash
/// as `\\` so that an escape in the output always came from this function. Everything else,
/// including non-ASCII text, is kept as it is.
pub fn escape_for_log(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 && c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() || is_invisible_format(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// Characters that change how a line is displayed without being visible themselves: zero
/// widths, bidirectional overrides and isolates, line and paragraph separators, BOM.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2069}'
            | '\u{feff}'
            | '\u{061c}'
    )
}

/// Bytes as lowercase hex.
pub fn hex(b: &[u8]) -> String {
    base16ct::lower::encode_string(b)
}

/// Hex (either case) as bytes; `None` unless it is an even number of hex digits.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    base16ct::mixed::decode_vec(s).ok()
}

/// A big-endian unsigned integer in decimal.
pub fn decimal(be: &[u8]) -> String {
    let mut digits: Vec<u8> = Vec::new(); // little-endian base-10 digits
    for &byte in be {
        let mut carry = byte as u32;
        for d in digits.iter_mut() {
            let v = (*d as u32) * 256 + carry;
            *d = (v % 10) as u8;
            carry = v / 10;
        }
        while carry > 0 {
            digits.push((carry % 10) as u8);
            carry /= 10;
        }
    }
    if digits.is_empty() {
        return "0".into();
    }
    digits.iter().rev().map(|d| char::from(b'0' + d)).collect()
}

/// The big-endian unsigned integer a string of decimal digits spells, without leading zero
/// octets (`[]` for 0); `None` for anything but 1 to 100 ASCII digits.
pub fn from_decimal(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() || s.len() > 100 || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let mut be: Vec<u8> = Vec::new();
    for digit in s.bytes().map(|c| u32::from(c - b'0')) {
        let mut carry = digit;
        for byte in be.iter_mut().rev() {
            let v = u32::from(*byte) * 10 + carry;
            *byte = (v & 0xff) as u8;
            carry = v >> 8;
        }
        if carry > 0 {
            be.insert(0, carry as u8);
        }
    }
    Some(be)
}

#[cfg(test)]
mod tests {
    use super::{decimal, escape_for_log, from_decimal, hex, unhex};

    #[test]
    fn decimal_round_trips() {
        assert_eq!(from_decimal("0"), Some(vec![]));
        assert_eq!(from_decimal("255"), Some(vec![0xff]));
        assert_eq!(from_decimal("256"), Some(vec![1, 0]));
        let big = "1461501637330902918203684832716283019655932542975";
        assert_eq!(from_decimal(big), Some(vec![0xff; 20]));
        for s in ["1", "10", "65535", "4294967296", big] {
            assert_eq!(decimal(&from_decimal(s).unwrap()), s);
        }
        for bad in ["", "-1", "12a", "0x10", " 1", &"9".repeat(101)] {
            assert_eq!(from_decimal(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn decimal_serials() {
        assert_eq!(decimal(&[]), "0");
        assert_eq!(decimal(&[0]), "0");
        assert_eq!(decimal(&[1, 0]), "256");
        assert_eq!(
            decimal(&[0xff; 20]),
            "1461501637330902918203684832716283019655932542975"
        );
    }

    #[test]
    fn hex_both_ways() {
        assert_eq!(hex(&[0x01, 0xab]), "01ab");
        assert_eq!(unhex("01AB"), Some(vec![0x01, 0xab]));
        assert_eq!(unhex("01a"), None);
        assert_eq!(unhex("0g"), None);
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            escape_for_log("a\nb\rc\td\x1b[31me\x7f\u{0}"),
            "a\\nb\\rc\\td\\x1b[31me\\x7f\\x00"
        );
        assert_eq!(escape_for_log("x\u{85}y\u{9b}"), "x\\u{85}y\\u{9b}");
        assert_eq!(
            escape_for_log("evil\u{202e}txt.exe\u{2028}"),
            "evil\\u{202e}txt.exe\\u{2028}"
        );
        assert_eq!(escape_for_log(r"C:\x1b"), r"C:\\x1b");
    }

    #[test]
    fn ordinary_text_is_kept() {
        for s in [
            "",
            "node-1.example.com",
            "Zürich Ωmega 東京",
            "CN=a, O=b/c \"q\"",
        ] {
            assert_eq!(escape_for_log(s), s);
        }
    }
}
