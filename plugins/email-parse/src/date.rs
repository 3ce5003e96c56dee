//! RFC 5322 dates, including the obsolete forms mail still carries.

use chrono::{NaiveDate, NaiveTime};

/// Reads an RFC 5322 date (`Tue, 24 Nov 2026 10:00:00 +0100`) into Unix seconds. Tolerates the
/// obsolete and sloppy forms found in real mail: no weekday, two- and three-digit years, no
/// seconds, zone names (`GMT`, `UT`, `EST`, `PDT`, `CET`, military letters), `+01:00`, a
/// missing zone (read as UTC), comments, full month names, and the `asctime` order
/// (`Tue Nov 24 10:00:00 2026`). Returns `None` for anything else or an impossible date.
///
/// ```
/// assert_eq!(email_parse::parse_date("Tue, 24 Nov 2026 10:00:00 +0100"), Some(1795510800));
/// assert_eq!(email_parse::parse_date("24 Nov 26 09:00 GMT"), Some(1795510800));
/// ```
pub fn parse_date(value: &str) -> Option<i64> {
    let mut day = None;
    let mut month = None;
    let mut year: Option<(i64, usize)> = None;
    let mut time = None;
    let mut zone: Option<i64> = None;
    let mut zone_name: Option<i64> = None;
    for token in tokens(value) {
        if token.is_empty() {
            continue;
        }
        let first = token.as_bytes()[0];
        if (first == b'+' || first == b'-') && token.len() > 1 {
            zone = zone.or(numeric_zone(&token[1..]).map(|z| if first == b'-' { -z } else { z }));
        } else if first.is_ascii_digit() && token.contains(':') {
            time = time.or(clock(token));
        } else if token.bytes().all(|b| b.is_ascii_digit()) {
            let n: i64 = token.parse().ok()?;
            if day.is_none() && token.len() <= 2 && year.is_none() {
                day = Some(n);
            } else if year.is_none() {
                year = Some((n, token.len()));
            } else if day.is_none() && token.len() <= 2 {
                day = Some(n);
            }
        } else if first.is_ascii_alphabetic() {
            if let Some(m) = month_number(token)
                && month.is_none()
            {
                month = Some(m);
            } else if let Some(z) = named_zone(token) {
                zone_name = zone_name.or(Some(z));
            }
        }
    }
    let (y, digits) = year?;
    let year = match digits {
        1 | 2 if y < 50 => 2000 + y,
        1 | 2 => 1900 + y,
        3 => 1900 + y,
        _ => y,
    };
    let (month, day) = (month?, day?);
    if !(1..=9999).contains(&year) {
        return None;
    }
    // chrono rejects days the month does not have (30 Feb, 29 Feb 2100).
    let date = NaiveDate::from_ymd_opt(year as i32, month as u32, u32::try_from(day).ok()?)?;
    let (h, m, s) = time?;
    // The clock is added as seconds, not as a chrono time: a leap second (`23:59:60`) counts as
    // the next day's first second, as it always did here.
    let midnight = date.and_time(NaiveTime::MIN).and_utc().timestamp();
    Some(midnight + h * 3600 + m * 60 + s - zone.or(zone_name).unwrap_or(0))
}

/// Splits on whitespace and commas, without comments; `GMT+0100` becomes `GMT`, `+0100`.
fn tokens(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = None;
    for (i, c) in value.char_indices() {
        let split = c.is_whitespace() || c == ',' || c == '(' || c == ')' || depth > 0;
        let zone_sign = (c == '+' || c == '-')
            && start.is_some_and(|s: usize| value[s..i].bytes().all(|b| b.is_ascii_alphabetic()));
        if (split || zone_sign)
            && let Some(s) = start.take()
        {
            out.push(&value[s..i]);
        }
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ if !split && start.is_none() => start = Some(i),
            _ => {}
        }
        if out.len() > 16 {
            break;
        }
    }
    if let Some(s) = start {
        out.push(&value[s..]);
    }
    out
}

/// `hh:mm` or `hh:mm:ss` (a trailing fraction or dot ignored).
fn clock(token: &str) -> Option<(i64, i64, i64)> {
    let mut parts = token.split(':');
    let h: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let s: i64 = match parts.next() {
        Some(sec) => sec.split('.').next()?.parse().ok()?,
        None => 0,
    };
    (h < 24 && m < 60 && s <= 60).then_some((h, m, s))
}

/// `hhmm` or `hh:mm` (or `hh`) to seconds east of UTC.
fn numeric_zone(digits: &str) -> Option<i64> {
    let digits: String = digits.chars().filter(|&c| c != ':').collect();
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m) = match digits.len() {
        1 | 2 => (digits.parse::<i64>().ok()?, 0),
        3 => (digits[..1].parse::<i64>().ok()?, digits[1..].parse::<i64>().ok()?),
        _ => (digits[..2].parse::<i64>().ok()?, digits[2..].parse::<i64>().ok()?),
    };
    (h < 24 && m < 60).then_some(h * 3600 + m * 60)
}

/// Zone names: RFC 5322's obsolete ones, military letters (read as UTC, as the RFC advises),
/// and the European names common in mail.
fn named_zone(token: &str) -> Option<i64> {
    let hours = match token.to_ascii_uppercase().as_str() {
        "UT" | "UTC" | "GMT" | "Z" | "WET" => 0,
        "EST" => -5,
        "EDT" => -4,
        "CST" => -6,
        "CDT" => -5,
        "MST" => -7,
        "MDT" => -6,
        "PST" => -8,
        "PDT" => -7,
        "CET" | "MET" | "MEZ" | "BST" | "WEST" => 1,
        "CEST" | "MEST" | "MESZ" | "EET" => 2,
        "EEST" => 3,
        t if t.len() == 1 && t.as_bytes()[0].is_ascii_alphabetic() && t != "J" => 0,
        _ => return None,
    };
    Some(hours * 3600)
}

fn month_number(token: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
    let prefix = token.get(..3)?.to_ascii_lowercase();
    let n = MONTHS.iter().position(|m| *m == prefix)?;
    Some(n as i64 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_795_510_800; // 2026-11-24 09:00:00 UTC

    #[test]
    fn rfc5322_and_obsolete_forms() {
        assert_eq!(parse_date("Thu, 01 Jan 1970 00:00:00 +0000"), Some(0));
        assert_eq!(parse_date("Tue, 24 Nov 2026 10:00:00 +0100"), Some(T));
        assert_eq!(parse_date("Tue, 24 Nov 2026 10:00:00 +0100 (CET)"), Some(T));
        assert_eq!(parse_date("24 Nov 2026 10:00 +0100"), Some(T));
        assert_eq!(parse_date("Tue, 24 Nov 2026 09:00:00 GMT"), Some(T));
        assert_eq!(parse_date("Tue, 24 Nov 2026 04:00:00 EST"), Some(T));
        assert_eq!(parse_date("Tue, 24 Nov 2026 01:00:00 PST"), Some(T));
        assert_eq!(parse_date("Tue, 24 Nov 26 09:00:00 UT"), Some(T));
        assert_eq!(parse_date("Tue, 24 Nov 126 09:00:00 Z"), Some(T));
        assert_eq!(parse_date("24 Nov 99 00:00:00 +0000"), Some(943_401_600));
        assert_eq!(parse_date("Tue, 24 Nov 2026 09:00:00"), Some(T));
        assert_eq!(parse_date("Tue, 24 Nov 2026 09:00:00 A"), Some(T));
        assert_eq!(parse_date("Tue, 24 Nov 2026 10:00:00 GMT+0100"), Some(T));
        assert_eq!(parse_date("Tue, 24 Nov 2026 10:00:00 +01:00"), Some(T));
        assert_eq!(parse_date("Tuesday, 24 November 2026 05:30:00 -0330"), Some(T));
        assert_eq!(parse_date("Tue Nov 24 09:00:00 2026"), Some(T));
        assert_eq!(parse_date("Tue,24 Nov 2026 10:00:00.123 CET"), Some(T));
        assert_eq!(parse_date("29 Feb 2024 00:00:00 +0000"), Some(1_709_164_800));
    }

    #[test]
    fn rejects_nonsense() {
        for v in [
            "",
            "yesterday",
            "30 Feb 2026 00:00:00 +0000",
            "24 Foo 2026 10:00:00 +0000",
            "24 Nov 2026",
            "24 Nov 2026 25:00:00 +0000",
            "Nov 2026 10:00",
            "99999999999999999999 Nov 2026 10:00",
        ] {
            assert_eq!(parse_date(v), None, "{v}");
        }
    }

    #[test]
    fn calendar_edges() {
        // Leap days: every fourth year, not 1900 or 2100, but 2000; 29 Feb of other years is
        // impossible, as is the 31st of a 30-day month.
        assert_eq!(parse_date("29 Feb 2000 00:00:00 +0000"), Some(951_782_400));
        assert_eq!(parse_date("1 Mar 2000 00:00:00 +0000"), Some(951_868_800));
        for v in ["29 Feb 1900 00:00 +0000", "29 Feb 2100 00:00 +0000", "29 Feb 2023 00:00 +0000", "31 Apr 2026 00:00"]
        {
            assert_eq!(parse_date(v), None, "{v}");
        }
        assert_eq!(parse_date("28 Feb 2100 12:00:00 +0000"), Some(4_107_499_200));
        assert_eq!(parse_date("1 Mar 2100 00:00:00 +0000"), Some(4_107_542_400));
        // Year boundaries, also crossed by the zone, and a leap second.
        assert_eq!(parse_date("Thu, 31 Dec 2026 23:59:59 +0000"), Some(1_798_761_599));
        assert_eq!(parse_date("Fri, 1 Jan 2027 00:59:59 +0100"), Some(1_798_761_599));
        assert_eq!(parse_date("31 Dec 2026 23:59:60 +0000"), Some(1_798_761_600));
        // Before 1970: negative times, and two-digit years on either side of 1950/2049.
        assert_eq!(parse_date("Wed, 31 Dec 1969 23:59:59 +0000"), Some(-1));
        assert_eq!(parse_date("Thu, 01 Jan 1970 00:00:00 +0100"), Some(-3600));
        assert_eq!(parse_date("1 Jan 50 00:00:00 +0000"), Some(-631_152_000));
        assert_eq!(parse_date("31 Dec 49 23:59:59 +0000"), Some(2_524_607_999));
        assert_eq!(parse_date("1 Jan 0001 00:00:00 +0000"), Some(-62_135_596_800));
        assert_eq!(parse_date("31 Dec 9999 23:59:59 +0000"), Some(253_402_300_799));
        assert_eq!(parse_date("1 Jan 10000 00:00:00 +0000"), None);
    }
}
