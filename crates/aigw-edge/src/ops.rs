//! Operational endpoints: liveness, readiness, metrics, and the JSON 404.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use serde_json::json;

use crate::EdgeState;
use crate::error::EdgeError;

/// `GET /healthz`: the process is up.
pub async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// `GET /readyz`: the edge can accept traffic (its log worker is running).
pub async fn readyz(State(edge): State<Arc<EdgeState>>) -> Response {
    if edge.shipper.is_running() {
        Json(json!({"status": "ready"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "reason": "log shipper stopped"})),
        )
            .into_response()
    }
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics(State(edge): State<Arc<EdgeState>>) -> Response {
    let body = edge
        .metrics
        .render(edge.shipper.depth(), edge.shipper.capacity());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// Any unmatched route.
pub async fn not_found(req: Request) -> Response {
    EdgeError::RouteNotFound {
        method: req.method().to_string(),
        path: req.uri().path().to_owned(),
    }
    .into_response()
}
