//! Test fixtures: a key-value [`App`] on a sled tree, and waits on Raft metrics (never sleeps;
//! only [`open_db`] polls, for a file lock).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use aigw_raft::openraft::{BasicNode, ServerState};
use aigw_raft::{App, AppError, Command, GroupHandle, NodeId, WriteError};

/// How long any wait in these tests may take before the test fails; generous for a loaded CI.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Opens (or reopens) the sled database in `dir`. A node that was just shut down may still
/// hold its handle for a moment — openraft's state-machine worker and a blocking flush end
/// after `Raft::shutdown` returns — and sled keeps the directory's file lock until the last
/// handle is dropped, so a held lock is waited for (at most [`TIMEOUT`]).
pub async fn open_db(dir: &std::path::Path) -> sled::Db {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        match sled::open(dir) {
            Ok(db) => return db,
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("open sled at {}: {e:?}", dir.display()),
        }
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A Raft config for tests: production shape, faster timers.
pub fn test_raft_config() -> aigw_raft::openraft::Config {
    aigw_raft::openraft::Config {
        heartbeat_interval: 50,
        election_timeout_min: 300,
        election_timeout_max: 600,
        ..aigw_raft::default_raft_config()
    }
}

/// `set key value` commands over a sled tree. `apply` is idempotent (a set), snapshots are the
/// whole tree. Optional delays make apply and snapshot slow, to interleave them.
pub struct KvApp {
    tree: sled::Tree,
    apply_delay: Duration,
    snapshot_delay_per_key: Duration,
    /// `apply` calls so far.
    pub applies: AtomicU64,
    /// `apply` calls made while a `snapshot` was running.
    pub applies_during_snapshot: AtomicU64,
    /// `restore` calls so far.
    pub restores: AtomicU64,
    snapshotting: AtomicBool,
}

impl KvApp {
    pub fn open(db: &sled::Db, group: u64) -> Arc<Self> {
        Self::open_slow(db, group, Duration::ZERO, Duration::ZERO)
    }

    pub fn open_slow(
        db: &sled::Db,
        group: u64,
        apply_delay: Duration,
        snapshot_delay_per_key: Duration,
    ) -> Arc<Self> {
        let tree = db
            .open_tree(aigw_raft::group_tree_name(group, "kv"))
            .expect("open kv tree");
        Arc::new(Self {
            tree,
            apply_delay,
            snapshot_delay_per_key,
            applies: AtomicU64::new(0),
            applies_during_snapshot: AtomicU64::new(0),
            restores: AtomicU64::new(0),
            snapshotting: AtomicBool::new(false),
        })
    }

    /// Everything stored, as text.
    pub fn dump(&self) -> BTreeMap<String, String> {
        self.tree
            .iter()
            .map(|kv| {
                let (k, v) = kv.expect("read kv");
                (
                    String::from_utf8_lossy(&k).into_owned(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect()
    }

    pub fn get(&self, key: &str) -> Option<String> {
        self.tree
            .get(key)
            .expect("read kv")
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }
}

pub fn set(key: &str, value: &str) -> Vec<u8> {
    format!("{key}={value}").into_bytes()
}

fn put_len_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&u32::try_from(bytes.len()).expect("small").to_be_bytes());
    out.extend_from_slice(bytes);
}

fn take_len_prefixed<'a>(data: &mut &'a [u8]) -> Result<&'a [u8], AppError> {
    let (len, rest) = data
        .split_at_checked(4)
        .ok_or_else(|| AppError::new("truncated snapshot"))?;
    let len = u32::from_be_bytes(len.try_into().map_err(AppError::new)?) as usize;
    let (bytes, rest) = rest
        .split_at_checked(len)
        .ok_or_else(|| AppError::new("truncated snapshot"))?;
    *data = rest;
    Ok(bytes)
}

impl App for KvApp {
    fn apply(&self, _index: u64, command: &[u8]) -> Result<Vec<u8>, AppError> {
        if !self.apply_delay.is_zero() {
            std::thread::sleep(self.apply_delay);
        }
        let eq = command
            .iter()
            .position(|b| *b == b'=')
            .ok_or_else(|| AppError::new("command without '='"))?;
        let previous = self
            .tree
            .insert(&command[..eq], &command[eq + 1..])
            .map_err(AppError::new)?;
        self.applies.fetch_add(1, Ordering::SeqCst);
        if self.snapshotting.load(Ordering::SeqCst) {
            self.applies_during_snapshot.fetch_add(1, Ordering::SeqCst);
        }
        Ok(previous.map(|v| v.to_vec()).unwrap_or_default())
    }

    fn snapshot(&self) -> Result<Vec<u8>, AppError> {
        self.snapshotting.store(true, Ordering::SeqCst);
        let mut out = Vec::new();
        for kv in self.tree.iter() {
            let (k, v) = kv.map_err(AppError::new)?;
            put_len_prefixed(&mut out, &k);
            put_len_prefixed(&mut out, &v);
            if !self.snapshot_delay_per_key.is_zero() {
                std::thread::sleep(self.snapshot_delay_per_key);
            }
        }
        self.snapshotting.store(false, Ordering::SeqCst);
        Ok(out)
    }

    fn restore(&self, mut data: &[u8]) -> Result<(), AppError> {
        self.tree.clear().map_err(AppError::new)?;
        while !data.is_empty() {
            let k = take_len_prefixed(&mut data)?;
            let v = take_len_prefixed(&mut data)?;
            self.tree.insert(k, v).map_err(AppError::new)?;
        }
        self.restores.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// The members map of nodes `ids`, each at address `addr(id)`.
pub fn members(
    ids: impl IntoIterator<Item = NodeId>,
    addr: impl Fn(NodeId) -> String,
) -> BTreeMap<NodeId, BasicNode> {
    ids.into_iter()
        .map(|id| (id, BasicNode::new(addr(id))))
        .collect()
}

/// Wait until one of `handles` leads (as it and at least one other handle see it); return it.
pub async fn wait_for_leader(handles: &BTreeMap<NodeId, GroupHandle>) -> NodeId {
    let alive: HashSet<NodeId> = handles.keys().copied().collect();
    let first = handles.values().next().expect("at least one node");
    let m = first
        .raft()
        .wait(Some(TIMEOUT))
        .metrics(
            |m| m.current_leader.is_some_and(|l| alive.contains(&l)),
            "a live leader is known",
        )
        .await
        .expect("leader elected");
    let leader = m.current_leader.expect("leader");
    handles[&leader]
        .raft()
        .wait(Some(TIMEOUT))
        .metrics(
            |m| m.state == ServerState::Leader || m.current_leader != Some(leader),
            "leader takes office",
        )
        .await
        .expect("leader state");
    leader
}

/// Write `command` through whichever handle leads, following leader changes; returns the
/// reply and the entry's log index.
pub async fn must_write(
    handles: &BTreeMap<NodeId, GroupHandle>,
    command: Vec<u8>,
) -> (Vec<u8>, u64) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let leader = wait_for_leader(handles).await;
        let handle = &handles[&leader];
        // `GroupHandle::write` minus the conversion, to learn the entry's index.
        match handle
            .raft()
            .client_write(Command(command.clone()))
            .await
            .map_err(WriteError::from)
        {
            Ok(response) => return (response.data.0, response.log_id.index),
            Err(WriteError::NotLeader { .. }) if tokio::time::Instant::now() < deadline => {
                // It was deposed: wait until it knows, then look for the new leader.
                handle
                    .raft()
                    .wait(Some(TIMEOUT))
                    .metrics(
                        |m| m.state != ServerState::Leader,
                        "deposed leader steps down",
                    )
                    .await
                    .expect("step down");
            }
            Err(e) => panic!("write failed: {e}"),
        }
    }
}

/// Wait until every handle has applied at least `index`.
pub async fn wait_applied(handles: &BTreeMap<NodeId, GroupHandle>, index: u64) {
    for (id, handle) in handles {
        handle
            .raft()
            .wait(Some(TIMEOUT))
            .applied_index_at_least(Some(index), format!("node {id} applies {index}"))
            .await
            .unwrap_or_else(|e| panic!("node {id} did not apply {index}: {e}"));
    }
}

/// One in-process node of a [`RouterCluster`].
pub struct TestNode {
    pub node: aigw_raft::RaftNode<aigw_raft::testing::RouterTransport>,
    pub handle: GroupHandle,
    pub app: Arc<KvApp>,
}

/// Builds a node's app on its database, for a group.
type MakeApp = dyn Fn(&sled::Db, u64) -> Arc<KvApp> + Send + Sync;

/// In-process nodes running one group over the fault-injecting router, each on its own sled
/// database in a temporary directory (kept across kills, so nodes restart from disk).
pub struct RouterCluster {
    pub router: aigw_raft::testing::Router,
    pub group: u64,
    pub nodes: BTreeMap<NodeId, TestNode>,
    dirs: BTreeMap<NodeId, tempfile::TempDir>,
    members: BTreeMap<NodeId, BasicNode>,
    config: aigw_raft::openraft::Config,
    make_app: Box<MakeApp>,
}

impl RouterCluster {
    pub async fn start(
        ids: impl IntoIterator<Item = NodeId>,
        config: aigw_raft::openraft::Config,
        make_app: impl Fn(&sled::Db, u64) -> Arc<KvApp> + Send + Sync + 'static,
    ) -> Self {
        Self::start_without(ids, None, config, make_app).await
    }

    /// [`RouterCluster::start`] with member `down` (if any) not started: a new group
    /// created while one of its members is down.
    pub async fn start_without(
        ids: impl IntoIterator<Item = NodeId>,
        down: Option<NodeId>,
        config: aigw_raft::openraft::Config,
        make_app: impl Fn(&sled::Db, u64) -> Arc<KvApp> + Send + Sync + 'static,
    ) -> Self {
        let ids: Vec<NodeId> = ids.into_iter().collect();
        let mut cluster = Self {
            router: aigw_raft::testing::Router::new(),
            group: 5,
            nodes: BTreeMap::new(),
            dirs: ids
                .iter()
                .map(|id| (*id, tempfile::tempdir().expect("tempdir")))
                .collect(),
            members: members(ids.iter().copied(), |id| format!("node-{id}")),
            config,
            make_app: Box::new(make_app),
        };
        for id in ids {
            if Some(id) != down {
                cluster.start_node(id).await;
            }
        }
        cluster
    }

    /// Start (or restart from its directory) node `id`.
    pub async fn start_node(&mut self, id: NodeId) {
        let db = open_db(self.dirs[&id].path()).await;
        let config = aigw_raft::NodeConfig {
            raft: self.config.clone(),
            ..aigw_raft::NodeConfig::new(
                id,
                format!("node-{id}"),
                self.dirs[&id].path().join("raft-log"),
            )
        };
        let node =
            aigw_raft::RaftNode::with_transport(db.clone(), config, self.router.transport(id))
                .expect("node");
        self.router.add_node(id, node.registry().clone());
        let app = (self.make_app)(&db, self.group);
        let handle = node
            .start_group(self.group, app.clone(), self.members.clone())
            .await
            .expect("start group");
        self.nodes.insert(id, TestNode { node, handle, app });
    }

    /// Crash node `id`: cut it off the router and stop it. Its directory stays.
    pub async fn kill(&mut self, id: NodeId) {
        self.router.remove_node(id);
        let node = self.nodes.remove(&id).expect("running node");
        node.node.shutdown().await.expect("shutdown");
    }

    pub fn handles(&self) -> BTreeMap<NodeId, GroupHandle> {
        self.nodes
            .iter()
            .map(|(id, n)| (*id, n.handle.clone()))
            .collect()
    }

    /// Assert every running node's app holds the same state, and return it.
    pub fn assert_converged(&self) -> BTreeMap<String, String> {
        let mut states = self.nodes.iter().map(|(id, n)| (*id, n.app.dump()));
        let (first_id, first) = states.next().expect("a node");
        for (id, state) in states {
            assert_eq!(state, first, "node {id} differs from node {first_id}");
        }
        first
    }

    pub async fn shutdown(mut self) {
        for id in self.nodes.keys().copied().collect::<Vec<_>>() {
            self.kill(id).await;
        }
    }
}
