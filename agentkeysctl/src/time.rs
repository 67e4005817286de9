//! Time for people: parsing `--expires WHEN` and the civil (proleptic Gregorian, UTC)
//! calendar arithmetic behind it. The other direction, seconds to a date, is the daemon's
//! [`agentkeysd::store::utc`] (behind [`crate::output::format_utc`]).
//!
//! Written by hand (Howard Hinnant's `days_from_civil`) rather than pulling a date crate
//! for one conversion; it is exhaustively tested below, against `utc`.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, now.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Days since 1970-01-01 of the civil date `y-m-d` (`m` 1–12, `d` 1–31).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // [0, 399]
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 }; // March = 0
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

pub fn is_leap_year(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

pub fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(y) => 29,
        2 => 28,
        _ => 0,
    }
}

/// The accepted forms, for error messages and `--help`.
pub const EXPIRES_FORMS: &str = "a duration such as 30d, 12h, 90m, 2w or 3600s, or a UTC date \
     YYYY-MM-DD (midnight UTC) or YYYY-MM-DDTHH:MM:SSZ";

/// Parses `--expires WHEN` into unix seconds, relative to `now` for durations.
///
/// The error is a sentence saying what is wrong with `when`.
pub fn parse_expires(when: &str, now: i64) -> Result<i64, String> {
    let when = when.trim();
    if when.is_empty() {
        return Err("it is empty".into());
    }
    let at = if when.as_bytes().first().is_some_and(u8::is_ascii_digit) && when.contains('-') {
        parse_date(when)?
    } else {
        let secs = parse_duration(when)?;
        now.checked_add(secs).ok_or("the duration is too long")?
    };
    if at <= now {
        return Err("that time is not in the future".into());
    }
    Ok(at)
}

/// `30d` → seconds. Units: s, m, h, d, w. The count must be a positive integer.
fn parse_duration(s: &str) -> Result<i64, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    if digits.is_empty() {
        return Err(format!("'{s}' does not start with a number"));
    }
    let unit_secs: i64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "" => return Err(format!("'{s}' has no unit (s, m, h, d or w)")),
        other => return Err(format!("'{other}' is not a unit; use s, m, h, d or w")),
    };
    let n: i64 = digits
        .parse()
        .map_err(|_| format!("'{digits}' is too large"))?;
    if n == 0 {
        return Err("the duration must be longer than zero".into());
    }
    n.checked_mul(unit_secs)
        .ok_or_else(|| "the duration is too long".into())
}

/// `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SSZ` (UTC) → unix seconds.
fn parse_date(s: &str) -> Result<i64, String> {
    let bad =
        || format!("'{s}' is not a date of the form YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (UTC)");
    let (date, time) = match s.split_once(['T', 't']) {
        None => (s, None),
        Some((d, t)) => {
            let t = t
                .strip_suffix(['Z', 'z'])
                .ok_or_else(|| format!("'{s}' has no time zone: end it with Z (times are UTC)"))?;
            (d, Some(t))
        }
    };
    let [y, m, d] = fields::<3>(date, '-', &[4, 2, 2]).ok_or_else(bad)?;
    let (hh, mm, ss) = match time {
        None => (0, 0, 0),
        Some(t) => {
            let [h, mi, se] = fields::<3>(t, ':', &[2, 2, 2]).ok_or_else(bad)?;
            (h, mi, se)
        }
    };
    let (m, d) = (m as u32, d as u32);
    if !(1970..=9999).contains(&y) {
        return Err(format!("the year {y} is out of range (1970–9999)"));
    }
    if !(1..=12).contains(&m) {
        return Err(format!("there is no month {m:02}"));
    }
    if d == 0 || d > days_in_month(y, m) {
        return Err(format!("{y:04}-{m:02} has no day {d:02}"));
    }
    if hh > 23 || mm > 59 || ss > 59 {
        return Err(format!("{hh:02}:{mm:02}:{ss:02} is not a time of day"));
    }
    Ok(days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Splits `s` on `sep` into exactly `N` all-digit fields of the given widths.
fn fields<const N: usize>(s: &str, sep: char, widths: &[usize; N]) -> Option<[i64; N]> {
    let mut out = [0i64; N];
    let mut parts = s.split(sep);
    for (slot, width) in out.iter_mut().zip(widths) {
        let p = parts.next()?;
        if p.len() != *width || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *slot = p.parse().ok()?;
    }
    parts.next().is_none().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000; // 2023-11-14 22:13:20 UTC

    /// The civil date of `z` days since 1970-01-01, as the daemon renders it.
    fn civil_from_days(z: i64) -> String {
        let text = agentkeysd::store::utc(z * 86_400);
        text.strip_suffix(" 00:00:00 UTC")
            .unwrap_or(&text)
            .to_owned()
    }

    fn civil(y: i64, m: u32, d: u32) -> String {
        format!("{y:04}-{m:02}-{d:02}")
    }

    #[test]
    fn civil_conversions_match_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2026, 11, 21), 20_778);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(civil_from_days(0), civil(1970, 1, 1));
        assert_eq!(civil_from_days(-1), civil(1969, 12, 31));
        assert_eq!(civil_from_days(11_016), civil(2000, 2, 29));
        assert_eq!(civil_from_days(20_778), civil(2026, 11, 21));
    }

    #[test]
    fn civil_conversions_round_trip_over_centuries() {
        let mut expected = (1900, 1, 1);
        for z in days_from_civil(1900, 1, 1)..=days_from_civil(2400, 12, 31) {
            let (y, m, d) = expected;
            assert_eq!(civil_from_days(z), civil(y, m, d), "day {z}");
            assert_eq!(days_from_civil(y, m, d), z);
            expected = if d < days_in_month(y, m) {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
        }
    }

    #[test]
    fn leap_years_follow_the_gregorian_rule() {
        assert!(is_leap_year(2000));
        assert!(is_leap_year(2024));
        assert!(!is_leap_year(1900));
        assert!(!is_leap_year(2100));
        assert!(!is_leap_year(2026));
    }

    #[test]
    fn durations_count_from_now() {
        assert_eq!(parse_expires("3600s", NOW), Ok(NOW + 3600));
        assert_eq!(parse_expires("90m", NOW), Ok(NOW + 90 * 60));
        assert_eq!(parse_expires("12h", NOW), Ok(NOW + 12 * 3600));
        assert_eq!(parse_expires("30d", NOW), Ok(NOW + 30 * 86_400));
        assert_eq!(parse_expires("2w", NOW), Ok(NOW + 14 * 86_400));
        assert_eq!(parse_expires(" 1d ", NOW), Ok(NOW + 86_400));
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(parse_expires("2026-11-21", NOW), Ok(1_795_219_200));
        assert_eq!(
            parse_expires("2026-11-21T10:42:07Z", NOW),
            Ok(1_795_257_727)
        );
        assert_eq!(
            parse_expires("2028-02-29", NOW),
            Ok(days_from_civil(2028, 2, 29) * 86_400)
        );
    }

    #[test]
    fn bad_input_is_rejected_with_a_reason() {
        for bad in [
            "",
            "d",
            "30",
            "30x",
            "-5d",
            "0d",
            "1.5h",
            "30 d",
            "99999999999999999999s",
            "9223372036854775807w",
            "2026-13-01",
            "2026-02-30",
            "2027-02-29",
            "2026-1-1",
            "2026-11-21T10:42:07",
            "2026-11-21T24:00:00Z",
            "2026-11-21T10:60:00Z",
            "2026-11-21T10:42Z",
            "2026-11-21x",
            "1969-12-31",
            "2026-11-21T10:42:07+01:00",
        ] {
            assert!(
                parse_expires(bad, NOW).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn past_times_are_rejected() {
        assert!(
            parse_expires("2020-01-01", NOW)
                .unwrap_err()
                .contains("future")
        );
        assert!(parse_expires("2023-11-14T22:13:20Z", NOW).is_err());
        assert!(parse_expires("2023-11-14T22:13:21Z", NOW).is_ok());
    }
}
