use super::*;
use crate::limit::{Algorithm, Limit, Unit};

fn load_one(yaml: &str) -> Result<RuleSet, ConfigErrors> {
    load_sources(
        &[(PathBuf::from("t.yaml"), yaml.to_owned())],
        &LoadOptions::default(),
    )
}

fn ok(yaml: &str) -> RuleSet {
    match load_one(yaml) {
        Ok(rules) => rules,
        Err(errors) => panic!("expected the config to load, got:\n{errors}"),
    }
}

fn errors(yaml: &str) -> Vec<ConfigError> {
    match load_one(yaml) {
        Ok(_) => panic!("expected errors, the config loaded"),
        Err(errors) => errors.0,
    }
}

/// The only error, checked for its line and a part of its reason.
fn single_error(yaml: &str, line: usize, reason_part: &str) -> ConfigError {
    let errors = errors(yaml);
    assert_eq!(errors.len(), 1, "expected one error, got {errors:#?}");
    let error = errors.into_iter().next().unwrap_or_else(|| unreachable!());
    assert_eq!(error.line, Some(line), "wrong line for {error}");
    assert!(
        error.reason.contains(reason_part),
        "'{}' does not contain '{reason_part}'",
        error.reason
    );
    error
}

/// The id of the rule matching `entries` in `domain`, if any.
fn id(rules: &RuleSet, domain: &str, entries: &[(&str, &str)]) -> Option<String> {
    rules.lookup(domain, entries).map(|m| m.rule.id.to_string())
}

fn rpu(rules: &RuleSet, domain: &str, entries: &[(&str, &str)]) -> Option<u64> {
    rules
        .lookup(domain, entries)
        .and_then(|m| m.rule.limits.first().map(|l| l.limit.requests_per_unit))
}

const BASIC: &str = "\
# a basic config, shaped like the reference's test config
domain: shop
descriptors:
  - key: tenant
    value: acme
    descriptors:
      - key: user
        rate_limit:
          unit: second
          requests_per_unit: 5
      - key: user
        value: vip
        rate_limit:
          unit: second
          requests_per_unit: 10
  - key: ip
    rate_limit:
      unit: minute
      requests_per_unit: 20
  - key: ip
    value: 10.0.0.1
    rate_limit:
      unit: minute
      requests_per_unit: 30
  - key: ip
    value: 10.0.0.2
  - key: path
    rate_limit:
      unit: hour
      requests_per_unit: 1
  - key: region
    value: eu
    rate_limit:
      unit: day
      requests_per_unit: 15
    descriptors:
      - key: zone
        value: a
        rate_limit:
          unit: day
          requests_per_unit: 25
  - key: internal
    rate_limit:
      unlimited: true
  - key: client
    detailed_metric: true
    rate_limit:
      unit: minute
      requests_per_unit: 70
";

#[test]
fn basic_matching_like_the_reference() {
    let rules = ok(BASIC);
    // Unknown domain and empty descriptors match nothing.
    assert_eq!(id(&rules, "other", &[("ip", "x")]), None);
    assert_eq!(id(&rules, "shop", &[]), None);
    // A placeholder without a rule, requested alone: nothing.
    assert_eq!(id(&rules, "shop", &[("tenant", "acme")]), None);
    assert_eq!(id(&rules, "shop", &[("tenant", "other")]), None);
    // Default at level 2, and the exact override.
    assert_eq!(
        id(&rules, "shop", &[("tenant", "acme"), ("user", "bob")]).as_deref(),
        Some("shop.tenant_acme.user")
    );
    assert_eq!(
        rpu(&rules, "shop", &[("tenant", "acme"), ("user", "bob")]),
        Some(5)
    );
    assert_eq!(
        id(&rules, "shop", &[("tenant", "acme"), ("user", "vip")]).as_deref(),
        Some("shop.tenant_acme.user_vip")
    );
    assert_eq!(
        rpu(&rules, "shop", &[("tenant", "acme"), ("user", "vip")]),
        Some(10)
    );
    // Top-level default and override; a value without a rule is whitelisted.
    assert_eq!(
        id(&rules, "shop", &[("ip", "1.2.3.4")]).as_deref(),
        Some("shop.ip")
    );
    assert_eq!(rpu(&rules, "shop", &[("ip", "10.0.0.1")]), Some(30));
    assert_eq!(
        id(&rules, "shop", &[("ip", "10.0.0.1")]).as_deref(),
        Some("shop.ip_10.0.0.1")
    );
    assert_eq!(id(&rules, "shop", &[("ip", "10.0.0.2")]), None);
    // Deeper than the config: nothing (no backtracking to a shorter rule).
    assert_eq!(id(&rules, "shop", &[("ip", "1.2.3.4"), ("x", "y")]), None);
    assert_eq!(id(&rules, "shop", &[("region", "eu"), ("zone", "b")]), None);
    // A node with both a rule and children: its own rule at its depth...
    assert_eq!(rpu(&rules, "shop", &[("region", "eu")]), Some(15));
    // ... and the child's at the next.
    assert_eq!(
        rpu(&rules, "shop", &[("region", "eu"), ("zone", "a")]),
        Some(25)
    );
    // Unlimited.
    let unlimited = rules
        .lookup("shop", &[("internal", "x")])
        .map(|m| m.rule.clone());
    let unlimited = unlimited.unwrap_or_else(|| panic!("no unlimited rule"));
    assert!(unlimited.unlimited && unlimited.limits.is_empty() && unlimited.reference_form);
    // detailed_metric is kept as a flag; the id stays the config path.
    let client = rules
        .lookup("shop", &[("client", "abc")])
        .map(|m| m.rule.clone());
    let client = client.unwrap_or_else(|| panic!("no client rule"));
    assert!(client.detailed_metric);
    assert_eq!(&*client.id, "shop.client");
}

#[test]
fn reference_rate_limit_compiles_to_a_fixed_window() {
    let rules = ok(BASIC);
    let matched = rules.lookup("shop", &[("path", "/x")]);
    let rule = matched
        .map(|m| m.rule.clone())
        .unwrap_or_else(|| panic!("no rule"));
    assert_eq!(rule.limits.len(), 1);
    assert_eq!(rule.limits[0].limit, Limit::fixed(1, Unit::Hour));
    assert!(rule.reference_form);
    assert!(!rule.shadow_mode && !rule.quota_mode && !rule.unlimited);
    assert_eq!(rule.value_to_metric, vec![false]);
}

const WILDCARDS: &str = "\
domain: w
descriptors:
  - key: path
    value: /api/*
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: path
    value: /api/v1/*
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: path
    value: /api/v1/users
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: path
    rate_limit: {unit: minute, requests_per_unit: 4}
  - key: file
    value: '*.png'
    rate_limit: {unit: minute, requests_per_unit: 5}
  - key: route
    value: /svc*/v*/get
    rate_limit: {unit: minute, requests_per_unit: 6}
  - key: any
    value: '*'
    rate_limit: {unit: minute, requests_per_unit: 7}
";

#[test]
fn wildcard_precedence_exact_then_first_wildcard_then_default() {
    let rules = ok(WILDCARDS);
    assert_eq!(
        rpu(&rules, "w", &[("path", "/api/v1/users")]),
        Some(3),
        "exact first"
    );
    // Both wildcards match: the first in config order wins.
    assert_eq!(rpu(&rules, "w", &[("path", "/api/v1/orders")]), Some(1));
    assert_eq!(
        id(&rules, "w", &[("path", "/api/v1/orders")]).as_deref(),
        Some("w.path_/api/*")
    );
    assert_eq!(
        rpu(&rules, "w", &[("path", "/api/")]),
        Some(1),
        "empty match"
    );
    assert_eq!(
        rpu(&rules, "w", &[("path", "/other")]),
        Some(4),
        "default last"
    );
    assert_eq!(rpu(&rules, "w", &[("file", "a.png")]), Some(5), "suffix");
    assert_eq!(rpu(&rules, "w", &[("file", ".png")]), Some(5));
    assert_eq!(rpu(&rules, "w", &[("file", "a.jpg")]), None);
    assert_eq!(
        rpu(&rules, "w", &[("route", "/svcA/v2/get")]),
        Some(6),
        "several stars"
    );
    assert_eq!(rpu(&rules, "w", &[("route", "/svc/v/get")]), Some(6));
    assert_eq!(rpu(&rules, "w", &[("route", "/svcA/get")]), None);
    assert_eq!(
        rpu(&rules, "w", &[("any", "")]),
        Some(7),
        "star alone matches empty"
    );
    assert_eq!(rpu(&rules, "w", &[("any", "whatever")]), Some(7));
    assert_eq!(rpu(&rules, "w", &[("nokey", "x")]), None);
}

#[test]
fn no_backtracking_after_a_level_is_chosen() {
    let rules = ok("\
domain: d
descriptors:
  - key: a
    value: x
    descriptors:
      - key: b
        value: only
        rate_limit: {unit: second, requests_per_unit: 1}
  - key: a
    descriptors:
      - key: b
        rate_limit: {unit: second, requests_per_unit: 2}
");
    // (a, x) chooses the exact node; its children do not match (b, other),
    // and the default (a) branch is not tried.
    assert_eq!(rpu(&rules, "d", &[("a", "x"), ("b", "other")]), None);
    assert_eq!(rpu(&rules, "d", &[("a", "x"), ("b", "only")]), Some(1));
    assert_eq!(rpu(&rules, "d", &[("a", "y"), ("b", "other")]), Some(2));
}

#[test]
fn exact_node_without_children_stops_the_walk() {
    let rules = ok("\
domain: d
descriptors:
  - key: a
    value: x
  - key: a
    descriptors:
      - key: b
        rate_limit: {unit: second, requests_per_unit: 2}
");
    assert_eq!(rpu(&rules, "d", &[("a", "x"), ("b", "1")]), None);
    assert_eq!(rpu(&rules, "d", &[("a", "y"), ("b", "1")]), Some(2));
}

#[test]
fn share_threshold_reports_the_pattern_per_entry() {
    let rules = ok("\
domain: s
descriptors:
  - key: files
    value: files/*
    share_threshold: true
    rate_limit: {unit: minute, requests_per_unit: 100}
  - key: user
    value: user/*
    share_threshold: true
    descriptors:
      - key: resource
        value: res*v2
        share_threshold: true
        descriptors:
          - key: action
            rate_limit: {unit: minute, requests_per_unit: 150}
  - key: file
    value: test1
    rate_limit: {unit: minute, requests_per_unit: 50}
  - key: file
    value: test*
    share_threshold: true
    rate_limit: {unit: minute, requests_per_unit: 100}
  - key: plain
    value: p*
    rate_limit: {unit: minute, requests_per_unit: 1}
");
    let m = rules.lookup("s", &[("files", "files/a.txt")]);
    assert_eq!(m.map(|m| m.shared), Some(vec![(0, "files/*")]));
    let m = rules.lookup(
        "s",
        &[
            ("user", "user/1"),
            ("resource", "res-x-v2"),
            ("action", "get"),
        ],
    );
    assert_eq!(
        m.map(|m| m.shared),
        Some(vec![(0, "user/*"), (1, "res*v2")])
    );
    // An exact match beats the sharing wildcard and shares nothing.
    let m = rules.lookup("s", &[("file", "test1")]);
    assert_eq!(m.as_ref().map(|m| m.shared.clone()), Some(vec![]));
    assert_eq!(
        m.and_then(|m| m.rule.limits.first().map(|l| l.limit.requests_per_unit)),
        Some(50)
    );
    let m = rules.lookup("s", &[("file", "test2")]);
    assert_eq!(m.map(|m| m.shared), Some(vec![(0, "test*")]));
    // A wildcard without share_threshold counts each value separately.
    let m = rules.lookup("s", &[("plain", "pq")]);
    assert_eq!(m.map(|m| m.shared), Some(vec![]));
}

#[test]
fn share_threshold_without_a_star_is_rejected() {
    let e = single_error(
        "domain: d\ndescriptors:\n  - key: k\n    value: v\n    share_threshold: true\n",
        5,
        "share_threshold can only be used with wildcard values",
    );
    assert!(e.reason.contains("'k_v'"));
    assert_eq!(e.rule_path, "domain d, descriptors[0]");
    // false is fine anywhere
    ok("domain: d\ndescriptors:\n  - key: k\n    value: v\n    share_threshold: false\n");
}

#[test]
fn lenient_scalars_like_yaml_v2() {
    let rules = ok("\
domain: 123
descriptors:
  - key: port
    value: 8080
    rate_limit: {unit: MINUTE, requests_per_unit: 1_000}
  - key: flag
    value: true
    rate_limit: {unit: Hour, requests_per_unit: 0x10}
  - key: empty
    value: ~
    rate_limit: {unit: second, requests_per_unit: 1}
  - key: quoted
    value: '1.5'
    shadow_mode: yes
    rate_limit: {unit: day, requests_per_unit: ~}
");
    assert_eq!(rpu(&rules, "123", &[("port", "8080")]), Some(1000));
    assert_eq!(rpu(&rules, "123", &[("flag", "true")]), Some(16));
    assert_eq!(
        id(&rules, "123", &[("empty", "anything")]).as_deref(),
        Some("123.empty")
    );
    let m = rules
        .lookup("123", &[("quoted", "1.5")])
        .map(|m| m.rule.clone());
    let rule = m.unwrap_or_else(|| panic!("no quoted rule"));
    assert!(rule.shadow_mode);
    assert_eq!(rule.limits[0].limit.requests_per_unit, 0);
}

#[test]
fn floodgate_extensions_load() {
    let rules = ok("\
domain: api
descriptors:
  - key: api_key
    rate_limits:
      - {name: burst, algorithm: token_bucket, unit: minute, requests_per_unit: 100, burst: 100}
      - {name: sustained, algorithm: sliding_window, unit: hour, requests_per_unit: 1000}
  - key: user
    rate_limit:
      algorithm: token_bucket
      unit: second
      requests_per_unit: 10
      burst: 50
  - key: team
    rate_limit:
      unit: minute
      unit_multiplier: 5
      requests_per_unit: 20
  - key: org
    rate_limit:
      algorithm: fixed_window
      unit: minute
      requests_per_unit: 20
");
    let rule = |key: &str| {
        rules
            .lookup("api", &[(key, "x")])
            .map(|m| m.rule.clone())
            .unwrap_or_else(|| panic!("no rule for {key}"))
    };
    let api = rule("api_key");
    assert!(!api.reference_form);
    assert_eq!(api.limits.len(), 2);
    assert_eq!(api.limits[0].name.as_deref(), Some("burst"));
    assert_eq!(api.limits[0].limit.algorithm, Algorithm::TokenBucket);
    assert_eq!(api.limits[0].limit.burst, 100);
    assert_eq!(api.limits[1].limit.algorithm, Algorithm::SlidingWindow);
    assert_eq!(api.limits[1].limit.unit, Unit::Hour);
    assert_eq!(
        api.limits[1].limit.burst, 1000,
        "burst defaults to requests_per_unit"
    );
    let user = rule("user");
    assert!(!user.reference_form);
    assert_eq!(user.limits[0].limit.burst, 50);
    let team = rule("team");
    assert!(!team.reference_form);
    assert_eq!(team.limits[0].limit.unit_multiplier, 5);
    assert!(rule("org").reference_form);
}

#[test]
fn extension_rejections() {
    single_error(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1}\n    rate_limits:\n      - {name: a, unit: second}\n",
        6,
        "both 'rate_limit' and 'rate_limits'",
    );
    single_error(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n      burst: 5\n",
        6,
        "'burst' is only valid with 'algorithm: token_bucket'",
    );
    single_error(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n      algorithm: leaky\n",
        6,
        "unknown algorithm 'leaky'",
    );
    single_error(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n      unit_multiplier: 0\n",
        6,
        "'unit_multiplier' must be between 1",
    );
    single_error(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n      algorithm: token_bucket\n      burst: 0\n",
        7,
        "'burst' must be between 1",
    );
    single_error(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n      algorithm: token_bucket\n",
        5,
        "token_bucket needs a burst of at least 1",
    );
    single_error(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limits:\n      - {unit: second}\n",
        5,
        "needs a non-empty 'name'",
    );
    single_error(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limits:\n      - {name: a, unit: second}\n      - {name: a, unit: minute}\n",
        6,
        "duplicate limit name 'a'",
    );
    single_error(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limits: []\n",
        4,
        "'rate_limits' is empty",
    );
    single_error(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limits:\n      - {name: a, unit: second, unlimited: true}\n",
        5,
        "unknown key 'unlimited'",
    );
    single_error(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unlimited: true\n      algorithm: token_bucket\n",
        6,
        "'algorithm' cannot be used with 'unlimited: true'",
    );
}

#[test]
fn reference_rejections_with_lines() {
    single_error(
        "descriptors: []\n",
        1,
        "config file cannot have empty domain",
    );
    single_error("domain: ''\n", 1, "config file cannot have empty domain");
    single_error(
        "domain: d\ndescriptors:\n  - value: v\n",
        3,
        "descriptor has empty key",
    );
    single_error(
        "domain: d\ndescriptors:\n  - key: ''\n",
        3,
        "descriptor has empty key",
    );
    let e = single_error(
        "domain: d\ndescriptors:\n  - key: a\n    descriptors:\n      - key: k\n        value: v\n      - key: k\n        value: v\n",
        7,
        "duplicate descriptor composite key 'd.a.k_v'",
    );
    assert_eq!(e.rule_path, "domain d, descriptors[0].descriptors[1]");
    assert!(e.reason.contains("first defined at line 5"), "{}", e.reason);
    // The reference's composite keys collide across the key/value boundary.
    single_error(
        "domain: d\ndescriptors:\n  - key: a_b\n  - key: a\n    value: b\n",
        4,
        "duplicate descriptor composite key 'd.a_b'",
    );
    let e = single_error(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: fortnight\n      requests_per_unit: 1\n",
        5,
        "invalid rate limit unit 'fortnight'",
    );
    assert_eq!(e.column, Some(13));
    single_error(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {}\n",
        4,
        "invalid rate limit unit ''",
    );
    single_error(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unlimited: true\n      unit: second\n",
        6,
        "should not specify rate limit unit when unlimited",
    );
    single_error(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n      replaces:\n        - name: ''\n",
        7,
        "should not have an empty replaces entry",
    );
    single_error(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n      replaces:\n        - {}\n",
        7,
        "should not have an empty replaces entry",
    );
    single_error(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      name: me\n      unit: second\n      replaces:\n        - name: me\n",
        8,
        "replaces should not contain name of same descriptor",
    );
    single_error(
        "domain: d\ndescriptors:\n  - key: k\n    ratelimit:\n      unit: second\n",
        4,
        "unknown key 'ratelimit' (did you mean 'rate_limit'?)",
    );
    single_error(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n      requestsperunit: 5\n",
        6,
        "unknown key 'requestsperunit'",
    );
    single_error(
        "domain: d\ndescriptors:\n  - a\n",
        3,
        "list element must be a mapping",
    );
    single_error(
        "domain: d\ndescriptors:\n  - key: k\n    value: 1.5\n",
        4,
        "floating-point",
    );
    single_error(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n      requests_per_unit: -1\n",
        6,
        "'requests_per_unit' must be between 0 and 4294967295, found -1",
    );
    single_error(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n      requests_per_unit: 4294967296\n",
        6,
        "must be between 0 and 4294967295",
    );
    single_error(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n      requests_per_unit: '5'\n",
        6,
        "'requests_per_unit' must be an integer, found the string \"5\"",
    );
    single_error(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n      requests_per_unit: 2.5\n",
        6,
        "must be an integer",
    );
    single_error(
        "domain: d\ndescriptors:\n  - key: k\n    shadow_mode: 1\n",
        4,
        "'shadow_mode' must be true or false",
    );
    single_error(
        "domain: d\ndescriptors:\n  - key: k\n    shadow_mode: 'true'\n",
        4,
        "found the string \"true\"",
    );
    single_error(
        "domain: d\ndescriptors:\n  key: k\n",
        3,
        "'descriptors' must be a list",
    );
    single_error(
        "domain: d\ndescriptors:\n  - key: [k]\n",
        3,
        "'key' must be a string, found a list",
    );
    single_error(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: [1]\n",
        4,
        "'rate_limit' must be a mapping",
    );
    single_error(
        "domain: d\ndescriptors: [\n",
        3,
        "error loading config file",
    );
    single_error("- domain: d\n", 1, "top level must be a mapping");
}

#[test]
fn every_error_is_reported() {
    let errors = errors(
        "domain: d\ndescriptors:\n  - key: ''\n  - key: k\n    rate_limit: {unit: x}\n  - key: j\n    bogus: 1\n",
    );
    let lines: Vec<_> = errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![Some(3), Some(5), Some(7)], "{errors:#?}");
}

#[test]
fn errors_are_collected_across_files() {
    let sources = vec![
        (
            PathBuf::from("a.yaml"),
            "domain: a\ndescriptors:\n  - key: ''\n".to_owned(),
        ),
        (PathBuf::from("b.yaml"), "domain: b\nfoo: 1\n".to_owned()),
    ];
    let errors = load_sources(&sources, &LoadOptions::default())
        .err()
        .map(|e| e.0);
    let errors = errors.unwrap_or_else(|| panic!("expected errors"));
    assert_eq!(errors.len(), 2);
    assert_eq!(
        errors[0].to_string(),
        "a.yaml:3:10: descriptor has empty key (every descriptor needs a 'key') (domain a, descriptors[0])"
    );
    assert_eq!(errors[1].file, PathBuf::from("b.yaml"));
    assert_eq!(errors[1].line, Some(2));
}

#[test]
fn display_formats() {
    let errors = ConfigErrors(vec![
        ConfigError {
            file: PathBuf::from("config/foo.yaml"),
            line: Some(12),
            column: Some(5),
            rule_path: "domain rl, descriptors[1].descriptors[0]".to_owned(),
            reason: "duplicate descriptor composite key 'x_y'".to_owned(),
        },
        ConfigError {
            file: PathBuf::from("config/bar.yaml"),
            line: None,
            column: None,
            rule_path: String::new(),
            reason: "cannot read config file".to_owned(),
        },
    ]);
    assert_eq!(
        errors.to_string(),
        "config/foo.yaml:12:5: duplicate descriptor composite key 'x_y' (domain rl, descriptors[1].descriptors[0])\nconfig/bar.yaml: cannot read config file"
    );
}

const MERGE_A: &str = "domain: m\ndescriptors:\n  - key: k1\n    value: v1\n    rate_limit: {unit: second, requests_per_unit: 10}\n";
const MERGE_B: &str = "domain: m\ndescriptors:\n  - key: k2\n    value: v2\n    rate_limit: {unit: second, requests_per_unit: 20}\n";

#[test]
fn duplicate_domains_and_merging() {
    let sources = vec![
        (PathBuf::from("a.yaml"), MERGE_A.to_owned()),
        (PathBuf::from("b.yaml"), MERGE_B.to_owned()),
    ];
    let errors = load_sources(&sources, &LoadOptions::default())
        .err()
        .map(|e| e.0);
    let errors = errors.unwrap_or_else(|| panic!("expected a duplicate domain"));
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].file, PathBuf::from("b.yaml"));
    assert_eq!(errors[0].line, Some(1));
    assert!(
        errors[0]
            .reason
            .starts_with("duplicate domain 'm' in config file (first defined in a.yaml")
    );

    let merge = LoadOptions {
        merge_domains: true,
        ..LoadOptions::default()
    };
    let rules = load_sources(&sources, &merge).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rpu(&rules, "m", &[("k1", "v1")]), Some(10));
    assert_eq!(rpu(&rules, "m", &[("k2", "v2")]), Some(20));

    let twice = vec![
        (PathBuf::from("a.yaml"), MERGE_A.to_owned()),
        (PathBuf::from("again.yaml"), MERGE_A.to_owned()),
    ];
    let errors = load_sources(&twice, &merge).err().map(|e| e.0);
    let errors = errors.unwrap_or_else(|| panic!("expected a duplicate key"));
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].file, PathBuf::from("again.yaml"));
    assert!(
        errors[0]
            .reason
            .contains("duplicate descriptor composite key 'm.k1_v1' (first defined at a.yaml:3:5)"),
        "{}",
        errors[0]
    );
}

#[test]
fn misplaced_reference_keys_are_ignored_with_a_warning() {
    let yaml = "domain: d\nunit: second\ndescriptors:\n  - key: k\n    requests_per_unit: 5\n    domain: x\n    metadata: {anything: [1, 2.5], goes: here}\n";
    let loaded = load_sources_with_warnings(
        &[(PathBuf::from("t.yaml"), yaml.to_owned())],
        &LoadOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let lines: Vec<_> = loaded.warnings.iter().map(|w| w.line).collect();
    assert_eq!(lines, vec![Some(2), Some(5), Some(6)]);
    // requests_per_unit outside rate_limit means no rate limit, as in the reference.
    assert_eq!(rpu(&loaded.rules, "d", &[("k", "v")]), None);
}

#[test]
fn duplicate_mapping_keys_warn_and_the_last_wins() {
    let yaml = "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1, requests_per_unit: 2}\n";
    let loaded = load_sources_with_warnings(
        &[(PathBuf::from("t.yaml"), yaml.to_owned())],
        &LoadOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.warnings.len(), 1);
    assert!(loaded.warnings[0].reason.contains("appears twice"));
    assert_eq!(rpu(&loaded.rules, "d", &[("k", "v")]), Some(2));
}

#[test]
fn yaml_features() {
    // Only the first document counts, as with yaml.v2.
    let rules = ok(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second}\n---\nnot: [valid\n",
    );
    assert_eq!(rpu(&rules, "d", &[("k", "v")]), Some(0));
    // Anchors are refused with a clear message rather than misread.
    single_error(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: &l {unit: second}\n  - key: j\n    rate_limit: *l\n",
        4,
        "anchors and aliases are not supported",
    );
    // Comment-only and empty files have no domain.
    single_error("# nothing\n", 1, "config file cannot have empty domain");
    let errors = errors("");
    assert_eq!(errors.len(), 1);
}

#[test]
fn value_to_metric_flags_follow_the_path() {
    let rules = ok("\
domain: d
descriptors:
  - key: route
    value: api/*
    value_to_metric: true
    descriptors:
      - key: method
        rate_limit: {unit: minute, requests_per_unit: 60}
");
    let rule = rules
        .lookup("d", &[("route", "api/x"), ("method", "GET")])
        .map(|m| m.rule.clone());
    let rule = rule.unwrap_or_else(|| panic!("no rule"));
    assert_eq!(rule.value_to_metric, vec![true, false]);
    assert_eq!(&*rule.id, "d.route_api/*.method");
}

#[test]
fn summary_and_describe() {
    let rules = ok("\
domain: acme
descriptors:
  - key: a
    rate_limit: {unit: minute, requests_per_unit: 10}
  - key: b
    shadow_mode: true
    rate_limit: {unit: second, requests_per_unit: 1}
    descriptors:
      - key: c
        rate_limits:
          - {name: burst, algorithm: token_bucket, unit: minute, requests_per_unit: 100, burst: 150}
          - {name: hourly, unit: hour, unit_multiplier: 2, requests_per_unit: 1000}
  - key: u
    rate_limit: {unlimited: true}
");
    assert_eq!(
        summary(&rules),
        vec!["domain acme: 4 rules, 2 levels deep, algorithms fixed_window×3 token_bucket×1, 1 unlimited".to_owned()]
    );
    assert_eq!(
        describe(&rules),
        "acme.a: unit=MINUTE requests_per_unit=10, shadow_mode: false\n\
         acme.b: unit=SECOND requests_per_unit=1, shadow_mode: true\n\
         acme.b.c: unit=MINUTE requests_per_unit=100 name=burst algorithm=token_bucket burst=150; \
         unit=HOUR requests_per_unit=1000 name=hourly algorithm=fixed_window unit_multiplier=2, shadow_mode: false\n\
         acme.u: unit=UNKNOWN requests_per_unit=0, shadow_mode: false\n"
    );
    assert!(summary(&RuleSet::empty()).is_empty());
}

#[test]
fn load_path_reads_a_directory_tree() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let root = dir.path();
    let write = |name: &str, text: &str| {
        let path = root.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{e}"));
        }
        std::fs::write(path, text).unwrap_or_else(|e| panic!("{e}"));
    };
    write(
        "b.yaml",
        "domain: b\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 2}\n",
    );
    write(
        "a.yml",
        "domain: a\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1}\n",
    );
    write(
        "sub/c.yaml",
        "domain: c\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 3}\n",
    );
    write(".hidden.yaml", "not: a config\n");
    write("..data/x.yaml", "domain: a\n");
    write("README.md", "# not yaml\n");
    let loaded =
        load_path_with_warnings(root, &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let mut names: Vec<_> = loaded.rules.domains().map(|d| d.name.clone()).collect();
    names.sort();
    assert_eq!(names, vec!["a", "b", "c"]);
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert!(loaded.warnings[0].reason.contains("skipped"));

    // A single file, and errors naming the real path.
    write("bad/x.yaml", "domain: a\n");
    let errors = load_path(root, &LoadOptions::default()).err().map(|e| e.0);
    let errors = errors.unwrap_or_else(|| panic!("expected a duplicate domain"));
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].file, root.join("bad/x.yaml"));
    let one =
        load_path(&root.join("b.yaml"), &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rpu(&one, "b", &[("k", "v")]), Some(2));
    let missing = load_path(&root.join("nope"), &LoadOptions::default())
        .err()
        .map(|e| e.to_string());
    assert!(missing.is_some_and(|m| m.contains("cannot read config path")));
}

// --- response: and fallbacks: ---------------------------------------------

const RESPONSE_BASE: &str = "\
domain: shop
descriptors:
  - key: user
    rate_limit: {unit: minute, requests_per_unit: 5}
    descriptors:
      - key: seller
        rate_limit: {unit: minute, requests_per_unit: 5}
  - key: remote_address
    rate_limit: {unit: minute, requests_per_unit: 5}
";

#[test]
fn response_block_loads_with_defaults() {
    use crate::rules::policy::{HeaderStyle, ResetFormat};
    let rules = ok(&format!(
        "{RESPONSE_BASE}response:\n  headers: x-ratelimit\n"
    ));
    let policy = rules
        .domain("shop")
        .and_then(|d| d.response())
        .expect("policy");
    assert_eq!(policy.headers, HeaderStyle::XRateLimit);
    assert_eq!(policy.reset, ResetFormat::DeltaSeconds);
    assert_eq!(&*policy.content_type, "application/json");
    assert!(policy.body.is_none());
    let rules = ok(RESPONSE_BASE);
    assert!(rules.domain("shop").and_then(|d| d.response()).is_none());
}

#[test]
fn response_block_rejects_unknown_values_and_keys() {
    single_error(
        &format!("{RESPONSE_BASE}response:\n  headers: x-rate-limit\n"),
        11,
        "unknown headers 'x-rate-limit'",
    );
    single_error(
        &format!("{RESPONSE_BASE}response:\n  reset: unix\n"),
        11,
        "unknown reset 'unix'",
    );
    single_error(
        &format!("{RESPONSE_BASE}response:\n  header: ietf\n"),
        11,
        "unknown key 'header'",
    );
}

#[test]
fn unknown_body_placeholder_names_its_line_in_a_block_scalar() {
    let yaml = format!(
        "{RESPONSE_BASE}response:\n  content_type: text/plain\n  body: |\n    Slow down.\n    Retry in {{retry_in}} seconds.\n"
    );
    let error = single_error(&yaml, 14, "unknown placeholder '{retry_in}'");
    assert_eq!(error.file, PathBuf::from("t.yaml"));
}

#[test]
fn unknown_body_placeholder_in_a_flow_scalar() {
    let yaml = format!(
        "{RESPONSE_BASE}response:\n  content_type: text/plain\n  body: \"over {{limt}}\"\n"
    );
    single_error(&yaml, 12, "unknown placeholder '{limt}'");
}

#[test]
fn json_body_must_be_json() {
    let yaml = format!("{RESPONSE_BASE}response:\n  body: '{{\"rule\": {{rule}}}}'\n");
    single_error(&yaml, 11, "not valid JSON");
    let yaml = format!(
        "{RESPONSE_BASE}response:\n  body: '{{\"rule\": \"{{rule}}\", \"n\": {{limit}}}}'\n"
    );
    ok(&yaml);
}

#[test]
fn fallbacks_load_and_validate() {
    let good = format!(
        "{RESPONSE_BASE}fallbacks:\n  - name: identity\n    order: [[user, seller], [user], [remote_address]]\n"
    );
    let rules = ok(&good);
    let groups = rules
        .domain("shop")
        .map(|d| d.fallbacks().to_vec())
        .unwrap_or_default();
    assert_eq!(groups.len(), 1);
    assert_eq!(&*groups[0].name, "identity");
    assert_eq!(
        groups[0].order[0],
        vec!["user".to_owned(), "seller".to_owned()]
    );

    single_error(
        &format!(
            "{RESPONSE_BASE}fallbacks:\n  - name: identity\n    order: [[user, buyer], [user]]\n"
        ),
        12,
        "fallback shape [user, buyer] matches no descriptor",
    );
    single_error(
        &format!("{RESPONSE_BASE}fallbacks:\n  - name: identity\n    order: [[user], []]\n"),
        12,
        "at least one key",
    );
    single_error(
        &format!(
            "{RESPONSE_BASE}fallbacks:\n  - name: a\n    order: [[user], [remote_address]]\n  - name: b\n    order:\n      - [user, seller]\n      - [user]\n"
        ),
        16,
        "already in fallback group 'a'",
    );
    single_error(
        &format!("{RESPONSE_BASE}fallbacks:\n  - name: a\n    order: [[user]]\n"),
        12,
        "at least two shapes",
    );
    single_error(
        &format!("{RESPONSE_BASE}fallbacks:\n  - order: [[user], [remote_address]]\n"),
        11,
        "needs a non-empty 'name'",
    );
}

#[test]
fn fallback_shapes_see_descriptors_of_merged_files() {
    let first =
        "domain: shop\nfallbacks:\n  - name: identity\n    order: [[user], [remote_address]]\n";
    let second = "domain: shop\ndescriptors:\n  - key: user\n    rate_limit: {unit: minute, requests_per_unit: 1}\n  - key: remote_address\n    rate_limit: {unit: minute, requests_per_unit: 1}\n";
    let sources = [
        (PathBuf::from("a.yaml"), first.to_owned()),
        (PathBuf::from("b.yaml"), second.to_owned()),
    ];
    let merge = LoadOptions {
        merge_domains: true,
        ..LoadOptions::default()
    };
    assert!(load_sources(&sources, &merge).is_ok());
}

#[test]
fn headers_true_picks_the_limit_the_headers_describe() {
    let rules = ok("\
domain: d
descriptors:
  - key: k
    rate_limits:
      - {name: burst, algorithm: token_bucket, unit: minute, requests_per_unit: 100}
      - {name: hourly, algorithm: sliding_window, unit: hour, requests_per_unit: 1000, headers: true}
  - key: j
    rate_limits:
      - {name: a, unit: minute, requests_per_unit: 1}
      - {name: b, unit: hour, requests_per_unit: 2, headers: false}
");
    let header_limit = |key: &str| {
        rules
            .lookup("d", &[(key, "x")])
            .map(|m| m.rule.header_limit)
            .unwrap_or_else(|| panic!("no rule for {key}"))
    };
    assert_eq!(header_limit("k"), Some(1));
    assert_eq!(header_limit("j"), None);
}

#[test]
fn headers_true_is_checked_with_file_and_line() {
    let two = single_error(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limits:\n      - {name: a, unit: minute, requests_per_unit: 1, headers: true}\n      - {name: b, unit: hour, requests_per_unit: 2, headers: true}\n",
        6,
        "only one limit of 'rate_limits' can have 'headers: true' (first at line 5)",
    );
    assert_eq!(two.file, PathBuf::from("t.yaml"));
    single_error(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limits:\n      - {name: a, unit: minute, requests_per_unit: 1, headers: yes please}\n",
        5,
        "'headers' must be true or false",
    );
    // A single `rate_limit` is always the one described.
    single_error(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: minute\n      requests_per_unit: 1\n      headers: true\n",
        7,
        "headers",
    );
}

#[test]
fn a_fixed_window_rate_limit_counts_denied_hits_whatever_its_multiplier() {
    let rules = ok("\
domain: d
descriptors:
  - key: one
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: thirty
    rate_limit: {unit: minute, unit_multiplier: 30, requests_per_unit: 900}
  - key: sliding
    rate_limit: {algorithm: sliding_window, unit: minute, requests_per_unit: 1}
  - key: list
    rate_limits:
      - {name: a, unit: minute, requests_per_unit: 1}
");
    let counts = |key: &str| {
        rules
            .lookup("d", &[(key, "x")])
            .map(|m| m.rule.counts_denied_hits)
            .unwrap_or_else(|| panic!("no rule for {key}"))
    };
    assert!(counts("one"));
    assert!(counts("thirty"), "unit_multiplier changes the window only");
    assert!(!counts("sliding"));
    assert!(!counts("list"));
}

#[test]
fn a_utf8_byte_order_mark_is_accepted() {
    let rules = ok(
        "\u{feff}domain: bom\ndescriptors:\n  - key: k\n    rate_limit: {unit: minute, requests_per_unit: 1}\n",
    );
    assert_eq!(rpu(&rules, "bom", &[("k", "v")]), Some(1));
    // Lines are still counted from the file's first line.
    single_error(
        "\u{feff}domain: bom\ndescriptors:\n  - key: k\n    rate_limit: {unit: minutes, requests_per_unit: 1}\n",
        4,
        "minutes",
    );
}
mod calendar;
