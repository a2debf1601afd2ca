//! The external programs some tests drive, checked all at once.
//!
//! A test that needs one asks [`required`] for its path. When any of them
//! is missing, every such test fails with one message naming *all* the
//! missing programs and the one command that installs them, so a newcomer
//! learns what to install from the first failure, not one tool per run;
//! and without a panic's location line or backtrace, which would bury it.
//! A program is looked up in its variable (`FLOODGATE_CHROMIUM=/opt/...`),
//! else on `$PATH`. Tests never skip for a missing program.

use std::path::{Path, PathBuf};

/// A program the tests run.
pub struct Tool {
    /// Its name on `$PATH`.
    pub name: &'static str,
    /// The variable that may name its path instead.
    pub env: &'static str,
    /// The Debian package that provides it.
    pub package: &'static str,
    /// Which tests run it.
    pub used_by: &'static str,
}

/// Every program any test runs.
pub const TOOLS: &[Tool] = &[
    Tool {
        name: "redis-server",
        env: "FLOODGATE_REDIS_SERVER",
        package: "redis-server",
        used_by: "the Redis store, health and shutdown tests",
    },
    Tool {
        name: "redis-cli",
        env: "FLOODGATE_REDIS_CLI",
        package: "redis-server",
        used_by: "the Redis store, health and shutdown tests",
    },
    Tool {
        name: "chromium",
        env: "FLOODGATE_CHROMIUM",
        package: "chromium",
        used_by: "the dashboard browser tests",
    },
    Tool {
        name: "promtool",
        env: "FLOODGATE_PROMTOOL",
        package: "prometheus",
        used_by: "the alert rules tests",
    },
];

/// Where `tool` is: its variable's path if set, else the first `$PATH`
/// entry holding an executable file of its name.
pub fn find(tool: &Tool) -> Option<PathBuf> {
    find_with(tool, |name| std::env::var_os(name))
}

/// [`find`], reading variables with `var`.
pub fn find_with(tool: &Tool, var: impl Fn(&str) -> Option<std::ffi::OsString>) -> Option<PathBuf> {
    if let Some(path) = var(tool.env) {
        let path = PathBuf::from(path);
        return is_executable(&path).then_some(path);
    }
    let paths = var("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(tool.name))
        .find(|path| is_executable(path))
}

fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        path.metadata()
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}

/// The message for the missing `tools`, or `None` when none is missing.
pub fn missing_message(missing: &[&Tool]) -> Option<String> {
    if missing.is_empty() {
        return None;
    }
    let mut packages: Vec<&str> = missing.iter().map(|tool| tool.package).collect();
    packages.dedup();
    let mut message = String::from("missing programs the tests need:\n");
    for tool in missing {
        message.push_str(&format!(
            "  {:<13} (package {}, for {}; or set {} to its path)\n",
            tool.name, tool.package, tool.used_by, tool.env
        ));
    }
    message.push_str(&format!(
        "install them all with: sudo apt-get install {}\n(.ci/run installs them when missing)",
        packages.join(" ")
    ));
    Some(message)
}

/// The path of the program `name` (one of [`TOOLS`]). When any program of
/// [`TOOLS`] is missing, fails the calling test with one message naming
/// every missing one, and no backtrace.
pub fn required(name: &str) -> PathBuf {
    let found: Vec<(&Tool, Option<PathBuf>)> = TOOLS.iter().map(|t| (t, find(t))).collect();
    let missing: Vec<&Tool> = found
        .iter()
        .filter(|(_, path)| path.is_none())
        .map(|(tool, _)| *tool)
        .collect();
    if let Some(message) = missing_message(&missing) {
        // Captured by the test harness and shown with the failure;
        // `resume_unwind` skips the panic hook, so no location line or
        // backtrace follows it.
        eprintln!("\n{message}\n");
        std::panic::resume_unwind(Box::new(message));
    }
    found
        .into_iter()
        .find(|(tool, _)| tool.name == name)
        .and_then(|(_, path)| path)
        .unwrap_or_else(|| panic!("{name} is not one of harness::tools::TOOLS"))
}
