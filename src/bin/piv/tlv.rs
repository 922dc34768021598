//! BER-TLV as PIV uses it (NIST SP 800-73-4 part 2, §3.3): one- or two-byte tags written
//! out by the caller, definite lengths in short form or as 81 xx / 82 xx xx.

/// `tag ‖ length ‖ value`, with a one- or two-byte `tag`.
pub(crate) fn tlv(tag: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = tag.to_vec();
    out.extend(len(value.len()));
    out.extend_from_slice(value);
    out
}

/// The BER encoding of a length.
pub(crate) fn len(n: usize) -> Vec<u8> {
    match n {
        0..=0x7f => vec![n as u8],
        0x80..=0xff => vec![0x81, n as u8],
        _ => vec![0x82, (n >> 8) as u8, n as u8],
    }
}

/// Split `data` into (tag, value) pairs. Tags are one byte, except the two-byte ones whose
/// first byte has the low five bits set (5F.., 7F..). `None` when a length runs past the end.
pub(crate) fn parse(mut data: &[u8]) -> Option<Vec<(u16, &[u8])>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let (tag, rest) = if data[0] & 0x1f == 0x1f {
            (u16::from_be_bytes([data[0], *data.get(1)?]), &data[2..])
        } else {
            (u16::from(data[0]), &data[1..])
        };
        let (n, rest) = match *rest.first()? {
            0x81 => (usize::from(*rest.get(1)?), rest.get(2..)?),
            0x82 => (
                usize::from(u16::from_be_bytes([*rest.get(1)?, *rest.get(2)?])),
                rest.get(3..)?,
            ),
            b if b < 0x80 => (usize::from(b), &rest[1..]),
            _ => return None,
        };
        out.push((tag, rest.get(..n)?));
        data = &rest[n..];
    }
    Some(out)
}

/// The value of the first `tag` in `data`.
pub(crate) fn find(data: &[u8], tag: u16) -> Option<&[u8]> {
    parse(data)?
        .into_iter()
        .find(|(t, _)| *t == tag)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let long = vec![7u8; 300];
        let mut d = tlv(&[0x5c], &[0x5f, 0xc1, 0x0a]);
        d.extend(tlv(&[0x53], &long));
        d.extend(tlv(&[0x7f, 0x49], &[1, 2]));
        let p = parse(&d).unwrap();
        assert_eq!(p[0], (0x5c, &[0x5f, 0xc1, 0x0a][..]));
        assert_eq!(p[1].1.len(), 300);
        assert_eq!(p[2], (0x7f49, &[1, 2][..]));
        assert!(parse(&[0x53, 0x05, 1]).is_none());
    }
}
