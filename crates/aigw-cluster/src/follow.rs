//! Following what the account manager publishes — the shard map, the gateways — as a stream
//! from any of its replicas, resumed on another one when it breaks.

use std::sync::{Arc, Mutex, PoisonError};

use aigw_accounts::GatewayMirror;
use aigw_placement::ShardMap;
use aigw_proto::admin::cluster_client::ClusterClient;
use aigw_proto::admin::gateways_client::GatewaysClient;
use aigw_proto::admin::{
    GatewayChanges, ShardMapVersion, WatchGatewaysRequest, WatchShardMapRequest,
};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tonic::Status;
use tonic::transport::Channel;

use crate::caller::endpoint;
use crate::{Credentials, RetryPolicy};

/// A map stream from one replica.
type Maps = tonic::Streaming<ShardMapVersion>;

/// A channel to the node at `addr` (`host:port`), connected within `policy.connect_timeout`;
/// `UNAVAILABLE` naming the address when it cannot be reached.
pub async fn connect(addr: &str, policy: &RetryPolicy) -> Result<Channel, Status> {
    endpoint(addr, policy)?
        .connect()
        .await
        .map_err(|e| Status::unavailable(format!("cannot reach {addr}: {e}")))
}

/// Opens a watch on `addr`.
async fn open(addr: &str, policy: &RetryPolicy, credentials: &Credentials) -> Result<Maps, Status> {
    let mut request = tonic::Request::new(WatchShardMapRequest {});
    credentials.attach(&mut request);
    Ok(ClusterClient::new(connect(addr, policy).await?)
        .watch_shard_map(request)
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
    credentials: Credentials,
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
        let error = match open(addr, &policy, &credentials).await {
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
    tokio::spawn(keep_following(tx, maps, seeds, turn, policy, credentials));
    Ok(rx)
}

async fn keep_following(
    tx: watch::Sender<Arc<ShardMap>>,
    mut maps: Maps,
    seeds: Vec<String>,
    mut turn: usize,
    policy: RetryPolicy,
    credentials: Credentials,
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
                if let Ok(resumed) = open(addr, &policy, &credentials).await {
                    maps = resumed;
                    break;
                }
            },
        }
    }
}

/// Follows the gateways of the account-manager replicas at `seeds`: waits for a first full
/// snapshot (up to `policy.deadline`, else `UNAVAILABLE` naming the last error), then keeps the
/// returned mirror current from a background task that applies each change as the replica
/// streams it and resumes on the next seed (with a fresh snapshot) whenever the stream breaks.
/// Between a break and the resumed snapshot the mirror keeps serving what it had.
pub async fn follow_gateways(
    seeds: Vec<String>,
    policy: RetryPolicy,
    credentials: Credentials,
) -> Result<GatewayMirror, Status> {
    if seeds.is_empty() {
        return Err(Status::invalid_argument(
            "no seed address to follow the gateways from",
        ));
    }
    let mirror = GatewayMirror::default();
    let last_error = Arc::new(Mutex::new(String::from("no replica answered yet")));
    let (ready, synced) = oneshot::channel();
    tokio::spawn(keep_gateways(
        seeds.clone(),
        policy,
        credentials,
        mirror.clone(),
        ready,
        last_error.clone(),
    ));
    match tokio::time::timeout(policy.deadline, synced).await {
        Ok(Ok(())) => Ok(mirror),
        _ => Err(Status::unavailable(format!(
            "no gateways from any of {seeds:?}: {}",
            last_error.lock().unwrap_or_else(PoisonError::into_inner)
        ))),
    }
}

/// Reads one replica's gateway stream into `mirror` until it breaks; returns why.
async fn mirror_gateways(
    addr: &str,
    policy: &RetryPolicy,
    credentials: &Credentials,
    mirror: &GatewayMirror,
    ready: &mut Option<oneshot::Sender<()>>,
) -> Status {
    let mut request = tonic::Request::new(WatchGatewaysRequest {});
    credentials.attach(&mut request);
    let mut stream = match connect(addr, policy).await {
        Ok(channel) => match GatewaysClient::new(channel).watch_gateways(request).await {
            Ok(stream) => stream.into_inner(),
            Err(e) => return e,
        },
        Err(e) => return e,
    };
    // A snapshot being collected: applied whole once its last batch arrives, so that the
    // mirror never serves half of one.
    let mut snapshot: Option<GatewayChanges> = None;
    loop {
        let batch = match stream.message().await {
            Ok(Some(batch)) => batch,
            Ok(None) => return Status::unavailable(format!("{addr} ended the gateway stream")),
            Err(e) => return e,
        };
        if batch.reset {
            snapshot = Some(GatewayChanges::default());
        }
        match snapshot.as_mut() {
            Some(collected) => {
                collected.upserts.extend(batch.upserts);
                collected.token_upserts.extend(batch.token_upserts);
                if batch.synced {
                    let all = snapshot.take().unwrap_or_default();
                    mirror.replace(all.upserts, all.token_upserts);
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(());
                    }
                }
            }
            None => mirror.apply_changes(batch),
        }
    }
}

async fn keep_gateways(
    seeds: Vec<String>,
    policy: RetryPolicy,
    credentials: Credentials,
    mirror: GatewayMirror,
    ready: oneshot::Sender<()>,
    last_error: Arc<Mutex<String>>,
) {
    let mut ready = Some(ready);
    let mut backoff = policy.initial_backoff;
    for turn in 0.. {
        let addr = &seeds[turn % seeds.len()];
        let started = Instant::now();
        let error = mirror_gateways(addr, &policy, &credentials, &mirror, &mut ready).await;
        tracing::debug!(%error, %addr, "gateway watch broke; resuming");
        *last_error.lock().unwrap_or_else(PoisonError::into_inner) = error.message().to_owned();
        if started.elapsed() > policy.max_backoff * 4 {
            // It streamed for a while: the break is news, not a flapping replica.
            backoff = policy.initial_backoff;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(policy.max_backoff);
    }
}
