//! `/accounts/{account_id}/ai-gateway/gateways/{gateway_id}/logs[/{id}[/request|/response]]`:
//! log queries and edits, through the shards' `Shard` service.

use std::collections::BTreeMap;

use aigw_proto::admin::GatewayRef;
use aigw_proto::metadata_to_proto;
use aigw_proto::shard::{
    BodyKind, DeleteLogsRequest, GetBodyRequest, GetLogRequest, ListLogsRequest, LogQuery, OrderBy,
    UpdateLogRequest,
};
use aigw_types::{LogRecord, Metadata, MetadataValue, RequestOutcome};
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, header};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tonic::Request;
use ulid::Ulid;

use crate::ApiState;
use crate::envelope::{ok, page_with_cursor};
use crate::error::ApiError;
use crate::filters;
use crate::params::{Params, Target, json_body};
use crate::timefmt::format_ms;

/// Bytes of each stored body shown as `request_head` / `response_head` by `GET .../logs/{id}`.
pub const HEAD_BYTES: usize = 4096;

/// Most metadata entries a log may carry (as for `cf-aig-metadata`).
const MAX_METADATA: usize = 5;

/// Highest `score` (Cloudflare's range is 0 to 100).
const MAX_SCORE: f64 = 100.0;

/// A log as the SDK's `LogListResponse` / `LogGetResponse` read it, plus the rest of the record.
///
/// `metadata` is a JSON *string* (`"{\"user\":\"a\"}"`), as Cloudflare sends it.
#[derive(Debug, Serialize)]
struct LogView {
    id: String,
    created_at: String,
    gateway_id: String,
    provider: String,
    model: String,
    model_type: String,
    path: String,
    request_type: String,
    method: String,
    status_code: u16,
    success: bool,
    cached: bool,
    outcome: RequestOutcome,
    error: Option<String>,
    duration: u64,
    time_to_first_byte: Option<u64>,
    streamed: bool,
    tokens_in: Option<u64>,
    tokens_out: Option<u64>,
    cost: Option<f64>,
    custom_cost: bool,
    metadata: Option<String>,
    event_id: Option<String>,
    step: u32,
    attempt: u32,
    feedback: Option<i8>,
    score: Option<f64>,
    request_content_type: Option<String>,
    response_content_type: Option<String>,
    request_size: u64,
    response_size: u64,
    request_truncated: bool,
    response_truncated: bool,
    user_agent: Option<String>,
    authentication: bool,
    #[serde(flatten)]
    heads: Option<Heads>,
}

/// The start of each stored body (`GET .../logs/{id}` only).
#[derive(Debug, Default, Serialize)]
struct Heads {
    request_head: Option<String>,
    request_head_complete: Option<bool>,
    response_head: Option<String>,
    response_head_complete: Option<bool>,
}

impl LogView {
    fn new(wire: aigw_proto::shard::LogRecord, heads: Option<Heads>) -> Result<Self, ApiError> {
        let r = LogRecord::try_from(wire)
            .map_err(|e| ApiError::Internal(format!("unreadable log record: {e}")))?;
        let metadata = if r.metadata.is_empty() {
            None
        } else {
            Some(
                serde_json::to_string(&r.metadata)
                    .map_err(|e| ApiError::Internal(format!("unencodable metadata: {e}")))?,
            )
        };
        Ok(Self {
            id: r.id.to_string(),
            created_at: format_ms(r.created_at_ms)?,
            gateway_id: r.gateway_id,
            provider: r.provider,
            model: r.model,
            model_type: r.model_type,
            path: r.path,
            request_type: r.request_type,
            method: r.method,
            status_code: r.status_code,
            success: r.success,
            cached: r.cached,
            outcome: r.outcome,
            error: r.error,
            duration: r.duration_ms,
            time_to_first_byte: r.time_to_first_byte_ms,
            streamed: r.streamed,
            tokens_in: r.tokens_in,
            tokens_out: r.tokens_out,
            cost: r.cost,
            custom_cost: r.custom_cost,
            metadata,
            event_id: r.event_id,
            step: r.step,
            attempt: r.attempt,
            feedback: r.feedback,
            score: r.score,
            request_content_type: r.request_content_type,
            response_content_type: r.response_content_type,
            request_size: r.request_size,
            response_size: r.response_size,
            request_truncated: r.request_body_truncated,
            response_truncated: r.response_body_truncated,
            user_agent: r.user_agent,
            authentication: r.authentication,
            heads,
        })
    }
}

fn id_bytes(id: Ulid) -> Bytes {
    Bytes::copy_from_slice(&id.to_bytes())
}

/// 404 (from the account manager) when the gateway does not exist: the shards cannot tell an
/// unknown gateway from one without logs.
async fn ensure_gateway(api: &ApiState, target: &Target) -> Result<(), ApiError> {
    let request = GatewayRef {
        account_id: target.account.clone(),
        id: target.gateway()?.to_owned(),
    };
    api.gateways.get_gateway(Request::new(request)).await?;
    Ok(())
}

fn log_query(
    target: &Target,
    filters: Vec<aigw_proto::shard::Filter>,
    search: Option<String>,
    params: &Params,
) -> Result<LogQuery, ApiError> {
    let (order_by, ascending) = filters::order(params)?;
    Ok(LogQuery {
        account_id: target.account.clone(),
        gateway_id: target.gateway()?.to_owned(),
        filters,
        search,
        order_by: order_by.into(),
        ascending,
    })
}

/// `GET /logs`: every `LogListParams` parameter; unknown parameters are ignored. aigw adds
/// `cursor` (a log id; ordering by `created_at` only): the logs after it, `page` counting from
/// there; a full page ordered by `created_at` carries `result_info.cursor` for the next — a
/// scan that new logs and sub-shard splits neither shift nor repeat.
pub(crate) async fn list(
    State(api): State<ApiState>,
    target: Target,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref());
    let (page_no, per_page) = params.pagination()?;
    let mut filters = filters::filters(&params)?;
    filters.extend(filters::flat_filters(&params)?);
    let search = params.one::<String>("search")?.filter(|s| !s.is_empty());
    // Cloudflare's `meta_info` adds aggregate facts to the answer; aigw checks and ignores it.
    params.one::<bool>("meta_info")?;
    let cursor = params
        .one::<String>("cursor")?
        .map(|c| {
            Ulid::from_string(&c)
                .map_err(|_| ApiError::param("cursor", "must be a log id (a ULID)"))
        })
        .transpose()?;
    let query = log_query(&target, filters, search, &params)?;
    let request_order = query.order_by;
    if cursor.is_some() && request_order != OrderBy::CreatedAt as i32 {
        return Err(ApiError::param(
            "cursor",
            "pages by cursor only when ordered by created_at",
        ));
    }
    let request = ListLogsRequest {
        query: Some(query),
        page: page_no,
        per_page,
        after_id: cursor.map(id_bytes),
    };
    ensure_gateway(&api, &target).await?;
    let response = api
        .shards
        .list_logs(Request::new(request))
        .await?
        .into_inner();
    let items = response
        .logs
        .into_iter()
        .map(|l| LogView::new(l, None))
        .collect::<Result<Vec<_>, _>>()?;
    let by_creation = request_order == OrderBy::CreatedAt as i32;
    let next = (by_creation && items.len() == per_page as usize)
        .then(|| items.last().map(|l| l.id.clone()))
        .flatten();
    Ok(page_with_cursor(
        items,
        page_no,
        per_page,
        response.total_count,
        next,
    ))
}

/// `DELETE /logs?filters&limit&order_by&order_by_direction`. Unknown parameters are refused
/// here, so a misspelt filter cannot widen a delete to every log.
pub(crate) async fn delete_many(
    State(api): State<ApiState>,
    target: Target,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref());
    params.deny_unknown(&["filters", "limit", "order_by", "order_by_direction"])?;
    let filters = filters::filters(&params)?;
    let limit = match params.one::<u32>("limit")? {
        Some(0) => return Err(ApiError::param("limit", "must be at least 1")),
        limit => limit.unwrap_or(0),
    };
    let request = DeleteLogsRequest {
        query: Some(log_query(&target, filters, None, &params)?),
        limit,
    };
    ensure_gateway(&api, &target).await?;
    let deleted = api
        .shards
        .delete_logs(Request::new(request))
        .await?
        .into_inner()
        .deleted;
    #[derive(Serialize)]
    struct Deleted {
        success: bool,
        deleted: u64,
    }
    Ok(ok(Deleted {
        success: true,
        deleted,
    }))
}

/// The first [`HEAD_BYTES`] of a body as text, and whether that is all of it.
fn head(body: &[u8], truncated: bool) -> (String, bool) {
    let complete = body.len() <= HEAD_BYTES && !truncated;
    let slice = &body[..body.len().min(HEAD_BYTES)];
    let end = match std::str::from_utf8(slice) {
        // Cut inside a character: stop before it.
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        _ => slice.len(),
    };
    (
        String::from_utf8_lossy(&slice[..end]).into_owned(),
        complete,
    )
}

async fn fetch_head(
    api: &ApiState,
    target: &Target,
    kind: BodyKind,
) -> Result<Option<(String, bool)>, ApiError> {
    let request = GetBodyRequest {
        account_id: target.account.clone(),
        gateway_id: target.gateway()?.to_owned(),
        id: id_bytes(target.log()?),
        kind: kind.into(),
    };
    match api.shards.get_body(Request::new(request)).await {
        Ok(body) => {
            let body = body.into_inner();
            Ok(Some(head(&body.body, body.truncated)))
        }
        Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
        Err(status) => Err(status.into()),
    }
}

async fn fetch_log(
    api: &ApiState,
    target: &Target,
) -> Result<aigw_proto::shard::LogRecord, ApiError> {
    let request = GetLogRequest {
        account_id: target.account.clone(),
        gateway_id: target.gateway()?.to_owned(),
        id: id_bytes(target.log()?),
    };
    api.shards
        .get_log(Request::new(request))
        .await?
        .into_inner()
        .log
        .ok_or_else(|| ApiError::Internal("shard answered without a log".into()))
}

/// `GET /logs/{id}`: the record, with the start of its bodies when they were collected.
pub(crate) async fn get(State(api): State<ApiState>, target: Target) -> Result<Response, ApiError> {
    let log = fetch_log(&api, &target).await?;
    let mut heads = Heads::default();
    if log.payload_collected {
        let (request, response) = tokio::join!(
            fetch_head(&api, &target, BodyKind::Request),
            fetch_head(&api, &target, BodyKind::Response)
        );
        (heads.request_head, heads.request_head_complete) = request?.unzip();
        (heads.response_head, heads.response_head_complete) = response?.unzip();
    }
    Ok(ok(LogView::new(log, Some(heads))?))
}

/// The body of `PATCH /logs/{id}` (`LogEditParams`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogPatch {
    #[serde(default)]
    feedback: Option<f64>,
    #[serde(default)]
    score: Option<f64>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, Value>>,
}

/// A validated [`LogPatch`]; `None` leaves the field as it is.
#[derive(Debug)]
struct LogEdit {
    feedback: Option<i32>,
    score: Option<f64>,
    /// Replaces the whole metadata map.
    metadata: Option<Metadata>,
}

impl LogPatch {
    /// Validate; `null` means "leave as is".
    fn validate(self) -> Result<LogEdit, ApiError> {
        if self.feedback.is_none() && self.score.is_none() && self.metadata.is_none() {
            return Err(ApiError::body(
                "",
                "set at least one of feedback, score, metadata",
            ));
        }
        let feedback = self
            .feedback
            .map(|f| {
                [-1, 0, 1]
                    .into_iter()
                    .find(|allowed| f64::from(*allowed) == f)
                    .ok_or_else(|| {
                        ApiError::body("feedback", format!("must be -1, 0 or 1, got {f}"))
                    })
            })
            .transpose()?;
        if let Some(score) = self.score.filter(|s| !(0.0..=MAX_SCORE).contains(s)) {
            return Err(ApiError::body(
                "score",
                format!("must be between 0 and 100, got {score}"),
            ));
        }
        let metadata = self.metadata.map(metadata_from_json).transpose()?;
        Ok(LogEdit {
            feedback,
            score: self.score,
            metadata,
        })
    }
}

fn metadata_from_json(entries: BTreeMap<String, Value>) -> Result<Metadata, ApiError> {
    if entries.len() > MAX_METADATA {
        return Err(ApiError::body(
            "metadata",
            format!("at most {MAX_METADATA} entries, got {}", entries.len()),
        ));
    }
    entries
        .into_iter()
        .map(|(key, value)| {
            let value = match value {
                Value::String(s) => MetadataValue::String(s),
                Value::Number(n) => MetadataValue::Number(n),
                Value::Bool(b) => MetadataValue::Bool(b),
                other => {
                    return Err(ApiError::body(
                        format!("metadata.{key}"),
                        format!("must be a string, number or boolean, got {other}"),
                    ));
                }
            };
            if key.is_empty() {
                return Err(ApiError::body("metadata", "keys must not be empty"));
            }
            Ok((key, value))
        })
        .collect()
}

/// `PATCH /logs/{id}`: feedback, score and/or metadata (replaced whole); answers the log.
pub(crate) async fn edit(
    State(api): State<ApiState>,
    target: Target,
    body: Bytes,
) -> Result<Response, ApiError> {
    let LogEdit {
        feedback,
        score,
        metadata,
    } = json_body::<LogPatch>(&body)?.validate()?;
    let request = UpdateLogRequest {
        account_id: target.account.clone(),
        gateway_id: target.gateway()?.to_owned(),
        id: id_bytes(target.log()?),
        feedback,
        score,
        replace_metadata: metadata.is_some(),
        metadata: metadata.as_ref().map(metadata_to_proto).unwrap_or_default(),
    };
    let log = api
        .shards
        .update_log(Request::new(request))
        .await?
        .into_inner()
        .log
        .ok_or_else(|| ApiError::Internal("shard answered without a log".into()))?;
    Ok(ok(LogView::new(log, None)?))
}

/// Header set on a body answer when the stored body was cut at the size limit.
pub const TRUNCATED_HEADER: &str = "cf-aig-body-truncated";

async fn body(api: &ApiState, target: &Target, kind: BodyKind) -> Result<Response, ApiError> {
    let request = GetBodyRequest {
        account_id: target.account.clone(),
        gateway_id: target.gateway()?.to_owned(),
        id: id_bytes(target.log()?),
        kind: kind.into(),
    };
    let body = api
        .shards
        .get_body(Request::new(request))
        .await?
        .into_inner();
    let content_type = body
        .content_type
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let mut response = ([(header::CONTENT_TYPE, content_type)], body.body).into_response();
    if body.truncated {
        response
            .headers_mut()
            .insert(TRUNCATED_HEADER, HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// `GET /logs/{id}/request`: the stored request body, raw, with its content type.
pub(crate) async fn request_body(
    State(api): State<ApiState>,
    target: Target,
) -> Result<Response, ApiError> {
    body(&api, &target, BodyKind::Request).await
}

/// `GET /logs/{id}/response`: the stored response body, raw, with its content type.
pub(crate) async fn response_body(
    State(api): State<ApiState>,
    target: Target,
) -> Result<Response, ApiError> {
    body(&api, &target, BodyKind::Response).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_stop_at_a_character_boundary() {
        let mut body = vec![b'a'; HEAD_BYTES - 1];
        body.extend_from_slice("é".as_bytes());
        let (text, complete) = head(&body, false);
        assert_eq!(text.len(), HEAD_BYTES - 1);
        assert!(!complete);
        assert_eq!(head(b"{}", false), ("{}".to_owned(), true));
        assert_eq!(head(b"{}", true), ("{}".to_owned(), false));
    }

    fn patch(json: &str) -> Result<LogEdit, ApiError> {
        json_body::<LogPatch>(json.as_bytes())?.validate()
    }

    #[test]
    fn patches_are_validated() {
        let edit =
            patch(r#"{"feedback": -1, "score": 42.5, "metadata": {"a": 1, "b": "x"}}"#).unwrap();
        assert_eq!((edit.feedback, edit.score), (Some(-1), Some(42.5)));
        assert_eq!(edit.metadata.unwrap().len(), 2);
        for (json, field) in [
            (r#"{"feedback": 2}"#, "feedback"),
            (r#"{"feedback": 0.5}"#, "feedback"),
            (r#"{"score": 101}"#, "score"),
            (r#"{"score": -1}"#, "score"),
            (r#"{"metadata": {"a": [1]}}"#, "metadata.a"),
            (
                r#"{"metadata": {"a":1,"b":1,"c":1,"d":1,"e":1,"f":1}}"#,
                "metadata",
            ),
            (r#"{"colour": 1}"#, "colour"),
            (r#"{}"#, ""),
            (r#"{"feedback": null}"#, ""),
        ] {
            match patch(json).unwrap_err() {
                ApiError::InvalidBody { field: f, .. } => assert_eq!(f, field, "{json}"),
                other => panic!("{other:?}"),
            }
        }
    }
}
