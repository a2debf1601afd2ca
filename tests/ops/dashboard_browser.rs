//! The dashboard page in a real headless browser (Debian's `chromium`):
//! a server under known traffic over real gRPC, the page loaded from its
//! admin address, the DOM after the page's own JS rendered it (and polled
//! `/dashboard/data` again), and a screenshot kept as a CI artifact at
//! `target/ci-artifacts/dashboard.png`.
//!
//! Fails (never skips) when chromium is missing: install it with
//! `apt-get install chromium`, or point `FLOODGATE_CHROMIUM` at a binary.
//! `FLOODGATE_DASHBOARD_SECONDS` (default 4) sets how long traffic runs
//! before the page is loaded (longer gives fuller charts for a screenshot),
//! `FLOODGATE_DASHBOARD_WINDOW` (default `1280,1000`) the screenshot's size.

use crate::harness;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use floodgate::proto::RateLimitServiceClient;
use harness::ops::{Setup, decide, eventually, start};
use harness::{http_get, http_post, request, request_one};
use tonic::transport::Channel;

const RULES: &str = "\
domain: shop
descriptors:
  - key: user
    rate_limit:
      unit: minute
      requests_per_unit: 20
  - key: api
    value: checkout
    rate_limit:
      unit: minute
      requests_per_unit: 400
  - key: api
    value: search
    rate_limit:
      unit: minute
      requests_per_unit: 5000
  - key: tenant
    descriptors:
      - key: plan
        value: free
        rate_limit:
          unit: hour
          requests_per_unit: 100
";

const MORE_RULES: &str = "\
domain: partner-api
descriptors:
  - key: api_key
    rate_limit:
      unit: second
      requests_per_unit: 1000000
";

fn chromium() -> PathBuf {
    harness::tools::required("chromium")
}

/// Runs headless chromium on `url` with `extra` arguments; returns stdout.
async fn run_chromium(url: String, extra: Vec<String>) -> String {
    let binary = chromium();
    tokio::task::spawn_blocking(move || {
        let profile = tempfile::tempdir().expect("a chromium profile dir");
        let output = Command::new(&binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--force-device-scale-factor=1",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(&extra)
            .arg(&url)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", binary.display()));
        assert!(
            output.status.success(),
            "chromium failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    })
    .await
    .expect("the chromium task")
}

/// The DOM of `url` after the page's JS ran (chromium `--dump-dom` with
/// `extra` arguments) and the attributes of its `<body>`; fails when the
/// page's JS reported an error.
async fn rendered_dom(url: String, mut extra: Vec<String>) -> (String, Vec<(String, String)>) {
    extra.push("--dump-dom".to_owned());
    let dom = run_chromium(url, extra).await;
    let body = tags(&dom, "body").into_iter().next().expect("a body");
    assert_eq!(attr(&body, "data-error"), None, "the page's JS failed");
    (dom, body)
}

/// The attributes of every `<tag ...>` in `html`, in document order.
fn tags(html: &str, tag: &str) -> Vec<Vec<(String, String)>> {
    let open = format!("<{tag} ");
    let mut found = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let end = after.find('>').unwrap_or(after.len());
        found.push(attributes(&after[..end]));
        rest = &after[end..];
    }
    found
}

fn attributes(mut text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    loop {
        text = text.trim_start();
        let Some(eq) = text.find("=\"") else { break };
        let name = text[..eq].trim().to_owned();
        let value_start = eq + 2;
        let Some(len) = text[value_start..].find('"') else {
            break;
        };
        out.push((name, text[value_start..value_start + len].to_owned()));
        text = &text[value_start + len + 1..];
    }
    out
}

fn attr<'a>(tag: &'a [(String, String)], name: &str) -> Option<&'a str> {
    tag.iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

fn with<'a>(
    tags: &'a [Vec<(String, String)>],
    name: &str,
    value: &str,
) -> Option<&'a Vec<(String, String)>> {
    tags.iter().find(|tag| attr(tag, name) == Some(value))
}

/// One round of known traffic: alice over her limit, bob and carol well
/// below, the free plan's tenant near its hourly limit, searches and
/// checkouts, and a partner's unlimited-for-practical-purposes key.
async fn round(client: &mut RateLimitServiceClient<Channel>, round: u32, rounds: u32) {
    for _ in 0..4 {
        decide(client, request_one("shop", &[("user", "alice")])).await;
    }
    decide(client, request_one("shop", &[("user", "bob")])).await;
    if round.is_multiple_of(2) {
        decide(client, request_one("shop", &[("user", "carol")])).await;
    }
    // Searches come in waves, so the charts have a shape.
    for _ in 0..(3 + (round / 4) % 6) {
        decide(
            client,
            request("shop", &[&[("api", "search")], &[("tenant", "initech")]]),
        )
        .await;
    }
    decide(client, request_one("shop", &[("api", "checkout")])).await;
    // Over the whole run, acme-corp uses 12 and globex 84 of their 100 an
    // hour: globex ends up near its limit.
    let share = |total: u32| total * (round + 1) / rounds - total * round / rounds;
    for (tenant, total) in [("acme-corp", 12), ("globex", 84)] {
        for _ in 0..share(total) {
            decide(
                client,
                request_one("shop", &[("tenant", tenant), ("plan", "free")]),
            )
            .await;
        }
    }
    for _ in 0..3 {
        decide(client, request_one("partner-api", &[("api_key", "k-7f3a")])).await;
    }
}

fn artifact_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("ci-artifacts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_renders_live_data_in_a_real_browser_and_is_screenshotted() {
    let browser = chromium();
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("shop.yaml"), RULES).expect("write");
    std::fs::write(dir.path().join("partner.yaml"), MORE_RULES).expect("write");
    let server = start(dir.path(), Setup::default()).await;
    let admin = server.admin();
    let mut client = server.grpc().await;

    let seconds: u64 = std::env::var("FLOODGATE_DASHBOARD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let rounds = seconds * 4;
    for i in 0..rounds {
        round(&mut client, i as u32, rounds as u32).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A bad reload, so the page shows the failure and its error text.
    std::fs::write(
        dir.path().join("partner.yaml"),
        "domain: partner-api\ndescriptors:\n  - key: api_key\n    rate_limit: {unit: fortnight, requests_per_unit: 5}\n",
    )
    .expect("write a bad config");
    let (code, _) = http_post(admin, "/reload", "").await;
    assert_eq!(code, 422);
    // Wait until the sampler has recorded all of it.
    eventually("the sampler to record the traffic", || async {
        let (_, body) = http_get(admin, "/dashboard/data?step=1").await;
        let data: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let total = &data["requests"]["totals"];
        let sampled: u64 = ["ok", "over_limit"]
            .iter()
            .flat_map(|series| {
                data["history"][series]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|v| v.as_u64())
            .sum();
        sampled > 0
            && Some(sampled)
                == total["ok"]
                    .as_u64()
                    .zip(total["over_limit"].as_u64())
                    .map(|(a, b)| a + b)
    })
    .await;

    // The DOM after the page's JS ran and polled once more (the budget is
    // virtual time: chromium lets the 2 s poll timer and its fetch finish).
    let (dom, body) = rendered_dom(
        format!("http://{admin}/dashboard?step=1"),
        vec!["--virtual-time-budget=5000".to_owned()],
    )
    .await;
    let body = &body;
    assert!(
        attr(body, "data-renders").and_then(|n| n.parse::<u32>().ok()) >= Some(2),
        "the page rendered the inlined data and then polled: {body:?}"
    );
    assert_eq!(attr(body, "data-source"), Some("poll"), "{body:?}");

    // The requests chart: OK and OVER_LIMIT lines with points, peaking
    // above zero with the traffic.
    let svgs = tags(&dom, "svg");
    let chart = with(&svgs, "data-chart", "requests").expect("the requests chart");
    let points: u32 = attr(chart, "data-points")
        .and_then(|n| n.parse().ok())
        .expect("data-points");
    assert!(points >= 2, "{chart:?}");
    let lines = tags(&dom, "polyline");
    for series in ["ok", "over_limit", "p50", "p99"] {
        let line = with(&lines, "data-series", series).unwrap_or_else(|| panic!("{series} line"));
        let peak: f64 = attr(line, "data-max")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{series} has a peak value: {line:?}"));
        assert!(peak > 0.0, "{series}: {line:?}");
        let drawn = attr(line, "points").unwrap_or_default().split(' ').count();
        assert!(drawn >= 2, "{series}: {line:?}");
    }

    // The rules table: the limiting rule first, highlighted.
    let rows = tags(&dom, "tr");
    let rule_rows: Vec<&Vec<(String, String)>> = rows
        .iter()
        .filter(|row| attr(row, "data-over-share").is_some())
        .collect();
    let first = rule_rows.first().expect("rule rows");
    assert_eq!(attr(first, "data-rule"), Some("shop.user"), "{rule_rows:?}");
    assert_eq!(attr(first, "class"), Some("limiting"));
    assert!(
        rule_rows
            .iter()
            .any(|row| attr(row, "data-rule") == Some("partner-api.api_key")),
        "{rule_rows:?}"
    );

    // The top-K names the descriptors: alice over her limit first.
    let top: Vec<&str> = rows
        .iter()
        .filter_map(|row| attr(row, "data-descriptor"))
        .collect();
    assert_eq!(top.first(), Some(&"user=alice"), "{top:?}");
    assert!(top.contains(&"tenant=globex,plan=free"), "{top:?}");
    assert!(dom.contains("OVER LIMIT"));

    // The failed reload, with its error text.
    assert!(dom.contains("Last config reload failed"));
    assert!(dom.contains("fortnight"), "the reload error is shown");

    // The screenshot, kept as a CI artifact.
    let artifacts = artifact_dir();
    std::fs::create_dir_all(&artifacts).expect("create the artifact dir");
    let shot = artifacts.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    // FLOODGATE_DASHBOARD_WINDOW=1280,1500 takes the whole page (docs).
    let window =
        std::env::var("FLOODGATE_DASHBOARD_WINDOW").unwrap_or_else(|_| "1280,1000".to_owned());
    // At the default 5 s resolution, as an operator opens it.
    run_chromium(
        format!("http://{admin}/dashboard"),
        vec![
            "--virtual-time-budget=3000".to_owned(),
            format!("--window-size={window}"),
            format!("--screenshot={}", shot.display()),
        ],
    )
    .await;
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    assert!(png.len() > 20_000, "a screenshot with content");
    println!("dashboard screenshot: {}", shot.display());
    drop(browser);
    server.running.shutdown().await.expect("clean shutdown");
}

/// The shipped rules under traffic that reaches their deepest (longest)
/// rule ids, some of them limiting, plus a request limit override and a
/// 64 KiB descriptor value: at 1400 px nothing on the page is wider than
/// its card, and the override's `<domain>.(override)` pseudo-rule is not
/// listed as a rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_rules_fit_a_1400_px_window() {
    let _ = chromium();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let server = start(&config, Setup::default()).await;
    let admin = server.admin();
    let mut client = server.grpc().await;
    let huge = "v".repeat(64 * 1024);
    let deep: [&[(&str, &str)]; 6] = [
        &[
            ("account", "acme-telephony-enterprise-account"),
            ("api_category", "legs"),
            ("region", "ap-southeast-2"),
            ("plan", "enterprise"),
        ],
        &[
            ("account", "acme"),
            ("api_category", "recordings"),
            ("region", "eu-west-1"),
            ("plan", "platinum-annual"),
        ],
        &[("plan", "Professional"), ("api_key", "key-acme")],
        &[
            ("api_key", "key-acme"),
            ("route", "GET /v1/campaigns/:id/statistics"),
        ],
        &[("user", "u1"), ("seller", "s1")],
        &[("user", &huge)],
    ];
    for descriptor in deep {
        let domain = match descriptor[0].0 {
            "account" => "exotel",
            "plan" => "courses",
            "user" => "xola",
            _ => "campaigns",
        };
        let mut over = request(domain, &[descriptor]);
        over.hits_addend = 2000;
        decide(&mut client, over).await;
        decide(&mut client, request(domain, &[descriptor])).await;
    }
    let mut overridden = request("campaigns", &[&[("tenant", "t1")]]);
    overridden.descriptors[0].limit = Some(floodgate::proto::RateLimitOverride {
        requests_per_unit: 1,
        unit: floodgate::proto::envoy::r#type::v3::RateLimitUnit::Minute as i32,
    });
    decide(&mut client, overridden.clone()).await;
    decide(&mut client, overridden).await;
    eventually("the sampler to record the traffic", || async {
        let (_, body) = http_get(admin, "/dashboard/data?step=1").await;
        let data: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        data["rules"].as_array().is_some_and(|rules| {
            rules
                .iter()
                .any(|r| r["per_second"]["hits"].as_f64() > Some(0.0))
        })
    })
    .await;

    let (dom, body) = rendered_dom(
        format!("http://{admin}/dashboard"),
        vec![
            "--virtual-time-budget=3000".to_owned(),
            "--window-size=1400,1000".to_owned(),
        ],
    )
    .await;
    let body = &body;
    assert!(
        attr(body, "data-renders").is_some_and(|n| n != "0"),
        "{body:?}"
    );
    assert_eq!(
        attr(body, "data-overflow"),
        Some(""),
        "wider than their card at 1400 px: {body:?}"
    );
    let rows = tags(&dom, "tr");
    let rules: Vec<&str> = rows
        .iter()
        .filter(|row| attr(row, "data-over-share").is_some())
        .filter_map(|row| attr(row, "data-rule"))
        .collect();
    assert!(
        rules.contains(&"exotel.account.api_category_legs.region_*.plan_enterprise"),
        "{rules:?}"
    );
    assert!(
        rules.iter().all(|rule| !rule.ends_with(".(override)")),
        "{rules:?}"
    );
    server.running.shutdown().await.expect("clean shutdown");
}
