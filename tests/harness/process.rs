//! The `floodgate` binary as a child process, free ports, and connecting to
//! a server that is still starting.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
