//! `aigw admin account|plan|token|gateway`: accounts, plans, API tokens and gateway usage,
//! managed on the account-manager group (found from the node asked, then from its hints).

use aigw_cluster::{AccountsClient, Credentials, RetryPolicy};
use aigw_proto::admin::accounts_server::Accounts;
use aigw_proto::admin::{
    AccountRef, CreateAccountRequest, CreateTokenRequest, GatewayRef, ListPlansRequest,
    LogManagementStrategy, Plan, SetAccountPlanRequest, TokenRef,
};
use clap::Subcommand;
use serde_json::json;
use tonic::Request;

use crate::admin_cli::status_error;

/// `aigw admin account …`
#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Create an account on a plan.
    Create {
        /// The account id.
        account_id: String,
        /// Its plan (`aigw admin plan list`).
        #[arg(long, default_value = "free")]
        plan: String,
    },
    /// An account's plan, gateways and logs.
    Get {
        /// The account id.
        account_id: String,
    },
    /// Move an account to another plan.
    SetPlan {
        /// The account id.
        account_id: String,
        /// The new plan.
        #[arg(long)]
        plan: String,
    },
}

/// `aigw admin plan …`
#[derive(Debug, Subcommand)]
pub enum PlanCommand {
    /// Every plan and its limits.
    List,
    /// Create or replace a plan (0 = unlimited).
    Set {
        /// The plan's name.
        name: String,
        /// Most gateways per account.
        #[arg(long, default_value_t = 0)]
        max_gateways: u64,
        /// Most logs per gateway.
        #[arg(long, default_value_t = 0)]
        max_logs_per_gateway: u64,
        /// Most logs per account.
        #[arg(long, default_value_t = 0)]
        max_logs_per_account: u64,
        /// Whether gateways may use `log_management_strategy` DELETE_OLDEST.
        #[arg(long, default_value_t = false)]
        delete_oldest_allowed: bool,
    },
}

/// `aigw admin token …`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue an API token for an account; prints only the token (it is not stored).
    Create {
        /// The account the token manages.
        #[arg(long)]
        account: String,
        /// What it may do: `logs` (the management API) and/or `run` (requests through
        /// authenticated gateways); repeat for both, the default.
        #[arg(long = "permission")]
        permissions: Vec<String>,
    },
    /// Revoke a token by id (`aigw_<id>_…`).
    Revoke {
        /// The token id.
        id: String,
    },
    /// An account's tokens (ids and creation times).
    List {
        /// The account.
        #[arg(long)]
        account: String,
    },
}

/// `aigw admin gateway …`
#[derive(Debug, Subcommand)]
pub enum GatewayCommand {
    /// A gateway's log usage: its shards, their row counts and nodes, its limit.
    Status {
        /// The account id.
        account_id: String,
        /// The gateway id.
        gateway_id: String,
    },
}

/// The account-manager commands of `aigw admin`.
#[derive(Debug)]
pub enum AccountsCommand {
    /// `account …`
    Account(AccountCommand),
    /// `plan …`
    Plan(PlanCommand),
    /// `token …`
    Token(TokenCommand),
    /// `gateway …`
    Gateway(GatewayCommand),
}

fn limit(n: u64) -> String {
    if n == 0 {
        "unlimited".into()
    } else {
        n.to_string()
    }
}

fn plan_json(p: &Plan) -> serde_json::Value {
    json!({"name": p.name, "max_gateways": p.max_gateways, "max_logs_per_gateway": p.max_logs_per_gateway,
           "max_logs_per_account": p.max_logs_per_account, "delete_oldest_allowed": p.delete_oldest_allowed})
}

fn print_plan(p: &Plan) {
    println!(
        "{:<12} {:<10} {:<14} {:<14} {}",
        p.name,
        limit(p.max_gateways),
        limit(p.max_logs_per_gateway),
        limit(p.max_logs_per_account),
        p.delete_oldest_allowed
    );
}

/// Runs one account-manager command against the node at `addr`.
pub async fn run(
    addr: &str,
    credentials: Credentials,
    as_json: bool,
    command: AccountsCommand,
) -> anyhow::Result<()> {
    let client = AccountsClient::new(vec![addr.to_owned()], RetryPolicy::default(), credentials)
        .map_err(status_error)?;
    match command {
        AccountsCommand::Account(AccountCommand::Create { account_id, plan }) => {
            let a = client
                .create_account(Request::new(CreateAccountRequest { account_id, plan }))
                .await
                .map_err(status_error)?
                .into_inner();
            if as_json {
                println!("{}", json!({"id": a.id, "plan": a.plan}));
            } else {
                println!("account {} created on plan {}", a.id, a.plan);
            }
        }
        AccountsCommand::Account(AccountCommand::SetPlan { account_id, plan }) => {
            let a = client
                .set_account_plan(Request::new(SetAccountPlanRequest { account_id, plan }))
                .await
                .map_err(status_error)?
                .into_inner();
            println!("account {} is on plan {}", a.id, a.plan);
        }
        AccountsCommand::Account(AccountCommand::Get { account_id }) => {
            let info = client
                .get_account(Request::new(AccountRef { account_id }))
                .await
                .map_err(status_error)?
                .into_inner();
            let account = info.account.unwrap_or_default();
            let plan = info.plan.unwrap_or_default();
            if as_json {
                println!(
                    "{}",
                    json!({"id": account.id, "plan": plan_json(&plan), "implicit": info.implicit,
                           "gateways": info.gateways, "logs": info.logs})
                );
            } else {
                let implicit = if info.implicit {
                    " (never created)"
                } else {
                    ""
                };
                println!("account   {}{implicit}", account.id);
                println!("plan      {}", plan.name);
                println!(
                    "gateways  {} of {}",
                    info.gateways,
                    limit(plan.max_gateways)
                );
                println!(
                    "logs      {} of {}",
                    info.logs,
                    limit(plan.max_logs_per_account)
                );
            }
        }
        AccountsCommand::Plan(PlanCommand::List) => {
            let plans = client
                .list_plans(Request::new(ListPlansRequest {}))
                .await
                .map_err(status_error)?
                .into_inner()
                .plans;
            if as_json {
                let plans: Vec<_> = plans.iter().map(plan_json).collect();
                println!("{}", json!(plans));
            } else {
                println!("PLAN         GATEWAYS   LOGS/GATEWAY   LOGS/ACCOUNT   DELETE_OLDEST");
                plans.iter().for_each(print_plan);
            }
        }
        AccountsCommand::Plan(PlanCommand::Set {
            name,
            max_gateways,
            max_logs_per_gateway,
            max_logs_per_account,
            delete_oldest_allowed,
        }) => {
            let plan = client
                .put_plan(Request::new(Plan {
                    name,
                    max_gateways,
                    max_logs_per_gateway,
                    max_logs_per_account,
                    delete_oldest_allowed,
                }))
                .await
                .map_err(status_error)?
                .into_inner();
            print_plan(&plan);
        }
        AccountsCommand::Token(TokenCommand::Create {
            account,
            permissions,
        }) => {
            let created = client
                .create_token(Request::new(CreateTokenRequest {
                    account_id: account,
                    permissions,
                }))
                .await
                .map_err(status_error)?
                .into_inner();
            // Only the token: scripts capture it with $(aigw admin token create …).
            println!("{}", created.token);
        }
        AccountsCommand::Token(TokenCommand::Revoke { id }) => {
            let info = client
                .revoke_token(Request::new(TokenRef { id }))
                .await
                .map_err(status_error)?
                .into_inner();
            println!("token {} of account {} revoked", info.id, info.account_id);
        }
        AccountsCommand::Token(TokenCommand::List { account }) => {
            let tokens = client
                .list_tokens(Request::new(AccountRef {
                    account_id: account,
                }))
                .await
                .map_err(status_error)?
                .into_inner()
                .tokens;
            for t in tokens {
                println!(
                    "{}  created_at_ms={}  permissions={}",
                    t.id,
                    t.created_at_ms,
                    t.permissions.join(",")
                );
            }
        }
        AccountsCommand::Gateway(GatewayCommand::Status {
            account_id,
            gateway_id,
        }) => gateway_status(&client, account_id, gateway_id, as_json).await?,
    }
    Ok(())
}

async fn gateway_status(
    client: &AccountsClient,
    account_id: String,
    gateway_id: String,
    as_json: bool,
) -> anyhow::Result<()> {
    let usage = client
        .gateway_usage(Request::new(GatewayRef {
            account_id: account_id.clone(),
            id: gateway_id.clone(),
        }))
        .await
        .map_err(status_error)?
        .into_inner();
    let strategy = match LogManagementStrategy::try_from(usage.strategy) {
        Ok(LogManagementStrategy::DeleteOldest) => "DELETE_OLDEST",
        _ => "STOP_INSERTING",
    };
    // One row per sub-shard (one until the gateway is split), with what its group reported.
    let reported = |group: u64| {
        usage
            .groups
            .iter()
            .find(|g| g.group == group)
            .cloned()
            .unwrap_or_default()
    };
    let total: u64 = usage.sub_shards.iter().map(|s| s.rows).sum();
    let since = |from_ms: i64| (from_ms > i64::MIN).then_some(from_ms);
    if as_json {
        let shards: Vec<_> = usage
            .sub_shards
            .iter()
            .map(|s| {
                let g = reported(s.group);
                json!({"group": s.group, "from_ms": since(s.from_ms), "rows": s.rows,
                       "refused": g.refused, "evicted": g.evicted,
                       "reported_at_ms": g.reported_at_ms, "nodes": s.replicas})
            })
            .collect();
        println!(
            "{}",
            json!({"account_id": account_id, "gateway_id": gateway_id, "plan": usage.plan,
                   "limit": usage.limit, "account_limit": usage.account_limit,
                   "account_logs": usage.account_logs, "strategy": strategy, "rows": total,
                   "shards": shards})
        );
        return Ok(());
    }
    println!(
        "gateway     {account_id}/{gateway_id} (plan {})",
        usage.plan
    );
    println!("logs        {total} of {} per gateway", limit(usage.limit));
    println!(
        "account     {} of {} logs",
        usage.account_logs,
        limit(usage.account_limit)
    );
    println!("at limit    {strategy}");
    println!("sub-shards  {}", usage.sub_shards.len());
    println!("\nGROUP  FROM (UNIX MS)  ROWS        REFUSED     EVICTED     NODES");
    for s in &usage.sub_shards {
        let g = reported(s.group);
        let from = since(s.from_ms).map_or_else(|| "-".to_owned(), |ms| ms.to_string());
        println!(
            "{:<6} {:<15} {:<11} {:<11} {:<11} {:?}",
            s.group, from, s.rows, g.refused, g.evicted, s.replicas
        );
    }
    Ok(())
}
