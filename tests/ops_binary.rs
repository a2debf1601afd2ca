//! The `floodgate serve` binary: SIGHUP reloads the rules (with the file
//! watcher off, so only the signal can have done it), and a bad file on
//! SIGHUP keeps the old rules.

#![cfg(unix)]

mod harness;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::http_get;
use harness::ops::{eventually, metric, one_rule};

/// Kills the child if a test fails before shutting it down.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// Starts the binary on free ports and reads the addresses from its
/// "floodgate serving" log line.
fn serve(config: &std::path::Path) -> (Serve, SocketAddr, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_floodgate"))
        .args(["serve", "--config"])
        .arg(config)
        .args([
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
            "--config-watch",
            "false",
            "--log-format",
            "json",
            "--log-level",
            "info",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start floodgate");
    let stdout = child.stdout.take().expect("piped stdout");
    let child = Serve(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut lines = BufReader::new(stdout).lines();
    loop {
        assert!(Instant::now() < deadline, "no 'floodgate serving' line");
        let Some(Ok(line)) = lines.next() else {
            panic!("floodgate exited before serving");
        };
        let Ok(log) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if log["fields"]["message"] != "floodgate serving" {
            continue;
        }
        let addr = |name: &str| {
            log["fields"][name]
                .as_str()
                .and_then(|text| text.parse().ok())
                .expect("an address in the log line")
        };
        let (http, admin) = (addr("http"), addr("admin"));
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        return (child, http, admin);
    }
}

#[tokio::test]
async fn sighup_reloads_the_rules() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("rules.yaml");
    std::fs::write(&path, one_rule("bin", "api", "a", 1)).expect("write");
    let (child, http, admin) = serve(&path);

    let (_, before) = http_get(admin, "/rlconfig").await;
    assert_eq!(
        before,
        "bin.api_a: unit=DAY requests_per_unit=1, shadow_mode: false\n"
    );

    std::fs::write(&path, one_rule("bin", "api", "a", 9)).expect("write");
    signal(&child.0, "HUP");
    eventually("SIGHUP to reload the rules", || async move {
        let (_, body) = http_get(admin, "/rlconfig").await;
        body.contains("requests_per_unit=9")
    })
    .await;

    // A bad file on SIGHUP: counted as a failure, the rules stay.
    std::fs::write(&path, "domain: bin\ndescriptors: 3\n").expect("write");
    signal(&child.0, "HUP");
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
    signal(&child.0, "TERM");
    let mut child = child;
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "floodgate did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
}
