//! The Cloudflare v4 envelope: the one builder every JSON response of this crate goes through.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Serialize;

/// One entry of an envelope's `errors` (or `messages`) array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// Stable numeric code (see [`crate::ApiCode`]).
    pub code: u32,
    /// Human-readable text naming the offending value or parameter.
    pub message: String,
}

/// Pagination facts of a list response (`result_info`), as the SDK's `V4PagePagination*` reads
/// them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResultInfo {
    /// The 1-based page that was asked for.
    pub page: u32,
    /// The page size that was asked for.
    pub per_page: u32,
    /// Items on this page.
    pub count: u64,
    /// Items matching the query on all pages.
    pub total_count: u64,
    /// Where the next page starts, for listings that page by cursor (aigw's extension: the
    /// id of this page's last log, while the page is full).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// `{"success", "errors", "messages", "result", "result_info"?}`.
#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    success: bool,
    errors: &'a [Message],
    messages: &'a [Message],
    result: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result_info: Option<ResultInfo>,
}

/// Build a response: `success` is `true` exactly when `errors` is empty.
pub(crate) fn envelope<T: Serialize>(
    status: StatusCode,
    result: Option<T>,
    result_info: Option<ResultInfo>,
    errors: &[Message],
) -> Response {
    let body = Envelope {
        success: errors.is_empty(),
        errors,
        messages: &[],
        result,
        result_info,
    };
    (status, Json(body)).into_response()
}

/// `200 OK` with `result`.
pub(crate) fn ok<T: Serialize>(result: T) -> Response {
    envelope(StatusCode::OK, Some(result), None, &[])
}

/// `200 OK` with the `items` of page `page` (of `per_page`) and its `result_info`; `count` is
/// the number of items, `total_count` the matches on all pages.
pub(crate) fn page<T: Serialize>(
    items: Vec<T>,
    page: u32,
    per_page: u32,
    total_count: u64,
) -> Response {
    page_with_cursor(items, page, per_page, total_count, None)
}

/// [`page`] with the cursor of the next page.
pub(crate) fn page_with_cursor<T: Serialize>(
    items: Vec<T>,
    page: u32,
    per_page: u32,
    total_count: u64,
    cursor: Option<String>,
) -> Response {
    let info = ResultInfo {
        page,
        per_page,
        count: items.len() as u64,
        total_count,
        cursor,
    };
    envelope(StatusCode::OK, Some(items), Some(info), &[])
}
