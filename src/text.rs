//! Text helpers shared by the CLI and the server.

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

#[cfg(test)]
mod tests {
    use super::escape_for_log;

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
