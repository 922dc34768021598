//! Times as cfssl's certdb holds them in SQLite: Go's sqlite driver writes a `time.Time` as
//! `YYYY-MM-DD HH:MM:SS[.fffffffff]+00:00`, and SQLite's `CURRENT_TIMESTAMP` (which cfssl's
//! revoke uses) as `YYYY-MM-DD HH:MM:SS`. Both sort as text, which cfssl's `CURRENT_TIMESTAMP
//! < expiry` queries rely on. The calendar arithmetic is `der::DateTime`'s.

use std::time::Duration;

/// Go's zero time as cfssl stores an unset `revoked_at`.
pub(super) const ZERO: &str = "0001-01-01 00:00:00+00:00";

/// Unix seconds in Go's driver form, whole seconds, UTC. Times der cannot hold (before 1970,
/// after 9999) are clamped to its range.
pub(super) fn format(unix: i64) -> String {
    let secs = unix.clamp(0, 253_402_300_799) as u64;
    match der::DateTime::from_unix_duration(Duration::from_secs(secs)) {
        Ok(d) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}+00:00",
            d.year(),
            d.month(),
            d.day(),
            d.hour(),
            d.minutes(),
            d.seconds()
        ),
        Err(_) => ZERO.to_string(),
    }
}

/// Unix seconds of a stored time in any of the forms Go's driver reads back (`T` or space,
/// optional fraction, `Z`, `+HH:MM`, `-HH:MM` or no zone meaning UTC); `None` for Go's zero
/// time, anything before 1970 and text that is not a time.
pub(super) fn parse(s: &str) -> Option<i64> {
    let b = s.trim().as_bytes();
    if b.len() < 19 || !matches!(b[10], b' ' | b'T') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        std::str::from_utf8(&b[r]).ok()?.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let dt = der::DateTime::new(y as u16, mo as u8, d as u8, h as u8, mi as u8, se as u8).ok()?;
    let mut rest = &b[19..];
    if let Some(r) = rest.strip_prefix(b".") {
        let n = r.iter().take_while(|c| c.is_ascii_digit()).count();
        rest = &r[n..];
    }
    let offset = match rest {
        [] | [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hm = std::str::from_utf8(&[*h1, *h2, *m1, *m2])
                .ok()?
                .parse::<i64>()
                .ok()?;
            let secs = (hm / 100) * 3600 + (hm % 100) * 60;
            if *sign == b'+' { secs } else { -secs }
        }
        _ => return None,
    };
    Some(dt.unix_duration().as_secs() as i64 - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_driver_forms_round_trip() {
        assert_eq!(format(1_796_225_580), "2026-12-02 15:33:00+00:00");
        assert_eq!(parse("2026-12-02 15:33:00+00:00"), Some(1_796_225_580));
        assert_eq!(parse("2026-12-02 15:33:00"), Some(1_796_225_580));
        assert_eq!(parse("2026-12-02T15:33:00.699064322Z"), Some(1_796_225_580));
        assert_eq!(parse("2026-12-02 16:33:00.5+01:00"), Some(1_796_225_580));
        assert_eq!(parse(ZERO), None);
        assert_eq!(parse("yesterday"), None);
        assert_eq!(parse("2026-12-02 15:33:00 junk"), None);
    }
}
