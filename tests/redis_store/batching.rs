//! Batched exact counting: concurrent requests share script calls, each
//! still atomic and all-or-nothing, and one request's bad key fails only
//! that request. Redis is held with `CLIENT PAUSE` so that requests queue
//! behind a call in flight, as they do under load.

use std::sync::Arc;
use std::time::{Duration, Instant};

use floodgate::limit::{Algorithm, Unit};
use floodgate::store::redis::{RedisOptions, RedisStore, TimeSource};
use floodgate::store::{CounterStore, Outcomes, StoreError};

use super::{T0, check, limit};
use crate::harness::redis::RedisServer;

async fn store(server: &RedisServer, prefix: &str, connections: usize) -> Arc<RedisStore> {
    Arc::new(
        RedisStore::connect(RedisOptions {
            key_prefix: prefix.to_owned(),
            time_source: TimeSource::Caller,
            over_limit_cache: 0,
            connections,
            // Longer than the pauses below: a paused call is late, not failed.
            timeout: Duration::from_secs(10),
            ..RedisOptions::new(server.url())
        })
        .await
        .expect("connects"),
    )
}

/// Waits until the store has sent `batches` batches.
async fn wait_for_batches(store: &RedisStore, batches: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.batch_stats().0 < batches {
        assert!(
            Instant::now() < deadline,
            "the store never sent batch {batches}: {:?}",
            store.batch_stats()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Twenty requests queued behind a call in flight go out as one batch; the
/// one whose key holds a hash gets Redis's WRONGTYPE error, and the other
/// nineteen are counted and answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_key_fails_only_its_own_request_in_a_batch() {
    let server = RedisServer::start();
    let store = store(&server, "batch:", 1).await;
    let l = limit(Algorithm::FixedWindow, 1000, Unit::Hour, 1, 1000);

    // "bad" becomes a hash under its counter's Redis key.
    let mut out = Outcomes::new();
    store
        .apply(&[check("bad", l, 1, 0, false)], T0, &mut out)
        .await
        .expect("answers");
    let name = server.cli(&["--raw", "KEYS", "batch:*bad"]);
    let name = name.trim();
    assert!(name.ends_with("bad"), "the counter's key: {name:?}");
    server.cli(&["DEL", name]);
    server.cli(&["HSET", name, "field", "value"]);

    let (batches, requests) = store.batch_stats();
    server.cli(&["CLIENT", "PAUSE", "1000", "ALL"]);
    let first = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let mut out = Outcomes::new();
            store
                .apply(&[check("first", l, 1, 0, false)], T0, &mut out)
                .await
                .map(|()| out[0].admitted)
        })
    };
    // The first request is in flight, held by the pause: the rest queue.
    wait_for_batches(&store, batches + 1).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = Arc::clone(&store);
        let key = if i == 7 {
            "bad".to_owned()
        } else {
            format!("good{i}")
        };
        tasks.push(tokio::spawn(async move {
            let checks = [check(&key, l, 1, 0, false)];
            let mut out = Outcomes::new();
            let result = store.apply(&checks, T0, &mut out).await;
            (key, result.map(|()| out[0]))
        }));
    }
    assert!(
        first.await.expect("task").expect("answers"),
        "the first request is admitted"
    );
    for task in tasks {
        let (key, result) = task.await.expect("task");
        if key == "bad" {
            match result {
                Err(StoreError::Rejected(message)) => {
                    assert!(message.contains("WRONGTYPE"), "{message}")
                }
                other => panic!("the bad key's request: {other:?}"),
            }
        } else {
            let outcome = result.unwrap_or_else(|e| panic!("{key}: {e}"));
            assert!(outcome.admitted, "{key}: {outcome:?}");
            assert_eq!(outcome.used, 1, "{key}: {outcome:?}");
        }
    }
    assert_eq!(
        store.batch_stats(),
        (batches + 2, requests + 21),
        "the twenty queued requests went out as one batch"
    );
    // The good ones were written; the hash is untouched.
    assert_eq!(
        server
            .cli(&["--raw", "KEYS", "batch:*good*"])
            .lines()
            .count(),
        19
    );
    assert_eq!(server.cli(&["--raw", "TYPE", name]).trim(), "hash");
}

/// Demand of twice every limit, from forty concurrent tasks whose requests
/// are batched: exactly the limit is admitted for each algorithm, and a
/// two-check group is all-or-nothing (its wide counter holds exactly the
/// narrow one's admissions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_concurrent_requests_admit_exactly_what_fits() {
    let server = RedisServer::start();
    let store = store(&server, "exact:", 2).await;
    let fixed = limit(Algorithm::FixedWindow, 50, Unit::Hour, 1, 50);
    let sliding = limit(Algorithm::SlidingWindow, 50, Unit::Hour, 1, 50);
    // Refills one token a day: none during the test (its clock is T0).
    let bucket = limit(Algorithm::TokenBucket, 1, Unit::Day, 1, 50);
    let narrow = limit(Algorithm::FixedWindow, 30, Unit::Hour, 1, 30);
    let wide = limit(Algorithm::FixedWindow, 1000, Unit::Hour, 1, 1000);

    server.cli(&["CLIENT", "PAUSE", "300", "ALL"]);
    let mut tasks = Vec::new();
    for task in 0..40u64 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut admitted = [0u64; 4];
            let mut out = Outcomes::new();
            for i in 0..10u64 {
                let kind = usize::try_from((task + i) % 4).expect("small");
                let checks = match kind {
                    0 => vec![check("fixed", fixed, 1, 0, false)],
                    1 => vec![check("sliding", sliding, 1, 0, false)],
                    2 => vec![check("bucket", bucket, 1, 0, false)],
                    _ => vec![
                        check("wide", wide, 1, 0, false),
                        check("narrow", narrow, 1, 0, false),
                    ],
                };
                store.apply(&checks, T0, &mut out).await.expect("answers");
                // A group is admitted when every check in it is; a check
                // that fits in a denied group reports its own fit.
                if out.iter().all(|o| o.admitted) {
                    admitted[kind] += 1;
                }
            }
            admitted
        }));
    }
    let mut admitted = [0u64; 4];
    for task in tasks {
        for (total, got) in admitted.iter_mut().zip(task.await.expect("task")) {
            *total += got;
        }
    }
    assert_eq!(admitted, [50, 50, 50, 30], "fixed, sliding, bucket, group");
    let mut out = Outcomes::new();
    store
        .apply(&[check("wide", wide, 0, 0, false)], T0, &mut out)
        .await
        .expect("answers");
    assert_eq!(
        out[0].used, 30,
        "the group's wide counter took only admitted hits"
    );
    let (batches, requests) = store.batch_stats();
    assert_eq!(requests, 401);
    assert!(
        batches < requests / 4,
        "requests queued behind the pause were batched: {batches} batches"
    );
}

/// A store whose lanes are gone (they ran on a runtime that has ended)
/// still answers: each request goes alone in a call of its own.
#[test]
fn a_store_whose_lanes_stopped_sends_requests_alone() {
    let server = RedisServer::start();
    let first = tokio::runtime::Runtime::new().expect("a runtime");
    let store = first.block_on(store(&server, "alone:", 1));
    drop(first);
    let second = tokio::runtime::Runtime::new().expect("a runtime");
    let l = limit(Algorithm::FixedWindow, 2, Unit::Hour, 1, 2);
    second.block_on(async {
        let mut out = Outcomes::new();
        for used in 1..=3 {
            store
                .apply(&[check("k", l, 1, 0, false)], T0, &mut out)
                .await
                .expect("answers without a lane");
            assert_eq!(out[0].used, used);
            assert_eq!(out[0].admitted, used <= 2);
        }
    });
    assert_eq!(store.batch_stats(), (0, 0), "no lane carried them");
}
