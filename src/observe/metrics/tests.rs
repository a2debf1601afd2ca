use super::*;

#[test]
fn within_and_near_limit_as_the_reference_counts() {
    // limit 10, near 8: the 9th hit alone is near.
    assert_eq!(
        RuleCounts::of(10, 8, 9, 1, false, false),
        RuleCounts {
            hits: 1,
            near_limit: 1,
            within_limit: 1,
            ..RuleCounts::default()
        }
    );
    // 3 hits taking the count from 6 to 9 cross near (8) by one.
    assert_eq!(
        RuleCounts::of(10, 8, 9, 3, false, false),
        RuleCounts {
            hits: 3,
            near_limit: 1,
            within_limit: 3,
            ..RuleCounts::default()
        }
    );
}

#[test]
fn crossing_the_limit_splits_hits_into_near_and_over() {
    // 7 -> 12 with limit 10, near 8: 2 over, 10 - max(8, 7) = 2 near.
    assert_eq!(
        RuleCounts::of(10, 8, 12, 5, true, false),
        RuleCounts {
            hits: 5,
            over_limit: 2,
            near_limit: 2,
            ..RuleCounts::default()
        }
    );
    // Already over: every hit is over.
    assert_eq!(
        RuleCounts::of(10, 8, 14, 2, true, true),
        RuleCounts {
            hits: 2,
            over_limit: 2,
            shadow_mode: 2,
            ..RuleCounts::default()
        }
    );
}

#[test]
fn render_shows_registered_series_and_separate_recorders_stay_separate() {
    let a = Metrics::new(DEFAULT_NEAR_LIMIT_RATIO);
    let b = Metrics::new(DEFAULT_NEAR_LIMIT_RATIO);
    a.record_reload(true, 1.0);
    let text = a.render(Some(3), 0);
    assert!(
        text.contains("floodgate_config_reloads_total{outcome=\"success\"} 1"),
        "{text}"
    );
    assert!(text.contains("floodgate_counters 3"), "{text}");
    let other = b.render(Some(0), 0);
    assert!(
        other.contains("floodgate_config_reloads_total{outcome=\"success\"} 0"),
        "{other}"
    );
}

/// A store failure answered by the `allow` or `deny` policy is still a
/// store error, as one answered with an error is.
#[test]
fn store_failures_count_whatever_the_policy_answered() {
    let metrics = Metrics::new(DEFAULT_NEAR_LIMIT_RATIO);
    let request = crate::proto::RateLimitRequest::default();
    let answered = |over_limit: bool| {
        Ok(Decision {
            over_limit,
            global_shadowed: false,
            store_failed: true,
            descriptors: Default::default(),
            context: Default::default(),
        })
    };
    let elapsed = Duration::from_micros(10);
    metrics.observe(Transport::Grpc, &request, &answered(false), elapsed);
    metrics.observe(Transport::Grpc, &request, &answered(true), elapsed);
    let failed = Err(DecideError::Store(crate::store::StoreError::Timeout));
    metrics.observe(Transport::Http, &request, &failed, elapsed);
    assert_eq!(metrics.store_errors(), 3);
    let text = metrics.render(None, 0);
    assert!(text.contains("floodgate_store_errors_total 3"), "{text}");
}
