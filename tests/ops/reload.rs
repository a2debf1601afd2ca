//! Hot reload against a running server: a good file takes effect over gRPC,
//! a bad one keeps the old rules (and says where it is wrong), a Kubernetes
//! ConfigMap-style `..data` symlink swap is seen, so is a swap of the runtime
//! root symlink (the reference's `RUNTIME_WATCH_ROOT=true`), counters of
//! unchanged rules survive, and a server started without rules serves once a
//! load succeeds.

use crate::harness;

use floodgate::server::ReloadOutcome;
use harness::ops::{Setup, decide, eventually, metric, one_rule, start, write_atomically};
use harness::{http_get, http_post, request_one};

const OK: i32 = 1;
const OVER: i32 = 2;

#[tokio::test]
async fn a_good_file_takes_effect_over_grpc() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("rules.yaml");
    std::fs::write(&path, one_rule("ops", "api", "a", 1)).expect("write");
    let server = start(&path, Setup::default()).await;
    let mut client = server.grpc().await;

    assert_eq!(
        decide(&mut client, request_one("ops", &[("api", "b")])).await,
        OK
    );
    assert_eq!(
        decide(&mut client, request_one("ops", &[("api", "b")])).await,
        OK
    );

    // A second rule, for `api=b`, limited to 0: every request is over.
    let both = format!(
        "{}  - key: api\n    value: b\n    rate_limit:\n      unit: day\n      requests_per_unit: 0\n",
        one_rule("ops", "api", "a", 1)
    );
    write_atomically(&path, &both);
    eventually("the new rule to deny api=b", || {
        let mut client = client.clone();
        async move { decide(&mut client, request_one("ops", &[("api", "b")])).await == OVER }
    })
    .await;

    let status = server.running.reload_status().expect("a reload status");
    assert_eq!(status.last_outcome, Some(ReloadOutcome::Success));
    assert!(status.successes >= 2, "{status:?}");
    let text = server.metrics().await;
    assert_eq!(
        metric(&text, "floodgate_config_last_reload_success", ""),
        Some(1.0)
    );
    server.running.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_bad_file_keeps_the_old_rules_and_names_the_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("rules.yaml");
    std::fs::write(&path, one_rule("ops", "api", "a", 1)).expect("write");
    let server = start(&path, Setup::default()).await;
    let mut client = server.grpc().await;

    // Line 6 has a unit that does not exist.
    let bad = one_rule("ops", "api", "a", 1).replace("unit: day", "unit: fortnight");
    write_atomically(&path, &bad);
    eventually("the failed reload to be recorded", || {
        let status = server.running.reload_status();
        async move { status.is_some_and(|s| s.last_outcome == Some(ReloadOutcome::Failure)) }
    })
    .await;

    let status = server.running.reload_status().expect("a reload status");
    let error = status.last_error.clone().unwrap_or_default();
    let expected = format!("{}:6", path.display());
    assert!(error.contains(&expected), "{error} should name {expected}");
    assert!(error.contains("fortnight"), "{error}");
    assert!(status.version.is_some(), "the old version still serves");

    // The old rule still serves: one request, then over.
    assert_eq!(
        decide(&mut client, request_one("ops", &[("api", "a")])).await,
        OK
    );
    assert_eq!(
        decide(&mut client, request_one("ops", &[("api", "a")])).await,
        OVER
    );

    let text = server.metrics().await;
    assert_eq!(
        metric(
            &text,
            "floodgate_config_reloads_total",
            r#"outcome="failure""#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "floodgate_config_last_reload_success", ""),
        Some(0.0)
    );

    // The admin server shows the same status, and a forced reload of the
    // still-bad file is a 422.
    let (code, body) = http_get(server.admin(), "/reload").await;
    assert_eq!(code, 200);
    assert!(body.contains("\"last_outcome\":\"failure\""), "{body}");
    let (code, _) = http_post(server.admin(), "/reload", "").await;
    assert_eq!(code, 422);
    server.running.shutdown().await.expect("clean shutdown");
}

#[cfg(unix)]
#[tokio::test]
async fn a_configmap_symlink_swap_is_reloaded() {
    use std::os::unix::fs::symlink;

    // The layout kubelet writes: a timestamped dir, `..data` pointing at
    // it, and the visible file as a symlink through `..data`.
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    std::fs::create_dir(root.join("..2026_01_01_00_00_00.1")).expect("mkdir");
    std::fs::write(
        root.join("..2026_01_01_00_00_00.1/rules.yaml"),
        one_rule("ops", "api", "a", 5),
    )
    .expect("write");
    symlink("..2026_01_01_00_00_00.1", root.join("..data")).expect("symlink ..data");
    symlink("..data/rules.yaml", root.join("rules.yaml")).expect("symlink rules.yaml");

    let server = start(root, Setup::default()).await;
    let (_, before) = http_get(server.admin(), "/rlconfig").await;
    assert!(
        before.contains("ops.api_a: unit=DAY requests_per_unit=5"),
        "{before}"
    );

    // The update: a new timestamped dir, a temp symlink to it, renamed over
    // `..data` in one atomic step.
    std::fs::create_dir(root.join("..2026_01_01_00_01_00.2")).expect("mkdir");
    std::fs::write(
        root.join("..2026_01_01_00_01_00.2/rules.yaml"),
        one_rule("ops", "api", "a", 7),
    )
    .expect("write");
    symlink("..2026_01_01_00_01_00.2", root.join("..data_tmp")).expect("symlink ..data_tmp");
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).expect("swap ..data");
    std::fs::remove_dir_all(root.join("..2026_01_01_00_00_00.1")).expect("remove old dir");

    let admin = server.admin();
    eventually("the swapped config to be served", || async move {
        let (_, body) = http_get(admin, "/rlconfig").await;
        body.contains("ops.api_a: unit=DAY requests_per_unit=7")
    })
    .await;
    server.running.shutdown().await.expect("clean shutdown");
}

/// The reference's `RUNTIME_WATCH_ROOT=true` deployment: releases in their
/// own directories and a `current` symlink swapped atomically to publish
/// one. The swap is seen through the root's parent, and the config watch
/// then follows the new release (an edit inside it is seen too).
#[tokio::test]
async fn a_runtime_root_symlink_swap_is_reloaded() {
    use std::os::unix::fs::symlink;

    let dir = tempfile::tempdir().expect("temp dir");
    let release = |name: &str, per_day: u32| {
        let config = dir
            .path()
            .join("releases")
            .join(name)
            .join("ratelimit/config");
        std::fs::create_dir_all(&config).expect("mkdir");
        let file = config.join("rules.yaml");
        std::fs::write(&file, one_rule("root", "api", "a", per_day)).expect("write");
        file
    };
    release("v1", 1);
    let current = dir.path().join("current");
    symlink(dir.path().join("releases/v1"), &current).expect("symlink current");

    let server = start(
        &current.join("ratelimit/config"),
        Setup {
            watch_root: Some(current.clone()),
            ..Setup::default()
        },
    )
    .await;
    let admin = server.admin();
    let (_, before) = http_get(admin, "/rlconfig").await;
    assert!(before.contains("requests_per_unit=1"), "{before}");

    let v2 = release("v2", 2);
    let temp = dir.path().join("current_tmp");
    symlink(dir.path().join("releases/v2"), &temp).expect("symlink current_tmp");
    std::fs::rename(&temp, &current).expect("swap current");
    eventually("the new release to be served", || async move {
        http_get(admin, "/rlconfig")
            .await
            .1
            .contains("requests_per_unit=2")
    })
    .await;

    write_atomically(&v2, &one_rule("root", "api", "a", 3));
    eventually(
        "an edit inside the new release to be served",
        || async move {
            http_get(admin, "/rlconfig")
                .await
                .1
                .contains("requests_per_unit=3")
        },
    )
    .await;
    server.running.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn counters_of_unchanged_rules_survive_a_reload() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("rules.yaml");
    std::fs::write(&path, one_rule("ops", "api", "a", 3)).expect("write");
    let server = start(&path, Setup::default()).await;
    let mut client = server.grpc().await;
    for _ in 0..3 {
        assert_eq!(
            decide(&mut client, request_one("ops", &[("api", "a")])).await,
            OK
        );
    }

    // Raise the limit and add an unrelated rule: the count of 3 carries on.
    let raised = format!(
        "{}  - key: other\n    rate_limit:\n      unit: day\n      requests_per_unit: 1\n",
        one_rule("ops", "api", "a", 5)
    );
    write_atomically(&path, &raised);
    let admin = server.admin();
    eventually("the raised limit to be served", || async move {
        let (_, body) = http_get(admin, "/rlconfig").await;
        body.contains("requests_per_unit=5")
    })
    .await;

    let (_, usage) = http_get(admin, "/usage?domain=ops&descriptor=api=a").await;
    assert!(usage.contains("\"used\":3"), "{usage}");
    assert!(usage.contains("\"remaining\":2"), "{usage}");
    assert_eq!(
        decide(&mut client, request_one("ops", &[("api", "a")])).await,
        OK
    );
    assert_eq!(
        decide(&mut client, request_one("ops", &[("api", "a")])).await,
        OK
    );
    assert_eq!(
        decide(&mut client, request_one("ops", &[("api", "a")])).await,
        OVER
    );

    // The rule's metric series carried on too.
    let text = server.metrics().await;
    assert_eq!(
        metric(
            &text,
            "floodgate_rule_hits_total",
            r#"domain="ops",rule="ops.api_a""#
        ),
        Some(6.0),
        "{text}"
    );
    server.running.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_server_without_rules_serves_once_a_load_succeeds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config_dir = dir.path().join("rules");
    std::fs::create_dir(&config_dir).expect("mkdir");
    let path = config_dir.join("rules.yaml");
    std::fs::write(&path, "domain: [not, a, string]\n").expect("write");
    let server = start(
        &config_dir,
        Setup {
            without_rules: true,
            ..Setup::default()
        },
    )
    .await;

    let http = server.running.http_addr;
    let (code, body) = http_get(http, "/healthcheck").await;
    assert_eq!((code, body.as_str()), (500, ""));
    assert!(!server.running.health().is_serving());

    std::fs::write(&path, one_rule("ops", "api", "a", 1)).expect("write");
    eventually("/healthcheck to turn OK", || async move {
        http_get(http, "/healthcheck").await == (200, "OK".to_owned())
    })
    .await;
    server.running.shutdown().await.expect("clean shutdown");
}

/// Deploy scripts replace a config directory whole (`rm -rf config && cp -r
/// new config`): the watch inside the deleted directory is gone with it, so
/// the directory's parent is watched too and the watch is renewed; every
/// later change is still seen.
#[tokio::test]
async fn a_deleted_and_recreated_config_directory_is_watched_again() {
    let top = tempfile::tempdir().expect("temp dir");
    let dir = top.path().join("config");
    std::fs::create_dir(&dir).expect("config dir");
    std::fs::write(dir.join("rules.yaml"), one_rule("ops", "api", "a", 1)).expect("write");
    let server = start(&dir, Setup::default()).await;
    let admin = server.admin();
    let served = |n: u32| async move {
        let (_, body) = http_get(admin, "/rlconfig").await;
        body.contains(&format!("requests_per_unit={n},"))
    };

    std::fs::remove_dir_all(&dir).expect("rm -rf config");
    let staged = top.path().join("new");
    std::fs::create_dir(&staged).expect("staging dir");
    std::fs::write(staged.join("rules.yaml"), one_rule("ops", "api", "a", 2)).expect("write");
    std::fs::rename(&staged, &dir).expect("mv new config");
    eventually("the recreated directory's rules to serve", || served(2)).await;

    // The new directory is watched: an edit inside it is seen.
    write_atomically(&dir.join("rules.yaml"), &one_rule("ops", "api", "a", 3));
    eventually("an edit in the recreated directory to serve", || served(3)).await;
    server.running.shutdown().await.expect("clean shutdown");
}

/// Emptying the config directory removes every limit: loudly (counted in
/// `floodgate_config_empty_loads_total`), and not at all with
/// `--refuse-empty-config`, where the reload fails and the rules stay.
#[tokio::test]
async fn an_emptied_config_is_counted_and_can_be_refused() {
    for refuse_empty in [false, true] {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("rules.yaml");
        std::fs::write(&file, one_rule("ops", "api", "a", 1)).expect("write");
        let setup = Setup {
            watch: false,
            refuse_empty,
            ..Setup::default()
        };
        let server = start(dir.path(), setup).await;
        let admin = server.admin();
        std::fs::remove_file(&file).expect("delete the only file");
        let (code, body) = http_post(admin, "/reload", "").await;
        let text = server.metrics().await;
        assert_eq!(
            metric(&text, "floodgate_config_empty_loads_total", ""),
            Some(1.0),
            "{text}"
        );
        let (_, rules) = http_get(admin, "/rlconfig").await;
        if refuse_empty {
            assert_eq!(code, 422, "{body}");
            assert!(body.contains("--refuse-empty-config"), "{body}");
            assert!(rules.contains("ops.api_a"), "the rules stay: {rules}");
        } else {
            assert_eq!(code, 200, "{body}");
            assert!(!rules.contains("ops.api_a"), "every rule is gone: {rules}");
        }
        server.running.shutdown().await.expect("clean shutdown");
    }
}
