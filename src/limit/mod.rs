//! The rate-limit algorithms, as pure functions.
//!
//! Every algorithm is a function of `(limit, stored state, now, hits)` that
//! returns an [`Evaluation`]: whether the hits fit, what to report, and the
//! state to store if the hits are counted. Nothing here reads a clock, does
//! I/O or locks: time is passed in as [`Nanos`] since the Unix epoch, so the
//! memory store, the Redis store (whose Lua scripts implement the same math)
//! and the property tests share one definition of every algorithm.
//!
//! - [`fixed_window`]: windows aligned to the Unix epoch, as the reference
//!   server counts them.
//! - [`sliding_window`]: the two-window weighted estimate.
//! - [`token_bucket`]: GCRA, exact continuous refill with a burst capacity.
//! - [`calendar`]: fixed windows that start at a time zone's local day,
//!   ISO week, month or year boundary.

pub mod calendar;
pub mod fixed_window;
pub mod sliding_window;
pub mod token_bucket;

/// Nanoseconds since the Unix epoch (or a duration in nanoseconds).
pub type Nanos = u64;

/// One second in [`Nanos`].
pub const NANOS_PER_SECOND: Nanos = 1_000_000_000;

/// The unit of a limit's window. Month is 30 days and year 365 days, as in the
/// reference server; windows are aligned to the Unix epoch, unless the limit
/// counts in a [`calendar::Calendar`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unit {
    Second,
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Unit {
    /// Every unit, shortest first.
    pub const ALL: [Unit; 7] = [
        Unit::Second,
        Unit::Minute,
        Unit::Hour,
        Unit::Day,
        Unit::Week,
        Unit::Month,
        Unit::Year,
    ];

    /// The unit's length in seconds.
    pub const fn seconds(self) -> u64 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3_600,
            Unit::Day => 86_400,
            Unit::Week => 7 * 86_400,
            Unit::Month => 30 * 86_400,
            Unit::Year => 365 * 86_400,
        }
    }

    /// Parses a unit name case-insensitively (`second`, `MINUTE`, ...).
    pub fn parse(name: &str) -> Option<Unit> {
        Unit::ALL
            .into_iter()
            .find(|unit| unit.as_str().eq_ignore_ascii_case(name))
    }

    /// The unit's name as written in configs, in lower case.
    pub const fn as_str(self) -> &'static str {
        match self {
            Unit::Second => "second",
            Unit::Minute => "minute",
            Unit::Hour => "hour",
            Unit::Day => "day",
            Unit::Week => "week",
            Unit::Month => "month",
            Unit::Year => "year",
        }
    }
}

impl std::fmt::Display for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a limit counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Fixed windows aligned to the Unix epoch (the reference's algorithm).
    #[default]
    FixedWindow,
    /// The previous window's count, weighted by its share still inside the
    /// sliding window, plus the current window's count.
    SlidingWindow,
    /// A token bucket of capacity `burst` refilled smoothly at
    /// `requests_per_unit` per window (GCRA).
    TokenBucket,
}

impl Algorithm {
    /// Every algorithm.
    pub const ALL: [Algorithm; 3] = [
        Algorithm::FixedWindow,
        Algorithm::SlidingWindow,
        Algorithm::TokenBucket,
    ];

    /// The name used in configs: `fixed_window`, `sliding_window`, `token_bucket`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Algorithm::FixedWindow => "fixed_window",
            Algorithm::SlidingWindow => "sliding_window",
            Algorithm::TokenBucket => "token_bucket",
        }
    }

    /// Parses a config name (exact, lower case).
    pub fn parse(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

/// One limit: `requests_per_unit` per `unit_multiplier × unit`, counted by `algorithm`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Limit {
    /// Requests admitted per window (for a token bucket: the refill per window).
    pub requests_per_unit: u64,
    /// The window's unit.
    pub unit: Unit,
    /// The window is `unit_multiplier` units long; at least 1.
    pub unit_multiplier: u64,
    /// How hits are counted.
    pub algorithm: Algorithm,
    /// A token bucket's capacity; equals `requests_per_unit` unless configured.
    /// Ignored by the window algorithms.
    pub burst: u64,
    /// Windows start at this calendar's local boundary of `unit` (a day,
    /// week, month or year) instead of every `window()` since the epoch.
    /// Only fixed windows of one unit count in a calendar (the config
    /// accepts no other).
    pub calendar: Option<calendar::Calendar>,
}

impl Limit {
    /// A fixed-window limit of `requests_per_unit` per one `unit`, as the
    /// reference server's `rate_limit` means it.
    pub const fn fixed(requests_per_unit: u64, unit: Unit) -> Limit {
        Limit {
            requests_per_unit,
            unit,
            unit_multiplier: 1,
            algorithm: Algorithm::FixedWindow,
            burst: requests_per_unit,
            calendar: None,
        }
    }

    /// Whether a request of `hits` can never be admitted, however long it
    /// waits: more than a token bucket's `burst` (a bucket that refills
    /// never holds more). Windows are not judged here: a request of more
    /// than `requests_per_unit` keeps its answer of the window's end.
    pub fn never_fits(&self, hits: u64) -> bool {
        self.algorithm == Algorithm::TokenBucket
            && self.requests_per_unit > 0
            && self.burst > 0
            && hits > self.burst
    }

    /// The window length in nanoseconds (never zero, saturating at `u64::MAX`);
    /// for a calendar limit, the unit's nominal length (a calendar window's
    /// real length is [`calendar::Calendar::window`]'s).
    pub fn window(&self) -> Nanos {
        self.unit
            .seconds()
            .saturating_mul(self.unit_multiplier.max(1))
            .saturating_mul(NANOS_PER_SECOND)
    }
}

/// What a store keeps per counter key. A state of another algorithm than the
/// limit's (after a config change) is treated as no state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterState {
    /// Hits counted in the window starting at `window_start`.
    Fixed { window_start: Nanos, count: u64 },
    /// Hits in the window starting at `window_start` and in the one before it.
    Sliding {
        window_start: Nanos,
        current: u64,
        previous: u64,
    },
    /// GCRA's theoretical arrival time: the bucket is full again at `tat`.
    Bucket { tat: Nanos },
}

/// What one limit says about one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The hits fit within the limit.
    pub admitted: bool,
    /// Requests of size one still admissible now, after this request's hits
    /// are counted (0 when not admitted).
    pub remaining: u64,
    /// When admitted: time until the window resets or the bucket is full
    /// again. When not admitted: time until a request of this size could be
    /// admitted (for a fixed window, the end of the window).
    pub reset_after: Nanos,
    /// Usage after this request as the algorithm sees it (window count,
    /// sliding estimate rounded up, or tokens taken), for near-limit reporting.
    pub used: u64,
}

/// The result of evaluating hits against a limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Evaluation {
    /// The decision and what to report.
    pub outcome: Outcome,
    /// The state with this request's hits added, whatever the decision. A
    /// store commits it when the request is admitted; it commits a denied
    /// request's hits only for a fixed window whose rule counts over-limit
    /// hits as the reference does (see `store::Check::count_when_denied`).
    pub counted: CounterState,
    /// When the state may be forgotten: after this instant a missing state
    /// means exactly the same as `counted`.
    pub expires_at: Nanos,
}

/// The start of the window of length `window` containing `now`, aligned to
/// the Unix epoch.
pub(crate) fn window_start(now: Nanos, window: Nanos) -> Nanos {
    // `Limit::window` is never zero; `max(1)` keeps a hand-built zero from
    // panicking on the modulo.
    now - now % window.max(1)
}

/// Where a stored window sits relative to the window containing `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StoredWindow {
    /// The window containing `now`.
    Current,
    /// The window just before it.
    Previous,
    /// The window just after it: written by a clock running ahead of ours
    /// (or before ours stepped back) by less than a window.
    Next,
    /// Anything else: older, further ahead, or not aligned to this window
    /// length (the limit changed). It says nothing about recent traffic.
    Stale,
}

impl StoredWindow {
    /// Classifies `stored_start` against `current_start` for windows of `window`.
    pub(crate) fn classify(stored_start: Nanos, current_start: Nanos, window: Nanos) -> Self {
        if stored_start == current_start {
            StoredWindow::Current
        } else if current_start.checked_sub(window) == Some(stored_start) {
            StoredWindow::Previous
        } else if current_start.checked_add(window) == Some(stored_start) {
            StoredWindow::Next
        } else {
            StoredWindow::Stale
        }
    }
}

/// `ceil(numerator / denominator)` for a non-zero denominator.
pub(crate) fn div_ceil_u128(numerator: u128, denominator: u128) -> u128 {
    numerator.div_ceil(denominator.max(1))
}

/// Narrows to `u64`, saturating.
pub(crate) fn saturate_u64(value: u128) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

/// Evaluates `hits` against `limit` at `now`, given the stored `state`.
///
/// `hits == 0` checks without counting. Arithmetic saturates; nothing wraps.
pub fn evaluate(limit: &Limit, state: Option<CounterState>, now: Nanos, hits: u64) -> Evaluation {
    match limit.algorithm {
        Algorithm::FixedWindow => fixed_window::evaluate(limit, state, now, hits),
        Algorithm::SlidingWindow => sliding_window::evaluate(limit, state, now, hits),
        Algorithm::TokenBucket => token_bucket::evaluate(limit, state, now, hits),
    }
}
