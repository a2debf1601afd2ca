//! Operators' overrides shared by a fleet through Redis: an override set on
//! one instance is enforced by the others (they poll a version key), usage
//! counted before the change is kept, and a deletion restores the rule
//! everywhere.

use std::net::SocketAddr;
use std::sync::Arc;

use floodgate::clock::SystemClock;
use floodgate::decide::{RateLimiter, ServiceOptions};
use floodgate::proto::{Code, RateLimitServiceClient};
use floodgate::server::{self, Listeners, OverrideOptions, Running, ServerOptions};
use floodgate::store::redis::{RedisOptions, RedisStore};

use crate::harness;
use crate::harness::redis::RedisServer;
use harness::{http_with, request_one};

const RULES: &str = "\
domain: shop
descriptors:
  - key: customer
    rate_limit: {unit: hour, requests_per_unit: 3}
";

struct Member {
    running: Running,
    admin: SocketAddr,
    client: RateLimitServiceClient<tonic::transport::Channel>,
}

async fn member(server: &RedisServer) -> Member {
    let store = RedisStore::connect(RedisOptions {
        key_prefix: "tenants:".into(),
        timeout: std::time::Duration::from_secs(2),
        ..RedisOptions::new(server.url())
    })
    .await
    .expect("connects");
    let limiter = Arc::new(RateLimiter::new(
        crate::rules(RULES),
        store,
        Arc::new(SystemClock),
        ServiceOptions::default(),
    ));
    let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let running = server::start_with(
        limiter,
        &Listeners {
            grpc: any,
            http: any,
        },
        ServerOptions {
            admin: Some(any),
            overrides: OverrideOptions::default(),
            ..ServerOptions::default()
        },
    )
    .await
    .expect("server starts");
    let admin = running.admin_addr.expect("admin");
    let client = RateLimitServiceClient::connect(format!("http://{}", running.grpc_addr))
        .await
        .expect("client");
    Member {
        running,
        admin,
        client,
    }
}

impl Member {
    /// Waits (up to 5 s; the poll interval is 250 ms) until the instance
    /// reports `limit` for `customer`.
    async fn until_limit(&mut self, customer: &str, limit: u32) {
        for _ in 0..200 {
            if self.limit_of(customer).await == limit {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("the instance never reported a limit of {limit} for {customer}");
    }

    async fn ok(&mut self, customer: &str) -> bool {
        let answer = self
            .client
            .should_rate_limit(request_one("shop", &[("customer", customer)]))
            .await
            .expect("an answer")
            .into_inner();
        answer.overall_code == Code::Ok as i32
    }

    /// The limit the instance reports for `customer`, without counting.
    async fn limit_of(&mut self, customer: &str) -> u32 {
        let mut request = request_one("shop", &[("customer", customer)]);
        request.hits_addend = 0;
        if let Some(descriptor) = request.descriptors.first_mut() {
            descriptor.hits_addend = Some(0);
        }
        let answer = self
            .client
            .should_rate_limit(request)
            .await
            .expect("an answer")
            .into_inner();
        answer
            .statuses
            .first()
            .and_then(|s| s.current_limit.as_ref())
            .map_or(0, |l| l.requests_per_unit)
    }
}

const ACME: &str = r#"{"domain":"shop","entries":[{"key":"customer","value":"acme"}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_override_set_on_one_instance_is_enforced_by_the_fleet() {
    let server = RedisServer::start();
    let mut a = member(&server).await;
    let mut b = member(&server).await;
    assert!(a.ok("acme").await && b.ok("acme").await);

    let body = r#"{"domain":"shop","entries":[{"key":"customer","value":"acme"}],"limits":[{"requests_per_unit":5,"unit":"hour"}]}"#;
    let set = http_with(a.admin, "PUT", "/overrides", Some(body), &[]).await;
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(a.limit_of("acme").await, 5);
    b.until_limit("acme", 5).await;
    // Usage counted under the rule (2) is kept: 3 more fit, fleet-wide.
    assert!(b.ok("acme").await && a.ok("acme").await && b.ok("acme").await);
    assert!(!a.ok("acme").await && !b.ok("acme").await);
    let listed = http_with(b.admin, "GET", "/overrides?domain=shop", None, &[]).await;
    assert_eq!(
        listed.json()["overrides"][0]["limits"][0]["requests_per_unit"],
        5
    );

    // Deleted on the other instance: the rule (3) is back everywhere.
    let deleted = http_with(b.admin, "DELETE", "/overrides", Some(ACME), &[]).await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    a.until_limit("acme", 3).await;
    assert_eq!(b.limit_of("acme").await, 3);

    // A new instance starts with the overrides in Redis.
    let put = http_with(a.admin, "PUT", "/overrides", Some(body), &[]).await;
    assert_eq!(put.status, 200);
    let mut c = member(&server).await;
    assert_eq!(c.limit_of("acme").await, 5);
    for m in [a, b, c] {
        m.running.shutdown().await.expect("shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_on_two_instances_all_reach_both() {
    let server = RedisServer::start();
    let a = member(&server).await;
    let b = member(&server).await;
    let mut puts = Vec::new();
    for n in 0..20 {
        let admin = if n % 2 == 0 { a.admin } else { b.admin };
        puts.push(tokio::spawn(async move {
            let body = format!(
                r#"{{"domain":"shop","entries":[{{"key":"customer","value":"c{n}"}}],"limits":[{{"requests_per_unit":{n},"unit":"hour"}}]}}"#
            );
            http_with(admin, "PUT", "/overrides", Some(&body), &[]).await.status
        }));
    }
    for put in puts {
        assert_eq!(put.await.expect("task"), 200);
    }
    for m in [&a, &b] {
        let mut seen = 0;
        for _ in 0..200 {
            let listed = http_with(m.admin, "GET", "/overrides", None, &[]).await;
            seen = listed.json()["overrides"].as_array().map_or(0, Vec::len);
            if seen == 20 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        assert_eq!(seen, 20, "an instance missed a change made on the other");
    }
    for m in [a, b] {
        m.running.shutdown().await.expect("shutdown");
    }
}
