//! Cron-style schedules for workflow scripts: when a timed script runs.
//!
//! A schedule is a standard five-field cron expression, fields separated by spaces or tabs (any
//! whitespace, in fact):
//!
//! ```text
//! MINUTE  HOUR  DAY-OF-MONTH  MONTH  DAY-OF-WEEK
//! 0-59    0-23  1-31          1-12   0-7 (0 and 7 are both Sunday)
//! ```
//!
//! Each field is a comma-separated list of entries, and each entry is one of
//!
//! - `*`: every value of the field;
//! - `n`: one value, e.g. `15`;
//! - `a-b`: an ascending range, both ends included, e.g. `9-17`;
//! - `*/s`, `a-b/s`, `n/s`: every `s`-th value of the whole field, of the range `a-b`, or from `n`
//!   to the end of the field, e.g. `*/15` is minutes 0, 15, 30 and 45 and `5/20` is 5, 25 and 45.
//!   A step is at least 1 and no more than the field's span (`*/60` in minutes is an error:
//!   steps restart every hour, so cron cannot say "every 60 or 90 minutes").
//!
//! Months may be written `jan`..`dec` and weekdays `sun`..`sat` (any case), also in ranges
//! (`mon-fri`). Instead of the five fields an expression may be one alias: `@hourly`
//! (`0 * * * *`), `@daily` or `@midnight` (`0 0 * * *`), `@weekly` (`0 0 * * 0`), `@monthly`
//! (`0 0 1 * *`) or `@yearly` or `@annually` (`0 0 1 1 *`).
//!
//! For example `*/15 9-17 * * mon-fri` runs every quarter hour from 09:00 to 17:45 on weekdays,
//! and `30 6 1,15 * *` runs at 06:30 on the 1st and 15th of every month:
//!
//! ```
//! use plugdesk_workflow::schedule::Schedule;
//!
//! let schedule: Schedule = "0 9 * * mon-fri".parse()?;
//! // Tuesday 2026-11-24 09:00 UTC
//! assert!(schedule.matches(1_795_510_800_000));
//! // The next run after it is Wednesday 09:00.
//! assert_eq!(schedule.next_after(1_795_510_800_000), Some(1_795_597_200_000));
//! # Ok::<(), plugdesk_workflow::schedule::ScheduleError>(())
//! ```
//!
//! All times are UTC, given as Unix milliseconds; a schedule has no time zone and no seconds.
//!
//! Days follow Vixie cron: when both day-of-month and day-of-week are restricted, a day matches
//! when *either* matches (`0 0 13 * fri` runs on every 13th and on every Friday); when either
//! of them is unrestricted, both must match. As in Vixie cron, a field counts as unrestricted
//! when it starts with `*`, so `*/2` (odd days) in day-of-month together with `mon` runs only
//! on Mondays that fall on an odd day.

use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, NaiveDate};

/// Why a schedule expression was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct ScheduleError {
    /// What is wrong, e.g. `minute 75 is out of range 0-59`.
    pub message: String,
    /// 1-based column, in characters, of the offending field or token in the expression.
    pub column: usize,
}

/// A parsed cron schedule: the minutes, hours, days, months and weekdays it runs on.
///
/// Build one with [`Schedule::parse`], [`parse`] or [`str::parse`]; see the
/// [module documentation](self) for the syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Bit `n` set: runs at minute `n` (0-59).
    minutes: u64,
    /// Bit `n` set: runs in hour `n` (0-23).
    hours: u32,
    /// Bit `n` set: runs on day-of-month `n` (1-31).
    days: u32,
    /// Bit `n` set: runs in month `n` (1-12).
    months: u16,
    /// Bit `n` set: runs on weekday `n` (0 = Sunday .. 6 = Saturday).
    weekdays: u8,
    /// The day-of-month field does not start with `*`.
    days_restricted: bool,
    /// The day-of-week field does not start with `*`.
    weekdays_restricted: bool,
    /// The expression, trimmed, with fields separated by single spaces.
    source: String,
}

/// Parses a cron expression; the same as [`Schedule::parse`].
///
/// # Errors
///
/// A [`ScheduleError`] naming the column and the problem when `expr` is not a valid schedule.
pub fn parse(expr: &str) -> Result<Schedule, ScheduleError> {
    Schedule::parse(expr)
}

const MS_PER_MINUTE: i64 = 60_000;
const MINUTES_PER_DAY: i64 = 1_440;
/// Days in one 400-year Gregorian cycle, after which dates and weekdays repeat exactly: a
/// schedule that can match at all matches within this many days of any instant.
const DAYS_PER_CYCLE: i64 = 146_097;
const ALL_WEEKDAYS: u8 = 0x7f;
const FIELD_NAMES: &str = "minute hour day-of-month month day-of-week";
const MONTH_NAMES: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const WEEKDAY_NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
/// Longest token quoted back in an error message, in characters.
const MAX_QUOTED: usize = 24;

/// Which names a field accepts besides numbers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Names {
    None,
    Months,
    Weekdays,
}

/// One of the five fields: its name in messages, its bounds and its names.
#[derive(Clone, Copy)]
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: Names,
}

const MINUTE: Field = Field { name: "minute", min: 0, max: 59, names: Names::None };
const HOUR: Field = Field { name: "hour", min: 0, max: 23, names: Names::None };
const DAY_OF_MONTH: Field = Field { name: "day-of-month", min: 1, max: 31, names: Names::None };
const MONTH: Field = Field { name: "month", min: 1, max: 12, names: Names::Months };
const DAY_OF_WEEK: Field = Field { name: "day-of-week", min: 0, max: 7, names: Names::Weekdays };

impl Schedule {
    /// Parses a five-field cron expression or an alias such as `@daily`.
    ///
    /// # Errors
    ///
    /// A [`ScheduleError`] naming the column and the problem, e.g. `column 1: minute 75 is out of
    /// range 0-59` or `column 7: unknown month name "foo"`.
    pub fn parse(expr: &str) -> Result<Schedule, ScheduleError> {
        let fields = split_fields(expr);
        if let Some(&(column, first)) = fields.first()
            && first.starts_with('@')
        {
            return parse_alias(&fields, column, first);
        }
        if fields.len() != 5 {
            let column = match fields.get(5) {
                Some(&(column, _)) => column,
                None => trim_end_ws(expr).chars().count() + 1,
            };
            return Err(error(column, format!("expected 5 fields ({FIELD_NAMES}), found {}", fields.len())));
        }
        parse_fields(&fields)
    }

    /// Whether the schedule runs in the minute (UTC) that contains `unix_ms`.
    pub fn matches(&self, unix_ms: i64) -> bool {
        let minute = unix_ms.div_euclid(MS_PER_MINUTE);
        let day = minute.div_euclid(MINUTES_PER_DAY);
        let minute_of_day = minute.rem_euclid(MINUTES_PER_DAY);
        let date = folded(day);
        has_bit(self.minutes, (minute_of_day % 60) as u32)
            && has_bit(u64::from(self.hours), (minute_of_day / 60) as u32)
            && has_bit(u64::from(self.months), date.month())
            && self.day_matches(date.day(), date.weekday().num_days_from_sunday())
    }

    /// The start (Unix milliseconds, seconds zero) of the first minute the schedule runs in
    /// strictly after the minute that contains `unix_ms`.
    ///
    /// `None` when the schedule can never run (such as `0 0 30 2 *`, February 30th) or the next
    /// run would not fit in an `i64`. Whole months and days that cannot match are skipped, so a
    /// call takes microseconds even when the next run is years away.
    pub fn next_after(&self, unix_ms: i64) -> Option<i64> {
        if !self.can_ever_match() {
            return None;
        }
        let start = unix_ms.div_euclid(MS_PER_MINUTE).checked_add(1)?;
        let mut day = start.div_euclid(MINUTES_PER_DAY);
        // The first minute of `day` still to look at; 0 on every day after the first.
        let mut from_minute = start.rem_euclid(MINUTES_PER_DAY) as u32;
        // Dates and weekdays repeat every 400 years, so a possible schedule matches within one
        // cycle. The loop ends at the next run, and the rarest runs (a 29th of February that
        // must be a Sunday, `0 0 29 2 */7`) are 40 years apart, a few hundred steps.
        let last_day = day + DAYS_PER_CYCLE;
        let (mut year, mut month, mut dom) = civil_from_days(day);
        // With the AND rule a day must be in the day-of-month set, so jump between its days.
        let and_rule = !(self.days_restricted && self.weekdays_restricted);
        while day <= last_day {
            let month_len = days_in_month(year, month);
            let candidate = if !has_bit(u64::from(self.months), month) {
                None
            } else if and_rule {
                next_bit(u64::from(self.days), dom).filter(|&d| d <= month_len)
            } else {
                Some(dom)
            };
            let Some(candidate) = candidate else {
                (year, month) = next_month(year, month);
                day = days_from_civil(year, month, 1);
                dom = 1;
                from_minute = 0;
                continue;
            };
            if candidate != dom {
                day += i64::from(candidate - dom);
                dom = candidate;
                from_minute = 0;
            }
            if self.day_matches(dom, weekday(day))
                && let Some(minute_of_day) = self.first_minute_from(from_minute)
            {
                return day
                    .checked_mul(MINUTES_PER_DAY)?
                    .checked_add(i64::from(minute_of_day))?
                    .checked_mul(MS_PER_MINUTE);
            }
            day += 1;
            from_minute = 0;
            if dom >= month_len {
                (year, month) = next_month(year, month);
                dom = 1;
            } else {
                dom += 1;
            }
        }
        None
    }

    /// Whether a day is a run day, by the Vixie cron rule.
    fn day_matches(&self, dom: u32, weekday: u32) -> bool {
        let by_dom = has_bit(u64::from(self.days), dom);
        let by_weekday = has_bit(u64::from(self.weekdays), weekday);
        if self.days_restricted && self.weekdays_restricted { by_dom || by_weekday } else { by_dom && by_weekday }
    }

    /// The first run time of a run day at or after `from` minutes past midnight.
    fn first_minute_from(&self, from: u32) -> Option<u32> {
        let (hour, minute) = (from / 60, from % 60);
        if has_bit(u64::from(self.hours), hour)
            && let Some(minute) = next_bit(self.minutes, minute)
        {
            return Some(hour * 60 + minute);
        }
        let hour = next_bit(u64::from(self.hours), hour + 1)?;
        Some(hour * 60 + next_bit(self.minutes, 0)?)
    }

    /// Whether any day can ever match. With the OR rule every weekday set matches some day; with
    /// the AND rule every date falls on every weekday within 400 years, so only dates that do
    /// not exist (the 30th of February, the 31st of April) can make a schedule impossible.
    fn can_ever_match(&self) -> bool {
        if self.days_restricted && self.weekdays_restricted {
            return true;
        }
        (1..=12).any(|month| {
            let days_that_exist = (1u64 << (days_in_month(2000, month) + 1)) - 2;
            has_bit(u64::from(self.months), month) && u64::from(self.days) & days_that_exist != 0
        })
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(expr: &str) -> Result<Self, Self::Err> {
        Schedule::parse(expr)
    }
}

impl fmt::Display for Schedule {
    /// The expression as written, trimmed, with fields separated by single spaces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn error(column: usize, message: String) -> ScheduleError {
    ScheduleError { message, column }
}

/// `s` without trailing whitespace (of any kind, as fields are split on any).
fn trim_end_ws(s: &str) -> &str {
    s.trim_end_matches(char::is_whitespace)
}

/// The whitespace-separated fields of `expr` with their 1-based character columns.
fn split_fields(expr: &str) -> Vec<(usize, &str)> {
    let mut fields = Vec::new();
    let mut start: Option<(usize, usize)> = None;
    for (index, (byte, c)) in expr.char_indices().enumerate() {
        if c.is_whitespace() {
            if let Some((start_byte, column)) = start.take() {
                fields.push((column, &expr[start_byte..byte]));
            }
        } else if start.is_none() {
            start = Some((byte, index + 1));
        }
    }
    if let Some((start_byte, column)) = start {
        fields.push((column, &expr[start_byte..]));
    }
    fields
}

/// `token` for quoting in a message, cut short if the user sent something long.
fn shown(token: &str) -> String {
    if token.chars().count() <= MAX_QUOTED {
        token.to_owned()
    } else {
        let mut cut: String = token.chars().take(MAX_QUOTED).collect();
        cut.push('…');
        cut
    }
}

fn parse_alias(fields: &[(usize, &str)], column: usize, alias: &str) -> Result<Schedule, ScheduleError> {
    if let Some(&(extra, _)) = fields.get(1) {
        return Err(error(extra, format!("{:?} must be the whole expression, with no other fields", shown(alias))));
    }
    let expansion = match alias.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        "@reboot" => {
            return Err(error(
                column,
                "@reboot is not supported: schedules run at times of day, not at startup".into(),
            ));
        }
        _ => {
            return Err(error(
                column,
                format!(
                    "unknown alias {:?} (expected @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly)",
                    shown(alias)
                ),
            ));
        }
    };
    let mut schedule = parse_fields(&split_fields(expansion))?;
    schedule.source = alias.to_owned();
    Ok(schedule)
}

/// Builds a schedule from exactly five fields.
fn parse_fields(fields: &[(usize, &str)]) -> Result<Schedule, ScheduleError> {
    let [minute, hour, dom, month, dow] = fields else {
        return Err(error(1, format!("expected 5 fields ({FIELD_NAMES}), found {}", fields.len())));
    };
    // The casts cannot truncate: each mask only has bits within its field's bounds.
    let weekdays = parse_field(dow.1, dow.0, DAY_OF_WEEK)?;
    Ok(Schedule {
        minutes: parse_field(minute.1, minute.0, MINUTE)?,
        hours: parse_field(hour.1, hour.0, HOUR)? as u32,
        days: parse_field(dom.1, dom.0, DAY_OF_MONTH)? as u32,
        months: parse_field(month.1, month.0, MONTH)? as u16,
        // Day 7 is Sunday, like day 0.
        weekdays: ((weekdays | weekdays >> 7) & u64::from(ALL_WEEKDAYS)) as u8,
        days_restricted: !dom.1.starts_with('*'),
        weekdays_restricted: !dow.1.starts_with('*'),
        source: fields.iter().map(|&(_, text)| text).collect::<Vec<_>>().join(" "),
    })
}

/// The bitmask of a comma-separated field starting at `column`.
fn parse_field(text: &str, column: usize, field: Field) -> Result<u64, ScheduleError> {
    let mut mask = 0u64;
    let mut item_column = column;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(error(item_column, format!("empty entry in {} list", field.name)));
        }
        mask |= parse_item(item, item_column, field)?;
        item_column += item.chars().count() + 1;
    }
    Ok(mask)
}

/// The bitmask of one list entry: `*`, `n`, `a-b`, each optionally followed by `/step`.
fn parse_item(item: &str, column: usize, field: Field) -> Result<u64, ScheduleError> {
    let (base, step) = match item.split_once('/') {
        Some((base, step)) => {
            let step_column = column + base.chars().count() + 1;
            (base, Some(parse_step(step, step_column, field)?))
        }
        None => (item, None),
    };
    let (low, high) = if base == "*" {
        (field.min, field.max)
    } else if base.is_empty() {
        return Err(error(
            column,
            format!("missing start before \"/\" in {} (write */n for every n-th value)", field.name),
        ));
    } else if let Some((start, end)) = base.split_once('-') {
        let end_column = column + start.chars().count() + 1;
        if start.is_empty() {
            return Err(error(column, format!("{} range {:?} is missing its start", field.name, shown(base))));
        }
        if end.is_empty() {
            return Err(error(end_column, format!("{} range {:?} is missing its end", field.name, shown(base))));
        }
        let low = parse_value(start, column, field)?;
        let high = parse_value(end, end_column, field)?;
        if low > high {
            // Weekdays wrap after Saturday (6), whatever the field's bound of 7 allows.
            let last = if field.names == Names::Weekdays { 6 } else { field.max };
            let mut message = format!("{} range {}-{} is not ascending", field.name, shown(start), shown(end));
            if low <= last {
                message.push_str(&format!(
                    " (to wrap around, write {}-{last},{}-{})",
                    shown(start),
                    field.min,
                    shown(end)
                ));
            }
            return Err(error(column, message));
        }
        (low, high)
    } else {
        let value = parse_value(base, column, field)?;
        // `n/s` runs from n to the end of the field.
        if step.is_some() { (value, field.max) } else { (value, value) }
    };
    let step = step.unwrap_or(1) as usize;
    Ok((low..=high).step_by(step).fold(0u64, |mask, value| mask | 1u64 << value))
}

/// The number after `/`: at least 1 and no more than the field's span.
fn parse_step(text: &str, column: usize, field: Field) -> Result<u32, ScheduleError> {
    if text.is_empty() {
        return Err(error(column, format!("missing step after \"/\" in {}", field.name)));
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(error(column, format!("step {:?} is not a number", shown(text))));
    }
    let span = field.max - field.min;
    match text.parse::<u32>() {
        Ok(0) => Err(error(column, "step must be at least 1".into())),
        Ok(step) if step <= span => Ok(step),
        _ => Err(error(
            column,
            format!("step {} is larger than the {} range {}-{}", shown(text), field.name, field.min, field.max),
        )),
    }
}

/// One value of a field: a number within bounds or, for months and weekdays, a name.
fn parse_value(token: &str, column: usize, field: Field) -> Result<u32, ScheduleError> {
    if token.bytes().all(|b| b.is_ascii_digit()) {
        return match token.parse::<u32>() {
            Ok(value) if (field.min..=field.max).contains(&value) => Ok(value),
            _ => Err(error(
                column,
                format!("{} {} is out of range {}-{}", field.name, shown(token), field.min, field.max),
            )),
        };
    }
    let (names, kind): (&[&str], &str) = match field.names {
        Names::None => return Err(error(column, format!("{} {:?} is not a number", field.name, shown(token)))),
        Names::Months => (&MONTH_NAMES, "month"),
        Names::Weekdays => (&WEEKDAY_NAMES, "day-of-week"),
    };
    if !token.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(error(column, format!("{} {:?} is not a number or {kind} name", field.name, shown(token))));
    }
    let first = if field.names == Names::Months { 1 } else { 0 };
    match names.iter().position(|name| name.eq_ignore_ascii_case(token)) {
        Some(index) => Ok(first + index as u32),
        None => Err(error(column, format!("unknown {kind} name {:?}", shown(token)))),
    }
}

fn has_bit(mask: u64, bit: u32) -> bool {
    bit < 64 && (mask >> bit) & 1 == 1
}

/// The lowest set bit of `mask` at or above `from`.
fn next_bit(mask: u64, from: u32) -> Option<u32> {
    if from >= 64 {
        return None;
    }
    let rest = mask & (u64::MAX << from);
    if rest == 0 { None } else { Some(rest.trailing_zeros()) }
}

/// The date of a day counted from 1970-01-01, moved into the 400-year cycle that starts on
/// 1970-01-01: the same month, day of the month and weekday, in a year 1970..2370.
///
/// Why the fold: chrono's dates end some 262,000 years either side of now, and a schedule is
/// asked about any `i64` instant. The Gregorian calendar repeats every 400 years, and a cycle's
/// 146,097 days are a whole number of weeks, so nothing about a day changes but its year.
fn folded(day: i64) -> NaiveDate {
    // 0..146_097 fits an i32 and chrono's range, so the default (1970-01-01) is never taken.
    NaiveDate::from_epoch_days(day.rem_euclid(DAYS_PER_CYCLE) as i32).unwrap_or_default()
}

/// Weekday of a day counted from 1970-01-01: 0 = Sunday .. 6 = Saturday.
fn weekday(day: i64) -> u32 {
    folded(day).weekday().num_days_from_sunday()
}

/// Days in a month (1-12) of a proleptic Gregorian year.
fn days_in_month(year: i64, month: u32) -> u32 {
    // Leap years repeat every 400 years too; 2000 + 0..400 is well within chrono's range.
    let year = 2000 + year.rem_euclid(400) as i32;
    NaiveDate::from_ymd_opt(year, month, 1).map_or(31, |first| u32::from(first.num_days_in_month()))
}

fn next_month(year: i64, month: u32) -> (i64, u32) {
    if month >= 12 { (year + 1, 1) } else { (year, month + 1) }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (that exists: February 30th gives the
/// start of the date's 400-year cycle).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    // Fold the year into 1970..2370 for chrono, as `folded` does the day.
    let cycles = (year - 1970).div_euclid(400);
    let in_cycle = (year - cycles * 400) as i32;
    let day_in_cycle = NaiveDate::from_ymd_opt(in_cycle, month, day).map_or(0, |date| date.to_epoch_days());
    cycles * DAYS_PER_CYCLE + i64::from(day_in_cycle)
}

/// The proleptic Gregorian (year, month, day) of a day counted from 1970-01-01.
fn civil_from_days(day: i64) -> (i64, u32, u32) {
    let date = folded(day);
    (i64::from(date.year()) + day.div_euclid(DAYS_PER_CYCLE) * 400, date.month(), date.day())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seconds to milliseconds; every constant below was checked with `date -u -d @SECONDS`.
    const fn at(seconds: i64) -> i64 {
        seconds * 1000
    }

    /// 2026-11-24T09:00:00Z, a Tuesday.
    const TUE_0900: i64 = at(1_795_510_800);

    fn sched(expr: &str) -> Schedule {
        match Schedule::parse(expr) {
            Ok(schedule) => schedule,
            Err(e) => panic!("{expr:?} should parse: {e}"),
        }
    }

    fn err(expr: &str) -> (usize, String) {
        match Schedule::parse(expr) {
            Ok(schedule) => panic!("{expr:?} should not parse, got {schedule:?}"),
            Err(e) => (e.column, e.message),
        }
    }

    fn bits(values: impl IntoIterator<Item = u32>) -> u64 {
        values.into_iter().fold(0, |mask, v| mask | 1 << v)
    }

    #[test]
    fn parses_every_field_form() {
        let s = sched("*/15 9-17/2 1,15,31 jan-MAR,Dec 5/1");
        assert_eq!(s.minutes, bits([0, 15, 30, 45]));
        assert_eq!(u64::from(s.hours), bits([9, 11, 13, 15, 17]));
        assert_eq!(u64::from(s.days), bits([1, 15, 31]));
        assert_eq!(u64::from(s.months), bits([1, 2, 3, 12]));
        // 5/1 is 5, 6, 7, and 7 is Sunday.
        assert_eq!(u64::from(s.weekdays), bits([0, 5, 6]));

        let s = sched("* * * * *");
        assert_eq!(s.minutes, (1 << 60) - 1);
        assert_eq!(s.hours, (1 << 24) - 1);
        assert_eq!(s.days, u32::MAX - 1);
        assert_eq!(s.months, 0x1ffe);
        assert_eq!(s.weekdays, ALL_WEEKDAYS);
        assert!(!s.days_restricted && !s.weekdays_restricted);

        let s = sched("5/20 0 */10 */5 mon-fri");
        assert_eq!(s.minutes, bits([5, 25, 45]));
        assert_eq!(u64::from(s.days), bits([1, 11, 21, 31]));
        assert_eq!(u64::from(s.months), bits([1, 6, 11]));
        assert_eq!(u64::from(s.weekdays), bits(1..=5));
        assert!(s.weekdays_restricted);

        // 0 and 7 are both Sunday; names are case-insensitive.
        assert_eq!(sched("0 0 * * 7").weekdays, 1);
        assert_eq!(sched("0 0 * * 0").weekdays, 1);
        assert_eq!(sched("0 0 * * SUN").weekdays, 1);
        assert_eq!(u64::from(sched("0 0 * * 0-7").weekdays), u64::from(ALL_WEEKDAYS));
        assert_eq!(u64::from(sched("0 0 * * */2").weekdays), bits([0, 2, 4, 6]));
        assert_eq!(u64::from(sched("0 0 * * Tue,THU,sat").weekdays), bits([2, 4, 6]));
        assert_eq!(u64::from(sched("0 0 * jUl,aug,sep,oct,nov *").months), bits(7..=11));
        assert_eq!(u64::from(sched("0 0 * apr-jun/2 *").months), bits([4, 6]));
        assert_eq!(sched("00 05 * * *").minutes, 1);
        assert_eq!(sched("59 23 31 12 6").minutes, 1 << 59);
        assert!(sched("0 0 1 * *").days_restricted);
        assert!(!sched("0 0 */2 * *").days_restricted);
    }

    #[test]
    fn aliases_expand() {
        let same = |alias: &str, expr: &str| {
            let (a, b) = (sched(alias), sched(expr));
            assert_eq!(
                (a.minutes, a.hours, a.days, a.months, a.weekdays, a.days_restricted, a.weekdays_restricted),
                (b.minutes, b.hours, b.days, b.months, b.weekdays, b.days_restricted, b.weekdays_restricted),
                "{alias} vs {expr}"
            );
        };
        same("@hourly", "0 * * * *");
        same("@daily", "0 0 * * *");
        same("@midnight", "0 0 * * *");
        same("@weekly", "0 0 * * 0");
        same("@monthly", "0 0 1 * *");
        same("@yearly", "0 0 1 1 *");
        same("@annually", "0 0 1 1 *");
        same("  @DAILY\t", "0 0 * * *");
    }

    #[test]
    fn display_normalises_whitespace() {
        assert_eq!(sched("  */5\t 9-17  *  *   mon-fri \n").to_string(), "*/5 9-17 * * mon-fri");
        assert_eq!(sched(" @Weekly ").to_string(), "@Weekly");
        let s: Schedule = "0 9 * * 1-5".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s, sched("0  9 * *\t1-5"));
        assert_eq!(parse("1 2 3 4 5"), Schedule::parse("1 2 3 4 5"));
    }

    #[test]
    fn field_count_errors() {
        let expected = "expected 5 fields (minute hour day-of-month month day-of-week)";
        assert_eq!(err("* * * *"), (8, format!("{expected}, found 4")));
        assert_eq!(err("* * * * * *"), (11, format!("{expected}, found 6")));
        assert_eq!(err("  0 0 0  "), (8, format!("{expected}, found 3")));
        assert_eq!(err(""), (1, format!("{expected}, found 0")));
        assert_eq!(err(" \t "), (1, format!("{expected}, found 0")));
    }

    #[test]
    fn out_of_range_errors() {
        assert_eq!(err("75 * * * *"), (1, "minute 75 is out of range 0-59".into()));
        assert_eq!(err("0 24 * * *"), (3, "hour 24 is out of range 0-23".into()));
        assert_eq!(err("0 0 0 * *"), (5, "day-of-month 0 is out of range 1-31".into()));
        assert_eq!(err("0 0 32 * *"), (5, "day-of-month 32 is out of range 1-31".into()));
        assert_eq!(err("0 0 * 13 *"), (7, "month 13 is out of range 1-12".into()));
        assert_eq!(err("0 0 * 0 *"), (7, "month 0 is out of range 1-12".into()));
        assert_eq!(err("0 0 * * 8"), (9, "day-of-week 8 is out of range 0-7".into()));
        // The column points at the bad value inside a list or range.
        assert_eq!(err("0,5,60 * * * *"), (5, "minute 60 is out of range 0-59".into()));
        assert_eq!(err("0 1-25 * * *"), (5, "hour 25 is out of range 0-23".into()));
        assert_eq!(err("99999999999999999999 * * * *"), (1, "minute 99999999999999999999 is out of range 0-59".into()));
        // Columns count characters, after leading whitespace and tabs.
        assert_eq!(err("  0\t99 * * *"), (5, "hour 99 is out of range 0-23".into()));
        assert_eq!(err("0 ０ * * *"), (3, "hour \"０\" is not a number".into()));
    }

    #[test]
    fn name_errors() {
        assert_eq!(err("0 0 * foo *"), (7, "unknown month name \"foo\"".into()));
        assert_eq!(err("0 0 * jan-foo *"), (11, "unknown month name \"foo\"".into()));
        assert_eq!(err("0 0 * * funday"), (9, "unknown day-of-week name \"funday\"".into()));
        assert_eq!(err("0 0 * * monday"), (9, "unknown day-of-week name \"monday\"".into()));
        assert_eq!(err("0 0 * ü *"), (7, "month \"ü\" is not a number or month name".into()));
        assert_eq!(err("0 0 * * 1x"), (9, "day-of-week \"1x\" is not a number or day-of-week name".into()));
        // Names belong to the month and day-of-week fields only.
        assert_eq!(err("jan * * * *"), (1, "minute \"jan\" is not a number".into()));
        assert_eq!(err("0 0 mon * *"), (5, "day-of-month \"mon\" is not a number".into()));
        assert_eq!(err("x * * * *"), (1, "minute \"x\" is not a number".into()));
        let long = "y".repeat(40);
        assert_eq!(err(&format!("0 0 * {long} *")).1, format!("unknown month name \"{}…\"", "y".repeat(24)));
    }

    #[test]
    fn step_errors() {
        assert_eq!(err("*/0 * * * *"), (3, "step must be at least 1".into()));
        assert_eq!(err("0 1-5/00 * * *"), (7, "step must be at least 1".into()));
        assert_eq!(err("*/ * * * *"), (3, "missing step after \"/\" in minute".into()));
        assert_eq!(err("*/x * * * *"), (3, "step \"x\" is not a number".into()));
        assert_eq!(err("*/1/2 * * * *"), (3, "step \"1/2\" is not a number".into()));
        assert_eq!(err("*/60 * * * *"), (3, "step 60 is larger than the minute range 0-59".into()));
        assert_eq!(err("0 0 * */12 *"), (9, "step 12 is larger than the month range 1-12".into()));
        assert_eq!(
            err("/5 * * * *"),
            (1, "missing start before \"/\" in minute (write */n for every n-th value)".into())
        );
    }

    #[test]
    fn range_and_list_errors() {
        assert_eq!(
            err("0 22-2 * * *"),
            (3, "hour range 22-2 is not ascending (to wrap around, write 22-23,0-2)".into())
        );
        assert_eq!(
            err("0 0 * * fri-mon"),
            (9, "day-of-week range fri-mon is not ascending (to wrap around, write fri-6,0-mon)".into())
        );
        assert_eq!(err("0 0 * * 7-1"), (9, "day-of-week range 7-1 is not ascending".into()));
        assert_eq!(err("-5 * * * *"), (1, "minute range \"-5\" is missing its start".into()));
        assert_eq!(err("5- * * * *"), (3, "minute range \"5-\" is missing its end".into()));
        assert_eq!(err("1-2-3 * * * *"), (3, "minute \"2-3\" is not a number".into()));
        assert_eq!(err("*-5 * * * *"), (1, "minute \"*\" is not a number".into()));
        assert_eq!(err("1,,2 * * * *"), (3, "empty entry in minute list".into()));
        assert_eq!(err("0 0 * * 1,"), (11, "empty entry in day-of-week list".into()));
        assert_eq!(err(",1 * * * *"), (1, "empty entry in minute list".into()));
    }

    #[test]
    fn alias_errors() {
        assert_eq!(
            err("@foo"),
            (
                1,
                "unknown alias \"@foo\" (expected @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly)"
                    .into()
            )
        );
        assert_eq!(
            err("  @reboot"),
            (3, "@reboot is not supported: schedules run at times of day, not at startup".into())
        );
        assert_eq!(err("@daily *"), (8, "\"@daily\" must be the whole expression, with no other fields".into()));
        assert_eq!(
            err("@"),
            (
                1,
                "unknown alias \"@\" (expected @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly)"
                    .into()
            )
        );
        // "@" anywhere but first is just a bad token.
        assert_eq!(err("0 @daily * * *"), (3, "hour \"@daily\" is not a number".into()));
    }

    #[test]
    fn error_display() {
        let e = ScheduleError { message: "minute 75 is out of range 0-59".into(), column: 1 };
        assert_eq!(e.to_string(), "column 1: minute 75 is out of range 0-59");
        assert_eq!(
            "0 0 * foo *".parse::<Schedule>().map_err(|e| e.to_string()),
            Err("column 7: unknown month name \"foo\"".into())
        );
    }

    #[test]
    fn garbage_never_panics() {
        let inputs = [
            "",
            "@",
            "*",
            "/",
            "-",
            ",",
            "*/*",
            "1-/2",
            "-/-",
            "0-0/1 0 1 1 0",
            "* * * * * * * * * *",
            "\u{0}",
            "🙂 * * * *",
            "* * * * 🙂",
            "1-99999999999 * * * *",
            "*/4294967296 * * * *",
            "4294967295 * * * *",
            "1/ * * * *",
            "0 0 31 2 *",
            "\u{a0}0\u{2003}0 * * *\u{3000}",
        ];
        for input in inputs {
            let _ = Schedule::parse(input);
        }
        // Any Unicode whitespace separates fields.
        assert_eq!(sched("\u{a0}0\u{2003}0 * * *\u{3000}").to_string(), "0 0 * * *");
    }

    #[test]
    fn calendar_conversion() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(weekday(0), 4);
        // 1969-12-31, a Wednesday.
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(weekday(-1), 3);
        assert_eq!(civil_from_days(951_782_400 / 86_400), (2000, 2, 29));
        assert_eq!(days_from_civil(2104, 2, 29), 4_233_686_400 / 86_400);
        assert_eq!(weekday(TUE_0900 / 86_400_000), 2);
        // Round trip and day-by-day continuity over 1600..2400.
        let first = days_from_civil(1600, 1, 1);
        let mut expected = (1600, 1, 1);
        for day in first..days_from_civil(2400, 1, 1) {
            let civil = civil_from_days(day);
            assert_eq!(civil, expected, "day {day}");
            assert_eq!(days_from_civil(civil.0, civil.1, civil.2), day);
            expected = if civil.2 == days_in_month(civil.0, civil.1) {
                let (y, m) = next_month(civil.0, civil.1);
                (y, m, 1)
            } else {
                (civil.0, civil.1, civil.2 + 1)
            };
        }
    }

    #[test]
    fn matches_instants() {
        let weekdays_9 = sched("0 9 * * 1-5");
        assert!(weekdays_9.matches(TUE_0900));
        // Any instant within the minute matches.
        assert!(weekdays_9.matches(TUE_0900 + 59_999));
        assert!(!weekdays_9.matches(TUE_0900 + 60_000));
        assert!(!weekdays_9.matches(TUE_0900 - 1));
        // Sunday 2026-11-22 09:00.
        assert!(!weekdays_9.matches(at(1_795_338_000)));
        assert!(sched("0 9 * * sun").matches(at(1_795_338_000)));
        assert!(sched("0 9 * * 7").matches(at(1_795_338_000)));
        assert!(sched("0 9 24 nov tue").matches(TUE_0900));
        assert!(sched("0 9 24 11 *").matches(TUE_0900));
        assert!(!sched("0 9 25 11 *").matches(TUE_0900));
        assert!(!sched("0 9 * 12 *").matches(TUE_0900));
        assert!(sched("*/15 * * * *").matches(at(1_795_511_700)));
        // OR rule: the 1st or a Tuesday matches Tuesday the 24th; AND with `*` in day-of-month.
        assert!(sched("0 9 1 * tue").matches(TUE_0900));
        assert!(sched("0 9 24 * mon").matches(TUE_0900));
        assert!(!sched("0 9 */2 * tue").matches(TUE_0900));
        // Wednesday the 25th is odd.
        assert!(sched("0 9 */2 * wed").matches(at(1_795_597_200)));
        // 1970-01-01 00:00 was a Thursday; 1969-12-31 a Wednesday.
        assert!(sched("0 0 1 1 thu").matches(0));
        assert!(sched("59 23 31 12 wed").matches(-1));
        assert!(!sched("59 23 31 12 wed").matches(0));
        // 2000-02-29, a Tuesday.
        assert!(sched("@daily").matches(at(951_782_400)));
        assert!(sched("0 0 29 2 tue").matches(at(951_782_400)));
        // Extremes do not panic.
        let every = sched("* * * * *");
        assert!(every.matches(i64::MIN) && every.matches(i64::MAX));
    }

    #[test]
    fn next_after_basics() {
        let weekdays_9 = sched("0 9 * * mon-fri");
        // Strictly after the minute containing the instant.
        assert_eq!(weekdays_9.next_after(TUE_0900), Some(at(1_795_597_200)));
        assert_eq!(weekdays_9.next_after(TUE_0900 + 59_999), Some(at(1_795_597_200)));
        assert_eq!(weekdays_9.next_after(TUE_0900 - 1), Some(TUE_0900));
        // From 09:07:30.5 to 09:15:00.
        assert_eq!(sched("*/15 * * * *").next_after(TUE_0900 + 450_500), Some(at(1_795_511_700)));
        // From 13:00 to 18:00, skipping hours.
        assert_eq!(sched("0 */6 * * *").next_after(at(1_795_525_200)), Some(at(1_795_543_200)));
        assert_eq!(sched("* * * * *").next_after(TUE_0900 + 1), Some(TUE_0900 + 60_000));
        // Before 1970: 1969-12-31T23:59:30 to midnight.
        assert_eq!(sched("* * * * *").next_after(-30_000), Some(0));
        assert_eq!(sched("0 0 * * *").next_after(at(-86_400)), Some(0));
    }

    #[test]
    fn next_after_across_months_and_years() {
        // Month boundary: 2026-11-24 09:00 to 2026-12-01 12:30.
        assert_eq!(sched("30 12 1 * *").next_after(TUE_0900), Some(at(1_796_128_200)));
        // 31st: from 2026-04-01 to 2026-05-31, April having 30 days.
        assert_eq!(sched("0 0 31 * *").next_after(at(1_775_001_600)), Some(at(1_780_185_600)));
        // Year boundary: 2026-12-31 23:59 to 2027-01-01 00:00.
        assert_eq!(sched("0 0 1 1 *").next_after(at(1_798_761_540)), Some(at(1_798_761_600)));
        assert_eq!(sched("@yearly").next_after(TUE_0900), Some(at(1_798_761_600)));
        assert_eq!(sched("* * * * *").next_after(at(1_798_761_540)), Some(at(1_798_761_600)));
        // January only, from July 2026 to 2027-01-01.
        assert_eq!(sched("0 0 * jan *").next_after(at(1_782_864_000)), Some(at(1_798_761_600)));
        // Leap day: from 2026-01-01 to 2028-02-29, and over 2100 (not a leap year) to 2104.
        assert_eq!(sched("0 0 29 2 *").next_after(at(1_767_225_600)), Some(at(1_835_395_200)));
        assert_eq!(sched("0 0 29 feb *").next_after(at(3_981_398_400)), Some(at(4_233_686_400)));
        // A leap day that must be a Sunday (`*/7` counts as unrestricted, so the AND rule): 2032,
        // 2060, 2088, then 40 years to 2128.
        let sunday_leap_day = sched("0 0 29 2 */7");
        assert_eq!(sunday_leap_day.next_after(TUE_0900), Some(at(1_961_625_600)));
        assert_eq!(sunday_leap_day.next_after(at(1_961_625_600)), Some(at(2_845_238_400)));
        assert_eq!(sunday_leap_day.next_after(at(3_728_851_200)), Some(at(4_991_068_800)));
    }

    #[test]
    fn next_after_day_rules() {
        // OR rule: the 13th or any Friday. From Tuesday 2026-11-24 to Friday 2026-11-27, then
        // from Friday 2026-12-11 00:00 to Sunday the 13th.
        let thirteenth_or_friday = sched("0 0 13 * 5");
        assert_eq!(thirteenth_or_friday.next_after(TUE_0900), Some(at(1_795_737_600)));
        assert_eq!(thirteenth_or_friday.next_after(at(1_796_947_200)), Some(at(1_797_120_000)));
        // Vixie: `*/2` counts as unrestricted, so odd days AND Mondays: Monday 2026-11-30 is
        // even, so the next is Monday 2026-12-07.
        assert_eq!(sched("0 0 */2 * mon").next_after(TUE_0900), Some(at(1_796_601_600)));
        // @weekly: from Tuesday 2026-11-24 to Sunday 2026-11-29 00:00.
        assert_eq!(sched("@weekly").next_after(TUE_0900), Some(at(1_795_910_400)));
        assert_eq!(sched("0 0 * * 7").next_after(TUE_0900), Some(at(1_795_910_400)));
        // 2026-11-29 is a Sunday and also the 29th.
        assert_eq!(sched("0 0 29 * sun").next_after(TUE_0900), Some(at(1_795_910_400)));
    }

    #[test]
    fn impossible_schedules() {
        for expr in ["0 0 30 2 *", "0 0 31 2 *", "0 0 31 4,6,9,11 *", "0 0 30,31 feb *", "0 0 31 apr */2"] {
            let s = sched(expr);
            assert_eq!(s.next_after(TUE_0900), None, "{expr}");
            assert_eq!(s.next_after(i64::MIN), None, "{expr}");
        }
        // With both day fields restricted the OR rule makes it possible: Mondays in February.
        // From 2026-11-24 the first is Monday 2027-02-01 (1_801_440_000).
        assert_eq!(sched("0 0 30 2 mon").next_after(TUE_0900), Some(at(1_801_440_000)));
        // No run fits in an i64 after the end of time; the start of time is fine.
        assert_eq!(sched("* * * * *").next_after(i64::MAX), None);
        assert!(sched("0 0 29 2 *").next_after(i64::MIN).is_some());
        assert_eq!(sched("0 0 29 2 *").next_after(i64::MAX - 30 * MS_PER_MINUTE), None);
    }

    /// Minute-by-minute reference: the first matching minute after the one containing `start`.
    fn brute_force(schedule: &Schedule, start: i64, limit_minutes: i64) -> Option<i64> {
        let first = (start.div_euclid(MS_PER_MINUTE) + 1) * MS_PER_MINUTE;
        (0..limit_minutes).map(|i| first + i * MS_PER_MINUTE).find(|&t| schedule.matches(t))
    }

    #[test]
    fn next_after_agrees_with_brute_force() {
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut random = move || {
            // Knuth's MMIX LCG; the high bits are the random ones.
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            state >> 33
        };
        // (expression, starts, scan limit in minutes: more than the longest gap)
        let cases: [(&str, u32, i64); 12] = [
            ("*/7 * * * *", 400, 61),
            ("5 4 * * sun", 300, 8 * 1440),
            ("0 9-17 * * mon-fri", 300, 4 * 1440),
            ("0 0 13 * 5", 300, 8 * 1440),
            ("0 0 */2 * mon", 200, 30 * 1440),
            ("30 2 1,15 */2 *", 150, 65 * 1440),
            ("15 10 31 * *", 100, 63 * 1440),
            ("@weekly", 200, 8 * 1440),
            ("*/15 8 * * 1/2", 300, 3 * 1440),
            ("0 12 * jan,jul sat", 80, 190 * 1440),
            ("45 23 28-31 * *", 200, 32 * 1440),
            ("0,30 0-3,22-23 1-7 * tue", 150, 40 * 1440),
        ];
        let (lowest, span) = (at(-2_000_000_000), at(6_200_000_000));
        for (expr, starts, limit) in cases {
            let schedule = sched(expr);
            for i in 0..starts {
                let offset = (random() << 31 | random()) as i64 % span;
                // Some starts exactly on a minute, on a matching minute, or just before one.
                let mut start = lowest + offset;
                match i % 4 {
                    0 => start -= start.rem_euclid(MS_PER_MINUTE),
                    1 => start = brute_force(&schedule, start, limit).map_or(start, |t| t - 1),
                    2 => start = brute_force(&schedule, start, limit).unwrap_or(start),
                    _ => {}
                }
                let expected = brute_force(&schedule, start, limit);
                assert!(expected.is_some(), "{expr}: scan limit too short from {start}");
                assert_eq!(schedule.next_after(start), expected, "{expr} from {start}");
            }
        }
    }

    #[test]
    fn random_expressions_never_panic() {
        let bounds = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)];
        let junk = ["", "-", "/", ",", "x", "@", "@daily", "é", "99999999999", "*", "jan", "sun", " "];
        let mut state: u64 = 7;
        let mut random = move |n: usize| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as usize % n
        };
        let (mut parsed, mut impossible) = (0, 0);
        for _ in 0..20_000 {
            let mut fields = Vec::new();
            for &(min, max) in &bounds {
                let mut items = Vec::new();
                for _ in 0..1 + random(2) {
                    // Mostly in range, sometimes one past the end.
                    let (a, b) = (min + random(max - min + 2), min + random(max - min + 2));
                    let mut item = match random(4) {
                        0 => "*".to_owned(),
                        1 => format!("{}-{}", a.min(b), a.max(b)),
                        _ => a.to_string(),
                    };
                    if random(3) == 0 {
                        item = format!("{item}/{}", 1 + random(max - min + 1));
                    }
                    if random(25) == 0 {
                        item.insert_str(random(item.len() + 1), junk[random(junk.len())]);
                    }
                    items.push(item);
                }
                fields.push(items.join(","));
            }
            let expr = fields.join(" ");
            let Ok(schedule) = Schedule::parse(&expr) else { continue };
            parsed += 1;
            for start in [i64::MIN, -1, 0, TUE_0900, at(4_233_686_400), i64::MAX] {
                let _ = schedule.matches(start);
                match schedule.next_after(start) {
                    Some(next) => {
                        assert!(next > start && next % MS_PER_MINUTE == 0 && schedule.matches(next), "{expr}")
                    }
                    None if start == TUE_0900 => impossible += 1,
                    None => {}
                }
            }
        }
        assert!(parsed > 2_000, "only {parsed} random expressions parsed");
        assert!(impossible > 0, "no impossible schedule generated");
    }

    #[test]
    fn next_after_is_fast_for_rare_schedules() {
        // Leap days from every year of a century, including over 2100: each call skips whole
        // months, so even in a debug build this is quick.
        let leap = sched("0 0 29 2 *");
        let started = std::time::Instant::now();
        let mut t = at(3_981_398_400);
        for _ in 0..50 {
            let next = leap.next_after(t).unwrap_or_else(|| panic!("no leap day after {t}"));
            assert!(leap.matches(next) && next > t);
            t = next;
        }
        // Feb 1 on a Monday with the AND rule recurs up to 12 years apart.
        let rare = sched("0 0 */30 feb mon");
        for _ in 0..50 {
            let next = rare.next_after(t).unwrap_or_else(|| panic!("no Monday Feb 1st after {t}"));
            assert!(rare.matches(next) && next > t);
            t = next;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
