use jiff::civil::{Date, date};
use proptest::prelude::*;

use super::*;

const HOUR: Nanos = 3_600 * NANOS_PER_SECOND;

/// The instant `day` starts in `zone`, found independently of the code
/// under test: the first whole second whose local date is `day` or later.
/// Bisection over instants finds *a* second where the local date reaches
/// `day`; local dates go backwards only where a fall-back crosses midnight
/// (America/St_Johns fell back at 00:01 until 2011: 00:00:59 NDT on 30
/// October 2005 was followed by 23:01 NST on the 29th), by at most the
/// hour or two of the change, so the three hours before it are then
/// searched, minute by minute (transitions fall on whole minutes), for an
/// earlier one. Uses only jiff's instant-to-local conversion, not its
/// local-to-instant disambiguation or calendar arithmetic.
fn first_second_of(zone: &TimeZone, day: Date, around: i64) -> i64 {
    let local_date = |second: i64| {
        zone.to_datetime(Timestamp::from_second(second).expect("in range"))
            .date()
    };
    let (mut low, mut high) = (around - 400 * 86_400, around + 400 * 86_400);
    assert!(local_date(low) < day && local_date(high) >= day);
    while high - low > 1 {
        let mid = low + (high - low) / 2;
        if local_date(mid) >= day {
            high = mid;
        } else {
            low = mid;
        }
    }
    // An earlier minute already on `day` (a fall-back across midnight)?
    let earlier = (1..=180)
        .rev()
        .map(|minutes| high - (high % 60) - 60 * minutes)
        .find(|&minute| local_date(minute) >= day);
    match earlier {
        // The date reached `day` within the minute before `minute`.
        Some(minute) => (minute - 59..=minute)
            .find(|&second| local_date(second) >= day)
            .expect("the minute itself is on `day`"),
        None => high,
    }
}

/// The expected window of `unit` containing `now` in `zone`, computed from
/// civil dates (own arithmetic) and [`first_second_of`].
fn expected(zone_name: &str, unit: Unit, now: Nanos) -> CalendarWindow {
    let zone = TimeZone::get(zone_name).expect("known zone");
    let second = i64::try_from(now / NANOS_PER_SECOND).expect("fits");
    let today = zone
        .to_datetime(Timestamp::from_second(second).expect("in range"))
        .date();
    let (first, next) = match unit {
        Unit::Day => (today, today.tomorrow().expect("date")),
        Unit::Week => {
            let back = i64::from(today.weekday().to_monday_zero_offset());
            let first = today - jiff::Span::new().days(back);
            (first, first + jiff::Span::new().days(7))
        }
        Unit::Month => {
            let first = date(today.year(), today.month(), 1);
            let next = if today.month() == 12 {
                date(today.year() + 1, 1, 1)
            } else {
                date(today.year(), today.month() + 1, 1)
            };
            (first, next)
        }
        Unit::Year => (date(today.year(), 1, 1), date(today.year() + 1, 1, 1)),
        _ => unreachable!("calendar units only"),
    };
    let to_nanos = |s: i64| u64::try_from(s).expect("after 1970") * NANOS_PER_SECOND;
    CalendarWindow {
        start: to_nanos(first_second_of(&zone, first, second)),
        end: to_nanos(first_second_of(&zone, next, second)),
    }
}

/// Zones with daylight saving (both hemispheres), half- and
/// quarter-hour offsets, a midnight transition (Santiago), a skipped day
/// (Apia, 30 December 2011) and no transitions at all.
const ZONES: &[&str] = &[
    "UTC",
    "Asia/Kolkata",
    "America/New_York",
    "Europe/London",
    "Europe/Berlin",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "America/Santiago",
    "America/St_Johns",
    "Asia/Kathmandu",
    "Pacific/Chatham",
    "Pacific/Apia",
    "Africa/Casablanca",
    "America/Havana",
];

const UNITS: [Unit; 4] = [Unit::Day, Unit::Week, Unit::Month, Unit::Year];

/// 2000-01-01 to 2100-01-01, in nanoseconds.
const RANGE: std::ops::Range<Nanos> =
    946_684_800 * NANOS_PER_SECOND..4_102_444_800 * NANOS_PER_SECOND;

fn at(zone: &str, day: Date, hour: i8, minute: i8) -> Nanos {
    let instant = day
        .at(hour, minute, 0, 0)
        .to_zoned_datetime(TimeZone::get(zone).expect("zone"))
        .expect("valid")
        .timestamp();
    u64::try_from(instant.as_nanosecond()).expect("after 1970")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn windows_match_an_independent_computation(
        zone in prop::sample::select(ZONES),
        unit in prop::sample::select(UNITS.to_vec()),
        now in RANGE,
    ) {
        let calendar = Calendar::named(zone).expect("zone");
        let got = calendar.window(unit, now);
        prop_assert_eq!(got, expected(zone, unit, now), "{} {:?} at {}", zone, unit, now);
        prop_assert!(got.start <= now && now < got.end);
        // Boundaries are whole seconds (the Redis script relies on it).
        prop_assert_eq!(got.start % NANOS_PER_SECOND, 0);
        prop_assert_eq!(got.end % NANOS_PER_SECOND, 0);
        // Consecutive: the next window starts where this one ends.
        prop_assert_eq!(calendar.window(unit, got.end).start, got.end);
        prop_assert_eq!(calendar.window(unit, got.end - 1), got);
    }

    /// Instants right around daylight-saving transitions of 2026.
    #[test]
    fn windows_around_transitions(
        zone in prop::sample::select(ZONES),
        unit in prop::sample::select(UNITS.to_vec()),
        which in 0usize..8,
        offset in -3 * 3_600i64..3 * 3_600,
    ) {
        let tz = TimeZone::get(zone).expect("zone");
        let from = Timestamp::from_second(1_767_225_600).expect("2026-01-01");
        let transitions: Vec<Timestamp> = tz
            .following(from)
            .take(8)
            .map(|t| t.timestamp())
            .collect();
        // Zones without transitions (UTC, Kolkata) test around 2026-01-01.
        let around = transitions
            .get(which % transitions.len().max(1))
            .map_or(from.as_second(), |t| t.as_second());
        let second = around + offset;
        let now = u64::try_from(second).expect("after 1970") * NANOS_PER_SECOND;
        let calendar = Calendar::named(zone).expect("zone");
        prop_assert_eq!(calendar.window(unit, now), expected(zone, unit, now));
    }
}

#[test]
fn daylight_saving_days_are_23_and_25_hours() {
    let new_york = Calendar::named("America/New_York").expect("zone");
    let spring = new_york.window(Unit::Day, at("America/New_York", date(2026, 3, 8), 12, 0));
    assert_eq!(spring.end - spring.start, 23 * HOUR);
    let autumn = new_york.window(Unit::Day, at("America/New_York", date(2026, 11, 1), 12, 0));
    assert_eq!(autumn.end - autumn.start, 25 * HOUR);
    let ordinary = new_york.window(Unit::Day, at("America/New_York", date(2026, 7, 1), 0, 0));
    assert_eq!(ordinary.end - ordinary.start, 24 * HOUR);
    assert_eq!(
        ordinary.start,
        at("America/New_York", date(2026, 7, 1), 0, 0)
    );
}

#[test]
fn a_kolkata_month_starts_at_local_midnight_of_the_first() {
    let kolkata = Calendar::named("Asia/Kolkata").expect("zone");
    // 2026-02-28 23:00 UTC is already 1 March 04:30 in Kolkata.
    let now = at("UTC", date(2026, 2, 28), 23, 0);
    let window = kolkata.window(Unit::Month, now);
    // 1 March 00:00 +05:30 is 28 February 18:30 UTC.
    assert_eq!(window.start, at("UTC", date(2026, 2, 28), 18, 30));
    assert_eq!(window.end, at("UTC", date(2026, 3, 31), 18, 30));
    assert_eq!(window.end - window.start, 31 * 24 * HOUR);
}

#[test]
fn weeks_start_on_monday_and_years_on_the_first() {
    let utc = Calendar::utc();
    // Thursday 1 January 2026.
    let now = at("UTC", date(2026, 1, 1), 10, 0);
    let week = utc.window(Unit::Week, now);
    assert_eq!(week.start, at("UTC", date(2025, 12, 29), 0, 0));
    assert_eq!(week.end, at("UTC", date(2026, 1, 5), 0, 0));
    let year = utc.window(Unit::Year, now);
    assert_eq!(year.start, at("UTC", date(2026, 1, 1), 0, 0));
    assert_eq!(year.end, at("UTC", date(2027, 1, 1), 0, 0));
    let february = utc.window(Unit::Month, at("UTC", date(2028, 2, 10), 0, 0));
    assert_eq!(february.end - february.start, 29 * 24 * HOUR);
}

#[test]
fn a_skipped_day_is_no_window() {
    // Samoa moved across the date line: 30 December 2011 never happened.
    let apia = Calendar::named("Pacific/Apia").expect("zone");
    let day = apia.window(Unit::Day, at("Pacific/Apia", date(2011, 12, 29), 12, 0));
    assert_eq!(day.end, at("Pacific/Apia", date(2011, 12, 31), 0, 0));
    assert_eq!(day.end - day.start, 24 * HOUR);
}

#[test]
fn zone_names_are_checked_and_shared() {
    assert!(Calendar::named("Mars/Olympus_Mons").is_err());
    assert!(Calendar::named("").is_err());
    let a = Calendar::named("Europe/Paris").expect("zone");
    let b = Calendar::named("europe/paris").expect("zone");
    assert_eq!(a, b);
    assert_eq!(a.zone_name(), "Europe/Paris");
    assert_eq!(Calendar::utc().zone_name(), "UTC");
}

#[test]
fn shorter_units_and_far_instants_fall_back_to_nominal_windows() {
    let utc = Calendar::utc();
    let hour = utc.window(Unit::Hour, 90 * 60 * NANOS_PER_SECOND);
    assert_eq!(
        hour,
        CalendarWindow {
            start: HOUR,
            end: 2 * HOUR
        }
    );
    for now in [0, 1, u64::MAX - 1, u64::MAX] {
        let window = utc.window(Unit::Year, now);
        assert!(window.start <= now);
    }
}

/// A fall-back across midnight (America/St_Johns, 00:01 NDT on 30 October
/// 2005, back to 23:01 NST on the 29th): the 29th ends when the 30th first
/// begins, and the independent computation agrees (proptest once found the
/// date going backwards there, which the oracle did not expect).
#[test]
fn a_fall_back_across_midnight_ends_the_day_at_its_first_midnight() {
    let zone = "America/St_Johns";
    let now = 1_130_553_000 * NANOS_PER_SECOND; // 00:00 NDT, 29 October 2005
    let window = Calendar::named(zone).expect("zone").window(Unit::Day, now);
    assert_eq!(
        window,
        CalendarWindow {
            start: now,
            end: 1_130_639_400 * NANOS_PER_SECOND, // 00:00 NDT, 30 October
        }
    );
    assert_eq!(expected(zone, Unit::Day, now), window);
}
