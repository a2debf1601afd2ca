//! Calendar windows: a day, ISO week (from Monday 00:00), month or year that
//! starts at a time zone's local boundary, not every `unit` seconds since
//! 1970.
//!
//! A [`Calendar`] names an IANA time zone (`Asia/Kolkata`; `UTC` by default)
//! from the tz database compiled into the binary (`jiff`'s bundled copy), so
//! windows never depend on the host's `/usr/share/zoneinfo` and every
//! instance of a fleet computes the same boundaries. A window's length
//! follows the calendar: months of 28 to 31 days, a daylight-saving day of 23
//! or 25 hours. A local midnight that a transition skips starts the day at
//! the first instant after the gap; one that occurs twice starts it at the
//! first occurrence.
//!
//! Boundaries are whole seconds (zone offsets are whole seconds), which lets
//! the Redis script receive them as integers (see `store::redis`).

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

use super::{NANOS_PER_SECOND, Nanos, Unit};

/// A calendar in one time zone. Cheap to copy: zones are loaded once per
/// process and shared (there are a few hundred zones, so keeping every zone
/// ever named for the life of the process is bounded).
#[derive(Clone, Copy)]
pub struct Calendar {
    zone: &'static Zone,
}

struct Zone {
    /// The zone's IANA name as the database spells it.
    name: Box<str>,
    tz: TimeZone,
}

/// Zones loaded so far, by their database name.
static ZONES: LazyLock<Mutex<HashMap<Box<str>, &'static Zone>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

impl Calendar {
    /// The calendar of UTC.
    pub fn utc() -> Calendar {
        // "UTC" is always in the bundled database; a fixed zone if not.
        Calendar::named("UTC").unwrap_or_else(|_| Calendar::intern("UTC", TimeZone::UTC))
    }

    /// The calendar of the IANA zone `name` (`Europe/Paris`, `UTC`; as the
    /// database matches names, case does not matter). The error says why a
    /// name is not a zone.
    pub fn named(name: &str) -> Result<Calendar, String> {
        let tz = TimeZone::get(name).map_err(|e| format!("unknown time zone '{name}': {e}"))?;
        let canonical = tz.iana_name().unwrap_or(name).to_owned();
        Ok(Calendar::intern(&canonical, tz))
    }

    fn intern(name: &str, tz: TimeZone) -> Calendar {
        // A poisoned lock only means another thread panicked while holding
        // it; the map itself is always consistent.
        let mut zones = ZONES
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(zone) = zones.get(name) {
            return Calendar { zone };
        }
        let zone: &'static Zone = Box::leak(Box::new(Zone {
            name: name.into(),
            tz,
        }));
        zones.insert(name.into(), zone);
        Calendar { zone }
    }

    /// The zone's IANA name.
    pub fn zone_name(&self) -> &'static str {
        &self.zone.name
    }

    /// The window of `unit` containing `now`: `[start, end)`. `unit` is a
    /// day, week, month or year (the config accepts no other); a shorter
    /// unit, or an instant the calendar cannot place (beyond year 9999),
    /// falls back to the epoch-aligned window of the unit's nominal length,
    /// so this never fails.
    pub fn window(&self, unit: Unit, now: Nanos) -> CalendarWindow {
        self.try_window(unit, now).unwrap_or_else(|| {
            let length = unit.seconds().saturating_mul(NANOS_PER_SECOND);
            let start = super::window_start(now, length);
            CalendarWindow {
                start,
                end: start.saturating_add(length),
            }
        })
    }

    fn try_window(&self, unit: Unit, now: Nanos) -> Option<CalendarWindow> {
        let tz = &self.zone.tz;
        let instant = Timestamp::from_nanosecond(i128::from(now)).ok()?;
        let today = tz.to_datetime(instant).date();
        let first = period_start(unit, today)?;
        let next = next_period_start(unit, first)?;
        let start = local_midnight(tz, first)?;
        let end = local_midnight(tz, next)?;
        // A midnight that occurs twice starts the day at its first
        // occurrence, which for the rare transition across midnight could
        // leave `now` outside; the nominal window is then the honest answer.
        (start <= now && now < end).then_some(CalendarWindow { start, end })
    }
}

/// The calendar of a limit written with `calendar` (and `time_zone`, an
/// IANA name, default UTC): `None` without `calendar`. The error names what
/// is wrong, and whether it is the zone (`true`) or the combination with the
/// limit's other settings (`false`), for errors that point at a field.
pub fn calendar_for(
    calendar: bool,
    time_zone: Option<&str>,
    unit: Unit,
    algorithm: super::Algorithm,
    unit_multiplier: u64,
) -> Result<Option<Calendar>, (bool, String)> {
    if !calendar {
        return match time_zone {
            Some(_) => Err((
                true,
                "'time_zone' needs 'calendar: true' (it says where calendar windows start)".into(),
            )),
            None => Ok(None),
        };
    }
    if !matches!(unit, Unit::Day | Unit::Week | Unit::Month | Unit::Year) {
        return Err((
            false,
            format!("'calendar: true' needs a unit of day, week, month or year, found {unit}"),
        ));
    }
    if algorithm != super::Algorithm::FixedWindow {
        return Err((
            false,
            format!(
                "'calendar: true' counts in fixed windows; it cannot be used with 'algorithm: {}'",
                algorithm.as_str()
            ),
        ));
    }
    if unit_multiplier != 1 {
        return Err((
            false,
            "'calendar: true' cannot be used with 'unit_multiplier' (a calendar window is one day, week, month or year)".into(),
        ));
    }
    match time_zone {
        None => Ok(Some(Calendar::utc())),
        Some(zone) => Calendar::named(zone).map(Some).map_err(|_| {
            (
                true,
                format!(
                    "unknown time zone '{zone}' (expected an IANA name such as 'UTC', 'Europe/Paris' or 'Asia/Kolkata')"
                ),
            )
        }),
    }
}

/// One calendar window, `[start, end)` in nanoseconds since the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CalendarWindow {
    /// The local boundary the window starts at.
    pub start: Nanos,
    /// The next local boundary.
    pub end: Nanos,
}

/// The first day of the `unit` period containing `day`.
fn period_start(unit: Unit, day: Date) -> Option<Date> {
    match unit {
        Unit::Day => Some(day),
        Unit::Week => {
            let mut monday = day;
            for _ in 0..day.weekday().to_monday_zero_offset() {
                monday = monday.yesterday().ok()?;
            }
            Some(monday)
        }
        Unit::Month => Some(day.first_of_month()),
        Unit::Year => Some(day.first_of_year()),
        Unit::Second | Unit::Minute | Unit::Hour => None,
    }
}

/// The first day of the `unit` period after the one starting on `first`.
fn next_period_start(unit: Unit, first: Date) -> Option<Date> {
    match unit {
        Unit::Day => first.tomorrow().ok(),
        Unit::Week => {
            let mut day = first;
            for _ in 0..7 {
                day = day.tomorrow().ok()?;
            }
            Some(day)
        }
        Unit::Month => first.last_of_month().tomorrow().ok(),
        Unit::Year => first.last_of_year().tomorrow().ok(),
        Unit::Second | Unit::Minute | Unit::Hour => None,
    }
}

/// The instant `day` starts in `tz`: its local midnight, or the end of a
/// gap that skips it, or the first of two midnights.
fn local_midnight(tz: &TimeZone, day: Date) -> Option<Nanos> {
    let instant = tz.to_timestamp(day.at(0, 0, 0, 0)).ok()?;
    Nanos::try_from(instant.as_nanosecond()).ok()
}

impl PartialEq for Calendar {
    fn eq(&self, other: &Calendar) -> bool {
        std::ptr::eq(self.zone, other.zone)
    }
}

impl Eq for Calendar {}

impl std::hash::Hash for Calendar {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.zone.name.hash(state);
    }
}

impl std::fmt::Debug for Calendar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Calendar({})", self.zone.name)
    }
}

#[cfg(test)]
mod tests;
