//! The `floodgate` binary: `check` summarises a valid config and names the
//! file, line and reason of an invalid one; `serve` refuses a bad config,
//! serves a good one over gRPC and stops cleanly on SIGTERM.

#![cfg(unix)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::harness;

use floodgate::proto::{
    Code, Entry, RateLimitDescriptor, RateLimitRequest, RateLimitServiceClient,
};

const BIN: &str = env!("CARGO_BIN_EXE_floodgate");

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

fn check(config: &Path) -> Output {
    Command::new(BIN)
        .args(["check", "--config"])
        .arg(config)
        .env_remove("FLOODGATE_CONFIG")
        .env_remove("MERGE_DOMAIN_CONFIG")
        .output()
        .expect("run floodgate check")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const GOOD_A: &str = "\
domain: alpha
descriptors:
  - key: user
    rate_limit: { unit: minute, requests_per_unit: 10 }
  - key: path
    value: /api/*
    descriptors:
      - key: method
        value: GET
        rate_limit: { unit: second, requests_per_unit: 5 }
";

const GOOD_B: &str = "\
domain: beta
descriptors:
  - key: tenant
    rate_limit: { unlimited: true }
";

#[test]
fn check_a_valid_directory_exits_0_with_one_line_per_domain() {
    let dir = tempfile::tempdir().expect("temp dir");
    write(dir.path(), "a.yaml", GOOD_A);
    write(dir.path(), "b.yml", GOOD_B);
    let out = check(dir.path());
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].contains("alpha"), "{stdout}");
    assert!(lines[1].contains("beta"), "{stdout}");
    // alpha has two rules (user, and path/method) two levels deep.
    assert!(lines[0].contains("2 rules"), "{stdout}");
}

/// `check` on one bad file: non-zero, and stderr names `file:line` and the reason.
fn assert_rejected(yaml: &str, line: usize, reason: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write(dir.path(), "bad.yaml", yaml);
    let out = check(&path);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "expected failure: {out:?}");
    let place = format!("bad.yaml:{line}");
    assert!(
        stderr.contains(&place),
        "stderr should name {place}:\n{stderr}"
    );
    assert!(
        stderr.contains(reason),
        "stderr should say {reason:?}:\n{stderr}"
    );
    // The whole directory is refused too.
    let out = check(dir.path());
    assert!(!out.status.success(), "directory with a bad file: {out:?}");
    assert!(text(&out.stderr).contains(&place), "{out:?}");
}

#[test]
fn check_rejects_an_unknown_key() {
    assert_rejected(
        "\
domain: d
descriptors:
  - key: k
    rate_limt:
      unit: minute
      requests_per_unit: 1
",
        4,
        "unknown key 'rate_limt'",
    );
}

#[test]
fn check_rejects_a_bad_unit() {
    assert_rejected(
        "\
domain: d
descriptors:
  - key: k
    rate_limit:
      unit: fortnight
      requests_per_unit: 1
",
        5,
        "invalid rate limit unit 'fortnight'",
    );
}

#[test]
fn check_rejects_a_duplicate_key_value() {
    assert_rejected(
        "\
domain: d
descriptors:
  - key: k
    value: v
    rate_limit: { unit: minute, requests_per_unit: 1 }
  - key: k
    value: v
    rate_limit: { unit: hour, requests_per_unit: 2 }
",
        6,
        "duplicate descriptor composite key",
    );
}

#[test]
fn check_rejects_an_empty_domain() {
    assert_rejected(
        "\
domain: \"\"
descriptors:
  - key: k
    rate_limit: { unit: minute, requests_per_unit: 1 }
",
        1,
        "empty domain",
    );
}

#[test]
fn serve_refuses_a_bad_config_with_the_same_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write(
        dir.path(),
        "bad.yaml",
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: { unit: fortnight, requests_per_unit: 1 }\n",
    );
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .args(harness::process::ANY_LOOPBACK_PORTS)
        .stdin(Stdio::null())
        .output()
        .expect("run floodgate serve");
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(stderr.contains("bad.yaml:4"), "{stderr}");
    assert!(
        stderr.contains("invalid rate limit unit 'fortnight'"),
        "{stderr}"
    );
}

/// `GET /healthcheck` status, or `None` when the connection fails.
fn healthcheck(addr: SocketAddr) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream
        .write_all(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer.split(' ').nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_answers_grpc_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    write(
        dir.path(),
        "rules.yaml",
        "domain: live\ndescriptors:\n  - key: k\n    rate_limit: { unit: day, requests_per_unit: 1 }\n",
    );
    let process = harness::process::spawn_serve(&[
        "--config",
        dir.path().to_str().expect("a UTF-8 path"),
        "--config-watch",
        "false",
        "--log-level",
        "info",
    ]);
    let (grpc, http) = (process.grpc, process.http);

    // Readiness: a bounded number of polls of the health endpoint.
    let mut healthy = false;
    for _ in 0..100 {
        if healthcheck(http) == Some(200) {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(healthy, "/healthcheck never answered 200");

    let mut client = RateLimitServiceClient::connect(format!("http://{grpc}"))
        .await
        .expect("connect");
    let ask = || RateLimitRequest {
        domain: "live".to_owned(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![Entry {
                key: "k".to_owned(),
                value: "v".to_owned(),
            }],
            ..RateLimitDescriptor::default()
        }],
        hits_addend: 0,
    };
    let first = client
        .should_rate_limit(ask())
        .await
        .expect("answer")
        .into_inner();
    assert_eq!(first.overall_code, Code::Ok as i32);
    assert_eq!(
        first.statuses[0]
            .current_limit
            .as_ref()
            .map(|l| l.requests_per_unit),
        Some(1)
    );
    let second = client
        .should_rate_limit(ask())
        .await
        .expect("answer")
        .into_inner();
    assert_eq!(second.overall_code, Code::OverLimit as i32);
    drop(client);

    process.signal("TERM");
    let mut process = process;
    // Bounded wait for the exit (a deadline, not a timing assertion).
    let status = process.exit_status(Duration::from_secs(20)).await;
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn check_help_lists_both_subcommands() {
    let out = Command::new(BIN)
        .arg("--help")
        .output()
        .expect("run --help");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("serve") && stdout.contains("check"),
        "{stdout}"
    );
}

/// `check` prints the warnings `serve` logs, and `--strict` fails on them.
#[test]
fn check_prints_warnings_and_strict_fails_on_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A key given twice in one mapping: the reference keeps the last one.
    let config = write(
        dir.path(),
        "twice.yaml",
        "domain: w\ndescriptors:\n  - key: k\n    rate_limit: { unit: minute, requests_per_unit: 1 }\n    rate_limit: { unit: minute, requests_per_unit: 2 }\n",
    );
    let out = check(&config);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("warning: "), "{stderr}");
    assert!(stderr.contains("twice.yaml:5"), "{stderr}");
    assert!(text(&out.stdout).contains("w"), "the summary still prints");

    let strict = Command::new(BIN)
        .args(["check", "--strict", "--config"])
        .arg(&config)
        .env_remove("FLOODGATE_CONFIG")
        .output()
        .expect("run floodgate check --strict");
    assert_eq!(strict.status.code(), Some(1), "{}", text(&strict.stderr));
    assert!(
        text(&strict.stderr).contains("--strict"),
        "{}",
        text(&strict.stderr)
    );

    // Without warnings, --strict passes.
    let clean = write(dir.path(), "clean.yaml", GOOD_B);
    let strict = Command::new(BIN)
        .args(["check", "--strict", "--config"])
        .arg(&clean)
        .output()
        .expect("run floodgate check --strict");
    assert!(strict.status.success(), "{}", text(&strict.stderr));
}

/// `check` where there is no `./config` checks the built-in rules, and says
/// so rather than passing silently.
#[test]
fn check_without_a_config_says_it_checks_the_built_in_rules() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(BIN)
        .arg("check")
        .current_dir(dir.path())
        .env_remove("FLOODGATE_CONFIG")
        .env_remove("RUNTIME_ROOT")
        .output()
        .expect("run floodgate check");
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("built into the binary"), "{stderr}");
    assert!(text(&out.stdout).contains("xola"), "{}", text(&out.stdout));
}

/// An address in use is named, with the flag that set it.
#[test]
fn serve_names_the_address_and_the_flag_when_a_port_is_taken() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write(dir.path(), "rules.yaml", GOOD_A);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let addr = taken.local_addr().expect("its address").to_string();
    for (flag, env) in [
        ("--grpc-addr", "FLOODGATE_GRPC_ADDR"),
        ("--http-addr", "FLOODGATE_HTTP_ADDR"),
        ("--admin-addr", "FLOODGATE_ADMIN_ADDR"),
    ] {
        let mut args = harness::process::ANY_LOOPBACK_PORTS.to_vec();
        let at = args.iter().position(|a| *a == flag).expect("the flag") + 1;
        args[at] = &addr;
        let out = Command::new(BIN)
            .args(["serve", "--config-watch", "false"])
            .args(&args)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .output()
            .expect("run floodgate serve");
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{flag}: {out:?}");
        assert!(
            stderr.contains(&format!("cannot listen on {addr}")),
            "{stderr}"
        );
        assert!(stderr.contains(flag) && stderr.contains(env), "{stderr}");
        assert!(stderr.contains("in use"), "{stderr}");
    }
    drop(taken);
}

/// Logs written to a pipe (or a file) carry no ANSI colour codes.
#[test]
fn text_logs_to_a_pipe_have_no_colour_codes() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write(dir.path(), "rules.yaml", GOOD_A);
    let mut child = Command::new(BIN)
        .args(["serve", "--config-watch", "false", "--log-format", "text"])
        .args(harness::process::ANY_LOOPBACK_PORTS)
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start floodgate");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut seen = Vec::new();
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        let serving = line.contains("floodgate serving");
        seen.push(line);
        if serving {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.last().is_some_and(|l| l.contains("floodgate serving")),
        "{seen:?}"
    );
    assert!(
        seen.iter().all(|line| !line.contains('\u{1b}')),
        "colour codes in a pipe: {seen:?}"
    );
}

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("read README.md")
}

/// The README's "Command line" table names every flag and environment
/// variable that `floodgate serve --help` lists.
#[test]
fn the_readme_command_line_table_lists_every_serve_flag() {
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .expect("run serve --help");
    let help = text(&out.stdout);
    let readme = readme();
    let table = readme
        .split("## Command line")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a Command line section");
    let mut missing = Vec::new();
    for word in help.split_whitespace() {
        let word = word.trim_end_matches(',');
        let flag = word
            .strip_prefix("--")
            .filter(|f| f.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
            .filter(|f| !f.is_empty() && *f != "help");
        if let Some(flag) = flag
            && !table.contains(&format!("`--{flag}`"))
            && !table.contains(&format!("`--{flag} "))
        {
            missing.push(format!("--{flag}"));
        }
    }
    for env in help.split("[env: ").skip(1) {
        let name: String = env
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || *c == '_')
            .collect();
        if !table.contains(&format!("`{name}`")) {
            missing.push(name);
        }
    }
    missing.dedup();
    assert!(missing.is_empty(), "not in the README's table: {missing:?}");
}

/// The README's example of an invalid config prints exactly what `check`
/// prints for it.
#[test]
fn the_readme_config_error_example_is_what_check_prints() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("config")).expect("mkdir");
    write(
        &dir.path().join("config"),
        "acme.yaml",
        "domain: acme\ndescriptors:\n  - key: user\n    rate_limit:\n      requests_per_unit: 10\n      unit: minutes\n",
    );
    let out = Command::new(BIN)
        .args(["check", "--config", "config/"])
        .current_dir(dir.path())
        .env_remove("FLOODGATE_CONFIG")
        .output()
        .expect("run floodgate check");
    assert!(!out.status.success());
    let printed = text(&out.stderr);
    let readme = readme();
    assert!(
        readme.contains(&format!("```\n{}```", printed)),
        "the README does not show:\n{printed}"
    );
    assert!(readme.contains(
        "domain: acme\ndescriptors:\n  - key: user\n    rate_limit:\n      requests_per_unit: 10\n      unit: minutes\n"
    ));
}
