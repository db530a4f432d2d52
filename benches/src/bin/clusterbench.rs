//! `clusterbench`: the replicated store on this machine — three `aigw --role shard` processes
//! and one edge — measured the way edges use it.
//!
//! 1. **Ingestion**: batches of log entries (2 KiB bodies) written through [`ShardRouter`] —
//!    the edge's own client — one writer per shard group, as the edge's log lanes do.
//! 2. **Query**: the 50 newest logs of a gateway through the edge's management API, p50/p99.
//! 3. **Failover**: the leader of a group is killed (SIGKILL) under writes; time until a write
//!    to that group succeeds again.
//! 4. **Splits**: a fresh cluster with `shard_split_rows` at `CLUSTERBENCH_SPLIT_ROWS`; one
//!    gateway is written to until it has 10 sub-shards: the ingestion rate before, during and
//!    after its splits and the longest time without a completed batch; then the 50 newest logs
//!    of that gateway (10 sub-shards) versus a gateway with one, p50/p99, through the edge.
//! 5. **Idle groups**: a fresh 3-node cluster with `CLUSTERBENCH_IDLE_GROUPS` groups (default
//!    1,000, each with a replica on every node), idle: CPU per node.
//!
//! Settings (environment): `CLUSTERBENCH_LOGS` (200,000), `CLUSTERBENCH_GROUPS` (8),
//! `CLUSTERBENCH_BATCH` (256), `CLUSTERBENCH_SPLIT_ROWS` (20,000; 0 skips the phase),
//! `CLUSTERBENCH_IDLE_GROUPS` (1,000; 0 skips the phase), `AIGW_BIN` (`target/release/aigw`).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aigw_benches::env::env_or;
use aigw_benches::procfs::{self, Pid};
use aigw_benches::stats::{Latencies, fmt_ms};
use aigw_cluster::{Credentials, RetryPolicy, ShardRouter, follow_shard_map};
use aigw_proto::shard::shard_server::Shard;
use aigw_proto::shard::{IngestEntry, IngestRequest};
use aigw_types::LogRecord;
use anyhow::{Context, Result, anyhow, ensure};
use bytes::Bytes;
use ulid::Ulid;

const ACCOUNT: &str = "bench";
const ADMIN_TOKEN: &str = "clusterbench-admin-token";

fn main() -> ExitCode {
    aigw_benches::main_with("clusterbench", run)
}

/// A child process killed (and reaped) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

fn free_addr() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Three shard nodes (and optionally an edge) in `dir`.
struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    groups: u32,
    /// Extra `AIGW_*` settings of every process.
    env: Vec<(String, String)>,
    grpc: Vec<SocketAddr>,
    shards: Vec<Option<Proc>>,
    edge: Option<(SocketAddr, Proc)>,
}

impl Cluster {
    fn members(&self) -> String {
        self.grpc
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn command(&self, role: &str, log: &str) -> Result<Command> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve");
        for (name, _) in std::env::vars() {
            if name.starts_with("AIGW_") {
                cmd.env_remove(name);
            }
        }
        let log = std::fs::File::create(self.dir.join(log))?;
        cmd.env("AIGW_ROLE", role)
            .env("AIGW_CLUSTER__MEMBERS", self.members())
            .env("AIGW_CLUSTER__SHARD_GROUPS", self.groups.to_string())
            .env("AIGW_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("AIGW_BLOB__PATH", self.dir.join("blobs"))
            .env("RUST_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log);
        Ok(cmd)
    }

    fn start_shard(&mut self, i: usize) -> Result<()> {
        let child = self
            .command("shard", &format!("shard{}.log", i + 1))?
            .env("AIGW_NODE_ID", (i + 1).to_string())
            .env("AIGW_GRPC_ADDR", self.grpc[i].to_string())
            .env("AIGW_HTTP_ADDR", free_addr()?.to_string())
            .env("AIGW_DATA_DIR", self.dir.join(format!("shard{}", i + 1)))
            .spawn()
            .with_context(|| format!("cannot start {}", self.bin.display()))?;
        self.shards[i] = Some(Proc(child));
        Ok(())
    }

    fn start(bin: &Path, dir: &Path, groups: u32, env: &[(&str, String)]) -> Result<Self> {
        let mut cluster = Cluster {
            bin: bin.to_owned(),
            dir: dir.to_owned(),
            groups,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            grpc: (0..3).map(|_| free_addr()).collect::<Result<_>>()?,
            shards: vec![None, None, None],
            edge: None,
        };
        for i in 0..3 {
            cluster.start_shard(i)?;
        }
        Ok(cluster)
    }

    async fn start_edge(&mut self, client: &reqwest::Client) -> Result<SocketAddr> {
        let http = free_addr()?;
        let child = self
            .command("edge", "edge.log")?
            .env("AIGW_HTTP_ADDR", http.to_string())
            .spawn()?;
        self.edge = Some((http, Proc(child)));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(format!("http://{http}/readyz")).send().await
                && r.status() == 200
            {
                return Ok(http);
            }
            ensure!(Instant::now() < deadline, "the edge did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn seeds(&self) -> Vec<String> {
        self.grpc.iter().map(ToString::to_string).collect()
    }

    /// CPU ticks used so far by each running shard node.
    fn shard_cpu_ticks(&self) -> Result<Vec<u64>> {
        self.shards
            .iter()
            .flatten()
            .map(|p| Ok(procfs::cpu_ticks(Pid::Other(p.pid()))?))
            .collect()
    }
}

/// Bodies cut from a fixed text, so that they compress like prose, not like zeros.
struct Bodies {
    text: Bytes,
}

impl Bodies {
    fn new() -> Self {
        const WORDS: [&str; 16] = [
            "the",
            "model",
            "answered",
            "with",
            "a",
            "summary",
            "of",
            "quarterly",
            "revenue",
            "growth",
            "and",
            "noted",
            "risks",
            "in",
            "supply",
            "chains",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut text = String::with_capacity(1 << 18);
        while text.len() < (1 << 18) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            text.push_str(WORDS[(seed % 16) as usize]);
            text.push(if seed.is_multiple_of(11) { '.' } else { ' ' });
        }
        Self {
            text: Bytes::from(text),
        }
    }

    fn body(&self, n: u64, len: usize) -> Bytes {
        let start = (n.wrapping_mul(7919) as usize) % (self.text.len() - len);
        self.text.slice(start..start + len)
    }
}

fn entry(bodies: &Bodies, gateway: &str, n: u64) -> IngestEntry {
    let id = Ulid::new();
    let created = i64::try_from(id.timestamp_ms()).unwrap_or(i64::MAX);
    let mut record = LogRecord::new(id, created, ACCOUNT, gateway, "openai");
    record.model = "gpt-4o-mini".into();
    record.path = "/chat/completions".into();
    record.method = "POST".into();
    record.status_code = 200;
    record.success = true;
    record.tokens_in = Some(120);
    record.tokens_out = Some(380);
    record.duration_ms = 850;
    IngestEntry {
        record: Some((&record).into()),
        request_body: Some(bodies.body(n, 2048)),
        response_body: Some(bodies.body(n + 1, 2048)),
    }
}

/// A gateway name whose logs live in `group`, for each group of the map.
fn gateway_per_group(router: &ShardRouter, groups: u32) -> Vec<String> {
    let mut names = vec![String::new(); groups as usize];
    for i in 0.. {
        let name = format!("gw-{i}");
        let group = router.group_for(ACCOUNT, &name) as usize;
        if names[group - 1].is_empty() {
            names[group - 1] = name;
        }
        if names.iter().all(|n| !n.is_empty()) {
            break;
        }
    }
    names
}

async fn run() -> Result<()> {
    let bin: PathBuf = env_or("AIGW_BIN", PathBuf::from("target/release/aigw"))?;
    ensure!(
        bin.exists(),
        "{} is missing (cargo build --release --bin aigw)",
        bin.display()
    );
    let logs: u64 = env_or("CLUSTERBENCH_LOGS", 200_000)?;
    let groups: u32 = env_or("CLUSTERBENCH_GROUPS", 8)?;
    let batch: u64 = env_or("CLUSTERBENCH_BATCH", 256)?;
    let idle_groups: u32 = env_or("CLUSTERBENCH_IDLE_GROUPS", 1000)?;
    let split_rows: u64 = env_or("CLUSTERBENCH_SPLIT_ROWS", 20_000)?;
    let dir = tempfile::tempdir()?;
    let client = reqwest::Client::new();
    println!(
        "clusterbench: 3 shard nodes + 1 edge ({}), {groups} shard groups × 3 replicas, load {}",
        bin.display(),
        procfs::load_average()
    );

    let mut cluster = Cluster::start(&bin, dir.path(), groups, &[])?;
    let edge = cluster.start_edge(&client).await?;
    let map = follow_shard_map(
        cluster.seeds(),
        RetryPolicy::default(),
        Credentials::bearer(Some(ADMIN_TOKEN)).map_err(|s| anyhow!("{}", s.message()))?,
    )
    .await
    .map_err(|s| anyhow!("{}", s.message()))?;
    let router = Arc::new(ShardRouter::new(map));
    let gateways = gateway_per_group(&router, groups);
    for gateway in &gateways {
        create_gateway(&client, edge, gateway).await?;
    }
    let bodies = Arc::new(Bodies::new());

    // 1. Ingestion: one writer per group, like the edge's lanes.
    let cpu_before = cluster.shard_cpu_ticks()?;
    let written = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let writers: Vec<_> = gateways
        .iter()
        .map(|gateway| {
            let (router, bodies, written, accepted, gateway) = (
                router.clone(),
                bodies.clone(),
                written.clone(),
                accepted.clone(),
                gateway.clone(),
            );
            tokio::spawn(async move {
                let mut latencies = Latencies::with_capacity(1024);
                loop {
                    let first = written.fetch_add(batch, Ordering::Relaxed);
                    if first >= logs {
                        return anyhow::Ok(latencies);
                    }
                    let entries = (first..first + batch)
                        .map(|n| entry(&bodies, &gateway, n))
                        .collect();
                    let t = Instant::now();
                    let reply = router
                        .ingest(tonic::Request::new(IngestRequest { entries }))
                        .await
                        .map_err(|s| anyhow!("ingest failed: {}", s.message()))?;
                    latencies.record(t.elapsed());
                    accepted.fetch_add(u64::from(reply.into_inner().accepted), Ordering::Relaxed);
                }
            })
        })
        .collect();
    let mut latencies = Latencies::default();
    for w in writers {
        latencies.merge(w.await??);
    }
    let wall = started.elapsed();
    let cpu: Vec<f64> = cluster
        .shard_cpu_ticks()?
        .iter()
        .zip(&cpu_before)
        .map(|(after, before)| (after - before) as f64 / procfs::clock_ticks_per_sec() as f64)
        .collect();
    let rate = logs as f64 / wall.as_secs_f64();
    let accepted = accepted.load(Ordering::Relaxed);
    // Every log must be stored: the default plan has no limits, so none may be refused.
    // Writers send whole batches while the count is below `logs`.
    let sent = logs.div_ceil(batch) * batch;
    ensure!(
        accepted == sent,
        "only {accepted} of {sent} logs were stored (refused by a quota?)"
    );
    println!(
        "\ningestion: {logs} logs in {:.1} s = {rate:.0} logs/s (target ≥ 10,000) — batch {batch}, p50 {} p99 {} per batch; shard CPU {:.1}/{:.1}/{:.1} s",
        wall.as_secs_f64(),
        fmt_ms(latencies.quantile(0.5).unwrap_or_default()),
        fmt_ms(latencies.quantile(0.99).unwrap_or_default()),
        cpu[0],
        cpu[1],
        cpu[2],
    );

    // 2. Query through the edge.
    let mut query = newest_50(&client, edge, &gateways, 500).await?;
    println!(
        "query (50 newest of a gateway, through the edge): p50 {} p99 {} (target p99 ≤ 20 ms)",
        fmt_ms(query.quantile(0.5).unwrap_or_default()),
        fmt_ms(query.quantile(0.99).unwrap_or_default()),
    );

    // 3. Failover: kill the leader of the first gateway's group under writes.
    let gateway = gateways[0].clone();
    let group = router.group_for(ACCOUNT, &gateway);
    let leader = router
        .known_leader(group)
        .context("the group's leader is known after writing to it")?;
    let victim = cluster
        .grpc
        .iter()
        .position(|a| a.to_string() == leader)
        .context("the leader is a shard node")?;
    cluster.shards[victim] = None; // SIGKILL
    let killed = Instant::now();
    let mut n = logs;
    loop {
        let sent = Instant::now();
        let entries = (n..n + 16).map(|i| entry(&bodies, &gateway, i)).collect();
        n += 16;
        if router
            .ingest(tonic::Request::new(IngestRequest { entries }))
            .await
            .is_ok()
        {
            println!(
                "failover: leader of group {group} (node {}) killed; a write sent {} after the kill succeeded {} after it",
                victim + 1,
                fmt_ms(sent - killed),
                fmt_ms(killed.elapsed())
            );
            break;
        }
        ensure!(
            killed.elapsed() < Duration::from_secs(60),
            "writes never resumed"
        );
    }
    drop(cluster);

    // 4. Splits.
    if split_rows > 0 {
        splits(&bin, &client, split_rows, batch).await?;
    }

    // 5. Idle groups.
    if idle_groups > 0 {
        let idle_dir = tempfile::tempdir()?;
        let cluster = Cluster::start(&bin, idle_dir.path(), idle_groups, &[])?;
        let deadline = Instant::now() + Duration::from_secs(600);
        let started = Instant::now();
        loop {
            let out = Command::new(&bin)
                .args([
                    "admin",
                    "--addr",
                    &cluster.grpc[0].to_string(),
                    "--token",
                    ADMIN_TOKEN,
                    "--json",
                    "status",
                ])
                .output()?;
            let formed = serde_json::from_slice::<serde_json::Value>(&out.stdout)
                .ok()
                .and_then(|s| {
                    s["groups"].as_array().map(|g| {
                        g.iter()
                            .filter(|g| {
                                g["leader"].is_u64()
                                    && g["replicas"].as_array().is_some_and(|r| r.len() == 3)
                            })
                            .count()
                    })
                })
                .unwrap_or(0);
            if formed > idle_groups as usize {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "only {formed} of {idle_groups} groups formed"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        println!(
            "idle groups: {idle_groups} groups (+ the account manager) formed on 3 nodes in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
        let before = cluster.shard_cpu_ticks()?;
        let window = Duration::from_secs(10);
        tokio::time::sleep(window).await;
        let after = cluster.shard_cpu_ticks()?;
        let per_node: Vec<String> = after
            .iter()
            .zip(&before)
            .map(|(a, b)| {
                let secs = (a - b) as f64 / procfs::clock_ticks_per_sec() as f64;
                format!("{:.0}%", 100.0 * secs / window.as_secs_f64())
            })
            .collect();
        println!(
            "idle groups: CPU per node over {} s, {idle_groups} idle groups each: {} (of one core)",
            window.as_secs(),
            per_node.join(" / ")
        );
    }
    Ok(())
}

async fn create_gateway(client: &reqwest::Client, edge: SocketAddr, gateway: &str) -> Result<()> {
    let resp = client
        .post(format!(
            "http://{edge}/client/v4/accounts/{ACCOUNT}/ai-gateway/gateways"
        ))
        .bearer_auth(ADMIN_TOKEN)
        .json(
            &serde_json::json!({"id": gateway, "collect_logs": true, "cache_ttl": 0,
            "cache_invalidate_on_update": false, "rate_limiting_interval": 0,
            "rate_limiting_limit": 0}),
        )
        .send()
        .await?;
    ensure!(
        resp.status() == 200,
        "cannot create gateway {gateway}: {}",
        resp.status()
    );
    Ok(())
}

/// `queries` listings of the 50 newest logs of `gateways` (in turn) through the edge.
async fn newest_50(
    client: &reqwest::Client,
    edge: SocketAddr,
    gateways: &[String],
    queries: usize,
) -> Result<Latencies> {
    let mut latencies = Latencies::with_capacity(queries);
    for i in 0..queries {
        let gateway = &gateways[i % gateways.len()];
        let t = Instant::now();
        let resp = client
            .get(format!(
                "http://{edge}/client/v4/accounts/{ACCOUNT}/ai-gateway/gateways/{gateway}/logs?per_page=50"
            ))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await?;
        ensure!(resp.status() == 200, "list failed: {}", resp.status());
        resp.bytes().await?;
        latencies.record(t.elapsed());
    }
    Ok(latencies)
}

/// Phase 4: one gateway written to until it has 10 sub-shards.
async fn splits(bin: &Path, client: &reqwest::Client, split_rows: u64, batch: u64) -> Result<()> {
    const SUB_SHARDS: usize = 10;
    let dir = tempfile::tempdir()?;
    let mut cluster = Cluster::start(
        bin,
        dir.path(),
        2,
        &[
            ("AIGW_SHARD_SPLIT_ROWS", split_rows.to_string()),
            (
                "AIGW_USAGE_REPORT_ROWS",
                (split_rows / 20).max(2).to_string(),
            ),
        ],
    )?;
    let edge = cluster.start_edge(client).await?;
    let mut map = follow_shard_map(
        cluster.seeds(),
        RetryPolicy::default(),
        Credentials::bearer(Some(ADMIN_TOKEN)).map_err(|s| anyhow!("{}", s.message()))?,
    )
    .await
    .map_err(|s| anyhow!("{}", s.message()))?;
    let router = Arc::new(ShardRouter::new(map.clone()));
    let (split, whole) = ("split-gw".to_owned(), "whole-gw".to_owned());
    create_gateway(client, edge, &split).await?;
    create_gateway(client, edge, &whole).await?;
    let bodies = Arc::new(Bodies::new());

    // Two writers, so a batch is always in flight while another is answered (an edge's lane
    // keeps one batch in flight per group; two lanes at a split's boundary).
    let started = Instant::now();
    let finished = Arc::new(std::sync::Mutex::new(Vec::<(Duration, u64)>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..2)
        .map(|_| {
            let (router, bodies, finished, stop, next, gateway) = (
                router.clone(),
                bodies.clone(),
                finished.clone(),
                stop.clone(),
                next.clone(),
                split.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let first = next.fetch_add(batch, Ordering::Relaxed);
                    let entries = (first..first + batch)
                        .map(|n| entry(&bodies, &gateway, n))
                        .collect();
                    router
                        .ingest(tonic::Request::new(IngestRequest { entries }))
                        .await
                        .map_err(|s| anyhow!("ingest failed: {}", s.message()))?;
                    finished
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push((started.elapsed(), batch));
                }
                anyhow::Ok(())
            })
        })
        .collect();
    // The moment each split took effect: its sub-shard's `from_ms`, on this clock.
    let mut switches = Vec::new();
    let unix_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let subs = map.borrow_and_update().sub_shards(ACCOUNT, &split);
        if subs.len() > switches.len() + 1 {
            for sub in &subs[switches.len() + 1..] {
                let ahead = sub.from_ms - unix_ms();
                switches.push(started.elapsed() + Duration::from_millis(ahead.max(0) as u64));
            }
        }
        if subs.len() >= SUB_SHARDS {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "only {} sub-shards after 10 minutes",
            subs.len()
        );
        let _ = tokio::time::timeout(Duration::from_millis(200), map.changed()).await;
    }
    // Five seconds of "after".
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await??;
    }
    let total = started.elapsed();
    let finished = std::mem::take(
        &mut *finished
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let rate = |from: Duration, to: Duration| {
        let rows: u64 = finished
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, n)| n)
            .sum();
        rows as f64 / (to - from).as_secs_f64().max(1e-3)
    };
    let window = Duration::from_secs(1);
    let first = switches.first().copied().unwrap_or(total);
    let last = switches.last().copied().unwrap_or(total);
    let during: Vec<f64> = switches
        .iter()
        .map(|s| rate(s.saturating_sub(window), *s + window))
        .collect();
    let mut stall = Duration::ZERO;
    let mut times: Vec<Duration> = finished.iter().map(|(t, _)| *t).collect();
    times.sort();
    for pair in times.windows(2) {
        stall = stall.max(pair[1] - pair[0]);
    }
    println!(
        "\nsplits: shard_split_rows {split_rows}; {} logs into one gateway in {:.1} s, {} sub-shards",
        next.load(Ordering::Relaxed),
        total.as_secs_f64(),
        switches.len() + 1,
    );
    println!(
        "splits: ingestion before the first split {:.0} logs/s; within 1 s of each split {} logs/s; after the last {:.0} logs/s; longest gap between batches {} (target ≤ 1 s)",
        rate(Duration::ZERO, first),
        during
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join("/"),
        rate(last + window, total),
        fmt_ms(stall),
    );

    // The newest 50 of the split gateway versus one that was never split.
    let entries: Vec<IngestEntry> = (0..split_rows / 2)
        .map(|n| entry(&bodies, &whole, n))
        .collect();
    for part in entries.chunks(batch as usize) {
        router
            .ingest(tonic::Request::new(IngestRequest {
                entries: part.to_vec(),
            }))
            .await
            .map_err(|s| anyhow!("ingest failed: {}", s.message()))?;
    }
    let mut ten = newest_50(client, edge, std::slice::from_ref(&split), 500).await?;
    let mut one = newest_50(client, edge, std::slice::from_ref(&whole), 500).await?;
    println!(
        "splits: 50 newest through the edge, {} sub-shards p50 {} p99 {}; one sub-shard p50 {} p99 {}",
        switches.len() + 1,
        fmt_ms(ten.quantile(0.5).unwrap_or_default()),
        fmt_ms(ten.quantile(0.99).unwrap_or_default()),
        fmt_ms(one.quantile(0.5).unwrap_or_default()),
        fmt_ms(one.quantile(0.99).unwrap_or_default()),
    );
    drop(cluster);
    Ok(())
}
