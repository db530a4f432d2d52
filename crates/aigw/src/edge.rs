//! The HTTP side every edge runs (`role = "edge"` and `"all"`): the proxy and the management
//! API, in front of whatever reaches the shards and the account manager.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aigw_accounts::GatewayMirror;
use aigw_accounts::tokens::Permission;
use aigw_api::{ApiState, Authenticator, Principal, StaticTokens};
use aigw_cluster::{
    AccountsClient, Credentials, RetryPolicy, ShardRouter, follow_gateways, follow_shard_map,
};
use aigw_config::Config;
use aigw_edge::{Edge, ShardGatewayState, ShardLogSink};
use aigw_proto::DynGateways;
use aigw_proto::shard::shard_server::Shard;
use anyhow::Context;

use crate::directory::MirrorDirectory;

/// `role = "edge"`: reaches the cluster of `cluster.members` over gRPC and serves HTTP until
/// `shutdown`. Keeps nothing on disk.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let seeds: Vec<String> = config
        .cluster
        .parsed_members()
        .map_err(anyhow::Error::msg)?
        .into_iter()
        .map(|m| m.addr)
        .collect();
    let credentials = Credentials::bearer(config.admin_token.as_deref())
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
    let joining = RetryPolicy {
        deadline: Duration::from_millis(config.cluster.join_timeout_ms),
        ..RetryPolicy::default()
    };
    let map = follow_shard_map(seeds.clone(), joining, credentials.clone())
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))
        .context("the edge cannot reach the cluster (check cluster.members)")?;
    let mirror = follow_gateways(seeds.clone(), joining, credentials.clone())
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))
        .context("the edge cannot read the gateways (check cluster.members)")?;
    let accounts = AccountsClient::new(seeds, RetryPolicy::default(), credentials)
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
    tracing::info!(
        map_version = map.borrow().version(),
        groups = map.borrow().groups().len(),
        "edge joined the cluster"
    );
    let router = Arc::new(ShardRouter::new(map));
    serve_http(
        &config,
        router.clone(),
        routed_sink(router),
        Arc::new(accounts),
        mirror,
        None,
        shutdown,
    )
    .await
}

/// A log sink writing through `router`, one lane per shard group (so a group that is down
/// holds back only the logs it takes).
pub fn routed_sink(router: Arc<ShardRouter>) -> ShardLogSink {
    let placement = router.clone();
    ShardLogSink::new(router).with_placement(Arc::new(move |account, gateway, created_at_ms| {
        placement.group_at(account, gateway, created_at_ms)
    }))
}

/// The management API's credentials — and those of authenticated gateways: the admin token
/// and account tokens from the config, then the account tokens issued by the account manager
/// (`aigw admin token create`), whose salted hashes the edge's mirror holds.
struct EdgeTokens {
    configured: StaticTokens,
    issued: GatewayMirror,
}

impl EdgeTokens {
    /// Who `bearer` is, if it is a token with `permission` (tokens set in the config have
    /// every permission).
    fn principal(&self, bearer: &str, permission: Permission) -> Option<Principal> {
        self.configured.authenticate(bearer).or_else(|| {
            self.issued
                .token_account(bearer, permission)
                .map(Principal::Account)
        })
    }
}

impl Authenticator for EdgeTokens {
    fn authenticate(&self, bearer: &str) -> Option<Principal> {
        self.principal(bearer, Permission::Logs)
    }
}

/// The tokens allowed through authenticated gateways: those with the `run` permission.
struct RunTokens(Arc<EdgeTokens>);

impl Authenticator for RunTokens {
    fn authenticate(&self, bearer: &str) -> Option<Principal> {
        self.0.principal(bearer, Permission::Run)
    }
}

/// Serves the proxy and the management API on `http_addr` until `shutdown`, then drains the
/// log queue into `sink`.
pub async fn serve_http(
    config: &Config,
    shards: Arc<dyn Shard>,
    sink: ShardLogSink,
    gateways: Arc<DynGateways>,
    mirror: GatewayMirror,
    // Where the process keeps data, when it keeps any (the all-in-one process).
    blobs: Option<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let tokens = config
        .api_tokens
        .iter()
        .map(|t| (t.account_id.clone(), t.token_sha256.clone()))
        .collect();
    let auth = Arc::new(EdgeTokens {
        configured: StaticTokens::new(config.admin_token.as_deref(), tokens),
        issued: mirror.clone(),
    });
    let api = aigw_api::router(ApiState {
        shards: shards.clone(),
        gateways: gateways.clone(),
        auth: auth.clone(),
    });
    let directory = MirrorDirectory::new(mirror, gateways, Arc::new(RunTokens(auth)));
    let state = Arc::new(ShardGatewayState::new(shards.clone()));
    let edge = Edge::new(config, Arc::new(sink), Arc::new(directory), state)?;
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("cannot listen on http_addr {}", config.http_addr))?;
    match blobs {
        Some(blobs) => tracing::info!(
            http_addr = %listener.local_addr()?,
            grpc_addr = %config.grpc_addr,
            data_dir = %config.data_dir.display(),
            %blobs,
            "aigw listening"
        ),
        None => tracing::info!(http_addr = %listener.local_addr()?, "aigw edge listening"),
    }
    edge.serve(listener, api, shutdown).await;
    Ok(())
}
