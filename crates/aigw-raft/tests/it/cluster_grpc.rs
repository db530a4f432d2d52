//! Three nodes over the real gRPC transport on 127.0.0.1, two groups sharing each connection:
//! replication and leader fail-over.

use std::collections::BTreeMap;
use std::sync::Arc;

use aigw_raft::{GroupHandle, NodeConfig, NodeId, RaftNode, WriteError};
use tokio::sync::oneshot;
use tonic::transport::server::TcpIncoming;

use crate::common::{
    KvApp, init_tracing, members, must_write, set, test_raft_config, wait_applied, wait_for_leader,
};

struct GrpcNode {
    node: Arc<RaftNode>,
    apps: BTreeMap<u64, Arc<KvApp>>,
    handles: BTreeMap<u64, GroupHandle>,
    stop_server: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    _dir: tempfile::TempDir,
}

const GROUPS: [u64; 2] = [1, 2];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_over_grpc_replicate_and_fail_over() {
    init_tracing();
    // Bind first: members must know each other's ports before any group starts.
    let mut listeners = BTreeMap::new();
    for id in 1..=3u64 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        listeners.insert(id, listener);
    }
    let addrs: BTreeMap<NodeId, String> = listeners
        .iter()
        .map(|(id, l)| (*id, l.local_addr().expect("addr").to_string()))
        .collect();
    let group_members = members(addrs.keys().copied(), |id| addrs[&id].clone());

    let mut nodes = BTreeMap::new();
    for (id, listener) in listeners {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path()).expect("open sled");
        let config = NodeConfig {
            raft: test_raft_config(),
            ..NodeConfig::new(id, addrs[&id].clone(), dir.path().join("raft-log"))
        };
        let node = Arc::new(RaftNode::new(db.clone(), config).expect("node"));

        // The Raft service next to whatever else the process serves.
        let (stop_server, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(node.grpc_service())
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                    let _ = stopped.await;
                }),
        );

        let mut apps = BTreeMap::new();
        let mut handles = BTreeMap::new();
        for group in GROUPS {
            let app = KvApp::open(&db, group);
            let handle = node
                .start_group(group, app.clone(), group_members.clone())
                .await
                .expect("start group");
            apps.insert(group, app);
            handles.insert(group, handle);
        }
        nodes.insert(
            id,
            GrpcNode {
                node,
                apps,
                handles,
                stop_server,
                server,
                _dir: dir,
            },
        );
    }
    let group_handles =
        |nodes: &BTreeMap<NodeId, GrpcNode>, group: u64| -> BTreeMap<NodeId, GroupHandle> {
            nodes
                .iter()
                .map(|(id, n)| (*id, n.handles[&group].clone()))
                .collect()
        };

    // Replicate in both groups.
    for group in GROUPS {
        let handles = group_handles(&nodes, group);
        let mut last = 0;
        for i in 0..10 {
            (_, last) = must_write(&handles, set(&format!("g{group}-{i}"), "x")).await;
        }
        wait_applied(&handles, last).await;
        for node in nodes.values() {
            assert_eq!(node.apps[&group].dump().len(), 10);
        }
    }

    // A follower refuses writes and names the leader's gRPC address.
    let handles = group_handles(&nodes, 1);
    let leader = wait_for_leader(&handles).await;
    let follower = *handles.keys().find(|id| **id != leader).expect("follower");
    match handles[&follower].write(set("nope", "x")).await {
        Err(WriteError::NotLeader {
            leader_id,
            leader_addr,
        }) => {
            assert_eq!(leader_id, Some(leader));
            assert_eq!(leader_addr.as_deref(), Some(addrs[&leader].as_str()));
        }
        other => panic!("expected NotLeader, got {other:?}"),
    }

    // Crash group 1's leader node (all its groups, its server): the others take over.
    let dead = nodes.remove(&leader).expect("leader node");
    dead.node.shutdown().await.expect("shutdown");
    let _ = dead.stop_server.send(());
    dead.server.await.expect("server task").expect("server");
    for group in GROUPS {
        let handles = group_handles(&nodes, group);
        let new_leader = wait_for_leader(&handles).await;
        assert_ne!(new_leader, leader);
        let mut last = 0;
        for i in 10..20 {
            (_, last) = must_write(&handles, set(&format!("g{group}-{i}"), "y")).await;
        }
        wait_applied(&handles, last).await;
        for node in nodes.values() {
            assert_eq!(node.apps[&group].dump().len(), 20);
        }
        handles[&new_leader]
            .ensure_linearizable()
            .await
            .expect("linearizable read on the new leader");
    }

    for (_, n) in nodes {
        n.node.shutdown().await.expect("shutdown");
        let _ = n.stop_server.send(());
        n.server.await.expect("server task").expect("server");
    }
}
