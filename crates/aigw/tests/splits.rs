//! Sub-shard splits on a real cluster of `aigw` processes (three shard nodes, two edges), with
//! `shard_split_rows` at 10,000: 50,000 requests through both edges at once while the logs
//! are listed, and a shard node killed (SIGKILL) as a split is under way and restarted. The
//! gateway ends with at least 5 sub-shards led from more than one node; paging through it by
//! cursor returns every answered request's log exactly once, newest first; logs are found by
//! id, patched and counted across sub-shards.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::cluster::{Cluster, admin, admin_run, start_cluster_with, wait_healthy};
use common::{ADMIN_TOKEN, chat, mock};
use serde_json::{Value, json};

const ACCOUNT: &str = "bigco";
const GATEWAY: &str = "firehose";
const SPLIT_ROWS: &str = "10000";
const LOGS: usize = 50_000;
/// Requests in flight at once, across both edges.
const CONCURRENCY: usize = 32;

fn logs_url(edge: SocketAddr) -> String {
    format!("http://{edge}/client/v4/accounts/{ACCOUNT}/ai-gateway/gateways/{GATEWAY}/logs")
}

/// A management API call with the admin token; (status, body).
async fn admin_api(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> (u16, Value) {
    common::api(client, method, url, ADMIN_TOKEN, body).await
}

/// One page of 50 logs on `edge`, from `cursor` on: their ids, and the next page's cursor.
async fn page(
    client: &reqwest::Client,
    edge: SocketAddr,
    cursor: Option<&str>,
) -> (Vec<String>, Option<String>) {
    let query = match cursor {
        Some(c) => format!("per_page=50&cursor={c}"),
        None => "per_page=50".to_owned(),
    };
    let (status, body) = admin_api(
        client,
        reqwest::Method::GET,
        format!("{}?{query}", logs_url(edge)),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let ids = body["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .collect();
    let next = body["result_info"]["cursor"].as_str().map(str::to_owned);
    (ids, next)
}

/// `aigw admin --json gateway status` of the gateway.
fn gateway_status(addr: SocketAddr) -> Value {
    let out = admin(addr, &["--json", "gateway", "status", ACCOUNT, GATEWAY]);
    serde_json::from_str(&out).unwrap()
}

fn sub_shards(status: &Value) -> Vec<Value> {
    status["shards"].as_array().cloned().unwrap_or_default()
}

/// Sends `LOGS` requests through both edges, `CONCURRENCY` at a time; the log ids answered.
async fn traffic(client: reqwest::Client, edges: Vec<SocketAddr>) -> Vec<String> {
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|w| {
            let (client, edges, next) = (client.clone(), edges.clone(), next.clone());
            tokio::spawn(async move {
                let mut answered = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= LOGS {
                        return answered;
                    }
                    let edge = edges[w % edges.len()];
                    let (status, id) = chat(&client, edge, ACCOUNT, GATEWAY, &n.to_string()).await;
                    assert_eq!(status, 200, "request {n} through {edge}");
                    answered.push(id.expect("every answer names its log"));
                }
            })
        })
        .collect();
    let mut all = Vec::with_capacity(LOGS);
    for w in workers {
        all.extend(w.await.unwrap());
    }
    all
}

/// Lists the newest logs, and a few cursor pages, through both edges until `done`; checks
/// each page is in order without repeats. Returns the pages read.
async fn reader(client: reqwest::Client, edges: Vec<SocketAddr>, done: Arc<AtomicBool>) -> usize {
    let mut pages = 0;
    while !done.load(Ordering::Relaxed) {
        let edge = edges[pages % edges.len()];
        let mut cursor: Option<String> = None;
        let mut seen = HashSet::new();
        for _ in 0..3 {
            let (ids, next) = page(&client, edge, cursor.as_deref()).await;
            let mut sorted = ids.clone();
            sorted.sort_by(|a, b| b.cmp(a));
            assert_eq!(ids, sorted, "a page is newest first");
            for id in &ids {
                assert!(seen.insert(id.clone()), "{id} listed twice in one scan");
            }
            pages += 1;
            cursor = next;
            if cursor.is_none() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pages
}

/// Every log of the gateway, paged through by cursor on `edge`.
async fn scan_all(client: &reqwest::Client, edge: SocketAddr) -> Vec<String> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let (ids, next) = page(client, edge, cursor.as_deref()).await;
        all.extend(ids);
        match next {
            Some(next) => cursor = Some(next),
            None => return all,
        }
    }
}

async fn total_logs(client: &reqwest::Client, edge: SocketAddr, filter: &str) -> u64 {
    let (status, body) = admin_api(
        client,
        reqwest::Method::GET,
        format!("{}?per_page=1{filter}", logs_url(edge)),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["result_info"]["total_count"].as_u64().unwrap()
}

fn tails(cluster: &Cluster) -> String {
    ["shard1", "shard2", "shard3", "edge1", "edge2"]
        .iter()
        .map(|n| format!("--- {n}\n{}", cluster.log_tail(n)))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_splits_under_traffic_and_a_node_kill_and_reads_see_every_log_once() {
    let upstream = mock().await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .unwrap();
    let mut cluster = start_cluster_with(
        &client,
        format!("{}/v1", upstream.base_url()),
        &[
            ("AIGW_SHARD_SPLIT_ROWS", SPLIT_ROWS),
            ("AIGW_USAGE_REPORT_ROWS", "500"),
        ],
    )
    .await;
    wait_healthy(cluster.grpc[0]).await;
    let edges: Vec<SocketAddr> = cluster.edges.iter().map(|(a, _)| *a).collect();
    let (status, body) = admin_api(
        &client,
        reqwest::Method::POST,
        format!(
            "http://{}/client/v4/accounts/{ACCOUNT}/ai-gateway/gateways",
            edges[0]
        ),
        Some(json!({"id": GATEWAY, "collect_logs": true, "cache_ttl": 0,
                    "cache_invalidate_on_update": false, "rate_limiting_interval": 0,
                    "rate_limiting_limit": 0})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Both edges know the gateway before traffic starts.
    for edge in &edges {
        let deadline = Instant::now() + Duration::from_secs(10);
        while total_logs_status(&client, *edge).await != 200 {
            assert!(
                Instant::now() < deadline,
                "edge {edge} never saw the gateway"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let started = Instant::now();
    let sending = tokio::spawn(traffic(client.clone(), edges.clone()));
    let done = Arc::new(AtomicBool::new(false));
    let reading = tokio::spawn(reader(client.clone(), edges.clone(), done.clone()));

    // Kill node 3 as the gateway's second split is being carried out (its new group forming),
    // and bring it back a few seconds later.
    let (mut killed_at, mut restarted) = (None::<Instant>, false);
    while !sending.is_finished() {
        if killed_at.is_none() {
            let out = admin_run(
                cluster.grpc[0],
                &["--json", "gateway", "status", ACCOUNT, GATEWAY],
            );
            let status: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            if sub_shards(&status).len() >= 3 {
                cluster.kill_shard(2);
                killed_at = Some(Instant::now());
            }
        } else if !restarted && killed_at.is_some_and(|t| t.elapsed() > Duration::from_secs(5)) {
            cluster.start_shard(2);
            restarted = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answered = sending.await.unwrap();
    let sent_in = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let pages_read = reading.await.unwrap();
    assert!(killed_at.is_some(), "the gateway never split twice");
    if !restarted {
        cluster.start_shard(2);
    }
    assert_eq!(answered.len(), LOGS);
    eprintln!("{LOGS} requests in {sent_in:?}; {pages_read} pages listed meanwhile");

    // Every answered request's log is stored (the shippers drain their queues).
    let deadline = Instant::now() + Duration::from_secs(60);
    while total_logs(&client, edges[1], "").await != LOGS as u64 {
        assert!(
            Instant::now() < deadline,
            "stored {} of {LOGS} logs\n{}",
            total_logs(&client, edges[1], "").await,
            tails(&cluster)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // ≥ 5 sub-shards, whose reported rows add up once the reports catch up, led from more
    // than one node.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status = gateway_status(cluster.grpc[0]);
        if status["rows"].as_u64() == Some(LOGS as u64) {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "usage never caught up: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let shards = sub_shards(&status);
    assert!(shards.len() >= 5, "{status:#}");
    eprintln!(
        "{} sub-shards, rows {:?}",
        shards.len(),
        shards
            .iter()
            .map(|s| s["rows"].as_u64())
            .collect::<Vec<_>>()
    );
    for pair in shards.windows(2) {
        assert!(pair[1]["from_ms"].as_i64() > pair[0]["from_ms"].as_i64());
    }
    let groups: Vec<u64> = shards
        .iter()
        .map(|s| s["group"].as_u64().unwrap())
        .collect();
    let cluster_status: Value =
        serde_json::from_str(&admin(cluster.grpc[0], &["--json", "status"])).unwrap();
    let leaders: HashSet<u64> = cluster_status["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| groups.contains(&g["group"].as_u64().unwrap()))
        .filter_map(|g| g["leader"].as_u64())
        .collect();
    assert!(
        leaders.len() >= 2,
        "sub-shards led from one node only: {cluster_status:#}"
    );

    // Paging through every sub-shard by cursor returns each answered log exactly once, in
    // order.
    let scanned = scan_all(&client, edges[0]).await;
    let mut expected = answered.clone();
    expected.sort_by(|a, b| b.cmp(a));
    assert_eq!(scanned.len(), LOGS, "every log listed once");
    assert!(
        scanned == expected,
        "the scan is the answered logs, newest first"
    );

    // By id, patches and filtered counts reach the sub-shard holding the log.
    let step = LOGS / 10;
    let sampled: Vec<&String> = expected.iter().step_by(step).collect();
    for id in &sampled {
        let (status, body) = admin_api(
            &client,
            reqwest::Method::PATCH,
            format!("{}/{id}", logs_url(edges[1])),
            Some(json!({"feedback": 1})),
        )
        .await;
        assert_eq!(status, 200, "patch {id}: {body}");
        let (status, body) = admin_api(
            &client,
            reqwest::Method::GET,
            format!("{}/{id}", logs_url(edges[0])),
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["result"]["feedback"], 1);
    }
    assert_eq!(
        total_logs(&client, edges[0], "&feedback=1").await,
        sampled.len() as u64
    );
    // A delete with a limit takes the oldest across sub-shards.
    let (status, body) = admin_api(
        &client,
        reqwest::Method::DELETE,
        format!(
            "{}?limit=100&order_by=created_at&order_by_direction=asc",
            logs_url(edges[0])
        ),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["deleted"], 100);
    let (_, oldest) = admin_api(
        &client,
        reqwest::Method::GET,
        format!("{}?per_page=1&order_by_direction=asc", logs_url(edges[1])),
        None,
    )
    .await;
    assert_eq!(
        oldest["result"][0]["id"].as_str(),
        Some(expected[LOGS - 101].as_str()),
        "the 100 oldest are gone, the next is the oldest"
    );
    assert_eq!(total_logs(&client, edges[1], "").await, LOGS as u64 - 100);
}

/// The status of listing the gateway's logs on `edge` (404 until it knows the gateway).
async fn total_logs_status(client: &reqwest::Client, edge: SocketAddr) -> u16 {
    admin_api(
        client,
        reqwest::Method::GET,
        format!("{}?per_page=1", logs_url(edge)),
        None,
    )
    .await
    .0
}
