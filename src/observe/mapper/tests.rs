use super::*;

#[test]
fn the_default_mapping_parses() {
    let mapper = Mapper::parse(DEFAULT_MAPPINGS).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(mapper.mappings.len(), 15);
}

#[test]
fn globs_stay_within_one_part() {
    let pieces: Vec<String> = "a.*.*.c".split('*').map(str::to_owned).collect();
    assert_eq!(
        glob_captures(&pieces, "a.x.y.c"),
        Some(vec!["a.x.y.c", "x", "y"])
    );
    assert_eq!(glob_captures(&pieces, "a.x.y.z.c"), None);
    assert_eq!(
        glob_captures(&pieces, "a..y.c"),
        Some(vec!["a..y.c", "", "y"])
    );
    let pieces: Vec<String> = "a.*".split('*').map(str::to_owned).collect();
    assert_eq!(glob_captures(&pieces, "a.b"), Some(vec!["a.b", "b"]));
    assert_eq!(glob_captures(&pieces, "a.b.c"), None);
    let pieces = vec!["exact".to_owned()];
    assert_eq!(glob_captures(&pieces, "exact"), Some(vec!["exact"]));
    assert_eq!(glob_captures(&pieces, "exactly"), None);
}

#[test]
fn a_custom_mapping_names_labels_and_drops() {
    let mapper = Mapper::parse(
        r#"
mappings:
  - match: ratelimit.service.rate_limit.*.*.over_limit
    name: rl_over
    labels:
      tenant: "${2}"
      where: "$1-x"
  - match: ratelimit.service.rate_limit.*.*.*
    action: drop
  - match: 'ratelimit_server\.(.*)\.total_requests'
    match_type: regex
    name: calls
    labels: {method: $1}
"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        mapper.map(
            "ratelimit.service.rate_limit.d.k_v.over_limit",
            StatKind::Counter
        ),
        Some(Mapped {
            name: "rl_over".into(),
            labels: vec![
                ("tenant".into(), "k_v".into()),
                ("where".into(), "d-x".into())
            ],
            scale: 1.0,
        })
    );
    assert_eq!(
        mapper.map(
            "ratelimit.service.rate_limit.d.k_v.total_hits",
            StatKind::Counter
        ),
        None
    );
    assert_eq!(
        mapper
            .map(
                "ratelimit_server.ShouldRateLimit.total_requests",
                StatKind::Counter
            )
            .map(|m| m.labels),
        Some(vec![("method".into(), "ShouldRateLimit".into())])
    );
    // Unmapped: statsd_exporter's escaped name, no labels.
    assert_eq!(
        mapper.map("ratelimit.service.config_load_success", StatKind::Counter),
        Some(Mapped {
            name: "ratelimit_service_config_load_success".into(),
            labels: Vec::new(),
            scale: 1.0,
        })
    );
}

#[test]
fn unsupported_settings_are_refused() {
    for text in [
        "defaults:\n  ttl: 1m\nmappings: []\n",
        "mappings:\n- match: a.*\n  name: x\n  ttl: 1m\n",
        "mappings:\n- match: a.**\n  name: x\n",
        "mappings:\n- match: a.*\n  name: 'not valid'\n",
        "mappings:\n- match: a.*\n  name: x\n  labels: {'bad-label': $1}\n",
        "mappings:\n- match: '('\n  match_type: regex\n  name: x\n",
        "mappings:\n- match: a\n  name: x\n  timer_type: summary\n",
        "not yaml: [",
    ] {
        assert!(Mapper::parse(text).is_err(), "accepted: {text}");
    }
}
