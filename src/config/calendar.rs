//! A limit's `calendar:` and `time_zone:` (and the reference's
//! `USE_CALENDAR_MONTH_RATE_LIMIT`), checked and compiled into a
//! [`Calendar`]; split from `validate` to keep it readable.

use super::Sink;
use super::schema::RawLimit;
use crate::limit::calendar::Calendar;
use crate::limit::{Algorithm, Unit};

/// A limit's calendar: `calendar: true` (in `time_zone`, default UTC), or
/// UTC for a `month` limit under `USE_CALENDAR_MONTH_RATE_LIMIT`. `None`
/// (after an error) when the combination is invalid.
pub(crate) fn build_calendar(
    raw: &RawLimit,
    unit: Unit,
    algorithm: Algorithm,
    unit_multiplier: u64,
    sink: &mut Sink<'_>,
) -> Option<Option<Calendar>> {
    if !raw.calendar.value {
        if let Some(zone) = &raw.time_zone {
            sink.error(
                zone.pos,
                &raw.path,
                "'time_zone' needs 'calendar: true' (it says where calendar windows start)",
            );
            return None;
        }
        let reference_month =
            sink.calendar_month && unit == Unit::Month && algorithm == Algorithm::FixedWindow;
        return Some((reference_month && unit_multiplier == 1).then(Calendar::utc));
    }
    let pos = raw.calendar.pos;
    if !matches!(unit, Unit::Day | Unit::Week | Unit::Month | Unit::Year) {
        sink.error(
            pos,
            &raw.path,
            format!("'calendar: true' needs a unit of day, week, month or year, found {unit}"),
        );
        return None;
    }
    if algorithm != Algorithm::FixedWindow {
        sink.error(
            pos,
            &raw.path,
            format!(
                "'calendar: true' counts in fixed windows; it cannot be used with 'algorithm: {}'",
                algorithm.as_str()
            ),
        );
        return None;
    }
    if unit_multiplier != 1 {
        sink.error(
            pos,
            &raw.path,
            "'calendar: true' cannot be used with 'unit_multiplier' (a calendar window is one day, week, month or year)",
        );
        return None;
    }
    match &raw.time_zone {
        None => Some(Some(Calendar::utc())),
        Some(zone) => match Calendar::named(&zone.value) {
            Ok(calendar) => Some(Some(calendar)),
            Err(_) => {
                sink.error(
                    zone.pos,
                    &raw.path,
                    format!(
                        "unknown time zone '{}' (expected an IANA name such as 'UTC', 'Europe/Paris' or 'Asia/Kolkata')",
                        zone.value
                    ),
                );
                None
            }
        },
    }
}
