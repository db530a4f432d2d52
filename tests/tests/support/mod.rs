//! Shared harness: a mock upstream and an edge (library router) on real sockets.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aigw_config::{Config, ProviderConfig};
use aigw_edge::{Edge, GatewayDirectory, InMemoryGateways, LogEntry, LogSink, MemorySink, Metrics};
use aigw_gateway_state::LocalGatewayState;
use aigw_mock_upstream::{MockOptions, MockServer};
use tokio::sync::oneshot;

/// How long tests wait for an asynchronous log write before failing.
pub const LOG_WAIT: Duration = Duration::from_secs(10);

/// A running edge in front of a running mock upstream.
pub struct Harness {
    pub mock: MockServer,
    pub addr: SocketAddr,
    pub sink: Arc<MemorySink>,
    pub gateways: Arc<InMemoryGateways>,
    pub metrics: Arc<Metrics>,
    /// The cache's shared tier and the rate budgets (a cluster keeps them on shard leaders).
    pub state: Arc<LocalGatewayState>,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<()>>,
}

/// Providers pointed at the mock (OpenAI, Anthropic, Workers AI, Google, Cohere).
pub fn mock_providers(config: &mut Config, mock_base: &str) {
    for (slug, base) in [
        ("openai", format!("{mock_base}/v1")),
        ("anthropic", mock_base.to_owned()),
        (
            "workers-ai",
            format!("{mock_base}/client/v4/accounts/{{account_id}}/ai/run"),
        ),
        ("google-ai-studio", mock_base.to_owned()),
        ("cohere", mock_base.to_owned()),
        ("groq", format!("{mock_base}/v1")),
        ("custom-acme", format!("{mock_base}/v1")),
    ] {
        config
            .providers
            .insert(slug.to_owned(), ProviderConfig { base_url: base });
    }
}

impl Harness {
    /// Start with default configuration.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Start after letting the caller adjust the configuration.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let sink = Arc::new(MemorySink::default());
        Self::start_with_sink(adjust, sink.clone(), sink).await
    }

    /// Start with a custom sink (`memory` is still returned for convenience).
    pub async fn start_with_sink(
        adjust: impl FnOnce(&mut Config),
        sink: Arc<dyn LogSink>,
        memory: Arc<MemorySink>,
    ) -> Self {
        let state = Arc::new(LocalGatewayState::new(64 << 20));
        Self::start_full(adjust, MockOptions::default(), sink, memory, state).await
    }

    /// Start in front of an HTTPS mock (`mock` with `tls` set: HTTP/2 by ALPN, its
    /// certificate signed by a CA made for it): `adjust` sees the config with the providers on
    /// `https://` and the CA's certificate written to a file in `ca_dir`, set as
    /// `proxy.upstream_ca_file`.
    pub async fn start_tls(
        ca_dir: &std::path::Path,
        mock: MockOptions,
        adjust: impl FnOnce(&mut Config),
    ) -> Self {
        let sink = Arc::new(MemorySink::default());
        let state = Arc::new(LocalGatewayState::new(64 << 20));
        let ca_file = ca_dir.join("mock-ca.pem");
        let options = MockOptions { tls: true, ..mock };
        Self::start_full(
            |config| {
                config.proxy.upstream_ca_file = Some(ca_file);
                adjust(config);
            },
            options,
            sink.clone(),
            sink,
            state,
        )
        .await
    }

    /// Start an edge sharing `state` (cache tier, rate budgets) with others, as the edges of
    /// a cluster share their gateways' home shards.
    pub async fn start_sharing(
        adjust: impl FnOnce(&mut Config),
        state: Arc<LocalGatewayState>,
    ) -> Self {
        let sink = Arc::new(MemorySink::default());
        Self::start_full(adjust, MockOptions::default(), sink.clone(), sink, state).await
    }

    async fn start_full(
        adjust: impl FnOnce(&mut Config),
        mock_options: MockOptions,
        sink: Arc<dyn LogSink>,
        memory: Arc<MemorySink>,
        state: Arc<LocalGatewayState>,
    ) -> Self {
        let mock = aigw_mock_upstream::spawn(SocketAddr::from(([127, 0, 0, 1], 0)), mock_options)
            .await
            .expect("mock upstream starts");
        let mut config = Config::default();
        mock_providers(&mut config, &mock.base_url());
        config.proxy.upstream_timeout_ms = 5_000;
        adjust(&mut config);
        if let (Some(path), Some(pem)) = (&config.proxy.upstream_ca_file, mock.ca_certificate_pem())
        {
            std::fs::write(path, pem).expect("write the mock's CA certificate");
        }
        let gateways = Arc::new(InMemoryGateways::default());
        let edge = Edge::new(
            &config,
            sink,
            gateways.clone() as Arc<dyn GatewayDirectory>,
            state.clone(),
        )
        .expect("edge builds");
        let metrics = edge.metrics().clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(async move {
            edge.serve(listener, axum::Router::new(), async move {
                let _ = stopped.await;
            })
            .await;
        });
        Self {
            mock,
            addr,
            sink: memory,
            gateways,
            metrics,
            state,
            client: reqwest::Client::new(),
            stop: Some(stop),
            served: Some(served),
        }
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// URL of `provider`'s `rest` path through account `acct` and gateway `default`.
    pub fn gw(&self, provider: &str, rest: &str) -> String {
        self.url(&format!("/v1/acct1/default/{provider}{rest}"))
    }

    /// The `/metrics` page.
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics answers")
            .text()
            .await
            .expect("metrics text")
    }

    /// Wait for `n` log entries.
    pub async fn logs(&self, n: usize) -> Vec<LogEntry> {
        let entries = self.sink.wait_for(n, LOG_WAIT).await;
        assert!(
            entries.len() >= n,
            "expected {n} log entries, got {}",
            entries.len()
        );
        entries
    }

    /// Stop serving and flush logs.
    pub async fn shutdown(mut self) {
        self.stop().await;
    }

    /// Stop serving and flush logs, keeping the mock upstream running.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            served.await.expect("serve task");
        }
    }
}

/// The JSON error envelope of a gateway-produced error, asserting its shape.
pub async fn gateway_error(resp: reqwest::Response, status: u16) -> (u64, String) {
    assert_eq!(resp.status().as_u16(), status, "status");
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(ct.starts_with("application/json"), "content-type {ct}");
    let body: serde_json::Value = resp.json().await.expect("json error body");
    assert_eq!(body["success"], false, "{body}");
    let err = &body["errors"][0];
    (
        err["code"].as_u64().expect("numeric code"),
        err["message"].as_str().expect("message").to_owned(),
    )
}
