//! `aigw.admin.v1.Cluster` on the account-manager group: the shard map, read, watched and put.

use aigw_placement::ShardMap;
use aigw_proto::admin::cluster_server::Cluster;
use aigw_proto::admin::{
    GetShardMapRequest, PutShardMapRequest, ShardMapVersion, WatchShardMapRequest,
};
use aigw_raft::GroupHandle;
use futures_util::StreamExt;
use tokio_stream::wrappers::WatchStream;
use tonic::{Request, Response, Status};

use crate::ShardMapStore;
use crate::command::{PutShardMap, Status as Outcome, kind::Kind};
use crate::service::{WatchEnd, propose, read_status};

/// Serves the shard map from the account-manager group.
#[derive(Clone)]
pub struct ShardMapService {
    store: ShardMapStore,
    group: GroupHandle,
    watch_end: WatchEnd,
}

impl ShardMapService {
    /// Serve `store`, replicating puts through `group`.
    pub fn new(store: ShardMapStore, group: GroupHandle) -> Self {
        Self {
            store,
            watch_end: WatchEnd::new(group.clone()),
            group,
        }
    }

    /// Ends every watch stream, now and for watches opened from now on: a server shuts down
    /// gracefully only once its streams have ended, and watchers must resume elsewhere.
    pub fn close(&self) {
        self.watch_end.close();
    }
}

fn version_of(map: &ShardMap) -> ShardMapVersion {
    ShardMapVersion {
        version: map.version(),
        map: map.to_bytes().into(),
    }
}

/// The stream of maps a watcher receives.
pub type ShardMapStream = aigw_proto::BoxStream<ShardMapVersion>;

#[tonic::async_trait]
impl Cluster for ShardMapService {
    type WatchShardMapStream = ShardMapStream;

    #[tracing::instrument(skip_all)]
    async fn get_shard_map(
        &self,
        _request: Request<GetShardMapRequest>,
    ) -> Result<Response<ShardMapVersion>, Status> {
        self.group
            .ensure_linearizable()
            .await
            .map_err(read_status)?;
        let map = self
            .store
            .current()
            .ok_or_else(|| Status::not_found("no shard map has been put yet"))?;
        Ok(Response::new(version_of(&map)))
    }

    #[tracing::instrument(skip_all)]
    async fn watch_shard_map(
        &self,
        _request: Request<WatchShardMapRequest>,
    ) -> Result<Response<Self::WatchShardMapStream>, Status> {
        // Every applied version, starting with the current one; a slow watcher skips to the
        // newest (a map replaces its predecessors entirely). The stream ends when this replica
        // stops serving the group or the service is closed, so watchers resume elsewhere.
        let end = self.watch_end.reached();
        let maps = WatchStream::new(self.store.watch())
            .filter_map(|map| async move { map.map(|m| Ok(version_of(&m))) })
            .take_until(end);
        Ok(Response::new(Box::pin(maps)))
    }

    #[tracing::instrument(skip_all, fields(expected_version = request.get_ref().expected_version))]
    async fn put_shard_map(
        &self,
        request: Request<PutShardMapRequest>,
    ) -> Result<Response<ShardMapVersion>, Status> {
        let r = request.into_inner();
        let map = ShardMap::from_bytes(&r.map)
            .map_err(|e| Status::invalid_argument(format!("invalid shard map: {e}")))?;
        if map.version() != r.expected_version.saturating_add(1) {
            return Err(Status::invalid_argument(format!(
                "a map replacing version {} must be version {}, got {}",
                r.expected_version,
                r.expected_version.saturating_add(1),
                map.version()
            )));
        }
        let applied = propose(
            &self.group,
            Kind::PutShardMap(PutShardMap {
                expected_version: r.expected_version,
                map: r.map.to_vec(),
            }),
        )
        .await?;
        if applied.status != Outcome::Ok as i32 {
            return Err(Status::failed_precondition(format!(
                "the shard map is at version {}, not {}",
                applied.shard_map_version, r.expected_version
            )));
        }
        Ok(Response::new(version_of(&map)))
    }
}
