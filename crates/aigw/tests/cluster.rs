//! A real cluster of `aigw` processes — three shard nodes and two edges on loopback — under
//! traffic and faults: the leader of the gateway's shard group is killed with SIGKILL and
//! restarted, then the next leader is frozen (SIGSTOP, a node cut off without closing its
//! sockets) and thawed. Afterwards every request that was answered has exactly one log row,
//! read through either edge. Also: the bad cluster configurations a node must refuse clearly.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aigw_cluster::{Credentials, RetryPolicy, ShardRouter, follow_shard_map};
use aigw_proto::shard::shard_server::Shard;
use aigw_proto::shard::{GetLogRequest, ListLogsRequest, LogQuery};
use common::cluster::{admin, admin_credentials, admin_run, start_cluster, wait_healthy};
use common::{ADMIN_TOKEN, aigw_serve, api_get, chat, free_addr, mock, signal};
use serde_json::json;

const ACCOUNT: &str = "acct";
const GATEWAY: &str = "orders";

/// Creates the test's gateway through the first edge and waits until the last one uses it.
async fn create_gateway(client: &reqwest::Client, edges: &[SocketAddr]) {
    let resp = client
        .post(format!(
            "http://{}/client/v4/accounts/{ACCOUNT}/ai-gateway/gateways",
            edges[0]
        ))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"id": GATEWAY, "collect_logs": true, "cache_ttl": 0, "cache_invalidate_on_update": false, "rate_limiting_interval": 0, "rate_limiting_limit": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while chat(client, edges[edges.len() - 1], ACCOUNT, GATEWAY, "warmup")
        .await
        .0
        != 200
    {
        assert!(
            Instant::now() < deadline,
            "the second edge never saw the gateway"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The address of the current leader of the group holding `ACCOUNT`/`GATEWAY`.
async fn leader_of_gateway(router: &ShardRouter) -> String {
    let group = router.group_for(ACCOUNT, GATEWAY);
    router
        .list_logs(tonic::Request::new(ListLogsRequest {
            query: Some(LogQuery {
                account_id: ACCOUNT.into(),
                gateway_id: GATEWAY.into(),
                ..LogQuery::default()
            }),
            page: 1,
            per_page: 1,
            after_id: None,
        }))
        .await
        .expect("the group answers");
    router.known_leader(group).expect("a leader answered")
}

async fn is_stored(router: &ShardRouter, id: &str) -> bool {
    let id = ulid_bytes(id);
    router
        .get_log(tonic::Request::new(GetLogRequest {
            account_id: ACCOUNT.into(),
            gateway_id: GATEWAY.into(),
            id: id.into(),
        }))
        .await
        .is_ok()
}

fn ulid_bytes(id: &str) -> Vec<u8> {
    let id: ulid::Ulid = id.parse().expect("log ids are ULIDs");
    id.to_bytes().to_vec()
}

/// Every log id of the gateway, through the management API of the edge at `http`.
async fn all_log_ids(client: &reqwest::Client, http: SocketAddr) -> Vec<String> {
    let mut ids = Vec::new();
    for page in 1.. {
        let (status, body) = api_get(
            client,
            format!(
                "http://{http}/client/v4/accounts/{ACCOUNT}/ai-gateway/gateways/{GATEWAY}/logs?per_page=50&page={page}&order_by=created_at&order_by_direction=asc"
            ),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let logs = body["result"].as_array().unwrap();
        ids.extend(logs.iter().map(|l| l["id"].as_str().unwrap().to_owned()));
        if logs.len() < 50 {
            return ids;
        }
    }
    unreachable!()
}

/// Requests sent in a loop through both edges until stopped; the log ids of the answered ones.
struct Traffic {
    stop: Arc<AtomicBool>,
    answered: Arc<Mutex<Vec<String>>>,
    failed: Arc<Mutex<HashMap<u16, usize>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    fn start(client: &reqwest::Client, edges: Vec<SocketAddr>, workers: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(HashMap::new()));
        let tasks = (0..workers)
            .map(|w| {
                let (client, edges, stop, answered, failed) = (
                    client.clone(),
                    edges.clone(),
                    stop.clone(),
                    answered.clone(),
                    failed.clone(),
                );
                tokio::spawn(async move {
                    for n in 0.. {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let edge = edges[(w + n) % edges.len()];
                        let event = format!("w{w}-{n}");
                        match chat(&client, edge, ACCOUNT, GATEWAY, &event).await {
                            (200..=299, Some(id)) => answered.lock().unwrap().push(id),
                            (status, _) => *failed.lock().unwrap().entry(status).or_default() += 1,
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })
            .collect();
        Self {
            stop,
            answered,
            failed,
            tasks,
        }
    }

    fn answered(&self) -> usize {
        self.answered.lock().unwrap().len()
    }

    async fn finish(self) -> (Vec<String>, HashMap<u16, usize>) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        let answered = self.answered.lock().unwrap().clone();
        let failed = self.failed.lock().unwrap().clone();
        (answered, failed)
    }
}

/// Time from `since` until a request sent through `edge` after it is stored: how long the
/// group took to take writes again.
async fn time_to_resume(
    client: &reqwest::Client,
    router: &ShardRouter,
    edge: SocketAddr,
    since: Instant,
) -> Duration {
    for n in 0.. {
        let (status, id) = chat(client, edge, ACCOUNT, GATEWAY, &format!("probe-{n}")).await;
        assert_eq!(status, 200, "proxying never depends on the shards");
        let id = id.expect("logged");
        let sent = Instant::now();
        while sent.elapsed() < Duration::from_millis(250) {
            if is_stored(router, &id).await {
                return since.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "writes never resumed"
        );
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_and_frozen_leaders_lose_no_acknowledged_log() {
    let upstream = mock().await;
    let client = reqwest::Client::new();
    let mut cluster = start_cluster(&client, format!("{}/v1", upstream.base_url())).await;
    let edges: Vec<SocketAddr> = cluster.edges.iter().map(|(addr, _)| *addr).collect();

    create_gateway(&client, &edges).await;

    let seeds: Vec<String> = cluster.grpc.iter().map(ToString::to_string).collect();
    let map = follow_shard_map(seeds, RetryPolicy::default(), admin_credentials())
        .await
        .unwrap();
    let router = ShardRouter::new(map);

    let traffic = Traffic::start(&client, edges.clone(), 4);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Crash the leader.
    let leader = cluster.index_of(&leader_of_gateway(&router).await);
    let before = traffic.answered();
    cluster.kill_shard(leader);
    let killed = Instant::now();
    let resumed = time_to_resume(&client, &router, edges[0], killed).await;
    eprintln!(
        "leader (node {}) killed: writes resumed after {resumed:?}",
        leader + 1
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(traffic.answered() > before, "traffic flowed on");

    // Bring it back; it catches up as a follower.
    cluster.start_shard(leader);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Freeze the new leader: it stops answering but keeps its connections, as a node cut off
    // by the network would.
    let frozen = cluster.index_of(&leader_of_gateway(&router).await);
    signal(cluster.shard(frozen), "STOP");
    let froze = Instant::now();
    let resumed = time_to_resume(&client, &router, edges[1], froze).await;
    eprintln!(
        "leader (node {}) frozen: writes resumed after {resumed:?}",
        frozen + 1
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    signal(cluster.shard(frozen), "CONT");
    tokio::time::sleep(Duration::from_secs(2)).await;

    let (answered, failed) = traffic.finish().await;
    assert!(failed.is_empty(), "every request was answered: {failed:?}");
    assert!(answered.len() > 100, "enough traffic: {}", answered.len());

    // Logging is asynchronous: wait until the last answered request is stored.
    let last = answered.last().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !is_stored(&router, last).await {
        assert!(
            Instant::now() < deadline,
            "the last log was never stored\nedge1:\n{}\nedge2:\n{}",
            cluster.log_tail("edge1"),
            cluster.log_tail("edge2")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Leadership went to the survivors; the preferred leaders, back and caught up, reclaim it.
    let shard1 = cluster.grpc[0];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = admin_run(shard1, &["--json", "status"]);
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let preferred_lead = status["groups"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["placement"].is_null() || g["leader"] == g["placement"][0]);
        if preferred_lead {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leaders never returned to their preferred nodes: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let answered: HashSet<String> = answered.into_iter().collect();
    for edge in &edges {
        let listed = all_log_ids(&client, *edge).await;
        let unique: HashSet<&String> = listed.iter().collect();
        assert_eq!(unique.len(), listed.len(), "no log is stored twice");
        let missing: Vec<&String> = answered.iter().filter(|id| !unique.contains(id)).collect();
        assert!(
            missing.is_empty(),
            "{} of {} answered requests have no log (through {edge}): {:?}",
            missing.len(),
            answered.len(),
            &missing[..missing.len().min(5)]
        );
    }
}

/// Whether every group of the map runs on exactly its placement, each replica voting.
fn placement_reached(status: &serde_json::Value) -> bool {
    status["groups"].as_array().unwrap().iter().all(|g| {
        let Some(placement) = g["placement"].as_array() else {
            return true; // the account-manager group is not placed by the map
        };
        let mut wanted: Vec<u64> = placement.iter().map(|n| n.as_u64().unwrap()).collect();
        let mut running: Vec<u64> = g["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["node_id"].as_u64().unwrap())
            .collect();
        wanted.sort_unstable();
        running.sort_unstable();
        wanted == running && g["leader"].is_u64()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_added_node_takes_replicas_while_traffic_flows() {
    let upstream = mock().await;
    let client = reqwest::Client::new();
    let mut cluster = start_cluster(&client, format!("{}/v1", upstream.base_url())).await;
    let edges: Vec<SocketAddr> = cluster.edges.iter().map(|(addr, _)| *addr).collect();
    let shard1 = cluster.grpc[0];

    // The admin API refuses callers without the token.
    let out = Command::new(env!("CARGO_BIN_EXE_aigw"))
        .args(["admin", "--addr", &shard1.to_string(), "health"])
        .env_remove("AIGW_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("admin_token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_healthy(shard1).await;
    // So do the account manager's services, which can rewrite the shard map.
    let anonymous = RetryPolicy {
        deadline: Duration::from_millis(500),
        ..RetryPolicy::default()
    };
    let refused = follow_shard_map(
        cluster.grpc.iter().map(ToString::to_string).collect(),
        anonymous,
        Credentials::none(),
    )
    .await
    .unwrap_err();
    assert!(refused.message().contains("admin_token"), "{refused}");

    create_gateway(&client, &edges).await;
    let traffic = Traffic::start(&client, edges.clone(), 2);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A fourth shard node joins: it knows the members, and is added by an operator.
    cluster.grpc.push(free_addr());
    cluster.shards.push(None);
    cluster.start_shard(3);
    let fourth = cluster.grpc[3].to_string();
    let out = admin(shard1, &["add-node", "--id", "4", "--addr", &fourth]);
    assert!(out.contains("version 2"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        // Exits 1 while a node does not answer (the new one is starting), printing all the same.
        let out = admin_run(shard1, &["--json", "status"]);
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if status["map_version"] == 2 && placement_reached(&status) {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "replicas never moved: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let on_fourth = status["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| {
            g["replicas"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["node_id"] == 4)
        })
        .count();
    assert!(on_fourth > 0, "the new node holds replicas: {status:#}");

    // A second node started with the new node's id is refused: it would serve node 4's groups.
    let impostor = cluster
        .node("shard")
        .env("AIGW_NODE_ID", "4")
        .env("AIGW_GRPC_ADDR", free_addr().to_string())
        .env("AIGW_HTTP_ADDR", free_addr().to_string())
        .env("AIGW_DATA_DIR", cluster.dir.path().join("impostor"))
        .output()
        .expect("the impostor runs");
    assert!(!impostor.status.success());
    let stderr = String::from_utf8_lossy(&impostor.stderr);
    assert!(
        stderr.contains("node id 4 is already in the shard map") && stderr.contains(&fourth),
        "{stderr}"
    );

    let (answered, failed) = traffic.finish().await;
    assert!(failed.is_empty(), "{failed:?}");
    let seeds: Vec<String> = cluster.grpc.iter().map(ToString::to_string).collect();
    let router = ShardRouter::new(
        follow_shard_map(seeds, RetryPolicy::default(), admin_credentials())
            .await
            .unwrap(),
    );
    let last = answered.last().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !is_stored(&router, last).await {
        assert!(Instant::now() < deadline, "the last log was never stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listed: HashSet<String> = all_log_ids(&client, edges[1]).await.into_iter().collect();
    let missing = answered.iter().filter(|id| !listed.contains(*id)).count();
    assert_eq!(missing, 0, "every answered request has its log");
}

/// Runs `cmd` to exit (bounded), returning its stderr; asserts it failed.
fn fails_with(cmd: &mut Command) -> String {
    let out = cmd.output().expect("aigw runs");
    assert!(!out.status.success(), "must refuse to run");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_cluster_configurations_are_refused_clearly() {
    // An edge pointed at no shard gives up after its join timeout, naming what it tried.
    let nowhere = free_addr();
    let stderr = fails_with(
        aigw_serve()
            .env("AIGW_ROLE", "edge")
            .env("AIGW_HTTP_ADDR", free_addr().to_string())
            .env("AIGW_CLUSTER__MEMBERS", format!("1={nowhere}"))
            .env("AIGW_CLUSTER__JOIN_TIMEOUT_MS", "1000"),
    );
    assert!(
        stderr.contains("cannot reach the cluster") && stderr.contains(&nowhere.to_string()),
        "{stderr}"
    );

    // A corrupt peer address.
    let stderr = fails_with(
        aigw_serve()
            .env("AIGW_ROLE", "shard")
            .env("AIGW_CLUSTER__MEMBERS", "1=127.0.0.1:9101,2=127.0.0.1:port"),
    );
    assert!(
        stderr.contains("`cluster.members`") && stderr.contains("127.0.0.1:port"),
        "{stderr}"
    );

    // A node id already listed for another address.
    let stderr = fails_with(
        aigw_serve()
            .env("AIGW_ROLE", "shard")
            .env("AIGW_NODE_ID", "2")
            .env("AIGW_GRPC_ADDR", "127.0.0.1:9999")
            .env(
                "AIGW_CLUSTER__MEMBERS",
                "1=127.0.0.1:9101,2=127.0.0.1:9102,3=127.0.0.1:9103",
            ),
    );
    assert!(
        stderr.contains("`node_id`") && stderr.contains("127.0.0.1:9102"),
        "{stderr}"
    );

    // A cluster role without members.
    let stderr = fails_with(aigw_serve().env("AIGW_ROLE", "shard"));
    assert!(stderr.contains("`cluster.members`"), "{stderr}");
}
