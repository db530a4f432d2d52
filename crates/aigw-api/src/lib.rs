//! The aigw management REST API.
//!
//! This crate owns the `/client/v4` HTTP surface — Cloudflare's AI Gateway management API,
//! wire-compatible with the official `cloudflare` SDKs' `ai_gateway` resources: bearer-token
//! authentication ([`Authenticator`], [`StaticTokens`]), parameter parsing and validation (every
//! rejection names the parameter or body field), and the v4 response envelope
//! (`{"success", "errors", "messages", "result", "result_info"}`). It must not touch storage: it
//! reaches log shards and the account manager only through the gRPC service traits
//! ([`Shard`], [`Gateways`](aigw_proto::admin::gateways_server::Gateways)), which may be tonic
//! clients or the in-process servers.
//!
//! Routes, all under `/client/v4/accounts/{account_id}/ai-gateway`:
//!
//! | method | path | backend calls |
//! |---|---|---|
//! | `POST` | `/gateways` | `Gateways.CreateGateway` |
//! | `GET` | `/gateways` | `Gateways.ListGateways` |
//! | `GET` `PUT` | `/gateways/{gateway_id}` | `Gateways.GetGateway` / `UpdateGateway` |
//! | `DELETE` | `/gateways/{gateway_id}` | `Gateways.DeleteGateway`, then `Shard.DeleteGateway` |
//! | `GET` | `/gateways/{gateway_id}/logs` | `Gateways.GetGateway`, `Shard.ListLogs` |
//! | `DELETE` | `/gateways/{gateway_id}/logs` | `Gateways.GetGateway`, `Shard.DeleteLogs` |
//! | `GET` | `/gateways/{gateway_id}/logs/{id}` | `Shard.GetLog` (+ `GetBody` ×2 for the heads) |
//! | `PATCH` | `/gateways/{gateway_id}/logs/{id}` | `Shard.UpdateLog` |
//! | `GET` | `/gateways/{gateway_id}/logs/{id}/request` \| `/response` | `Shard.GetBody` (raw body) |

mod auth;
mod envelope;
mod error;
mod filters;
mod gateways;
mod logs;
mod params;
mod timefmt;

use std::sync::Arc;

use aigw_proto::DynGateways;
use aigw_proto::shard::shard_server::Shard;
use axum::Router;
use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, get};
use http::{HeaderMap, Method, Uri, header};
use tracing::Instrument;

pub use auth::{Authenticator, Principal, StaticTokens};
pub use envelope::{Message, ResultInfo};
pub use error::{ApiCode, ApiError, backend_status};
pub use logs::{HEAD_BYTES, TRUNCATED_HEADER};

/// What the management API talks to.
#[derive(Clone)]
pub struct ApiState {
    /// Log storage: the shard-routing client or an in-process shard server (same interface).
    pub shards: Arc<dyn Shard>,
    /// Gateway settings, owned by the account manager.
    pub gateways: Arc<DynGateways>,
    /// Resolves bearer tokens.
    pub auth: Arc<dyn Authenticator>,
}

/// Prefix of every route of this crate.
pub const PREFIX: &str = "/client/v4";

/// The management routes, all under [`PREFIX`], to be merged into the edge's router. Unknown
/// paths under the prefix answer a 404 envelope and known paths with another method a 405
/// envelope, after authentication; the router sets no global fallback, so it merges cleanly.
pub fn router(state: ApiState) -> Router {
    let gateways = format!("{PREFIX}/accounts/{{account_id}}/ai-gateway/gateways");
    let gateway = format!("{gateways}/{{gateway_id}}");
    let logs = format!("{gateway}/logs");
    let log = format!("{logs}/{{id}}");
    Router::new()
        .route(
            &gateways,
            routes(get(gateways::list).post(gateways::create)),
        )
        .route(
            &gateway,
            routes(
                get(gateways::get)
                    .put(gateways::update)
                    .delete(gateways::delete),
            ),
        )
        .route(&logs, routes(get(logs::list).delete(logs::delete_many)))
        .route(&log, routes(get(logs::get).patch(logs::edit)))
        .route(&format!("{log}/request"), routes(get(logs::request_body)))
        .route(&format!("{log}/response"), routes(get(logs::response_body)))
        .route(&format!("{PREFIX}/{{*rest}}"), any(route_not_found))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

fn routes(methods: MethodRouter<ApiState>) -> MethodRouter<ApiState> {
    methods.fallback(method_not_allowed)
}

async fn route_not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::RouteNotFound {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

/// The bearer token of `Authorization: Bearer <token>` (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn authorize(
    api: &ApiState,
    headers: &HeaderMap,
    account: Option<&str>,
) -> Result<Principal, ApiError> {
    let token = bearer(headers).ok_or(ApiError::MissingToken)?;
    let principal = api.auth.authenticate(token).ok_or(ApiError::InvalidToken)?;
    match account {
        Some(account) if !principal.may_access(account) => {
            Err(ApiError::Forbidden(account.to_owned()))
        }
        _ => Ok(principal),
    }
}

/// Per request: a span (method, route template, account; never the token or the query), then
/// authentication and the account check, then the handler.
async fn authenticate(
    State(api): State<ApiState>,
    route: MatchedPath,
    path: RawPathParams,
    mut request: Request,
    next: Next,
) -> Response {
    let account = path
        .iter()
        .find(|(name, _)| *name == "account_id")
        .map(|(_, value)| value.to_owned());
    let span = tracing::info_span!(
        "management",
        method = %request.method(),
        route = route.as_str(),
        account = account.as_deref().unwrap_or("-"),
        status = tracing::field::Empty,
    );
    async move {
        let response = match authorize(&api, request.headers(), account.as_deref()) {
            Ok(principal) => {
                request.extensions_mut().insert(principal);
                next.run(request).await
            }
            Err(e) => e.into_response(),
        };
        let status = response.status().as_u16();
        tracing::Span::current().record("status", status);
        tracing::info!("management request");
        response
    }
    .instrument(span)
    .await
}
