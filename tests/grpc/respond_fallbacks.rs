//! Identity fallback groups over gRPC: only the first shape of a group that
//! the request carries is counted and enforced; the group's other
//! descriptors are answered OK and never counted.

use crate::harness;

use floodgate::proto::Code;
use harness::*;
use serde_json::json;

const NOW: u64 = secs(HOUR_START + 17);

const YAML: &str = "\
domain: fb
fallbacks:
  - name: identity
    order: [[user, seller], [user], [remote_address]]
descriptors:
  - key: user
    rate_limit: {name: user, unit: minute, requests_per_unit: 2}
    descriptors:
      - key: seller
        rate_limit: {name: user_seller, unit: minute, requests_per_unit: 2}
  - key: remote_address
    rate_limit: {name: ip, unit: minute, requests_per_unit: 2}
  - key: path
    rate_limit: {name: path, unit: minute, requests_per_unit: 100}
";

const USER_SELLER: &[(&str, &str)] = &[("user", "u1"), ("seller", "s1")];
const USER: &[(&str, &str)] = &[("user", "u1")];
const IP: &[(&str, &str)] = &[("remote_address", "10.0.0.1")];
const PATH: &[(&str, &str)] = &[("path", "/bookings")];

#[tokio::test]
async fn only_the_first_present_shape_is_counted() {
    let mut h = TestServer::yaml_at(YAML, NOW).await;
    // All three shapes present (in any order): only [user, seller] counts;
    // descriptors outside the group are unaffected.
    let r = h.should("fb", &[IP, USER, PATH, USER_SELLER]).await;
    assert_eq!(remaining(&r), [0, 0, 99, 1]);
    assert!(r.statuses[0].current_limit.is_none());
    assert!(r.statuses[1].current_limit.is_none());
    assert_eq!(
        r.statuses[3]
            .current_limit
            .as_ref()
            .map(|l| l.name.as_str()),
        Some("user_seller")
    );
    assert_eq!(
        metadata(&r)["descriptors"],
        json!([
            {"code": "OK", "fallback": "identity"},
            {"code": "OK", "fallback": "identity"},
            {"code": "OK", "rule": "fb.path", "limit": "path", "remaining": 99, "reset_seconds": 43, "used": 1},
            {"code": "OK", "rule": "fb.user.seller", "limit": "user_seller", "remaining": 1, "reset_seconds": 43, "used": 1},
        ])
    );
    h.should("fb", &[USER_SELLER, USER, IP]).await;
    let r = h.should("fb", &[USER_SELLER, USER, IP]).await;
    assert!(is_over(&r));
    assert_eq!(codes(&r), [Code::OverLimit, Code::Ok, Code::Ok]);

    // [user] and [remote_address] were never counted: both have their
    // whole limit left when they are the preferred shape.
    let r = h.should("fb", &[IP, USER]).await;
    assert!(!is_over(&r));
    assert_eq!(remaining(&r), [0, 1]);
    assert!(r.statuses[0].current_limit.is_none());
    let r = h.should("fb", &[IP]).await;
    assert_eq!(remaining(&r), [1]);
    let r = h.should("fb", &[IP]).await;
    assert_eq!(remaining(&r), [0]);
    let r = h.should("fb", &[IP]).await;
    assert!(is_over(&r));
    // The user's own counter is separate from (user, seller)'s and from the IP's.
    let r = h.should("fb", &[USER, IP]).await;
    assert_eq!(codes(&r), [Code::Ok, Code::Ok]);
    assert_eq!(remaining(&r), [0, 0]);
    let r = h.should("fb", &[USER, IP]).await;
    assert_eq!(codes(&r), [Code::OverLimit, Code::Ok]);
    h.shutdown().await;
}

#[tokio::test]
async fn a_domain_without_fallbacks_counts_every_descriptor() {
    let without = YAML.replace(
        "fallbacks:\n  - name: identity\n    order: [[user, seller], [user], [remote_address]]\n",
        "",
    );
    let mut h = TestServer::yaml_at(&without, NOW).await;
    let r = h.should("fb", &[USER_SELLER, USER, IP]).await;
    assert_eq!(remaining(&r), [1, 1, 1]);
    h.shutdown().await;
}
