//! The provider passthrough: `/v1/{account}/{gateway}/{provider}/{path...}`.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aigw_providers::Provider;
use aigw_types::{LogRecord, RequestOutcome};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use tracing::Instrument;
use ulid::Ulid;

use crate::EdgeState;
use crate::cache::{CACHE_STATUS_HEADER, CacheCapture, CachePlan, CacheRequest, Lookup, replay};
use crate::directives::{CONTROL_PREFIX, Directives};
use crate::error::EdgeError;
use crate::exchange::{ExchangeGuard, TeeBody};
use crate::gateways::GatewaySettings;
use crate::route::parse_gateway_path;
use crate::shipper::PendingLog;

/// Response header carrying the log id.
pub const LOG_ID_HEADER: &str = "cf-aig-log-id";
/// Request header carrying an authenticated gateway's token (never forwarded or logged).
pub const AUTHORIZATION_HEADER: &str = "cf-aig-authorization";
/// Response header echoing `cf-aig-event-id`.
pub const EVENT_ID_HEADER: &str = "cf-aig-event-id";

/// Metrics label for requests rejected before a provider was resolved (keeps labels bounded).
const NO_PROVIDER: &str = "-";

/// Axum handler for provider requests.
pub async fn handle(State(edge): State<Arc<EdgeState>>, req: Request) -> Response {
    let started = Instant::now();
    let span = tracing::info_span!(
        "proxy",
        account = tracing::field::Empty,
        gateway = tracing::field::Empty,
        provider = tracing::field::Empty,
        log_id = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    let universal = crate::universal::coordinates(req.uri().path()).is_some();
    let result = if universal && req.method() == Method::GET {
        crate::websocket::upgrade(edge.clone(), req)
            .instrument(span.clone())
            .await
    } else if universal {
        crate::universal::universal(&edge, req, started)
            .instrument(span.clone())
            .await
    } else if crate::compat::is_compat(req.uri().path()) {
        crate::compat::compat(&edge, req, started)
            .instrument(span.clone())
            .await
    } else {
        proxy(&edge, req, started).instrument(span.clone()).await
    };
    let response = result.unwrap_or_else(|e| {
        edge.metrics.request(
            NO_PROVIDER,
            e.status_and_code().0.as_u16(),
            started.elapsed(),
        );
        tracing::debug!(parent: &span, error = %e, "request rejected");
        e.into_response()
    });
    span.record("status", response.status().as_u16());
    response
}

async fn proxy(edge: &EdgeState, req: Request, started: Instant) -> Result<Response, EdgeError> {
    let (log_id, created_at_ms) = new_log_id();
    let (parts, body) = req.into_parts();
    let path = parse_gateway_path(parts.uri.path())?;
    let span = tracing::Span::current();
    span.record("account", path.account);
    span.record("gateway", path.gateway);
    span.record("provider", path.provider);

    let provider = edge
        .catalog
        .get(path.provider)
        .ok_or_else(|| EdgeError::UnknownProvider(path.provider.to_owned()))?
        .clone();
    let (settings, directives) = admit(edge, path.account, path.gateway, &parts.headers).await?;
    let target = provider
        .target(path.account, path.rest, parts.uri.query())
        .map_err(|e| EdgeError::MalformedPath(e.to_string()))?;
    let body = read_request_body(edge, &parts.headers, body).await?;

    span.record("log_id", tracing::field::display(log_id));
    let exchange = Exchange {
        log_id,
        created_at_ms,
        account: path.account,
        gateway: path.gateway,
        provider: &provider,
        logged_path: &target.logged_path,
        method: &parts.method,
        headers: &parts.headers,
    };
    let (log, echo) = exchange.open(&directives, &settings, &body);
    let timeout = directives
        .request_timeout
        .unwrap_or(edge.proxy.upstream_timeout);
    let headers = upstream_headers(&parts.headers);
    let cache = CachePlan::new(
        &settings,
        &directives,
        &CacheRequest {
            account: path.account,
            gateway: path.gateway,
            provider: &provider.slug,
            path: path.rest,
            query: parts.uri.query(),
            method: &parts.method,
            headers: &headers,
            body: &body,
        },
    );
    forward(
        edge,
        Forward {
            provider,
            url: target.url,
            method: parts.method,
            headers,
            body,
            timeout,
            log,
            echo,
            started,
            cache,
        },
    )
    .await
}

/// A log id minted now, and its `created_at` (ms): the id carries the same millisecond, as the
/// store orders and time-filters logs by id. Minted when the request arrives.
pub(crate) fn new_log_id() -> (Ulid, i64) {
    let log_id = Ulid::from_datetime(SystemTime::now());
    let created_at_ms = i64::try_from(log_id.timestamp_ms()).unwrap_or(i64::MAX);
    (log_id, created_at_ms)
}

/// The gateway of a request resolved, its caller authorized, its `cf-aig-*` directives parsed
/// and the request admitted under the gateway's rate limit (429 otherwise) — before the body
/// is read or anything is sent upstream.
pub(crate) async fn admit(
    edge: &EdgeState,
    account: &str,
    gateway: &str,
    headers: &HeaderMap,
) -> Result<(GatewaySettings, Directives), EdgeError> {
    let settings =
        edge.gateways
            .resolve(account, gateway)
            .ok_or_else(|| EdgeError::GatewayNotFound {
                account: account.to_owned(),
                gateway: gateway.to_owned(),
            })?;
    authorize(edge, &settings, account, gateway, headers)?;
    let directives = Directives::parse(headers)?;
    if let Some(policy) = settings.rate_limit {
        edge.limiter.admit(account, gateway, policy).await?;
    }
    Ok((settings, directives))
}

/// The request body under `proxy.max_body_bytes`, refused early when its `Content-Length` says
/// it is larger.
pub(crate) async fn read_request_body(
    edge: &EdgeState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, EdgeError> {
    let limit = edge.proxy.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(EdgeError::BodyTooLarge { limit });
    }
    let body = read_body(body, limit).await?;
    // A body that arrived in one read is a view into the connection's read buffer. Kept for the
    // log as long as a stream lasts, it would keep that buffer from being reused, so bodies that
    // fit in the buffer are copied out; longer ones were already assembled from several reads
    // into a buffer of their own.
    Ok(if body.len() <= edge.proxy.max_request_head_bytes {
        Bytes::copy_from_slice(&body)
    } else {
        body
    })
}

/// On an authenticated gateway, requires `cf-aig-authorization: Bearer <token>` with a token
/// the directory allows for `account` — before anything is sent upstream.
pub(crate) fn authorize(
    edge: &EdgeState,
    settings: &GatewaySettings,
    account: &str,
    gateway: &str,
    headers: &HeaderMap,
) -> Result<(), EdgeError> {
    if !settings.authentication {
        return Ok(());
    }
    let refuse = |reason| EdgeError::GatewayUnauthorized {
        gateway: gateway.to_owned(),
        reason,
    };
    let value = headers
        .get(AUTHORIZATION_HEADER)
        .ok_or_else(|| refuse("the cf-aig-authorization header is missing"))?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
        .ok_or_else(|| refuse("cf-aig-authorization must be `Bearer <token>`"))?;
    if edge.gateways.allows(account, token) {
        Ok(())
    } else {
        Err(refuse(
            "the cf-aig-authorization token is not valid for this account",
        ))
    }
}

/// What a log record is made of before the upstream answers.
pub(crate) struct Exchange<'a> {
    pub(crate) log_id: Ulid,
    pub(crate) created_at_ms: i64,
    pub(crate) account: &'a str,
    pub(crate) gateway: &'a str,
    pub(crate) provider: &'a Provider,
    pub(crate) logged_path: &'a str,
    pub(crate) method: &'a Method,
    /// The client's request headers.
    pub(crate) headers: &'a HeaderMap,
}

impl Exchange<'_> {
    /// The exchange's log (unless `cf-aig-collect-log` or the gateway turned logging off) and
    /// the gateway's own response headers; `body` is what is sent upstream.
    pub(crate) fn open(
        &self,
        directives: &Directives,
        settings: &GatewaySettings,
        body: &Bytes,
    ) -> (Option<PendingLog>, HeaderMap) {
        let collect = directives.collect_log.unwrap_or(settings.collect_logs);
        let log = collect.then(|| self.pending_log(directives, body));
        let echo = gateway_headers(
            collect.then_some(self.log_id),
            directives.event_id.as_deref(),
        );
        (log, echo)
    }

    /// The log of this exchange, to be completed as the response arrives.
    pub(crate) fn pending_log(&self, directives: &Directives, body: &Bytes) -> PendingLog {
        let mut record = LogRecord::new(
            self.log_id,
            self.created_at_ms,
            self.account,
            self.gateway,
            &self.provider.slug,
        );
        record.path = self.logged_path.to_owned();
        record.method = self.method.as_str().to_owned();
        record.metadata = directives.metadata.clone();
        record.event_id = directives.event_id.clone();
        record.request_content_type = header_text(self.headers, header::CONTENT_TYPE);
        record.user_agent = header_text(self.headers, header::USER_AGENT);
        record.request_size = body.len() as u64;
        record.authentication = directives.has_authorization;
        record.payload_collected = directives.collect_payload;
        PendingLog {
            record,
            wire: self.provider.wire,
            request_body: body.clone(),
            response_body: crate::capture::CapturedBody::default(),
            response_tail: bytes::BytesMut::new(),
            custom_cost: directives.custom_cost,
        }
    }
}

/// One upstream exchange, ready to send.
pub(crate) struct Forward {
    pub(crate) provider: Arc<Provider>,
    pub(crate) url: String,
    pub(crate) method: Method,
    /// Headers for the upstream (see [`upstream_headers`]).
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// Bound on the wait for the response head, and on each silence of its body.
    pub(crate) timeout: Duration,
    pub(crate) log: Option<PendingLog>,
    /// The gateway's own response headers ([`gateway_headers`]).
    pub(crate) echo: HeaderMap,
    pub(crate) started: Instant,
    /// Set when the response may be served from, and stored in, the cache.
    pub(crate) cache: Option<CachePlan>,
}

/// Sends one exchange upstream and relays the answer; the exchange is measured and logged
/// exactly once, whatever happens. Upstream failures become the gateway's own 502/504.
pub(crate) async fn forward(edge: &EdgeState, mut f: Forward) -> Result<Response, EdgeError> {
    let fill = match &f.cache {
        None => None,
        Some(plan) => {
            let found = edge.cache.lookup(plan, f.timeout).await;
            if let Lookup::Hit(entry, _) = &found {
                return Ok(serve_hit(edge, f, entry));
            }
            f.echo.insert(
                HeaderName::from_static(CACHE_STATUS_HEADER),
                HeaderValue::from_static("MISS"),
            );
            match found {
                Lookup::Miss(ticket) => Some(CacheCapture::new(ticket)),
                _ => None,
            }
        }
    };
    let mut guard = exchange_guard(edge, f.provider.clone(), f.started, f.log);
    if let Some(fill) = fill {
        guard.fill_cache(fill);
    }
    let (provider, echo, timeout) = (f.provider, f.echo, f.timeout);
    let uri = http::Uri::try_from(std::mem::take(&mut f.url)).map_err(|e| {
        EdgeError::MalformedPath(format!("cannot build upstream URL: {}", root_cause(&e)))
    })?;
    let mut upstream_req = http::Request::new(http_body_util::Full::new(f.body));
    *upstream_req.method_mut() = f.method.clone();
    *upstream_req.uri_mut() = uri;
    *upstream_req.headers_mut() = f.headers;
    let client = edge.upstream.next();

    let upstream = match tokio::time::timeout(timeout, client.request(upstream_req)).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => {
            edge.metrics.upstream_error(&provider.slug, "unreachable");
            let err = EdgeError::UpstreamUnreachable {
                provider: provider.slug.clone(),
                reason: root_cause(&e),
            };
            tracing::warn!(error = %err, "upstream request failed");
            return Ok(gateway_failure(
                guard,
                err,
                RequestOutcome::UpstreamUnreachable,
                echo,
            ));
        }
        Err(_) => {
            edge.metrics.upstream_error(&provider.slug, "timeout");
            let err = EdgeError::UpstreamTimeout {
                provider: provider.slug.clone(),
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            };
            tracing::warn!(error = %err, "upstream timed out");
            return Ok(gateway_failure(
                guard,
                err,
                RequestOutcome::UpstreamTimeout,
                echo,
            ));
        }
    };

    let status = upstream.status();
    if status.is_client_error() {
        edge.metrics.upstream_error(&provider.slug, "status_4xx");
    } else if status.is_server_error() {
        edge.metrics.upstream_error(&provider.slug, "status_5xx");
    }
    let content_type = header_text(upstream.headers(), header::CONTENT_TYPE);
    let streamed = content_type
        .as_deref()
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    guard.response_head(status.as_u16(), content_type.as_deref(), streamed);

    let (up_parts, up_body) = upstream.into_parts();
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    copy_response_headers(&up_parts.headers, response.headers_mut());
    response.headers_mut().extend(echo);

    if f.method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        guard.finish(RequestOutcome::Completed, None, None);
        return Ok(response);
    }
    *response.body_mut() = Body::new(TeeBody::new(up_body, guard, timeout));
    Ok(response)
}

fn exchange_guard(
    edge: &EdgeState,
    provider: Arc<Provider>,
    started: Instant,
    log: Option<PendingLog>,
) -> ExchangeGuard {
    ExchangeGuard::new(
        provider,
        started,
        log,
        usize::try_from(edge.proxy.max_body_bytes).unwrap_or(usize::MAX),
        edge.shipper.clone(),
        edge.metrics.clone(),
    )
}

/// Answers from the cache: the stored response (an event stream replayed event by event),
/// logged as cached with the original's token counts.
fn serve_hit(edge: &EdgeState, f: Forward, entry: &aigw_gateway_state::CacheEntry) -> Response {
    let mut log = f.log;
    if let Some(log) = &mut log {
        log.record.cached = true;
    }
    let mut guard = exchange_guard(edge, f.provider, f.started, log);
    let content_type = entry.content_type.as_deref();
    let streamed = content_type.is_some_and(|ct| ct.starts_with("text/event-stream"));
    guard.response_head(entry.status, content_type, streamed);
    guard.capture(&entry.body);
    guard.finish(RequestOutcome::Completed, None, None);
    let mut response = Response::new(replay(entry));
    *response.status_mut() = StatusCode::from_u16(entry.status).unwrap_or(StatusCode::OK);
    let headers = response.headers_mut();
    if let Some(value) = content_type.and_then(|ct| HeaderValue::from_str(ct).ok()) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.extend(f.echo);
    headers.insert(
        HeaderName::from_static(CACHE_STATUS_HEADER),
        HeaderValue::from_static("HIT"),
    );
    response
}

/// Read the whole request body, refusing more than `limit` bytes.
pub(crate) async fn read_body(body: Body, limit: u64) -> Result<Bytes, EdgeError> {
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    axum::body::to_bytes(body, limit_usize).await.map_err(|e| {
        let too_large = error_chain(&e).any(|e| e.is::<http_body_util::LengthLimitError>());
        if too_large {
            EdgeError::BodyTooLarge { limit }
        } else {
            EdgeError::BodyRead(root_cause(&e))
        }
    })
}

/// End an exchange the gateway answered by itself (502/504) and build the error response.
fn gateway_failure(
    guard: ExchangeGuard,
    err: EdgeError,
    outcome: RequestOutcome,
    echo: HeaderMap,
) -> Response {
    let status = err.status_and_code().0;
    guard.finish(outcome, Some(status.as_u16()), Some(err.to_string()));
    let mut response = err.into_response();
    response.headers_mut().extend(echo);
    response
}

/// The gateway's own response headers: `cf-aig-log-id` when the request is logged, and the
/// caller's `cf-aig-event-id`. Every response of a proxied request carries them, errors included.
pub(crate) fn gateway_headers(log_id: Option<Ulid>, event_id: Option<&str>) -> HeaderMap {
    // Empty, it allocates nothing: most unlogged responses add no header of their own.
    let mut headers = HeaderMap::new();
    if let Some(id) = log_id {
        // Written out on the stack: every logged response carries one.
        let mut text = [0; ulid::ULID_LEN];
        if let Ok(value) = HeaderValue::from_str(id.array_to_str(&mut text)) {
            headers.insert(HeaderName::from_static(LOG_ID_HEADER), value);
        }
    }
    if let Some(value) = event_id.and_then(|id| HeaderValue::from_str(id).ok()) {
        headers.insert(HeaderName::from_static(EVENT_ID_HEADER), value);
    }
    headers
}

fn header_text(headers: &HeaderMap, name: HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) are never forwarded in either direction.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Headers sent upstream: the client's, minus hop-by-hop, `Host`, `Content-Length` (recomputed),
/// `Accept-Encoding` (the edge asks for identity so it can read usage from the body) and the
/// gateway's own `cf-aig-*` control headers. Credentials pass through untouched.
pub(crate) fn upstream_headers(incoming: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(incoming.len());
    for (name, value) in incoming {
        let skip = is_hop_by_hop(name)
            || name == header::HOST
            || name == header::CONTENT_LENGTH
            || name == header::ACCEPT_ENCODING
            || name.as_str().starts_with(CONTROL_PREFIX);
        if !skip {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

fn copy_response_headers(upstream: &HeaderMap, out: &mut HeaderMap) {
    out.reserve(upstream.len() + 2);
    for (name, value) in upstream {
        if !is_hop_by_hop(name) {
            out.append(name.clone(), value.clone());
        }
    }
}

/// The innermost cause of an error, which for the upstream client names the actual failure
/// (connection refused, reset) without the URL — URLs may carry credentials in their query.
pub(crate) fn root_cause(err: &(dyn StdError + 'static)) -> String {
    error_chain(err)
        .last()
        .map_or_else(String::new, |e| e.to_string())
}

/// `err` followed by its sources, outermost first.
fn error_chain<'a>(
    err: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(err), |e: &&'a (dyn StdError + 'static)| (*e).source())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_hop_and_host_headers_are_not_forwarded_but_credentials_are() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer sk-secret"),
            ("x-api-key", "ak"),
            ("api-key", "az"),
            ("anthropic-version", "2023-06-01"),
            ("cf-aig-metadata", "{}"),
            ("cf-aig-authorization", "Bearer gw"),
            ("host", "gateway"),
            ("connection", "keep-alive"),
            ("content-length", "10"),
            ("accept-encoding", "gzip"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let out = upstream_headers(&h);
        let names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        assert_eq!(
            names,
            ["authorization", "x-api-key", "api-key", "anthropic-version"]
        );
    }
}
