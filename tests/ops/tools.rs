//! A newcomer without the test suite's programs learns of all of them from
//! the first failure: one message naming every missing program and the one
//! command that installs them, with no panic location or backtrace.

#![cfg(unix)]

use crate::harness;

use std::process::Command;

use harness::tools::{TOOLS, find_with};

#[test]
fn every_missing_program_is_named_in_one_message_without_a_backtrace() {
    let empty = tempfile::tempdir().expect("an empty directory for PATH");
    let this_binary = std::env::current_exe().expect("the test binary");
    // One test that needs a program, run by this very test binary with
    // nothing on its PATH.
    let mut run = Command::new(this_binary);
    run.args([
        "dashboard_browser::the_shipped_rules_fit_a_1400_px_window",
        "--exact",
    ])
    .env("PATH", empty.path())
    .env("RUST_BACKTRACE", "1");
    for tool in TOOLS {
        run.env_remove(tool.env);
    }
    let out = run.output().expect("run the test binary");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert_eq!(
        text.matches("missing programs the tests need").count(),
        1,
        "{text}"
    );
    for tool in TOOLS {
        assert!(text.contains(tool.name), "{} not named: {text}", tool.name);
        assert!(text.contains(tool.env), "{} not named: {text}", tool.env);
    }
    assert!(
        text.contains("sudo apt-get install redis-server chromium prometheus"),
        "{text}"
    );
    assert!(
        !text.contains("panicked at") && !text.contains("stack backtrace"),
        "{text}"
    );
}

#[test]
fn programs_are_found_on_the_path_or_in_their_variable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let promtool = TOOLS
        .iter()
        .find(|tool| tool.name == "promtool")
        .expect("promtool is listed");
    let fake = dir.path().join("promtool");
    std::fs::write(&fake, "#!/bin/sh\n").expect("write");
    let path_is = |dir: &std::path::Path| {
        let dir = dir.as_os_str().to_owned();
        move |name: &str| (name == "PATH").then(|| dir.clone())
    };
    // Not executable: not a program.
    assert_eq!(find_with(promtool, path_is(dir.path())), None);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    assert_eq!(find_with(promtool, path_is(dir.path())), Some(fake.clone()));
    // Its variable wins over PATH.
    let elsewhere = tempfile::tempdir().expect("temp dir");
    let named = elsewhere.path().join("my-promtool");
    std::fs::copy(&fake, &named).expect("copy");
    std::fs::set_permissions(&named, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let var = |name: &str| match name {
        "FLOODGATE_PROMTOOL" => Some(named.as_os_str().to_owned()),
        "PATH" => Some(dir.path().as_os_str().to_owned()),
        _ => None,
    };
    assert_eq!(find_with(promtool, var), Some(named.clone()));
}
