use super::*;
use crate::proto::{Entry, RateLimitDescriptor};

fn mapped() -> ReferenceStats {
    ReferenceStats::new(Some(Mapper::reference_default(false)), 3)
}

fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(key, value)| Entry {
                key: (*key).to_owned(),
                value: (*value).to_owned(),
            })
            .collect(),
        ..RateLimitDescriptor::default()
    }
}

fn rule(id: &str, detailed_metric: bool) -> Rule {
    Rule {
        id: Arc::from(id),
        limits: Vec::new(),
        unlimited: false,
        shadow_mode: false,
        quota_mode: false,
        replaces: Vec::new(),
        name: None,
        reference_form: true,
        counts_denied_hits: true,
        header_limit: None,
        detailed_metric,
        value_to_metric: Vec::new(),
        stat_levels: Vec::new(),
    }
}

fn hits(n: u64) -> RuleCounts {
    RuleCounts {
        hits: n,
        within_limit: n,
        ..RuleCounts::default()
    }
}

#[test]
fn sanitising_follows_the_reference() {
    assert_eq!(sanitize("d.k_a:b|c"), "d.k_a_b_c");
    assert_eq!(
        sanitize("d.remote_address_10.0.0.1.path"),
        "d.remote_address_10_0_0_1.path"
    );
    assert_eq!(
        sanitize("d.masked_remote_address_0.0.0.0/0"),
        "d.masked_remote_address_0_0_0_0/0"
    );
    // Four-digit runs: the match starts inside them, as a regex's would.
    assert_eq!(sanitize("1234.5.6.7"), "1234_5_6_7");
    assert_eq!(sanitize("1.2.3"), "1.2.3");
    assert_eq!(sanitize("é:1.2.3.4"), "é_1_2_3_4");
}

#[test]
fn one_and_two_level_keys_map_to_key1_and_key2() {
    let stats = mapped();
    let one = stats.rule_stats("d.k_v");
    let two = stats.rule_stats("d.a_x.b.c");
    stats.add(
        &one,
        "d",
        &rule("d.k_v", false),
        &descriptor(&[("k", "v")]),
        hits(2),
    );
    stats.add(
        &two,
        "d",
        &rule("d.a_x.b.c", false),
        &descriptor(&[]),
        hits(1),
    );
    let text = stats.render();
    assert!(
        text.contains("ratelimit_service_rate_limit_total_hits{domain=\"d\",key1=\"k_v\"} 2"),
        "{text}"
    );
    assert!(
        text.contains(
            "ratelimit_service_rate_limit_within_limit{domain=\"d\",key1=\"a_x\",key2=\"b\"} 1"
        ),
        "{text}"
    );
    // Nothing counted, nothing served (as statsd_exporter).
    assert!(!text.contains("over_limit"), "{text}");
}

#[test]
fn request_values_make_keys_only_up_to_the_bound() {
    let stats = mapped();
    let own = stats.rule_stats("d.(override)");
    let mut overriding = descriptor(&[("tenant", "")]);
    overriding.limit = Some(crate::proto::RateLimitOverride::default());
    for tenant in 0..10 {
        overriding.entries[0].value = format!("t{tenant}");
        stats.add(
            &own,
            "d",
            &rule("d.(override)", false),
            &overriding,
            hits(1),
        );
    }
    assert_eq!(stats.dynamic_keys(), 3);
    let text = stats.render();
    for tenant in 0..3 {
        assert!(
            text.contains(&format!("key1=\"tenant_t{tenant}\"}} 1")),
            "{text}"
        );
    }
    // The rest count under the override's own key.
    assert!(text.contains("key1=\"(override)\"} 7"), "{text}");

    let own = stats.rule_stats("d.client");
    stats.add(
        &own,
        "d",
        &rule("d.client", true),
        &descriptor(&[("client", "c1")]),
        hits(1),
    );
    assert!(text.contains("key1=\"(override)\"} 7"));
    let text = stats.render();
    assert!(text.contains("key1=\"client\"} 1"), "full: {text}");
}

#[test]
fn detailed_metric_keys_carry_the_values() {
    let stats = mapped();
    let own = stats.rule_stats("d.client");
    stats.add(
        &own,
        "d",
        &rule("d.client", true),
        &descriptor(&[("client", "1.2.3.4")]),
        hits(1),
    );
    let text = stats.render();
    assert!(text.contains("key1=\"client_1_2_3_4\"} 1"), "{text}");
}

#[test]
fn service_stats_and_the_response_time_histogram() {
    let stats = mapped();
    stats.record_request(Duration::from_millis(20));
    stats.record_request(Duration::from_secs(2));
    stats.record_store_error();
    stats.record_config_load(true);
    let text = stats.render();
    for line in [
        "ratelimit_service_total_requests{grpc_method=\"ShouldRateLimit\"} 2",
        "ratelimit_service_should_rate_limit_error{err_type=\"redis_error\"} 1",
        "ratelimit_service_config_load_success 1",
        "# TYPE ratelimit_service_response_time_seconds histogram",
        "ratelimit_service_response_time_seconds_bucket{grpc_method=\"ShouldRateLimit\",le=\"0.025\"} 1",
        "ratelimit_service_response_time_seconds_bucket{grpc_method=\"ShouldRateLimit\",le=\"+Inf\"} 2",
        "ratelimit_service_response_time_seconds_count{grpc_method=\"ShouldRateLimit\"} 2",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
    assert!(!text.contains("config_load_error"), "{text}");
}

#[test]
fn without_a_mapper_nothing_is_rendered_but_everything_counts() {
    let stats = ReferenceStats::new(None, 10);
    stats.record_store_error();
    assert_eq!(stats.render(), "");
    let all = stats.stats();
    let redis = all
        .iter()
        .find(|s| s.name() == "ratelimit.service.call.should_rate_limit.redis_error");
    assert_eq!(redis.map(|s| s.value()), Some(1));
}

#[test]
fn value_to_metric_levels_take_the_request_value() {
    let rules = crate::config::load_sources(
        &[(
            "d.yaml".into(),
            "domain: d\ndescriptors:\n  - key: route\n    value_to_metric: true\n    descriptors:\n      - key: user\n        rate_limit: {unit: day, requests_per_unit: 5}\n  - key: path\n    value: 'a*'\n    share_threshold: true\n    value_to_metric: true\n    rate_limit: {unit: day, requests_per_unit: 5}\n"
                .to_owned(),
        )],
        &crate::config::LoadOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let stats = mapped();
    let request = descriptor(&[("route", "r1"), ("user", "u1")]);
    let rule = rules
        .lookup("d", &request.entries)
        .map(|m| m.rule.clone())
        .unwrap_or_else(|| panic!("no rule"));
    let own = stats.rule_stats(&rule.id);
    stats.add(&own, "d", &rule, &request, hits(1));
    // A shared wildcard keeps its pattern.
    let shared = descriptor(&[("path", "abc")]);
    let rule = rules
        .lookup("d", &shared.entries)
        .map(|m| m.rule.clone())
        .unwrap_or_else(|| panic!("no rule"));
    let own = stats.rule_stats(&rule.id);
    stats.add(&own, "d", &rule, &shared, hits(1));
    let text = stats.render();
    assert!(
        text.contains(
            "ratelimit_service_rate_limit_total_hits{domain=\"d\",key1=\"route_r1\",key2=\"user\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("key1=\"path_a*\"} 1"), "{text}");
}

#[test]
fn detailed_metric_keeps_a_shared_wildcard_pattern() {
    let rules = crate::config::load_sources(
        &[(
            "d.yaml".into(),
            "domain: d\ndescriptors:\n  - key: file\n    value: 'a*'\n    share_threshold: true\n    descriptors:\n      - key: user\n        detailed_metric: true\n        rate_limit: {unit: day, requests_per_unit: 5}\n"
                .to_owned(),
        )],
        &crate::config::LoadOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let stats = mapped();
    let request = descriptor(&[("file", "abc"), ("user", "u1")]);
    let rule = rules
        .lookup("d", &request.entries)
        .map(|m| m.rule.clone())
        .unwrap_or_else(|| panic!("no rule"));
    let own = stats.rule_stats(&rule.id);
    stats.add(&own, "d", &rule, &request, hits(1));
    let text = stats.render();
    assert!(
        text.contains("{domain=\"d\",key1=\"file_a*\",key2=\"user_u1\"} 1"),
        "{text}"
    );
}

#[test]
fn an_envoy_gateway_style_mapping_labels_three_levels_and_drops_the_rest() {
    let mapper = Mapper::parse(
        r#"
mappings:
  - match: "ratelimit.service.rate_limit.*.*.*.total_hits"
    name: "ratelimit_service_rate_limit_total_hits"
    timer_type: "histogram"
    labels: {domain: "$1", key1: "$2", key2: "$3"}
  - match: "ratelimit_server.*.response_time"
    name: "ratelimit_service_response_time_seconds"
    timer_type: histogram
    labels: {grpc_method: "$1"}
  - match: "."
    match_type: "regex"
    action: "drop"
    name: "dropped"
"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let stats = ReferenceStats::new(Some(mapper), 10);
    let nested = stats.rule_stats("d.a_x.b");
    let flat = stats.rule_stats("d.a_x");
    stats.add(
        &nested,
        "d",
        &rule("d.a_x.b", false),
        &descriptor(&[]),
        hits(1),
    );
    stats.add(&flat, "d", &rule("d.a_x", false), &descriptor(&[]), hits(1));
    stats.record_store_error();
    stats.record_request(Duration::from_millis(3));
    let text = stats.render();
    assert!(
        text.contains(
            "ratelimit_service_rate_limit_total_hits{domain=\"d\",key1=\"a_x\",key2=\"b\"} 1"
        ),
        "{text}"
    );
    // Everything else is dropped, the one-level key included.
    assert!(!text.contains("key1=\"a_x\"} "), "{text}");
    assert!(!text.contains("redis_error"), "{text}");
    // No scale: milliseconds, as that mapping serves them.
    assert!(
        text.contains(
            "ratelimit_service_response_time_seconds_sum{grpc_method=\"ShouldRateLimit\"} 3"
        ),
        "{text}"
    );
}
