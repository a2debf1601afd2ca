//! The `floodgate` binary as a child process, free ports, and connecting to
//! a server that is still starting.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ops::any_port;

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A `floodgate` process, killed on drop if still running.
pub struct Binary {
    pub child: Child,
    pub grpc_port: u16,
    pub http_port: u16,
}

impl Binary {
    /// Starts `floodgate serve` with only `env` (plus PATH) in its
    /// environment, so the developer's variables cannot leak in.
    pub fn start(args: &[&str], env: &[(&str, String)], cwd: &Path) -> Binary {
        let grpc_port = free_port();
        let http_port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_floodgate"));
        command
            .arg("serve")
            .args(args)
            .env_clear()
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        let has = |name: &str| env.iter().any(|(k, _)| *k == name);
        if !has("GRPC_PORT") && !args.contains(&"--grpc-addr") {
            command.env("FLOODGATE_GRPC_ADDR", format!("127.0.0.1:{grpc_port}"));
        }
        if !has("PORT") && !args.contains(&"--http-addr") {
            command.env("FLOODGATE_HTTP_ADDR", format!("127.0.0.1:{http_port}"));
        }
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().unwrap();
        Binary {
            child,
            grpc_port,
            http_port,
        }
    }

    /// Sends SIGTERM (or another signal) to this process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for exit, at most `limit` (hang detection only); returns the
    /// status and stderr.
    pub fn wait_exit(&mut self, limit: Duration) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut stderr = String::new();
                if let Some(mut pipe) = self.child.stderr.take() {
                    use std::io::Read;
                    let _ = pipe.read_to_string(&mut stderr);
                }
                return (status, stderr);
            }
            assert!(
                Instant::now() < deadline,
                "floodgate did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connects to a plaintext gRPC port, retrying until the server is up
/// (bounded: hang detection only).
pub async fn connect_plain(port: u16) -> tonic::transport::Channel {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect_timeout(Duration::from_secs(2));
        match endpoint.connect().await {
            Ok(channel) => return channel,
            Err(e) => {
                assert!(Instant::now() < deadline, "server never came up: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// `serve` arguments for free loopback ports on all three listeners.
pub const ANY_LOOPBACK_PORTS: [&str; 6] = [
    "--grpc-addr",
    "127.0.0.1:0",
    "--http-addr",
    "127.0.0.1:0",
    "--admin-addr",
    "127.0.0.1:0",
];

/// A `floodgate serve` process on free loopback ports, killed on drop.
pub struct ServeProcess {
    pub child: Child,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    /// Everything it wrote to stderr so far, line by line.
    pub stderr: Arc<std::sync::Mutex<Vec<String>>>,
    /// Everything it wrote to stdout (its JSON log lines) so far.
    pub stdout: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `floodgate serve` with `args` on free loopback ports (gRPC, HTTP,
/// admin) and JSON logs, and reads the bound addresses from its
/// "floodgate serving" log line.
pub fn spawn_serve(args: &[&str]) -> ServeProcess {
    spawn_serve_in(Path::new("."), args)
}

/// [`spawn_serve`] in the working directory `cwd`, with no floodgate or
/// reference config variables inherited from the test's environment.
pub fn spawn_serve_in(cwd: &Path, args: &[&str]) -> ServeProcess {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_floodgate"))
        .current_dir(cwd)
        .env_remove("FLOODGATE_CONFIG")
        .env_remove("RUNTIME_ROOT")
        .arg("serve")
        .args(args)
        .args(ANY_LOOPBACK_PORTS)
        .args(["--log-format", "json"])
        .env_remove("SHADOW_MODE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start floodgate");
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr_pipe = child.stderr.take().expect("piped stderr");
    let stderr = Arc::new(std::sync::Mutex::new(Vec::new()));
    let lines_of_stderr = Arc::clone(&stderr);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr_pipe).lines().map_while(Result::ok) {
            lines_of_stderr.lock().expect("stderr lock").push(line);
        }
    });
    let stdout_lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut process = ServeProcess {
        child,
        grpc: any_port(),
        http: any_port(),
        admin: any_port(),
        stderr,
        stdout: Arc::clone(&stdout_lines),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lines = BufReader::new(stdout).lines();
    loop {
        assert!(Instant::now() < deadline, "no 'floodgate serving' line");
        let Some(Ok(line)) = lines.next() else {
            panic!(
                "floodgate exited before serving: {:#?}",
                process.stderr.lock().expect("stderr lock")
            );
        };
        stdout_lines.lock().expect("stdout lock").push(line.clone());
        let Ok(log) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if log["fields"]["message"] != "floodgate serving" {
            continue;
        }
        let addr = |name: &str| -> SocketAddr {
            log["fields"][name]
                .as_str()
                .and_then(|text| text.parse().ok())
                .unwrap_or_else(|| panic!("no {name} address in {line}"))
        };
        (process.grpc, process.http, process.admin) = (addr("grpc"), addr("http"), addr("admin"));
        // Keep reading stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                stdout_lines.lock().expect("stdout lock").push(line);
            }
        });
        return process;
    }
}

impl ServeProcess {
    /// Sends the signal `name` (`TERM`, `HUP`, ...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit, failing the test after `within`
    /// (a bound on a hang, not a speed assertion).
    pub async fn exit_status(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "floodgate did not exit");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
