//! The shard map in the account-manager group, three replicas over real gRPC: puts are
//! compare-and-set, a follower of the map sees every version, and keeps seeing them after the
//! replica it watched dies.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aigw_accounts::{AccountsApp, GatewayRegistry, ShardMapService, ShardMapStore};
use aigw_cluster::{RetryPolicy, follow_shard_map};
use aigw_placement::{NodeInfo, ShardMap};
use aigw_proto::LEADER_METADATA;
use aigw_proto::admin::cluster_client::ClusterClient;
use aigw_proto::admin::cluster_server::ClusterServer;
use aigw_proto::admin::{GetShardMapRequest, PutShardMapRequest};
use aigw_raft::openraft::BasicNode;
use aigw_raft::{NodeConfig, NodeId, RaftNode};
use tokio::sync::oneshot;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Status};

/// The account-manager group's id.
const ACCOUNTS: u64 = 0;

struct ManagerNode {
    raft: RaftNode,
    stop_server: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    _dir: tempfile::TempDir,
}

async fn start_managers() -> BTreeMap<NodeId, (String, ManagerNode)> {
    let mut listeners = BTreeMap::new();
    for id in 1..=3u64 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        listeners.insert(id, (addr, listener));
    }
    let members: BTreeMap<NodeId, BasicNode> = listeners
        .iter()
        .map(|(id, (addr, _))| (*id, BasicNode::new(addr.clone())))
        .collect();
    let mut nodes = BTreeMap::new();
    for (id, (addr, listener)) in listeners {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path()).expect("sled");
        let raft = RaftNode::new(
            db.clone(),
            NodeConfig {
                raft: aigw_raft::openraft::Config {
                    heartbeat_interval: 50,
                    election_timeout_min: 300,
                    election_timeout_max: 600,
                    ..aigw_raft::default_raft_config()
                },
                ..NodeConfig::new(id, addr.clone())
            },
        )
        .expect("raft node");
        let registry = GatewayRegistry::open(db.open_tree("gateways").expect("tree")).expect("reg");
        let store = ShardMapStore::open(db.open_tree("shard_map").expect("tree")).expect("store");
        let group = raft
            .start_group(
                ACCOUNTS,
                Arc::new(AccountsApp::new(registry, store.clone())),
                members.clone(),
            )
            .await
            .expect("start group");
        let (stop_server, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(raft.grpc_service())
                .add_service(ClusterServer::new(ShardMapService::new(store, group)))
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                    let _ = stopped.await;
                }),
        );
        nodes.insert(
            id,
            (
                addr,
                ManagerNode {
                    raft,
                    stop_server,
                    server,
                    _dir: dir,
                },
            ),
        );
    }
    nodes
}

/// Puts `map` through whichever replica leads (waiting out elections).
async fn put(addrs: &[String], expected_version: u64, map: Vec<u8>) -> Result<u64, Status> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        for addr in addrs {
            let Ok(mut client) = ClusterClient::connect(format!("http://{addr}")).await else {
                continue;
            };
            let request = PutShardMapRequest {
                expected_version,
                map: map.clone().into(),
            };
            match client.put_shard_map(request).await {
                Ok(reply) => return Ok(reply.into_inner().version),
                Err(e) if e.metadata().get(LEADER_METADATA).is_some() => {}
                Err(e) if e.code() == Code::Unavailable => {}
                Err(e)
                    if e.code() == Code::FailedPrecondition && e.message().contains("leader") => {}
                Err(e) => return Err(e),
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no leader took the put"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn map(version_steps: u64, nodes: u64) -> ShardMap {
    let infos = |n: u64| (1..=n).map(|id| NodeInfo::active(id, format!("10.0.0.{id}:9090")));
    let mut map = ShardMap::plan(infos(3), 8, 3, 64).expect("plan");
    for _ in 1..version_steps {
        map = map.rebalance(infos(nodes), 3, 64).expect("rebalance");
    }
    map
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shard_map_is_replicated_compared_and_set_and_followed() {
    let mut nodes = start_managers().await;
    let addrs: Vec<String> = nodes.values().map(|(addr, _)| addr.clone()).collect();

    let v1 = map(1, 3);
    assert_eq!(put(&addrs, 0, v1.to_bytes()).await.expect("put v1"), 1);
    let mut follower = follow_shard_map(addrs.clone(), RetryPolicy::default())
        .await
        .expect("follow");
    assert_eq!(**follower.borrow_and_update(), v1);

    // The next version reaches the follower without it asking.
    let v2 = map(2, 4);
    assert_eq!(put(&addrs, 1, v2.to_bytes()).await.expect("put v2"), 2);
    tokio::time::timeout(
        Duration::from_secs(10),
        follower.wait_for(|m| m.version() == 2),
    )
    .await
    .expect("v2 in time")
    .expect("v2");
    assert_eq!(**follower.borrow(), v2);

    // A put against a stale version, a map that is not the next version, and bytes that are
    // no map: each refused, naming why.
    let stale = put(&addrs, 1, map(2, 5).to_bytes()).await.unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);
    assert!(
        stale.message().contains("at version 2, not 1"),
        "{}",
        stale.message()
    );
    let skipping = put(&addrs, 2, map(4, 5).to_bytes()).await.unwrap_err();
    assert_eq!(skipping.code(), Code::InvalidArgument);
    assert!(
        skipping.message().contains("must be version 3"),
        "{}",
        skipping.message()
    );
    let garbage = put(&addrs, 2, b"not a map".to_vec()).await.unwrap_err();
    assert_eq!(garbage.code(), Code::InvalidArgument);

    // The follower watches the first seed; kill it. The survivors elect (if it led), take v3,
    // and the follower resumes on one of them.
    let (_, first) = nodes.remove(&1).expect("node 1");
    first.raft.shutdown().await.expect("shutdown");
    let _ = first.stop_server.send(());
    first.server.await.expect("server task").expect("server");
    let survivors: Vec<String> = nodes.values().map(|(addr, _)| addr.clone()).collect();
    let v3 = v2
        .rebalance(map(1, 3).nodes().values().cloned(), 3, 64)
        .expect("v3");
    assert_eq!(put(&survivors, 2, v3.to_bytes()).await.expect("put v3"), 3);
    tokio::time::timeout(
        Duration::from_secs(20),
        follower.wait_for(|m| m.version() == 3),
    )
    .await
    .expect("v3 in time")
    .expect("v3");
    assert_eq!(**follower.borrow(), v3);

    // A linearizable read on the leader agrees.
    let mut found = None;
    for addr in &survivors {
        let mut client = ClusterClient::connect(format!("http://{addr}"))
            .await
            .expect("connect");
        if let Ok(reply) = client.get_shard_map(GetShardMapRequest {}).await {
            found = Some(reply.into_inner());
        }
    }
    let found = found.expect("the leader answers");
    assert_eq!(ShardMap::from_bytes(&found.map).expect("decode"), v3);

    for (_, (_, node)) in nodes {
        node.raft.shutdown().await.expect("shutdown");
        let _ = node.stop_server.send(());
        node.server.await.expect("server task").expect("server");
    }
}

#[tokio::test]
async fn following_nowhere_is_a_clear_error() {
    let policy = RetryPolicy {
        deadline: Duration::from_millis(300),
        ..RetryPolicy::default()
    };
    let err = follow_shard_map(vec!["127.0.0.1:1".into()], policy)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message().contains("no shard map from any of"),
        "{}",
        err.message()
    );
    let err = follow_shard_map(vec![], policy).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}
