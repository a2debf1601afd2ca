//! Operators' overrides through the admin API with the memory store: they
//! replace a rule for one descriptor and keep its usage, expire, survive a
//! restart with `--overrides-file`, need the token, and refuse hostile
//! input without changing anything. (Redis: tests/redis_store.rs.)

use crate::harness;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use floodgate::clock::ManualClock;
use floodgate::config::{self, LoadOptions};
use floodgate::decide::{RateLimiter, ServiceOptions};
use floodgate::proto::RateLimitServiceClient;
use floodgate::server::{self, Listeners, OverrideOptions, Running, ServerOptions};
use floodgate::store::memory::MemoryStore;
use harness::ops::{any_port, decide, metric};
use harness::{HttpResponse, START, START_SECS, http_with, request_one};
use tonic::transport::Channel;

const RULES: &str = "\
domain: shop
descriptors:
  - key: customer
    rate_limit: {unit: minute, requests_per_unit: 3}
";

const TOKEN: &str = "s3cret-token";

struct Shop {
    running: Running,
    clock: ManualClock,
    client: RateLimitServiceClient<Channel>,
}

async fn start(overrides: OverrideOptions, admin: SocketAddr) -> Shop {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("rules.yaml");
    std::fs::write(&path, RULES).expect("write");
    let clock = ManualClock::new(START);
    let limiter = Arc::new(RateLimiter::new(
        config::load_path(&path, &LoadOptions::default()).expect("rules"),
        MemoryStore::new(10_000),
        Arc::new(clock.clone()),
        ServiceOptions::default(),
    ));
    let running = server::start_with(
        limiter,
        &Listeners {
            grpc: any_port(),
            http: any_port(),
        },
        ServerOptions {
            admin: Some(admin),
            overrides,
            ..ServerOptions::default()
        },
    )
    .await
    .expect("start the server");
    let client = RateLimitServiceClient::connect(format!("http://{}", running.grpc_addr))
        .await
        .expect("connect");
    Shop {
        running,
        clock,
        client,
    }
}

impl Shop {
    fn admin(&self) -> SocketAddr {
        let admin = self.running.admin_addr.expect("admin");
        SocketAddr::from(([127, 0, 0, 1], admin.port()))
    }

    async fn call(&self, method: &str, path: &str, body: Option<&str>) -> HttpResponse {
        let bearer = format!("Bearer {TOKEN}");
        http_with(
            self.admin(),
            method,
            path,
            body,
            &[
                ("Authorization", bearer.as_str()),
                ("X-Floodgate-Actor", "test"),
            ],
        )
        .await
    }

    /// How many of `n` requests for `customer` are admitted.
    async fn admitted(&mut self, customer: &str, n: usize) -> usize {
        let mut ok = 0;
        for _ in 0..n {
            if decide(
                &mut self.client,
                request_one("shop", &[("customer", customer)]),
            )
            .await
                == 1
            {
                ok += 1;
            }
        }
        ok
    }

    async fn listed(&self) -> serde_json::Value {
        let answer = self.call("GET", "/overrides?domain=shop", None).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.json()["overrides"].clone()
    }
}

fn acme(per_minute: u64, expires_at: Option<u64>) -> String {
    let expiry = expires_at.map_or(String::new(), |at| format!(r#","expires_at":{at}"#));
    format!(
        r#"{{"domain":"shop","entries":[{{"key":"customer","value":"acme"}}],"limits":[{{"requests_per_unit":{per_minute},"unit":"minute"}}]{expiry}}}"#
    )
}

const ACME: &str = r#"{"domain":"shop","entries":[{"key":"customer","value":"acme"}]}"#;

fn loopback() -> SocketAddr {
    any_port()
}

#[tokio::test]
async fn an_override_replaces_the_rule_keeps_usage_and_deletion_restores_it() {
    let mut shop = start(OverrideOptions::default(), loopback()).await;
    assert_eq!(shop.admitted("acme", 2).await, 2);

    let set = shop.call("PUT", "/overrides", Some(&acme(5, None))).await;
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(set.json()["limits"][0]["requests_per_unit"], 5);
    // The 2 already counted in this minute stay counted: 3 more fit.
    assert_eq!(shop.admitted("acme", 5).await, 3);
    // Other customers keep the rule.
    assert_eq!(shop.admitted("globex", 5).await, 3);
    assert_eq!(shop.listed().await.as_array().map(Vec::len), Some(1));

    let (_, text) = harness::http_get(shop.running.http_addr, "/metrics").await;
    assert_eq!(metric(&text, "floodgate_overrides", ""), Some(1.0));
    assert_eq!(
        metric(&text, "floodgate_override_changes_total", r#"change="set""#),
        Some(1.0)
    );
    let (_, dashboard) = harness::http_get(shop.admin(), "/dashboard/data").await;
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).expect("JSON");
    assert_eq!(dashboard["overrides"]["total"], 1);
    assert_eq!(
        dashboard["overrides"]["entries"][0]["entries"][0]["value"],
        "acme"
    );
    let (_, rlconfig) = harness::http_get(shop.admin(), "/rlconfig").await;
    assert!(
        rlconfig.contains("shop.(admin override) customer=acme: unit=MINUTE requests_per_unit=5"),
        "{rlconfig}"
    );

    // Lowering it keeps the 5 counted: over at once.
    let lower = shop.call("PUT", "/overrides", Some(&acme(4, None))).await;
    assert_eq!(lower.status, 200);
    assert_eq!(shop.admitted("acme", 1).await, 0);

    let deleted = shop.call("DELETE", "/overrides", Some(ACME)).await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(
        shop.call("DELETE", "/overrides", Some(ACME)).await.status,
        404
    );
    assert_eq!(shop.listed().await.as_array().map(Vec::len), Some(0));
    // The rule is back, with the usage counted under the override.
    assert_eq!(shop.admitted("acme", 1).await, 0);
    shop.clock.advance(60 * 1_000_000_000);
    assert_eq!(shop.admitted("acme", 5).await, 3);
    shop.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn an_expired_override_restores_the_rule() {
    let mut shop = start(OverrideOptions::default(), loopback()).await;
    let set = shop
        .call("PUT", "/overrides", Some(&acme(10, Some(START_SECS + 90))))
        .await;
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(shop.admitted("acme", 12).await, 10);
    // Past its expiry (and in a new minute) the rule's 3 apply again.
    shop.clock.advance(120 * 1_000_000_000);
    assert_eq!(shop.admitted("acme", 5).await, 3);
    assert_eq!(shop.listed().await.as_array().map(Vec::len), Some(0));
    shop.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn overrides_survive_a_restart_with_the_overrides_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("overrides.json");
    let options = || OverrideOptions {
        file: Some(file.clone()),
        token: None,
    };
    let shop = start(options(), loopback()).await;
    assert_eq!(
        shop.call("PUT", "/overrides", Some(&acme(7, None)))
            .await
            .status,
        200
    );
    shop.running.shutdown().await.expect("shutdown");
    assert!(
        std::fs::read_to_string(&file)
            .expect("file")
            .contains("\"acme\"")
    );
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);

    let mut again = start(options(), loopback()).await;
    assert_eq!(again.listed().await[0]["limits"][0]["requests_per_unit"], 7);
    assert_eq!(again.admitted("acme", 9).await, 7);
    again.running.shutdown().await.expect("shutdown");

    // A file that is not an override list refuses the start.
    std::fs::write(&file, "{\"overrides\": [{\"domain\": \"shop\"}]}").expect("write");
    assert!(bad_start(&file).await.contains("overrides file"));
}

async fn bad_start(file: &Path) -> String {
    let limiter = Arc::new(RateLimiter::new(
        floodgate::rules::RuleSet::empty(),
        MemoryStore::new(10),
        Arc::new(ManualClock::new(START)),
        ServiceOptions::default(),
    ));
    match server::start_with(
        limiter,
        &Listeners {
            grpc: any_port(),
            http: any_port(),
        },
        ServerOptions {
            overrides: OverrideOptions {
                file: Some(file.to_path_buf()),
                token: None,
            },
            ..ServerOptions::default()
        },
    )
    .await
    {
        Ok(_) => panic!("started with a bad overrides file"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn changes_need_the_token_and_a_loopback_address_without_one() {
    let shop = start(
        OverrideOptions {
            file: None,
            token: Some(TOKEN.into()),
        },
        loopback(),
    )
    .await;
    let body = acme(5, None);
    for headers in [
        &[][..],
        &[("Authorization", "Bearer wrong")][..],
        &[("Authorization", TOKEN)][..],
    ] {
        for method in ["PUT", "DELETE"] {
            let answer = http_with(shop.admin(), method, "/overrides", Some(&body), headers).await;
            assert_eq!(answer.status, 401, "{method} {headers:?}");
        }
    }
    let reload = http_with(shop.admin(), "POST", "/reload", None, &[]).await;
    assert_eq!(reload.status, 401);
    assert_eq!(
        shop.call("PUT", "/overrides", Some(&body)).await.status,
        200
    );
    // Reading needs no token.
    let list = http_with(shop.admin(), "GET", "/overrides", None, &[]).await;
    assert_eq!(list.status, 200);
    shop.running.shutdown().await.expect("shutdown");

    // On every interface without a token, changes are refused.
    let open = start(
        OverrideOptions::default(),
        SocketAddr::from(([0, 0, 0, 0], 0)),
    )
    .await;
    let answer = http_with(open.admin(), "PUT", "/overrides", Some(&body), &[]).await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert!(answer.body.contains("--admin-token"), "{}", answer.body);
    open.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn hostile_input_gets_400_naming_the_problem_and_changes_nothing() {
    let shop = start(OverrideOptions::default(), loopback()).await;
    assert_eq!(
        shop.call("PUT", "/overrides", Some(&acme(5, None)))
            .await
            .status,
        200
    );
    let entry = r#""entries":[{"key":"customer","value":"acme"}]"#;
    let cases = [
        ("{not json".to_owned(), "expected"),
        (r#"{"domain":"shop"}"#.to_owned(), "missing field"),
        (
            format!(
                r#"{{"domain":"shop",{entry},"limits":[{{"requests_per_unit":1,"unit":"fortnight"}}]}}"#
            ),
            "unknown unit",
        ),
        (
            r#"{"domain":"shop","entries":[],"limits":[{"requests_per_unit":1,"unit":"hour"}]}"#
                .to_owned(),
            "at least one entry",
        ),
        (
            format!(
                r#"{{"domain":"shop",{entry},"limits":[{{"requests_per_unit":4294967296,"unit":"hour"}}]}}"#
            ),
            "at most 4294967295",
        ),
        (
            format!(
                r#"{{"domain":"shop",{entry},"limits":[{{"requests_per_unit":-1,"unit":"hour"}}]}}"#
            ),
            "expected",
        ),
        (
            format!(
                r#"{{"domain":"shop",{entry},"limits":[{{"requests_per_unit":1e99,"unit":"hour"}}]}}"#
            ),
            "expected",
        ),
        (
            format!(
                r#"{{"domain":"shop",{entry},"limits":[{{"requests_per_unit":1,"unit":"hour"}}],"admin":true}}"#
            ),
            "unknown field",
        ),
        (
            format!(r#"{{"domain":"shop",{entry},"limits":"lots"}}"#),
            "expected",
        ),
        ("[]".to_owned(), "expected"),
        ("x".repeat(100_000), "at most"),
    ];
    for (body, expected) in &cases {
        let answer = shop.call("PUT", "/overrides", Some(body)).await;
        assert_eq!(answer.status, 400, "{body:.80}: {}", answer.body);
        assert!(
            answer.body.contains(expected),
            "{body:.80}: {}",
            answer.body
        );
    }
    let deleted = shop
        .call("DELETE", "/overrides", Some("{\"domain\": 3}"))
        .await;
    assert_eq!(deleted.status, 400);
    let listed = shop.listed().await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    assert_eq!(listed[0]["limits"][0]["requests_per_unit"], 5);

    // Fill the domain to its bound: one more is refused, nothing changes.
    for n in 1..floodgate::rules::overrides::MAX_OVERRIDES_PER_DOMAIN {
        let body = acme(1, None).replace("acme", &format!("c{n}"));
        assert_eq!(
            shop.call("PUT", "/overrides", Some(&body)).await.status,
            200
        );
    }
    let one_more = shop
        .call(
            "PUT",
            "/overrides",
            Some(&acme(1, None).replace("acme", "straw")),
        )
        .await;
    assert_eq!(one_more.status, 400);
    assert!(one_more.body.contains("most allowed"), "{}", one_more.body);
    assert_eq!(
        shop.listed().await.as_array().map(Vec::len),
        Some(floodgate::rules::overrides::MAX_OVERRIDES_PER_DOMAIN)
    );
    shop.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn an_override_applies_where_no_rule_matches_and_is_counted_in_metrics() {
    let mut shop = start(OverrideOptions::default(), loopback()).await;
    let body = r#"{"domain":"unconfigured","entries":[{"key":"k","value":"v"}],"limits":[{"requests_per_unit":1,"unit":"minute"}]}"#;
    assert_eq!(shop.call("PUT", "/overrides", Some(body)).await.status, 200);
    let request = || request_one("unconfigured", &[("k", "v")]);
    assert_eq!(decide(&mut shop.client, request()).await, 1);
    assert_eq!(decide(&mut shop.client, request()).await, 2);
    // Other values of the key match nothing, as before.
    assert_eq!(
        decide(&mut shop.client, request_one("unconfigured", &[("k", "w")])).await,
        1
    );
    let (_, text) = harness::http_get(shop.running.http_addr, "/metrics").await;
    assert_eq!(
        metric(
            &text,
            "floodgate_rule_over_limit_total",
            r#"domain="unconfigured",rule="unconfigured.(admin override)""#
        ),
        Some(1.0),
        "{text}"
    );
    shop.running.shutdown().await.expect("shutdown");
}
