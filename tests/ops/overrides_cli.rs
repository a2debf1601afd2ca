//! `floodgate overrides set|list|delete` against a running `floodgate
//! serve`: the one command an operator types to change a customer's limit,
//! with the token, the change log and the overrides file.

#![cfg(unix)]

use std::process::{Command, Output};

use crate::harness;

use harness::process::spawn_serve_in;

const BIN: &str = env!("CARGO_BIN_EXE_floodgate");
const TOKEN: &str = "cli-token";

fn overrides(admin: std::net::SocketAddr, token: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(["overrides", "--admin-addr", &admin.to_string()])
        .env_remove("FLOODGATE_ADMIN_TOKEN")
        .env_remove("FLOODGATE_ADMIN_ADDR")
        .env("USER", "ops-alice");
    if let Some(token) = token {
        command.args(["--admin-token", token]);
    }
    command
        .args(args)
        .output()
        .expect("run floodgate overrides")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn an_operator_sets_lists_and_deletes_an_override_from_the_shell() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("rules.yaml");
    std::fs::write(
        &config,
        "domain: shop\ndescriptors:\n  - key: customer\n    rate_limit: {unit: minute, requests_per_unit: 3}\n",
    )
    .expect("write");
    let file = dir.path().join("overrides.json");
    let serve = spawn_serve_in(
        dir.path(),
        &[
            "--config",
            config.to_str().expect("utf-8 path"),
            "--admin-token",
            TOKEN,
            "--overrides-file",
            file.to_str().expect("utf-8 path"),
        ],
    );
    let set = [
        "set",
        "--domain",
        "shop",
        "--entry",
        "customer=acme",
        "--limit",
        "100/hour,name=sustained",
        "--limit",
        "10/minute,algorithm=token_bucket,burst=20,name=burst",
    ];
    let denied = overrides(serve.admin, None, &set);
    assert_eq!(denied.status.code(), Some(1));
    assert!(
        text(&denied.stderr).contains("401"),
        "{}",
        text(&denied.stderr)
    );

    let done = overrides(serve.admin, Some(TOKEN), &set);
    assert_eq!(done.status.code(), Some(0), "{}", text(&done.stderr));
    assert!(
        text(&done.stdout).contains("token_bucket"),
        "{}",
        text(&done.stdout)
    );
    assert!(
        std::fs::read_to_string(&file)
            .expect("file")
            .contains("acme")
    );

    let listed = overrides(serve.admin, None, &["list", "--domain", "shop"]);
    assert_eq!(listed.status.code(), Some(0));
    let list: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    assert_eq!(list["overrides"][0]["limits"][1]["burst"], 20);

    let bad = overrides(
        serve.admin,
        Some(TOKEN),
        &[
            "set",
            "--domain",
            "shop",
            "--entry",
            "customer=x",
            "--limit",
            "5/fortnight",
        ],
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stderr).contains("unknown unit"),
        "{}",
        text(&bad.stderr)
    );

    let delete = ["delete", "--domain", "shop", "--entry", "customer=acme"];
    assert_eq!(
        overrides(serve.admin, Some(TOKEN), &delete).status.code(),
        Some(0)
    );
    let again = overrides(serve.admin, Some(TOKEN), &delete);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains("404"));

    // Every change is logged: who, what, before and after.
    let logs = serve.stdout.lock().expect("stdout").join("\n");
    let changes: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("override changed"))
        .collect();
    assert_eq!(changes.len(), 2, "{logs}");
    assert!(
        changes[0].contains("ops-alice@cli") && changes[0].contains("\"before\":\"none\""),
        "{}",
        changes[0]
    );
    assert!(
        changes[1].contains("\"change\":\"delete\"") && changes[1].contains("\"after\":\"none\""),
        "{}",
        changes[1]
    );
}
