//! `/accounts/{account_id}/ai-gateway/gateways[/{gateway_id}]`: gateway settings, through the
//! account manager's `Gateways` service (and the shards' `DeleteGateway` for a gateway's logs).

use std::collections::BTreeMap;

use aigw_proto::admin::{
    CreateGatewayRequest, Gateway, GatewayRef, GatewaySettings, ListGatewaysRequest,
    LogManagementStrategy, RateLimitingTechnique, RetryBackoff, UpdateGatewayRequest,
};
use aigw_proto::shard::DeleteGatewayRequest;
use axum::extract::{RawQuery, State};
use axum::response::Response;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tonic::Request;

use crate::ApiState;
use crate::envelope::{ok, page};
use crate::error::ApiError;
use crate::params::{Params, Target, check_gateway_id, json_body};
use crate::timefmt::format_ms;

/// `rate_limiting_technique` on the wire.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
enum Technique {
    Fixed,
    Sliding,
}

/// `retry_backoff` on the wire.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
enum Backoff {
    Constant,
    Linear,
    Exponential,
}

/// `log_management_strategy` on the wire.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum Strategy {
    StopInserting,
    DeleteOldest,
}

/// The body of create (`POST`) and update (`PUT`), as the SDK's `AIGatewayCreateParams` /
/// `AIGatewayUpdateParams` send it. `PUT` replaces every setting.
#[derive(Debug, Deserialize)]
struct GatewayBody {
    #[serde(default)]
    id: Option<String>,
    cache_invalidate_on_update: bool,
    #[serde(default)]
    cache_ttl: Option<u64>,
    collect_logs: bool,
    #[serde(default)]
    rate_limiting_interval: Option<u64>,
    #[serde(default)]
    rate_limiting_limit: Option<u64>,
    #[serde(default)]
    rate_limiting_technique: Option<Technique>,
    #[serde(default)]
    authentication: Option<bool>,
    #[serde(default)]
    log_management: Option<u64>,
    #[serde(default)]
    log_management_strategy: Option<Strategy>,
    #[serde(default)]
    logpush: Option<bool>,
    #[serde(default)]
    logpush_public_key: Option<String>,
    #[serde(default)]
    retry_max_attempts: Option<u32>,
    #[serde(default)]
    retry_delay: Option<u32>,
    #[serde(default)]
    retry_backoff: Option<Backoff>,
    /// Settings of Cloudflare features aigw lacks (`dlp`, `guardrails`, `zdr`, ...).
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

impl GatewayBody {
    /// Validate and convert. Settings aigw does not implement are accepted only switched off
    /// (`null` or `false`), so nobody believes a feature is on that is not.
    fn into_settings(self) -> Result<GatewaySettings, ApiError> {
        if let Some((name, _)) = self
            .other
            .iter()
            .find(|(_, v)| !matches!(v, serde_json::Value::Null | serde_json::Value::Bool(false)))
        {
            return Err(ApiError::body(
                name.as_str(),
                "this setting is not supported by aigw (only null or false is accepted)",
            ));
        }
        if self.log_management == Some(0) {
            return Err(ApiError::body(
                "log_management",
                "must be at least 1 (or null for the plan default)",
            ));
        }
        if self
            .retry_max_attempts
            .is_some_and(|n| !(1..=5).contains(&n))
        {
            return Err(ApiError::body(
                "retry_max_attempts",
                "must be between 1 and 5",
            ));
        }
        if self.retry_delay.is_some_and(|ms| ms > 60_000) {
            return Err(ApiError::body(
                "retry_delay",
                "must be between 0 and 60000 ms",
            ));
        }
        let technique = match self.rate_limiting_technique {
            Some(Technique::Sliding) => RateLimitingTechnique::Sliding,
            Some(Technique::Fixed) | None => RateLimitingTechnique::Fixed,
        };
        let strategy = match self.log_management_strategy {
            Some(Strategy::StopInserting) => LogManagementStrategy::StopInserting,
            Some(Strategy::DeleteOldest) => LogManagementStrategy::DeleteOldest,
            None => LogManagementStrategy::Unspecified,
        };
        Ok(GatewaySettings {
            cache_invalidate_on_update: self.cache_invalidate_on_update,
            cache_ttl: self.cache_ttl.unwrap_or(0),
            collect_logs: self.collect_logs,
            rate_limiting_interval: self.rate_limiting_interval.unwrap_or(0),
            rate_limiting_limit: self.rate_limiting_limit.unwrap_or(0),
            rate_limiting_technique: technique.into(),
            authentication: self.authentication.unwrap_or(false),
            log_management: self.log_management,
            log_management_strategy: strategy.into(),
            logpush: self.logpush.unwrap_or(false),
            logpush_public_key: self.logpush_public_key.filter(|k| !k.is_empty()),
            retry_max_attempts: self.retry_max_attempts,
            retry_delay: self.retry_delay,
            retry_backoff: match self.retry_backoff {
                None => RetryBackoff::Unspecified,
                Some(Backoff::Constant) => RetryBackoff::Constant,
                Some(Backoff::Linear) => RetryBackoff::Linear,
                Some(Backoff::Exponential) => RetryBackoff::Exponential,
            }
            .into(),
        })
    }
}

/// A gateway as the SDK's `AIGateway*Response` models read it.
#[derive(Debug, Serialize)]
struct GatewayView {
    id: String,
    account_id: String,
    created_at: String,
    modified_at: String,
    is_default: bool,
    cache_invalidate_on_update: bool,
    cache_ttl: u64,
    collect_logs: bool,
    rate_limiting_interval: u64,
    rate_limiting_limit: u64,
    rate_limiting_technique: Technique,
    authentication: bool,
    log_management: Option<u64>,
    log_management_strategy: Option<Strategy>,
    logpush: bool,
    logpush_public_key: Option<String>,
    retry_max_attempts: Option<u32>,
    retry_delay: Option<u32>,
    retry_backoff: Option<Backoff>,
}

impl TryFrom<Gateway> for GatewayView {
    type Error = ApiError;

    fn try_from(g: Gateway) -> Result<Self, ApiError> {
        let s = g.settings.unwrap_or_default();
        let technique = match s.rate_limiting_technique() {
            RateLimitingTechnique::Fixed => Technique::Fixed,
            RateLimitingTechnique::Sliding => Technique::Sliding,
        };
        let strategy = match s.log_management_strategy() {
            LogManagementStrategy::Unspecified => None,
            LogManagementStrategy::StopInserting => Some(Strategy::StopInserting),
            LogManagementStrategy::DeleteOldest => Some(Strategy::DeleteOldest),
        };
        Ok(Self {
            is_default: g.id == "default",
            created_at: format_ms(g.created_at_ms)?,
            modified_at: format_ms(g.modified_at_ms)?,
            id: g.id,
            account_id: g.account_id,
            cache_invalidate_on_update: s.cache_invalidate_on_update,
            cache_ttl: s.cache_ttl,
            collect_logs: s.collect_logs,
            rate_limiting_interval: s.rate_limiting_interval,
            rate_limiting_limit: s.rate_limiting_limit,
            rate_limiting_technique: technique,
            authentication: s.authentication,
            log_management: s.log_management,
            log_management_strategy: strategy,
            logpush: s.logpush,
            retry_backoff: match s.retry_backoff() {
                RetryBackoff::Unspecified => None,
                RetryBackoff::Constant => Some(Backoff::Constant),
                RetryBackoff::Linear => Some(Backoff::Linear),
                RetryBackoff::Exponential => Some(Backoff::Exponential),
            },
            retry_max_attempts: s.retry_max_attempts,
            retry_delay: s.retry_delay,
            logpush_public_key: s.logpush_public_key,
        })
    }
}

fn view(g: Gateway) -> Result<Response, ApiError> {
    Ok(ok(GatewayView::try_from(g)?))
}

/// `POST /gateways`.
pub(crate) async fn create(
    State(api): State<ApiState>,
    target: Target,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut body: GatewayBody = json_body(&body)?;
    let id = body
        .id
        .take()
        .ok_or_else(|| ApiError::body("", "missing field `id`"))?;
    check_gateway_id(&id).map_err(|r| ApiError::body("id", r))?;
    let request = CreateGatewayRequest {
        account_id: target.account,
        id,
        settings: Some(body.into_settings()?),
    };
    view(
        api.gateways
            .create_gateway(Request::new(request))
            .await?
            .into_inner(),
    )
}

/// `GET /gateways?page&per_page&search`.
pub(crate) async fn list(
    State(api): State<ApiState>,
    target: Target,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref());
    let (page_no, per_page) = params.pagination()?;
    let search = params.one::<String>("search")?.filter(|s| !s.is_empty());
    let request = ListGatewaysRequest {
        account_id: target.account,
        search,
        page: page_no,
        per_page,
    };
    let response = api
        .gateways
        .list_gateways(Request::new(request))
        .await?
        .into_inner();
    let items = response
        .gateways
        .into_iter()
        .map(GatewayView::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(page(items, page_no, per_page, response.total_count))
}

fn gateway_ref(target: &Target) -> Result<GatewayRef, ApiError> {
    Ok(GatewayRef {
        account_id: target.account.clone(),
        id: target.gateway()?.to_owned(),
    })
}

/// `GET /gateways/{gateway_id}`.
pub(crate) async fn get(State(api): State<ApiState>, target: Target) -> Result<Response, ApiError> {
    let request = gateway_ref(&target)?;
    view(
        api.gateways
            .get_gateway(Request::new(request))
            .await?
            .into_inner(),
    )
}

/// `PUT /gateways/{gateway_id}`: replaces every setting.
pub(crate) async fn update(
    State(api): State<ApiState>,
    target: Target,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: GatewayBody = json_body(&body)?;
    let gateway = target.gateway()?;
    if body.id.as_deref().is_some_and(|id| id != gateway) {
        return Err(ApiError::body(
            "id",
            "differs from the gateway id in the path",
        ));
    }
    let request = UpdateGatewayRequest {
        account_id: target.account.clone(),
        id: gateway.to_owned(),
        settings: Some(body.into_settings()?),
    };
    view(
        api.gateways
            .update_gateway(Request::new(request))
            .await?
            .into_inner(),
    )
}

/// `DELETE /gateways/{gateway_id}`: the settings, then every log of the gateway.
///
/// The shard sweep also runs when the gateway is already gone, so repeating a delete that
/// failed half-way removes the logs it left behind (and then answers 404).
pub(crate) async fn delete(
    State(api): State<ApiState>,
    target: Target,
) -> Result<Response, ApiError> {
    let request = gateway_ref(&target)?;
    let deleted = match api
        .gateways
        .delete_gateway(Request::new(request.clone()))
        .await
    {
        Ok(gateway) => Ok(gateway.into_inner()),
        Err(status) if status.code() == tonic::Code::NotFound => Err(status),
        Err(status) => return Err(status.into()),
    };
    let sweep = DeleteGatewayRequest {
        account_id: request.account_id,
        gateway_id: request.id,
    };
    let logs = api
        .shards
        .delete_gateway(Request::new(sweep))
        .await?
        .into_inner();
    tracing::info!(logs_deleted = logs.deleted, "gateway deleted");
    view(deleted?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> Result<GatewaySettings, ApiError> {
        json_body::<GatewayBody>(json.as_bytes())?.into_settings()
    }

    fn field(err: ApiError) -> String {
        match err {
            ApiError::InvalidBody { field, .. } => field,
            other => panic!("{other:?}"),
        }
    }

    /// The SDK's required fields, with `extra` added or overriding.
    fn with(extra: serde_json::Value) -> String {
        let mut body = serde_json::json!({
            "cache_invalidate_on_update": false,
            "cache_ttl": null,
            "collect_logs": true,
            "rate_limiting_interval": null,
            "rate_limiting_limit": null,
        });
        if let (Some(base), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            base.extend(extra.clone());
        }
        body.to_string()
    }

    #[test]
    fn sdk_body_becomes_settings() {
        let s = body(&with(serde_json::json!({
            "rate_limiting_technique": "sliding",
            "log_management": 1000,
            "log_management_strategy": "DELETE_OLDEST",
            "zdr": false,
            "dlp": null,
        })))
        .unwrap();
        assert!(s.collect_logs);
        assert_eq!(s.cache_ttl, 0);
        assert_eq!(s.rate_limiting_technique(), RateLimitingTechnique::Sliding);
        assert_eq!(s.log_management, Some(1000));
        assert_eq!(
            s.log_management_strategy(),
            LogManagementStrategy::DeleteOldest
        );
    }

    #[test]
    fn bad_bodies_name_the_field() {
        use serde_json::json;
        let cases = [
            (with(json!({"cache_ttl": -1})), "cache_ttl"),
            (
                with(json!({"rate_limiting_technique": "leaky"})),
                "rate_limiting_technique",
            ),
            (
                with(json!({"log_management_strategy": "KEEP"})),
                "log_management_strategy",
            ),
            (with(json!({"log_management": 0})), "log_management"),
            (with(json!({"retry_max_attempts": 9})), "retry_max_attempts"),
            (with(json!({"retry_delay": 60_001})), "retry_delay"),
            (with(json!({"retry_backoff": "random"})), "retry_backoff"),
            (with(json!({"zdr": true})), "zdr"),
            (with(json!({"collect_logs": "yes"})), "collect_logs"),
            (r#"{"collect_logs":true}"#.to_owned(), ""),
            ("[]".to_owned(), ""),
        ];
        for (json, name) in cases {
            assert_eq!(field(body(&json).unwrap_err()), name, "{json}");
        }
    }
}
