//! Text that came from outside (a request, a certificate, the store) made safe to print on a
//! terminal or into a log line: a subject or SAN holding a newline, a tab or an escape sequence
//! must not forge a row, a column or terminal output.

use std::borrow::Cow;
use std::fmt::Write;

/// `s` with every control character (C0, DEL, C1), and the bidirectional overrides that
/// reorder what a reader sees, written as an escape (`\n`, `\t`, `\x1b`, `\u{202e}`).
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x100 && needs_escape(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn controls_and_overrides_are_escaped() {
        for (raw, shown) in [
            ("node1.example.com", "node1.example.com"),
            ("a\nfake row", "a\\nfake row"),
            ("a\r\tb", "a\\r\\tb"),
            ("\u{1b}[2Jcleared", "\\x1b[2Jcleared"),
            ("nul\0x", "nul\\x00x"),
            ("c1\u{9b}31m", "c1\\x9b31m"),
            ("moc.\u{202e}evil", "moc.\\u{202e}evil"),
            ("CN=Zoë", "CN=Zoë"),
        ] {
            assert_eq!(printable(raw), shown, "{raw:?}");
        }
    }
}
