//! `aigw serve`: every role in one process — edge, management API, one shard group and the
//! account-manager group, each a single-member Raft group on the same code paths a cluster runs.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aigw_accounts::{
    AccountsApp, GatewayRegistry, GatewaysService, ShardMapService, ShardMapStore,
};
use aigw_api::{ApiState, StaticTokens};
use aigw_blob::{BlobStore, Codec, DEFAULT_MAX_DECODED_BYTES, FsBlobStore};
use aigw_blob_s3::{S3BlobStore, S3Settings};
use aigw_config::{BlobKind, Config};
use aigw_edge::{Edge, ShardLogSink};
use aigw_logindex::LogIndex;
use aigw_placement::{DEFAULT_VNODES_PER_NODE, NodeInfo, ShardMap};
use aigw_proto::MAX_SHARD_MESSAGE_BYTES;
use aigw_proto::admin::PutShardMapRequest;
use aigw_proto::admin::cluster_server::{Cluster, ClusterServer};
use aigw_proto::admin::gateways_server::GatewaysServer;
use aigw_proto::shard::shard_server::ShardServer;
use aigw_raft::{GroupHandle, GroupId, NodeConfig, RaftNode};
use aigw_shard::{ShardApp, ShardHost, ShardService};
use anyhow::Context;
use tokio::sync::oneshot;

use crate::directory::RegistryDirectory;

/// The account-manager group.
const ACCOUNTS_GROUP: GroupId = 0;
/// The single log shard of the all-in-one process.
const SHARD_GROUP: GroupId = 1;
/// How long open gRPC connections get to finish when the server stops.
const GRPC_GRACE: Duration = Duration::from_secs(5);
/// How long a fresh single-member group may take to elect itself.
const ELECTION_WAIT: Duration = Duration::from_secs(15);

/// How bodies are framed: stored bodies are at most `max_body_bytes`, and reading one back must
/// never be refused.
fn body_codec(config: &Config) -> Codec {
    let max_decoded = usize::try_from(config.proxy.max_body_bytes)
        .unwrap_or(usize::MAX)
        .max(DEFAULT_MAX_DECODED_BYTES);
    Codec::new(max_decoded)
}

async fn open_blobs(config: &Config) -> anyhow::Result<Arc<dyn BlobStore>> {
    let blob = &config.blob;
    Ok(match blob.kind {
        BlobKind::Fs => {
            let mut root = if blob.path.is_empty() {
                config.data_dir.join("blobs")
            } else {
                blob.path.clone().into()
            };
            if !blob.prefix.is_empty() {
                root = root.join(blob.prefix.trim_matches('/'));
            }
            Arc::new(FsBlobStore::open(root).context("cannot open the blob directory")?)
        }
        BlobKind::S3 => {
            let optional = |s: &str| (!s.is_empty()).then(|| s.to_owned());
            let store = S3BlobStore::new(S3Settings {
                endpoint: optional(&blob.endpoint),
                bucket: blob.bucket.clone(),
                region: blob.region.clone(),
                path_style: blob.path_style,
                access_key_id: optional(&blob.access_key_id),
                secret_access_key: optional(&blob.secret_access_key),
                prefix: blob.prefix.clone(),
            })
            .await
            .context("cannot configure the S3 blob store")?;
            store
                .ensure_bucket()
                .await
                .context("the S3 bucket is not usable")?;
            Arc::new(store)
        }
    })
}

async fn start_single_member<A: aigw_raft::App>(
    node: &RaftNode,
    group: GroupId,
    app: Arc<A>,
) -> anyhow::Result<GroupHandle> {
    let members = BTreeMap::from([(node.id(), node.basic_node())]);
    let handle = node
        .start_group(group, app, members)
        .await
        .with_context(|| format!("cannot start raft group {group}"))?;
    handle
        .raft()
        .wait(Some(ELECTION_WAIT))
        .current_leader(node.id(), "single-member group elects itself")
        .await
        .with_context(|| format!("raft group {group} did not elect a leader"))?;
    Ok(handle)
}

/// Run every role until `shutdown` resolves; then drain logs, stop serving and flush storage.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;
    let db = sled::Config::new()
        .path(config.data_dir.join("index"))
        .cache_capacity(config.index_cache_bytes)
        .open()
        .with_context(|| format!("cannot open the index in {}", config.data_dir.display()))?;
    let blobs = open_blobs(&config).await?;

    let node = RaftNode::new(
        db.clone(),
        NodeConfig::new(config.node_id, config.grpc_addr.to_string()),
    )
    .context("cannot create the raft node")?;
    let registry = GatewayRegistry::open(db.open_tree("accounts/gateways")?)?;
    let shard_maps = ShardMapStore::open(db.open_tree("accounts/shard_map")?)?;
    let accounts = start_single_member(
        &node,
        ACCOUNTS_GROUP,
        Arc::new(AccountsApp::new(registry.clone(), shard_maps.clone())),
    )
    .await?;
    let index = LogIndex::new(db.open_tree("shard/1/index")?);
    let shard_group =
        start_single_member(&node, SHARD_GROUP, Arc::new(ShardApp::new(index.clone()))).await?;

    let shard = Arc::new(
        ShardService::new(index, shard_group, blobs.clone()).with_codec(body_codec(&config)),
    );
    let cluster = ShardMapService::new(shard_maps.clone(), accounts.clone());
    publish_shard_map(&cluster, &shard_maps, &config).await?;
    let gateways = Arc::new(GatewaysService::new(registry.clone(), accounts));
    // Remote callers name the group; in-process callers use the shard service directly.
    let shard_host = ShardHost::new();
    shard_host.insert(SHARD_GROUP, shard.clone());

    let grpc_listener = tokio::net::TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("cannot listen on grpc_addr {}", config.grpc_addr))?;
    let (stop_grpc, grpc_stopped) = oneshot::channel::<()>();
    let grpc = tonic::transport::Server::builder()
        .add_service(node.grpc_service())
        .add_service(
            ShardServer::new(shard_host)
                .max_decoding_message_size(MAX_SHARD_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_SHARD_MESSAGE_BYTES),
        )
        .add_service(GatewaysServer::from_arc(gateways.clone()))
        .add_service(ClusterServer::new(cluster.clone()))
        .serve_with_incoming_shutdown(tokio_stream_incoming(grpc_listener), async {
            let _ = grpc_stopped.await;
        });
    let grpc = tokio::spawn(grpc);

    let tokens = config
        .api_tokens
        .iter()
        .map(|t| (t.account_id.clone(), t.token_sha256.clone()))
        .collect();
    let api = aigw_api::router(ApiState {
        shards: shard.clone(),
        gateways: gateways.clone(),
        auth: Arc::new(StaticTokens::new(config.admin_token.as_deref(), tokens)),
    });
    let directory = RegistryDirectory::new(registry, (*gateways).clone());
    let edge = Edge::new(
        &config,
        Arc::new(ShardLogSink::new(shard)),
        Arc::new(directory),
    )?;
    let http_listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("cannot listen on http_addr {}", config.http_addr))?;
    tracing::info!(
        http_addr = %http_listener.local_addr()?,
        grpc_addr = %config.grpc_addr,
        data_dir = %config.data_dir.display(),
        blobs = %blobs.describe(),
        "aigw listening"
    );
    edge.serve(http_listener, api, shutdown).await?;

    // Every queued log reached the shard; now stop the groups, end the shard-map watch streams
    // (a graceful server stop waits for open streams), stop the gRPC services, flush storage.
    node.shutdown().await.context("raft shutdown failed")?;
    cluster.close();
    let _ = stop_grpc.send(());
    let mut grpc = grpc;
    match tokio::time::timeout(GRPC_GRACE, &mut grpc).await {
        Ok(served) => served.context("gRPC server task failed")??,
        Err(_) => {
            // A client that ignores GOAWAY must not keep the process alive.
            tracing::warn!(grace = ?GRPC_GRACE, "gRPC connections still open; closing them");
            grpc.abort();
        }
    }
    db.flush_async().await.context("final index flush failed")?;
    Ok(())
}

/// The all-in-one process is a one-node cluster: it publishes that map (its one shard group on
/// itself) so that stateless nodes follow it as they would any cluster's, and republishes it
/// when its address changed since.
async fn publish_shard_map(
    service: &ShardMapService,
    store: &ShardMapStore,
    config: &Config,
) -> anyhow::Result<()> {
    let me = NodeInfo::active(config.node_id, config.grpc_addr.to_string());
    let (expected_version, map) = match store.current() {
        None => (0, ShardMap::plan([me], 1, 1, DEFAULT_VNODES_PER_NODE)?),
        Some(current) if current.nodes().values().eq([&me]) => return Ok(()),
        Some(current) => (
            current.version(),
            current.rebalance([me], 1, DEFAULT_VNODES_PER_NODE)?,
        ),
    };
    let request = PutShardMapRequest {
        expected_version,
        map: map.to_bytes().into(),
    };
    service
        .put_shard_map(tonic::Request::new(request))
        .await
        .map_err(|s| anyhow::anyhow!("cannot publish the shard map: {}", s.message()))?;
    Ok(())
}

/// Accepted connections of `listener` as the stream tonic serves, with TCP_NODELAY.
fn tokio_stream_incoming(
    listener: tokio::net::TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures_util::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|stream| {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY on a gRPC connection");
            }
        })
    })
}
