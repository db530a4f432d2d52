//! The router against three real shard nodes on 127.0.0.1: each node a Raft node and a
//! `ShardHost` behind one gRPC server, four shard groups of three replicas placed by the
//! `ShardMap`, bodies in one shared object store. Writes and reads reach the right group's
//! leader; when a leader's node dies the router finds the new leader by itself, and nothing
//! that was acknowledged is lost.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aigw_blob::{BlobStore, MemBlobStore};
use aigw_cluster::{RetryPolicy, ShardRouter};
use aigw_logindex::LogIndex;
use aigw_placement::{NodeId, NodeInfo, ShardMap};
use aigw_proto::GROUP_METADATA;
use aigw_proto::shard::shard_client::ShardClient;
use aigw_proto::shard::shard_server::{Shard, ShardServer};
use aigw_proto::shard::{
    BodyKind, GetBodyRequest, IngestEntry, IngestRequest, ListLogsRequest, LogQuery, LogRecord,
};
use aigw_raft::openraft::BasicNode;
use aigw_raft::{NodeConfig, RaftNode};
use aigw_shard::{ShardApp, ShardHost, ShardService};
use tokio::sync::{oneshot, watch};
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request};
use ulid::Ulid;

const ACCOUNT: &str = "acct";
const GROUPS: u32 = 4;

struct ShardNode {
    raft: RaftNode,
    stop_server: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    _dir: tempfile::TempDir,
}

impl ShardNode {
    /// Crash-stop: the node's groups and its server go away.
    async fn kill(self) {
        self.raft.shutdown().await.expect("raft shutdown");
        let _ = self.stop_server.send(());
        self.server.await.expect("server task").expect("server");
    }
}

fn raft_config() -> aigw_raft::openraft::Config {
    aigw_raft::openraft::Config {
        heartbeat_interval: 50,
        election_timeout_min: 300,
        election_timeout_max: 600,
        ..aigw_raft::default_raft_config()
    }
}

/// Three shard nodes serving the groups `map` gives them.
async fn start_nodes(blobs: Arc<dyn BlobStore>) -> (BTreeMap<NodeId, ShardNode>, ShardMap) {
    let mut listeners = BTreeMap::new();
    for id in 1..=3u64 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        listeners.insert(id, listener);
    }
    let infos = listeners
        .iter()
        .map(|(id, l)| NodeInfo::active(*id, l.local_addr().expect("addr").to_string()));
    let map = ShardMap::plan(infos, GROUPS, 3, 64).expect("plan");

    let mut nodes = BTreeMap::new();
    for (id, listener) in listeners {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path()).expect("sled");
        let addr = map.node(id).expect("node").addr.clone();
        let raft = RaftNode::new(
            db.clone(),
            NodeConfig {
                raft: raft_config(),
                ..NodeConfig::new(id, addr, dir.path().join("raft-log"))
            },
        )
        .expect("raft node");
        let host = ShardHost::new();
        let (stop_server, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(raft.grpc_service())
                .add_service(
                    ShardServer::new(host.clone())
                        .max_decoding_message_size(aigw_proto::MAX_SHARD_MESSAGE_BYTES)
                        .max_encoding_message_size(aigw_proto::MAX_SHARD_MESSAGE_BYTES),
                )
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                    let _ = stopped.await;
                }),
        );
        for (group, placement) in map.groups() {
            if !placement.replicas.contains(&id) {
                continue;
            }
            let members = placement
                .replicas
                .iter()
                .map(|r| {
                    (
                        *r,
                        BasicNode::new(map.node(*r).expect("replica").addr.clone()),
                    )
                })
                .collect();
            let index = LogIndex::open(db.open_tree(format!("shard/{group}/index")).expect("tree"))
                .expect("index");
            let handle = raft
                .start_group(*group, Arc::new(ShardApp::new(index.clone())), members)
                .await
                .expect("start group");
            host.insert(
                *group,
                Arc::new(ShardService::new(index, handle, blobs.clone())),
            );
        }
        nodes.insert(
            id,
            ShardNode {
                raft,
                stop_server,
                server,
                _dir: dir,
            },
        );
    }
    (nodes, map)
}

fn entry(gateway: &str, n: u64) -> IngestEntry {
    let at = 1_700_000_000_000 + n;
    IngestEntry {
        record: Some(LogRecord {
            id: Ulid::from_parts(at, u128::from(n))
                .to_bytes()
                .to_vec()
                .into(),
            created_at_ms: at as i64,
            account_id: ACCOUNT.into(),
            gateway_id: gateway.into(),
            provider: "openai".into(),
            model: "gpt-4o-mini".into(),
            success: true,
            payload_collected: true,
            ..Default::default()
        }),
        request_body: Some(format!("request {gateway} {n}").into()),
        response_body: Some(format!("response {gateway} {n}").into()),
    }
}

async fn count(router: &ShardRouter, gateway: &str) -> u64 {
    router
        .list_logs(Request::new(ListLogsRequest {
            query: Some(LogQuery {
                account_id: ACCOUNT.into(),
                gateway_id: gateway.into(),
                ..Default::default()
            }),
            page: 1,
            per_page: 1,
            after_id: None,
        }))
        .await
        .expect("list")
        .into_inner()
        .total_count
}

async fn ingest(router: &ShardRouter, entries: Vec<IngestEntry>) -> u32 {
    router
        .ingest(Request::new(IngestRequest { entries }))
        .await
        .expect("ingest")
        .into_inner()
        .accepted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_follows_leaders_across_groups_and_a_node_crash() {
    let blobs: Arc<dyn BlobStore> = Arc::new(MemBlobStore::new());
    let (mut nodes, map) = start_nodes(blobs).await;
    let (_map_tx, map_rx) = watch::channel(Arc::new(map.clone()));
    let router = ShardRouter::new(map_rx);

    // Eight gateways spread over the four groups; one batch holds them all.
    let gateways: Vec<String> = (0..8).map(|g| format!("gw{g}")).collect();
    let groups: std::collections::BTreeSet<u64> = gateways
        .iter()
        .map(|g| router.group_for(ACCOUNT, g))
        .collect();
    assert!(
        groups.len() > 1,
        "the batch spans several groups: {groups:?}"
    );
    let batch: Vec<IngestEntry> = (0..160)
        .map(|n| entry(&gateways[(n % 8) as usize], n))
        .collect();
    assert_eq!(ingest(&router, batch.clone()).await, 160);
    assert_eq!(
        ingest(&router, batch).await,
        0,
        "a re-sent batch is not duplicated"
    );
    for gateway in &gateways {
        assert_eq!(count(&router, gateway).await, 20, "{gateway}");
    }
    let body = router
        .get_body(Request::new(GetBodyRequest {
            account_id: ACCOUNT.into(),
            gateway_id: "gw3".into(),
            id: Ulid::from_parts(1_700_000_000_003, 3)
                .to_bytes()
                .to_vec()
                .into(),
            kind: BodyKind::Response as i32,
        }))
        .await
        .expect("body")
        .into_inner()
        .body;
    assert_eq!(body, "response gw3 3");

    // Kill the node leading gw0's group, then keep writing to gw0: the router retries on the
    // survivors until one of them is elected.
    let group = router.group_for(ACCOUNT, "gw0");
    let leader_addr = router
        .known_leader(group)
        .expect("leader learned from replies");
    let leader = map
        .nodes()
        .values()
        .find(|n| n.addr == leader_addr)
        .expect("leader is a node")
        .id;
    nodes.remove(&leader).expect("running").kill().await;
    let killed = Instant::now();
    let after: Vec<IngestEntry> = (1000..1010).map(|n| entry("gw0", n)).collect();
    assert_eq!(ingest(&router, after).await, 10);
    let resumed = killed.elapsed();
    assert_ne!(router.known_leader(group), Some(leader_addr));
    eprintln!("writes to group {group} resumed {resumed:?} after its leader's node died");
    for gateway in &gateways {
        let expected = if gateway == "gw0" { 30 } else { 20 };
        assert_eq!(count(&router, gateway).await, expected, "{gateway}");
    }

    for node in nodes.into_values() {
        node.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_routes_are_clear_errors() {
    let blobs: Arc<dyn BlobStore> = Arc::new(MemBlobStore::new());
    let (nodes, map) = start_nodes(blobs).await;
    let addr = map.node(1).expect("node 1").addr.clone();
    let mut client = ShardClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");

    // A call without a group, with a malformed group, for a group the node does not host.
    let list = || ListLogsRequest {
        query: Some(LogQuery {
            account_id: ACCOUNT.into(),
            gateway_id: "gw".into(),
            ..Default::default()
        }),
        page: 1,
        per_page: 1,
        after_id: None,
    };
    let err = client.list_logs(Request::new(list())).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains(GROUP_METADATA), "{}", err.message());
    for (value, code, needle) in [
        ("seven", Code::InvalidArgument, "must be a group id"),
        ("99", Code::Unavailable, "shard group 99 is not hosted here"),
    ] {
        let mut request = Request::new(list());
        request
            .metadata_mut()
            .insert(GROUP_METADATA, value.parse().expect("ascii"));
        let err = client.list_logs(request).await.unwrap_err();
        assert_eq!(err.code(), code, "{value}");
        assert!(err.message().contains(needle), "{}", err.message());
    }

    // A map pointing at nodes that are not there: a clear UNAVAILABLE within the deadline.
    let nowhere = ShardMap::plan(
        (1..=3).map(|id| NodeInfo::active(id, format!("127.0.0.1:{}", 1 + id))),
        2,
        3,
        16,
    )
    .expect("plan");
    let (_tx, rx) = watch::channel(Arc::new(nowhere));
    let router = ShardRouter::new(rx).with_policy(RetryPolicy {
        deadline: Duration::from_millis(500),
        ..RetryPolicy::default()
    });
    let started = Instant::now();
    let err = router
        .ingest(Request::new(IngestRequest {
            entries: vec![entry("gw", 1)],
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message().contains("is unavailable after"),
        "{}",
        err.message()
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    for node in nodes.into_values() {
        node.kill().await;
    }
}
