//! The monitoring examples: `examples/prometheus/alerts.yaml` passes
//! `promtool check rules` and its unit tests (`promtool test rules
//! alerts_test.yaml`), and every floodgate metric that the alert rules and
//! the Grafana dashboard (`examples/grafana/floodgate.json`) query is one a
//! live server exports on `/metrics`.
//!
//! Fails (never skips) without promtool: install Debian's `prometheus`
//! (`apt-get install prometheus`), or set `FLOODGATE_PROMTOOL`.

use crate::harness;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use harness::ops::{Setup, decide, start};
use harness::request_one;
use marked_yaml::Node;
use serde_json::Value;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn promtool() -> PathBuf {
    harness::tools::required("promtool")
}

fn run_promtool(args: &[&str]) -> String {
    let binary = promtool();
    let output = Command::new(&binary)
        .args(args)
        .current_dir(examples().join("prometheus"))
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", binary.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let checked = run_promtool(&["check", "rules", "alerts.yaml"]);
    assert!(checked.contains("SUCCESS: 7 rules found"), "{checked}");
    let tested = run_promtool(&["test", "rules", "alerts_test.yaml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// Every `floodgate_*` identifier in `text`.
fn metric_names(text: &str, into: &mut BTreeSet<String>) {
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(found) = text[at..].find("floodgate_") {
        let start = at + found;
        let boundary = start == 0 || {
            let before = bytes[start - 1];
            !(before.is_ascii_alphanumeric() || before == b'_')
        };
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(text.len(), |len| start + len);
        if boundary {
            into.insert(text[start..end].to_owned());
        }
        at = end;
    }
}

/// The `expr` of every rule in a Prometheus rule file.
fn alert_exprs(yaml: &str) -> Vec<String> {
    let root = marked_yaml::parse_yaml(0, yaml).expect("alerts.yaml is YAML");
    let groups = root
        .as_mapping()
        .and_then(|m| m.get_sequence("groups"))
        .expect("a groups list");
    let mut exprs = Vec::new();
    for group in groups.iter() {
        let rules = group
            .as_mapping()
            .and_then(|m| m.get_sequence("rules"))
            .expect("a group's rules");
        for rule in rules.iter() {
            let rule = rule.as_mapping().expect("a rule is a mapping");
            assert!(rule.get_scalar("alert").is_some(), "an alerting rule");
            let expr = rule
                .get_node("expr")
                .and_then(Node::as_scalar)
                .expect("a rule's expr");
            exprs.push(expr.as_str().to_owned());
        }
    }
    exprs
}

/// The Grafana dashboard's queries (panels and template variables), after
/// checking it is importable: a Prometheus datasource variable that every
/// panel and query uses, unique panel ids and grid positions.
fn grafana_queries(dashboard: &Value) -> Vec<String> {
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("template variables");
    let datasource = variables
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(datasource["query"], "prometheus");
    let reference = format!("${{{}}}", datasource["name"].as_str().expect("its name"));
    let mut queries = Vec::new();
    for variable in variables.iter().filter(|v| v["type"] == "query") {
        assert_eq!(variable["datasource"]["uid"], reference.as_str());
        queries.push(
            variable["definition"]
                .as_str()
                .expect("a definition")
                .to_owned(),
        );
    }
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().expect("a panel title");
        assert!(ids.insert(panel["id"].as_u64().expect("an id")), "{title}");
        assert!(panel["gridPos"]["w"].as_u64() > Some(0), "{title}");
        assert_eq!(panel["datasource"]["uid"], reference.as_str(), "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], reference.as_str(), "{title}");
            queries.push(target["expr"].as_str().expect("an expr").to_owned());
        }
    }
    queries
}

#[tokio::test]
async fn alerts_and_grafana_query_only_metrics_the_server_exports() {
    // The names a live server exports, after one decision (so the latency
    // histogram has its buckets).
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("rules.yaml");
    std::fs::write(&path, harness::ops::one_rule("mon", "api", "a", 10)).expect("write");
    let server = start(&path, Setup::default()).await;
    let mut client = server.grpc().await;
    decide(&mut client, request_one("mon", &[("api", "a")])).await;
    let exported: BTreeSet<String> = server
        .metrics()
        .await
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect();
    server.running.shutdown().await.expect("clean shutdown");
    assert!(
        exported.contains("floodgate_decision_duration_seconds_bucket"),
        "{exported:?}"
    );

    let alerts =
        std::fs::read_to_string(examples().join("prometheus/alerts.yaml")).expect("alerts.yaml");
    let exprs = alert_exprs(&alerts);
    assert_eq!(exprs.len(), 7);
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(examples().join("grafana/floodgate.json"))
            .expect("floodgate.json"),
    )
    .expect("floodgate.json is JSON");
    let queries = grafana_queries(&dashboard);

    for (source, texts) in [("alerts.yaml", exprs), ("floodgate.json", queries)] {
        let mut used = BTreeSet::new();
        for text in &texts {
            metric_names(text, &mut used);
        }
        assert!(
            used.len() >= 6,
            "{source} queries floodgate's metrics: {used:?}"
        );
        let unknown: Vec<&String> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{source} queries metrics the server does not export: {unknown:?}"
        );
    }
}
