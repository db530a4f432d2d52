//! The HTTP clients requests to providers go out on.
//!
//! A provider reached over HTTPS speaks HTTP/2 (chosen by ALPN), and a reqwest client keeps
//! one HTTP/2 connection per host: once the provider's limit of concurrent streams on it is
//! reached (often 100–250), further requests wait for a stream to end rather than opening a
//! second connection. The edge therefore keeps `proxy.http2_connections_per_host`
//! independent clients and takes them in turn, so that many connections share the streams
//! to each host. Over HTTP/1.1 a client opens a connection per request in flight anyway; the
//! idle ones kept (`proxy.pool_max_idle_per_host`) are divided among the clients.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aigw_config::ProxyConfig;

use crate::EdgeBuildError;

/// Independent upstream clients (connection pools), handed out in turn.
pub(crate) struct UpstreamClients {
    clients: Box<[reqwest::Client]>,
    next: AtomicUsize,
}

impl UpstreamClients {
    /// The clients `config` asks for.
    pub(crate) fn new(config: &ProxyConfig) -> Result<Self, EdgeBuildError> {
        let cas = match &config.upstream_ca_file {
            Some(path) => upstream_cas(path)?,
            None => Vec::new(),
        };
        let count = config.http2_connections_per_host.max(1);
        let idle_per_client = config.pool_max_idle_per_host.div_ceil(count);
        let clients = (0..count)
            .map(|_| {
                let mut client = reqwest::Client::builder()
                    .pool_max_idle_per_host(idle_per_client)
                    .pool_idle_timeout(Duration::from_secs(90))
                    .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
                    .tcp_nodelay(true)
                    // A gateway relays redirects to the client; it never follows them itself.
                    .redirect(reqwest::redirect::Policy::none())
                    .no_proxy();
                for ca in &cas {
                    client = client.add_root_certificate(ca.clone());
                }
                client.build()
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            clients,
            next: AtomicUsize::new(0),
        })
    }

    /// The client for the next request.
    pub(crate) fn next(&self) -> &reqwest::Client {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        &self.clients[turn % self.clients.len()]
    }
}

/// The certificates of `proxy.upstream_ca_file`, trusted for upstream TLS on top of the
/// built-in roots.
fn upstream_cas(path: &Path) -> Result<Vec<reqwest::Certificate>, EdgeBuildError> {
    let failed = |reason: String| EdgeBuildError::UpstreamCa {
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| failed(e.to_string()))?;
    let cas = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| failed(e.to_string()))?;
    if cas.is_empty() {
        return Err(failed("holds no PEM certificate".to_owned()));
    }
    Ok(cas)
}
