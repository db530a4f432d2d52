//! The account manager's state as a Raft state machine: gateways, the account book and the
//! shard map.

use aigw_proto::admin::{Gateway, LogManagementStrategy, Plan};
use aigw_raft::{App, AppError};
use prost::Message;

use crate::command::{
    Applied, Command, CreateAccount, PutPlan, PutToken, ReportUsage, RevokeToken, SetAccountPlan,
    Status, kind::Kind,
};
use crate::registry::RegistryError;
use crate::{AccountBook, DEFAULT_GATEWAY, GatewayRegistry, ShardMapStore, default_settings};

/// What a snapshot of the account manager holds.
#[derive(Clone, PartialEq, prost::Message)]
struct Snapshot {
    /// [`GatewayRegistry::snapshot`].
    #[prost(bytes = "vec", tag = "1")]
    gateways: Vec<u8>,
    /// [`ShardMapStore::snapshot`].
    #[prost(bytes = "vec", tag = "2")]
    shard_map: Vec<u8>,
    /// [`AccountBook::snapshot`].
    #[prost(bytes = "vec", tag = "3")]
    book: Vec<u8>,
}

/// Applies account-manager commands.
#[derive(Debug, Clone)]
pub struct AccountsApp {
    registry: GatewayRegistry,
    book: AccountBook,
    shard_map: ShardMapStore,
}

fn status(status: Status) -> Applied {
    Applied {
        status: status as i32,
        ..Applied::default()
    }
}

impl AccountsApp {
    /// A state machine over `registry`, `book` and `shard_map`.
    pub fn new(registry: GatewayRegistry, book: AccountBook, shard_map: ShardMapStore) -> Self {
        Self {
            registry,
            book,
            shard_map,
        }
    }

    /// Why `plan` refuses `gateway` (a new one when `creating`), if it does.
    fn refusal(&self, plan: &Plan, gateway: &Gateway, creating: bool) -> Option<Applied> {
        let settings = gateway.settings.clone().unwrap_or_else(default_settings);
        if settings.log_management_strategy() == LogManagementStrategy::DeleteOldest
            && !plan.delete_oldest_allowed
        {
            return Some(status(Status::StrategyNotAllowed));
        }
        // `default` exists implicitly whatever the plan; only named gateways count.
        let named = |g: &Gateway| g.id != DEFAULT_GATEWAY;
        let existing = self.registry.list(&gateway.account_id, None);
        if creating
            && named(gateway)
            && plan.max_gateways > 0
            && existing.iter().filter(|g| named(g)).count() as u64 >= plan.max_gateways
        {
            return Some(Applied {
                limit: plan.max_gateways,
                ..status(Status::LimitExceeded)
            });
        }
        None
    }

    fn apply_gateway(&self, command: Command) -> Result<Applied, RegistryError> {
        let (gateway, creating) = match &command.kind {
            Some(Kind::Create(c)) => (c.gateway.as_ref(), true),
            Some(Kind::Update(u)) => (u.gateway.as_ref(), false),
            _ => (None, false),
        };
        if let Some(g) = gateway
            && !(creating && self.registry.get(&g.account_id, &g.id).is_some())
        {
            let plan = match self.book.plan_of(&g.account_id)? {
                Ok(plan) => plan,
                Err(_) => return Ok(status(Status::UnknownPlan)),
            };
            if let Some(refused) = self.refusal(&plan, g, creating) {
                return Ok(refused);
            }
        }
        let deleting = matches!(command.kind, Some(Kind::Delete(_)));
        let applied = self.registry.apply(command)?;
        if deleting
            && applied.status == Status::Ok as i32
            && let Some(g) = &applied.gateway
        {
            // A deleted gateway's usage no longer counts against the account.
            self.book.drop_usage(&g.account_id, &g.id)?;
        }
        Ok(applied)
    }

    fn apply_book(&self, kind: Kind) -> Result<Applied, RegistryError> {
        let book = &self.book;
        Ok(match kind {
            Kind::PutPlan(PutPlan { plan: Some(plan) }) => {
                book.put_plan(&plan)?;
                Applied {
                    plan: Some(plan),
                    ..status(Status::Ok)
                }
            }
            Kind::CreateAccount(CreateAccount {
                account: Some(account),
            }) => match (book.account(&account.id)?, book.plan(&account.plan)?) {
                (Some(existing), _) => Applied {
                    account: Some(existing),
                    ..status(Status::AlreadyExists)
                },
                (None, None) => status(Status::UnknownPlan),
                (None, Some(_)) => {
                    book.put_account(&account)?;
                    Applied {
                        account: Some(account),
                        ..status(Status::Ok)
                    }
                }
            },
            Kind::SetAccountPlan(SetAccountPlan {
                account: Some(mut account),
            }) => {
                if book.plan(&account.plan)?.is_none() {
                    return Ok(status(Status::UnknownPlan));
                }
                if let Some(existing) = book.account(&account.id)? {
                    account.created_at_ms = existing.created_at_ms;
                }
                book.put_account(&account)?;
                Applied {
                    account: Some(account),
                    ..status(Status::Ok)
                }
            }
            Kind::PutToken(PutToken {
                verifier: Some(verifier),
            }) => {
                book.put_token(verifier.clone())?;
                Applied {
                    token: Some(verifier),
                    ..status(Status::Ok)
                }
            }
            Kind::RevokeToken(RevokeToken { id }) => match book.revoke_token(&id)? {
                Some(verifier) => Applied {
                    token: Some(verifier),
                    ..status(Status::Ok)
                },
                None => status(Status::NotFound),
            },
            Kind::ReportUsage(ReportUsage {
                report: Some(report),
                reported_at_ms,
            }) => {
                let plan = match book.plan_of(&report.account_id)? {
                    Ok(plan) => plan,
                    Err(_) => return Ok(status(Status::UnknownPlan)),
                };
                let settings = self
                    .registry
                    .mirror()
                    .settings(&report.account_id, &report.gateway_id)
                    .unwrap_or_else(default_settings);
                let quota = book.report(&report, reported_at_ms, &plan, &settings)?;
                Applied {
                    quota: Some(quota),
                    ..status(Status::Ok)
                }
            }
            _ => return Err(RegistryError::Corrupt("incomplete command".into())),
        })
    }
}

impl App for AccountsApp {
    fn apply(&self, _index: u64, command: &[u8]) -> Result<Vec<u8>, AppError> {
        let command = Command::decode(command).map_err(AppError::new)?;
        let applied = match command.kind {
            Some(Kind::PutShardMap(put)) => self.shard_map.apply(put).map_err(AppError::new)?,
            Some(Kind::Create(_) | Kind::Update(_) | Kind::Delete(_)) | None => {
                self.apply_gateway(command).map_err(AppError::new)?
            }
            Some(kind) => self.apply_book(kind).map_err(AppError::new)?,
        };
        Ok(applied.encode_to_vec())
    }

    fn snapshot(&self) -> Result<Vec<u8>, AppError> {
        Ok(Snapshot {
            gateways: self.registry.snapshot().map_err(AppError::new)?,
            shard_map: self.shard_map.snapshot().map_err(AppError::new)?,
            book: self.book.snapshot().map_err(AppError::new)?,
        }
        .encode_to_vec())
    }

    fn restore(&self, data: &[u8]) -> Result<(), AppError> {
        let snapshot = Snapshot::decode(data).map_err(AppError::new)?;
        self.registry
            .restore(&snapshot.gateways)
            .map_err(AppError::new)?;
        self.book.restore(&snapshot.book).map_err(AppError::new)?;
        self.shard_map
            .restore(&snapshot.shard_map)
            .map_err(AppError::new)
    }
}
