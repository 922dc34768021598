//! RFC 3339 times (`not_before`, `not_after`), as Go's `time.Time` reads them from JSON.

use der::DateTime;

/// RFC 3339 (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, as Go's `time.Time` JSON) to Unix seconds.
/// A fraction is truncated: certificates carry whole seconds.
pub(super) fn parse_rfc3339(s: &str) -> std::result::Result<i64, String> {
    let num = |from: usize, to: usize| -> Option<u32> {
        let t = s.get(from..to)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let sep = |at: usize, c: u8| s.as_bytes().get(at) == Some(&c);
    let shape = s.len() >= 20
        && sep(4, b'-')
        && sep(7, b'-')
        && sep(10, b'T')
        && sep(13, b':')
        && sep(16, b':');
    let fields = (
        num(0, 4),
        num(5, 7),
        num(8, 10),
        num(11, 13),
        num(14, 16),
        num(17, 19),
    );
    let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(sec)) = fields else {
        return Err("not an RFC 3339 time".into());
    };
    if !shape {
        return Err("not an RFC 3339 time".into());
    }
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        let n = r.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return Err("a '.' must be followed by fractional seconds".into());
        }
        rest = &r[n..];
    }
    let offset = offset_secs(rest)?;
    let narrow = |v: u32| u8::try_from(v).unwrap_or(u8::MAX);
    let dt = DateTime::new(
        y as u16,
        narrow(mo),
        narrow(d),
        narrow(h),
        narrow(mi),
        narrow(sec),
    )
    .map_err(|_| "not a valid date and time between 1970 and 9999".to_string())?;
    let unix = dt.unix_duration().as_secs() as i64 - offset;
    if unix < 0 {
        return Err("dates before 1970 are not supported".into());
    }
    Ok(unix)
}

/// The zone of an RFC 3339 time (`Z` or `±hh:mm`) in seconds east of UTC.
fn offset_secs(rest: &str) -> std::result::Result<i64, String> {
    const ZONE: &str = "the time zone must be \"Z\" or an offset such as \"+08:00\"";
    if rest == "Z" {
        return Ok(0);
    }
    let b = rest.as_bytes();
    let sign = match b.first() {
        Some(b'+') => 1,
        Some(b'-') => -1,
        _ => return Err(ZONE.into()),
    };
    let digits = |from: usize, to: usize| {
        rest.get(from..to)
            .filter(|t| t.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|t| t.parse::<i64>().ok())
    };
    match (digits(1, 3), digits(4, 6), b.len() == 6 && b[3] == b':') {
        (Some(hh), Some(mm), true) if hh > 23 || mm > 59 => {
            Err("time zone offset out of range".into())
        }
        (Some(hh), Some(mm), true) => Ok(sign * (hh * 3600 + mm * 60)),
        _ => Err(ZONE.into()),
    }
}
