use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use ulid::Ulid;

/// A scalar metadata value, as accepted in the `cf-aig-metadata` header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MetadataValue {
    /// A JSON boolean.
    Bool(bool),
    /// A JSON number.
    Number(serde_json::Number),
    /// A JSON string.
    String(String),
}

/// User-supplied key/value metadata attached to a log (at most five entries).
pub type Metadata = BTreeMap<String, MetadataValue>;

/// Milliseconds since the Unix epoch now: the clock every `*_ms` timestamp is read from.
pub fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// How the exchange with the upstream ended, seen from the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RequestOutcome {
    /// The upstream answered and the whole response reached the client.
    #[default]
    Completed,
    /// The client went away before the response was complete; the upstream request was cancelled.
    ClientAborted,
    /// The upstream could not be connected to, or the connection failed before a response.
    UpstreamUnreachable,
    /// The upstream did not answer (or stalled mid-stream) within the request timeout.
    UpstreamTimeout,
    /// The upstream response body failed part-way (connection reset, protocol error).
    UpstreamBodyError,
}

/// One proxied request, as stored in the log index (DESIGN.md §5).
///
/// Bodies are not part of the record: the edge ships them beside it, and the store keeps them in
/// object storage and records where in its own copy of the row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Unique, time-ordered id; also returned to the client in `cf-aig-log-id`.
    pub id: Ulid,
    /// Wall-clock start of the request, in milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// Account the gateway belongs to.
    pub account_id: String,
    /// Gateway the request went through.
    pub gateway_id: String,
    /// Provider slug (`openai`, `anthropic`, `custom-foo`, ...).
    pub provider: String,
    /// Model named by the request (or, failing that, by the response); empty when unknown.
    pub model: String,
    /// Kind of model call: `chat`, `completion`, `embedding`, `image`, `audio`, `other`.
    pub model_type: String,
    /// Upstream path (after the provider slug), without the query string.
    pub path: String,
    /// Which gateway API carried the request (`provider` for the native passthrough).
    pub request_type: String,
    /// HTTP method sent upstream.
    pub method: String,
    /// HTTP status returned to the client (upstream status, or the gateway's own on failure).
    pub status_code: u16,
    /// Whether the upstream answered with a 2xx and the response completed.
    pub success: bool,
    /// Whether the response came from the gateway cache.
    pub cached: bool,
    /// How the exchange ended.
    pub outcome: RequestOutcome,
    /// Explanation when the exchange did not complete normally.
    pub error: Option<String>,
    /// Time from receiving the request to the end of the response, in milliseconds.
    pub duration_ms: u64,
    /// Time from receiving the request to the upstream's response headers, in milliseconds.
    pub time_to_first_byte_ms: Option<u64>,
    /// Whether the response was a server-sent-event stream.
    pub streamed: bool,
    /// Input (prompt) tokens reported by the provider.
    pub tokens_in: Option<u64>,
    /// Output (completion) tokens reported by the provider.
    pub tokens_out: Option<u64>,
    /// Cost in USD, from the pricing table or `cf-aig-custom-cost`.
    pub cost: Option<f64>,
    /// Whether `cost` came from `cf-aig-custom-cost`.
    pub custom_cost: bool,
    /// User metadata from `cf-aig-metadata`.
    pub metadata: Metadata,
    /// Caller-chosen correlation id from `cf-aig-event-id`.
    pub event_id: Option<String>,
    /// Universal-endpoint step this request was (0 for direct requests).
    pub step: u32,
    /// Attempt of that step, from 1 (1 for direct requests).
    pub attempt: u32,
    /// Human feedback: -1, 0 or 1.
    pub feedback: Option<i8>,
    /// Evaluation score.
    pub score: Option<f64>,
    /// `Content-Type` of the request body.
    pub request_content_type: Option<String>,
    /// `Content-Type` of the response body.
    pub response_content_type: Option<String>,
    /// Request body size in bytes.
    pub request_size: u64,
    /// Response body size in bytes (as relayed, even if the stored copy was truncated).
    pub response_size: u64,
    /// `User-Agent` of the client.
    pub user_agent: Option<String>,
    /// Whether the request was authenticated to the gateway with `cf-aig-authorization`.
    pub authentication: bool,
    /// Whether request/response bodies were captured (`cf-aig-collect-log-payload`).
    pub payload_collected: bool,
    /// Whether the stored request body was cut at the configured maximum.
    pub request_body_truncated: bool,
    /// Whether the stored response body was cut at the configured maximum.
    pub response_body_truncated: bool,
}

impl LogRecord {
    /// A record for a request to `provider` through `account_id`/`gateway_id`, with every
    /// measured field zeroed; the edge fills the rest in as the exchange proceeds.
    pub fn new(
        id: Ulid,
        created_at_ms: i64,
        account_id: &str,
        gateway_id: &str,
        provider: &str,
    ) -> Self {
        Self {
            id,
            created_at_ms,
            account_id: account_id.to_owned(),
            gateway_id: gateway_id.to_owned(),
            provider: provider.to_owned(),
            model: String::new(),
            model_type: String::new(),
            path: String::new(),
            request_type: "provider".to_owned(),
            method: String::new(),
            status_code: 0,
            success: false,
            cached: false,
            outcome: RequestOutcome::Completed,
            error: None,
            duration_ms: 0,
            time_to_first_byte_ms: None,
            streamed: false,
            tokens_in: None,
            tokens_out: None,
            cost: None,
            custom_cost: false,
            metadata: Metadata::new(),
            event_id: None,
            step: 0,
            attempt: 1,
            feedback: None,
            score: None,
            request_content_type: None,
            response_content_type: None,
            request_size: 0,
            response_size: 0,
            user_agent: None,
            authentication: false,
            payload_collected: false,
            request_body_truncated: false,
            response_body_truncated: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_through_json() {
        let mut rec = LogRecord::new(Ulid::new(), 1_700_000_000_000, "acct", "default", "openai");
        rec.metadata
            .insert("user".into(), MetadataValue::String("u1".into()));
        rec.metadata
            .insert("n".into(), MetadataValue::Number(7.into()));
        rec.metadata.insert("vip".into(), MetadataValue::Bool(true));
        rec.tokens_in = Some(12);
        let json = serde_json::to_string(&rec).unwrap();
        let back: LogRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, rec);
    }
}
