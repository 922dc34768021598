//! Go's `time.ParseDuration` syntax, which cfssl uses for `expiry` and `backdate`.
//!
//! `8760h`, `1h30m`, `1.5h`, `90s`, `-1h` parse; `1y`, `365d` and a bare `3600` do not, and the
//! error says to write the period in hours, since that is what cfssl users get wrong most.

use std::fmt;

/// A signed duration as Go would parse it, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GoDuration(i128);

const HINT: &str = "use Go duration syntax with units h, m, s (e.g. \"8760h\" for a year, \"43800h\" for five years)";

impl GoDuration {
    /// Parse a duration string as Go's `time.ParseDuration` does.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = |why: String| format!("invalid duration \"{s}\": {why}; {HINT}");
        let mut rest = s;
        let mut negative = false;
        if let Some(r) = rest.strip_prefix('-') {
            negative = true;
            rest = r;
        } else if let Some(r) = rest.strip_prefix('+') {
            rest = r;
        }
        if rest == "0" {
            return Ok(Self(0));
        }
        if rest.is_empty() {
            return Err(bad("empty".into()));
        }
        let mut total: i128 = 0;
        while !rest.is_empty() {
            let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            let (int_part, r) = rest.split_at(int_len);
            let (frac_part, r) = match r.strip_prefix('.') {
                Some(r2) => {
                    let n = r2.bytes().take_while(u8::is_ascii_digit).count();
                    r2.split_at(n)
                }
                None => ("", r),
            };
            if int_part.is_empty() && frac_part.is_empty() {
                return Err(bad("expected a number".into()));
            }
            let unit_len = r
                .char_indices()
                .find(|(_, c)| c.is_ascii_digit() || *c == '.')
                .map_or(r.len(), |(i, _)| i);
            let (unit, r) = r.split_at(unit_len);
            let per_unit: i128 = match unit {
                "ns" => 1,
                "us" | "µs" | "μs" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60 * 1_000_000_000,
                "h" => 3_600 * 1_000_000_000,
                "" => return Err(bad("missing unit".into())),
                other => return Err(bad(format!("unknown unit \"{other}\""))),
            };
            let int: i128 = if int_part.is_empty() {
                0
            } else {
                int_part
                    .parse()
                    .map_err(|_| bad("number too large".into()))?
            };
            let mut value = int
                .checked_mul(per_unit)
                .ok_or_else(|| bad("too large".into()))?;
            if !frac_part.is_empty() {
                // Scale the fraction digit by digit, as Go does, truncating below 1ns.
                let mut scale = per_unit;
                for d in frac_part.bytes().take(30) {
                    scale /= 10;
                    // Checked: a 26-digit hour count plus a fraction can pass i128::MAX.
                    value = value
                        .checked_add(i128::from(d - b'0') * scale)
                        .ok_or_else(|| bad("too large".into()))?;
                }
            }
            total = total
                .checked_add(value)
                .ok_or_else(|| bad("too large".into()))?;
            // Go limits durations to int64 nanoseconds (~292 years).
            if total > i128::from(i64::MAX) {
                return Err(bad("too large (the maximum is about 2562047h)".into()));
            }
            rest = r;
        }
        Ok(Self(if negative { -total } else { total }))
    }

    /// Whole seconds (truncated toward zero).
    pub fn as_secs(self) -> i64 {
        (self.0 / 1_000_000_000) as i64
    }

    /// True for durations below zero.
    pub fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// A duration of whole seconds.
    pub fn from_secs(secs: i64) -> Self {
        Self(i128::from(secs) * 1_000_000_000)
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.as_secs();
        if secs % 3600 == 0 {
            write!(f, "{}h", secs / 3600)
        } else {
            write!(f, "{secs}s")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &str) -> i64 {
        GoDuration::parse(s).unwrap().as_secs()
    }

    #[test]
    fn go_syntax() {
        assert_eq!(secs("8760h"), 8760 * 3600);
        assert_eq!(secs("43800h"), 43800 * 3600);
        assert_eq!(secs("1h30m"), 5400);
        assert_eq!(secs("1.5h"), 5400);
        assert_eq!(secs("90s"), 90);
        assert_eq!(secs("0"), 0);
        assert_eq!(secs("-1h"), -3600);
        assert_eq!(secs("+5m"), 300);
        assert_eq!(secs(".5h"), 1800);
        assert_eq!(secs("1500ms"), 1);
        assert!(GoDuration::parse("-1h").unwrap().is_negative());
    }

    #[test]
    fn rejects_what_go_rejects_with_a_hint() {
        for bad in ["1y", "365d", "3600", "", "h", "1h-", "1.h2", "--1h", "1 h"] {
            let e = GoDuration::parse(bad);
            if bad == "1.h2" {
                // Go accepts "1.h" as 1h, then "2" lacks a unit.
                assert!(e.is_err());
                continue;
            }
            let msg = e.expect_err(bad);
            assert!(msg.contains("8760h"), "{msg}");
        }
        assert!(
            GoDuration::parse("1y")
                .unwrap_err()
                .contains("unknown unit \"y\"")
        );
        assert!(
            GoDuration::parse("3600")
                .unwrap_err()
                .contains("missing unit")
        );
        assert!(
            GoDuration::parse("99999999999h")
                .unwrap_err()
                .contains("too large")
        );
    }
}
