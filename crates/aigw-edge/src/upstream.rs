//! The HTTP clients requests to providers go out on.
//!
//! A provider reached over HTTPS speaks HTTP/2 (chosen by ALPN), and a client keeps one
//! HTTP/2 connection per host: once the provider's limit of concurrent streams on it is
//! reached (often 100–250), further requests wait for a stream to end rather than opening a
//! second connection. The edge therefore keeps `proxy.http2_connections_per_host`
//! independent clients and takes them in turn, so that many connections share the streams
//! to each host. Over HTTP/1.1 a client opens a connection per request in flight anyway; the
//! idle ones kept (`proxy.pool_max_idle_per_host`) are divided among the clients.
//!
//! The clients are hyper's pooled client over rustls, not reqwest: a gateway forwards a
//! request as it came (never following redirects, adding no header of its own), and reqwest's
//! layers for doing more — a redirect policy that parses the URL again on every request and
//! once more from every response, on top of parsing it into a `Url` first — cost about a
//! tenth of the edge's CPU per request.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aigw_config::ProxyConfig;
use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::EdgeBuildError;

/// One pooled upstream client: HTTP/1.1 or, where TLS negotiates it, HTTP/2.
pub(crate) type UpstreamClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Independent upstream clients (connection pools), handed out in turn.
pub(crate) struct UpstreamClients {
    clients: Box<[UpstreamClient]>,
    next: AtomicUsize,
}

impl UpstreamClients {
    /// The clients `config` asks for.
    pub(crate) fn new(config: &ProxyConfig) -> Result<Self, EdgeBuildError> {
        let mut roots = RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = &config.upstream_ca_file {
            for ca in upstream_cas(path)? {
                roots.add(ca).map_err(|e| EdgeBuildError::UpstreamCa {
                    path: path.to_owned(),
                    reason: e.to_string(),
                })?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| EdgeBuildError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let count = config.http2_connections_per_host.max(1);
        let idle_per_client = config.pool_max_idle_per_host.div_ceil(count);
        let clients = (0..count)
            .map(|_| {
                let mut http = HttpConnector::new();
                http.enforce_http(false);
                http.set_nodelay(true);
                http.set_connect_timeout(Some(Duration::from_millis(config.connect_timeout_ms)));
                let connector = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(tls.clone())
                    .https_or_http()
                    .enable_all_versions()
                    .wrap_connector(http);
                Client::builder(TokioExecutor::new())
                    .pool_max_idle_per_host(idle_per_client)
                    .pool_idle_timeout(Duration::from_secs(90))
                    .pool_timer(TokioTimer::new())
                    .build(connector)
            })
            .collect();
        Ok(Self {
            clients,
            next: AtomicUsize::new(0),
        })
    }

    /// The client for the next request.
    pub(crate) fn next(&self) -> &UpstreamClient {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        &self.clients[turn % self.clients.len()]
    }
}

/// The certificates of `proxy.upstream_ca_file`, trusted for upstream TLS on top of the
/// built-in roots.
fn upstream_cas(path: &Path) -> Result<Vec<CertificateDer<'static>>, EdgeBuildError> {
    let failed = |reason: String| EdgeBuildError::UpstreamCa {
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| failed(e.to_string()))?;
    let cas = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| failed(e.to_string()))?;
    if cas.is_empty() {
        return Err(failed("holds no PEM certificate".to_owned()));
    }
    Ok(cas)
}
