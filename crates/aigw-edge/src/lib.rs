//! The aigw edge.
//!
//! This crate owns the HTTP face of aigw: the accept loop, the axum router, the provider
//! passthrough proxy that relays responses (streams included) as they arrive while teeing them
//! into a log capture, the [`universal`] endpoint (steps with retries and fallback, each
//! attempt through the same proxy path) and its [`websocket`] API, the OpenAI-compatible
//! `compat` endpoint (translated by `aigw-compat`, forwarded through the same proxy path), the
//! `cf-aig-*` request directives, the bounded queue that ships finished log records to a
//! [`LogSink`], and the edge's health and Prometheus endpoints. It must not know how logs are
//! stored: the store plugs in behind [`LogSink`] and gateway settings behind
//! [`GatewayDirectory`]; it links no storage, consensus or object-store crates.
//!
//! Request path: [`route`] parses `/v1/{account}/{gateway}/{provider}/{path}` → the provider
//! catalogue builds the upstream URL → the gateway is resolved → [`directives`] are parsed → the
//! gateway's rate limit admits the request (from a slice leased off its home shard leader) →
//! a cacheable request is looked up in the edge's cache tier, then the shared one → the
//! body is read under the size limit → the upstream request is sent on a pooled client → the
//! response head is relayed with `cf-aig-log-id` and the body flows through [`exchange::TeeBody`],
//! which hands the finished record to the [`LogShipper`].

mod cache;
mod capture;
mod compat;
pub mod directives;
pub mod error;
pub mod exchange;
pub mod gateways;
mod memory_sink;
pub mod metrics;
mod ops;
pub mod proxy;
mod ratelimit;
pub mod route;
mod server;
mod shard_sink;
pub mod shipper;
pub mod universal;
mod upstream;
pub mod websocket;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aigw_config::Config;
use aigw_gateway_state::GatewayState;
use aigw_providers::{ProviderCatalog, registry::CatalogError};
use axum::Router;
use axum::routing::{any, get};
use tokio::net::TcpListener;

pub use capture::CapturedBody;
pub use error::EdgeError;
pub use gateways::{GatewayDirectory, GatewaySettings, InMemoryGateways};
pub use memory_sink::MemorySink;
pub use metrics::Metrics;
pub use shard_sink::{Placement, ShardGatewayState, ShardLogSink};
pub use shipper::{LogEntry, LogShipper, LogSink, PendingLog, ShipperTask, SinkError, SinkFuture};
pub use universal::{Backoff, Retry};

/// Proxy limits resolved from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct ProxyLimits {
    max_body_bytes: u64,
    /// The longest HTTP/1.1 request head (and HTTP/2 header list) served; also the size of
    /// a connection's read buffer, so request bodies no longer than it are copied out of it.
    max_request_head_bytes: usize,
    upstream_timeout: Duration,
    max_universal_steps: usize,
}

/// Everything request handlers share.
pub struct EdgeState {
    catalog: ProviderCatalog,
    gateways: Arc<dyn GatewayDirectory>,
    upstream: upstream::UpstreamClients,
    shipper: LogShipper,
    metrics: Arc<Metrics>,
    proxy: ProxyLimits,
    cache: Arc<cache::EdgeCache>,
    limiter: Arc<ratelimit::RateLimiter>,
    /// Turns `true` when the edge starts shutting down (WebSocket sessions then finish what
    /// is in flight and close).
    closing: tokio::sync::watch::Receiver<bool>,
}

/// Why an edge could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum EdgeBuildError {
    /// A provider override is invalid (config validation normally catches this first).
    #[error(transparent)]
    Provider(#[from] CatalogError),
    /// The upstream clients' TLS could not be set up.
    #[error("cannot set up TLS for upstream connections: {0}")]
    Tls(String),
    /// `proxy.upstream_ca_file` could not be read or holds no usable certificate.
    #[error("proxy.upstream_ca_file: {path}: {reason}")]
    UpstreamCa {
        /// The file.
        path: std::path::PathBuf,
        /// What was wrong with it.
        reason: String,
    },
}

/// A configured edge: its shared state and the worker shipping its logs.
pub struct Edge {
    state: Arc<EdgeState>,
    shipper_task: ShipperTask,
    closing: tokio::sync::watch::Sender<bool>,
}

impl Edge {
    /// Build an edge from `config`, shipping logs to `sink`, resolving gateways through
    /// `gateways`, and sharing cached responses and rate budgets through `state` (the
    /// gateways' home shards in a cluster). Must be called inside a Tokio runtime (it starts
    /// the log worker).
    pub fn new(
        config: &Config,
        sink: Arc<dyn LogSink>,
        gateways: Arc<dyn GatewayDirectory>,
        state: Arc<dyn GatewayState>,
    ) -> Result<Self, EdgeBuildError> {
        let catalog = ProviderCatalog::new(
            config
                .providers
                .iter()
                .map(|(slug, p)| (slug.clone(), p.base_url.clone())),
        )?;
        let upstream = upstream::UpstreamClients::new(&config.proxy)?;
        let metrics = Arc::new(Metrics::default());
        let (shipper, shipper_task) = LogShipper::spawn(sink, &config.log_queue, metrics.clone());
        let (closing, closing_rx) = tokio::sync::watch::channel(false);
        let cache = Arc::new(cache::EdgeCache::new(
            usize::try_from(config.cache.edge_bytes).unwrap_or(usize::MAX),
            state.clone(),
            metrics.clone(),
        ));
        let limiter = Arc::new(ratelimit::RateLimiter::new(state, metrics.clone()));
        let state = EdgeState {
            cache,
            limiter,
            closing: closing_rx,
            catalog,
            gateways,
            upstream,
            shipper,
            metrics,
            proxy: ProxyLimits {
                max_body_bytes: config.proxy.max_body_bytes,
                // Clamped, not trusted: hyper panics below its minimum, and a `Config` built
                // in code has not been through `aigw_config::load`'s checks.
                max_request_head_bytes: usize::try_from(config.proxy.max_request_head_bytes.clamp(
                    aigw_config::MIN_REQUEST_HEAD_BYTES,
                    aigw_config::MAX_REQUEST_HEAD_BYTES,
                ))
                .unwrap_or(usize::MAX),
                upstream_timeout: Duration::from_millis(config.proxy.upstream_timeout_ms),
                max_universal_steps: config.proxy.max_universal_steps,
            },
        };
        Ok(Self {
            state: Arc::new(state),
            shipper_task,
            closing,
        })
    }

    /// The HTTP router: inference under `/v1`, plus `/healthz`, `/readyz` and `/metrics`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/healthz", get(ops::healthz))
            .route("/readyz", get(ops::readyz))
            .route("/metrics", get(ops::metrics))
            .route("/v1/{*rest}", any(proxy::handle))
            .fallback(ops::not_found)
            .with_state(self.state.clone())
    }

    /// The edge's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.state.metrics
    }

    /// Serve the edge's routes plus `routes` (e.g. the management API) on `listener` until
    /// `shutdown` resolves and open connections (WebSocket sessions included, once their
    /// requests in flight are answered) finish, then flush every queued log record to the sink.
    pub async fn serve<F>(self, listener: TcpListener, routes: Router, shutdown: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let router = self.router().merge(routes);
        let max_request_head_bytes = self.state.proxy.max_request_head_bytes;
        let Edge {
            state,
            shipper_task,
            closing,
        } = self;
        drop(state);
        let shutdown = async move {
            shutdown.await;
            // WebSocket sessions outlive the HTTP connections the server waits for: tell them.
            let _ = closing.send(true);
        };
        server::serve(listener, router, max_request_head_bytes, shutdown).await;
        // The router is gone, and so, once their in-flight requests are answered, are the
        // WebSocket sessions: with the last queue sender the worker drains and stops.
        shipper_task.drained().await;
    }
}
