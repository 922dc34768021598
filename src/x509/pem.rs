//! Reading PEM the way Go's `pem.Decode` does (and so cfssl and OpenSSL users expect):
//! explanatory text before the block (as `openssl x509 -text` writes) is skipped, any line
//! length and CRLF are fine, and a file holding several objects where one is expected is a
//! clear error instead of a base64 complaint.

use crate::error::{Error, Result};

/// DER from PEM (the first block, which must carry one of `labels`) or from raw DER input.
pub fn read_der(input: &[u8], source: &str, labels: &[&str], what: &str) -> Result<Vec<u8>> {
    if input.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::input(format!(
            "{source}: is empty; expected a PEM or DER {what}"
        )));
    }
    let Some(begin) = find(input, b"-----BEGIN ") else {
        if input.first() == Some(&0x30) {
            return Ok(input.to_vec());
        }
        return Err(Error::input(format!("{source}: not a PEM or DER {what}")));
    };
    let (label, der, rest) = pem_block(&input[begin..])
        .map_err(|why| Error::input(format!("{source}: invalid PEM: {why}")))?;
    if !labels.contains(&label.as_str()) {
        let hint = match (label.contains("REQUEST"), what) {
            (true, "certificate") => " (this is a CSR, not a certificate)",
            (false, "certificate request") if label.contains("CERTIFICATE") => {
                " (this is a certificate, not a CSR)"
            }
            _ => "",
        };
        return Err(Error::input(format!(
            "{source}: the PEM block is \"{label}\", expected \"{}\"{hint}",
            labels[0]
        )));
    }
    if find(rest, b"-----BEGIN ").is_some() {
        return Err(Error::input(format!(
            "{source}: the PEM file should contain only one object; give one {what} per file"
        )));
    }
    Ok(der)
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Decode one PEM block starting at `-----BEGIN `; returns its label, its bytes and the rest of
/// the input. Lenient like Go's `pem.Decode`: any line length, CRLF, RFC 1421 headers.
pub(crate) fn pem_block(input: &[u8]) -> std::result::Result<(String, Vec<u8>, &[u8]), String> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let line_end = |b: &[u8]| b.iter().position(|&c| c == b'\n').unwrap_or(b.len());
    let first = &input[..line_end(input)];
    let first = first.strip_suffix(b"\r").unwrap_or(first);
    let label = first
        .strip_prefix(b"-----BEGIN ")
        .and_then(|l| l.strip_suffix(b"-----"))
        .ok_or_else(|| format!("malformed BEGIN line \"{}\"", text(first)))?;
    let label = text(label);
    let end_marker = format!("-----END {label}-----");
    let body = input.get(line_end(input) + 1..).unwrap_or_default();
    let end =
        find(body, end_marker.as_bytes()).ok_or_else(|| format!("no \"{end_marker}\" line"))?;
    let rest = &body[end + end_marker.len()..];
    let mut b64 = &body[..end];
    // RFC 1421 headers ("Proc-Type: ...") end at a blank line.
    if b64
        .split(|&c| c == b'\n')
        .next()
        .is_some_and(|l| l.contains(&b':'))
    {
        let blank = find(b64, b"\n\n")
            .map(|i| i + 2)
            .or_else(|| find(b64, b"\n\r\n").map(|i| i + 3))
            .ok_or("PEM headers without a blank line after them")?;
        b64 = &b64[blank..];
    }
    let der = base64_decode(b64).map_err(|why| format!("{why} in the \"{label}\" block"))?;
    if der.is_empty() {
        return Err(format!("the \"{label}\" block is empty"));
    }
    Ok((label, der, rest))
}

/// Standard base64 with optional padding; whitespace is ignored.
pub(crate) fn base64_decode(s: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits, mut n, mut padding) = (0u32, 0u32, 0usize, 0usize);
    for &c in s {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                padding += 1;
                continue;
            }
            c if c.is_ascii_whitespace() => continue,
            c => return Err(format!("invalid base64 character {:?}", c as char)),
        };
        if padding > 0 {
            return Err("base64 data after padding".into());
        }
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        n += 1;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if n % 4 == 1 || padding > 2 || (padding > 0 && !(n + padding).is_multiple_of(4)) {
        return Err("truncated base64".into());
    }
    Ok(out)
}
