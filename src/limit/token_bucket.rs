//! A token bucket, as GCRA (the generic cell rate algorithm).
//!
//! The bucket holds `burst` tokens and refills continuously at
//! `requests_per_unit` tokens per window `W`, so one token takes the emission
//! interval `T = W / requests_per_unit`. The state is the *theoretical
//! arrival time* `tat`: the instant at which the bucket is full again (a
//! missing state or a `tat` in the past means full). A request of `hits`
//! tokens at `now` moves it to `max(tat, now) + hits × T` and fits when that
//! is at most `burst × T` ahead of `now`, i.e. when the bucket holds at least
//! `hits` tokens.
//!
//! `T` is rarely a whole number of nanoseconds, so the math is done exactly
//! in `u128` on time scaled by `requests_per_unit`: there a token costs `W`,
//! the capacity is `burst × W`, and `now` is `now × requests_per_unit`. Only
//! the stored `tat` is rounded, up to the next nanosecond, which can cost a
//! request at most one nanosecond of refill and never admits more.
//!
//! Reported values:
//! - `used`: tokens taken including this request's, `ceil((tat' − now) / T)`
//!   where `tat'` is the new arrival time (above `burst` when denied).
//! - `remaining`: whole tokens left after this request when admitted, else 0.
//! - `reset_after` when admitted: `tat' − now`, the time until the bucket is
//!   full again (0 for a check of a full bucket); also when the state may be
//!   forgotten (`expires_at = tat'`).
//! - `reset_after` when denied: exactly the time until `hits` tokens are
//!   available, with no other traffic. A request of more than `burst` hits
//!   never fits; it reports the time until the bucket is full, but at least
//!   one window, so a client's retry is not immediate.
//! - `requests_per_unit == 0` or `burst == 0`: the bucket never holds a
//!   token; every hit is denied with `reset_after = W`, and a check without
//!   hits is admitted with `remaining = 0`.
//!
//! # Clocks going backwards
//!
//! A `tat` written by a clock ahead of ours is simply further ahead of our
//! `now`, so the bucket looks emptier: GCRA is conservative under skew, and a
//! skew of `J` is worth at most `J × requests_per_unit / W` extra tokens over
//! any interval measured on the faster clock. A `tat` more than `burst × T +
//! W` ahead cannot result from skew of less than a window; it means our clock
//! stepped back further, and keeping it would lock the key out until our
//! clock catches up (refill does not start while `tat` stays ahead). It is
//! treated as a full bucket instead, so no key is ever locked out for more
//! than one window plus the time to refill the burst.

use super::{CounterState, Evaluation, Limit, Nanos, Outcome, div_ceil_u128, saturate_u64};

/// Evaluates `hits` against a token-bucket `limit` at `now`.
///
/// Never panics; arithmetic is done in `u128` or saturates at `u64::MAX`.
pub fn evaluate(limit: &Limit, state: Option<CounterState>, now: Nanos, hits: u64) -> Evaluation {
    let window = limit.window();
    let rpu = limit.requests_per_unit;
    let stored_tat = match state {
        Some(CounterState::Bucket { tat }) => Some(tat),
        _ => None,
    };
    if rpu == 0 || limit.burst == 0 {
        return empty_bucket(window, stored_tat, now, hits);
    }

    let rate = u128::from(rpu);
    let token = u128::from(window);
    // All < 2^128: products of two u64s, and sums saturate.
    let capacity = u128::from(limit.burst) * token;
    let now_scaled = u128::from(now) * rate;
    // How far the bucket is from full, in scaled time (the borrowed tokens).
    let debt = stored_tat.map_or(0, |tat| {
        let debt = (u128::from(tat) * rate).saturating_sub(now_scaled);
        if debt > capacity.saturating_add(token * rate) {
            0 // see "Clocks going backwards"
        } else {
            debt
        }
    });
    let cost = u128::from(hits) * token;
    // Saturating is exact for the comparison: capacity < u128::MAX.
    let after = debt.saturating_add(cost);
    let admitted = after <= capacity;
    let to_nanos = |scaled: u128| saturate_u64(div_ceil_u128(scaled, rate));
    let new_tat = now.saturating_add(to_nanos(after));

    let reset_after = if admitted {
        to_nanos(after)
    } else if hits > limit.burst {
        to_nanos(debt).max(window)
    } else {
        // hits <= burst, so after − capacity <= debt: the wait is the debt
        // beyond what leaves room for the hits.
        to_nanos(after - capacity)
    };
    Evaluation {
        outcome: Outcome {
            admitted,
            remaining: if admitted {
                saturate_u64((capacity - after) / token)
            } else {
                0
            },
            reset_after,
            used: saturate_u64(div_ceil_u128(after, token)),
        },
        counted: CounterState::Bucket { tat: new_tat },
        expires_at: new_tat,
    }
}

/// A bucket that can never hold a token (`requests_per_unit` or `burst` 0).
fn empty_bucket(window: Nanos, stored_tat: Option<Nanos>, now: Nanos, hits: u64) -> Evaluation {
    let tat = stored_tat.map_or(now, |tat| tat.max(now));
    let admitted = hits == 0;
    Evaluation {
        outcome: Outcome {
            admitted,
            remaining: 0,
            reset_after: if admitted { 0 } else { window },
            used: hits,
        },
        counted: CounterState::Bucket { tat },
        expires_at: tat,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::{Algorithm, NANOS_PER_SECOND, Unit};

    const MINUTE: Nanos = 60 * NANOS_PER_SECOND;

    fn bucket(rpu: u64, unit: Unit, burst: u64) -> Limit {
        Limit {
            requests_per_unit: rpu,
            unit,
            unit_multiplier: 1,
            algorithm: Algorithm::TokenBucket,
            burst,
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
    fn hundred_per_minute_with_burst_hundred() {
        let limit = bucket(100, Unit::Minute, 100);
        let interval = MINUTE / 100; // 0.6 s per token
        let now = 1_700_000_000 * NANOS_PER_SECOND;
        let mut state = None;
        for n in 1..=100 {
            let outcome = hit(&limit, &mut state, now, 1);
            assert!(outcome.admitted, "request {n}");
            assert_eq!(outcome.remaining, 100 - n);
            assert_eq!(outcome.used, n);
            assert_eq!(outcome.reset_after, n * interval);
        }
        let denied = hit(&limit, &mut state, now, 1);
        assert!(!denied.admitted);
        assert_eq!(denied.reset_after, interval);
        assert_eq!(denied.used, 101);

        // One token per 0.6 s after that, not a new burst at a boundary.
        assert!(!hit(&limit, &mut state, now + interval - 1, 1).admitted);
        assert!(hit(&limit, &mut state, now + interval, 1).admitted);
        assert!(!hit(&limit, &mut state, now + interval, 1).admitted);
        let later = hit(&limit, &mut state, now + 31 * interval, 3);
        assert!(later.admitted);
        assert_eq!(later.remaining, 27);
        // Full again once the 73 borrowed tokens have refilled.
        assert_eq!(later.reset_after, 73 * interval);
    }

    #[test]
    fn fractional_emission_interval_is_exact() {
        // 3 per second: T = 333_333_333.33.. ns.
        let limit = bucket(3, Unit::Second, 1);
        let mut state = None;
        assert!(hit(&limit, &mut state, 0, 1).admitted);
        let denied = hit(&limit, &mut state, 0, 1);
        assert!(!denied.admitted);
        assert_eq!(denied.reset_after, 333_333_334);
        assert!(!evaluate(&limit, state, 333_333_333, 1).outcome.admitted);
        assert!(evaluate(&limit, state, 333_333_334, 1).outcome.admitted);
        // Retrying at each reported reset_after: the ten tokens of 10/3 s
        // come at most a nanosecond per token late (the rounded-up tat).
        let mut now = 333_333_334;
        for _ in 0..9 {
            assert!(hit(&limit, &mut state, now, 1).admitted);
            now += evaluate(&limit, state, now, 1).outcome.reset_after;
        }
        let ideal = 10 * NANOS_PER_SECOND / 3;
        assert!((ideal..=ideal + 10).contains(&now), "{now}");
    }

    #[test]
    fn more_than_burst_never_fits() {
        let limit = bucket(10, Unit::Second, 5);
        let outcome = evaluate(&limit, None, 0, 6).outcome;
        assert!(!outcome.admitted);
        assert_eq!(outcome.reset_after, NANOS_PER_SECOND);
    }

    #[test]
    fn zero_rate_or_burst_denies_every_hit() {
        for limit in [bucket(0, Unit::Second, 5), bucket(5, Unit::Second, 0)] {
            let denied = evaluate(&limit, None, 9, 1).outcome;
            assert!(!denied.admitted);
            assert_eq!(denied.reset_after, NANOS_PER_SECOND);
            assert!(evaluate(&limit, None, 9, 0).outcome.admitted);
        }
    }

    #[test]
    fn zero_hits_checks_without_counting() {
        let limit = bucket(10, Unit::Second, 10);
        let state = Some(CounterState::Bucket { tat: 500_000_000 });
        let evaluation = evaluate(&limit, state, 0, 0);
        assert!(evaluation.outcome.admitted);
        assert_eq!(evaluation.outcome.remaining, 5);
        assert_eq!(Some(evaluation.counted), state);
    }

    #[test]
    fn tat_far_ahead_is_a_clock_step_and_reads_as_full() {
        let limit = bucket(10, Unit::Second, 10);
        // Within burst time + one window ahead: the bucket looks empty.
        let skewed = Some(CounterState::Bucket {
            tat: 2 * NANOS_PER_SECOND,
        });
        let outcome = evaluate(&limit, skewed, 0, 1).outcome;
        assert!(!outcome.admitted);
        assert_eq!(
            outcome.reset_after,
            NANOS_PER_SECOND + NANOS_PER_SECOND / 10
        );
        let stepped = Some(CounterState::Bucket {
            tat: 2 * NANOS_PER_SECOND + 1,
        });
        assert!(evaluate(&limit, stepped, 0, 10).outcome.admitted);
    }

    #[test]
    fn extremes_do_not_panic_or_wrap() {
        for (rpu, burst) in [(1, 1), (u64::MAX, u64::MAX), (1, u64::MAX), (u64::MAX, 1)] {
            let limit = Limit {
                unit_multiplier: u64::MAX,
                ..bucket(rpu, Unit::Year, burst)
            };
            for tat in [None, Some(0), Some(u64::MAX)] {
                let state = tat.map(|tat| CounterState::Bucket { tat });
                for now in [0, 1, u64::MAX] {
                    for hits in [0, 1, u64::MAX] {
                        let evaluation = evaluate(&limit, state, now, hits);
                        assert!(!evaluation.outcome.admitted || hits <= burst);
                    }
                }
            }
        }
    }
}
