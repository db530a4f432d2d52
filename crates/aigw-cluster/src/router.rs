//! `aigw.shard.v1` for a whole cluster: each call goes to the groups holding its gateway's
//! logs, and a split gateway's sub-shards are read as one.
//!
//! A gateway's logs live in one group until it is split, then in its sub-shards, each taking
//! the logs created from its `from_ms` on ([`ShardMap::sub_shards`]). Writes go to the
//! sub-shard a log's `created_at` falls in, or to the group the request names (a log
//! shipper's lane, fixed when the logs were first placed). Reads fan out: every sub-shard that can hold a
//! match is asked for the first `page × per_page` rows, and the sorted replies are merged in
//! the listing's order (ties by id), so the page is the one a single shard would have
//! returned. A sub-shard never holds a log older than its `from_ms` (an edge that has not
//! seen a split yet sends logs to an *earlier* sub-shard, never a later one), so a query that
//! ends before a sub-shard starts skips it; a query's lower time bound prunes nothing. A
//! cursor (`after_id`) is a position in the order, not an offset, so a split during a scan
//! neither repeats nor skips logs. A log is looked up by id in the sub-shard its time falls
//! in, then in the earlier ones.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use aigw_placement::{GroupId, ShardMap, SubShard};
use aigw_proto::shard::shard_server::Shard;
use aigw_proto::shard::{
    CacheGetRequest, CacheGetResponse, CachePutRequest, CachePutResponse, DeleteGatewayRequest,
    DeleteGatewayResponse, DeleteLogsRequest, DeleteLogsResponse, FilterOperator, GetBodyRequest,
    GetBodyResponse, GetLogRequest, GetLogResponse, IngestEntry, IngestRequest, IngestResponse,
    LeaseRateRequest, LeaseRateResponse, ListLogsRequest, ListLogsResponse, LogQuery, LogRecord,
    OrderBy, UpdateLogRequest, UpdateLogResponse, filter_value,
};
use aigw_proto::{GROUP_METADATA, MAX_LISTED_ROWS, compare_logs};
use bytes::Bytes;
use futures_util::future::join_all;
use tokio::sync::watch;
use tonic::{Code, Request, Response, Status};

use crate::RetryPolicy;
use crate::remote::RemoteGroups;

/// How the router reaches one shard group's `Shard` service: over gRPC on its leader
/// ([`ShardRouter::new`]), or in process on a node that runs every group itself.
pub trait GroupShards: Send + Sync + 'static {
    /// The `Shard` service of `group` (`UNAVAILABLE` when it cannot be reached now).
    fn shard(&self, group: GroupId) -> Result<Arc<dyn Shard>, Status>;
}

/// Calls shard groups, following the watched [`ShardMap`].
pub struct ShardRouter {
    map: watch::Receiver<Arc<ShardMap>>,
    groups: Arc<dyn GroupShards>,
    remote: Option<Arc<RemoteGroups>>,
}

impl ShardRouter {
    /// A router calling group leaders over gRPC, with the default [`RetryPolicy`].
    pub fn new(map: watch::Receiver<Arc<ShardMap>>) -> Self {
        Self::remote(map, RetryPolicy::default())
    }

    /// A router calling group leaders over gRPC with `policy`.
    pub fn remote(map: watch::Receiver<Arc<ShardMap>>, policy: RetryPolicy) -> Self {
        let remote = Arc::new(RemoteGroups::new(map.clone(), policy));
        Self {
            map,
            groups: Arc::new(remote.clone()),
            remote: Some(remote),
        }
    }

    /// A router reaching groups through `groups` (in process, say).
    pub fn over(map: watch::Receiver<Arc<ShardMap>>, groups: Arc<dyn GroupShards>) -> Self {
        Self {
            map,
            groups,
            remote: None,
        }
    }

    /// Uses `policy` instead of the default (a remote router only).
    #[must_use]
    pub fn with_policy(self, policy: RetryPolicy) -> Self {
        match self.remote {
            Some(_) => Self::remote(self.map, policy),
            None => self,
        }
    }

    /// The group that takes a log of `account`/`gateway` created at `created_at_ms`.
    pub fn group_at(&self, account: &str, gateway: &str, created_at_ms: i64) -> GroupId {
        self.map.borrow().group_at(account, gateway, created_at_ms)
    }

    /// The group `account`/`gateway` hashes to (all of its logs until it is split).
    pub fn group_for(&self, account: &str, gateway: &str) -> GroupId {
        self.map.borrow().group_for(account, gateway)
    }

    /// The address a remote router would call first for `group`, if it knows its leader.
    pub fn known_leader(&self, group: GroupId) -> Option<String> {
        self.remote.as_ref()?.known_leader(group)
    }

    fn sub_shards(&self, account: &str, gateway: &str) -> Vec<SubShard> {
        self.map.borrow().sub_shards(account, gateway)
    }

    /// Calls `call` on every group in `groups` at once; the replies in the same order.
    async fn fan_out<M, R, F, Fut>(
        &self,
        groups: &[GroupId],
        message: &M,
        call: F,
    ) -> Result<Vec<R>, Status>
    where
        M: Clone,
        F: Fn(Arc<dyn Shard>, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        let calls = groups.iter().map(|&group| {
            let shard = self.groups.shard(group);
            let message = message.clone();
            let call = &call;
            async move { call(shard?, Request::new(message)).await }
        });
        join_all(calls)
            .await
            .into_iter()
            .map(|reply| reply.map(Response::into_inner))
            .collect()
    }

    /// Sends an ingest batch's logs to the groups their times fall in, at once.
    async fn ingest_by_group(&self, request: IngestRequest) -> Result<IngestResponse, Status> {
        let mut by_group: HashMap<GroupId, Vec<IngestEntry>> = HashMap::new();
        {
            let map = self.map.borrow();
            for entry in request.entries {
                let record = entry
                    .record
                    .as_ref()
                    .ok_or_else(|| Status::invalid_argument("ingest entry without a record"))?;
                let group =
                    map.group_at(&record.account_id, &record.gateway_id, record.created_at_ms);
                by_group.entry(group).or_default().push(entry);
            }
        }
        let parts = by_group.into_iter().map(|(group, entries)| async move {
            self.groups
                .shard(group)?
                .ingest(Request::new(IngestRequest { entries }))
                .await
        });
        let mut accepted = 0u32;
        for reply in join_all(parts).await {
            accepted = accepted.saturating_add(reply?.into_inner().accepted);
        }
        Ok(IngestResponse { accepted })
    }

    /// One page of a split gateway's logs: the first `page × per_page` of every sub-shard
    /// that can hold a match, merged. Deeper pages in creation order walk there by cursor,
    /// [`MAX_LISTED_ROWS`] at a time; in other orders they are refused.
    async fn list_merged(
        &self,
        request: ListLogsRequest,
        subs: &[SubShard],
    ) -> Result<ListLogsResponse, Status> {
        let query = request.query.clone().unwrap_or_default();
        let groups = candidates(subs, &query);
        let per_page = request.per_page.clamp(1, MAX_LISTED_ROWS);
        let skip = u64::from(request.page.max(1) - 1) * u64::from(per_page);
        let want = skip + u64::from(per_page);
        if let Ok(want) = u32::try_from(want)
            && want <= MAX_LISTED_ROWS
        {
            let (rows, total_count) = self
                .merged_page(&groups, &query, request.after_id, want)
                .await?;
            return Ok(ListLogsResponse {
                logs: untagged(rows).skip(skip as usize).collect(),
                total_count,
            });
        }
        if order_of(&query) != OrderBy::CreatedAt {
            return Err(too_deep(want));
        }
        let mut after = request.after_id;
        let mut left = skip;
        while left > 0 {
            let chunk =
                u32::try_from(left.min(u64::from(MAX_LISTED_ROWS))).unwrap_or(MAX_LISTED_ROWS);
            let (rows, total_count) = self.merged_page(&groups, &query, after, chunk).await?;
            match rows.last() {
                Some((_, last)) if rows.len() == chunk as usize => after = Some(last.id.clone()),
                // The page lies past the last log.
                _ => {
                    return Ok(ListLogsResponse {
                        logs: Vec::new(),
                        total_count,
                    });
                }
            }
            left -= u64::from(chunk);
        }
        let (rows, total_count) = self.merged_page(&groups, &query, after, per_page).await?;
        Ok(ListLogsResponse {
            logs: untagged(rows).collect(),
            total_count,
        })
    }

    /// The first `count` logs of `groups` matching `query` (from `after_id` on), merged in
    /// the listing's order, each with the group it came from; and the number of matches.
    /// Each group's page is a sorted run, which the standard sort merges as such.
    async fn merged_page(
        &self,
        groups: &[GroupId],
        query: &LogQuery,
        after_id: Option<Bytes>,
        count: u32,
    ) -> Result<(Vec<(GroupId, LogRecord)>, u64), Status> {
        let part = ListLogsRequest {
            query: Some(query.clone()),
            page: 1,
            per_page: count,
            after_id,
        };
        let replies = self
            .fan_out(
                groups,
                &part,
                |shard, r| async move { shard.list_logs(r).await },
            )
            .await?;
        let total_count = replies.iter().map(|r| r.total_count).sum();
        let mut rows: Vec<(GroupId, LogRecord)> = groups
            .iter()
            .zip(replies)
            .flat_map(|(&g, r)| r.logs.into_iter().map(move |log| (g, log)))
            .collect();
        let order = order_of(query);
        rows.sort_by(|a, b| compare_logs(order, query.ascending, &a.1, &b.1));
        rows.truncate(count as usize);
        Ok((rows, total_count))
    }

    /// Deletes a split gateway's logs matching a query: with a limit (at most
    /// [`MAX_LISTED_ROWS`]), the first `limit` of the merged order, each sub-shard deleting its
    /// own share of them.
    async fn delete_merged(
        &self,
        request: DeleteLogsRequest,
        subs: &[SubShard],
    ) -> Result<DeleteLogsResponse, Status> {
        let query = request.query.clone().unwrap_or_default();
        let groups = candidates(subs, &query);
        let shares: Vec<(GroupId, u32)> = if request.limit == 0 {
            groups.iter().map(|&g| (g, 0)).collect()
        } else {
            if request.limit > MAX_LISTED_ROWS {
                // Sharing out more than one merged page would delete fewer than asked.
                return Err(Status::invalid_argument(format!(
                    "limit {} is past the {MAX_LISTED_ROWS} logs one delete takes on a split \
                     gateway: delete in steps, or without a limit",
                    request.limit
                )));
            }
            let (rows, _) = self
                .merged_page(&groups, &query, None, request.limit)
                .await?;
            let mut shares: HashMap<GroupId, u32> = HashMap::new();
            for (group, _) in &rows {
                *shares.entry(*group).or_default() += 1;
            }
            shares.into_iter().collect()
        };
        let calls = shares.into_iter().map(|(group, limit)| {
            let request = DeleteLogsRequest {
                query: request.query.clone(),
                limit,
            };
            async move {
                self.groups
                    .shard(group)?
                    .delete_logs(Request::new(request))
                    .await
            }
        });
        let mut deleted = 0;
        for reply in join_all(calls).await {
            deleted += reply?.into_inner().deleted;
        }
        Ok(DeleteLogsResponse { deleted })
    }

    /// Calls `call` for the log `id` on the sub-shard its time falls in, then on the
    /// earlier ones while it is not found.
    async fn by_id<M, R, F, Fut>(
        &self,
        (account, gateway, id): (&str, &str, &[u8]),
        message: M,
        call: F,
    ) -> Result<Response<R>, Status>
    where
        M: Clone,
        F: Fn(Arc<dyn Shard>, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        let subs = self.sub_shards(account, gateway);
        let ms = id_ms(id);
        let home = subs.iter().rposition(|s| s.from_ms <= ms).unwrap_or(0);
        let order = (0..=home).rev().chain(home + 1..subs.len());
        let mut last = Status::not_found("no sub-shard");
        for i in order {
            match call(
                self.groups.shard(subs[i].group)?,
                Request::new(message.clone()),
            )
            .await
            {
                Err(status) if status.code() == Code::NotFound => last = status,
                reply => return reply,
            }
        }
        Err(last)
    }
}

/// The time (Unix ms) in a ULID's first 48 bits; 0 for a malformed id (the shard names it).
fn id_ms(id: &[u8]) -> i64 {
    match id.get(..6) {
        Some(b) => i64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]]),
        None => 0,
    }
}

fn too_deep(want: u64) -> Status {
    Status::invalid_argument(format!(
        "page × per_page is {want}, past the {MAX_LISTED_ROWS} logs a split gateway's listing \
         reaches by page number in an order other than created_at: order by created_at and \
         page with a cursor"
    ))
}

fn order_of(query: &LogQuery) -> OrderBy {
    OrderBy::try_from(query.order_by).unwrap_or(OrderBy::CreatedAt)
}

/// The sub-shards that can hold a match of `query`: those starting before its upper time
/// bound (a `created_at` lt or eq filter). A cursor prunes nothing: `total_count` counts
/// every match, before the cursor too.
fn candidates(subs: &[SubShard], query: &LogQuery) -> Vec<GroupId> {
    let mut before = i64::MAX;
    for filter in query.filters.iter().filter(|f| f.key == "created_at") {
        let [value] = filter.values.as_slice() else {
            continue;
        };
        let Some(filter_value::Kind::Number(t)) = value.kind else {
            continue;
        };
        #[allow(clippy::cast_possible_truncation)]
        let t = t.floor() as i64;
        match FilterOperator::try_from(filter.operator) {
            Ok(FilterOperator::Lt) => before = before.min(t),
            Ok(FilterOperator::Eq) => before = before.min(t.saturating_add(1)),
            _ => {}
        }
    }
    subs.iter()
        .filter(|s| s.from_ms < before)
        .map(|s| s.group)
        .collect()
}

/// The logs of [`ShardRouter::merged_page`]'s rows.
fn untagged(rows: Vec<(GroupId, LogRecord)>) -> impl Iterator<Item = LogRecord> {
    rows.into_iter().map(|(_, log)| log)
}

/// The group an ingest request names in [`GROUP_METADATA`]: its logs were placed when they
/// were shipped, and a retry must not place them anew (the map may have changed since).
fn pinned_group<T>(request: &Request<T>) -> Result<Option<GroupId>, Status> {
    let Some(value) = request.metadata().get(GROUP_METADATA) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Some)
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "`{GROUP_METADATA}` metadata must be a group id, got {value:?}"
            ))
        })
}

fn gateway_of(query: Option<&LogQuery>) -> Result<(&str, &str), Status> {
    let query = query.ok_or_else(|| Status::invalid_argument("missing query"))?;
    Ok((&query.account_id, &query.gateway_id))
}

#[tonic::async_trait]
impl Shard for ShardRouter {
    async fn ingest(
        &self,
        request: Request<IngestRequest>,
    ) -> Result<Response<IngestResponse>, Status> {
        match pinned_group(&request)? {
            Some(group) => {
                let request = Request::new(request.into_inner());
                self.groups.shard(group)?.ingest(request).await
            }
            None => self
                .ingest_by_group(request.into_inner())
                .await
                .map(Response::new),
        }
    }

    async fn list_logs(
        &self,
        request: Request<ListLogsRequest>,
    ) -> Result<Response<ListLogsResponse>, Status> {
        let (account, gateway) = gateway_of(request.get_ref().query.as_ref())?;
        match self.sub_shards(account, gateway).as_slice() {
            [one] => self.groups.shard(one.group)?.list_logs(request).await,
            subs => self
                .list_merged(request.into_inner(), subs)
                .await
                .map(Response::new),
        }
    }

    async fn get_log(
        &self,
        request: Request<GetLogRequest>,
    ) -> Result<Response<GetLogResponse>, Status> {
        let r = request.into_inner();
        self.by_id(
            (&r.account_id, &r.gateway_id, &r.id),
            r.clone(),
            |s, r| async move { s.get_log(r).await },
        )
        .await
    }

    async fn get_body(
        &self,
        request: Request<GetBodyRequest>,
    ) -> Result<Response<GetBodyResponse>, Status> {
        let r = request.into_inner();
        self.by_id(
            (&r.account_id, &r.gateway_id, &r.id),
            r.clone(),
            |s, r| async move { s.get_body(r).await },
        )
        .await
    }

    async fn update_log(
        &self,
        request: Request<UpdateLogRequest>,
    ) -> Result<Response<UpdateLogResponse>, Status> {
        let r = request.into_inner();
        self.by_id(
            (&r.account_id, &r.gateway_id, &r.id),
            r.clone(),
            |s, r| async move { s.update_log(r).await },
        )
        .await
    }

    async fn delete_logs(
        &self,
        request: Request<DeleteLogsRequest>,
    ) -> Result<Response<DeleteLogsResponse>, Status> {
        let (account, gateway) = gateway_of(request.get_ref().query.as_ref())?;
        match self.sub_shards(account, gateway).as_slice() {
            [one] => self.groups.shard(one.group)?.delete_logs(request).await,
            subs => self
                .delete_merged(request.into_inner(), subs)
                .await
                .map(Response::new),
        }
    }

    async fn delete_gateway(
        &self,
        request: Request<DeleteGatewayRequest>,
    ) -> Result<Response<DeleteGatewayResponse>, Status> {
        let r = request.into_inner();
        let groups: Vec<GroupId> = self
            .sub_shards(&r.account_id, &r.gateway_id)
            .iter()
            .map(|s| s.group)
            .collect();
        let replies = self
            .fan_out(&groups, &r, |shard, r| async move {
                shard.delete_gateway(r).await
            })
            .await?;
        Ok(Response::new(DeleteGatewayResponse {
            deleted: replies.iter().map(|r| r.deleted).sum(),
        }))
    }

    async fn cache_get(
        &self,
        request: Request<CacheGetRequest>,
    ) -> Result<Response<CacheGetResponse>, Status> {
        let r = request.get_ref();
        let home = self.group_for(&r.account_id, &r.gateway_id);
        self.groups.shard(home)?.cache_get(request).await
    }

    async fn cache_put(
        &self,
        request: Request<CachePutRequest>,
    ) -> Result<Response<CachePutResponse>, Status> {
        let r = request.get_ref();
        let home = self.group_for(&r.account_id, &r.gateway_id);
        self.groups.shard(home)?.cache_put(request).await
    }

    async fn lease_rate(
        &self,
        request: Request<LeaseRateRequest>,
    ) -> Result<Response<LeaseRateResponse>, Status> {
        let r = request.get_ref();
        let home = self.group_for(&r.account_id, &r.gateway_id);
        self.groups.shard(home)?.lease_rate(request).await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use aigw_placement::NodeInfo;
    use aigw_proto::shard::{Filter, FilterValue};
    use ulid::Ulid;

    use super::*;

    const ACCOUNT: &str = "acct";
    const GATEWAY: &str = "gw";

    /// One group's logs in memory, listed newest first as a shard lists them.
    #[derive(Default)]
    struct Rows {
        rows: Mutex<Vec<LogRecord>>,
        lists: AtomicUsize,
    }

    fn not_here() -> Status {
        Status::unimplemented("not needed here")
    }

    #[tonic::async_trait]
    impl Shard for Rows {
        async fn ingest(
            &self,
            request: Request<IngestRequest>,
        ) -> Result<Response<IngestResponse>, Status> {
            let mut rows = self.rows.lock().unwrap();
            let entries = request.into_inner().entries;
            let accepted = entries.len() as u32;
            rows.extend(entries.into_iter().filter_map(|e| e.record));
            rows.sort_by(|a, b| b.id.cmp(&a.id));
            Ok(Response::new(IngestResponse { accepted }))
        }

        async fn list_logs(
            &self,
            request: Request<ListLogsRequest>,
        ) -> Result<Response<ListLogsResponse>, Status> {
            self.lists.fetch_add(1, Ordering::Relaxed);
            let r = request.into_inner();
            let rows = self.rows.lock().unwrap();
            let after = r.after_id.clone();
            let logs = rows
                .iter()
                .filter(|l| after.as_ref().is_none_or(|a| l.id < *a))
                .skip((r.page.max(1) as usize - 1) * r.per_page as usize)
                .take(r.per_page as usize)
                .cloned()
                .collect();
            Ok(Response::new(ListLogsResponse {
                logs,
                total_count: rows.len() as u64,
            }))
        }

        async fn get_log(
            &self,
            request: Request<GetLogRequest>,
        ) -> Result<Response<GetLogResponse>, Status> {
            let id = request.into_inner().id;
            let rows = self.rows.lock().unwrap();
            match rows.iter().find(|l| l.id == id) {
                Some(log) => Ok(Response::new(GetLogResponse {
                    log: Some(log.clone()),
                })),
                None => Err(Status::not_found("no such log")),
            }
        }

        async fn get_body(
            &self,
            _: Request<GetBodyRequest>,
        ) -> Result<Response<GetBodyResponse>, Status> {
            Err(not_here())
        }

        async fn update_log(
            &self,
            _: Request<UpdateLogRequest>,
        ) -> Result<Response<UpdateLogResponse>, Status> {
            Err(not_here())
        }

        async fn delete_logs(
            &self,
            _: Request<DeleteLogsRequest>,
        ) -> Result<Response<DeleteLogsResponse>, Status> {
            Err(not_here())
        }

        async fn delete_gateway(
            &self,
            _: Request<DeleteGatewayRequest>,
        ) -> Result<Response<DeleteGatewayResponse>, Status> {
            Err(not_here())
        }

        async fn cache_get(
            &self,
            _: Request<aigw_proto::shard::CacheGetRequest>,
        ) -> Result<Response<aigw_proto::shard::CacheGetResponse>, Status> {
            Err(Status::unimplemented("no gateway state here"))
        }

        async fn cache_put(
            &self,
            _: Request<aigw_proto::shard::CachePutRequest>,
        ) -> Result<Response<aigw_proto::shard::CachePutResponse>, Status> {
            Err(Status::unimplemented("no gateway state here"))
        }

        async fn lease_rate(
            &self,
            _: Request<aigw_proto::shard::LeaseRateRequest>,
        ) -> Result<Response<aigw_proto::shard::LeaseRateResponse>, Status> {
            Err(Status::unimplemented("no gateway state here"))
        }
    }

    #[derive(Default)]
    struct Groups(Mutex<HashMap<GroupId, Arc<Rows>>>);

    impl Groups {
        fn rows(&self, group: GroupId) -> Arc<Rows> {
            self.0.lock().unwrap().entry(group).or_default().clone()
        }
    }

    impl GroupShards for Arc<Groups> {
        fn shard(&self, group: GroupId) -> Result<Arc<dyn Shard>, Status> {
            Ok(self.rows(group))
        }
    }

    fn log(ms: u64) -> IngestEntry {
        let id = Ulid::from_parts(ms, u128::from(ms));
        IngestEntry {
            record: Some(LogRecord {
                id: id.to_bytes().to_vec().into(),
                created_at_ms: ms as i64,
                account_id: ACCOUNT.into(),
                gateway_id: GATEWAY.into(),
                ..LogRecord::default()
            }),
            ..IngestEntry::default()
        }
    }

    fn ms_of(log: &LogRecord) -> i64 {
        id_ms(&log.id)
    }

    async fn list(router: &ShardRouter, page: u32, after: Option<&LogRecord>) -> ListLogsResponse {
        let query = LogQuery {
            account_id: ACCOUNT.into(),
            gateway_id: GATEWAY.into(),
            ..LogQuery::default()
        };
        list_query(router, query, page, after).await
    }

    async fn list_query(
        router: &ShardRouter,
        query: LogQuery,
        page: u32,
        after: Option<&LogRecord>,
    ) -> ListLogsResponse {
        router
            .list_logs(Request::new(ListLogsRequest {
                query: Some(query),
                page,
                per_page: 10,
                after_id: after.map(|l| l.id.clone()),
            }))
            .await
            .unwrap()
            .into_inner()
    }

    async fn ingest(router: &ShardRouter, times: impl Iterator<Item = u64>) {
        let entries = times.map(log).collect();
        router
            .ingest(Request::new(IngestRequest { entries }))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_cursor_scan_stays_exact_across_a_split_and_reads_merge_sub_shards() {
        let map = ShardMap::plan([NodeInfo::active(1, "n1:1")], 1, 1, 8).unwrap();
        let (map_tx, map_rx) = watch::channel(Arc::new(map.clone()));
        let groups = Arc::new(Groups::default());
        let router = ShardRouter::over(map_rx, Arc::new(groups.clone()));
        ingest(&router, 1_001..=1_030).await;

        // The first page of a scan, then the gateway splits and newer logs go elsewhere.
        let first = list(&router, 1, None).await;
        let times: Vec<i64> = first.logs.iter().map(ms_of).collect();
        assert_eq!(times, (1_021..=1_030).rev().collect::<Vec<_>>());
        let split = map.split(ACCOUNT, GATEWAY, 1_100, 1, 8).unwrap();
        map_tx.send_replace(Arc::new(split));
        ingest(&router, 1_100..1_120).await;
        assert_eq!(groups.rows(1).rows.lock().unwrap().len(), 30);
        assert_eq!(groups.rows(2).rows.lock().unwrap().len(), 20);

        // The scan goes on from its cursor: each older log once, none of the newer ones.
        let mut cursor = first.logs.last().cloned();
        let mut scanned = times;
        while let Some(after) = cursor {
            let page = list(&router, 1, Some(&after)).await;
            assert_eq!(page.total_count, 50, "totals add up over sub-shards");
            scanned.extend(page.logs.iter().map(ms_of));
            cursor = (page.logs.len() == 10)
                .then(|| page.logs.last().cloned())
                .flatten();
        }
        assert_eq!(scanned, (1_001..=1_030).rev().collect::<Vec<_>>());

        // Page numbers see the merged order: page 3 of 10 is the first of the old sub-shard.
        let third = list(&router, 3, None).await;
        assert_eq!(
            third.logs.iter().map(ms_of).collect::<Vec<_>>(),
            (1_021..=1_030).rev().collect::<Vec<_>>()
        );

        // A log an edge placed before it saw the split is still found, by id and in order.
        let mut late = Request::new(IngestRequest {
            entries: vec![log(1_150)],
        });
        late.metadata_mut().insert(GROUP_METADATA, 1.into());
        router.ingest(late).await.unwrap();
        let newest = list(&router, 1, None).await;
        assert_eq!(ms_of(&newest.logs[0]), 1_150);
        let id = newest.logs[0].id.clone();
        let found = router
            .get_log(Request::new(GetLogRequest {
                account_id: ACCOUNT.into(),
                gateway_id: GATEWAY.into(),
                id,
            }))
            .await
            .unwrap();
        assert_eq!(found.into_inner().log.map(|l| l.created_at_ms), Some(1_150));

        // A query ending before the split does not ask the new sub-shard.
        let before = groups.rows(2).lists.load(Ordering::Relaxed);
        let query = LogQuery {
            account_id: ACCOUNT.into(),
            gateway_id: GATEWAY.into(),
            filters: vec![Filter {
                key: "created_at".into(),
                operator: FilterOperator::Lt as i32,
                values: vec![FilterValue {
                    kind: Some(filter_value::Kind::Number(1_050.0)),
                }],
            }],
            ..LogQuery::default()
        };
        list_query(&router, query, 1, None).await;
        assert_eq!(groups.rows(2).lists.load(Ordering::Relaxed), before);

        // Past 10,000 logs by page number: walked to by cursor in creation order (here past
        // the last log), refused in other orders.
        let deep = |order_by: OrderBy| ListLogsRequest {
            query: Some(LogQuery {
                account_id: ACCOUNT.into(),
                gateway_id: GATEWAY.into(),
                order_by: order_by as i32,
                ..LogQuery::default()
            }),
            page: 1_001,
            per_page: 10,
            after_id: None,
        };
        let past = router
            .list_logs(Request::new(deep(OrderBy::CreatedAt)))
            .await
            .unwrap()
            .into_inner();
        assert!(past.logs.is_empty());
        assert_eq!(past.total_count, 51);
        let err = router
            .list_logs(Request::new(deep(OrderBy::Model)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("cursor"), "{}", err.message());

        // A delete whose limit one merged page cannot share out is refused, naming it.
        let err = router
            .delete_logs(Request::new(DeleteLogsRequest {
                query: Some(LogQuery {
                    account_id: ACCOUNT.into(),
                    gateway_id: GATEWAY.into(),
                    ..LogQuery::default()
                }),
                limit: MAX_LISTED_ROWS + 1,
            }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("limit 10001"), "{}", err.message());
    }

    #[tokio::test]
    async fn deep_pages_of_a_split_gateway_are_walked_to_by_cursor() {
        let map = ShardMap::plan([NodeInfo::active(1, "n1:1")], 1, 1, 8).unwrap();
        let split = map.split(ACCOUNT, GATEWAY, 20_000, 1, 8).unwrap();
        let (_map_tx, map_rx) = watch::channel(Arc::new(split));
        let router = ShardRouter::over(map_rx, Arc::new(Arc::new(Groups::default())));
        // 12,000 logs before the split's start, 12,000 after: two sub-shards.
        ingest(&router, (10_000..22_000).chain(30_000..42_000)).await;
        let page = list(&router, 2_001, None).await;
        assert_eq!(page.total_count, 24_000);
        // Newest first: positions 20,000..20,010 are 42,000 − 1 − 12,000 − 8,000 down.
        assert_eq!(
            page.logs.iter().map(ms_of).collect::<Vec<_>>(),
            (13_990..14_000).rev().collect::<Vec<_>>()
        );
    }
}
