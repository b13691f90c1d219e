//! The OTLP exporter's reading of a receiver's `Retry-After` (RFC 9110 §10.2.3): any text
//! gives a wait or none, never a panic; delay-seconds give exactly that many seconds; an
//! IMF-fixdate built here from calendar fields gives the time from "now" to it (zero once
//! past), computed with a civil-calendar formula written here; a date and its number of
//! seconds agree.
#![no_main]
// `derive(Arbitrary)` declares a std thread-local (its recursion guard), a type the workspace
// clippy.toml keeps behind infra_common::sync; a fuzz target is single-threaded test code.
#![allow(clippy::disallowed_types)]

use std::time::{Duration, UNIX_EPOCH};

use arbitrary::Arbitrary;
use infra_trace_ctx::fuzz_retry_after;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Value {
    Text(String),
    Seconds(u64),
    Date {
        year: u16,
        month: u8,
        day: u8,
        hour: u8,
        minute: u8,
        second: u8,
    },
}

#[derive(Debug, Arbitrary)]
struct Input {
    value: Value,
    /// The exporter clock's wall time, seconds since the Unix epoch (up to year 10000).
    now_secs: u32,
    /// Surrounding whitespace, which a header value may carry.
    padded: bool,
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];

fn is_leap(year: u64) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

/// Days from 1970-01-01 to `year-month-day`, counting whole years and months.
fn days_since_epoch(year: u64, month: u64, day: u64) -> u64 {
    let mut days = (1970..year)
        .map(|y| if is_leap(y) { 366 } else { 365 })
        .sum::<u64>();
    let lengths = [
        31,
        if is_leap(year) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    days += lengths[..(month - 1) as usize].iter().sum::<u64>();
    days + day - 1
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fuzz_target!(|input: Input| {
    let now = UNIX_EPOCH + Duration::from_secs(u64::from(input.now_secs));
    let pad = |text: String| {
        if input.padded {
            format!(" \t{text} ")
        } else {
            text
        }
    };
    match input.value {
        Value::Text(text) => {
            let got = fuzz_retry_after(&text, now);
            let trimmed = text.trim();
            if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
                let secs = trimmed.parse().unwrap_or(u64::MAX);
                assert_eq!(got, Some(Duration::from_secs(secs)), "{text:?}");
            }
        }
        Value::Seconds(secs) => {
            let got = fuzz_retry_after(&pad(secs.to_string()), now);
            assert_eq!(got, Some(Duration::from_secs(secs)));
        }
        Value::Date {
            year,
            month,
            day,
            hour,
            minute,
            second,
        } => {
            // A valid calendar date from 1970 through 9999 (what an HTTP-date can name).
            let year = 1970 + u64::from(year) % 8030;
            let month = 1 + u64::from(month) % 12;
            let day = 1 + u64::from(day) % days_in_month(year, month);
            let (hour, minute, second) = (hour % 24, minute % 60, second % 60);
            let days = days_since_epoch(year, month, day);
            let at =
                days * 86_400 + u64::from(hour) * 3600 + u64::from(minute) * 60 + u64::from(second);
            let text = format!(
                "{}, {day:02} {} {year} {hour:02}:{minute:02}:{second:02} GMT",
                WEEKDAYS[(days % 7) as usize],
                MONTHS[(month - 1) as usize],
            );
            let expected = Duration::from_secs(at.saturating_sub(u64::from(input.now_secs)));
            assert_eq!(
                fuzz_retry_after(&pad(text.clone()), now),
                Some(expected),
                "{text}"
            );
        }
    }
});
