//! `calendar:` and `time_zone:` on a limit, and `USE_CALENDAR_MONTH_RATE_LIMIT`.

use super::*;
use crate::limit::calendar::Calendar;

fn first_limit(rules: &RuleSet, entries: &[(&str, &str)]) -> Limit {
    rules
        .lookup("d", entries)
        .and_then(|m| m.rule.limits.first().map(|l| l.limit))
        .unwrap_or_else(|| panic!("a limit for {entries:?}"))
}

#[test]
fn calendar_limits_name_their_zone() {
    let rules = ok("\
domain: d
descriptors:
  - key: plan
    value: pro
    rate_limit: {unit: month, requests_per_unit: 10000, calendar: true, time_zone: Asia/Kolkata}
  - key: plan
    value: free
    rate_limits:
      - {name: daily, unit: day, requests_per_unit: 100, calendar: true}
  - key: plan
    value: epoch
    rate_limit: {unit: month, requests_per_unit: 5}
");
    let pro = first_limit(&rules, &[("plan", "pro")]);
    assert_eq!(pro.calendar, Calendar::named("Asia/Kolkata").ok());
    assert_eq!(pro.unit, Unit::Month);
    let free = first_limit(&rules, &[("plan", "free")]);
    assert_eq!(free.calendar, Some(Calendar::utc()));
    assert_eq!(first_limit(&rules, &[("plan", "epoch")]).calendar, None);
}

#[test]
fn a_bad_zone_is_an_error_with_its_line() {
    let error = single_error(
        "\
domain: d
descriptors:
  - key: k
    rate_limit:
      unit: day
      requests_per_unit: 1
      calendar: true
      time_zone: Asia/Atlantis
",
        8,
        "unknown time zone 'Asia/Atlantis'",
    );
    assert_eq!(error.file, PathBuf::from("t.yaml"));
}

#[test]
fn calendar_combinations_that_mean_nothing_are_errors() {
    let with = |extra: &str| {
        format!(
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: day\n      requests_per_unit: 1\n{extra}"
        )
    };
    single_error(
        &with("      time_zone: UTC\n"),
        7,
        "'time_zone' needs 'calendar: true'",
    );
    single_error(
        &with("      calendar: true\n      algorithm: sliding_window\n"),
        7,
        "cannot be used with 'algorithm: sliding_window'",
    );
    single_error(
        &with("      calendar: true\n      unit_multiplier: 2\n"),
        7,
        "'unit_multiplier'",
    );
    single_error(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: hour, requests_per_unit: 1, calendar: true}\n",
        4,
        "needs a unit of day, week, month or year, found hour",
    );
    single_error(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unlimited: true, calendar: true}\n",
        4,
        "'calendar' cannot be used with 'unlimited: true'",
    );
}

#[test]
fn use_calendar_month_makes_month_limits_utc_calendar_months() {
    let yaml = "\
domain: d
descriptors:
  - key: month
    rate_limit: {unit: month, requests_per_unit: 10}
  - key: day
    rate_limit: {unit: day, requests_per_unit: 10}
  - key: zoned
    rate_limit: {unit: month, requests_per_unit: 10, calendar: true, time_zone: Europe/Paris}
  - key: sliding
    rate_limit: {unit: month, requests_per_unit: 10, algorithm: sliding_window}
";
    let options = LoadOptions {
        calendar_month: true,
        ..LoadOptions::default()
    };
    let rules = load_sources(&[(PathBuf::from("t.yaml"), yaml.to_owned())], &options)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        first_limit(&rules, &[("month", "x")]).calendar,
        Some(Calendar::utc())
    );
    assert_eq!(first_limit(&rules, &[("day", "x")]).calendar, None);
    assert_eq!(
        first_limit(&rules, &[("zoned", "x")]).calendar,
        Calendar::named("Europe/Paris").ok()
    );
    assert_eq!(first_limit(&rules, &[("sliding", "x")]).calendar, None);
    // Off by default.
    assert_eq!(first_limit(&ok(yaml), &[("month", "x")]).calendar, None);
}
