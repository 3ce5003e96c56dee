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

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Timelike};
use handlebars::{Context, Helper, RenderError};
use serde_json::Value as Json;

use super::{arg, fail};
use crate::locale::Locale;

/// Seconds from 0001-01-01 to 9999-12-31 are all we accept: nobody writes to a customer about
/// other years, and with an offset of ±14 hours the date stays well inside chrono's range.
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

/// Formats local seconds since the epoch; `None` for an unknown format (or seconds beyond
/// chrono's range, which the caller has ruled out).
fn format_date(seconds: i64, format: &str, utc: bool, locale: Locale) -> Option<String> {
    let at = DateTime::from_timestamp(seconds, 0)?;
    let (year, month, day, hour, minute) = (at.year(), at.month(), at.day(), at.hour(), at.minute());
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
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    // The casts cannot truncate: four and two digits. chrono rejects February 30th.
    let date = NaiveDate::from_ymd_opt(year as i32, month as u32, day as u32)?;
    if b.len() == 10 {
        return Some(date.and_time(NaiveTime::MIN).and_utc().timestamp());
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
    if second > 60 {
        return None;
    }
    let time = NaiveTime::from_hms_opt(hour as u32, minute as u32, second.min(59) as u32)?;
    let seconds = date.and_time(time).and_utc().timestamp();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The date of a day since 1970-01-01: (year, month 1–12, day 1–31). This module did the
    /// conversion by hand before chrono; the round trips below still pin chrono's calendar to
    /// the dates the helper promises, from 0001-01-01 to 9999-12-31.
    fn civil_from_days(days: i64) -> (i64, u32, u32) {
        let date = DateTime::from_timestamp(days * 86_400, 0).map(|at| at.date_naive()).unwrap_or_default();
        (i64::from(date.year()), date.month(), date.day())
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date.
    fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
        NaiveDate::from_ymd_opt(year as i32, month as u32, day as u32)
            .map_or(i64::MIN, |d| i64::from(d.to_epoch_days()))
    }

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

    #[test]
    fn dates_round_trip_through_the_helper() {
        // 0001-01-01, 1969-12-31, 2000-02-29, 2100-02-28 and 03-01, 9999-12-31.
        for days in [-719_162, -1, 11_016, 47_540, 47_541, 2_932_896] {
            let seconds = days * 86_400;
            let iso = format_date(seconds, "iso", true, Locale::En).unwrap_or_default();
            assert_eq!(parse_rfc3339(&iso), Some(seconds), "{iso}");
        }
        assert_eq!(format_date(951_782_400, "iso", true, Locale::En).as_deref(), Some("2000-02-29"));
        assert_eq!(format_date(-1, "datetime", true, Locale::En).as_deref(), Some("December 31, 1969, 11:59 PM (UTC)"));
        assert_eq!(format_date(4_107_542_400, "short", false, Locale::De).as_deref(), Some("01.03.2100"));
        assert_eq!(parse_rfc3339("2100-02-29"), None);
        assert_eq!(parse_rfc3339("2026-12-31T23:59:60Z"), Some(1_798_761_599));
        assert_eq!(parse_rfc3339("2027-01-01T00:30+01:00"), Some(1_798_759_800));
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Some(-1));
    }
}
