//! The sliding window, estimated from two fixed windows.
//!
//! Windows of length `W` are aligned to the Unix epoch as for
//! [`super::fixed_window`]. The state keeps the hits of the current window
//! (`current`) and of the one before it (`previous`). At `e` nanoseconds into
//! the current window, the hits in the last `W` are estimated as
//!
//! ```text
//! estimate = ceil(previous × (W − e) / W) + current
//! ```
//!
//! that is, the previous window's hits are assumed evenly spread and the
//! share of them still inside the sliding window is counted, rounded up so
//! the estimate never rounds hits away. Hits fit when
//! `estimate + hits <= requests_per_unit`.
//!
//! # How far off the estimate can be
//!
//! Write `L` for `requests_per_unit` and `p` for the hits admitted in an
//! aligned window. Because `current <= estimate`, **every aligned window
//! admits at most `L` hits**, exactly as a fixed window. The estimate errs
//! only on how the previous window's hits were spread:
//! - spread early in the previous window, it over-counts and denies sooner
//!   than a true sliding log would;
//! - bunched at the previous window's end, it under-counts. Take any
//!   window-long interval `[s, s + W)` that crosses a boundary `b`, with
//!   `a = b − s` nanoseconds (1 ≤ a < W) before it, and let `p` be the hits
//!   admitted in the window ending at `b`. The last hit admitted in the
//!   interval after `b` is at most `W − 1 − a` into its window, where the
//!   previous weight is still `ceil(p × (a + 1) / W)`, so the interval holds
//!   at most `p` earlier hits plus `L − ceil(p × (a + 1) / W)` later ones:
//!
//!   ```text
//!   admitted in [s, s + W) <= L + p − ceil(p × (a + 1) / W)  <=  2L − 1   (L >= 1)
//!   ```
//!
//!   The bound is reached when the previous window's `L` hits all land in its
//!   last nanosecond and the new window fills up just before the interval
//!   ends, so it is the precise worst case; evenly spread traffic stays
//!   within `L` (up to rounding). The property tests check this bound.
//!
//! Reported values:
//! - `used`: `estimate + hits`, the estimate including this request.
//! - `remaining`: `requests_per_unit − used` when admitted, else 0.
//! - `reset_after` when admitted: time until every counted hit has slid out
//!   of the window and the key is as fresh as an unused one: to the end of
//!   the next window if the current window holds hits (after this request),
//!   else to the end of the current window if the previous one holds hits,
//!   else 0. This is also when the state may be forgotten (`expires_at`).
//! - `reset_after` when denied: the earliest instant at which a request of
//!   the same size fits, assuming no other traffic, computed exactly: the
//!   previous window's weight decays linearly through the current window;
//!   if the current window alone is too full, the wait runs into the next
//!   window, where the current hits become the decaying previous ones. A
//!   request of more than `requests_per_unit` hits never fits; it reports
//!   the time to the end of the next window, when the key is fresh.
//!
//! # Clocks going backwards
//!
//! As for the fixed window: a state from the next window (a clock up to one
//! window ahead of ours) is evaluated at that window's start — the most
//! conservative point, with the previous window at full weight — and
//! `reset_after` includes the time our clock needs to get there. A state
//! further ahead can only come from a clock step of more than a window and is
//! treated as stale, which bounds how long a key can be locked out.

use super::{
    CounterState, Evaluation, Limit, Nanos, Outcome, StoredWindow, div_ceil_u128, saturate_u64,
    window_start,
};

/// Evaluates `hits` against a sliding-window `limit` at `now`.
///
/// Never panics; arithmetic is done in `u128` or saturates at `u64::MAX`.
pub fn evaluate(limit: &Limit, state: Option<CounterState>, now: Nanos, hits: u64) -> Evaluation {
    let window = limit.window();
    let rpu = limit.requests_per_unit;
    let current_start = window_start(now, window);
    let (start, current, previous) = match state {
        Some(CounterState::Sliding {
            window_start: stored_start,
            current,
            previous,
        }) => match StoredWindow::classify(stored_start, current_start, window) {
            StoredWindow::Current | StoredWindow::Next => (stored_start, current, previous),
            StoredWindow::Previous => (current_start, 0, current),
            StoredWindow::Stale => (current_start, 0, 0),
        },
        _ => (current_start, 0, 0),
    };
    // Only a `Next` state starts after `now`; evaluate it at its start.
    let elapsed = now.saturating_sub(start);
    let estimate = weighted(previous, window - elapsed, window) + u128::from(current);
    let total = estimate + u128::from(hits);
    let admitted = total <= u128::from(rpu);
    let current_after = current.saturating_add(hits);

    let end = start.saturating_add(window);
    let fresh_at = if current_after > 0 {
        end.saturating_add(window)
    } else if previous > 0 {
        end
    } else {
        now
    };
    let reset_at = if admitted {
        fresh_at
    } else {
        admissible_at(start, window, current, previous, hits, rpu)
    };

    Evaluation {
        outcome: Outcome {
            admitted,
            remaining: if admitted {
                saturate_u64(u128::from(rpu) - total)
            } else {
                0
            },
            reset_after: reset_at.saturating_sub(now),
            used: saturate_u64(total),
        },
        counted: CounterState::Sliding {
            window_start: start,
            current: current_after,
            previous,
        },
        expires_at: fresh_at,
    }
}

/// `ceil(hits × share / window)`: the part of a window's `hits` still inside
/// the sliding window when `share` of its `window` nanoseconds are.
fn weighted(hits: u64, share: Nanos, window: Nanos) -> u128 {
    // u64 × u64 always fits in u128.
    div_ceil_u128(u128::from(hits) * u128::from(share), u128::from(window))
}

/// The first instant at which `hits` fit, with no other traffic, for the
/// state `(start, current, previous)` that denied them now.
fn admissible_at(
    start: Nanos,
    window: Nanos,
    current: u64,
    previous: u64,
    hits: u64,
    rpu: u64,
) -> Nanos {
    let next_start = start.saturating_add(window);
    let Some(room) = rpu.checked_sub(hits) else {
        // Never fits: report when the key is entirely fresh.
        return next_start.saturating_add(window);
    };
    // The hits fit once the decaying window's weighted count is at most
    // `allowed`: ceil(decaying × (W − e) / W) <= allowed
    //   <=> decaying × (W − e) <= allowed × W
    //   <=> e >= W − floor(allowed × W / decaying).
    // `allowed < decaying` on both paths (else we were not denied, or the
    // weight would not need to decay), so the wait is in 1..=W.
    let wait_into = |decaying: u64, allowed: u64| -> Nanos {
        let keep = u128::from(allowed) * u128::from(window) / u128::from(decaying.max(1));
        window - saturate_u64(keep).min(window)
    };
    if current <= room {
        // Within this window, as the previous window's weight decays.
        start.saturating_add(wait_into(previous, room - current))
    } else {
        // The current hits alone are too many: wait until they are the
        // previous window's and have decayed enough.
        next_start.saturating_add(wait_into(current, room))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::{Algorithm, NANOS_PER_SECOND, Unit};

    const HOUR: Nanos = 3_600 * NANOS_PER_SECOND;

    fn thousand_per_hour() -> Limit {
        Limit {
            requests_per_unit: 1000,
            unit: Unit::Hour,
            unit_multiplier: 1,
            algorithm: Algorithm::SlidingWindow,
            burst: 1000,
            calendar: None,
        }
    }

    fn hit(limit: &Limit, state: &mut Option<CounterState>, now: Nanos, hits: u64) -> Outcome {
        let evaluation = evaluate(limit, *state, now, hits);
        if evaluation.outcome.admitted {
            *state = Some(evaluation.counted);
        }
        evaluation.outcome
    }

    #[test]
    fn thousand_per_hour_weights_the_previous_hour() {
        let limit = thousand_per_hour();
        let start = 500_000 * HOUR;
        let mut state = None;
        // 800 hits at the start of one hour.
        let first = hit(&limit, &mut state, start, 800);
        assert!(first.admitted);
        assert_eq!(first.remaining, 200);
        assert_eq!(first.reset_after, 2 * HOUR);

        // A quarter into the next hour, 600 of the 800 still count.
        let now = start + HOUR + HOUR / 4;
        let probe = evaluate(&limit, state, now, 0).outcome;
        assert_eq!(probe.used, 600);
        assert_eq!(probe.remaining, 400);
        let taken = hit(&limit, &mut state, now, 400);
        assert!(taken.admitted);
        assert_eq!(taken.remaining, 0);
        assert_eq!(taken.reset_after, start + 3 * HOUR - now);

        // One more fits once 1 of the 800 has slid out: 800 × (W − e) / W <= 599.
        let denied = hit(&limit, &mut state, now, 1);
        assert!(!denied.admitted);
        let at = now + denied.reset_after;
        assert!(!evaluate(&limit, state, at - 1, 1).outcome.admitted);
        assert!(evaluate(&limit, state, at, 1).outcome.admitted);
        // 800 × (W − e) <= 599 × W  <=>  e >= W × 201 / 800.
        assert_eq!(at - (start + HOUR), HOUR - HOUR * 599 / 800);
    }

    #[test]
    fn a_full_current_window_waits_into_the_next() {
        let limit = Limit {
            requests_per_unit: 10,
            unit: Unit::Second,
            ..thousand_per_hour()
        };
        let mut state = None;
        assert!(hit(&limit, &mut state, NANOS_PER_SECOND / 2, 10).admitted);
        let denied = hit(&limit, &mut state, NANOS_PER_SECOND / 2, 4);
        assert!(!denied.admitted);
        let at = NANOS_PER_SECOND / 2 + denied.reset_after;
        // 10 × (W − e) / W <= 6 at e = 0.4 s into the next second.
        assert_eq!(at, NANOS_PER_SECOND + 400_000_000);
        assert!(!evaluate(&limit, state, at - 1, 4).outcome.admitted);
        assert!(evaluate(&limit, state, at, 4).outcome.admitted);
    }

    #[test]
    fn more_hits_than_the_limit_never_fit() {
        let limit = Limit {
            requests_per_unit: 3,
            unit: Unit::Second,
            ..thousand_per_hour()
        };
        let outcome = evaluate(&limit, None, 0, 4).outcome;
        assert!(!outcome.admitted);
        assert_eq!(outcome.reset_after, 2 * NANOS_PER_SECOND);
    }

    #[test]
    fn states_roll_forward_and_expire() {
        let limit = thousand_per_hour();
        let state = Some(CounterState::Sliding {
            window_start: HOUR,
            current: 10,
            previous: 5,
        });
        let rolled = evaluate(&limit, state, 2 * HOUR, 0);
        assert_eq!(
            rolled.counted,
            CounterState::Sliding {
                window_start: 2 * HOUR,
                current: 0,
                previous: 10
            }
        );
        assert_eq!(rolled.outcome.used, 10);
        assert_eq!(rolled.expires_at, 3 * HOUR);
        let stale = evaluate(&limit, state, 3 * HOUR, 0);
        assert_eq!(stale.outcome.used, 0);
        assert_eq!(stale.outcome.reset_after, 0);
    }

    #[test]
    fn extremes_do_not_panic_or_wrap() {
        for rpu in [0, 1, u64::MAX] {
            let limit = Limit {
                requests_per_unit: rpu,
                unit_multiplier: u64::MAX,
                ..thousand_per_hour()
            };
            let full = Some(CounterState::Sliding {
                window_start: 0,
                current: u64::MAX,
                previous: u64::MAX,
            });
            for now in [0, 1, u64::MAX - 1, u64::MAX] {
                for hits in [0, 1, u64::MAX] {
                    let outcome = evaluate(&limit, full, now, hits).outcome;
                    assert!(!outcome.admitted || hits == 0 && rpu == u64::MAX);
                    evaluate(&limit, None, now, hits);
                }
            }
        }
    }
}
