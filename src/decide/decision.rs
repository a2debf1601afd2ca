//! What the decision path answers: a [`Decision`] per request, a
//! [`DescriptorDecision`] per descriptor, and the [`ResponseContext`]
//! [`crate::respond`] needs besides the statuses.

use std::sync::Arc;

use smallvec::SmallVec;

use crate::limit::Nanos;
use crate::rules::policy::ResponsePolicy;
use crate::rules::{Rule, RuleLimit};

/// The answer for one request descriptor. The default is a descriptor that
/// matched no rule: OK, nothing counted.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DescriptorDecision {
    /// The descriptor is over its limit (and not in shadow mode).
    pub over_limit: bool,
    /// The most restrictive limit that applied, if any.
    pub limit: Option<RuleLimit>,
    /// Requests of size one still admissible under that limit.
    pub remaining: u64,
    /// Time until the limit resets (OK) or until the request could be
    /// admitted (over limit); `None` when no limit applied.
    pub reset_after: Option<Nanos>,
    /// The rule that matched, if any (also set for unlimited rules).
    pub rule: Option<Arc<Rule>>,
    /// The limit was over but the rule's shadow mode reported OK.
    pub shadowed: bool,
    /// Usage after this request under the reported limit.
    pub used: u64,
    /// The fallback group that answered this descriptor OK without counting
    /// it, because a more preferred shape of the group is in the request.
    pub skipped_by: Option<Arc<str>>,
    /// The rule's `headers: true` limit, when it has one that was checked:
    /// what a domain's response headers describe instead of `limit`.
    pub header_limit: Option<HeaderLimit>,
    /// The request asks for more hits than `limit`, a token bucket, ever
    /// holds (its `burst`): no wait makes it fit, so no retry time is
    /// offered.
    pub never_fits: bool,
}

/// The state of a rule's `headers: true` limit after a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderLimit {
    /// Its index in the rule's limits.
    pub slot: usize,
    /// Requests of size one it still admits.
    pub remaining: u64,
    /// Time until it resets (admitted) or admits this request (denied).
    pub reset_after: Nanos,
}

/// The answers for a request's descriptors, in order: inline for up to two
/// descriptors. Not four: a [`Decision`] is moved several times on its way
/// out of the decide future, and each move copies the whole inline list;
/// with four descriptors the one allocation costs about what moving a
/// larger list would (README "What each optimisation bought").
pub type DescriptorDecisions = SmallVec<[DescriptorDecision; 2]>;

/// The answer for one request.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The request must be denied.
    pub over_limit: bool,
    /// The request would have been denied, but global shadow mode is on.
    pub global_shadowed: bool,
    /// The counter store failed and the store-error policy answered instead
    /// (`allow`: OK, `deny`: OVER_LIMIT); metrics count it as a store error.
    /// Under `error` the decision is an error instead, never a `Decision`.
    pub store_failed: bool,
    /// One entry per request descriptor, in order.
    pub descriptors: DescriptorDecisions,
    /// What [`crate::respond`] needs besides the statuses.
    pub context: ResponseContext,
}

/// The request's domain, the decision's time and the response settings
/// that apply to it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResponseContext {
    /// The request's domain (the rule set's copy when the domain is known,
    /// so that cloning it never allocates).
    pub domain: Arc<str>,
    /// The time the limits were evaluated at.
    pub now: Nanos,
    /// The domain's `response:` block, if any.
    pub policy: Option<Arc<ResponsePolicy>>,
}
