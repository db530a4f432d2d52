//! The Universal Endpoint: `POST /v1/{account}/{gateway}` with a JSON array of steps, each a
//! provider request. Steps run in order; a step is retried on retryable failures (the
//! upstream unreachable or silent, 429, 5xx) up to its attempts, with its backoff, and when
//! they are spent the next step runs. The first answer that is not retryable — or the last
//! attempt of the last step, whatever it is — is the response, with `cf-aig-step` naming the
//! step. Every attempt goes through `proxy::forward` and is logged as its own row (the request's
//! event id, its step and attempt number).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value};
use ulid::Ulid;

use crate::EdgeState;
use crate::cache::{CachePlan, CacheRequest};
use crate::directives::MAX_REQUEST_TIMEOUT_MS;
use crate::error::EdgeError;
use crate::proxy::{
    Exchange, Forward, admit, forward, gateway_headers, new_log_id, read_body, upstream_headers,
};
use crate::route::valid_id;

/// Response header naming the step (0-based) that answered.
pub const STEP_HEADER: &str = "cf-aig-step";
/// Most attempts of one step.
pub const MAX_ATTEMPTS: u32 = 5;
/// Longest wait between two attempts of a step set per request (`retryDelay`,
/// `cf-aig-retry-delay`).
pub const MAX_RETRY_DELAY_MS: u64 = 5_000;

/// How the wait between attempts grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backoff {
    /// The same delay before every retry.
    #[default]
    Constant,
    /// The delay times the number of attempts made.
    Linear,
    /// The delay doubled after every attempt.
    Exponential,
}

impl Backoff {
    /// `constant`, `linear` or `exponential`.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "constant" => Some(Self::Constant),
            "linear" => Some(Self::Linear),
            "exponential" => Some(Self::Exponential),
            _ => None,
        }
    }
}

/// How often, and how patiently, a step is tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts of a step, 1 to [`MAX_ATTEMPTS`].
    pub max_attempts: u32,
    /// The base wait between attempts.
    pub delay: Duration,
    /// How the wait grows.
    pub backoff: Backoff,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            max_attempts: 1,
            delay: Duration::ZERO,
            backoff: Backoff::Constant,
        }
    }
}

impl Retry {
    /// The wait after attempt `made` (1-based) failed.
    pub fn delay_after(&self, made: u32) -> Duration {
        match self.backoff {
            Backoff::Constant => self.delay,
            Backoff::Linear => self.delay.saturating_mul(made),
            Backoff::Exponential => self
                .delay
                .saturating_mul(2u32.saturating_pow(made.saturating_sub(1))),
        }
    }
}

/// The account and gateway of a Universal Endpoint path (`/v1/{account}/{gateway}`).
pub(crate) fn coordinates(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/v1/")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (account, gateway) = rest.split_once('/')?;
    (valid_id(account) && valid_id(gateway)).then_some((account, gateway))
}

/// A step as the client wrote it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepJson {
    provider: Option<String>,
    endpoint: Option<String>,
    #[serde(default)]
    headers: Map<String, Value>,
    query: Option<Value>,
    config: Option<ConfigJson>,
}

/// A step's `config`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConfigJson {
    max_attempts: Option<u32>,
    retry_delay: Option<u64>,
    backoff: Option<String>,
    request_timeout: Option<u64>,
}

/// A validated step.
struct Step {
    provider: Arc<aigw_providers::Provider>,
    endpoint: String,
    headers: HeaderMap,
    body: Bytes,
    retry: Retry,
    timeout: Option<Duration>,
}

fn invalid(index: usize, field: &str, reason: impl Into<String>) -> EdgeError {
    EdgeError::InvalidStep {
        field: format!("steps[{index}].{field}"),
        reason: reason.into(),
    }
}

/// Parses and checks every step before any is sent.
fn steps(
    edge: &EdgeState,
    body: &[u8],
    defaults: Retry,
    max_steps: usize,
) -> Result<Vec<Step>, EdgeError> {
    let json: Value = serde_json::from_slice(body).map_err(|e| EdgeError::InvalidStep {
        field: "body".into(),
        reason: format!("not JSON: {e}"),
    })?;
    let raw = match json {
        Value::Array(steps) => steps,
        step @ Value::Object(_) => vec![step],
        _ => {
            return Err(EdgeError::InvalidStep {
                field: "body".into(),
                reason: "must be a step object or an array of steps".into(),
            });
        }
    };
    if raw.is_empty() {
        return Err(EdgeError::InvalidStep {
            field: "body".into(),
            reason: "at least one step is required".into(),
        });
    }
    if raw.len() > max_steps {
        return Err(EdgeError::InvalidStep {
            field: "body".into(),
            reason: format!("{} steps, more than the {max_steps} allowed", raw.len()),
        });
    }
    raw.into_iter()
        .enumerate()
        .map(|(i, value)| step(edge, i, value, defaults))
        .collect()
}

fn step(edge: &EdgeState, i: usize, value: Value, defaults: Retry) -> Result<Step, EdgeError> {
    let json: StepJson =
        serde_json::from_value(value).map_err(|e| invalid(i, "*", e.to_string()))?;
    let slug = json
        .provider
        .ok_or_else(|| invalid(i, "provider", "is required"))?;
    let provider = edge
        .catalog
        .get(&slug)
        .ok_or_else(|| invalid(i, "provider", format!("unknown provider `{slug}`")))?
        .clone();
    let endpoint = json
        .endpoint
        .filter(|e| !e.is_empty())
        .ok_or_else(|| invalid(i, "endpoint", "is required"))?;
    let query = json
        .query
        .ok_or_else(|| invalid(i, "query", "is required"))?;
    let mut headers = HeaderMap::with_capacity(json.headers.len());
    for (name, value) in json.headers {
        let field = || format!("headers.{name}");
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(i, &field(), "is not a header name"))?;
        let text = match &value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => return Err(invalid(i, &field(), "must be a string")),
        };
        let value = HeaderValue::from_str(&text)
            .map_err(|_| invalid(i, &field(), "is not a header value"))?;
        headers.insert(header, value);
    }
    let mut retry = defaults;
    let mut timeout = None;
    if let Some(config) = json.config {
        if let Some(n) = config.max_attempts {
            retry.max_attempts =
                check_attempts(u64::from(n)).map_err(|r| invalid(i, "config.maxAttempts", r))?;
        }
        if let Some(ms) = config.retry_delay {
            retry.delay = check_delay(ms).map_err(|r| invalid(i, "config.retryDelay", r))?;
        }
        if let Some(b) = config.backoff {
            retry.backoff = Backoff::parse(&b).ok_or_else(|| {
                invalid(
                    i,
                    "config.backoff",
                    "must be constant, linear or exponential",
                )
            })?;
        }
        if let Some(ms) = config.request_timeout {
            timeout = Some(check_timeout(ms).map_err(|r| invalid(i, "config.requestTimeout", r))?);
        }
    }
    Ok(Step {
        provider,
        endpoint,
        headers,
        body: Bytes::from(query.to_string()),
        retry,
        timeout,
    })
}

/// `maxAttempts` / `cf-aig-max-attempts`: 1 to [`MAX_ATTEMPTS`].
pub(crate) fn check_attempts(n: u64) -> Result<u32, String> {
    u32::try_from(n)
        .ok()
        .filter(|n| (1..=MAX_ATTEMPTS).contains(n))
        .ok_or_else(|| format!("must be between 1 and {MAX_ATTEMPTS}"))
}

/// `retryDelay` / `cf-aig-retry-delay`: 0 to [`MAX_RETRY_DELAY_MS`] ms.
pub(crate) fn check_delay(ms: u64) -> Result<Duration, String> {
    (ms <= MAX_RETRY_DELAY_MS)
        .then(|| Duration::from_millis(ms))
        .ok_or_else(|| format!("must be at most {MAX_RETRY_DELAY_MS} ms"))
}

fn check_timeout(ms: u64) -> Result<Duration, String> {
    (1..=MAX_REQUEST_TIMEOUT_MS)
        .contains(&ms)
        .then(|| Duration::from_millis(ms))
        .ok_or_else(|| format!("must be between 1 and {MAX_REQUEST_TIMEOUT_MS} ms"))
}

/// Whether an attempt's answer calls for another attempt (or the next step).
fn retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// Runs a Universal Endpoint request.
pub(crate) async fn universal(
    edge: &EdgeState,
    req: Request,
    started: Instant,
) -> Result<Response, EdgeError> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let (account, gateway) = coordinates(&path)
        .ok_or_else(|| EdgeError::MalformedPath("expected /v1/{account_id}/{gateway_id}".into()))?;
    if parts.method != Method::POST {
        return Err(EdgeError::RouteNotFound {
            method: parts.method.to_string(),
            path: "/v1/{account_id}/{gateway_id} (the Universal Endpoint takes POST)".into(),
        });
    }
    let span = tracing::Span::current();
    span.record("account", account);
    span.record("gateway", gateway);
    let (settings, mut directives) = admit(edge, account, gateway, &parts.headers).await?;
    let body = read_body(body, edge.proxy.max_body_bytes).await?;
    let defaults = Retry {
        max_attempts: directives
            .max_attempts
            .unwrap_or(settings.retry.max_attempts),
        delay: directives.retry_delay.unwrap_or(settings.retry.delay),
        backoff: directives.backoff.unwrap_or(settings.retry.backoff),
    };
    let steps = steps(edge, &body, defaults, edge.proxy.max_universal_steps)?;
    // Every attempt's row carries the request's event id, minted when the client gave none,
    // so the whole path can be found.
    if directives.event_id.is_none() {
        directives.event_id = Some(Ulid::new().to_string());
    }
    let collect = directives.collect_log.unwrap_or(settings.collect_logs);
    let client_headers = upstream_headers(&parts.headers);
    let last_step = steps.len() - 1;
    for (index, step) in steps.into_iter().enumerate() {
        let (rest, query) = match step.endpoint.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (step.endpoint.as_str(), None),
        };
        let rest = format!("/{}", rest.trim_start_matches('/'));
        let target = step
            .provider
            .target(account, &rest, query)
            .map_err(|e| invalid(index, "endpoint", e.to_string()))?;
        // Step headers win over the request's.
        let mut headers = client_headers.clone();
        for (name, value) in &step.headers {
            headers.insert(name.clone(), value.clone());
        }
        headers
            .entry(header::CONTENT_TYPE)
            .or_insert(HeaderValue::from_static("application/json"));
        for attempt in 1..=step.retry.max_attempts {
            let last = index == last_step && attempt == step.retry.max_attempts;
            // The last attempt of the last step waits as long as a direct request would.
            let timeout = match step.timeout.or(directives.request_timeout) {
                Some(t) if !last => t,
                _ => edge.proxy.upstream_timeout,
            };
            let (log_id, created_at_ms) = new_log_id();
            let log = collect.then(|| {
                let exchange = Exchange {
                    log_id,
                    created_at_ms,
                    account,
                    gateway,
                    provider: &step.provider,
                    logged_path: &target.logged_path,
                    method: &Method::POST,
                    headers: &headers,
                };
                let mut log = exchange.pending_log(&directives, &step.body);
                log.record.step = u32::try_from(index).unwrap_or(u32::MAX);
                log.record.attempt = attempt;
                log
            });
            let mut echo =
                gateway_headers(collect.then_some(log_id), directives.event_id.as_deref());
            echo.insert(
                HeaderName::from_static(STEP_HEADER),
                HeaderValue::from(index),
            );
            let cache = CachePlan::new(
                &settings,
                &directives,
                &CacheRequest {
                    account,
                    gateway,
                    provider: &step.provider.slug,
                    // The step's endpoint as given, query included.
                    path: &step.endpoint,
                    query: None,
                    method: &Method::POST,
                    headers: &headers,
                    body: &step.body,
                },
            );
            let response = forward(
                edge,
                Forward {
                    provider: step.provider.clone(),
                    url: target.url.clone(),
                    method: Method::POST,
                    headers: headers.clone(),
                    body: step.body.clone(),
                    timeout,
                    log,
                    echo,
                    started: if index == 0 && attempt == 1 {
                        started
                    } else {
                        Instant::now()
                    },
                    cache,
                },
            )
            .await?;
            if last || !retryable(response.status()) {
                return Ok(response);
            }
            tracing::info!(
                step = index,
                attempt,
                status = response.status().as_u16(),
                "attempt failed; trying again"
            );
            // Read the failed answer to its end, so that its row is complete.
            let _ = axum::body::to_bytes(response.into_body(), usize::MAX).await;
            if attempt < step.retry.max_attempts {
                tokio::time::sleep(step.retry.delay_after(attempt)).await;
            }
        }
    }
    // Unreachable: the last attempt of the last step always answers above.
    Err(EdgeError::InvalidStep {
        field: "body".into(),
        reason: "no step answered".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoffs_grow_as_named() {
        let retry = |backoff| Retry {
            max_attempts: 5,
            delay: Duration::from_millis(100),
            backoff,
        };
        let waits = |r: Retry| {
            (1..5)
                .map(|n| r.delay_after(n).as_millis())
                .collect::<Vec<_>>()
        };
        assert_eq!(waits(retry(Backoff::Constant)), [100, 100, 100, 100]);
        assert_eq!(waits(retry(Backoff::Linear)), [100, 200, 300, 400]);
        assert_eq!(waits(retry(Backoff::Exponential)), [100, 200, 400, 800]);
    }

    #[test]
    fn only_account_and_gateway_paths_are_universal() {
        assert_eq!(coordinates("/v1/acct/gw"), Some(("acct", "gw")));
        assert_eq!(coordinates("/v1/acct/gw/"), Some(("acct", "gw")));
        assert_eq!(coordinates("/v1/acct/gw/openai/chat"), None);
        assert_eq!(coordinates("/v1/acct"), None);
        assert_eq!(coordinates("/v2/acct/gw"), None);
    }
}
