use super::*;
use crate::config::{describe, load_sources};
use crate::proto::ratelimit::config::ratelimit::v3::RateLimitReplace;

fn any(config: &RateLimitConfig) -> prost_types::Any {
    prost_types::Any {
        type_url: RATE_LIMIT_CONFIG_TYPE.to_owned(),
        value: config.encode_to_vec(),
    }
}

fn limit(unit: RateLimitUnit, requests_per_unit: u32) -> Option<RateLimitPolicy> {
    Some(RateLimitPolicy {
        unit: unit as i32,
        requests_per_unit,
        ..RateLimitPolicy::default()
    })
}

fn leaf(key: &str, value: &str, rate_limit: Option<RateLimitPolicy>) -> RateLimitDescriptor {
    RateLimitDescriptor {
        key: key.to_owned(),
        value: value.to_owned(),
        rate_limit,
        ..RateLimitDescriptor::default()
    }
}

fn config(name: &str, domain: &str, descriptors: Vec<RateLimitDescriptor>) -> RateLimitConfig {
    RateLimitConfig {
        name: name.to_owned(),
        domain: domain.to_owned(),
        descriptors,
    }
}

const YAML: &str = "\
domain: edge
descriptors:
  - key: remote_address
    rate_limit:
      unit: minute
      requests_per_unit: 10
  - key: user
    value: vip
    shadow_mode: true
    rate_limit:
      unit: week
      requests_per_unit: 7
      name: vip
      replaces:
        - name: everyone
  - key: user
    rate_limit:
      unit: hour
      requests_per_unit: 3
      name: everyone
  - key: path
    value: /healthz
    rate_limit:
      unlimited: true
  - key: tenant
    descriptors:
      - key: api
        value: chat
        detailed_metric: true
        rate_limit:
          unit: second
          requests_per_unit: 5
";

fn the_same_as_yaml() -> RateLimitConfig {
    config(
        "edge",
        "edge",
        vec![
            leaf("remote_address", "", limit(RateLimitUnit::Minute, 10)),
            RateLimitDescriptor {
                shadow_mode: true,
                rate_limit: Some(RateLimitPolicy {
                    unit: RateLimitUnit::Week as i32,
                    requests_per_unit: 7,
                    name: "vip".to_owned(),
                    replaces: vec![RateLimitReplace {
                        name: "everyone".to_owned(),
                    }],
                    ..RateLimitPolicy::default()
                }),
                ..leaf("user", "vip", None)
            },
            leaf(
                "user",
                "",
                Some(RateLimitPolicy {
                    name: "everyone".to_owned(),
                    ..limit(RateLimitUnit::Hour, 3).unwrap()
                }),
            ),
            leaf(
                "path",
                "/healthz",
                Some(RateLimitPolicy {
                    unlimited: true,
                    ..RateLimitPolicy::default()
                }),
            ),
            RateLimitDescriptor {
                descriptors: vec![RateLimitDescriptor {
                    detailed_metric: true,
                    ..leaf("api", "chat", limit(RateLimitUnit::Second, 5))
                }],
                ..leaf("tenant", "", None)
            },
        ],
    )
}

#[test]
fn a_resource_compiles_to_the_rules_of_the_same_yaml() {
    let from_yaml = load_sources(
        &[(PathBuf::from("edge.yaml"), YAML.to_owned())],
        &LoadOptions::default(),
    )
    .unwrap();
    let from_xds = load_resources(&[any(&the_same_as_yaml())], &LoadOptions::default()).unwrap();
    assert!(from_xds.warnings.is_empty(), "{:?}", from_xds.warnings);
    assert_eq!(describe(&from_xds.rules), describe(&from_yaml));
    assert!(describe(&from_xds.rules).contains("edge.user_vip: unit=WEEK requests_per_unit=7"));
}

#[test]
fn no_resources_is_no_rules() {
    let loaded = load_resources(&[], &LoadOptions::default()).unwrap();
    assert!(loaded.rules.is_empty());
}

fn errors_of(resources: &[prost_types::Any], options: &LoadOptions) -> String {
    match load_resources(resources, options) {
        Ok(_) => panic!("loaded"),
        Err(errors) => errors.to_string(),
    }
}

#[test]
fn an_empty_domain_is_refused_naming_the_resource() {
    let bad = config(
        "nameless",
        "",
        vec![leaf("k", "v", limit(RateLimitUnit::Day, 1))],
    );
    let message = errors_of(&[any(&bad)], &LoadOptions::default());
    assert!(message.contains("xds:nameless"), "{message}");
    assert!(message.contains("empty domain"), "{message}");
}

#[test]
fn another_type_or_a_truncated_resource_is_refused() {
    let good = any(&config(
        "a",
        "a",
        vec![leaf("k", "v", limit(RateLimitUnit::Day, 1))],
    ));
    let other = prost_types::Any {
        type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".to_owned(),
        value: good.value.clone(),
    };
    let message = errors_of(&[good.clone(), other], &LoadOptions::default());
    assert!(message.contains("xds:resources[1]"), "{message}");
    assert!(message.contains("not a RateLimitConfig"), "{message}");

    let mut truncated = good.clone();
    truncated.value.truncate(truncated.value.len() - 3);
    let message = errors_of(&[truncated], &LoadOptions::default());
    assert!(message.contains("does not decode"), "{message}");

    let garbage = prost_types::Any {
        type_url: RATE_LIMIT_CONFIG_TYPE.to_owned(),
        value: vec![0xff; 16],
    };
    let message = errors_of(&[garbage], &LoadOptions::default());
    assert!(message.contains("does not decode"), "{message}");
}

#[test]
fn validation_is_the_yaml_validation() {
    // A unit no RateLimitUnit has.
    let mut bad_unit = config("u", "u", vec![leaf("k", "v", limit(RateLimitUnit::Day, 1))]);
    if let Some(policy) = bad_unit.descriptors[0].rate_limit.as_mut() {
        policy.unit = 42;
    }
    let message = errors_of(&[any(&bad_unit)], &LoadOptions::default());
    assert!(
        message.contains("invalid rate limit unit '42'"),
        "{message}"
    );
    assert!(message.contains("xds:u"), "{message}");

    // A duplicate descriptor.
    let twice = config(
        "d",
        "d",
        vec![
            leaf("k", "v", limit(RateLimitUnit::Day, 1)),
            leaf("k", "v", limit(RateLimitUnit::Day, 2)),
        ],
    );
    let message = errors_of(&[any(&twice)], &LoadOptions::default());
    assert!(message.contains("duplicate"), "{message}");

    // One domain in two resources: an error, unless domains merge.
    let first = config(
        "one",
        "shared",
        vec![leaf("a", "1", limit(RateLimitUnit::Day, 1))],
    );
    let second = config(
        "two",
        "shared",
        vec![leaf("b", "2", limit(RateLimitUnit::Day, 1))],
    );
    let both = [any(&first), any(&second)];
    let message = errors_of(&both, &LoadOptions::default());
    assert!(message.contains("xds:two"), "{message}");
    let merged = load_resources(
        &both,
        &LoadOptions {
            merge_domains: true,
            ..LoadOptions::default()
        },
    )
    .unwrap();
    let rules = describe(&merged.rules);
    assert!(
        rules.contains("shared.a_1") && rules.contains("shared.b_2"),
        "{rules}"
    );
}

#[test]
fn hostile_strings_stay_strings() {
    let tricky = config(
        "t",
        "d: \"x\"\n- y",
        vec![leaf(
            "k\n  - key: z",
            "v\u{0}'\"",
            limit(RateLimitUnit::Day, 1),
        )],
    );
    let loaded = load_resources(&[any(&tricky)], &LoadOptions::default());
    // Whatever validation says of these names, the document is never
    // reshaped by them: one domain with one rule, or an error.
    if let Ok(loaded) = loaded {
        assert_eq!(loaded.rules.domains().count(), 1);
    }
}

#[test]
fn a_response_of_another_type_is_refused() {
    let message = match load_response("type.googleapis.com/x.Y", &[], &LoadOptions::default()) {
        Ok(_) => panic!("loaded"),
        Err(errors) => errors.to_string(),
    };
    assert!(message.contains("x.Y"), "{message}");
    assert!(load_response(RATE_LIMIT_CONFIG_TYPE, &[], &LoadOptions::default()).is_ok());
}

#[test]
fn backoff_doubles_up_to_the_max_and_jitters_within_the_factor() {
    let backoff = Backoff {
        jitter: false,
        ..Backoff::default()
    };
    let secs = |attempt| backoff.delay(attempt, 0.9).as_secs();
    assert_eq!(
        [secs(0), secs(1), secs(2), secs(3), secs(200)],
        [10, 20, 40, 60, 60]
    );
    let jittered = Backoff::default();
    assert_eq!(jittered.delay(0, 0.0), Duration::from_secs(5));
    assert_eq!(jittered.delay(0, 0.5), Duration::from_secs(10));
    assert_eq!(jittered.delay(0, 1.0), Duration::from_secs(15));
    // Never above the max, never negative, whatever the inputs.
    assert_eq!(jittered.delay(9, 1.0), Duration::from_secs(60));
    let wild = Backoff {
        random_factor: 7.0,
        ..Backoff::default()
    };
    assert_eq!(wild.delay(0, 0.0), Duration::ZERO);
    assert!(wild.delay(0, f64::NAN) <= Duration::from_secs(60));
}
