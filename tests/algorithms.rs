//! Property tests of the limit algorithms through the public API, with a
//! simulated clock and random request streams.
//!
//! A stream is a list of `(gap, hits)`: the clock advances by `gap`, then a
//! request of `hits` arrives and its state is committed when admitted, as a
//! store does. Streams mix simultaneous requests, nanosecond gaps (to bunch
//! hits at window edges) and long gaps.

use floodgate::limit::{
    Algorithm, CounterState, Evaluation, Limit, NANOS_PER_SECOND, Nanos, Outcome, Unit, evaluate,
};
use proptest::prelude::*;

/// One request as the simulation saw it.
#[derive(Clone, Copy, Debug)]
struct Event {
    now: Nanos,
    hits: u64,
    outcome: Outcome,
    /// The state before the request.
    before: Option<CounterState>,
    counted: CounterState,
}

fn window_start(now: Nanos, window: Nanos) -> Nanos {
    now - now % window
}

/// Runs requests at the given instants (in order, not necessarily
/// increasing), committing admitted hits.
fn run(limit: &Limit, requests: impl IntoIterator<Item = (Nanos, u64)>) -> Vec<Event> {
    let mut state = None;
    let mut events = vec![];
    for (now, hits) in requests {
        let Evaluation {
            outcome, counted, ..
        } = evaluate(limit, state, now, hits);
        events.push(Event {
            now,
            hits,
            outcome,
            before: state,
            counted,
        });
        if outcome.admitted {
            state = Some(counted);
        }
    }
    events
}

/// Turns gaps into increasing instants from `start`.
fn instants(start: Nanos, stream: &[(Nanos, u64)]) -> Vec<(Nanos, u64)> {
    let mut now = start;
    stream
        .iter()
        .map(|&(gap, hits)| {
            now += gap;
            (now, hits)
        })
        .collect()
}

fn limit(algorithm: Algorithm, requests_per_unit: u64, seconds: u64, burst: u64) -> Limit {
    Limit {
        requests_per_unit,
        unit: Unit::Second,
        unit_multiplier: seconds,
        algorithm,
        burst,
        calendar: None,
    }
}

/// Gaps: simultaneous, nanoseconds apart, or a good part of a window.
fn gap() -> impl Strategy<Value = Nanos> {
    prop_oneof![
        2 => Just(0),
        3 => 1..1_000u64,
        5 => 1..NANOS_PER_SECOND / 2,
        1 => NANOS_PER_SECOND / 2..3 * NANOS_PER_SECOND,
    ]
}

fn stream() -> impl Strategy<Value = Vec<(Nanos, u64)>> {
    prop::collection::vec((gap(), 1..=5u64), 1..120)
}

/// A start a little before a window boundary, so bunching at edges happens.
fn start() -> impl Strategy<Value = Nanos> {
    (1_000u64..2_000, 0..NANOS_PER_SECOND).prop_map(|(s, ns)| s * NANOS_PER_SECOND - ns)
}

fn admitted(events: &[Event]) -> impl Iterator<Item = &Event> {
    events.iter().filter(|e| e.outcome.admitted)
}

fn admitted_in(events: &[Event], from: Nanos, until: Nanos) -> u64 {
    admitted(events)
        .filter(|e| (from..until).contains(&e.now))
        .map(|e| e.hits)
        .sum()
}

/// After a denied request that could ever fit, waiting exactly
/// `reset_after` with no other traffic admits it, and not a nanosecond
/// sooner (when the wait is exact).
fn check_liveness(limit: &Limit, event: &Event, exact: bool) -> Result<(), TestCaseError> {
    let at = event.now + event.outcome.reset_after;
    prop_assert!(
        evaluate(limit, event.before, at, event.hits)
            .outcome
            .admitted,
        "not admitted after reset_after: {event:?}"
    );
    if exact && event.outcome.reset_after > 0 {
        prop_assert!(
            !evaluate(limit, event.before, at - 1, event.hits)
                .outcome
                .admitted,
            "admitted before reset_after: {event:?}"
        );
    }
    Ok(())
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 96,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fixed_window_admits_at_most_the_limit_per_aligned_window(
        rpu in 0..20u64, seconds in 1..=3u64, start in start(), stream in stream(),
    ) {
        let limit = limit(Algorithm::FixedWindow, rpu, seconds, rpu);
        let window = limit.window();
        let events = run(&limit, instants(start, &stream));
        for event in admitted(&events) {
            let from = window_start(event.now, window);
            prop_assert!(admitted_in(&events, from, from + window) <= rpu);
        }
        for event in events.iter().filter(|e| !e.outcome.admitted && e.hits <= rpu) {
            check_liveness(&limit, event, true)?;
        }
    }

    #[test]
    fn sliding_window_bounds(
        rpu in 0..20u64, seconds in 1..=3u64, start in start(), stream in stream(),
    ) {
        let limit = limit(Algorithm::SlidingWindow, rpu, seconds, rpu);
        let window = limit.window();
        let events = run(&limit, instants(start, &stream));
        for event in admitted(&events) {
            // Every aligned window: at most the limit.
            let aligned = window_start(event.now, window);
            prop_assert!(admitted_in(&events, aligned, aligned + window) <= rpu);

            // Every window-long interval: at most L + p − ceil(p(a+1)/W) <= 2L − 1.
            let from = event.now;
            let in_interval = admitted_in(&events, from, from + window);
            prop_assert!(in_interval <= (2 * rpu).saturating_sub(1));
            if from != aligned {
                let boundary = aligned + window;
                let before_boundary = u128::from(boundary - from);
                let previous = admitted_in(&events, aligned, boundary);
                let decayed = (u128::from(previous) * (before_boundary + 1))
                    .div_ceil(u128::from(window));
                let bound = u128::from(rpu) + u128::from(previous) - decayed;
                prop_assert!(
                    u128::from(in_interval) <= bound,
                    "{in_interval} hits in [{from}, +W) > {bound} (p = {previous})"
                );
            }
        }
        for event in events.iter().filter(|e| !e.outcome.admitted && e.hits <= rpu) {
            check_liveness(&limit, event, true)?;
        }
    }

    #[test]
    fn token_bucket_bounds(
        rpu in 1..20u64, seconds in 1..=3u64, burst in 1..25u64,
        start in start(), stream in stream(),
    ) {
        let limit = limit(Algorithm::TokenBucket, rpu, seconds, burst);
        let window = u128::from(limit.window());
        let events = run(&limit, instants(start, &stream));
        let taken: Vec<&Event> = admitted(&events).collect();
        // Over any [t_i, t_j]: admitted × W <= burst × W + (t_j − t_i) × rpu.
        for (i, first) in taken.iter().enumerate() {
            let mut hits = 0u128;
            for last in &taken[i..] {
                hits += u128::from(last.hits);
                let elapsed = u128::from(last.now - first.now);
                prop_assert!(
                    hits * window <= u128::from(burst) * window + elapsed * u128::from(rpu),
                    "{hits} hits in {elapsed} ns"
                );
            }
        }
        for event in events.iter().filter(|e| !e.outcome.admitted && e.hits <= burst) {
            check_liveness(&limit, event, true)?;
        }
    }

    #[test]
    fn many_hits_count_as_that_many_requests(
        algorithm in prop::sample::select(Algorithm::ALL.to_vec()),
        rpu in 0..20u64, burst in 1..25u64, start in start(), stream in stream(),
        batch in 1..=8u64,
    ) {
        let limit = limit(algorithm, rpu, 1, burst);
        // Random history, then `batch` hits at once versus one by one.
        let events = run(&limit, instants(start, &stream));
        let state = events
            .iter()
            .rev()
            .find(|e| e.outcome.admitted)
            .map(|e| e.counted);
        let now = events.last().map_or(start, |e| e.now) + 1;
        let together = evaluate(&limit, state, now, batch);
        let mut single_state = state;
        let mut all_singles = true;
        for _ in 0..batch {
            let single = evaluate(&limit, single_state, now, 1);
            all_singles &= single.outcome.admitted;
            if single.outcome.admitted {
                single_state = Some(single.counted);
            }
        }
        if algorithm == Algorithm::TokenBucket {
            // Each single rounds its tat up to a nanosecond; the batch once.
            if all_singles {
                prop_assert!(together.outcome.admitted);
                let (Some(CounterState::Bucket { tat: singles }), CounterState::Bucket { tat }) =
                    (single_state, together.counted) else {
                    return Err(TestCaseError::fail("not a bucket state"));
                };
                prop_assert!((tat..=tat + batch).contains(&singles));
            }
        } else {
            prop_assert_eq!(together.outcome.admitted, all_singles);
            if all_singles {
                prop_assert_eq!(Some(together.counted), single_state);
            }
        }
    }

    #[test]
    fn extreme_values_never_panic(
        algorithm in prop::sample::select(Algorithm::ALL.to_vec()),
        rpu in prop_oneof![Just(0), Just(1), Just(u64::MAX), any::<u64>()],
        burst in prop_oneof![Just(0), Just(u64::MAX), any::<u64>()],
        unit in prop::sample::select(Unit::ALL.to_vec()),
        multiplier in prop_oneof![Just(0), Just(u64::MAX), any::<u64>()],
        now in prop_oneof![Just(0), Just(u64::MAX), any::<u64>()],
        hits in prop_oneof![Just(0), Just(u64::MAX), any::<u64>()],
        a in prop_oneof![Just(0), Just(u64::MAX), any::<u64>()],
        b in prop_oneof![Just(0), Just(u64::MAX), any::<u64>()],
        c in prop_oneof![Just(0), Just(u64::MAX), any::<u64>()],
        variant in 0..4u8,
    ) {
        let limit = Limit { requests_per_unit: rpu, unit, unit_multiplier: multiplier, algorithm, burst, calendar: None };
        let state = match variant {
            0 => None,
            1 => Some(CounterState::Fixed { window_start: a, count: b }),
            2 => Some(CounterState::Sliding { window_start: a, current: b, previous: c }),
            _ => Some(CounterState::Bucket { tat: a }),
        };
        let outcome = evaluate(&limit, state, now, hits).outcome;
        let cap = if algorithm == Algorithm::TokenBucket { burst.min(if rpu == 0 { 0 } else { u64::MAX }) } else { rpu };
        prop_assert!(!outcome.admitted || hits <= cap);
        prop_assert!(outcome.admitted || outcome.remaining == 0);
    }
}

/// A clock that runs forward in real time but reads up to `jitter` behind
/// it, as replicas with skewed clocks sharing a store do: requests as
/// `(real time, observed time, hits)`.
fn skewed(start: Nanos, stream: &[(Nanos, Nanos, u64)]) -> Vec<(Nanos, Nanos, u64)> {
    let mut real = start;
    stream
        .iter()
        .map(|&(gap, behind, hits)| {
            real += gap;
            (real, real - behind, hits)
        })
        .collect()
}

fn skewed_stream(jitter: Nanos) -> impl Strategy<Value = Vec<(Nanos, Nanos, u64)>> {
    prop::collection::vec((gap(), 0..=jitter, 1..=5u64), 1..120)
}

proptest! {
    #![proptest_config(config())]

    /// Skew of less than a window: no stored window ever moves back (so no
    /// window is reset and recounted), each counted window holds at most the
    /// limit, a lock-out lasts at most one window beyond the normal wait
    /// plus the skew, and waiting it out admits the request.
    #[test]
    fn window_algorithms_under_skew(
        sliding in any::<bool>(), rpu in 1..20u64, start in start(),
        stream in skewed_stream(900_000_000),
    ) {
        let algorithm = if sliding { Algorithm::SlidingWindow } else { Algorithm::FixedWindow };
        let limit = limit(algorithm, rpu, 1, rpu);
        let window = limit.window();
        let requests = skewed(start, &stream);
        let events = run(&limit, requests.iter().map(|&(_, now, hits)| (now, hits)));
        let mut per_window = std::collections::BTreeMap::<Nanos, u64>::new();
        let mut latest = 0;
        for event in admitted(&events) {
            let start = match event.counted {
                CounterState::Fixed { window_start, .. }
                | CounterState::Sliding { window_start, .. } => window_start,
                CounterState::Bucket { .. } => return Err(TestCaseError::fail("bucket state")),
            };
            prop_assert!(start >= latest, "window moved back");
            latest = start;
            *per_window.entry(start).or_default() += event.hits;
        }
        prop_assert!(per_window.values().all(|&hits| hits <= rpu), "{per_window:?}");
        let normal = if sliding { 2 * window } else { window };
        for event in events.iter().filter(|e| !e.outcome.admitted && e.hits <= rpu) {
            prop_assert!(event.outcome.reset_after <= normal + 900_000_000);
            check_liveness(&limit, event, true)?;
        }
    }

    /// Skew `J`: over any real-time interval of length `d`, the bucket admits
    /// at most `burst + rpu × (d + J) / W`, and waits are at most the time
    /// to refill the burst plus the skew.
    #[test]
    fn token_bucket_under_skew(
        rpu in 1..20u64, burst in 1..25u64, start in start(),
        stream in skewed_stream(700_000_000),
    ) {
        let jitter = 700_000_000u128;
        let limit = limit(Algorithm::TokenBucket, rpu, 1, burst);
        let window = u128::from(limit.window());
        let requests = skewed(start, &stream);
        let events = run(&limit, requests.iter().map(|&(_, now, hits)| (now, hits)));
        let real: Vec<Nanos> = requests.iter().map(|&(real, _, _)| real).collect();
        let taken: Vec<usize> = (0..events.len()).filter(|&i| events[i].outcome.admitted).collect();
        for (n, &i) in taken.iter().enumerate() {
            let mut hits = 0u128;
            for &j in &taken[n..] {
                hits += u128::from(events[j].hits);
                let elapsed = u128::from(real[j] - real[i]) + jitter;
                prop_assert!(hits * window <= u128::from(burst) * window + elapsed * u128::from(rpu));
            }
        }
        let refill = (u128::from(burst) * window).div_ceil(u128::from(rpu));
        for event in events.iter().filter(|e| !e.outcome.admitted && e.hits <= burst) {
            prop_assert!(u128::from(event.outcome.reset_after) <= refill + jitter + 1);
            check_liveness(&limit, event, true)?;
        }
    }

    /// Arbitrary clock steps, forward and back by many windows: waits stay
    /// bounded (two windows for a fixed window, three for the sliding one,
    /// a window plus the burst's refill for a bucket) and stay truthful.
    #[test]
    fn clock_steps_never_lock_a_key_out(
        algorithm in prop::sample::select(Algorithm::ALL.to_vec()),
        rpu in 1..20u64, burst in 1..25u64,
        steps in prop::collection::vec((0..20 * NANOS_PER_SECOND, 1..=5u64), 1..80),
    ) {
        let limit = limit(algorithm, rpu, 1, burst);
        let window = limit.window();
        let base = 1_000 * NANOS_PER_SECOND;
        let events = run(&limit, steps.iter().map(|&(offset, hits)| (base + offset, hits)));
        let bound = match algorithm {
            Algorithm::FixedWindow => 2 * window,
            Algorithm::SlidingWindow => 3 * window,
            Algorithm::TokenBucket => window + (burst * window).div_ceil(rpu) + 1,
        };
        let fits = if algorithm == Algorithm::TokenBucket { burst } else { rpu };
        for event in events.iter().filter(|e| !e.outcome.admitted && e.hits <= fits) {
            prop_assert!(event.outcome.reset_after <= bound, "{event:?}");
            check_liveness(&limit, event, false)?;
        }
    }
}

/// The local period (day, ISO week, month or year) of `now` in `zone`, as
/// civil numbers, computed with nothing but jiff's instant-to-local
/// conversion: two instants are in one calendar window exactly when their
/// periods are equal.
fn local_period(zone: &jiff::tz::TimeZone, unit: Unit, now: Nanos) -> (i16, i16, i8) {
    let second = i64::try_from(now / NANOS_PER_SECOND).unwrap_or(i64::MAX);
    let Ok(instant) = jiff::Timestamp::from_second(second) else {
        return (0, 0, 0);
    };
    let day = zone.to_datetime(instant).date();
    match unit {
        Unit::Day => (day.year(), day.day_of_year(), 0),
        Unit::Week => {
            let week = day.iso_week_date();
            (week.year(), i16::from(week.week()), 0)
        }
        Unit::Month => (day.year(), 0, day.month()),
        _ => (day.year(), 0, 0),
    }
}

const CALENDAR_ZONES: &[&str] = &[
    "UTC",
    "Asia/Kolkata",
    "America/New_York",
    "Europe/London",
    "Australia/Lord_Howe",
    "America/Santiago",
    "Pacific/Chatham",
];

proptest! {
    #![proptest_config(config())]

    /// Calendar windows over streams spanning days to years (around 2026's
    /// daylight-saving transitions): each local period admits at most the
    /// limit, a request is denied only when its period is full, and
    /// `reset_after` lands exactly on the next local boundary (the second
    /// before it is still in the period, the reset instant is not).
    #[test]
    fn calendar_windows_count_per_local_period(
        zone in prop::sample::select(CALENDAR_ZONES),
        unit in prop::sample::select(vec![Unit::Day, Unit::Week, Unit::Month, Unit::Year]),
        rpu in 1..8u64,
        steps in prop::collection::vec((0..40 * 3_600 * NANOS_PER_SECOND, 1..=3u64), 1..60),
        scale in prop::sample::select(vec![1u64, 7, 40]),
    ) {
        let calendar = floodgate::limit::calendar::Calendar::named(zone).expect("zone");
        let tz = jiff::tz::TimeZone::get(zone).expect("zone");
        let limit = Limit { calendar: Some(calendar), ..Limit::fixed(rpu, unit) };
        // 2026-03-01T00:00:00Z, a few weeks before the northern spring change.
        let mut now = 1_772_323_200 * NANOS_PER_SECOND;
        let requests: Vec<(Nanos, u64)> = steps
            .iter()
            .map(|&(gap, hits)| {
                now += gap / 40 * scale;
                (now, hits)
            })
            .collect();
        let events = run(&limit, requests.iter().copied());
        let mut used = std::collections::HashMap::<(i16, i16, i8), u64>::new();
        for event in &events {
            let period = local_period(&tz, unit, event.now);
            let count = used.entry(period).or_default();
            let fits = *count + event.hits <= rpu;
            prop_assert_eq!(event.outcome.admitted, fits, "{:?}", event);
            if fits {
                *count += event.hits;
            }
            let reset = event.now + event.outcome.reset_after;
            prop_assert_eq!(reset % NANOS_PER_SECOND, 0);
            prop_assert_eq!(local_period(&tz, unit, reset - NANOS_PER_SECOND), period);
            prop_assert_ne!(local_period(&tz, unit, reset), period);
        }
    }
}
