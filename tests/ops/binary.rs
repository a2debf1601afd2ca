//! The `floodgate serve` binary: SIGHUP reloads the rules (with the file
//! watcher off, so only the signal can have done it), a bad file on SIGHUP
//! keeps the old rules, and `--force-start-without-initial-config` starts
//! without rules and serves once the file is fixed.

#![cfg(unix)]

use crate::harness;

use std::time::Duration;

use harness::http_get;
use harness::ops::{decide, eventually, metric, one_rule};
use harness::process::spawn_serve;

#[tokio::test]
async fn sighup_reloads_the_rules() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("rules.yaml");
    std::fs::write(&path, one_rule("bin", "api", "a", 1)).expect("write");
    let process = spawn_serve(&[
        "--config",
        path.to_str().expect("a UTF-8 path"),
        "--config-watch",
        "false",
        "--log-level",
        "info",
    ]);
    let (http, admin) = (process.http, process.admin);

    let (_, before) = http_get(admin, "/rlconfig").await;
    assert_eq!(
        before,
        "bin.api_a: unit=DAY requests_per_unit=1, shadow_mode: false\n"
    );

    std::fs::write(&path, one_rule("bin", "api", "a", 9)).expect("write");
    process.signal("HUP");
    eventually("SIGHUP to reload the rules", || async move {
        let (_, body) = http_get(admin, "/rlconfig").await;
        body.contains("requests_per_unit=9")
    })
    .await;

    // A bad file on SIGHUP: counted as a failure, the rules stay.
    std::fs::write(&path, "domain: bin\ndescriptors: 3\n").expect("write");
    process.signal("HUP");
    eventually("the failed reload to be counted", || async move {
        let (_, text) = http_get(http, "/metrics").await;
        metric(
            &text,
            "floodgate_config_reloads_total",
            r#"outcome="failure""#,
        ) == Some(1.0)
    })
    .await;
    let (_, after) = http_get(admin, "/rlconfig").await;
    assert!(after.contains("requests_per_unit=9"), "{after}");
    let (code, _) = http_get(http, "/healthcheck").await;
    assert_eq!(code, 200);

    // SIGTERM still shuts it down cleanly.
    process.signal("TERM");
    let mut process = process;
    let status = process.exit_status(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}");
}

/// `--force-start-without-initial-config` (the reference's
/// `FORCE_START_WITHOUT_INITIAL_CONFIG`): a bad config does not stop the
/// start; the server is NOT_SERVING until the file is fixed and reloaded.
#[tokio::test]
async fn force_start_serves_once_the_config_loads() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("rules.yaml");
    std::fs::write(&path, "domain: late\ndescriptors: 3\n").expect("write");
    let process = spawn_serve(&[
        "--config",
        path.to_str().expect("a UTF-8 path"),
        "--force-start-without-initial-config",
        "--log-level",
        "info",
    ]);
    let (http, admin) = (process.http, process.admin);
    let (code, _) = http_get(http, "/healthcheck").await;
    assert_eq!(code, 500, "no rules yet: not serving");
    let (_, rules) = http_get(admin, "/rlconfig").await;
    assert_eq!(rules, "");

    harness::ops::write_atomically(&path, &one_rule("late", "k", "v", 1));
    eventually("the fixed file to load", || async move {
        http_get(http, "/healthcheck").await.0 == 200
    })
    .await;
    let (_, rules) = http_get(admin, "/rlconfig").await;
    assert!(rules.contains("late.k_v"), "{rules}");
    process.signal("TERM");
    let mut process = process;
    let status = process.exit_status(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}");
}

/// A bare `floodgate serve` where there is no `./config` (a container
/// without its ConfigMap, an installed binary) serves the built-in rules
/// and reports that load as the success it is: no error line, `/reload`
/// says success, the reload gauge is 1, and nothing is watched.
#[tokio::test]
async fn a_bare_serve_in_an_empty_directory_loads_the_built_in_rules_cleanly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let process = harness::process::spawn_serve_in(dir.path(), &["--log-level", "debug"]);
    let (http, admin) = (process.http, process.admin);

    let (code, body) = http_get(admin, "/reload").await;
    assert_eq!(code, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).expect("JSON status");
    assert_eq!(status["last_outcome"], "success", "{body}");
    assert_eq!(status["path"], "embedded:", "{body}");
    assert_eq!(status["failures"], 0, "{body}");
    let (_, text) = http_get(http, "/metrics").await;
    assert_eq!(
        metric(&text, "floodgate_config_last_reload_success", ""),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "floodgate_config_reloads_total",
            r#"outcome="success""#
        ),
        Some(1.0),
        "loaded once at start: {text}"
    );
    let (_, rules) = http_get(admin, "/rlconfig").await;
    assert!(rules.contains("xola."), "{rules}");

    // Reloading the built-in rules succeeds too.
    let (code, body) = harness::http_post(admin, "/reload", "").await;
    assert_eq!(code, 200, "{body}");

    let logs = process.stdout.lock().expect("stdout lock").clone();
    let errors: Vec<&String> = logs
        .iter()
        .filter(|line| line.contains(r#""level":"ERROR""#))
        .collect();
    assert!(errors.is_empty(), "error lines: {errors:#?}");
    assert!(
        !logs.iter().any(|line| line.contains("watching")),
        "the built-in rules are not watched: {logs:#?}"
    );
    assert!(
        logs.iter().any(|line| line.contains("config loaded")),
        "{logs:#?}"
    );
}

/// `floodgate serve` with a Redis that is not there (yet) starts and serves
/// by its store-error policy instead of exiting, so pods starting in any
/// order do not crash-loop.
#[tokio::test]
async fn serve_starts_while_redis_is_unreachable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("rules.yaml");
    std::fs::write(&path, one_rule("bin", "api", "a", 1)).expect("write");
    let url = format!("redis://127.0.0.1:{}", harness::process::free_port());
    let process = spawn_serve(&[
        "--config",
        path.to_str().expect("a UTF-8 path"),
        "--store",
        &url,
    ]);
    let channel = harness::process::connect_plain(process.grpc.port()).await;
    let mut client = floodgate::proto::RateLimitServiceClient::new(channel);
    // Fail open (the default): OK, nothing counted, twice over a limit of 1.
    for _ in 0..2 {
        let request = harness::request_one("bin", &[("api", "a")]);
        assert_eq!(decide(&mut client, request).await, 1, "OK by the policy");
    }
    let (code, _) = http_get(process.http, "/healthcheck").await;
    assert_eq!(code, 200, "fail-open keeps serving");
    let logs = process.stdout.lock().expect("stdout lock").clone();
    assert!(
        logs.iter()
            .any(|l| l.contains("connecting in the background")),
        "{logs:#?}"
    );
}

/// `GRPC_MAX_CONNECTION_AGE`: an HTTP/2 connection older than the age is
/// told to go away (a GOAWAY frame), so Envoy reconnects and a fleet that
/// scaled out gets its share of connections; after the grace it is closed.
#[tokio::test]
async fn aged_grpc_connections_are_told_to_go_away() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("rules.yaml");
    std::fs::write(&path, one_rule("bin", "api", "a", 1)).expect("write");
    let process = harness::process::spawn_serve_in(
        dir.path(),
        &[
            "--config",
            path.to_str().expect("a UTF-8 path"),
            "--grpc-max-connection-age",
            "1s",
            "--grpc-max-connection-age-grace",
            "1s",
        ],
    );
    let mut stream = tokio::net::TcpStream::connect(process.grpc)
        .await
        .expect("connect");
    // The client preface and an empty SETTINGS frame.
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("preface");
    let read_frames = async {
        let mut frame_types = Vec::new();
        loop {
            let mut header = [0u8; 9];
            if stream.read_exact(&mut header).await.is_err() {
                return frame_types; // closed
            }
            let length =
                usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
            let mut payload = vec![0u8; length];
            if stream.read_exact(&mut payload).await.is_err() {
                return frame_types;
            }
            if header[3] == 0x4 && header[4] & 0x1 == 0 {
                // Acknowledge the server's SETTINGS, as a client must.
                let _ = stream
                    .write_all(b"\x00\x00\x00\x04\x01\x00\x00\x00\x00")
                    .await;
            }
            frame_types.push(header[3]);
        }
    };
    // A bound on a hang, not a speed assertion.
    let frame_types = tokio::time::timeout(Duration::from_secs(60), read_frames)
        .await
        .expect("the aged connection is closed");
    assert!(
        frame_types.contains(&0x7),
        "a GOAWAY frame before the close: {frame_types:?}"
    );
}
