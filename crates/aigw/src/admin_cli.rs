//! `aigw admin`: the operator's client of the gRPC admin API of a shard node.

use std::collections::BTreeMap;

use aigw_cluster::Credentials;
use aigw_placement::ShardMap;
use aigw_proto::admin::admin_client::AdminClient;
use aigw_proto::admin::{
    AddNodeRequest, ClusterStatus, ClusterStatusRequest, HealthRequest, MoveReplicaRequest,
    RemoveNodeRequest, ShardMapVersion,
};
use anyhow::Context;

use crate::admin_accounts::{
    self, AccountCommand, AccountsCommand, GatewayCommand, PlanCommand, TokenCommand,
};
use clap::Subcommand;
use serde_json::json;
use tonic::transport::Channel;

/// What to ask or change.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    #[command(flatten)]
    Node(NodeCommand),
    /// Accounts and their plans.
    Account {
        #[command(subcommand)]
        command: AccountCommand,
    },
    /// Plans: limits on gateways and logs.
    Plan {
        #[command(subcommand)]
        command: PlanCommand,
    },
    /// Account API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Gateways' log usage.
    Gateway {
        #[command(subcommand)]
        command: GatewayCommand,
    },
}

/// Questions and placement changes answered by the node asked (the `Admin` service).
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Every node and group: leaders, terms, log and applied indexes, follower lag.
    Status,
    /// The health of the node asked (exit status 1 when not serving).
    Health {
        /// Follower lag, in log entries, that counts as unhealthy (default 1,000).
        #[arg(long, default_value_t = 0)]
        max_lag: u64,
    },
    /// Add a running shard node to the cluster; replicas are rebalanced onto it.
    AddNode {
        /// Its node id.
        #[arg(long)]
        id: u64,
        /// Its advertised gRPC address.
        #[arg(long)]
        addr: String,
    },
    /// Drain a node: its replicas move to the other nodes.
    RemoveNode {
        /// Its node id.
        #[arg(long)]
        id: u64,
    },
    /// Move one replica of a group to another node.
    MoveReplica {
        /// The shard group.
        #[arg(long)]
        group: u64,
        /// The node giving up its replica.
        #[arg(long)]
        from: u64,
        /// The node taking it.
        #[arg(long)]
        to: u64,
    },
}

/// Connection settings of `aigw admin`.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// gRPC address of any shard node.
    #[arg(long, env = "AIGW_ADMIN_ADDR", default_value = "127.0.0.1:9090")]
    addr: String,
    /// The admin token (`admin_token`); also read from AIGW_ADMIN_TOKEN.
    #[arg(long, env = "AIGW_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

fn request<T>(message: T, credentials: &Credentials) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    credentials.attach(&mut request);
    request
}

pub(crate) fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}

/// Runs one admin command; `Ok(false)` when it ran but the answer is a failure (unhealthy).
pub async fn run(args: AdminArgs) -> anyhow::Result<bool> {
    let token = Credentials::bearer(args.token.as_deref()).map_err(status_error)?;
    let on_accounts = match args.command {
        AdminCommand::Node(command) => {
            return run_node(&args.addr, &token, args.json, command).await;
        }
        AdminCommand::Account { command } => AccountsCommand::Account(command),
        AdminCommand::Plan { command } => AccountsCommand::Plan(command),
        AdminCommand::Token { command } => AccountsCommand::Token(command),
        AdminCommand::Gateway { command } => AccountsCommand::Gateway(command),
    };
    admin_accounts::run(&args.addr, token, args.json, on_accounts).await?;
    Ok(true)
}

/// Runs one command of the `Admin` service on the node at `addr`.
async fn run_node(
    addr: &str,
    token: &Credentials,
    as_json: bool,
    command: NodeCommand,
) -> anyhow::Result<bool> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .with_context(|| format!("bad --addr `{addr}`"))?
        .connect()
        .await
        .with_context(|| format!("cannot reach {addr}"))?;
    let mut client = AdminClient::new(channel);
    match command {
        NodeCommand::Status => {
            let status = client
                .cluster_status(request(ClusterStatusRequest {}, token))
                .await
                .map_err(status_error)?
                .into_inner();
            print_status(&status, as_json)?;
            Ok(status.unreachable.is_empty())
        }
        NodeCommand::Health { max_lag } => {
            let health = client
                .health(request(HealthRequest { max_lag }, token))
                .await
                .map_err(status_error)?
                .into_inner();
            if as_json {
                println!(
                    "{}",
                    json!({"serving": health.serving, "problems": health.problems})
                );
            } else if health.serving {
                println!("SERVING");
            } else {
                println!("NOT SERVING");
                for problem in &health.problems {
                    println!("  {problem}");
                }
            }
            Ok(health.serving)
        }
        NodeCommand::AddNode { id, addr } => {
            let map = client
                .add_node(request(AddNodeRequest { node_id: id, addr }, token))
                .await
                .map_err(status_error)?;
            print_map_change(&map.into_inner(), as_json);
            Ok(true)
        }
        NodeCommand::RemoveNode { id } => {
            let map = client
                .remove_node(request(RemoveNodeRequest { node_id: id }, token))
                .await
                .map_err(status_error)?;
            print_map_change(&map.into_inner(), as_json);
            Ok(true)
        }
        NodeCommand::MoveReplica { group, from, to } => {
            let map = client
                .move_replica(request(
                    MoveReplicaRequest {
                        group,
                        from_node: from,
                        to_node: to,
                    },
                    token,
                ))
                .await
                .map_err(status_error)?;
            print_map_change(&map.into_inner(), as_json);
            Ok(true)
        }
    }
}

fn print_map_change(map: &ShardMapVersion, json: bool) {
    if json {
        println!("{}", json!({"map_version": map.version}));
    } else {
        println!(
            "shard map is now version {}; replicas move in the background (watch `aigw admin status`)",
            map.version
        );
    }
}

fn print_status(status: &ClusterStatus, as_json: bool) -> anyhow::Result<()> {
    let map = status
        .map
        .as_ref()
        .map(|m| ShardMap::from_bytes(&m.map))
        .transpose()
        .context("undecodable shard map")?;
    // group → node → that node's view of the group.
    let mut groups: BTreeMap<u64, Vec<(u64, &aigw_proto::admin::GroupStatus)>> = BTreeMap::new();
    for node in &status.nodes {
        for g in &node.groups {
            groups.entry(g.group).or_default().push((node.node_id, g));
        }
    }
    if as_json {
        let nodes: Vec<_> = status
            .nodes
            .iter()
            .map(|n| json!({"node_id": n.node_id, "addr": n.addr, "map_version": n.map_version, "groups": n.groups.len()}))
            .collect();
        let groups: Vec<_> = groups
            .iter()
            .map(|(group, views)| {
                let leader = views.iter().find_map(|(_, g)| g.leader);
                let replicas: Vec<_> = views
                    .iter()
                    .map(|(node, g)| json!({"node_id": node, "state": g.state, "term": g.term, "last_log_index": g.last_log_index, "last_applied": g.last_applied}))
                    .collect();
                let max_lag = views.iter().flat_map(|(_, g)| g.replication.iter().map(|r| r.lag)).max();
                json!({"group": group, "leader": leader, "replicas": replicas, "max_lag": max_lag,
                       "placement": map.as_ref().and_then(|m| m.replicas(*group)).map(<[u64]>::to_vec)})
            })
            .collect();
        let unreachable: Vec<_> = status
            .unreachable
            .iter()
            .map(|u| json!({"node_id": u.node_id, "addr": u.addr, "error": u.error}))
            .collect();
        println!(
            "{}",
            json!({"map_version": map.as_ref().map(ShardMap::version), "nodes": nodes, "groups": groups, "unreachable": unreachable})
        );
        return Ok(());
    }
    println!(
        "shard map version {}",
        map.as_ref().map_or(0, ShardMap::version)
    );
    println!("\nNODE  ADDRESS                 GROUPS  LEADS");
    for node in &status.nodes {
        let leads = node
            .groups
            .iter()
            .filter(|g| g.leader == Some(node.node_id))
            .count();
        println!(
            "{:<5} {:<23} {:<7} {}",
            node.node_id,
            node.addr,
            node.groups.len(),
            leads
        );
    }
    for u in &status.unreachable {
        println!("{:<5} {:<23} UNREACHABLE: {}", u.node_id, u.addr, u.error);
    }
    println!("\nGROUP  LEADER  TERM  PLACEMENT      LAST LOG  APPLIED (per replica)       MAX LAG");
    for (group, views) in &groups {
        let leader = views
            .iter()
            .find_map(|(_, g)| g.leader)
            .map_or("-".to_owned(), |l| l.to_string());
        let term = views.iter().map(|(_, g)| g.term).max().unwrap_or(0);
        let last = views
            .iter()
            .map(|(_, g)| g.last_log_index)
            .max()
            .unwrap_or(0);
        let applied: Vec<String> = views
            .iter()
            .map(|(node, g)| format!("{node}:{}", g.last_applied))
            .collect();
        let placement = map
            .as_ref()
            .and_then(|m| m.replicas(*group))
            .map(|r| format!("{r:?}"))
            .unwrap_or_default();
        let lag = views
            .iter()
            .flat_map(|(_, g)| g.replication.iter().map(|r| r.lag))
            .max()
            .map_or("-".to_owned(), |l| l.to_string());
        println!(
            "{:<6} {:<7} {:<5} {:<14} {:<9} {:<27} {}",
            group,
            leader,
            term,
            placement,
            last,
            applied.join(" "),
            lag
        );
    }
    Ok(())
}
