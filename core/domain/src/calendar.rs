//! Business-hours calendars: weekly opening hours in a time zone, minus holidays. SLA clocks
//! count only the time inside them. Pure functions over Unix milliseconds, no I/O.

use chrono::{Datelike, Duration, LocalResult, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How far ahead a clock may look for open hours before we call the calendar broken. Three
/// years of holidays in a row is not a helpdesk.
const MAX_DAYS_SCANNED: i64 = 3 * 366;

const DAY_KEYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// A business-hours calendar as stored on a tier (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calendar {
    /// IANA time zone name, e.g. `Europe/Berlin`.
    pub timezone: String,
    /// Opening intervals per weekday key (`mon` … `sun`), each `["HH:MM", "HH:MM"]`; a day
    /// that is missing or empty is closed. `"24:00"` ends a day.
    pub hours: std::collections::BTreeMap<String, Vec<[String; 2]>>,
    /// Closed dates (`YYYY-MM-DD`, local to the time zone).
    #[serde(default)]
    pub holidays: Vec<String>,
}

/// A calendar checked and turned into numbers, ready for arithmetic.
#[derive(Debug, Clone)]
pub struct Hours {
    tz: Tz,
    /// Minutes-of-day intervals, index 0 = Monday.
    week: [Vec<(u32, u32)>; 7],
    holidays: Vec<NaiveDate>,
}

impl Calendar {
    /// Open around the clock, every day, in UTC.
    pub fn always_open() -> Self {
        let hours =
            DAY_KEYS.iter().map(|d| ((*d).to_owned(), vec![["00:00".to_owned(), "24:00".to_owned()]])).collect();
        Calendar { timezone: "UTC".into(), hours, holidays: vec![] }
    }

    /// Monday to Friday, `from`–`to`, in `timezone`.
    pub fn weekdays(timezone: &str, from: &str, to: &str) -> Self {
        let hours = DAY_KEYS[..5].iter().map(|d| ((*d).to_owned(), vec![[from.to_owned(), to.to_owned()]])).collect();
        Calendar { timezone: timezone.into(), hours, holidays: vec![] }
    }

    /// Checks the calendar and prepares it for arithmetic.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the part that is wrong: an unknown time zone or weekday, a
    /// malformed time or date, an interval that ends before it starts, or no open hours at all.
    pub fn compile(&self) -> Result<Hours> {
        let tz: Tz = self.timezone.parse().map_err(|_| {
            Error::invalid(
                "calendar.timezone",
                format!("unknown time zone {:?}; use an IANA name such as Europe/Berlin", self.timezone),
            )
        })?;
        let mut week: [Vec<(u32, u32)>; 7] = Default::default();
        for (day, intervals) in &self.hours {
            let idx = DAY_KEYS.iter().position(|d| d == day).ok_or_else(|| {
                Error::invalid(
                    "calendar.hours",
                    format!("unknown weekday {day:?}; use mon, tue, wed, thu, fri, sat, sun"),
                )
            })?;
            for [from, to] in intervals {
                let (a, b) = (parse_minutes(from)?, parse_minutes(to)?);
                if a >= b {
                    return Err(Error::invalid(
                        "calendar.hours",
                        format!("interval {from}-{to} on {day} ends before it starts"),
                    ));
                }
                week[idx].push((a, b));
            }
            week[idx].sort_unstable();
        }
        if week.iter().all(Vec::is_empty) {
            return Err(Error::invalid("calendar.hours", "the calendar has no open hours; add at least one interval"));
        }
        let holidays = self
            .holidays
            .iter()
            .map(|d| {
                NaiveDate::parse_from_str(d, "%Y-%m-%d")
                    .map_err(|_| Error::invalid("calendar.holidays", format!("holiday {d:?} is not a YYYY-MM-DD date")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Hours { tz, week, holidays })
    }
}

fn parse_minutes(s: &str) -> Result<u32> {
    if s == "24:00" {
        return Ok(24 * 60);
    }
    let t = NaiveTime::parse_from_str(s, "%H:%M")
        .map_err(|_| Error::invalid("calendar.hours", format!("time {s:?} is not HH:MM")))?;
    Ok(chrono::Timelike::hour(&t) * 60 + chrono::Timelike::minute(&t))
}

impl Hours {
    /// The open intervals of one local date as absolute UTC milliseconds, in order.
    fn intervals_on(&self, date: NaiveDate) -> Vec<(i64, i64)> {
        if self.holidays.contains(&date) {
            return vec![];
        }
        let idx = date.weekday().num_days_from_monday() as usize;
        self.week[idx]
            .iter()
            .map(|&(a, b)| (self.local_to_ms(date, a), self.local_to_ms(date, b)))
            .filter(|(a, b)| a < b)
            .collect()
    }

    /// A local wall-clock time to UTC milliseconds. In a DST gap the time does not exist and we
    /// move to the first instant after it; in an overlap we take the earlier instant.
    fn local_to_ms(&self, date: NaiveDate, minutes: u32) -> i64 {
        let (date, minutes) = if minutes >= 24 * 60 { (date + Duration::days(1), 0) } else { (date, minutes) };
        let naive = date.and_hms_opt(minutes / 60, minutes % 60, 0).unwrap_or_default();
        match self.tz.from_local_datetime(&naive) {
            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.timestamp_millis(),
            LocalResult::None => {
                let later = naive + Duration::hours(1);
                self.tz.from_local_datetime(&later).earliest().map_or(0, |t| t.timestamp_millis())
            }
        }
    }

    fn local_date(&self, ms: i64) -> NaiveDate {
        let utc = Utc.timestamp_millis_opt(ms).single().unwrap_or_default();
        utc.with_timezone(&self.tz).date_naive()
    }

    /// The instant at which `minutes` of business time have passed since `start_ms`.
    pub fn add_business_minutes(&self, start_ms: i64, minutes: i64) -> i64 {
        self.add_business_ms(start_ms, minutes * 60_000)
    }

    /// The instant at which `duration_ms` of business time have passed since `start_ms`.
    pub fn add_business_ms(&self, start_ms: i64, duration_ms: i64) -> i64 {
        let mut remaining = duration_ms.max(0);
        // Start one day early: an interval of yesterday's local date may still be open
        // (e.g. a night shift that ends after midnight in UTC terms).
        let mut date = self.local_date(start_ms) - Duration::days(1);
        for _ in 0..MAX_DAYS_SCANNED {
            for (a, b) in self.intervals_on(date) {
                let from = a.max(start_ms);
                if from >= b {
                    continue;
                }
                if b - from >= remaining {
                    return from + remaining;
                }
                remaining -= b - from;
            }
            date += Duration::days(1);
        }
        // compile() guarantees open hours, so only holidays for years on end get here.
        start_ms + duration_ms
    }

    /// Business milliseconds between two instants (zero when `to <= from`).
    pub fn business_ms_between(&self, from_ms: i64, to_ms: i64) -> i64 {
        if to_ms <= from_ms {
            return 0;
        }
        let mut total = 0;
        let mut date = self.local_date(from_ms) - Duration::days(1);
        let last = self.local_date(to_ms);
        while date <= last {
            for (a, b) in self.intervals_on(date) {
                let (x, y) = (a.max(from_ms), b.min(to_ms));
                if x < y {
                    total += y - x;
                }
            }
            date += Duration::days(1);
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s).map(|t| t.timestamp_millis()).unwrap_or(-1)
    }

    fn berlin_office() -> Hours {
        let mut c = Calendar::weekdays("Europe/Berlin", "09:00", "17:00");
        c.holidays.push("2026-12-25".into());
        c.compile().map_err(|e| e.to_string()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn adding_within_one_day() {
        let h = berlin_office();
        // Tue 2026-11-24 10:00 Berlin = 09:00 UTC; +60 min → 11:00 Berlin.
        assert_eq!(h.add_business_minutes(ms("2026-11-24T09:00:00Z"), 60), ms("2026-11-24T10:00:00Z"));
    }

    #[test]
    fn after_hours_start_waits_for_the_next_opening() {
        let h = berlin_office();
        // Fri 2026-11-27 18:00 Berlin → opens Mon 09:00 Berlin (08:00 UTC), +30 min.
        assert_eq!(h.add_business_minutes(ms("2026-11-27T17:00:00Z"), 30), ms("2026-11-30T08:30:00Z"));
    }

    #[test]
    fn holidays_are_skipped() {
        let h = berlin_office();
        // Thu 2026-12-24 16:00 Berlin + 120 min: one hour on Thursday, Friday is a holiday,
        // the second hour ends Mon 2026-12-28 10:00 Berlin.
        assert_eq!(h.add_business_minutes(ms("2026-12-24T15:00:00Z"), 120), ms("2026-12-28T09:00:00Z"));
    }

    #[test]
    fn daylight_saving_change_keeps_local_opening_hours() {
        let h = berlin_office();
        // Fri 2026-03-27 16:00 CET (15:00 UTC) + 120 min: 1 h Friday, 1 h Monday after the
        // switch to CEST, where 10:00 local is 08:00 UTC.
        assert_eq!(h.add_business_minutes(ms("2026-03-27T15:00:00Z"), 120), ms("2026-03-30T08:00:00Z"));
    }

    #[test]
    fn business_time_between_is_the_inverse_of_adding() {
        let h = berlin_office();
        let start = ms("2026-11-26T15:30:00Z");
        for minutes in [1, 59, 480, 481, 2000, 10_000] {
            let end = h.add_business_minutes(start, minutes);
            assert_eq!(h.business_ms_between(start, end), minutes * 60_000, "{minutes} minutes");
        }
    }

    #[test]
    fn always_open_is_plain_clock_time() {
        let h = Calendar::always_open().compile().map_err(|e| e.to_string());
        let h = h.unwrap_or_else(|e| panic!("{e}"));
        let t = ms("2026-11-28T23:50:00Z");
        assert_eq!(h.add_business_minutes(t, 20), t + 20 * 60_000);
    }

    #[test]
    fn bad_calendars_are_rejected_with_the_reason() {
        let check = |c: Calendar, needle: &str| match c.compile() {
            Err(e) => assert!(e.to_string().contains(needle), "{e} should mention {needle}"),
            Ok(_) => panic!("calendar should be rejected: {needle}"),
        };
        check(Calendar::weekdays("Mars/Olympus", "09:00", "17:00"), "unknown time zone");
        check(Calendar::weekdays("UTC", "17:00", "09:00"), "ends before it starts");
        check(Calendar::weekdays("UTC", "9am", "17:00"), "not HH:MM");
        let mut c = Calendar::weekdays("UTC", "09:00", "17:00");
        c.holidays.push("25.12.2026".into());
        check(c, "YYYY-MM-DD");
        let mut c = Calendar::weekdays("UTC", "09:00", "17:00");
        c.hours.clear();
        check(c, "no open hours");
    }
}
