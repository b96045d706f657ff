//! Instants, as microseconds since the Unix epoch in UTC, and the timestamp forms consent
//! platforms write.
//!
//! Accepted: ISO-8601 / RFC 3339 with `Z` or an offset (`T` or a space between date and
//! time, any number of fraction digits), naive `YYYY-MM-DD HH:MM:SS[.ffffff]` as SQLAlchemy
//! writes it (taken as UTC), a bare date (midnight UTC), and integer Unix seconds. Fractions
//! finer than a microsecond are truncated.

use std::fmt;

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const MIN: Timestamp = Timestamp(i64::MIN);

    pub fn now() -> Timestamp {
        Timestamp(Utc::now().timestamp_micros())
    }

    pub fn from_unix_seconds(s: i64) -> Option<Timestamp> {
        s.checked_mul(1_000_000).map(Timestamp)
    }

    pub fn from_micros(us: i64) -> Timestamp {
        Timestamp(us)
    }

    pub fn micros(self) -> i64 {
        self.0
    }

    /// Parses any accepted text form. The error says what was expected, not what was seen,
    /// so callers decide whether the value may be echoed.
    pub fn parse(s: &str) -> Result<Timestamp, &'static str> {
        let s = s.trim();
        if let Some(t) = parse_fast(s.as_bytes()) {
            return Ok(t);
        }
        if !s.is_empty()
            && s.bytes()
                .enumerate()
                .all(|(i, b)| b.is_ascii_digit() || (i == 0 && b == b'-'))
        {
            return s
                .parse::<i64>()
                .ok()
                .and_then(Timestamp::from_unix_seconds)
                .ok_or("Unix seconds out of range");
        }
        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            return Ok(Timestamp(t.timestamp_micros()));
        }
        for format in [
            "%Y-%m-%d %H:%M:%S%.f",
            "%Y-%m-%dT%H:%M:%S%.f",
            "%Y-%m-%d %H:%M",
            "%Y-%m-%dT%H:%M",
        ] {
            if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
                return Ok(Timestamp(t.and_utc().timestamp_micros()));
            }
        }
        for format in [
            "%Y-%m-%d %H:%M:%S%.f%:z",
            "%Y-%m-%d %H:%M:%S%.f%z",
            "%Y-%m-%dT%H:%M:%S%.f%z",
        ] {
            if let Ok(t) = DateTime::parse_from_str(s, format) {
                return Ok(Timestamp(t.timestamp_micros()));
            }
        }
        if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            if let Some(t) = d.and_hms_opt(0, 0, 0) {
                return Ok(Timestamp(t.and_utc().timestamp_micros()));
            }
        }
        Err("expected ISO-8601 (e.g. 2026-11-01T00:00:00Z), YYYY-MM-DD HH:MM:SS[.ffffff] (UTC) or Unix seconds")
    }

    /// RFC 3339 in UTC with `Z`, microseconds only when there are any.
    pub fn to_rfc3339(self) -> String {
        match DateTime::<Utc>::from_timestamp_micros(self.0) {
            Some(t) => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            None => format!("@{}us", self.0),
        }
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// The common fixed-width forms without chrono's general parser:
/// `YYYY-MM-DD[T ]HH:MM:SS[.f{1,9}][Z|±HH:MM]`, no suffix meaning UTC. Returns `None`
/// for anything else so the general parser can try.
fn parse_fast(b: &[u8]) -> Option<Timestamp> {
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    // Civil date to days since 1970 without chrono (Hinnant's days_from_civil): this runs
    // for every timestamp of a snapshot; the test below checks it against chrono.
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => return None,
    };
    if day == 0 || day > month_days {
        return None;
    }
    let mut i = 19;
    let mut micros = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 6 {
                micros = micros * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        for _ in digits..6 {
            micros *= 10;
        }
    }
    let offset_secs: i64 = match &b[i..] {
        [] | [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digits = [*h1, *h2, *m1, *m2];
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let h = i64::from((h1 - b'0') * 10 + (h2 - b'0'));
            let m = i64::from((m1 - b'0') * 10 + (m2 - b'0'));
            if h > 23 || m > 59 {
                return None;
            }
            let s = h * 3600 + m * 60;
            if *sign == b'-' {
                -s
            } else {
                s
            }
        }
        _ => return None,
    };
    let (y, m, d) = (
        i64::from(year) - i64::from(month <= 2),
        i64::from(month),
        i64::from(day),
    );
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_secs;
    Some(Timestamp(secs * 1_000_000 + micros))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> i64 {
        Timestamp::parse(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .micros()
    }

    #[test]
    fn forms_agree_on_one_instant() {
        let want = 1_793_491_200_000_000; // 2026-11-01T00:00:00Z
        for s in [
            "2026-11-01T00:00:00Z",
            "2026-11-01T00:00:00+00:00",
            "2026-11-01T05:30:00+05:30",
            "2026-10-31T19:00:00-05:00",
            "2026-11-01 00:00:00",
            "2026-11-01 00:00:00.000000",
            "2026-11-01T00:00:00",
            "2026-11-01t00:00:00z",
            "2026-11-01 00:00:00+00:00",
            "2026-11-01",
            "1793491200",
        ] {
            assert_eq!(p(s), want, "{s}");
        }
    }

    #[test]
    fn fractions_are_kept_to_the_microsecond() {
        assert_eq!(p("1970-01-01 00:00:01.5"), 1_500_000);
        assert_eq!(p("1970-01-01T00:00:00.123456789Z"), 123_456);
        assert_eq!(p("1970-01-01T00:00:00.000001Z"), 1);
    }

    #[test]
    fn garbage_is_an_error() {
        for s in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-02-30 00:00:00",
            "2026-11-01T25:00:00Z",
            "12:00",
        ] {
            assert!(Timestamp::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn round_trips_through_rfc3339() {
        let t = Timestamp::parse("2026-11-01T12:34:56.5Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-01T12:34:56.500Z");
        assert_eq!(Timestamp::parse(&t.to_rfc3339()).unwrap(), t);
    }

    #[test]
    fn fast_date_math_agrees_with_chrono() {
        let mut n = 0;
        for y in [
            0u32, 1, 99, 100, 400, 1600, 1899, 1900, 1969, 1970, 1999, 2000, 2023, 2024, 2100,
            2400, 9999,
        ] {
            for m in 0..=13u32 {
                for d in 0..=32u32 {
                    let s = format!("{y:04}-{m:02}-{d:02}T12:34:56Z");
                    let fast = parse_fast(s.as_bytes());
                    let slow = NaiveDate::from_ymd_opt(y as i32, m, d)
                        .and_then(|d| d.and_hms_opt(12, 34, 56))
                        .map(|t| Timestamp(t.and_utc().timestamp_micros()));
                    assert_eq!(fast, slow, "{s}");
                    n += 1;
                }
            }
        }
        assert!(n > 1000);
    }
}
