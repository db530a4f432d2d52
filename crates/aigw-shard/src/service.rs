//! `aigw.shard.v1.Shard` on one shard group.

use std::sync::Arc;

use std::collections::{BTreeMap, BTreeSet};

use aigw_blob::{BlobError, BlobStore, ByteRange, Codec};
use aigw_gateway_state::{CacheKey, GatewayState, LocalGatewayState};
use aigw_logindex::command::{Applied, Command, Delete, DeleteGateway, Insert, Update, kind::Kind};
use aigw_logindex::{CompiledQuery, IndexError, LogIndex, pack_key};
use aigw_proto::LEADER_METADATA;
use aigw_proto::shard::shard_server::Shard;
use aigw_proto::shard::{
    BodyKind, CacheGetRequest, CacheGetResponse, CachePutRequest, CachePutResponse,
    DeleteGatewayRequest, DeleteGatewayResponse, DeleteLogsRequest, DeleteLogsResponse,
    GetBodyRequest, GetBodyResponse, GetLogRequest, GetLogResponse, IngestRequest, IngestResponse,
    LeaseRateRequest, LeaseRateResponse, ListLogsRequest, ListLogsResponse, LogQuery, LogRecord,
    UpdateLogRequest, UpdateLogResponse,
};
use aigw_raft::{GroupHandle, ReadError, WriteError};
use aigw_types::unix_now_ms;
use bytes::Bytes;
use prost::Message;
use tonic::{Request, Response, Status};
use ulid::Ulid;

use crate::packing::{PackError, PackIds, pack_batch};
use crate::quota::{Due, QuotaKeeper};

/// Longest wait for a new gateway's first quota before its rows are admitted without one.
const FIRST_QUOTA_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Wait before a failed usage report is tried again.
const RETRY_REPORT: std::time::Duration = std::time::Duration::from_secs(1);

/// Ids per replicated delete command, so entries stay small.
const DELETE_IDS_PER_COMMAND: usize = 10_000;

/// Serves one shard group: writes through Raft, reads from the local index after a
/// linearizability check.
#[derive(Clone)]
pub struct ShardService {
    index: LogIndex,
    group: GroupHandle,
    blobs: Arc<dyn BlobStore>,
    codec: Codec,
    pack_ids: Arc<PackIds>,
    quotas: Option<QuotaKeeper>,
    state: Arc<LocalGatewayState>,
}

/// Cache budget of a service given no node-wide gateway state (tests, tools).
const DEFAULT_CACHE_BYTES: usize = 16 << 20;

impl ShardService {
    /// Serve the group `group` whose state machine maintains `index`, keeping bodies in `blobs`.
    pub fn new(index: LogIndex, group: GroupHandle, blobs: Arc<dyn BlobStore>) -> Self {
        Self {
            index,
            group,
            blobs,
            codec: Codec::default(),
            pack_ids: Arc::new(PackIds::new()),
            quotas: None,
            state: Arc::new(LocalGatewayState::new(DEFAULT_CACHE_BYTES)),
        }
    }

    /// Keeps the soft gateway state (shared cache tier, rate budgets) of the gateways this
    /// group is home to in `state`, which a node shares between its groups (one budget).
    pub fn with_gateway_state(mut self, state: Arc<LocalGatewayState>) -> Self {
        self.state = state;
        self
    }

    /// Admits rows against quotas that `quotas` keeps current (without: every row).
    pub fn with_quotas(mut self, quotas: QuotaKeeper) -> Self {
        self.quotas = Some(quotas);
        self
    }

    /// Stores a quota; the rows a lowered limit trims go with their bodies.
    async fn set_quota(&self, set: Kind) -> Result<(), Status> {
        let applied = self.propose(set).await?;
        self.discard_bodies(&applied).await;
        Ok(())
    }

    /// Gateways this group holds no quota for (new ones, or never answered) get one from the
    /// account manager before their first rows are admitted, waiting at most
    /// [`FIRST_QUOTA_WAIT`]: without it they would be held to one report's worth of rows —
    /// even on a plan without limits — until the background report came back. This is the
    /// log path (the client has had its response), and each gateway pays it once per leader.
    async fn fetch_first_quotas(&self, gateways: &[(String, String)]) {
        let Some(quotas) = &self.quotas else { return };
        // One wait for the whole batch, however many new gateways it has.
        let deadline = tokio::time::Instant::now() + FIRST_QUOTA_WAIT;
        for (account, gateway) in gateways {
            let usage = match self.index.usage(account, gateway) {
                Ok(usage) if usage.quota.is_none() => usage,
                _ => continue,
            };
            let fetched =
                tokio::time::timeout_at(deadline, quotas.report(account, gateway, usage)).await;
            if let Ok(Ok(Some(set))) = fetched
                && let Err(e) = self.set_quota(set).await
            {
                tracing::debug!(%account, %gateway, error = %e.message(), "storing a first quota failed");
            }
        }
    }

    /// Reports the usage of every gateway of the group each time this replica becomes its
    /// leader: the previous leader may have stored rows it never reported. Ends when the
    /// group stops. Does nothing without quotas.
    pub async fn report_on_leadership(self) {
        if self.quotas.is_none() {
            return;
        }
        let mut metrics = self.group.metrics();
        let mut leading = false;
        loop {
            let now_leading = metrics.borrow_and_update().state.is_leader();
            // Counts are read once everything committed is applied here.
            if now_leading && !leading && self.read_barrier().await.is_ok() {
                let index = self.index.clone();
                match tokio::task::spawn_blocking(move || index.gateways()).await {
                    Ok(Ok(gateways)) => self.report_usage(&gateways),
                    Ok(Err(e)) => tracing::warn!(error = %e, "listing the group's gateways failed"),
                    Err(e) => tracing::warn!(error = %e, "listing the group's gateways failed"),
                }
            }
            leading = now_leading;
            if metrics.changed().await.is_err() {
                return;
            }
        }
    }

    /// Reports the usage of those of `gateways` (distinct) that call for it, in the
    /// background, and stores the quotas granted.
    fn report_usage(&self, gateways: &[(String, String)]) {
        let Some(quotas) = &self.quotas else { return };
        for (account, gateway) in gateways {
            let usage = match self.index.usage(account, gateway) {
                Ok(usage) => usage,
                Err(e) => {
                    tracing::warn!(error = %e, "reading a gateway's usage failed");
                    continue;
                }
            };
            let (service, quotas) = (self.clone(), quotas.clone());
            let (account, gateway) = (account.to_owned(), gateway.to_owned());
            match quotas.due(&account, &gateway, &usage) {
                Due::No => continue,
                Due::Later(wait) => {
                    tokio::spawn(async move {
                        tokio::time::sleep(wait).await;
                        quotas.unschedule(&account, &gateway);
                        service.report_again(account, gateway);
                    });
                    continue;
                }
                Due::Now => {}
            }
            tokio::spawn(async move {
                let stored = match quotas.report(&account, &gateway, usage).await {
                    Ok(Some(set)) => service.set_quota(set).await,
                    Ok(None) => Ok(()),
                    Err(e) => Err(e),
                };
                match stored {
                    // Rows that went in while the report was in flight found no report to
                    // trigger: look again, or the last of them would go unreported until
                    // the next log arrives.
                    Ok(()) => service.report_again(account, gateway),
                    Err(e) => {
                        tracing::warn!(%account, %gateway, error = %e.message(), "usage report failed; the stored quota applies");
                        // Tried again (while this replica leads) even if no more logs arrive.
                        tokio::time::sleep(RETRY_REPORT).await;
                        service.report_again(account, gateway);
                    }
                }
            });
        }
    }

    /// Looks at one gateway's usage again (after a wait), if this replica still leads.
    fn report_again(&self, account: String, gateway: String) {
        if self.group.is_leader() {
            self.report_usage(&[(account, gateway)]);
        }
    }

    /// Frames bodies with `codec` (e.g. a decode limit that fits the largest stored body).
    pub fn with_codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    async fn propose(&self, kind: Kind) -> Result<Applied, Status> {
        self.propose_encoded(Command { kind: Some(kind) }.encode_to_vec())
            .await
    }

    /// Proposes an encoded [`Command`] and waits for it to apply.
    async fn propose_encoded(&self, command: Vec<u8>) -> Result<Applied, Status> {
        let reply = self.group.write(command).await.map_err(write_status)?;
        Applied::decode(reply.as_slice())
            .map_err(|e| Status::internal(format!("undecodable apply reply: {e}")))
    }

    /// Refuses (retryably, naming the leader) unless this replica leads the group. The soft
    /// gateway state is served on the leader alone so that every edge shares one copy.
    fn leading(&self) -> Result<(), Status> {
        if self.group.is_leader() {
            return Ok(());
        }
        let leader = self.group.leader().and_then(|(_, addr)| addr);
        Err(not_leader(
            "this replica is not the shard leader".into(),
            leader,
        ))
    }

    async fn read_barrier(&self) -> Result<(), Status> {
        self.group.ensure_linearizable().await.map_err(read_status)
    }

    /// Run a blocking index read off the async executor.
    async fn read<T, F>(&self, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&LogIndex) -> Result<T, IndexError> + Send + 'static,
    {
        self.read_barrier().await?;
        let index = self.index.clone();
        tokio::task::spawn_blocking(move || f(&index))
            .await
            .map_err(|e| Status::internal(format!("index read task failed: {e}")))?
            .map_err(index_status)
    }

    /// Removes the bodies a command left without a row: whole packs, and frames inside packs
    /// that other rows still use.
    async fn discard_bodies(&self, applied: &Applied) {
        // Rows are gone already; a body left behind is garbage, never visible, so log and go on.
        if !applied.deleted_packs.is_empty()
            && let Err(e) = self.blobs.delete(&applied.deleted_packs).await
        {
            let packs = applied.deleted_packs.len();
            tracing::warn!(error = %e, packs, "deleting body packs of deleted logs failed");
        }
        let mut by_pack: BTreeMap<&str, Vec<ByteRange>> = BTreeMap::new();
        for dead in &applied.erased {
            by_pack.entry(&dead.pack_key).or_default().push(ByteRange {
                offset: dead.offset,
                len: dead.len,
            });
        }
        for (key, ranges) in by_pack {
            if let Err(e) = self.blobs.erase(key, ranges).await {
                tracing::warn!(error = %e, pack = key, "erasing bodies of deleted logs failed");
            }
        }
    }
}

/// The gateways of `rows`, each once (a batch is mostly one gateway's rows).
fn distinct_gateways(rows: &[LogRecord]) -> Vec<(String, String)> {
    let distinct: BTreeSet<(&str, &str)> = rows
        .iter()
        .map(|r| (r.account_id.as_str(), r.gateway_id.as_str()))
        .collect();
    distinct
        .into_iter()
        .map(|(a, g)| (a.to_owned(), g.to_owned()))
        .collect()
}

fn parse_id(bytes: &[u8]) -> Result<Ulid, Status> {
    aigw_proto::id_from_bytes(bytes).map_err(|e| Status::invalid_argument(e.to_string()))
}

fn not_leader(message: String, leader_addr: Option<String>) -> Status {
    let mut status = Status::failed_precondition(message);
    // Present even when the leader is unknown: it marks the refusal as retryable elsewhere.
    let value = leader_addr
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| tonic::metadata::MetadataValue::from_static(""));
    status.metadata_mut().insert(LEADER_METADATA, value);
    status
}

fn write_status(e: WriteError) -> Status {
    match e {
        WriteError::NotLeader { leader_addr, .. } => not_leader(
            format!("this replica is not the shard leader (leader: {leader_addr:?})"),
            leader_addr,
        ),
        other => Status::unavailable(format!("shard cannot commit: {other}")),
    }
}

fn read_status(e: ReadError) -> Status {
    match e {
        ReadError::NotLeader { leader_addr, .. } => not_leader(
            format!("this replica is not the shard leader (leader: {leader_addr:?})"),
            leader_addr,
        ),
        other => Status::unavailable(format!("shard cannot serve reads: {other}")),
    }
}

fn index_status(e: IndexError) -> Status {
    match e {
        IndexError::Query(q) => Status::invalid_argument(q.to_string()),
        IndexError::InvalidCommand(m) => Status::invalid_argument(m),
        other => Status::internal(other.to_string()),
    }
}

fn blob_status(e: BlobError) -> Status {
    match e {
        BlobError::NotFound { .. } => Status::not_found(e.to_string()),
        BlobError::Corrupt { .. } => Status::data_loss(e.to_string()),
        BlobError::InvalidKey { .. } => Status::invalid_argument(e.to_string()),
        other => Status::unavailable(other.to_string()),
    }
}

fn compile(query: Option<LogQuery>) -> Result<CompiledQuery, Status> {
    let query = query.ok_or_else(|| Status::invalid_argument("missing query"))?;
    if query.account_id.is_empty() || query.gateway_id.is_empty() {
        return Err(Status::invalid_argument(
            "query needs account_id and gateway_id",
        ));
    }
    CompiledQuery::compile(&query).map_err(|e| Status::invalid_argument(e.to_string()))
}

fn cache_key(bytes: &[u8]) -> Result<CacheKey, Status> {
    CacheKey::from_slice(bytes).ok_or_else(|| {
        Status::invalid_argument(format!("cache key must be 32 bytes, got {}", bytes.len()))
    })
}

fn log_not_found(id: Ulid) -> Status {
    Status::not_found(format!("log `{id}` not found"))
}

#[tonic::async_trait]
impl Shard for ShardService {
    #[tracing::instrument(skip_all, fields(entries = request.get_ref().entries.len()))]
    async fn ingest(
        &self,
        request: Request<IngestRequest>,
    ) -> Result<Response<IngestResponse>, Status> {
        // Refuse before writing bodies that would be orphaned.
        self.leading()?;
        let entries = request.into_inner().entries;
        let (codec, ids) = (self.codec, self.pack_ids.clone());
        let default_max_rows = self.quotas.as_ref().map_or(0, QuotaKeeper::initial_rows);
        let reports_usage = self.quotas.is_some();
        // Packing and encoding a batch of a thousand rows take milliseconds: not on an async
        // worker, which would serve no request meanwhile. The rows are dropped there too.
        let (packs, command, gateways) = tokio::task::spawn_blocking(move || {
            let batch = pack_batch(entries, codec, &ids)?;
            let gateways = if reports_usage {
                distinct_gateways(&batch.rows)
            } else {
                Vec::new()
            };
            let insert = Insert {
                rows: batch.rows,
                default_max_rows,
            };
            Ok((batch.packs, insert.to_command(), gateways))
        })
        .await
        .map_err(|e| Status::internal(format!("packing task failed: {e}")))?
        .map_err(|e| match e {
            PackError::InvalidEntry(m) => Status::invalid_argument(m),
            PackError::Blob(b) => blob_status(b),
        })?;
        // Every body is durable before the rows that point to it are proposed.
        self.blobs.put_many(packs).await.map_err(blob_status)?;
        self.fetch_first_quotas(&gateways).await;
        let applied = self.propose_encoded(command).await?;
        self.report_usage(&gateways);
        // Logs of a gateway deleted while they were in flight, or refused by its quota, leave
        // their bodies behind; so do the logs evicted to make room.
        self.discard_bodies(&applied).await;
        Ok(Response::new(IngestResponse {
            accepted: u32::try_from(applied.affected).unwrap_or(u32::MAX),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_logs(
        &self,
        request: Request<ListLogsRequest>,
    ) -> Result<Response<ListLogsResponse>, Status> {
        let request = request.into_inner();
        let query = compile(request.query)?;
        let (page, per_page) = (
            request.page.max(1),
            request.per_page.clamp(1, aigw_proto::MAX_LISTED_ROWS),
        );
        let Some(cursor) = request.after_id else {
            let found = self
                .read(move |index| index.list(&query, page, per_page))
                .await?;
            return Ok(Response::new(ListLogsResponse {
                logs: found.rows,
                total_count: found.total,
            }));
        };
        let mut after = query.clone();
        after
            .after(parse_id(&cursor)?)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let skip = (page as usize - 1) * per_page as usize;
        let (logs, total_count) = self
            .read(move |index| {
                // The total counts every match (a counter when it can); the rows come from
                // the cursor on, read no further than the page needs.
                let total = index.list(&query, 1, 1)?.total;
                let rows = index.collect(&after, skip + per_page as usize)?;
                Ok((rows.into_iter().skip(skip).collect(), total))
            })
            .await?;
        Ok(Response::new(ListLogsResponse { logs, total_count }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_log(
        &self,
        request: Request<GetLogRequest>,
    ) -> Result<Response<GetLogResponse>, Status> {
        let r = request.into_inner();
        let id = parse_id(&r.id)?;
        let log = self
            .read(move |index| index.get(&r.account_id, &r.gateway_id, id))
            .await?
            .ok_or_else(|| log_not_found(id))?;
        Ok(Response::new(GetLogResponse { log: Some(log) }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_body(
        &self,
        request: Request<GetBodyRequest>,
    ) -> Result<Response<GetBodyResponse>, Status> {
        let r = request.into_inner();
        let id = parse_id(&r.id)?;
        let kind = BodyKind::try_from(r.kind).unwrap_or(BodyKind::Request);
        let log = self
            .read(move |index| index.get(&r.account_id, &r.gateway_id, id))
            .await?
            .ok_or_else(|| log_not_found(id))?;
        let location = log.bodies.unwrap_or_default();
        let (range, content_type, truncated, name) = match kind {
            BodyKind::Request => (
                ByteRange {
                    offset: location.offset,
                    len: location.request_len,
                },
                log.request_content_type,
                log.request_body_truncated,
                "request",
            ),
            BodyKind::Response => (
                ByteRange {
                    offset: location.offset + location.request_len,
                    len: location.response_len,
                },
                log.response_content_type,
                log.response_body_truncated,
                "response",
            ),
        };
        if range.len == 0 {
            return Err(Status::not_found(format!(
                "the {name} body of log `{id}` was not stored (cf-aig-collect-log-payload: false)"
            )));
        }
        let key = pack_key(&log.account_id, &log.gateway_id, location.pack);
        let body: Bytes = aigw_blob::pack::read_body(&*self.blobs, &self.codec, &key, range)
            .await
            .map_err(blob_status)?;
        Ok(Response::new(GetBodyResponse {
            body,
            content_type,
            truncated,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn update_log(
        &self,
        request: Request<UpdateLogRequest>,
    ) -> Result<Response<UpdateLogResponse>, Status> {
        let r = request.into_inner();
        let id = parse_id(&r.id)?;
        if r.feedback.is_some_and(|f| !(-1..=1).contains(&f)) {
            return Err(Status::invalid_argument("feedback must be -1, 0 or 1"));
        }
        if r.score.is_some_and(|s| !s.is_finite()) {
            return Err(Status::invalid_argument("score must be a finite number"));
        }
        aigw_proto::metadata_from_proto(r.metadata.clone())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let applied = self
            .propose(Kind::Update(Update {
                account_id: r.account_id,
                gateway_id: r.gateway_id,
                id: r.id.to_vec(),
                feedback: r.feedback,
                score: r.score,
                replace_metadata: r.replace_metadata,
                metadata: r.metadata,
            }))
            .await?;
        let log = applied.row.ok_or_else(|| log_not_found(id))?;
        Ok(Response::new(UpdateLogResponse { log: Some(log) }))
    }

    #[tracing::instrument(skip_all)]
    async fn delete_logs(
        &self,
        request: Request<DeleteLogsRequest>,
    ) -> Result<Response<DeleteLogsResponse>, Status> {
        let r = request.into_inner();
        let query = compile(r.query)?;
        let (account_id, gateway_id) =
            (query.account_id().to_owned(), query.gateway_id().to_owned());
        let limit = if r.limit == 0 {
            usize::MAX
        } else {
            r.limit as usize
        };
        let ids: Vec<Vec<u8>> = self
            .read(move |index| {
                Ok(index
                    .collect(&query, limit)?
                    .into_iter()
                    .map(|row| row.id.to_vec())
                    .collect())
            })
            .await?;
        let mut deleted = 0;
        for chunk in ids.chunks(DELETE_IDS_PER_COMMAND) {
            let applied = self
                .propose(Kind::Delete(Delete {
                    account_id: account_id.clone(),
                    gateway_id: gateway_id.clone(),
                    ids: chunk.to_vec(),
                }))
                .await?;
            deleted += applied.affected;
            self.discard_bodies(&applied).await;
        }
        // The account manager's count falls with the deletion, not with the next log.
        if deleted > 0 {
            self.report_usage(&[(account_id, gateway_id)]);
        }
        Ok(Response::new(DeleteLogsResponse { deleted }))
    }

    #[tracing::instrument(skip_all)]
    async fn delete_gateway(
        &self,
        request: Request<DeleteGatewayRequest>,
    ) -> Result<Response<DeleteGatewayResponse>, Status> {
        let r = request.into_inner();
        let applied = self
            .propose(Kind::DeleteGateway(DeleteGateway {
                account_id: r.account_id,
                gateway_id: r.gateway_id,
                deleted_at_ms: unix_now_ms(),
            }))
            .await?;
        self.discard_bodies(&applied).await;
        Ok(Response::new(DeleteGatewayResponse {
            deleted: applied.affected,
        }))
    }

    #[tracing::instrument(skip_all, fields(account = %request.get_ref().account_id, gateway = %request.get_ref().gateway_id))]
    async fn cache_get(
        &self,
        request: Request<CacheGetRequest>,
    ) -> Result<Response<CacheGetResponse>, Status> {
        self.leading()?;
        let r = request.into_inner();
        let entry = self
            .state
            .cache_get(&r.account_id, &r.gateway_id, cache_key(&r.key)?)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(CacheGetResponse {
            entry: entry.map(Into::into),
        }))
    }

    #[tracing::instrument(skip_all, fields(account = %request.get_ref().account_id, gateway = %request.get_ref().gateway_id))]
    async fn cache_put(
        &self,
        request: Request<CachePutRequest>,
    ) -> Result<Response<CachePutResponse>, Status> {
        self.leading()?;
        let r = request.into_inner();
        let entry = r
            .entry
            .ok_or_else(|| Status::invalid_argument("missing entry"))?
            .try_into()
            .map_err(|e: aigw_proto::ConvertError| Status::invalid_argument(e.to_string()))?;
        self.state
            .cache_put(&r.account_id, &r.gateway_id, cache_key(&r.key)?, entry)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(CachePutResponse {}))
    }

    #[tracing::instrument(skip_all, fields(account = %request.get_ref().account_id, gateway = %request.get_ref().gateway_id))]
    async fn lease_rate(
        &self,
        request: Request<LeaseRateRequest>,
    ) -> Result<Response<LeaseRateResponse>, Status> {
        self.leading()?;
        let r = request.into_inner();
        let lease = self
            .state
            .lease(&r.account_id, &r.gateway_id, r.policy(), r.want)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(lease.into()))
    }
}
