//! A `redis-server` of the test's own on a free port, to stop, pause and
//! restart at will (the machine's shared Redis is never touched).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` of our own on a free port, killed on drop.
pub struct RedisServer {
    pub port: u16,
    /// With [`RedisServer::start_tls`]: the TLS port (beside the plain one).
    pub tls_port: Option<u16>,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// More `redis-server` arguments.
    extra: Vec<String>,
}

impl RedisServer {
    /// A server of this test's own. A free port is picked and released
    /// before redis-server binds it, so a parallel test may take it first:
    /// then this redis-server exits, or the port answers with the other
    /// test's server; either way another port is tried.
    pub fn start() -> RedisServer {
        RedisServer::start_with(false, |_| Vec::new())
    }

    /// A server that also serves TLS on [`RedisServer::tls_port`], with the
    /// server certificate and key of `ca` and, with `verify_clients`,
    /// requiring client certificates signed by it.
    pub fn start_tls(ca: &super::tls::TestCa, verify_clients: bool) -> RedisServer {
        let pem = ca.server();
        let ca_pem = ca.cert_pem();
        RedisServer::start_with(true, move |dir| {
            let file = |name: &str, text: &str| {
                let path = dir.join(name);
                std::fs::write(&path, text).expect("write a TLS file");
                path.to_string_lossy().into_owned()
            };
            vec![
                "--tls-cert-file".into(),
                file("server.pem", &pem.cert),
                "--tls-key-file".into(),
                file("server-key.pem", &pem.key),
                "--tls-ca-cert-file".into(),
                file("ca.pem", &ca_pem),
                "--tls-auth-clients".into(),
                if verify_clients { "yes" } else { "no" }.into(),
            ]
        })
    }

    /// A replica of `master` (`--replicaof`), once it has synced.
    pub fn start_replica_of(master: &RedisServer) -> RedisServer {
        let master_port = master.port.to_string();
        let replica = RedisServer::start_with(false, move |_| {
            vec![
                "--replicaof".into(),
                "127.0.0.1".into(),
                master_port.clone(),
            ]
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while !replica
            .cli(&["INFO", "replication"])
            .contains("master_link_status:up")
        {
            assert!(Instant::now() < deadline, "the replica never synced");
            std::thread::sleep(Duration::from_millis(50));
        }
        replica
    }

    pub(crate) fn start_with(
        tls: bool,
        extra: impl Fn(&std::path::Path) -> Vec<String>,
    ) -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let extra = extra(dir.path());
        let mut server = RedisServer {
            port: 0,
            tls_port: None,
            dir,
            child: None,
            extra,
        };
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port")
        };
        for _ in 0..20 {
            server.port = free();
            server.tls_port = tls.then(free);
            if server.try_start() {
                return server;
            }
            server.kill();
        }
        panic!("could not start a redis-server of this test's own");
    }

    /// Starts (again) on the same port.
    pub fn restart(&mut self) {
        assert!(
            self.try_start(),
            "redis-server did not restart on port {}",
            self.port
        );
    }

    /// Starts redis-server on `self.port`; true once it answers there and
    /// is this one (its working directory is this server's).
    fn try_start(&mut self) -> bool {
        let binary = super::tools::required("redis-server");
        let child = Command::new(&binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(&self.extra)
            .args(
                self.tls_port
                    .map(|port| vec!["--tls-port".to_owned(), port.to_string()])
                    .unwrap_or_default(),
            )
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
        self.child = Some(child);
        let ours = self
            .dir
            .path()
            .canonicalize()
            .expect("the temp dir")
            .to_string_lossy()
            .into_owned();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let exited = self
                .child
                .as_mut()
                .is_some_and(|child| matches!(child.try_wait(), Ok(Some(_))));
            if exited {
                return false;
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                let dir = self.cli(&["CONFIG", "GET", "dir"]);
                if dir.lines().nth(1).map(str::trim) == Some(ours.as_str()) {
                    return true;
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, args)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Sentinel (`redis-server --sentinel`) of the test's own,
/// monitoring `master` as `name` with a quorum of 1 and short timeouts, so
/// a failover takes seconds; killed on drop.
pub struct SentinelServer {
    pub port: u16,
    _dir: tempfile::TempDir,
    child: Child,
}

impl SentinelServer {
    pub fn start(name: &str, master: &RedisServer) -> SentinelServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {}\n\
                 sentinel monitor {name} 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds {name} 500\n\
                 sentinel failover-timeout {name} 2000\n\
                 sentinel parallel-syncs {name} 1\n",
                dir.path().display(),
                master.port
            ),
        )
        .expect("write sentinel.conf");
        let child = Command::new(super::tools::required("redis-server"))
            .arg(&conf)
            .arg("--sentinel")
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run redis-server --sentinel");
        let sentinel = SentinelServer {
            port,
            _dir: dir,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while sentinel
            .cli(&["SENTINEL", "get-master-addr-by-name", name])
            .is_empty()
        {
            assert!(Instant::now() < deadline, "the sentinel never answered");
            std::thread::sleep(Duration::from_millis(50));
        }
        sentinel
    }

    /// The port of the master the sentinel names now.
    pub fn master_port(&self, name: &str) -> Option<u16> {
        self.cli(&["SENTINEL", "get-master-addr-by-name", name])
            .lines()
            .nth(1)
            .and_then(|port| port.trim().parse().ok())
    }

    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, args)
    }
}

impl Drop for SentinelServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Redis Cluster of the test's own: three masters with one replica each
/// (`redis-cli --cluster create`), short node timeouts so a failover takes
/// seconds.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..6)
            .map(|_| {
                RedisServer::start_with(false, |_| {
                    [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "1000",
                    ]
                    .map(String::from)
                    .to_vec()
                })
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let out = Command::new(super::tools::required("redis-cli"))
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create runs");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_until_ok();
        // Every replica has synced with its master.
        let deadline = Instant::now() + Duration::from_secs(60);
        for node in &cluster.nodes {
            loop {
                let info = node.cli(&["INFO", "replication"]);
                if info.contains("role:master") || info.contains("master_link_status:up") {
                    break;
                }
                assert!(Instant::now() < deadline, "a replica never synced");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        cluster
    }

    /// Waits until every live node says the cluster is ok.
    pub fn wait_until_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        for node in self.nodes.iter().filter(|node| node.child.is_some()) {
            while !node.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok") {
                assert!(Instant::now() < deadline, "the cluster never became ok");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// `redis+cluster://` with every node.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// The indices of the nodes that are masters now (and alive).
    pub fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i].child.is_some()
                    && self.nodes[i]
                        .cli(&["INFO", "replication"])
                        .contains("role:master")
            })
            .collect()
    }

    /// The node id of node `i`.
    pub fn id(&self, i: usize) -> String {
        self.nodes[i].cli(&["CLUSTER", "MYID"])
    }

    /// Moves every slot of master `from` to master `to`
    /// (`redis-cli --cluster rebalance` would spread them; this empties
    /// `from`), key by key as a live migration does (MIGRATE, ASK, MOVED).
    pub fn move_all_slots(&self, from: usize, to: usize) {
        let owned = self.slots_of(from);
        let out = Command::new(super::tools::required("redis-cli"))
            .args(["--cluster", "reshard"])
            .arg(format!("127.0.0.1:{}", self.nodes[to].port))
            .args(["--cluster-from", &self.id(from)])
            .args(["--cluster-to", &self.id(to)])
            .args(["--cluster-slots", &owned.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster reshard runs");
        assert!(
            out.status.success(),
            "reshard failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        self.wait_until_ok();
    }

    /// How many slots master `i` owns.
    pub fn slots_of(&self, i: usize) -> usize {
        let id = self.id(i);
        self.nodes[i]
            .cli(&["CLUSTER", "NODES"])
            .lines()
            .find(|line| line.starts_with(&id))
            .map(|line| {
                line.split_whitespace()
                    .skip(8)
                    .map(|range| match range.split_once('-') {
                        Some((a, b)) => {
                            b.parse::<usize>().unwrap_or(0) + 1 - a.parse::<usize>().unwrap_or(0)
                        }
                        None => usize::from(!range.starts_with('[')),
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
}

/// `redis-cli -p port args...`, its answer trimmed.
fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new(super::tools::required("redis-cli"))
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
