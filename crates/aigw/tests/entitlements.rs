//! Plans, accounts and tokens on a real cluster of `aigw` processes (three shard nodes, two
//! edges): a plan's gateway limit refuses clearly; its log limits hold under traffic through
//! both edges at once — STOP_INSERTING refuses and counts, DELETE_OLDEST keeps the newest —
//! while the account manager's leader is killed and restarted; usage is never counted twice;
//! account tokens reach their own account only; deleting a gateway drops its logs and usage.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use aigw_cluster::{Credentials, RetryPolicy, ShardRouter, follow_shard_map};
use aigw_proto::shard::shard_server::Shard;
use aigw_proto::shard::{IngestEntry, IngestRequest, LogRecord};
use common::cluster::{Cluster, admin, admin_run, start_cluster_with, wait_healthy};
use common::{ADMIN_TOKEN, api, chat, mock};
use serde_json::{Value, json};

const ACCOUNT: &str = "acme";
const OTHER: &str = "globex";
/// Rows between usage reports: the most one shard may overshoot a limit by.
const REPORT_EVERY: u64 = 20;
const STOP_LIMIT: u64 = 150;
const EVICT_LIMIT: u64 = 100;
const LOWERED_LIMIT: u64 = 60;

fn gateway_body(id: &str, limit: Option<u64>, strategy: Option<&str>) -> Value {
    json!({"id": id, "collect_logs": true, "cache_ttl": 0, "cache_invalidate_on_update": false,
           "rate_limiting_interval": 0, "rate_limiting_limit": 0,
           "log_management": limit, "log_management_strategy": strategy})
}

fn gateways_url(edge: SocketAddr, account: &str) -> String {
    format!("http://{edge}/client/v4/accounts/{account}/ai-gateway/gateways")
}

/// The gateway's stored logs, as the management API counts them.
async fn total_logs(client: &reqwest::Client, edge: SocketAddr, gateway: &str) -> u64 {
    let (status, body) = api(
        client,
        reqwest::Method::GET,
        format!("{}/{gateway}/logs?per_page=1", gateways_url(edge, ACCOUNT)),
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["result_info"]["total_count"].as_u64().unwrap()
}

/// `aigw admin --json gateway status`.
fn gateway_status(addr: SocketAddr, gateway: &str) -> Value {
    let out = admin(addr, &["--json", "gateway", "status", ACCOUNT, gateway]);
    serde_json::from_str(&out).unwrap()
}

/// The node id leading the account-manager group (group 0), per `aigw admin status`.
fn account_manager_leader(addr: SocketAddr) -> Option<u64> {
    let out = admin_run(addr, &["--json", "status"]);
    let status: Value = serde_json::from_slice(&out.stdout).ok()?;
    status["groups"]
        .as_array()?
        .iter()
        .find(|g| g["group"] == 0)?["leader"]
        .as_u64()
}

/// Sends `count` requests to `gateway`, alternating edges, two at a time; returns the log ids
/// of the answered ones in the order they were answered.
async fn traffic(
    client: &reqwest::Client,
    edges: &[SocketAddr],
    gateway: &'static str,
    count: usize,
) -> Vec<String> {
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let (client, edges) = (client.clone(), edges.to_vec());
            tokio::spawn(async move {
                let mut answered = Vec::new();
                for n in (w..count).step_by(2) {
                    let edge = edges[n % edges.len()];
                    let (status, id) = chat(&client, edge, ACCOUNT, gateway, &format!("{n}")).await;
                    assert_eq!(status, 200, "requests are proxied whatever the log limit");
                    answered.push(id.unwrap());
                }
                answered
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    all
}

/// Waits until the account manager's view of `gateway` matches what the shard holds.
async fn settled_status(
    client: &reqwest::Client,
    cluster: &Cluster,
    edge: SocketAddr,
    gateway: &str,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stored = total_logs(client, edge, gateway).await;
        let status = gateway_status(cluster.grpc[0], gateway);
        if status["rows"].as_u64() == Some(stored) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "usage never caught up with {stored} stored logs: {status:#}\n{}\n{}\n{}",
            cluster.log_tail("shard1"),
            cluster.log_tail("shard2"),
            cluster.log_tail("shard3")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plans_hold_across_edges_and_an_account_manager_failover() {
    let upstream = mock().await;
    let client = reqwest::Client::new();
    let every = REPORT_EVERY.to_string();
    let mut cluster = start_cluster_with(
        &client,
        format!("{}/v1", upstream.base_url()),
        &[("AIGW_USAGE_REPORT_ROWS", every.as_str())],
    )
    .await;
    let edges: Vec<SocketAddr> = cluster.edges.iter().map(|(addr, _)| *addr).collect();
    let node = cluster.grpc[0];
    wait_healthy(node).await;

    // Plans are data; accounts are created on them.
    let limit = STOP_LIMIT.to_string();
    admin(
        node,
        &[
            "plan",
            "set",
            "tiny",
            "--max-gateways",
            "2",
            "--max-logs-per-gateway",
            &limit,
            "--delete-oldest-allowed",
        ],
    );
    assert!(admin(node, &["plan", "list"]).contains("tiny"));
    admin(node, &["account", "create", ACCOUNT, "--plan", "tiny"]);
    let again = admin_run(node, &["account", "create", ACCOUNT, "--plan", "tiny"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let unknown = admin_run(node, &["account", "create", "x", "--plan", "platinum"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown plan `platinum`"));

    // Tokens are printed once, alone, and reach their own account only.
    let token = admin(node, &["token", "create", "--account", ACCOUNT])
        .trim()
        .to_owned();
    assert!(token.starts_with("aigw_") && !token.contains(char::is_whitespace));
    let other_token = admin(node, &["token", "create", "--account", OTHER])
        .trim()
        .to_owned();
    let post = |token: String, body: Value, account: &'static str, edge: SocketAddr| {
        let client = client.clone();
        async move {
            api(
                &client,
                reqwest::Method::POST,
                gateways_url(edge, account),
                &token,
                Some(body),
            )
            .await
        }
    };
    // Tokens reach the edges through the gateway watch: wait for the second edge to know it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = post(
            token.clone(),
            gateway_body("stop", None, None),
            ACCOUNT,
            edges[1],
        )
        .await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 401, "{body}");
        assert!(
            Instant::now() < deadline,
            "the edge never learned the token"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = post(
        token.clone(),
        gateway_body("evict", Some(EVICT_LIMIT), Some("DELETE_OLDEST")),
        ACCOUNT,
        edges[0],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(
        token.clone(),
        gateway_body("third", None, None),
        ACCOUNT,
        edges[0],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("2 gateways") && message.contains("`tiny`"),
        "{message}"
    );
    assert_eq!(body["errors"][0]["code"], 3007);
    for (token, account) in [(&token, OTHER), (&other_token, ACCOUNT)] {
        let (status, _) = api(
            &client,
            reqwest::Method::GET,
            format!("{}/stop/logs", gateways_url(edges[0], account)),
            token,
            None,
        )
        .await;
        assert_eq!(status, 403, "a token of one account never reads another's");
    }

    // A new gateway's first batch waits for its quota rather than being held to one report's
    // worth of rows: on the unlimited default plan, a batch of 5 reports' worth all goes in.
    let router = ShardRouter::new(
        follow_shard_map(
            cluster.grpc.iter().map(ToString::to_string).collect(),
            RetryPolicy::default(),
            Credentials::bearer(Some(ADMIN_TOKEN)).unwrap(),
        )
        .await
        .unwrap(),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let entries: Vec<IngestEntry> = (0..5 * REPORT_EVERY)
        .map(|n| IngestEntry {
            record: Some(LogRecord {
                id: ulid::Ulid::from_parts(now, u128::from(n))
                    .to_bytes()
                    .to_vec()
                    .into(),
                created_at_ms: now as i64,
                account_id: OTHER.into(),
                gateway_id: "default".into(),
                provider: "openai".into(),
                ..LogRecord::default()
            }),
            ..IngestEntry::default()
        })
        .collect();
    let reply = router
        .ingest(tonic::Request::new(IngestRequest { entries }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(u64::from(reply.accepted), 5 * REPORT_EVERY);

    // Traffic through both edges at once, on both gateways; the account manager's leader is
    // killed and restarted during it.
    let stop = tokio::spawn({
        let (client, edges) = (client.clone(), edges.clone());
        async move { traffic(&client, &edges, "stop", 3 * STOP_LIMIT as usize).await }
    });
    let evict = tokio::spawn({
        let (client, edges) = (client.clone(), edges.clone());
        async move { traffic(&client, &edges, "evict", 3 * EVICT_LIMIT as usize).await }
    });
    // Once each gateway's shard holds a quota (its first usage report was answered), the
    // shard admits against it whatever happens to the account manager.
    let deadline = Instant::now() + Duration::from_secs(10);
    for gateway in ["stop", "evict"] {
        while gateway_status(node, gateway)["rows"] == 0 {
            assert!(Instant::now() < deadline, "{gateway} was never reported");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let leader = account_manager_leader(node).expect("the account manager has a leader");
    let index = usize::try_from(leader - 1).unwrap();
    cluster.kill_shard(index);
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.start_shard(index);
    let stop_answered = stop.await.unwrap();
    let evict_answered = evict.await.unwrap();

    // STOP_INSERTING: the limit, overshot by at most one report on the one shard; the rest
    // refused and counted; the account manager counts each stored log once.
    // Logs are shipped after the response (and retried across the failover): wait for the
    // limit to be reached before reading the counts.
    let deadline = Instant::now() + Duration::from_secs(30);
    while total_logs(&client, edges[1], "stop").await < STOP_LIMIT {
        assert!(Instant::now() < deadline, "the stop gateway never filled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = settled_status(&client, &cluster, edges[1], "stop").await;
    let stored = status["rows"].as_u64().unwrap();
    assert!(
        (STOP_LIMIT..=STOP_LIMIT + REPORT_EVERY).contains(&stored),
        "{stored} logs stored under a limit of {STOP_LIMIT}: {status:#}"
    );
    let refused: u64 = status["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["refused"].as_u64().unwrap())
        .sum();
    assert!(refused > 0, "{status:#}");
    assert_eq!(status["limit"], STOP_LIMIT);
    assert_eq!(status["strategy"], "STOP_INSERTING");
    assert!(!status["shards"][0]["nodes"].as_array().unwrap().is_empty());
    assert!(stop_answered.len() as u64 > stored);

    // DELETE_OLDEST: exactly the limit, the newest kept, the oldest gone.
    let log_url = |id: &str| format!("{}/evict/logs/{id}", gateways_url(edges[0], ACCOUNT));
    // Logs are shipped after the response: wait for the last one, which evicts the oldest.
    let deadline = Instant::now() + Duration::from_secs(30);
    let last = evict_answered.last().unwrap();
    while api(&client, reqwest::Method::GET, log_url(last), &token, None)
        .await
        .0
        != 200
    {
        assert!(
            Instant::now() < deadline,
            "the last log {last} was never stored: {:#}",
            gateway_status(node, "evict")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = settled_status(&client, &cluster, edges[0], "evict").await;
    assert_eq!(status["rows"], EVICT_LIMIT, "{status:#}");
    let (oldest, _) = api(
        &client,
        reqwest::Method::GET,
        log_url(&evict_answered[0]),
        &token,
        None,
    )
    .await;
    assert_eq!(oldest, 404, "the oldest log was evicted");
    let evicted: u64 = status["shards"][0]["evicted"].as_u64().unwrap();
    assert!(evicted > 0, "{status:#}");

    // Lowering the gateway's own limit trims its oldest logs as the next ones arrive.
    let (status, body) = api(
        &client,
        reqwest::Method::PUT,
        format!("{}/evict", gateways_url(edges[1], ACCOUNT)),
        &token,
        Some(gateway_body(
            "evict",
            Some(LOWERED_LIMIT),
            Some("DELETE_OLDEST"),
        )),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        traffic(&client, &edges, "evict", 2).await;
        if total_logs(&client, edges[0], "evict").await == LOWERED_LIMIT {
            break;
        }
        assert!(Instant::now() < deadline, "the lowered limit never applied");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    settled_status(&client, &cluster, edges[0], "evict").await;

    // The account's logs are the sum of its gateways', each counted once.
    let account: Value =
        serde_json::from_str(&admin(node, &["--json", "account", "get", ACCOUNT])).unwrap();
    assert_eq!(account["logs"].as_u64(), Some(stored + LOWERED_LIMIT));
    assert_eq!(account["gateways"], 2);

    // Deleting a gateway drops its logs and its usage; the plan's room comes back.
    let (status, body) = api(
        &client,
        reqwest::Method::DELETE,
        format!("{}/evict", gateways_url(edges[0], ACCOUNT)),
        &token,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let account: Value =
        serde_json::from_str(&admin(node, &["--json", "account", "get", ACCOUNT])).unwrap();
    assert_eq!(account["logs"].as_u64(), Some(stored));
    let (status, body) = post(
        token.clone(),
        gateway_body("third", None, None),
        ACCOUNT,
        edges[1],
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // A revoked token stops working on every edge.
    let id = token.split('_').nth(1).unwrap().to_owned();
    admin(node, &["token", "revoke", &id]);
    let deadline = Instant::now() + Duration::from_secs(10);
    for edge in &edges {
        loop {
            let (status, _) = api(
                &client,
                reqwest::Method::GET,
                gateways_url(*edge, ACCOUNT),
                &token,
                None,
            )
            .await;
            if status == 401 {
                break;
            }
            assert!(Instant::now() < deadline, "a revoked token still works");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
