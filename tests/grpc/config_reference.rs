//! Reference-format configs loaded from disk through the public API, with
//! the matches the reference server makes for them.

use std::path::{Path, PathBuf};

use floodgate::config::{self, LoadOptions};
use floodgate::limit::{Limit, Unit};
use floodgate::rules::RuleSet;

fn fixtures(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn load(name: &str, merge_domains: bool) -> RuleSet {
    config::load_path(
        &fixtures(name),
        &LoadOptions {
            merge_domains,
            ..LoadOptions::default()
        },
    )
    .unwrap_or_else(|errors| panic!("{errors}"))
}

fn limit(rules: &RuleSet, domain: &str, entries: &[(&str, &str)]) -> Option<Limit> {
    rules
        .lookup(domain, entries)
        .and_then(|m| m.rule.limits.first().map(|l| l.limit))
}

#[test]
fn reference_examples_match_as_the_reference_does() {
    let rules = load("reference", false);
    let marketing = [("message_type", "marketing"), ("to_number", "2061111111")];
    assert_eq!(
        limit(&rules, "messaging", &marketing),
        Some(Limit::fixed(5, Unit::Day))
    );
    assert_eq!(
        limit(&rules, "messaging", &[("to_number", "2061111111")]),
        Some(Limit::fixed(100, Unit::Day))
    );
    assert_eq!(
        limit(&rules, "messaging", &[("remote_address", "50.0.0.1")]),
        Some(Limit::fixed(10, Unit::Second))
    );
    assert_eq!(
        limit(&rules, "messaging", &[("remote_address", "50.0.0.5")]),
        Some(Limit::fixed(0, Unit::Second))
    );
    let ldap = rules.lookup("messaging", &[("ldap", "x")]);
    assert!(ldap.is_some_and(|m| m.rule.unlimited));
    let shadow = rules.lookup("messaging", &[("service", "auth"), ("user", "user-a")]);
    assert!(shadow.is_some_and(|m| m.rule.shadow_mode));
    // One tuple too many: no match.
    assert_eq!(
        limit(&rules, "messaging", &[("to_number", "1"), ("x", "y")]),
        None
    );

    let replacing = rules.lookup("replacing", &[("key_2", "value_2"), ("user", "alice")]);
    let replacing = replacing.unwrap_or_else(|| panic!("no replacing rule"));
    assert_eq!(replacing.rule.replaces, vec!["specific_limit".to_owned()]);
    let replaced = rules.lookup("replacing", &[("key_1", "value_1"), ("user", "alice")]);
    assert!(replaced.is_some_and(|m| m.rule.name.as_deref() == Some("specific_limit")));
    let shared = rules.lookup("replacing", &[("files", "files/a/b")]);
    assert_eq!(shared.map(|m| m.shared), Some(vec![(0, "files/*")]));

    let described = config::describe(&rules);
    assert!(described.contains(
        "messaging.remote_address_50.0.0.5: unit=SECOND requests_per_unit=0, shadow_mode: false\n"
    ));
    assert!(
        described
            .contains("messaging.ldap: unit=UNKNOWN requests_per_unit=0, shadow_mode: false\n")
    );
    assert_eq!(
        config::summary(&rules),
        vec![
            "domain messaging: 7 rules, 2 levels deep, algorithms fixed_window×6, 1 unlimited"
                .to_owned(),
            "domain replacing: 3 rules, 2 levels deep, algorithms fixed_window×3".to_owned(),
        ]
    );
}

#[test]
fn merging_domains_across_files() {
    let errors = config::load_path(&fixtures("merge"), &LoadOptions::default())
        .err()
        .map(|e| e.to_string());
    assert!(errors.is_some_and(|e| e.contains("two.yaml:1:9: duplicate domain 'merged'")));
    let rules = load("merge", true);
    assert_eq!(
        limit(&rules, "merged", &[("k1", "a")]),
        Some(Limit::fixed(1, Unit::Minute))
    );
    assert_eq!(
        limit(&rules, "merged", &[("k2", "a")]),
        Some(Limit::fixed(2, Unit::Minute))
    );
}
