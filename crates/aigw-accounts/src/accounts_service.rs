//! `aigw.admin.v1.Accounts` on the account-manager group: plans, accounts, tokens, usage.

use aigw_placement::{DEFAULT_VNODES_PER_NODE, ShardMap};
use aigw_proto::admin::accounts_server::Accounts;
use aigw_proto::admin::{
    Account, AccountInfo, AccountRef, CreateAccountRequest, CreateTokenRequest, CreatedToken,
    GatewayRef, GatewayUsageResponse, GroupUsage, ListPlansRequest, ListPlansResponse,
    ListTokensResponse, Plan, Quota, SetAccountPlanRequest, SubShardInfo, TokenInfo, TokenRef,
    TokenVerifier, UsageReport,
};
use aigw_raft::GroupHandle;
use aigw_types::unix_now_ms;
use tonic::{Request, Response, Status};

use crate::command::{
    Applied, CreateAccount, PutPlan, PutShardMap, PutToken, ReportUsage, RevokeToken,
    SetAccountPlan, Status as Outcome, kind::Kind,
};
use crate::registry::RegistryError;
use crate::service::{propose, read_status, validate_id};
use crate::tokens::Permission;
use crate::{
    AccountBook, DEFAULT_GATEWAY, GatewayRegistry, ShardMapStore, default_settings, gateway_limit,
};

/// How far ahead of the split decision a new sub-shard starts taking logs: time for the
/// edges to see the new map and for the new group to elect its leader, so that logs do not
/// wait for it.
const SPLIT_LEAD_MS: i64 = 1_000;
/// How long a sub-shard is active, at least, before it can be split in turn: a bound on how
/// fast a gateway creates groups, whatever its ingestion rate.
const SPLIT_COOLDOWN_MS: i64 = 2_000;

/// The rows `report`'s group will hold when a split decided at the *next* report takes
/// effect: its rows now, plus its ingestion rate (from `previous`, the group's last report)
/// over one report interval and [`SPLIT_LEAD_MS`]. Splitting once this reaches
/// `split_rows` keeps a busy sub-shard near `split_rows` instead of overshooting it by
/// however many rows arrive between the crossing report and the new sub-shard's start.
fn rows_if_split_waits(report: &UsageReport, previous: Option<&GroupUsage>, now_ms: i64) -> u64 {
    let Some(previous) = previous else {
        return report.rows;
    };
    let elapsed_ms = now_ms - previous.reported_at_ms;
    if elapsed_ms <= 0 || report.rows <= previous.rows {
        return report.rows;
    }
    let growth = (report.rows - previous.rows) as f64;
    let per_ms = growth / elapsed_ms as f64;
    let ahead = per_ms * (elapsed_ms + SPLIT_LEAD_MS) as f64;
    report.rows.saturating_add(ahead as u64)
}

/// Serves the account book from the account-manager group.
#[derive(Clone)]
pub struct AccountsService {
    book: AccountBook,
    registry: GatewayRegistry,
    shard_maps: ShardMapStore,
    group: GroupHandle,
}

fn storage(e: RegistryError) -> Status {
    Status::internal(format!("account manager storage: {e}"))
}

fn outcome(applied: &Applied) -> Outcome {
    Outcome::try_from(applied.status).unwrap_or(Outcome::Ok)
}

fn unknown_plan(plan: &str) -> Status {
    Status::invalid_argument(format!(
        "unknown plan `{plan}` (`aigw admin plan list` shows the plans)"
    ))
}

fn token_info(v: &TokenVerifier) -> TokenInfo {
    TokenInfo {
        id: v.id.clone(),
        account_id: v.account_id.clone(),
        created_at_ms: v.created_at_ms,
        permissions: Permission::ALL
            .into_iter()
            .filter(|p| crate::tokens::grants(v, *p))
            .map(|p| p.name().to_owned())
            .collect(),
    }
}

impl AccountsService {
    /// Serve `book` (and count `registry`'s gateways, split gateways in `shard_maps`),
    /// replicating writes through `group`.
    pub fn new(
        book: AccountBook,
        registry: GatewayRegistry,
        shard_maps: ShardMapStore,
        group: GroupHandle,
    ) -> Self {
        Self {
            book,
            registry,
            shard_maps,
            group,
        }
    }

    /// Splits the reported gateway when the report is from its active sub-shard, that would
    /// hold `split_rows` rows if the split waited for the next report
    /// ([`rows_if_split_waits`], from `previous`, the group's last report), has been active
    /// for [`SPLIT_COOLDOWN_MS`] and is not the last the cap allows: a new shard map with a
    /// new group for the gateway's logs from [`SPLIT_LEAD_MS`] on, put by compare-and-set (a
    /// concurrent change wins, and the next report tries again).
    async fn split_if_due(
        &self,
        report: &UsageReport,
        previous: Option<&GroupUsage>,
        now_ms: i64,
    ) -> Result<(), Status> {
        let (account, gateway) = (&report.account_id, &report.gateway_id);
        if report.split_rows == 0
            || rows_if_split_waits(report, previous, now_ms) < report.split_rows
        {
            return Ok(());
        }
        let Some(map) = self.shard_maps.current() else {
            return Ok(());
        };
        let subs = map.sub_shards(account, gateway);
        let Some(active) = subs.last() else {
            return Ok(());
        };
        if active.group != report.group
            || subs.len() >= report.max_sub_shards as usize
            || active.from_ms > now_ms - SPLIT_COOLDOWN_MS
        {
            return Ok(());
        }
        let replication = map.replicas(active.group).map_or(1, <[u64]>::len);
        let split: ShardMap = map
            .split(
                account,
                gateway,
                now_ms + SPLIT_LEAD_MS,
                replication,
                DEFAULT_VNODES_PER_NODE,
            )
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        let applied = propose(
            &self.group,
            Kind::PutShardMap(PutShardMap {
                expected_version: map.version(),
                map: split.to_bytes(),
            }),
        )
        .await?;
        if outcome(&applied) == Outcome::Ok {
            tracing::info!(
                account,
                gateway,
                rows = report.rows,
                sub_shards = subs.len() + 1,
                group = split.groups().len(),
                map_version = split.version(),
                "gateway split: a new sub-shard takes its newer logs"
            );
        }
        Ok(())
    }

    async fn read_barrier(&self) -> Result<(), Status> {
        self.group.ensure_linearizable().await.map_err(read_status)
    }
}

#[tonic::async_trait]
impl Accounts for AccountsService {
    #[tracing::instrument(skip_all, fields(plan = %request.get_ref().name))]
    async fn put_plan(&self, request: Request<Plan>) -> Result<Response<Plan>, Status> {
        let plan = request.into_inner();
        validate_id("plan name", &plan.name, false)?;
        let applied = propose(&self.group, Kind::PutPlan(PutPlan { plan: Some(plan) })).await?;
        applied
            .plan
            .map(Response::new)
            .ok_or_else(|| Status::internal("plan put returned no plan"))
    }

    #[tracing::instrument(skip_all)]
    async fn list_plans(
        &self,
        _request: Request<ListPlansRequest>,
    ) -> Result<Response<ListPlansResponse>, Status> {
        self.read_barrier().await?;
        let plans = self.book.plans().map_err(storage)?;
        Ok(Response::new(ListPlansResponse { plans }))
    }

    #[tracing::instrument(skip_all, fields(account = %request.get_ref().account_id))]
    async fn create_account(
        &self,
        request: Request<CreateAccountRequest>,
    ) -> Result<Response<Account>, Status> {
        let r = request.into_inner();
        validate_id("account id", &r.account_id, false)?;
        let account = Account {
            id: r.account_id.clone(),
            plan: r.plan.clone(),
            created_at_ms: unix_now_ms(),
        };
        let applied = propose(
            &self.group,
            Kind::CreateAccount(CreateAccount {
                account: Some(account),
            }),
        )
        .await?;
        match (outcome(&applied), applied.account) {
            (Outcome::Ok, Some(account)) => Ok(Response::new(account)),
            (Outcome::AlreadyExists, _) => Err(Status::already_exists(format!(
                "account `{}` already exists",
                r.account_id
            ))),
            _ => Err(unknown_plan(&r.plan)),
        }
    }

    #[tracing::instrument(skip_all, fields(account = %request.get_ref().account_id))]
    async fn get_account(
        &self,
        request: Request<AccountRef>,
    ) -> Result<Response<AccountInfo>, Status> {
        let id = request.into_inner().account_id;
        validate_id("account id", &id, false)?;
        self.read_barrier().await?;
        let stored = self.book.account(&id).map_err(storage)?;
        let plan = self.book.plan_of(&id).map_err(storage)?.ok();
        let account = stored.clone().unwrap_or_else(|| Account {
            id: id.clone(),
            plan: crate::DEFAULT_PLAN.into(),
            created_at_ms: 0,
        });
        Ok(Response::new(AccountInfo {
            account: Some(account),
            plan,
            implicit: stored.is_none(),
            gateways: self.registry.list(&id, None).len() as u64,
            logs: self.book.account_logs(&id).map_err(storage)?,
        }))
    }

    #[tracing::instrument(skip_all, fields(account = %request.get_ref().account_id))]
    async fn set_account_plan(
        &self,
        request: Request<SetAccountPlanRequest>,
    ) -> Result<Response<Account>, Status> {
        let r = request.into_inner();
        validate_id("account id", &r.account_id, false)?;
        let account = Account {
            id: r.account_id,
            plan: r.plan.clone(),
            created_at_ms: unix_now_ms(),
        };
        let applied = propose(
            &self.group,
            Kind::SetAccountPlan(SetAccountPlan {
                account: Some(account),
            }),
        )
        .await?;
        match (outcome(&applied), applied.account) {
            (Outcome::Ok, Some(account)) => Ok(Response::new(account)),
            _ => Err(unknown_plan(&r.plan)),
        }
    }

    #[tracing::instrument(skip_all, fields(account = %request.get_ref().account_id))]
    async fn create_token(
        &self,
        request: Request<CreateTokenRequest>,
    ) -> Result<Response<CreatedToken>, Status> {
        let request = request.into_inner();
        let account = request.account_id;
        validate_id("account id", &account, false)?;
        let mut permissions = Vec::new();
        for name in &request.permissions {
            let permission = Permission::parse(name).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "unknown permission `{name}` (a token may have `logs` and `run`)"
                ))
            })?;
            if !permissions.contains(&permission) {
                permissions.push(permission);
            }
        }
        if permissions.is_empty() {
            permissions = Permission::ALL.to_vec();
        }
        let (token, verifier) = crate::tokens::issue(&account, &permissions, unix_now_ms())
            .map_err(|e| Status::internal(e.to_string()))?;
        let info = token_info(&verifier);
        propose(
            &self.group,
            Kind::PutToken(PutToken {
                verifier: Some(verifier),
            }),
        )
        .await?;
        tracing::info!(token_id = %info.id, "token issued");
        Ok(Response::new(CreatedToken {
            token,
            info: Some(info),
        }))
    }

    #[tracing::instrument(skip_all, fields(token_id = %request.get_ref().id))]
    async fn revoke_token(
        &self,
        request: Request<TokenRef>,
    ) -> Result<Response<TokenInfo>, Status> {
        let id = request.into_inner().id;
        let applied = propose(
            &self.group,
            Kind::RevokeToken(RevokeToken { id: id.clone() }),
        )
        .await?;
        match (outcome(&applied), applied.token) {
            (Outcome::Ok, Some(v)) => Ok(Response::new(token_info(&v))),
            _ => Err(Status::not_found(format!("no token with id `{id}`"))),
        }
    }

    #[tracing::instrument(skip_all, fields(account = %request.get_ref().account_id))]
    async fn list_tokens(
        &self,
        request: Request<AccountRef>,
    ) -> Result<Response<ListTokensResponse>, Status> {
        let account = request.into_inner().account_id;
        self.read_barrier().await?;
        let mut tokens: Vec<TokenInfo> = self
            .book
            .verifiers()
            .map_err(storage)?
            .iter()
            .filter(|v| v.account_id == account)
            .map(token_info)
            .collect();
        tokens.sort_by_key(|t| t.created_at_ms);
        Ok(Response::new(ListTokensResponse { tokens }))
    }

    #[tracing::instrument(skip_all, fields(account = %request.get_ref().account_id, gateway = %request.get_ref().gateway_id, group = request.get_ref().group))]
    async fn report_usage(&self, request: Request<UsageReport>) -> Result<Response<Quota>, Status> {
        let report = request.into_inner();
        let now_ms = unix_now_ms();
        let previous = self
            .book
            .usage(&report.account_id, Some(&report.gateway_id))
            .map_err(storage)?
            .into_iter()
            .find(|u| u.group == report.group);
        let applied = propose(
            &self.group,
            Kind::ReportUsage(ReportUsage {
                report: Some(report.clone()),
                reported_at_ms: now_ms,
            }),
        )
        .await?;
        if let Err(e) = self.split_if_due(&report, previous.as_ref(), now_ms).await {
            // The quota stands; the next report tries the split again.
            tracing::warn!(error = %e.message(), "could not split the gateway");
        }
        applied
            .quota
            .map(Response::new)
            .ok_or_else(|| Status::failed_precondition("the account's plan does not exist"))
    }

    #[tracing::instrument(skip_all, fields(account = %request.get_ref().account_id, gateway = %request.get_ref().id))]
    async fn gateway_usage(
        &self,
        request: Request<GatewayRef>,
    ) -> Result<Response<GatewayUsageResponse>, Status> {
        let r = request.into_inner();
        self.read_barrier().await?;
        let settings = self.registry.mirror().settings(&r.account_id, &r.id);
        let Some(settings) = settings.or_else(|| (r.id == DEFAULT_GATEWAY).then(default_settings))
        else {
            return Err(Status::not_found(format!(
                "gateway `{}` not found for account `{}`",
                r.id, r.account_id
            )));
        };
        let plan = self
            .book
            .plan_of(&r.account_id)
            .map_err(storage)?
            .map_err(|name| unknown_plan(&name))?;
        let groups = self
            .book
            .usage(&r.account_id, Some(&r.id))
            .map_err(storage)?;
        let sub_shards = self
            .shard_maps
            .current()
            .map(|map| {
                map.sub_shards(&r.account_id, &r.id)
                    .into_iter()
                    .map(|sub| SubShardInfo {
                        group: sub.group,
                        from_ms: sub.from_ms,
                        replicas: map.replicas(sub.group).unwrap_or_default().to_vec(),
                        rows: groups
                            .iter()
                            .filter(|u| u.group == sub.group)
                            .map(|u| u.rows)
                            .sum(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Response::new(GatewayUsageResponse {
            limit: gateway_limit(&plan, &settings),
            account_limit: plan.max_logs_per_account,
            account_logs: self.book.account_logs(&r.account_id).map_err(storage)?,
            strategy: settings.log_management_strategy,
            groups,
            sub_shards,
            plan: plan.name,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(rows: u64) -> UsageReport {
        UsageReport {
            rows,
            split_rows: 10_000,
            ..Default::default()
        }
    }

    fn usage(rows: u64, reported_at_ms: i64) -> GroupUsage {
        GroupUsage {
            rows,
            reported_at_ms,
            ..Default::default()
        }
    }

    #[test]
    fn without_a_previous_report_or_growth_the_rows_are_the_count() {
        assert_eq!(rows_if_split_waits(&report(9_000), None, 5_000), 9_000);
        let same = usage(9_000, 4_000);
        assert_eq!(
            rows_if_split_waits(&report(9_000), Some(&same), 5_000),
            9_000
        );
        let later = usage(8_000, 5_000);
        assert_eq!(
            rows_if_split_waits(&report(9_000), Some(&later), 5_000),
            9_000
        );
    }

    #[test]
    fn a_growing_group_is_projected_one_interval_and_the_lead_ahead() {
        // 500 rows in the last 500 ms: 1 row/ms, over 500 ms to the next report and the
        // 1,000 ms lead.
        let previous = usage(8_000, 4_500);
        assert_eq!(
            rows_if_split_waits(&report(8_500), Some(&previous), 5_000),
            10_000
        );
        let slower = usage(8_250, 4_500);
        assert!(rows_if_split_waits(&report(8_500), Some(&slower), 5_000) < 10_000);
    }
}
