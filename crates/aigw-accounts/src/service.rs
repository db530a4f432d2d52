//! `aigw.admin.v1.Gateways` on the account-manager group.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;

use aigw_proto::LEADER_METADATA;
use aigw_proto::admin::gateways_server::Gateways;
use aigw_proto::admin::{
    CreateGatewayRequest, Gateway, GatewayChanges, GatewayRef, GatewaySettings,
    ListGatewaysRequest, ListGatewaysResponse, UpdateGatewayRequest, WatchGatewaysRequest,
};
use aigw_raft::{GroupHandle, ReadError, WriteError};
use aigw_types::unix_now_ms;
use futures_util::StreamExt;
use prost::Message;
use tokio::sync::{broadcast, watch};
use tonic::{Request, Response, Status};

use crate::command::{
    Applied, Command, CreateGateway, DeleteGateway, Status as Outcome, UpdateGateway, kind::Kind,
};
use crate::{
    AccountBook, DEFAULT_GATEWAY, GatewayChange, GatewayMirror, GatewayRegistry, default_settings,
};

/// Longest gateway id.
const MAX_ID_LEN: usize = 64;
/// Largest page of gateways.
const MAX_PER_PAGE: u32 = 100;
/// Most gateways in one batch of a watch stream.
const WATCH_BATCH: usize = 1024;

/// Serves gateways from the account-manager group.
#[derive(Clone)]
pub struct GatewaysService {
    registry: GatewayRegistry,
    book: AccountBook,
    group: GroupHandle,
    watch_end: WatchEnd,
}

/// The stream of gateway changes a watcher receives.
pub type GatewayChangesStream = aigw_proto::BoxStream<GatewayChanges>;

/// When a service's watch streams end: once this replica stops serving the group, or once the
/// service is closed — the moments a watcher must resume on another replica (and a graceful
/// server stop, which waits for open streams, can finish). Shared by clones.
#[derive(Clone)]
pub(crate) struct WatchEnd {
    group: GroupHandle,
    closing: Arc<watch::Sender<bool>>,
}

impl WatchEnd {
    pub(crate) fn new(group: GroupHandle) -> Self {
        Self {
            group,
            closing: Arc::new(watch::channel(false).0),
        }
    }

    /// Ends every stream, now and for streams opened from now on.
    pub(crate) fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Resolves when a stream opened now must end.
    pub(crate) fn reached(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut metrics = self.group.metrics();
        let group_stopped = async move { while metrics.changed().await.is_ok() {} };
        let mut closing = self.closing.subscribe();
        let closed = async move {
            let _ = closing.wait_for(|closing| *closing).await;
        };
        async move {
            futures_util::future::select(Box::pin(group_stopped), Box::pin(closed)).await;
        }
    }
}

/// Every gateway of `mirror` as the batches that open a watch (at least one).
fn snapshot_batches(mirror: &GatewayMirror) -> VecDeque<GatewayChanges> {
    let all = mirror.all();
    let mut batches: VecDeque<GatewayChanges> = all
        .chunks(WATCH_BATCH)
        .map(|chunk| GatewayChanges {
            upserts: chunk.to_vec(),
            ..GatewayChanges::default()
        })
        .collect();
    let tokens = mirror.tokens();
    batches.extend(tokens.chunks(WATCH_BATCH).map(|chunk| GatewayChanges {
        token_upserts: chunk.to_vec(),
        ..GatewayChanges::default()
    }));
    if batches.is_empty() {
        batches.push_back(GatewayChanges::default());
    }
    if let Some(first) = batches.front_mut() {
        first.reset = true;
    }
    if let Some(last) = batches.back_mut() {
        last.synced = true;
    }
    batches
}

/// What a watch stream has yet to send.
struct Watch {
    mirror: GatewayMirror,
    changes: broadcast::Receiver<GatewayChange>,
    pending: VecDeque<GatewayChanges>,
}

impl Watch {
    /// The next batch: queued snapshot batches first, then the changes that have arrived, up
    /// to a batch's worth. A watcher that lagged, or a snapshot installed under it, gets a
    /// fresh snapshot. `None` once the registry is gone.
    async fn next(mut self) -> Option<(Result<GatewayChanges, Status>, Self)> {
        loop {
            if let Some(batch) = self.pending.pop_front() {
                return Some((Ok(batch), self));
            }
            let first = match self.changes.recv().await {
                Ok(change) => change,
                Err(broadcast::error::RecvError::Lagged(_)) => GatewayChange::Reset,
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            let mut batch = GatewayChanges::default();
            let mut change = Some(first);
            while let Some(c) = change.take() {
                match c {
                    GatewayChange::Upsert(g) => batch.upserts.push(g),
                    GatewayChange::Removed { account_id, id } => {
                        batch.removals.push(GatewayRef { account_id, id })
                    }
                    GatewayChange::TokenUpsert(t) => batch.token_upserts.push(t),
                    GatewayChange::TokenRemoved(id) => batch.token_removals.push(id),
                    GatewayChange::Reset => {
                        self.pending = snapshot_batches(&self.mirror);
                        batch = GatewayChanges::default();
                        break;
                    }
                }
                let size = batch.upserts.len()
                    + batch.removals.len()
                    + batch.token_upserts.len()
                    + batch.token_removals.len();
                if size < WATCH_BATCH {
                    change = match self.changes.try_recv() {
                        Ok(c) => Some(c),
                        Err(broadcast::error::TryRecvError::Lagged(_)) => {
                            Some(GatewayChange::Reset)
                        }
                        Err(_) => None,
                    };
                }
            }
            if batch != GatewayChanges::default() {
                self.pending.push_back(batch);
            }
        }
    }
}

/// A gateway as first stored, created and modified now.
fn new_gateway(account_id: String, id: String, settings: GatewaySettings) -> Gateway {
    let now = unix_now_ms();
    Gateway {
        account_id,
        id,
        settings: Some(settings),
        created_at_ms: now,
        modified_at_ms: now,
        // Set by the registry when an update invalidates the cache.
        cache_epoch_ms: 0,
    }
}

/// Check an account or gateway id; gateway ids are lower-case like Cloudflare's.
pub(crate) fn validate_id(what: &str, id: &str, lowercase_only: bool) -> Result<(), Status> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id.bytes().all(|b| {
            b.is_ascii_digit()
                || b == b'-'
                || b == b'_'
                || b.is_ascii_lowercase()
                || (!lowercase_only && b.is_ascii_uppercase())
        });
    if ok {
        Ok(())
    } else {
        let charset = if lowercase_only {
            "[a-z0-9_-]"
        } else {
            "[A-Za-z0-9_-]"
        };
        Err(Status::invalid_argument(format!(
            "invalid {what} `{id}`: use 1 to {MAX_ID_LEN} characters of {charset}"
        )))
    }
}

/// A refusal by a replica that does not lead, naming the leader's address in metadata too.
fn not_leader(leader_addr: Option<String>) -> Status {
    let mut status = Status::failed_precondition(format!(
        "not the account-manager leader (leader: {leader_addr:?})"
    ));
    // Present even when the leader is unknown: it marks the refusal as retryable elsewhere.
    let value = leader_addr
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| tonic::metadata::MetadataValue::from_static(""));
    status.metadata_mut().insert(LEADER_METADATA, value);
    status
}

fn write_status(e: WriteError) -> Status {
    match e {
        WriteError::NotLeader { leader_addr, .. } => not_leader(leader_addr),
        other => Status::unavailable(format!("account manager cannot commit: {other}")),
    }
}

pub(crate) fn read_status(e: ReadError) -> Status {
    match e {
        ReadError::NotLeader { leader_addr, .. } => not_leader(leader_addr),
        other => Status::unavailable(format!("account manager cannot serve reads: {other}")),
    }
}

/// Replicates `kind` through the account-manager group; returns what applying it did.
pub(crate) async fn propose(group: &GroupHandle, kind: Kind) -> Result<Applied, Status> {
    let reply = group
        .write(Command { kind: Some(kind) }.encode_to_vec())
        .await
        .map_err(write_status)?;
    Applied::decode(reply.as_slice())
        .map_err(|e| Status::internal(format!("undecodable apply reply: {e}")))
}

impl GatewaysService {
    /// Serve `registry` (under the plans of `book`), replicating writes through `group`.
    pub fn new(registry: GatewayRegistry, book: AccountBook, group: GroupHandle) -> Self {
        Self {
            registry,
            book,
            watch_end: WatchEnd::new(group.clone()),
            group,
        }
    }

    /// Ends every watch stream, now and for watches opened from now on (see
    /// [`ShardMapService::close`](crate::ShardMapService::close)).
    pub fn close(&self) {
        self.watch_end.close();
    }

    async fn propose(&self, kind: Kind) -> Result<Applied, Status> {
        propose(&self.group, kind).await
    }

    /// Persist `default` for `account` if it is still implicit, so that it shows up in
    /// listings as Cloudflare's does (edges reach this through `GetGateway` on first use).
    async fn materialize_default(&self, account: &str) -> Result<(), Status> {
        if self.registry.get(account, DEFAULT_GATEWAY).is_some() {
            return Ok(());
        }
        self.propose(Kind::Create(CreateGateway {
            gateway: Some(new_gateway(
                account.to_owned(),
                DEFAULT_GATEWAY.to_owned(),
                default_settings(),
            )),
        }))
        .await
        .map(|_| ())
    }

    /// Management calls on `default` persist it first, so that it can be read stably,
    /// configured or deleted before any traffic used it.
    async fn materialize_if_default(&self, account: &str, id: &str) -> Result<(), Status> {
        if id != DEFAULT_GATEWAY {
            return Ok(());
        }
        validate_id("account id", account, false)?;
        self.materialize_default(account).await
    }

    /// The error for a write the account's plan refused, naming the plan and its limit.
    fn plan_refusal(&self, account: &str, applied: &Applied) -> Result<(), Status> {
        let plan = || match self.book.plan_of(account) {
            Ok(Ok(plan)) => plan.name,
            Ok(Err(name)) => name,
            Err(_) => "?".into(),
        };
        match outcome(applied) {
            Outcome::LimitExceeded => Err(Status::resource_exhausted(format!(
                "account `{account}` has reached the {} gateways its plan `{}` allows",
                applied.limit,
                plan()
            ))),
            Outcome::StrategyNotAllowed => Err(Status::resource_exhausted(format!(
                "log_management_strategy DELETE_OLDEST is not allowed on plan `{}` of account `{account}`",
                plan()
            ))),
            Outcome::UnknownPlan => Err(Status::failed_precondition(format!(
                "account `{account}` is on plan `{}`, which does not exist",
                plan()
            ))),
            _ => Ok(()),
        }
    }

    fn not_found(account: &str, id: &str) -> Status {
        Status::not_found(format!("gateway `{id}` not found for account `{account}`"))
    }
}

fn outcome(applied: &Applied) -> Outcome {
    Outcome::try_from(applied.status).unwrap_or(Outcome::Ok)
}

#[tonic::async_trait]
impl Gateways for GatewaysService {
    type WatchGatewaysStream = GatewayChangesStream;

    #[tracing::instrument(skip_all)]
    async fn watch_gateways(
        &self,
        _request: Request<WatchGatewaysRequest>,
    ) -> Result<Response<Self::WatchGatewaysStream>, Status> {
        let mirror = self.registry.mirror().clone();
        // Subscribe before the snapshot is taken, so that no change falls between the two.
        let changes = mirror.subscribe();
        let watch = Watch {
            pending: snapshot_batches(&mirror),
            mirror,
            changes,
        };
        let stream =
            futures_util::stream::unfold(watch, Watch::next).take_until(self.watch_end.reached());
        Ok(Response::new(Box::pin(stream)))
    }

    #[tracing::instrument(skip_all, fields(account = %request.get_ref().account_id, gateway = %request.get_ref().id))]
    async fn create_gateway(
        &self,
        request: Request<CreateGatewayRequest>,
    ) -> Result<Response<Gateway>, Status> {
        let r = request.into_inner();
        validate_id("account id", &r.account_id, false)?;
        validate_id("gateway id", &r.id, true)?;
        let applied = self
            .propose(Kind::Create(CreateGateway {
                gateway: Some(new_gateway(
                    r.account_id.clone(),
                    r.id.clone(),
                    r.settings.unwrap_or_else(default_settings),
                )),
            }))
            .await?;
        if outcome(&applied) == Outcome::AlreadyExists {
            return Err(Status::already_exists(format!(
                "gateway `{}` already exists",
                r.id
            )));
        }
        self.plan_refusal(&r.account_id, &applied)?;
        applied
            .gateway
            .map(Response::new)
            .ok_or_else(|| Status::internal("create returned no gateway"))
    }

    #[tracing::instrument(skip_all, fields(account = %request.get_ref().account_id))]
    async fn list_gateways(
        &self,
        request: Request<ListGatewaysRequest>,
    ) -> Result<Response<ListGatewaysResponse>, Status> {
        let r = request.into_inner();
        validate_id("account id", &r.account_id, false)?;
        self.group
            .ensure_linearizable()
            .await
            .map_err(read_status)?;
        let all = self
            .registry
            .list(&r.account_id, r.search.as_deref().filter(|s| !s.is_empty()));
        let per_page = if r.per_page == 0 {
            20
        } else {
            r.per_page.min(MAX_PER_PAGE)
        } as usize;
        let skip = (r.page.max(1) as usize - 1).saturating_mul(per_page);
        Ok(Response::new(ListGatewaysResponse {
            total_count: all.len() as u64,
            gateways: all.into_iter().skip(skip).take(per_page).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(account = %request.get_ref().account_id, gateway = %request.get_ref().id))]
    async fn get_gateway(&self, request: Request<GatewayRef>) -> Result<Response<Gateway>, Status> {
        let r = request.into_inner();
        self.materialize_if_default(&r.account_id, &r.id).await?;
        self.group
            .ensure_linearizable()
            .await
            .map_err(read_status)?;
        self.registry
            .get(&r.account_id, &r.id)
            .map(Response::new)
            .ok_or_else(|| Self::not_found(&r.account_id, &r.id))
    }

    #[tracing::instrument(skip_all, fields(account = %request.get_ref().account_id, gateway = %request.get_ref().id))]
    async fn update_gateway(
        &self,
        request: Request<UpdateGatewayRequest>,
    ) -> Result<Response<Gateway>, Status> {
        let r = request.into_inner();
        self.materialize_if_default(&r.account_id, &r.id).await?;
        let applied = self
            .propose(Kind::Update(UpdateGateway {
                gateway: Some(new_gateway(
                    r.account_id.clone(),
                    r.id.clone(),
                    r.settings.unwrap_or_else(default_settings),
                )),
            }))
            .await?;
        self.plan_refusal(&r.account_id, &applied)?;
        match (outcome(&applied), applied.gateway) {
            (Outcome::Ok, Some(g)) => Ok(Response::new(g)),
            _ => Err(Self::not_found(&r.account_id, &r.id)),
        }
    }

    #[tracing::instrument(skip_all, fields(account = %request.get_ref().account_id, gateway = %request.get_ref().id))]
    async fn delete_gateway(
        &self,
        request: Request<GatewayRef>,
    ) -> Result<Response<Gateway>, Status> {
        let r = request.into_inner();
        self.materialize_if_default(&r.account_id, &r.id).await?;
        let applied = self
            .propose(Kind::Delete(DeleteGateway {
                account_id: r.account_id.clone(),
                id: r.id.clone(),
            }))
            .await?;
        match (outcome(&applied), applied.gateway) {
            (Outcome::Ok, Some(g)) => Ok(Response::new(g)),
            _ => Err(Self::not_found(&r.account_id, &r.id)),
        }
    }
}
