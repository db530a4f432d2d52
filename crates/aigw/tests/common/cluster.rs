//! A cluster of `aigw` processes on loopback for the multi-process tests: three shard nodes
//! (the account-manager members) and edges, and `aigw admin` against them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aigw_cluster::Credentials;

use super::{ADMIN_TOKEN, aigw_serve, free_addr, wait_ok};

/// Three shard nodes and two edges as child processes, killed when dropped.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub upstream: String,
    /// Extra `AIGW_*` settings of every node.
    pub env: Vec<(String, String)>,
    pub grpc: Vec<SocketAddr>,
    pub shards: Vec<Option<Child>>,
    pub edges: Vec<(SocketAddr, Child)>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.shards.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for (_, child) in &mut self.edges {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Cluster {
    /// The account-manager replicas: the first three shard nodes (nodes added later are not).
    pub fn members(&self) -> String {
        self.grpc[..3]
            .iter()
            .enumerate()
            .map(|(i, addr)| format!("{}={addr}", i + 1))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn node(&self, role: &str) -> Command {
        let mut cmd = aigw_serve();
        cmd.env("AIGW_ROLE", role)
            .env("AIGW_CLUSTER__MEMBERS", self.members())
            .env("AIGW_CLUSTER__SHARD_GROUPS", "2")
            .env("AIGW_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("AIGW_PROVIDERS__OPENAI__BASE_URL", &self.upstream)
            .env("AIGW_BLOB__PATH", self.dir.path().join("blobs"))
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    pub fn log_file(&self, name: &str) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{name}.log")))
            .unwrap()
    }

    /// Starts shard node `i` (0-based; node id `i + 1`) on its data directory.
    pub fn start_shard(&mut self, i: usize) {
        let data: PathBuf = self.dir.path().join(format!("shard{}", i + 1));
        let log = self.log_file(&format!("shard{}", i + 1));
        let child = self
            .node("shard")
            .env("AIGW_NODE_ID", (i + 1).to_string())
            .env("AIGW_GRPC_ADDR", self.grpc[i].to_string())
            .env("AIGW_HTTP_ADDR", free_addr().to_string())
            .env("AIGW_DATA_DIR", data)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("shard node starts");
        self.shards[i] = Some(child);
    }

    pub async fn start_edge(&mut self, client: &reqwest::Client) {
        let http = free_addr();
        let log = self.log_file(&format!("edge{}", self.edges.len() + 1));
        let child = self
            .node("edge")
            .env("AIGW_HTTP_ADDR", http.to_string())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("edge starts");
        self.edges.push((http, child));
        wait_ok(client, &format!("http://{http}/readyz"), "edge").await;
    }

    pub fn shard(&self, i: usize) -> &Child {
        self.shards[i].as_ref().expect("shard running")
    }

    pub fn kill_shard(&mut self, i: usize) {
        let mut child = self.shards[i].take().expect("shard running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn index_of(&self, addr: &str) -> usize {
        self.grpc
            .iter()
            .position(|a| a.to_string() == addr)
            .unwrap_or_else(|| panic!("{addr} is not a shard node"))
    }

    pub fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(format!("{name}.log")))
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// Three shard nodes (the account-manager members) and two edges.
pub async fn start_cluster(client: &reqwest::Client, upstream: String) -> Cluster {
    start_cluster_with(client, upstream, &[]).await
}

/// [`start_cluster`] with extra `AIGW_*` settings on every node.
pub async fn start_cluster_with(
    client: &reqwest::Client,
    upstream: String,
    env: &[(&str, &str)],
) -> Cluster {
    let mut cluster = Cluster {
        dir: tempfile::tempdir().unwrap(),
        upstream,
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        grpc: (0..3).map(|_| free_addr()).collect(),
        shards: vec![None, None, None],
        edges: Vec::new(),
    };
    for i in 0..3 {
        cluster.start_shard(i);
    }
    cluster.start_edge(client).await;
    cluster.start_edge(client).await;
    cluster
}

/// `aigw admin` against the shard node at `addr`, with `args`.
pub fn admin_run(addr: SocketAddr, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_aigw"))
        .args(["admin", "--addr", &addr.to_string(), "--token", ADMIN_TOKEN])
        .args(args)
        .env_remove("AIGW_ADMIN_TOKEN")
        .env_remove("AIGW_ADMIN_ADDR")
        .output()
        .expect("aigw admin runs")
}

/// [`admin_run`]'s stdout, asserting success.
pub fn admin(addr: SocketAddr, args: &[&str]) -> String {
    let out = admin_run(addr, args);
    assert!(
        out.status.success(),
        "aigw admin {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The admin token as gRPC credentials.
pub fn admin_credentials() -> Credentials {
    Credentials::bearer(Some(ADMIN_TOKEN)).unwrap()
}

/// Waits until the node at `addr` reports SERVING: groups elect their first leaders while the
/// edges start.
pub async fn wait_healthy(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = admin_run(addr, &["health"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && stdout.starts_with("SERVING") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the cluster never became healthy: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
