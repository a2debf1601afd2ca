//! TODO: being written.
use super::{CounterState, Evaluation, Limit, Nanos};

/// Evaluates hits against a token_bucket limit.
pub fn evaluate(
    _limit: &Limit,
    _state: Option<CounterState>,
    _now: Nanos,
    _hits: u64,
) -> Evaluation {
    todo!()
}
