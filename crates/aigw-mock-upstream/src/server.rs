//! The server: accepting connections, serving HTTP/1.1 and h2c with hyper,
//! and dispatching each request to a provider module.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use crate::body::MockBody;
use crate::faults::{Faults, Reset};
use crate::google::Mode;
use crate::record::{Recorder, SeenRequest};
use crate::respond::{Ctx, ErrorStyle, error_response, plain_json};
use crate::sse::Framing;
use crate::tls::MockTls;
use crate::tokens::Reply;
use crate::{anthropic, cohere, google, openai, workers_ai};

/// The control endpoint for recorded requests (`GET` lists, `DELETE` clears).
const REQUESTS_PATH: &str = "/__mock/requests";

/// Options for [`spawn`].
#[derive(Clone, Debug)]
pub struct MockOptions {
    /// Record every request for [`MockServer::requests`] and
    /// `GET /__mock/requests` (default `true`; turn off for benchmarks).
    pub record_requests: bool,
    /// Serve HTTPS (HTTP/2 or HTTP/1.1 by ALPN) with a certificate signed by a CA made at
    /// start ([`MockServer::ca_certificate_pem`]), instead of plain HTTP/1.1 and h2c
    /// (default `false`).
    pub tls: bool,
    /// Concurrent HTTP/2 streams allowed per connection (default 10,000; real providers
    /// allow some 100–250, and hyper's default is 200).
    pub max_h2_streams: u32,
}

impl Default for MockOptions {
    fn default() -> Self {
        Self {
            record_requests: true,
            tls: false,
            max_h2_streams: 10_000,
        }
    }
}

/// A running mock upstream. Dropping it or calling [`MockServer::shutdown`]
/// stops accepting connections and closes the open ones.
pub struct MockServer {
    addr: SocketAddr,
    /// The CA certificate (PEM) of a TLS server.
    ca_pem: Option<String>,
    recorder: Arc<Recorder>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// Binds `addr` (port 0 picks a free port) and starts serving on the current
/// tokio runtime.
pub async fn spawn(addr: SocketAddr, opts: MockOptions) -> io::Result<MockServer> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let recorder = Arc::new(Recorder::new(opts.record_requests));
    let tls = if opts.tls {
        Some(MockTls::generate()?)
    } else {
        None
    };
    let ca_pem = tls.as_ref().map(|tls| tls.ca_pem.clone());
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(accept_loop(
        listener,
        tls,
        opts.max_h2_streams,
        Arc::clone(&recorder),
        stopped,
    ));
    Ok(MockServer {
        addr,
        ca_pem,
        recorder,
        stop,
        task,
    })
}

impl std::fmt::Debug for MockServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MockServer {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL to point clients at, e.g. `http://127.0.0.1:PORT` (`https://` with TLS;
    /// an unspecified bind address is reported as loopback).
    pub fn base_url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let scheme = if self.ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", SocketAddr::new(ip, self.addr.port()))
    }

    /// The certificate (PEM) of the CA that signed a TLS server's certificate: what clients
    /// must trust. `None` for a plain-HTTP server.
    pub fn ca_certificate_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// The recorded requests, oldest first (the last 1024; empty when
    /// recording is off).
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.recorder.snapshot()
    }

    /// Forgets every recorded request.
    pub fn clear_requests(&self) {
        self.recorder.clear();
    }

    /// Stops the server and waits until the listener and every connection
    /// are closed.
    pub async fn shutdown(self) {
        let MockServer { stop, task, .. } = self;
        // The accept loop may already be gone (e.g. its runtime is stopping).
        let _ = stop.send(());
        if let Err(err) = task.await {
            tracing::debug!(%err, "mock upstream accept loop ended abnormally");
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<MockTls>,
    max_h2_streams: u32,
    recorder: Arc<Recorder>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(max_h2_streams);
    let builder = Arc::new(builder);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = &mut stopped => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(
                        stream,
                        tls.clone(),
                        Arc::clone(&builder),
                        Arc::clone(&recorder),
                    ));
                }
                Err(err) => {
                    // Typically fd exhaustion: back off instead of spinning.
                    tracing::warn!(%err, "mock upstream failed to accept a connection");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    drop(listener);
    connections.shutdown().await;
}

async fn serve_connection(
    stream: TcpStream,
    tls: Option<MockTls>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    recorder: Arc<Recorder>,
) {
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(%err, "mock upstream could not set TCP_NODELAY");
    }
    let service = service_fn(move |req| handle(Arc::clone(&recorder), req));
    // The auto builder tells HTTP/2 from HTTP/1.1 by the client's preface, so ALPN's choice
    // needs no handling here.
    let served = match tls {
        None => {
            builder
                .serve_connection(TokioIo::new(stream), service)
                .await
        }
        Some(tls) => match tls.acceptor.accept(stream).await {
            Ok(stream) => {
                builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await
            }
            Err(err) => {
                tracing::debug!(%err, "mock upstream TLS handshake failed");
                return;
            }
        },
    };
    if let Err(err) = served {
        tracing::debug!(%err, "mock upstream connection ended with an error");
    }
}

/// Answers one request. An `Err` makes hyper drop the connection without a
/// response, which is how `x-mock-reset: before-headers` is implemented.
async fn handle(recorder: Arc<Recorder>, req: Request<Incoming>) -> io::Result<Response<MockBody>> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map_err(io::Error::other)?.to_bytes();
    let path = parts.uri.path();
    if path == REQUESTS_PATH {
        return Ok(control(&recorder, &parts.method));
    }
    recorder.record(&parts, &body);

    let style = ErrorStyle::for_path(path);
    let faults = match Faults::from_headers(&parts.headers) {
        Ok(faults) => faults,
        Err(message) => return Ok(bad_mock_header(style, &message)),
    };
    let reply = match Reply::from_headers(&parts.headers) {
        Ok(reply) => reply,
        Err(message) => return Ok(bad_mock_header(style, &message)),
    };
    if let Some(delay) = faults.delay {
        tokio::time::sleep(delay).await;
    }
    if faults.reset == Some(Reset::BeforeHeaders) {
        return Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "mock: injected reset before headers",
        ));
    }
    let ctx = Ctx {
        headers: &parts.headers,
        faults: &faults,
        reply,
    };
    let injected = match &faults.fail_first {
        Some((key, n)) => (recorder.count_key(key) <= *n)
            .then(|| faults.status.unwrap_or(StatusCode::SERVICE_UNAVAILABLE)),
        None => faults.status,
    };
    if let Some(status) = injected {
        return Ok(ctx.injected_error(style, status));
    }
    Ok(route(&ctx, &parts.method, path, parts.uri.query(), &body))
}

fn bad_mock_header(style: ErrorStyle, message: &str) -> Response<MockBody> {
    let message = format!("mock: {message}");
    error_response(
        style,
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        &message,
    )
}

/// `GET` / `DELETE /__mock/requests`.
fn control(recorder: &Recorder, method: &Method) -> Response<MockBody> {
    match *method {
        Method::GET => plain_json(StatusCode::OK, &recorder.snapshot()),
        Method::DELETE => {
            recorder.clear();
            let mut response = Response::new(MockBody::empty());
            *response.status_mut() = StatusCode::NO_CONTENT;
            response
        }
        _ => no_route(method, REQUESTS_PATH, StatusCode::METHOD_NOT_ALLOWED),
    }
}

fn route(
    ctx: &Ctx<'_>,
    method: &Method,
    path: &str,
    query: Option<&str>,
    body: &[u8],
) -> Response<MockBody> {
    let post = *method == Method::POST;
    match path {
        "/v1/messages" if post => return anthropic::messages(ctx, body),
        "/v1/messages/count_tokens" if post => return anthropic::count_tokens(ctx, body),
        "/v2/chat" if post => return cohere::chat(ctx, body),
        _ => {}
    }
    if let Some(sub) = path.strip_prefix("/v1/")
        && let Some(response) = openai::route(ctx, method, sub, body)
    {
        return response;
    }
    if let Some(rest) = path.strip_prefix("/client/v4/accounts/") {
        // {account}/ai/run/{model...} or the OpenAI-compatible {account}/ai/v1/...
        if let Some((_account, tail)) = rest.split_once('/') {
            if let Some(model) = tail.strip_prefix("ai/run/") {
                if post && !model.is_empty() {
                    return workers_ai::run(ctx, body);
                }
            } else if let Some(sub) = tail.strip_prefix("ai/v1/")
                && let Some(response) = openai::route(ctx, method, sub, body)
            {
                return response;
            }
        }
    }
    if let Some((model, action)) = path
        .strip_prefix("/v1beta/models/")
        .and_then(|rest| rest.rsplit_once(':'))
    {
        let mode = match action {
            "generateContent" => Some(Mode::Unary),
            "streamGenerateContent" => {
                let sse = query.is_some_and(|q| q.split('&').any(|kv| kv == "alt=sse"));
                Some(Mode::Stream(if sse {
                    Framing::Sse
                } else {
                    Framing::JsonArray
                }))
            }
            _ => None,
        };
        if let Some(mode) = mode.filter(|_| post && !model.is_empty()) {
            return google::generate(ctx, model, mode, body);
        }
    }
    no_route(method, path, StatusCode::NOT_FOUND)
}

fn no_route(method: &Method, path: &str, status: StatusCode) -> Response<MockBody> {
    let message = format!("mock: no route for {method} {path}");
    error_response(
        ErrorStyle::OpenAi,
        status,
        "invalid_request_error",
        &message,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn base_url_maps_unspecified_to_loopback() {
        let server = spawn(
            "0.0.0.0:0".parse().expect("valid address"),
            MockOptions::default(),
        )
        .await
        .expect("bind");
        let port = server.addr().port();
        assert_eq!(server.base_url(), format!("http://127.0.0.1:{port}"));
        server.shutdown().await;
    }
}
