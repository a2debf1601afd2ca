//! What one descriptor adds to its rule's stats, by the reference server's
//! rules: shared by floodgate's own series ([`super::metrics`]) and the
//! reference-named ones ([`super::reference`]).

/// What one descriptor adds to its rule's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleCounts {
    /// Added to hits.
    pub hits: u64,
    /// Added to over-limit.
    pub over_limit: u64,
    /// Added to near-limit.
    pub near_limit: u64,
    /// Added to within-limit.
    pub within_limit: u64,
    /// Added to shadow-mode.
    pub shadow_mode: u64,
}

impl RuleCounts {
    /// The reference's stats for one descriptor: `limit` and `near` its
    /// thresholds, `after` the counter after this request's `hits`, `over`
    /// whether the limit said no (before any shadow rewrite) and `shadowed`
    /// whether the rule's shadow mode reported OK instead.
    pub fn of(limit: u64, near: u64, after: u64, hits: u64, over: bool, shadowed: bool) -> Self {
        let before = after.saturating_sub(hits);
        let mut counts = RuleCounts {
            hits,
            ..RuleCounts::default()
        };
        if over {
            // Algorithms other than the fixed window can deny with `after`
            // not above the limit; all their hits are then over.
            let over_part = if before >= limit || after <= limit {
                hits
            } else {
                counts.near_limit = limit.saturating_sub(near.max(before));
                after - limit
            };
            counts.over_limit = over_part;
            if shadowed {
                counts.shadow_mode = over_part;
            }
        } else {
            if after > near {
                counts.near_limit = if before >= near { hits } else { after - near };
            }
            counts.within_limit = hits;
        }
        counts
    }
}
