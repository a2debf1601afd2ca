//! A limit's `calendar:` and `time_zone:` (and the reference's
//! `USE_CALENDAR_MONTH_RATE_LIMIT`), checked and compiled into a
//! [`Calendar`]; split from `validate` to keep it readable.

use super::Sink;
use super::schema::RawLimit;
use crate::limit::calendar::{Calendar, calendar_for};
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
    let zone = raw.time_zone.as_ref();
    match calendar_for(
        raw.calendar.value,
        zone.map(|text| text.value.as_str()),
        unit,
        algorithm,
        unit_multiplier,
    ) {
        Ok(Some(calendar)) => Some(Some(calendar)),
        Ok(None) => {
            let reference_month = sink.calendar_month
                && unit == Unit::Month
                && algorithm == Algorithm::FixedWindow
                && unit_multiplier == 1;
            Some(reference_month.then(Calendar::utc))
        }
        Err((about_zone, reason)) => {
            let pos = match zone {
                Some(text) if about_zone => text.pos,
                _ => raw.calendar.pos,
            };
            sink.error(pos, &raw.path, reason);
            None
        }
    }
}
