//! The deployment examples stay true to the code and to `config/`:
//!
//! - every YAML document of `examples/` parses;
//! - the Envoy bootstrap's route actions, run for representative requests
//!   (a small evaluator of Envoy's `rate_limits` actions below), produce
//!   descriptors that a real floodgate serving the shipped `config/` matches
//!   to the intended rule (admin `/usage`, nothing consumed) and answers
//!   over gRPC; the Istio EnvoyFilter's actions likewise;
//! - the Kubernetes objects reference each other consistently (labels and
//!   selectors, ports, probes, scrape annotations, the ConfigMap mounted
//!   where the Deployment's reference variables make floodgate look, as
//!   `settings.rs` itself resolves them, and holding `config/` verbatim),
//!   and Envoy and Istio point at that Service's gRPC port;
//! - the Dockerfile copies what the build needs and runs as non-root;
//! - `examples/client.rs` prints a real server's decision readably.

mod harness;

#[allow(dead_code)]
#[path = "../examples/client.rs"]
mod client;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use floodgate::cli::reference_env::{NoteLevel, ReferenceEnv};
use floodgate::proto::{Code, RateLimitRequest};
use harness::http_post;
use harness::ops::Setup;
use serde_json::Value;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A YAML node as JSON; scalars stay strings (YAML's types do not matter
/// to these checks, and no conversion can guess wrong).
fn to_json(node: &marked_yaml::Node) -> Value {
    match node {
        marked_yaml::Node::Scalar(s) => Value::String(s.as_str().to_owned()),
        marked_yaml::Node::Sequence(items) => Value::Array(items.iter().map(to_json).collect()),
        marked_yaml::Node::Mapping(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.as_str().to_owned(), to_json(v)))
                .collect(),
        ),
    }
}

/// Every document of a YAML file (`---` separated).
fn yaml_docs(path: &Path) -> Vec<Value> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut docs = Vec::new();
    let mut current = String::new();
    for line in text.lines().chain(["---"]) {
        if line.trim_end() == "---" {
            if current
                .lines()
                .any(|l| !l.trim().is_empty() && !l.trim().starts_with('#'))
            {
                let node = marked_yaml::parse_yaml(0, &current)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                docs.push(to_json(&node));
            }
            current.clear();
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    assert!(!docs.is_empty(), "{} has no document", path.display());
    docs
}

fn s(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("expected a string, got {value}"))
}

fn list(value: &Value) -> &[Value] {
    value.as_array().map_or(&[], Vec::as_slice)
}

// ---------------------------------------------------------------------------
// Envoy's rate-limit actions, evaluated as Envoy evaluates them.

/// An HTTP request as Envoy's route actions see it.
#[derive(Clone, Debug)]
struct HttpRequest {
    method: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    remote_address: &'static str,
}

impl HttpRequest {
    fn header(&self, name: &str) -> Option<&str> {
        match name.to_ascii_lowercase().as_str() {
            ":method" => Some(self.method),
            ":path" => Some(self.path),
            lower => self
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(lower))
                .map(|(_, v)| *v),
        }
    }
}

/// Envoy's `HeaderMatcher` (`string_match` exact/prefix, `present_match`).
fn header_matches(matcher: &Value, request: &HttpRequest) -> bool {
    let value = request.header(s(&matcher["name"]));
    let matched = if let Some(string_match) = matcher.get("string_match") {
        match (string_match.get("exact"), string_match.get("prefix")) {
            (Some(exact), _) => value == Some(s(exact)),
            (None, Some(prefix)) => value.is_some_and(|v| v.starts_with(s(prefix))),
            _ => panic!("unsupported string_match {string_match}"),
        }
    } else if matcher.get("present_match").is_some() {
        value.is_some()
    } else {
        panic!("unsupported header matcher {matcher}")
    };
    matched != (matcher.get("invert_match").map(s) == Some("true"))
}

/// Envoy's `RouteMatch`: `prefix`, `path` or `safe_regex` (a full match),
/// and `headers`.
fn route_matches(route_match: &Value, request: &HttpRequest) -> bool {
    let path = request.path.split('?').next().unwrap_or_default();
    let path_ok = if let Some(prefix) = route_match.get("prefix") {
        path.starts_with(s(prefix))
    } else if let Some(exact) = route_match.get("path") {
        path == s(exact)
    } else if let Some(regex) = route_match.get("safe_regex") {
        let full = format!("^(?:{})$", s(&regex["regex"]));
        regex::Regex::new(&full)
            .unwrap_or_else(|e| panic!("bad regex {full}: {e}"))
            .is_match(path)
    } else {
        panic!("unsupported route match {route_match}")
    };
    path_ok
        && list(&route_match["headers"])
            .iter()
            .all(|m| header_matches(m, request))
}

type Descriptor = Vec<(String, String)>;

/// The descriptors a list of `rate_limits` produces for `request`: each
/// rate limit's actions in order; an action that cannot produce its entry
/// drops the whole descriptor (unless `skip_if_absent`).
fn descriptors(rate_limits: &[Value], request: &HttpRequest) -> Vec<Descriptor> {
    let mut out = Vec::new();
    'rate_limit: for rate_limit in rate_limits {
        let mut entries = Vec::new();
        for action in list(&rate_limit["actions"]) {
            let action = action.as_object().expect("an action is a mapping");
            let (kind, spec) = action.iter().next().expect("an action");
            match kind.as_str() {
                "request_headers" => match request.header(s(&spec["header_name"])) {
                    Some(value) => {
                        entries.push((s(&spec["descriptor_key"]).to_owned(), value.to_owned()))
                    }
                    None if spec.get("skip_if_absent").map(s) == Some("true") => {}
                    None => continue 'rate_limit,
                },
                "remote_address" => entries.push((
                    "remote_address".to_owned(),
                    request.remote_address.to_owned(),
                )),
                "generic_key" => entries.push((
                    spec.get("descriptor_key")
                        .map_or("generic_key", s)
                        .to_owned(),
                    s(&spec["descriptor_value"]).to_owned(),
                )),
                "header_value_match" => {
                    let all = list(&spec["headers"])
                        .iter()
                        .all(|m| header_matches(m, request));
                    let expect = spec.get("expect_match").map(s) != Some("false");
                    if all != expect {
                        continue 'rate_limit;
                    }
                    entries.push((
                        spec.get("descriptor_key")
                            .map_or("header_match", s)
                            .to_owned(),
                        s(&spec["descriptor_value"]).to_owned(),
                    ));
                }
                other => panic!("the test does not evaluate the action {other}: add it"),
            }
        }
        if !entries.is_empty() {
            out.push(entries);
        }
    }
    out
}

/// The rate-limit domain of a listener and its virtual host's routes.
fn envoy_listeners() -> BTreeMap<String, Vec<Value>> {
    let docs = yaml_docs(&repo("examples/envoy/envoy.yaml"));
    let mut by_domain = BTreeMap::new();
    for listener in list(&docs[0]["static_resources"]["listeners"]) {
        let manager = &listener["filter_chains"][0]["filters"][0]["typed_config"];
        let filters = list(&manager["http_filters"]);
        assert_eq!(
            s(&filters.last().expect("filters")["name"]),
            "envoy.filters.http.router",
            "the router comes last"
        );
        let ratelimit = filters
            .iter()
            .find(|f| s(&f["name"]) == "envoy.filters.http.ratelimit")
            .expect("a rate-limit filter on every listener");
        let config = &ratelimit["typed_config"];
        assert_eq!(s(&config["failure_mode_deny"]), "false");
        assert_eq!(
            s(&config["rate_limit_service"]["transport_api_version"]),
            "V3"
        );
        assert_eq!(
            s(&config["rate_limit_service"]["grpc_service"]["envoy_grpc"]["cluster_name"]),
            "floodgate"
        );
        let routes = list(&manager["route_config"]["virtual_hosts"][0]["routes"]).to_vec();
        by_domain.insert(s(&config["domain"]).to_owned(), routes);
    }
    by_domain
}

/// The descriptors Envoy sends for `request` on the listener of `domain`.
fn envoy_descriptors(routes: &[Value], request: &HttpRequest) -> Vec<Descriptor> {
    let route = routes
        .iter()
        .find(|r| route_matches(&r["match"], request))
        .unwrap_or_else(|| panic!("no route for {request:?}"));
    descriptors(list(&route["rate_limits"]), request)
}

fn req(
    method: &'static str,
    path: &'static str,
    headers: &[(&'static str, &'static str)],
) -> HttpRequest {
    HttpRequest {
        method,
        path,
        headers: headers.to_vec(),
        remote_address: "203.0.113.9",
    }
}

/// Representative requests per domain, each with the names of the limits
/// every descriptor it produces must match, in order.
fn representative_requests() -> Vec<(&'static str, HttpRequest, Vec<Vec<&'static str>>)> {
    let acme = ("x-account-id", "acme");
    let key = ("x-api-key", "key-1");
    vec![
        (
            "exotel",
            req("GET", "/v1/Accounts/acme/Calls", &[acme]),
            vec![vec!["account_default"]],
        ),
        (
            "exotel",
            req("POST", "/v1/legs", &[acme, ("x-api-category", "legs")]),
            vec![vec!["legs"]],
        ),
        (
            "exotel",
            req(
                "POST",
                "/v1/legs",
                &[acme, ("x-api-category", "legs"), ("x-region", "in")],
            ),
            vec![vec!["legs_region"]],
        ),
        (
            "exotel",
            req(
                "POST",
                "/v1/legs",
                &[
                    acme,
                    ("x-api-category", "legs"),
                    ("x-region", "in"),
                    ("x-plan", "enterprise"),
                ],
            ),
            vec![vec!["legs_enterprise_burst", "legs_enterprise_sustained"]],
        ),
        (
            "exotel",
            req(
                "POST",
                "/v1/bridges",
                &[acme, ("x-api-category", "bridges")],
            ),
            vec![vec!["bridges"]],
        ),
        (
            "exotel",
            req(
                "POST",
                "/v1/actions",
                &[acme, ("x-api-category", "actions")],
            ),
            vec![vec!["actions_burst", "actions_sustained"]],
        ),
        (
            "explo",
            req("GET", "/embed/dashboard/7", &[]),
            vec![vec!["per_ip"]],
        ),
        (
            "explo",
            req("GET", "/embed/export/dashboard/pdf?id=7", &[]),
            vec![vec!["per_ip"], vec!["export_pdf"]],
        ),
        (
            "xola",
            req(
                "GET",
                "/api/orders",
                &[("x-user-id", "u1"), ("x-seller-id", "s1")],
            ),
            vec![vec!["user_seller"], vec!["user"], vec!["ip"]],
        ),
        (
            "xola",
            req("GET", "/api/orders", &[("x-user-id", "u1")]),
            vec![vec!["user"], vec!["ip"]],
        ),
        ("xola", req("GET", "/api/orders", &[]), vec![vec!["ip"]]),
        (
            "courses",
            req("GET", "/v1/courses", &[("x-plan", "professional"), key]),
            vec![vec!["professional_burst", "professional_hourly"]],
        ),
        (
            "courses",
            req(
                "GET",
                "/v1/courses/export",
                &[("x-plan", "enterprise"), key],
            ),
            vec![
                vec!["enterprise_burst", "enterprise_hourly"],
                vec!["course_export"],
            ],
        ),
        (
            "courses",
            req(
                "POST",
                "/v1/bulk/enroll",
                &[("x-plan", "custom"), ("x-api-key", "key-northwind-trading")],
            ),
            vec![vec!["northwind_burst", "northwind_hourly"], vec!["bulk"]],
        ),
        (
            "courses",
            req("GET", "/v1/search?q=rust", &[("x-plan", "custom"), key]),
            vec![
                vec!["custom_default_burst", "custom_default_hourly"],
                vec!["search"],
            ],
        ),
        (
            "campaigns",
            req("GET", "/v1/analytics", &[key]),
            vec![vec!["analytics"]],
        ),
        (
            "campaigns",
            req("GET", "/v1/analytics/daily", &[key]),
            vec![vec!["analytics_daily"]],
        ),
        (
            "campaigns",
            req("GET", "/v1/analytics/by-user", &[key]),
            vec![vec!["analytics_by_user"]],
        ),
        (
            "campaigns",
            req("POST", "/v1/leads/add_to_campaign", &[key]),
            vec![vec!["add_to_campaign"]],
        ),
        (
            "campaigns",
            req("GET", "/v1/campaigns", &[key]),
            vec![vec!["campaigns"]],
        ),
        (
            "campaigns",
            req("GET", "/v1/campaigns/42", &[key]),
            vec![vec!["campaign"]],
        ),
        (
            "campaigns",
            req("GET", "/v1/campaigns/42/statistics", &[key]),
            vec![vec!["campaign_statistics"]],
        ),
        (
            "campaigns",
            req("GET", "/v1/users/7", &[key]),
            vec![vec!["users"]],
        ),
        (
            "campaigns",
            req("GET", "/v1/teams/me", &[key]),
            vec![vec!["teams_me"]],
        ),
        // A POST to a GET route is any other route.
        (
            "campaigns",
            req("POST", "/v1/campaigns", &[key]),
            vec![vec!["default"]],
        ),
    ]
}

/// The limit names `/usage` reports for `descriptor` (nothing consumed).
async fn matched_limits(
    admin: std::net::SocketAddr,
    domain: &str,
    descriptor: &Descriptor,
) -> Vec<String> {
    let body = serde_json::json!({
        "domain": domain,
        "entries": descriptor
            .iter()
            .map(|(key, value)| serde_json::json!({"key": key, "value": value}))
            .collect::<Vec<_>>(),
    });
    let (status, text) = http_post(admin, "/usage", &body.to_string()).await;
    assert_eq!(status, 200, "{text}");
    let usage: Value = serde_json::from_str(&text).expect("JSON from /usage");
    assert_eq!(
        usage["matched"], true,
        "{domain} {descriptor:?} matches no rule: {text}"
    );
    list(&usage["limits"])
        .iter()
        .map(|l| l["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn grpc_request(domain: &str, descriptors: &[Descriptor]) -> RateLimitRequest {
    let owned: Vec<Vec<(&str, &str)>> = descriptors
        .iter()
        .map(|d| d.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect())
        .collect();
    let borrowed: Vec<&[(&str, &str)]> = owned.iter().map(Vec::as_slice).collect();
    harness::request(domain, &borrowed)
}

#[tokio::test(flavor = "multi_thread")]
async fn envoy_route_actions_produce_descriptors_the_shipped_rules_match() {
    let server = harness::ops::start(&repo("config"), Setup::default()).await;
    let listeners = envoy_listeners();
    let shipped: Vec<String> = floodgate::config::source::EMBEDDED_RULES
        .iter()
        .map(|(file, _)| file.trim_end_matches(".yaml").to_owned())
        .collect();
    assert_eq!(
        listeners.keys().cloned().collect::<Vec<_>>(),
        shipped,
        "one Envoy listener per shipped domain"
    );
    let cases = representative_requests();
    for domain in listeners.keys() {
        assert!(
            cases.iter().any(|(d, _, _)| d == domain),
            "no representative request for {domain}"
        );
    }
    let mut client = server.grpc().await;
    for (domain, request, expected) in cases {
        let sent = envoy_descriptors(&listeners[domain], &request);
        assert_eq!(
            sent.len(),
            expected.len(),
            "{domain} {request:?} produced {sent:?}"
        );
        for (descriptor, names) in sent.iter().zip(&expected) {
            let got = matched_limits(server.admin(), domain, descriptor).await;
            assert_eq!(got, *names, "{domain} {descriptor:?} ({request:?})");
        }
        let answer = client
            .should_rate_limit(grpc_request(domain, &sent))
            .await
            .expect("a decision")
            .into_inner();
        assert_eq!(answer.overall_code, Code::Ok as i32, "{domain} {sent:?}");
        assert_eq!(answer.statuses.len(), sent.len());
        assert!(
            answer.statuses.iter().any(|s| s.current_limit.is_some()),
            "{domain} {sent:?}: {answer:?}"
        );
    }
    server.running.shutdown().await.expect("clean shutdown");
}

/// The evaluator itself: a missing header drops the descriptor, and
/// `skip_if_absent` only skips the entry.
#[test]
fn the_action_evaluator_follows_envoy() {
    let listeners = envoy_listeners();
    let none = envoy_descriptors(&listeners["exotel"], &req("GET", "/", &[]));
    assert!(
        none.is_empty(),
        "no account header, no descriptor: {none:?}"
    );
    let xola = envoy_descriptors(
        &listeners["xola"],
        &req("GET", "/", &[("x-seller-id", "s")]),
    );
    assert_eq!(
        xola,
        vec![vec![(
            "remote_address".to_owned(),
            "203.0.113.9".to_owned()
        )]]
    );
}

// ---------------------------------------------------------------------------
// Istio and Kubernetes.

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| s(&d["kind"]) == kind && s(&d["metadata"]["name"]) == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn subset(small: &Value, big: &Value) -> bool {
    small
        .as_object()
        .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| big.get(k) == Some(v)))
}

fn env_of(container: &Value) -> Vec<(String, String)> {
    list(&container["env"])
        .iter()
        .map(|e| (s(&e["name"]).to_owned(), s(&e["value"]).to_owned()))
        .collect()
}

/// A container port by name or number.
fn container_port(container: &Value, port: &Value) -> String {
    let port = s(port);
    list(&container["ports"])
        .iter()
        .find(|p| s(&p["name"]) == port || s(&p["containerPort"]) == port)
        .map(|p| s(&p["containerPort"]).to_owned())
        .unwrap_or_else(|| panic!("the container has no port {port}"))
}

#[test]
fn kubernetes_objects_reference_each_other() {
    let docs = yaml_docs(&repo("examples/kubernetes/floodgate.yaml"));
    let deployment = find(&docs, "Deployment", "floodgate");
    let service = find(&docs, "Service", "floodgate");
    let namespace = s(&deployment["metadata"]["namespace"]);
    for doc in &docs {
        if s(&doc["kind"]) != "Namespace" {
            assert_eq!(
                s(&doc["metadata"]["namespace"]),
                namespace,
                "{}",
                doc["kind"]
            );
        }
    }
    let template = &deployment["spec"]["template"];
    let labels = &template["metadata"]["labels"];
    assert!(subset(
        &deployment["spec"]["selector"]["matchLabels"],
        labels
    ));
    assert!(subset(&service["spec"]["selector"], labels));
    let container = &template["spec"]["containers"][0];

    // Where the Deployment's reference variables make floodgate look, as
    // settings.rs resolves them: exactly where the ConfigMap is mounted.
    let env = env_of(container);
    let resolved = ReferenceEnv::from_vars(env.clone())
        .resolve(true)
        .expect("the Deployment's variables are valid");
    let warnings: Vec<_> = resolved
        .notes
        .iter()
        .filter(|n| n.level == NoteLevel::Warn)
        .collect();
    assert!(warnings.is_empty(), "{warnings:?}");
    let config_dir = resolved
        .defaults
        .iter()
        .find(|(id, _)| *id == "config")
        .map(|(_, path)| path.clone())
        .expect("RUNTIME_ROOT names the config directory");
    let mount = list(&container["volumeMounts"])
        .iter()
        .find(|m| s(&m["mountPath"]) == config_dir)
        .unwrap_or_else(|| panic!("nothing mounted at {config_dir}"));
    let volume = list(&template["spec"]["volumes"])
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    let configmap = find(&docs, "ConfigMap", s(&volume["configMap"]["name"]));

    // The ConfigMap holds config/ verbatim.
    let data = configmap["data"].as_object().expect("ConfigMap data");
    assert_eq!(data.len(), floodgate::config::source::EMBEDDED_RULES.len());
    for (file, text) in floodgate::config::source::EMBEDDED_RULES {
        assert_eq!(
            data.get(*file).and_then(Value::as_str),
            Some(*text),
            "the ConfigMap's {file} differs from config/{file}"
        );
    }

    // Ports: the Service's targets are the container's ports, which are
    // floodgate's (no PORT/GRPC_PORT set: 8080 and 8081).
    assert!(!env.iter().any(|(n, _)| n == "PORT" || n == "GRPC_PORT"));
    let mut service_ports = BTreeMap::new();
    for port in list(&service["spec"]["ports"]) {
        let target = container_port(container, &port["targetPort"]);
        service_ports.insert(
            s(&port["name"]).to_owned(),
            (s(&port["port"]).to_owned(), target),
        );
    }
    assert_eq!(service_ports["grpc-rls"].1, "8081");
    assert_eq!(service_ports["http-json"].1, "8080");
    for probe in ["readinessProbe", "startupProbe"] {
        let get = &container[probe]["httpGet"];
        assert_eq!(s(&get["path"]), "/healthcheck", "{probe}");
        assert_eq!(container_port(container, &get["port"]), "8080", "{probe}");
    }
    let annotations = &template["metadata"]["annotations"];
    assert_eq!(s(&annotations["prometheus.io/scrape"]), "true");
    assert_eq!(s(&annotations["prometheus.io/path"]), "/metrics");
    assert_eq!(s(&annotations["prometheus.io/port"]), "8080");
    assert_eq!(
        s(&template["spec"]["securityContext"]["runAsNonRoot"]),
        "true"
    );

    // REDIS_URL names the Redis Service, which selects the Redis pods.
    let redis_url = env
        .iter()
        .find(|(n, _)| n == "REDIS_URL")
        .map(|(_, v)| v.clone())
        .expect("REDIS_URL");
    let redis_service = find(&docs, "Service", "redis");
    let redis_port = s(&redis_service["spec"]["ports"][0]["port"]);
    assert_eq!(redis_url, format!("redis:{redis_port}"));
    let redis = find(&docs, "Deployment", "redis");
    assert!(subset(
        &redis_service["spec"]["selector"],
        &redis["spec"]["template"]["metadata"]["labels"]
    ));

    // Envoy and Istio reach the Service's gRPC port.
    let grpc_port = &service_ports["grpc-rls"].0;
    let envoy = yaml_docs(&repo("examples/envoy/envoy.yaml"));
    let cluster = list(&envoy[0]["static_resources"]["clusters"])
        .iter()
        .find(|c| s(&c["name"]) == "floodgate")
        .expect("the floodgate cluster");
    let address = &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
        ["socket_address"];
    assert_eq!(s(&address["port_value"]), grpc_port);
    assert!(
        cluster["typed_extension_protocol_options"]
            .to_string()
            .contains("http2_protocol_options"),
        "RLS is gRPC: the cluster must speak HTTP/2"
    );
    let host = format!("floodgate.{namespace}.svc.cluster.local");
    let istio = yaml_docs(&repo("examples/istio/ratelimit-envoyfilters.yaml"));
    let filter = find(&istio, "EnvoyFilter", "filter-ratelimit");
    let grpc = &filter["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["rate_limit_service"]
        ["grpc_service"]["envoy_grpc"];
    assert_eq!(
        s(&grpc["cluster_name"]),
        format!("outbound|{grpc_port}||{host}")
    );
    assert_eq!(s(&grpc["authority"]), host);
}

#[tokio::test(flavor = "multi_thread")]
async fn istio_actions_produce_descriptors_the_shipped_rules_match() {
    let istio = yaml_docs(&repo("examples/istio/ratelimit-envoyfilters.yaml"));
    assert_eq!(istio.len(), 2, "the EnvoyFilter pair");
    let filter = find(&istio, "EnvoyFilter", "filter-ratelimit");
    let patch = &filter["spec"]["configPatches"][0];
    assert_eq!(s(&patch["applyTo"]), "HTTP_FILTER");
    assert_eq!(s(&patch["patch"]["operation"]), "INSERT_BEFORE");
    let value = &patch["patch"]["value"];
    assert_eq!(s(&value["name"]), "envoy.filters.http.ratelimit");
    let domain = s(&value["typed_config"]["domain"]).to_owned();
    let actions = find(&istio, "EnvoyFilter", "filter-ratelimit-svc");
    let patch = &actions["spec"]["configPatches"][0];
    assert_eq!(s(&patch["applyTo"]), "VIRTUAL_HOST");
    let rate_limits = list(&patch["patch"]["value"]["rate_limits"]);

    let server = harness::ops::start(&repo("config"), Setup::default()).await;
    let listeners = envoy_listeners();
    let mut checked = 0;
    for (case_domain, request, expected) in representative_requests() {
        if case_domain != domain {
            continue;
        }
        let sent = descriptors(rate_limits, &request);
        // The same descriptors as the Envoy example's for this domain.
        assert_eq!(sent, envoy_descriptors(&listeners[case_domain], &request));
        for (descriptor, names) in sent.iter().zip(&expected) {
            assert_eq!(
                matched_limits(server.admin(), &domain, descriptor).await,
                *names
            );
        }
        checked += 1;
    }
    assert!(checked > 0, "no representative request for {domain}");
    server.running.shutdown().await.expect("clean shutdown");
}

#[test]
fn the_dockerfile_copies_what_the_build_needs() {
    let text = std::fs::read_to_string(repo("Dockerfile")).expect("a Dockerfile");
    let copied: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
        .flat_map(|l| {
            let words: Vec<&str> = l.split_whitespace().skip(1).collect();
            words[..words.len() - 1].to_vec()
        })
        .collect();
    for path in &copied {
        assert!(repo(path).exists(), "COPY {path}: no such file");
    }
    // Everything cargo reads to build the binary.
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        "proto",
        "src",
        "config",
        "benches",
    ] {
        assert!(
            copied.contains(&needed),
            "the build stage must COPY {needed}"
        );
    }
    assert!(text.contains("--locked"), "build from the lockfile");
    assert!(text.contains("EXPOSE 8080 8081 6070"));
    // Envoy Gateway's Deployment runs the rate-limit image as 65534.
    assert!(text.contains("USER 65534"), "run as non-root");
    assert!(
        text.contains("/bin/ratelimit"),
        "the reference's entry point"
    );
    let ignore = std::fs::read_to_string(repo(".dockerignore")).expect("a .dockerignore");
    assert!(ignore.lines().any(|l| l.trim() == "target"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_example_prints_a_real_decision() {
    let server = harness::ops::start(&repo("config"), Setup::default()).await;
    let args = |domain: &str, descriptors: &[&str], hits: u32| client::Args {
        addr: server.running.grpc_addr.to_string(),
        domain: domain.to_owned(),
        descriptors: descriptors.iter().map(|d| (*d).to_owned()).collect(),
        hits,
        timeout_ms: 10_000,
    };

    let ok = args("exotel", &["account=acme,api_category=bridges"], 0);
    let answer = client::ask(&ok).await.expect("an answer");
    let text = client::render(&client::build_request(&ok).expect("a request"), &answer);
    assert!(text.starts_with("overall: OK\n"), "{text}");
    assert!(
        text.contains("[account=acme,api_category=bridges] OK: limit 100/MINUTE (bridges), remaining 99, resets in"),
        "{text}"
    );

    let over = args("xola", &["user=u1,seller=s1", "user=u1"], 901);
    let answer = client::ask(&over).await.expect("an answer");
    let text = client::render(&client::build_request(&over).expect("a request"), &answer);
    assert!(text.starts_with("overall: OVER_LIMIT\n"), "{text}");
    assert!(
        text.contains("[user=u1,seller=s1] OVER_LIMIT: limit 900/MINUTE (user_seller)"),
        "{text}"
    );
    assert!(text.contains("headers:\n"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("x-ratelimit-limit: 900"),
        "{text}"
    );
    assert!(
        text.contains("Too many requests, please try again later."),
        "{text}"
    );

    assert!(client::parse_descriptor("novalue").is_err());
    let refused = client::ask(&client::Args {
        addr: "127.0.0.1:1".to_owned(),
        ..args("exotel", &["account=a"], 0)
    })
    .await;
    assert!(refused.is_err());
    server.running.shutdown().await.expect("clean shutdown");
}

/// Every YAML file under examples/ parses (all its documents).
#[test]
fn every_example_yaml_parses() {
    let mut seen = 0;
    let mut stack = vec![repo("examples")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read examples/") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                yaml_docs(&path);
                seen += 1;
            }
        }
    }
    assert!(seen >= 3, "envoy, istio and kubernetes examples");
}

// ---------------------------------------------------------------------------
// The shipped rules leave no gap the seeds do not leave.

/// Sends `entries` to a server with the shipped config and returns the name
/// of the limit the status reports (`None`: no limit applied).
async fn limit_applied(
    h: &mut harness::TestServer,
    domain: &str,
    entries: &[(&str, &str)],
) -> Option<String> {
    let r = h.should(domain, &[entries]).await;
    r.statuses
        .first()
        .and_then(|status| status.current_limit.as_ref())
        .map(|limit| limit.name.clone())
}

/// Every shipped domain, asked with values its config does not list (a new
/// API category, region or plan, a plan cased differently, unknown keys,
/// users, IPs and routes), still applies the limit its seed promises: no
/// descriptor Envoy can send for a limited API goes unlimited.
#[tokio::test]
async fn values_the_config_does_not_list_still_get_the_seeds_limits() {
    let mut h = harness::TestServer::shipped_at(harness::secs(harness::HOUR_START)).await;
    let account = ("account", "acct-never-seen");
    // exotel: "The default limit for all APIs is 100 rpm", per account,
    // whatever the category, region and plan.
    let mut exotel: Vec<(Vec<(&str, &str)>, &str)> = vec![(vec![account], "account_default")];
    for (category, names) in [
        ("legs", ["legs", "legs_region", "legs_plan"]),
        ("bridges", ["bridges", "bridges_region", "bridges_plan"]),
        (
            "actions",
            [
                "actions_burst",
                "actions_region_burst",
                "actions_plan_burst",
            ],
        ),
        ("events", ["events", "events_region", "events_plan"]),
        (
            "calls",
            [
                "other_category",
                "other_category_region",
                "other_category_plan",
            ],
        ),
        (
            "LEGS",
            [
                "other_category",
                "other_category_region",
                "other_category_plan",
            ],
        ),
    ] {
        let entries = [
            account,
            ("api_category", category),
            ("region", "mars-1"),
            ("plan", "gold"),
        ];
        for (depth, name) in (2..=4).zip(names) {
            exotel.push((entries[..depth].to_vec(), name));
        }
    }
    exotel.push((
        vec![
            account,
            ("api_category", "legs"),
            ("region", "mars-1"),
            ("plan", "standard"),
        ],
        "legs_standard_burst",
    ));
    for (entries, name) in &exotel {
        assert_eq!(
            limit_applied(&mut h, "exotel", entries).await.as_deref(),
            Some(*name),
            "exotel {entries:?}"
        );
    }
    // courses: every API key is on some plan's hourly quota and burst; an
    // unknown or differently cased plan gets the professional limits.
    for (plan, name) in [
        ("professional", "professional_burst"),
        ("enterprise", "enterprise_burst"),
        ("custom", "custom_default_burst"),
        ("free", "other_plan_burst"),
        ("Professional", "other_plan_burst"),
        ("", "other_plan_burst"),
    ] {
        let entries = [("plan", plan), ("api_key", "key-never-seen")];
        assert_eq!(
            limit_applied(&mut h, "courses", &entries).await.as_deref(),
            Some(name),
            "courses {entries:?}"
        );
    }
    // xola: 900 per 30 minutes for any user, user and seller, or IP.
    for (entries, name) in [
        (vec![("user", "u-never-seen")], "user"),
        (
            vec![("user", "u-never-seen"), ("seller", "s-never-seen")],
            "user_seller",
        ),
        (vec![("remote_address", "2001:db8::1")], "ip"),
    ] {
        assert_eq!(
            limit_applied(&mut h, "xola", &entries).await.as_deref(),
            Some(name),
            "xola {entries:?}"
        );
    }
    // campaigns: "Default for API-key routes: 60 requests / 60 s per API key".
    for (route, name) in [
        ("DELETE /v1/campaigns/:id", "default"),
        ("GET /v1/users/u-42", "users"),
        ("get /v1/campaigns", "default"),
    ] {
        let entries = [("api_key", "key-never-seen"), ("route", route)];
        assert_eq!(
            limit_applied(&mut h, "campaigns", &entries)
                .await
                .as_deref(),
            Some(name),
            "campaigns {entries:?}"
        );
    }
    // explo: 180 per minute for any requestor IP. (The path entry is sent
    // on the export route only, so no other path reaches floodgate.)
    assert_eq!(
        limit_applied(&mut h, "explo", &[("remote_address", "192.0.2.200")])
            .await
            .as_deref(),
        Some("per_ip")
    );
    h.shutdown().await;
}

/// A value the config does not list never brings a fresh quota where the
/// seed limits per account or per key: exotel's regions and unlisted plans
/// share the account's counter, courses' unlisted plans share the key's.
#[tokio::test]
async fn unlisted_values_share_the_accounts_quota() {
    use floodgate::proto::RateLimitRequest;
    let mut h = harness::TestServer::shipped_at(harness::secs(harness::HOUR_START)).await;
    let with_hits = |mut request: RateLimitRequest, hits: u32| {
        request.hits_addend = hits;
        request
    };
    let exotel = |region: &'static str, plan: &'static str| {
        vec![
            ("account", "acme"),
            ("api_category", "bridges"),
            ("region", region),
            ("plan", plan),
        ]
    };
    let first = exotel("eu-1", "gold");
    let r = h
        .send(with_hits(harness::request("exotel", &[&first]), 100))
        .await;
    assert!(!harness::is_over(&r));
    for (region, plan) in [("us-1", "gold"), ("eu-1", "silver"), ("ap-9", "bronze")] {
        let r = h.should("exotel", &[&exotel(region, plan)]).await;
        assert!(
            harness::is_over(&r),
            "{region}/{plan} must not get a fresh 100/min"
        );
    }
    let legs = |region: &'static str| {
        vec![
            ("account", "acme"),
            ("api_category", "legs"),
            ("region", region),
            ("plan", "standard"),
        ]
    };
    let r = h
        .send(with_hits(harness::request("exotel", &[&legs("eu-1")]), 10))
        .await;
    assert!(!harness::is_over(&r), "the standard plan's burst of 10");
    let r = h.should("exotel", &[&legs("us-1")]).await;
    assert!(harness::is_over(&r), "another region shares the burst");

    let courses = |plan: &'static str| vec![("plan", plan), ("api_key", "key-acme")];
    let r = h
        .send(with_hits(
            harness::request("courses", &[&courses("free")]),
            100,
        ))
        .await;
    assert!(!harness::is_over(&r));
    let r = h.should("courses", &[&courses("basic")]).await;
    assert!(
        harness::is_over(&r),
        "another unlisted plan shares the burst"
    );
    h.shutdown().await;
}
