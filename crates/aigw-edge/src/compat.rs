//! The OpenAI-compatible endpoint: `POST /v1/{account}/{gateway}/compat/chat/completions`.
//!
//! An OpenAI chat-completions body whose `model` is `{provider}/{model}` is translated by
//! `aigw-compat` into the provider's native request, which goes through [`crate::proxy::forward`] like
//! any provider request — so the log row is the native exchange (the real provider, its path and
//! bodies, usage read from the native answer). Only what the client receives is translated: the
//! response body is wrapped in a [`TranslateBody`] over the edge's tee.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use aigw_compat::{CompatError, CompatRequest, Framing, ResponseMeta, ResponseTranslator, Target};
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use http::Method;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http_body::Frame;

use crate::EdgeState;
use crate::cache::{CachePlan, CacheRequest};
use crate::error::EdgeError;
use crate::proxy::{
    Exchange, Forward, admit, forward, new_log_id, read_request_body, upstream_headers,
};
use crate::route::parse_gateway_path;

/// The path segment that takes the place of a provider slug.
const SEGMENT: &str = "compat";
/// The one route under it.
const CHAT_COMPLETIONS: &str = "/chat/completions";

/// Whether `path` is under `/v1/{account}/{gateway}/compat/`.
pub(crate) fn is_compat(path: &str) -> bool {
    parse_gateway_path(path).is_ok_and(|p| p.provider == SEGMENT)
}

/// Runs an OpenAI-compatible chat completion.
pub(crate) async fn compat(
    edge: &EdgeState,
    req: Request,
    started: Instant,
) -> Result<Response, EdgeError> {
    let (log_id, created_at_ms) = new_log_id();
    let (parts, body) = req.into_parts();
    let path = parse_gateway_path(parts.uri.path())?;
    let span = tracing::Span::current();
    span.record("account", path.account);
    span.record("gateway", path.gateway);
    if path.rest != CHAT_COMPLETIONS || parts.method != Method::POST {
        return Err(EdgeError::RouteNotFound {
            method: parts.method.to_string(),
            path: format!(
                "{} (the OpenAI-compatible endpoint is POST /v1/{{account_id}}/{{gateway_id}}/compat/chat/completions)",
                parts.uri.path()
            ),
        });
    }
    let (settings, directives) = admit(edge, path.account, path.gateway, &parts.headers).await?;
    let body = read_request_body(edge, &parts.headers, body).await?;

    let request = CompatRequest::parse(&body)?;
    let target = Target::for_provider(request.provider())?;
    let provider = edge
        .catalog
        .get(request.provider())
        .ok_or_else(|| CompatError::UnsupportedProvider(request.provider().to_owned()))?
        .clone();
    span.record("provider", provider.slug.as_str());
    let native = aigw_compat::translate_request(target, &request)?;
    let upstream = provider
        .target(path.account, &native.path, native.query)
        .map_err(|e| EdgeError::MalformedPath(e.to_string()))?;
    let native_body = Bytes::from(native.body);

    span.record("log_id", tracing::field::display(log_id));
    let exchange = Exchange {
        log_id,
        created_at_ms,
        account: path.account,
        gateway: path.gateway,
        provider: &provider,
        logged_path: &upstream.logged_path,
        method: &Method::POST,
        headers: &parts.headers,
    };
    let (log, echo) = exchange.open(&directives, &settings, &native_body);
    let timeout = directives
        .request_timeout
        .unwrap_or(edge.proxy.upstream_timeout);
    let headers = native_headers(target, &parts.headers);
    // Keyed on the native request: a compat request and the same native request share entries.
    let cache = CachePlan::new(
        &settings,
        &directives,
        &CacheRequest {
            account: path.account,
            gateway: path.gateway,
            provider: &provider.slug,
            path: &native.path,
            query: native.query,
            method: &Method::POST,
            headers: &headers,
            body: &native_body,
        },
    );
    let response = forward(
        edge,
        Forward {
            provider: provider.clone(),
            url: upstream.url,
            method: Method::POST,
            headers,
            body: native_body,
            timeout,
            log,
            echo,
            started,
            cache,
        },
    )
    .await?;
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let meta = ResponseMeta::new(format!("chatcmpl-{log_id}"), created, request.model());
    Ok(translate(response, target, &request, meta))
}

/// The upstream headers: the client's (as for any provider request), with its bearer key moved
/// to the provider's credential header and the provider's required headers added.
fn native_headers(target: Target, incoming: &HeaderMap) -> HeaderMap {
    let mut headers = upstream_headers(incoming);
    if let Some(name) = target.credential_header() {
        let key = incoming
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .and_then(|(_, key)| HeaderValue::from_str(key.trim()).ok());
        if let Some(key) = key {
            headers.remove(header::AUTHORIZATION);
            headers.entry(HeaderName::from_static(name)).or_insert(key);
        }
    }
    for (name, value) in target.default_headers() {
        headers
            .entry(HeaderName::from_static(name))
            .or_insert(HeaderValue::from_static(value));
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers
}

/// The client's response: the provider's, with its body (2xx answers and errors alike)
/// translated as it streams in, and `Content-Length` dropped (the length changes).
fn translate(
    response: Response,
    target: Target,
    request: &CompatRequest,
    meta: ResponseMeta,
) -> Response {
    if !target.translates() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let translator = if parts.status.is_success() {
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        ResponseTranslator::new(
            target,
            Framing::from_content_type(content_type),
            request,
            meta,
        )
    } else {
        ResponseTranslator::error(target, parts.status.as_u16())
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    if let Some(content_type) = translator.content_type() {
        parts
            .headers
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    Response::from_parts(parts, Body::new(TranslateBody::new(body, translator)))
}

/// A response body run through a [`ResponseTranslator`]: each upstream frame is translated as it
/// arrives (the inner body is the edge's `TeeBody`, which has already captured the native bytes
/// for the log), and the translator's tail is sent when the upstream body ends. Dropping it
/// drops the inner body, which ends the exchange as the client's abort.
pub(crate) struct TranslateBody {
    inner: Body,
    translator: ResponseTranslator,
    done: bool,
}

impl TranslateBody {
    pub(crate) fn new(inner: Body, translator: ResponseTranslator) -> Self {
        Self {
            inner,
            translator,
            done: false,
        }
    }

    /// `out` followed by the translator's tail.
    fn finish(&mut self, out: Bytes) -> Bytes {
        self.done = true;
        let tail = self.translator.finish();
        if out.is_empty() {
            return tail;
        }
        let mut all = BytesMut::from(out);
        all.extend_from_slice(&tail);
        all.freeze()
    }
}

impl http_body::Body for TranslateBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let out = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    // Trailers do not survive a translation; only data frames carry the answer.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let out = this.translator.feed(&data);
                    if this.inner.is_end_stream() {
                        this.finish(out)
                    } else {
                        out
                    }
                }
                Some(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                None => this.finish(Bytes::new()),
            };
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(out))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_compat_segment_is_routed_here() {
        assert!(is_compat("/v1/acct/gw/compat/chat/completions"));
        assert!(is_compat("/v1/acct/gw/compat/embeddings"));
        assert!(!is_compat("/v1/acct/gw/openai/chat/completions"));
        assert!(!is_compat("/v1/acct/gw"));
    }

    #[test]
    fn bearer_keys_move_to_the_provider_header() {
        let mut incoming = HeaderMap::new();
        incoming.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer sk-1"),
        );
        incoming.insert("cf-aig-metadata", HeaderValue::from_static("{}"));
        incoming.insert(header::CONTENT_LENGTH, HeaderValue::from_static("10"));

        let h = native_headers(Target::Anthropic, &incoming);
        assert_eq!(h.get("x-api-key").unwrap(), "sk-1");
        assert_eq!(h.get("anthropic-version").unwrap(), "2023-06-01");
        assert!(h.get(header::AUTHORIZATION).is_none());
        assert!(h.get("cf-aig-metadata").is_none() && h.get(header::CONTENT_LENGTH).is_none());

        let h = native_headers(Target::GoogleAiStudio, &incoming);
        assert_eq!(h.get("x-goog-api-key").unwrap(), "sk-1");
        assert!(h.get(header::AUTHORIZATION).is_none());

        let h = native_headers(Target::Cohere, &incoming);
        assert_eq!(h.get(header::AUTHORIZATION).unwrap(), "Bearer sk-1");
        assert_eq!(h.get(header::CONTENT_TYPE).unwrap(), "application/json");

        incoming.insert("anthropic-version", HeaderValue::from_static("2024-01-01"));
        let h = native_headers(Target::Anthropic, &incoming);
        assert_eq!(
            h.get("anthropic-version").unwrap(),
            "2024-01-01",
            "the client's wins"
        );
    }
}
