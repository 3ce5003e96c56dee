//! `{{date value "long"}}`: a timestamp as a date for people, in the template's language.
//!
//! The value is an RFC 3339 timestamp (`2026-11-24T14:05:00Z`, `…+01:00`, or a bare date) or
//! Unix milliseconds. Dates are shown in UTC unless a third parameter gives an offset
//! (`"+01:00"`, `"-0530"`, `"Z"`); times shown in UTC say so. Formats:
//!
//! | format | de | en |
//! |---|---|---|
//! | `short` | 24.11.2026 | Nov 24, 2026 |
//! | `long` (default) | 24. November 2026 | November 24, 2026 |
//! | `datetime` | 24. November 2026, 14:05 Uhr (UTC) | November 24, 2026, 2:05 PM (UTC) |
//! | `time` | 14:05 Uhr (UTC) | 2:05 PM (UTC) |
//! | `iso` | 2026-11-24 | 2026-11-24 |
//!
//! Time zones by name (`Europe/Berlin`) are deliberately absent: they need the tz database and
//! its updates; the caller knows the workspace's offset at the moment of sending.

use std::fmt::Write;

use handlebars::{Context, Helper, RenderError};
use serde_json::Value as Json;

use super::{arg, fail};
use crate::locale::Locale;

/// Seconds from 0001-01-01 to 9999-12-31 are all we accept; nobody writes to a customer about
/// other years, and it keeps the arithmetic far from overflow.
const MIN_SECONDS: i64 = -62_135_596_800;
const MAX_SECONDS: i64 = 253_402_300_799;

pub(super) fn helper(h: &Helper<'_>, _: &Context, locale: Locale) -> Result<Json, RenderError> {
    let seconds = match arg(h, 0) {
        Json::Null => return Ok(Json::String(String::new())),
        Json::String(s) => parse_rfc3339(s.trim()),
        Json::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)).map(|ms| ms.div_euclid(1000)),
        _ => None,
    }
    .filter(|s| (MIN_SECONDS..=MAX_SECONDS).contains(s))
    .ok_or_else(|| fail("date", format!("expects an RFC 3339 timestamp or Unix milliseconds, got {}", arg(h, 0))))?;
    let format = match arg(h, 1) {
        Json::Null => "long",
        Json::String(s) => s.as_str(),
        other => return Err(fail("date", format!("the format must be text, got {other}"))),
    };
    let offset = match arg(h, 2) {
        Json::Null => None,
        Json::String(s) => Some(
            parse_offset(s.trim())
                .ok_or_else(|| fail("date", format!("the offset `{s}` is not like \"+01:00\", \"-0530\" or \"Z\"")))?,
        ),
        other => return Err(fail("date", format!("the offset must be text like \"+01:00\", got {other}"))),
    };
    format_date(seconds + i64::from(offset.unwrap_or(0)) * 60, format, offset.is_none(), locale)
        .map(Json::String)
        .ok_or_else(|| fail("date", format!("unknown format `{format}`; use short, long, datetime, time or iso")))
}

/// Formats local seconds since the epoch; `None` for an unknown format.
fn format_date(seconds: i64, format: &str, utc: bool, locale: Locale) -> Option<String> {
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let of_day = seconds.rem_euclid(86_400);
    let (hour, minute) = (of_day / 3600, of_day % 3600 / 60);
    let name = locale.month(month);
    let short = &name[..name.char_indices().nth(3).map_or(name.len(), |(i, _)| i)];
    let time = match locale {
        Locale::De => format!("{hour:02}:{minute:02} Uhr"),
        Locale::En => {
            let h12 = if hour % 12 == 0 { 12 } else { hour % 12 };
            format!("{h12}:{minute:02} {}", if hour < 12 { "AM" } else { "PM" })
        }
    };
    let long = match locale {
        Locale::De => format!("{day}. {name} {year}"),
        Locale::En => format!("{name} {day}, {year}"),
    };
    let mut out = match (format, locale) {
        ("iso", _) => format!("{year:04}-{month:02}-{day:02}"),
        ("short", Locale::De) => format!("{day:02}.{month:02}.{year}"),
        ("short", Locale::En) => format!("{short} {day}, {year}"),
        ("long", _) => long,
        ("datetime", _) => format!("{long}, {time}"),
        ("time", _) => time,
        _ => return None,
    };
    if utc && matches!(format, "datetime" | "time") {
        let _ = write!(out, " (UTC)");
    }
    Some(out)
}

/// Seconds since the epoch of `YYYY-MM-DD[(T| )HH:MM[:SS[.fraction]][Z|±HH:MM|±HHMM]]`; a time
/// without an offset is taken as UTC.
fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let digits = b.get(from..from + len)?;
        digits.iter().all(u8::is_ascii_digit).then(|| digits.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') || !(1..=12).contains(&month) {
        return None;
    }
    if day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let mut seconds = days_from_civil(year, month, day) * 86_400;
    if b.len() == 10 {
        return Some(seconds);
    }
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) || b.get(13) != Some(&b':') {
        return None;
    }
    let (hour, minute) = (num(11, 2)?, num(14, 2)?);
    let mut i = 16;
    let mut second = 0;
    if b.get(i) == Some(&b':') {
        second = num(17, 2)?;
        i = 19;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if i == start {
                return None;
            }
        }
    }
    // 60 is a leap second; it shows as the minute's last second.
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    seconds += hour * 3600 + minute * 60 + second.min(59);
    let offset = if i == b.len() { 0 } else { parse_offset(s.get(i..)?)? };
    Some(seconds - i64::from(offset) * 60)
}

/// Minutes east of UTC from `Z`, `UTC`, `±HH`, `±HH:MM` or `±HHMM`; at most ±14 hours.
fn parse_offset(s: &str) -> Option<i32> {
    if s.eq_ignore_ascii_case("z") || s.eq_ignore_ascii_case("utc") {
        return Some(0);
    }
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) || !matches!(digits.len(), 2 | 4) || rest.len() > 5 {
        return None;
    }
    let hours: i32 = digits[..2].parse().ok()?;
    let minutes: i32 = if digits.len() == 4 { digits[2..].parse().ok()? } else { 0 };
    (hours <= 14 && minutes < 60).then_some(sign * (hours * 60 + minutes))
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day since 1970-01-01: (year, month 1–12, day 1–31).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_round_trips() {
        for days in [-719_162, -1, 0, 59, 60, 11_016, 20_781, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, i64::from(m), i64::from(d)), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(parse_rfc3339("2024-02-29T00:00:00Z"), Some(1_709_164_800));
        assert_eq!(parse_rfc3339("2023-02-29"), None);
        assert_eq!(parse_rfc3339("2026-11-24T14:05:09.123+01:00"), Some(1_795_525_509));
        assert_eq!(parse_rfc3339("2026-11-24T14:05"), Some(1_795_529_100));
        assert_eq!(parse_rfc3339("2026-11-24T14:05:09+1"), None);
    }
}
