use super::*;

fn spec(json: &str) -> OverrideSpec {
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"))
}

fn acme(rpu: u64) -> OverrideSpec {
    spec(&format!(
        r#"{{"domain":"d","entries":[{{"key":"customer","value":"acme"}}],"limits":[{{"requests_per_unit":{rpu},"unit":"hour"}}]}}"#
    ))
}

#[test]
fn bad_overrides_name_the_problem() {
    let cases = [
        (
            r#""entries":[],"limits":[{"requests_per_unit":1,"unit":"hour"}]"#,
            "at least one entry",
        ),
        (
            r#""entries":[{"key":"k","value":"v"}],"limits":[]"#,
            "at least one limit",
        ),
        (
            r#""entries":[{"key":"k","value":"v"}],"limits":[{"requests_per_unit":1,"unit":"fortnight"}]"#,
            "unknown unit 'fortnight'",
        ),
        (
            r#""entries":[{"key":"k","value":"v"}],"limits":[{"requests_per_unit":4294967296,"unit":"hour"}]"#,
            "at most 4294967295",
        ),
        (
            r#""entries":[{"key":"","value":"v"}],"limits":[{"requests_per_unit":1,"unit":"hour"}]"#,
            "entry key must not be empty",
        ),
        (
            r#""entries":[{"key":"k","value":"v"}],"limits":[{"requests_per_unit":1,"unit":"hour"},{"requests_per_unit":2,"unit":"day"}]"#,
            "needs a non-empty 'name'",
        ),
        (
            r#""entries":[{"key":"k","value":"v"}],"limits":[{"requests_per_unit":1,"unit":"hour","burst":3}]"#,
            "'burst' is only valid",
        ),
        (
            r#""entries":[{"key":"k","value":"v"}],"limits":[{"requests_per_unit":1,"unit":"day","calendar":true,"time_zone":"Nowhere/City"}]"#,
            "unknown time zone",
        ),
    ];
    for (body, expected) in cases {
        let json = format!(r#"{{"domain":"d",{body}}}"#);
        let error = spec(&json)
            .compile()
            .err()
            .unwrap_or_else(|| panic!("accepted {json}"));
        assert!(error.contains(expected), "{error} / {expected}");
    }
    let error = spec(r#"{"domain":"","entries":[{"key":"k","value":"v"}],"limits":[{"requests_per_unit":1,"unit":"hour"}]}"#)
        .compile()
        .err();
    assert!(error.is_some_and(|e| e.contains("domain")));
}

#[test]
fn lookup_is_exact_and_respects_expiry() {
    let mut expiring = acme(5);
    expiring.entries[0].value = "soon".into();
    expiring.expires_at = Some(100);
    let set = OverrideSet::of([
        acme(5).compile().expect("valid"),
        expiring.compile().expect("valid"),
    ]);
    let domain = set.domain("d").expect("domain");
    assert!(domain.lookup(&[("customer", "acme")], 0).is_some());
    assert!(domain.lookup(&[("customer", "acm")], 0).is_none());
    assert!(
        domain
            .lookup(&[("customer", "acme"), ("x", "y")], 0)
            .is_none()
    );
    let soon = [("customer", "soon")];
    assert!(domain.lookup(&soon, 99 * NANOS_PER_SECOND).is_some());
    assert!(domain.lookup(&soon, 100 * NANOS_PER_SECOND).is_none());
    assert_eq!(set.list(None, 100 * NANOS_PER_SECOND).len(), 1);
    assert!(set.domain("other").is_none());
}

#[test]
fn changes_build_new_sets_and_bound_each_domain() {
    let empty = OverrideSet::default();
    assert!(empty.is_empty());
    let one = empty
        .with(acme(5).compile().expect("valid"), 0)
        .expect("fits");
    let replaced = one
        .with(acme(9).compile().expect("valid"), 0)
        .expect("fits");
    assert_eq!(replaced.len(), 1);
    assert_eq!(one.list(None, 0)[0].limits[0].requests_per_unit, 5);
    assert_eq!(replaced.list(None, 0)[0].limits[0].requests_per_unit, 9);
    let (gone, removed) = replaced.without("d", &[("customer", "acme")], 0);
    assert!(gone.is_empty() && removed.is_some());
    let (_, none) = gone.without("d", &[("customer", "acme")], 0);
    assert!(none.is_none());

    let mut full = OverrideSet::default();
    for n in 0..MAX_OVERRIDES_PER_DOMAIN {
        let mut next = acme(1);
        next.entries[0].value = n.to_string();
        full = full.with(next.compile().expect("valid"), 0).expect("fits");
    }
    assert_eq!(
        full.with(acme(1).compile().expect("valid"), 0).err(),
        Some(OverrideError::TooMany("d".into()))
    );
    // Replacing one of them is still allowed.
    let mut again = acme(2);
    again.entries[0].value = "7".into();
    assert!(full.with(again.compile().expect("valid"), 0).is_ok());
}
