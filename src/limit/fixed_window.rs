//! Fixed windows aligned to the Unix epoch, as the reference server counts.
//!
//! A window of length `W = limit.window()` starts at `now - now % W`. The
//! state is the window's start and the hits counted in it; a state from an
//! older window counts as zero. Hits fit when the count after adding them is
//! at most `requests_per_unit`, so a limit of 0 admits nothing but checks
//! without hits.
//!
//! Reported values:
//! - `reset_after`: time until the end of the counted window, admitted or not
//!   (a denied request of at most `requests_per_unit` hits fits again then).
//! - `used`: the window's count including this request's hits.
//! - `remaining`: `requests_per_unit - used` when admitted, else 0.
//!
//! A limit with a [`calendar`](super::calendar) counts in the calendar window
//! containing `now` (`[start, end)` between two local boundaries) instead,
//! with the same rules.
//!
//! # Clocks going backwards
//!
//! Replicas sharing a store never have exactly the same clock, and a clock
//! can be stepped back. A state from the *next* window (written by a clock at
//! most one window ahead of ours) is counted in its own window, as if our
//! clock were at that window's start: treating it as ours and writing it back
//! under our older window would make the faster clock see "a past window" and
//! reset it, so two skewed replicas could reset each other at every boundary.
//! The cost is a longer wait for the slower clock: `reset_after` is at most
//! one window plus the clock difference, and is exact. A state more than one
//! window ahead cannot come from skew, only from a clock step of more than a
//! window; it is treated as stale (zero) so that a key is never locked out
//! for longer than two windows, at the price of one extra window's worth of
//! hits after such a step.

use super::{CounterState, Evaluation, Limit, Nanos, Outcome, StoredWindow, window_start};

/// Evaluates `hits` against a fixed-window `limit` at `now`.
///
/// Never panics; arithmetic saturates at `u64::MAX`.
pub fn evaluate(limit: &Limit, state: Option<CounterState>, now: Nanos, hits: u64) -> Evaluation {
    let stored = match state {
        Some(CounterState::Fixed {
            window_start,
            count,
        }) => Some((window_start, count)),
        _ => None,
    };
    let (start, end, count) = match limit.calendar {
        None => {
            let window = limit.window();
            let current_start = window_start(now, window);
            let (start, count) = match stored {
                Some((stored_start, count)) => {
                    match StoredWindow::classify(stored_start, current_start, window) {
                        StoredWindow::Current | StoredWindow::Next => (stored_start, count),
                        StoredWindow::Previous | StoredWindow::Stale => (current_start, 0),
                    }
                }
                None => (current_start, 0),
            };
            (start, start.saturating_add(window), count)
        }
        Some(calendar) => {
            let current = calendar.window(limit.unit, now);
            match stored {
                Some((stored_start, count)) if stored_start == current.start => {
                    (current.start, current.end, count)
                }
                // The next window: a clock ahead of ours (see above).
                Some((stored_start, count)) if stored_start == current.end => {
                    let next = calendar.window(limit.unit, current.end);
                    (next.start, next.end, count)
                }
                _ => (current.start, current.end, 0),
            }
        }
    };

    // `checked_add`: a sum past u64::MAX must deny even a limit of u64::MAX.
    let admitted_count = count
        .checked_add(hits)
        .filter(|&after| after <= limit.requests_per_unit);
    let used = count.saturating_add(hits);

    Evaluation {
        outcome: Outcome {
            admitted: admitted_count.is_some(),
            remaining: admitted_count.map_or(0, |after| limit.requests_per_unit - after),
            reset_after: end.saturating_sub(now),
            used,
        },
        counted: CounterState::Fixed {
            window_start: start,
            count: used,
        },
        expires_at: end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::{Algorithm, NANOS_PER_SECOND, Unit, window_start};

    const MINUTE: Nanos = 60 * NANOS_PER_SECOND;

    fn twenty_per_ten_minutes() -> Limit {
        Limit {
            requests_per_unit: 20,
            unit: Unit::Minute,
            unit_multiplier: 10,
            algorithm: Algorithm::FixedWindow,
            burst: 20,
            calendar: None,
        }
    }

    /// Feeds `hits` at `now`, committing the state when admitted.
    fn hit(limit: &Limit, state: &mut Option<CounterState>, now: Nanos, hits: u64) -> Outcome {
        let evaluation = evaluate(limit, *state, now, hits);
        if evaluation.outcome.admitted {
            *state = Some(evaluation.counted);
        }
        evaluation.outcome
    }

    #[test]
    fn twenty_per_ten_minutes_resets_at_the_aligned_boundary() {
        let limit = twenty_per_ten_minutes();
        let window = 10 * MINUTE;
        // 3 minutes into an aligned ten-minute window.
        let start = 1_000 * window;
        let mut now = start + 3 * MINUTE;
        let mut state = None;
        for n in 1..=20 {
            let outcome = hit(&limit, &mut state, now, 1);
            assert!(outcome.admitted, "request {n}");
            assert_eq!(outcome.remaining, 20 - n);
            assert_eq!(outcome.used, n);
            assert_eq!(outcome.reset_after, start + window - now);
            now += NANOS_PER_SECOND;
        }
        let denied = hit(&limit, &mut state, now, 1);
        assert!(!denied.admitted);
        assert_eq!(denied.remaining, 0);
        assert_eq!(denied.used, 21);
        assert_eq!(denied.reset_after, start + window - now);

        // One nanosecond before the boundary: still denied; at it: admitted.
        assert!(!hit(&limit, &mut state, start + window - 1, 1).admitted);
        let fresh = hit(&limit, &mut state, start + window, 1);
        assert!(fresh.admitted);
        assert_eq!(fresh.remaining, 19);
        assert_eq!(fresh.reset_after, window);
    }

    #[test]
    fn zero_hits_checks_without_counting() {
        let limit = twenty_per_ten_minutes();
        let state = Some(CounterState::Fixed {
            window_start: 0,
            count: 20,
        });
        let evaluation = evaluate(&limit, state, 5, 0);
        assert!(evaluation.outcome.admitted);
        assert_eq!(evaluation.outcome.remaining, 0);
        assert_eq!(Some(evaluation.counted), state);
    }

    #[test]
    fn limit_of_zero_denies_every_hit() {
        let limit = Limit::fixed(0, Unit::Second);
        assert!(!evaluate(&limit, None, 7, 1).outcome.admitted);
        assert!(evaluate(&limit, None, 7, 0).outcome.admitted);
    }

    #[test]
    fn state_of_another_algorithm_or_window_counts_as_zero() {
        let limit = Limit::fixed(1, Unit::Second);
        let other = Some(CounterState::Bucket { tat: u64::MAX });
        assert!(evaluate(&limit, other, 10, 1).outcome.admitted);
        let previous = Some(CounterState::Fixed {
            window_start: 0,
            count: 1,
        });
        assert!(
            evaluate(&limit, previous, NANOS_PER_SECOND, 1)
                .outcome
                .admitted
        );
    }

    #[test]
    fn next_window_state_keeps_counting_in_its_own_window() {
        let limit = Limit::fixed(1, Unit::Second);
        let ahead = Some(CounterState::Fixed {
            window_start: 2 * NANOS_PER_SECOND,
            count: 1,
        });
        // Our clock is 0.4 s behind the writer's window.
        let now = 2 * NANOS_PER_SECOND - 400_000_000;
        let evaluation = evaluate(&limit, ahead, now, 1);
        assert!(!evaluation.outcome.admitted);
        assert_eq!(
            evaluation.outcome.reset_after,
            NANOS_PER_SECOND + 400_000_000
        );
        // Far ahead: a clock step, not skew; stale.
        let far = Some(CounterState::Fixed {
            window_start: 9 * NANOS_PER_SECOND,
            count: 1,
        });
        assert!(evaluate(&limit, far, now, 1).outcome.admitted);
    }

    #[test]
    fn extremes_do_not_panic_or_wrap() {
        let limit = Limit {
            requests_per_unit: u64::MAX,
            unit: Unit::Year,
            unit_multiplier: u64::MAX,
            algorithm: Algorithm::FixedWindow,
            burst: u64::MAX,
            calendar: None,
        };
        for now in [0, 1, u64::MAX - 1, u64::MAX] {
            let full = Some(CounterState::Fixed {
                window_start: window_start(now, limit.window()),
                count: u64::MAX,
            });
            let evaluation = evaluate(&limit, full, now, u64::MAX);
            // u64::MAX + u64::MAX is over a limit of u64::MAX, not equal to it.
            assert!(!evaluation.outcome.admitted);
            assert_eq!(evaluation.outcome.used, u64::MAX);
            assert!(evaluate(&limit, None, now, u64::MAX).outcome.admitted);
        }
    }
}
