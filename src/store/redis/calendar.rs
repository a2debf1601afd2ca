//! How a calendar window reaches the script: the script has no time-zone
//! database, so its boundaries are computed here and sent with the check.

use crate::limit::calendar::Calendar;
use crate::limit::{NANOS_PER_SECOND, Nanos, Unit};

/// A calendar window's boundaries for the script, `"p:s:e:x"` in seconds:
/// the previous window's start, the current window's start and end (the
/// window containing `now`) and the next window's end. The script counts in
/// whichever of the three windows holds its own now, so with
/// [`TimeSource::Redis`](super::TimeSource::Redis) a caller whose clock is off by less than a day
/// (every calendar window is at least 23 hours) still counts in Redis's
/// window; the boundaries themselves are always the caller's computation.
pub(super) fn calendar_bounds(calendar: Calendar, unit: Unit, now: Nanos) -> String {
    let current = calendar.window(unit, now);
    let previous = calendar.window(unit, current.start.saturating_sub(1));
    let next = calendar.window(unit, current.end);
    let seconds = |at: Nanos| at / NANOS_PER_SECOND;
    format!(
        "{}:{}:{}:{}",
        seconds(previous.start),
        seconds(current.start),
        seconds(current.end),
        seconds(next.end)
    )
}
