//! `role = "all"`: every role in one process — a one-node cluster whose shard node holds the
//! account-manager group and one shard group (more once a gateway splits), each a
//! single-member Raft group on the same code paths a cluster runs, and an edge that reaches
//! them in-process.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aigw_config::{Config, Member};
use anyhow::Context;

use crate::shard_node::ShardNode;

/// The single log shard of the all-in-one process.
const SHARD_GROUP: u64 = 1;
/// How long a fresh single-member group may take to elect itself.
const ELECTION_WAIT: Duration = Duration::from_secs(15);

/// Run every role until `shutdown` resolves; then drain logs, stop serving and flush storage.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let me = Member {
        id: config.node_id,
        addr: config.advertised_grpc_addr(),
    };
    let node = ShardNode::start(&config, &[me], 1, 1).await?;
    node.local_group(SHARD_GROUP, ELECTION_WAIT).await?;
    let accounts = node
        .accounts()
        .context("the all-in-one node holds the account-manager group")?;
    let router = Arc::new(node.local_router());
    crate::edge::serve_http(
        &config,
        router.clone(),
        crate::edge::routed_sink(router),
        accounts.gateways.clone(),
        accounts.registry.mirror().clone(),
        Some(node.blobs().describe()),
        shutdown,
    )
    .await?;
    // Every queued log reached the shard; now stop the groups and flush storage.
    node.shutdown().await
}
