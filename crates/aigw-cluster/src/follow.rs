//! Following the shard map: a stream from any account-manager replica, resumed on another one
//! when it breaks.

use std::sync::Arc;
use std::time::Duration;

use aigw_placement::ShardMap;
use aigw_proto::admin::cluster_client::ClusterClient;
use aigw_proto::admin::{ShardMapVersion, WatchShardMapRequest};
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Status;
use tonic::transport::Endpoint;

use crate::RetryPolicy;

/// A map stream from one replica.
type Maps = tonic::Streaming<ShardMapVersion>;

/// Opens a watch on `addr`.
async fn open(addr: &str, policy: &RetryPolicy) -> Result<Maps, Status> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| Status::invalid_argument(format!("bad seed address `{addr}`: {e}")))?
        .connect_timeout(policy.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| Status::unavailable(format!("cannot reach {addr}: {e}")))?;
    Ok(ClusterClient::new(channel)
        .watch_shard_map(WatchShardMapRequest {})
        .await?
        .into_inner())
}

/// The next map of `maps`, decoded.
async fn next(maps: &mut Maps) -> Result<ShardMap, Status> {
    let version = maps
        .message()
        .await?
        .ok_or_else(|| Status::unavailable("the watch stream ended"))?;
    ShardMap::from_bytes(&version.map)
        .map_err(|e| Status::data_loss(format!("undecodable shard map: {e}")))
}

/// Follows the shard map published by the account-manager replicas at `seeds` (gRPC
/// addresses): waits for the first map (up to `policy.deadline`, else `UNAVAILABLE` naming the
/// last error), then keeps the returned receiver current from a background task that resumes on
/// the next seed whenever its stream breaks. Versions only move forward. The task ends when
/// every receiver is dropped.
pub async fn follow_shard_map(
    seeds: Vec<String>,
    policy: RetryPolicy,
) -> Result<watch::Receiver<Arc<ShardMap>>, Status> {
    if seeds.is_empty() {
        return Err(Status::invalid_argument(
            "no seed address to follow the shard map from",
        ));
    }
    let deadline = Instant::now() + policy.deadline;
    let mut turn = 0;
    let mut backoff = policy.initial_backoff;
    let (first, maps) = loop {
        let addr = &seeds[turn % seeds.len()];
        turn += 1;
        let error = match open(addr, &policy).await {
            Ok(mut maps) => match next(&mut maps).await {
                Ok(map) => break (map, maps),
                Err(e) => e,
            },
            Err(e) => e,
        };
        if Instant::now() + backoff > deadline {
            return Err(Status::unavailable(format!(
                "no shard map from any of {seeds:?}: {}",
                error.message()
            )));
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(policy.max_backoff);
    };
    let (tx, rx) = watch::channel(Arc::new(first));
    tokio::spawn(keep_following(tx, maps, seeds, turn, policy));
    Ok(rx)
}

async fn keep_following(
    tx: watch::Sender<Arc<ShardMap>>,
    mut maps: Maps,
    seeds: Vec<String>,
    mut turn: usize,
    policy: RetryPolicy,
) {
    let mut backoff = policy.initial_backoff;
    loop {
        let received = tokio::select! {
            () = tx.closed() => return,
            received = next(&mut maps) => received,
        };
        match received {
            Ok(map) => {
                backoff = policy.initial_backoff;
                tx.send_if_modified(|current| {
                    let newer = map.version() > current.version();
                    if newer {
                        tracing::info!(version = map.version(), "shard map changed");
                        *current = Arc::new(map);
                    }
                    newer
                });
            }
            Err(error) => loop {
                // Resume on the next replica; keep serving the last map meanwhile.
                let addr = &seeds[turn % seeds.len()];
                turn += 1;
                tracing::debug!(%error, next = %addr, "shard map watch broke; resuming");
                tokio::select! {
                    () = tx.closed() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(policy.max_backoff);
                if let Ok(resumed) = open(addr, &policy).await {
                    maps = resumed;
                    break;
                }
            },
        }
    }
}
