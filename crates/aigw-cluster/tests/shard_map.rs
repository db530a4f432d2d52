//! The account-manager group, three replicas over real gRPC, as other nodes use it through
//! [`AccountsClient`]: shard map puts are compare-and-set, a follower of the map sees every
//! version, and keeps seeing them after the replica it watched dies; gateways written through
//! any replica reach a followed mirror, which also survives the loss of its replica.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aigw_accounts::{
    AccountBook, AccountsApp, GatewayRegistry, GatewaysService, ShardMapService, ShardMapStore,
};
use aigw_cluster::{AccountsClient, Credentials, RetryPolicy, follow_gateways, follow_shard_map};
use aigw_placement::{NodeInfo, ShardMap};
use aigw_proto::admin::cluster_client::ClusterClient;
use aigw_proto::admin::cluster_server::{Cluster, ClusterServer};
use aigw_proto::admin::gateways_server::{Gateways, GatewaysServer};
use aigw_proto::admin::{
    CreateGatewayRequest, GatewayRef, GatewaySettings, GetShardMapRequest, PutShardMapRequest,
    UpdateGatewayRequest,
};
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
                ..NodeConfig::new(id, addr.clone(), dir.path().join("raft-log"))
            },
        )
        .expect("raft node");
        let registry = GatewayRegistry::open(db.open_tree("gateways").expect("tree")).expect("reg");
        let store = ShardMapStore::open(db.open_tree("shard_map").expect("tree")).expect("store");
        let book = AccountBook::open(
            db.open_tree("book").expect("tree"),
            registry.mirror().clone(),
        )
        .expect("book");
        let group = raft
            .start_group(
                ACCOUNTS,
                Arc::new(AccountsApp::new(
                    registry.clone(),
                    book.clone(),
                    store.clone(),
                )),
                members.clone(),
            )
            .await
            .expect("start group");
        let (stop_server, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(raft.grpc_service())
                .add_service(ClusterServer::new(ShardMapService::new(
                    store,
                    group.clone(),
                )))
                .add_service(GatewaysServer::new(GatewaysService::new(
                    registry, book, group,
                )))
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

/// Puts `map` through whichever replica leads (the client waits out elections).
async fn put(addrs: &[String], expected_version: u64, map: Vec<u8>) -> Result<u64, Status> {
    let client = AccountsClient::new(addrs.to_vec(), RetryPolicy::default(), Credentials::none())?;
    let request = PutShardMapRequest {
        expected_version,
        map: map.into(),
    };
    Ok(client
        .put_shard_map(tonic::Request::new(request))
        .await?
        .into_inner()
        .version)
}

async fn stop(node: ManagerNode) {
    node.raft.shutdown().await.expect("shutdown");
    let _ = node.stop_server.send(());
    node.server.await.expect("server task").expect("server");
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
    let mut follower = follow_shard_map(addrs.clone(), RetryPolicy::default(), Credentials::none())
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
    stop(first).await;
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
        stop(node).await;
    }
}

/// Waits until `check` holds (the mirror is updated asynchronously).
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn create(account: &str, id: &str) -> tonic::Request<CreateGatewayRequest> {
    tonic::Request::new(CreateGatewayRequest {
        account_id: account.into(),
        id: id.into(),
        settings: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_written_anywhere_reach_a_mirror_that_outlives_its_replica() {
    let mut nodes = start_managers().await;
    let addrs: Vec<String> = nodes.values().map(|(addr, _)| addr.clone()).collect();
    let client = AccountsClient::new(addrs.clone(), RetryPolicy::default(), Credentials::none())
        .expect("client");

    // Written before the mirror exists: it arrives with the first snapshot.
    client
        .create_gateway(create("a", "prod"))
        .await
        .expect("create");
    let mirror = follow_gateways(addrs.clone(), RetryPolicy::default(), Credentials::none())
        .await
        .expect("follow");
    assert!(mirror.get("a", "prod").is_some());

    // Later changes stream in: an update, a delete, an implicit default made real.
    client
        .update_gateway(tonic::Request::new(UpdateGatewayRequest {
            account_id: "a".into(),
            id: "prod".into(),
            settings: Some(GatewaySettings {
                collect_logs: false,
                ..GatewaySettings::default()
            }),
        }))
        .await
        .expect("update");
    client
        .create_gateway(create("a", "dev"))
        .await
        .expect("create");
    client
        .delete_gateway(tonic::Request::new(GatewayRef {
            account_id: "a".into(),
            id: "dev".into(),
        }))
        .await
        .expect("delete");
    client
        .get_gateway(tonic::Request::new(GatewayRef {
            account_id: "b".into(),
            id: "default".into(),
        }))
        .await
        .expect("default");
    eventually("changes reach the mirror", || {
        mirror
            .settings("a", "prod")
            .is_some_and(|s| !s.collect_logs)
            && mirror.get("a", "dev").is_none()
            && mirror.get("b", "default").is_some()
    })
    .await;
    let duplicate = client
        .create_gateway(create("a", "prod"))
        .await
        .unwrap_err();
    assert_eq!(
        duplicate.code(),
        Code::AlreadyExists,
        "not retried: {duplicate}"
    );

    // The mirror watches the first seed; stop it. The survivors take a write, and the mirror
    // resumes on one of them.
    let (_, first) = nodes.remove(&1).expect("node 1");
    stop(first).await;
    client
        .create_gateway(create("c", "late"))
        .await
        .expect("create on survivors");
    eventually("the mirror resumes on a survivor", || {
        mirror.get("c", "late").is_some() && mirror.get("a", "prod").is_some()
    })
    .await;

    for (_, (_, node)) in nodes {
        stop(node).await;
    }
}

#[tokio::test]
async fn following_nowhere_is_a_clear_error() {
    let policy = RetryPolicy {
        deadline: Duration::from_millis(300),
        ..RetryPolicy::default()
    };
    let err = follow_shard_map(vec!["127.0.0.1:1".into()], policy, Credentials::none())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message().contains("no shard map from any of"),
        "{}",
        err.message()
    );
    let err = follow_shard_map(vec![], policy, Credentials::none())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}
