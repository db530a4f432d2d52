//! The `cf-aig-*` request headers: parsed once, never forwarded upstream.

use std::time::Duration;

use aigw_providers::CustomCost;
use aigw_types::{Metadata, MetadataValue};
use http::{HeaderMap, HeaderValue};

use crate::error::EdgeError;
use crate::universal::{Backoff, check_attempts, check_delay};

/// Prefix of gateway control headers; they are consumed by the edge.
pub const CONTROL_PREFIX: &str = "cf-aig-";

/// Most entries allowed in `cf-aig-metadata`.
pub const MAX_METADATA_ENTRIES: usize = 5;
/// Longest `cf-aig-event-id` accepted.
pub const MAX_EVENT_ID_LEN: usize = 256;
/// Longest `cf-aig-request-timeout` accepted (one hour).
pub const MAX_REQUEST_TIMEOUT_MS: u64 = 3_600_000;
/// Shortest `cf-aig-cache-ttl` accepted (one minute).
pub const MIN_CACHE_TTL_SECS: u64 = 60;
/// Longest `cf-aig-cache-ttl` accepted (one month: 30 days).
pub const MAX_CACHE_TTL_SECS: u64 = 30 * 24 * 3600;
/// Longest `cf-aig-cache-key` accepted.
pub const MAX_CACHE_KEY_LEN: usize = 1024;

/// What the client asked of the gateway for this request.
#[derive(Debug, Clone, PartialEq)]
pub struct Directives {
    /// `cf-aig-metadata`.
    pub metadata: Metadata,
    /// `cf-aig-collect-log` (None: gateway default).
    pub collect_log: Option<bool>,
    /// `cf-aig-collect-log-payload` (default true).
    pub collect_payload: bool,
    /// `cf-aig-event-id`.
    pub event_id: Option<String>,
    /// `cf-aig-custom-cost`.
    pub custom_cost: Option<CustomCost>,
    /// `cf-aig-request-timeout`.
    pub request_timeout: Option<Duration>,
    /// Whether `cf-aig-authorization` was present.
    pub has_authorization: bool,
    /// `cf-aig-max-attempts` (Universal Endpoint).
    pub max_attempts: Option<u32>,
    /// `cf-aig-retry-delay` (Universal Endpoint).
    pub retry_delay: Option<Duration>,
    /// `cf-aig-backoff` (Universal Endpoint).
    pub backoff: Option<Backoff>,
    /// `cf-aig-cache-ttl`: caches the response for this long (opts the request in).
    pub cache_ttl: Option<Duration>,
    /// `cf-aig-skip-cache`: neither served from nor stored in the cache.
    pub skip_cache: bool,
    /// `cf-aig-cache-key`: the cache key instead of one derived from the request (opts the
    /// request in).
    pub cache_key: Option<String>,
}

impl Directives {
    /// Parse every control header, failing on the first unusable one.
    pub fn parse(headers: &HeaderMap) -> Result<Self, EdgeError> {
        let headers = &ControlHeaders::of(headers);
        Ok(Self {
            metadata: match text(headers, "cf-aig-metadata")? {
                Some(raw) => parse_metadata(raw)?,
                None => Metadata::new(),
            },
            collect_log: text(headers, "cf-aig-collect-log")?
                .map(|v| parse_bool("cf-aig-collect-log", v))
                .transpose()?,
            collect_payload: text(headers, "cf-aig-collect-log-payload")?
                .map(|v| parse_bool("cf-aig-collect-log-payload", v))
                .transpose()?
                .unwrap_or(true),
            event_id: text(headers, "cf-aig-event-id")?
                .map(parse_event_id)
                .transpose()?,
            custom_cost: text(headers, "cf-aig-custom-cost")?
                .map(|v| {
                    CustomCost::parse(v).map_err(|e| EdgeError::InvalidHeader {
                        header: "cf-aig-custom-cost",
                        reason: e.0,
                    })
                })
                .transpose()?,
            request_timeout: text(headers, "cf-aig-request-timeout")?
                .map(parse_timeout)
                .transpose()?,
            has_authorization: headers.get("cf-aig-authorization").is_some(),
            max_attempts: checked(headers, "cf-aig-max-attempts", check_attempts)?,
            retry_delay: checked(headers, "cf-aig-retry-delay", check_delay)?,
            backoff: text(headers, "cf-aig-backoff")?
                .map(|v| {
                    Backoff::parse(v).ok_or_else(|| EdgeError::InvalidHeader {
                        header: "cf-aig-backoff",
                        reason: "must be constant, linear or exponential".to_owned(),
                    })
                })
                .transpose()?,
            cache_ttl: checked(headers, "cf-aig-cache-ttl", |secs| {
                if (MIN_CACHE_TTL_SECS..=MAX_CACHE_TTL_SECS).contains(&secs) {
                    Ok(Duration::from_secs(secs))
                } else {
                    Err(format!(
                        "expected seconds between {MIN_CACHE_TTL_SECS} and {MAX_CACHE_TTL_SECS}, got {secs}"
                    ))
                }
            })?,
            skip_cache: text(headers, "cf-aig-skip-cache")?
                .map(|v| parse_bool("cf-aig-skip-cache", v))
                .transpose()?
                .unwrap_or(false),
            cache_key: text(headers, "cf-aig-cache-key")?
                .map(parse_cache_key)
                .transpose()?,
        })
    }
}

fn parse_cache_key(value: &str) -> Result<String, EdgeError> {
    if value.is_empty() || value.len() > MAX_CACHE_KEY_LEN {
        return Err(EdgeError::InvalidHeader {
            header: "cf-aig-cache-key",
            reason: format!("must be 1 to {MAX_CACHE_KEY_LEN} characters"),
        });
    }
    Ok(value.to_owned())
}

/// A request's `cf-aig-*` headers, found in one pass over its header map. Most requests carry
/// none or a few, and looking each of the directives up by name cost more than the pass: every
/// `HeaderMap::get` by string validates and hashes the name.
struct ControlHeaders<'h>(Vec<(&'h str, &'h HeaderValue)>);

impl<'h> ControlHeaders<'h> {
    fn of(headers: &'h HeaderMap) -> Self {
        Self(
            headers
                .iter()
                .filter(|(name, _)| name.as_str().starts_with(CONTROL_PREFIX))
                .map(|(name, value)| (name.as_str(), value))
                .collect(),
        )
    }

    /// The first value of `name`, as `HeaderMap::get` gives it.
    fn get(&self, name: &str) -> Option<&'h HeaderValue> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }
}

/// A whole-number header, parsed and checked by `check` (whose message names the bound).
fn checked<T>(
    headers: &ControlHeaders<'_>,
    name: &'static str,
    check: impl Fn(u64) -> Result<T, String>,
) -> Result<Option<T>, EdgeError> {
    text(headers, name)?
        .map(|v| {
            v.parse()
                .map_err(|_| "must be a whole number".to_owned())
                .and_then(&check)
                .map_err(|reason| EdgeError::InvalidHeader {
                    header: name,
                    reason,
                })
        })
        .transpose()
}

fn text<'h>(
    headers: &ControlHeaders<'h>,
    name: &'static str,
) -> Result<Option<&'h str>, EdgeError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map(str::trim)
                .map_err(|_| EdgeError::InvalidHeader {
                    header: name,
                    reason: "value is not visible ASCII".to_owned(),
                })
        })
        .transpose()
}

fn parse_bool(header: &'static str, value: &str) -> Result<bool, EdgeError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(EdgeError::InvalidHeader {
            header,
            reason: format!("expected true or false, got `{value}`"),
        }),
    }
}

fn parse_event_id(value: &str) -> Result<String, EdgeError> {
    let reason = if value.is_empty() {
        "must not be empty".to_owned()
    } else if value.len() > MAX_EVENT_ID_LEN {
        format!("longer than {MAX_EVENT_ID_LEN} characters")
    } else {
        return Ok(value.to_owned());
    };
    Err(EdgeError::InvalidHeader {
        header: "cf-aig-event-id",
        reason,
    })
}

fn parse_timeout(value: &str) -> Result<Duration, EdgeError> {
    match value.parse::<u64>() {
        Ok(ms) if (1..=MAX_REQUEST_TIMEOUT_MS).contains(&ms) => Ok(Duration::from_millis(ms)),
        _ => Err(EdgeError::InvalidHeader {
            header: "cf-aig-request-timeout",
            reason: format!(
                "expected milliseconds between 1 and {MAX_REQUEST_TIMEOUT_MS}, got `{value}`"
            ),
        }),
    }
}

fn parse_metadata(raw: &str) -> Result<Metadata, EdgeError> {
    let value: serde_json::Value = serde_json::from_str(raw)
        .map_err(|e| EdgeError::InvalidMetadata(format!("not valid JSON ({e})")))?;
    let serde_json::Value::Object(map) = value else {
        return Err(EdgeError::InvalidMetadata(
            "must be a JSON object".to_owned(),
        ));
    };
    if map.len() > MAX_METADATA_ENTRIES {
        return Err(EdgeError::InvalidMetadata(format!(
            "has {} entries; at most {MAX_METADATA_ENTRIES} are allowed",
            map.len()
        )));
    }
    map.into_iter()
        .map(|(key, value)| {
            let scalar = match value {
                serde_json::Value::String(s) => MetadataValue::String(s),
                serde_json::Value::Number(n) => MetadataValue::Number(n),
                serde_json::Value::Bool(b) => MetadataValue::Bool(b),
                other => {
                    let kind = match other {
                        serde_json::Value::Null => "null",
                        serde_json::Value::Array(_) => "an array",
                        _ => "an object",
                    };
                    return Err(EdgeError::InvalidMetadata(format!(
                        "value of `{key}` is {kind}; only strings, numbers and booleans are allowed"
                    )));
                }
            };
            Ok((key, scalar))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn directives_are_read_among_other_headers_first_value_first() {
        let mut h = headers(&[
            ("authorization", "Bearer sk"),
            ("content-type", "application/json"),
            ("cf-aig-authorization", "Bearer gw"),
        ]);
        h.append("cf-aig-collect-log", HeaderValue::from_static("false"));
        h.append("cf-aig-collect-log", HeaderValue::from_static("true"));
        let d = Directives::parse(&h).unwrap();
        assert_eq!(d.collect_log, Some(false));
        assert!(d.has_authorization);
        assert!(d.collect_payload);

        let none = Directives::parse(&headers(&[("authorization", "Bearer sk")])).unwrap();
        assert_eq!(none.collect_log, None);
        assert!(!none.has_authorization);
        assert!(none.metadata.is_empty());
    }

    #[test]
    fn defaults_when_absent() {
        let d = Directives::parse(&HeaderMap::new()).unwrap();
        assert!(d.metadata.is_empty());
        assert_eq!(d.collect_log, None);
        assert!(d.collect_payload);
        assert!(d.event_id.is_none() && d.custom_cost.is_none() && d.request_timeout.is_none());
    }

    #[test]
    fn parses_every_header() {
        let d = Directives::parse(&headers(&[
            ("cf-aig-metadata", r#"{"user":"u1","n":3,"vip":true}"#),
            ("cf-aig-collect-log", "false"),
            ("cf-aig-collect-log-payload", "FALSE"),
            ("cf-aig-event-id", "evt-1"),
            ("cf-aig-request-timeout", "2500"),
            ("cf-aig-authorization", "Bearer x"),
            ("cf-aig-cache-ttl", "3600"),
            ("cf-aig-skip-cache", "true"),
            ("cf-aig-cache-key", "my-key"),
        ]))
        .unwrap();
        assert_eq!(d.cache_ttl, Some(Duration::from_secs(3600)));
        assert!(d.skip_cache);
        assert_eq!(d.cache_key.as_deref(), Some("my-key"));
        assert_eq!(d.metadata.len(), 3);
        assert_eq!(d.metadata["n"], MetadataValue::Number(3.into()));
        assert_eq!(d.collect_log, Some(false));
        assert!(!d.collect_payload);
        assert_eq!(d.event_id.as_deref(), Some("evt-1"));
        assert_eq!(d.request_timeout, Some(Duration::from_millis(2500)));
        assert!(d.has_authorization);
    }

    #[test]
    fn rejects_bad_values_naming_the_problem() {
        for (name, value, needle) in [
            ("cf-aig-metadata", "nope", "not valid JSON"),
            ("cf-aig-metadata", "[1]", "must be a JSON object"),
            (
                "cf-aig-metadata",
                r#"{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6}"#,
                "6 entries",
            ),
            ("cf-aig-metadata", r#"{"a":{"b":1}}"#, "`a` is an object"),
            ("cf-aig-metadata", r#"{"a":null}"#, "`a` is null"),
            (
                "cf-aig-collect-log",
                "maybe",
                "cf-aig-collect-log header: expected true or false, got `maybe`",
            ),
            ("cf-aig-request-timeout", "0", "between 1 and"),
            ("cf-aig-request-timeout", "soon", "got `soon`"),
            ("cf-aig-event-id", &"x".repeat(300), "longer than 256"),
            ("cf-aig-cache-ttl", "59", "between 60 and 2592000, got 59"),
            ("cf-aig-cache-ttl", "2592001", "between 60 and 2592000"),
            ("cf-aig-cache-ttl", "soon", "whole number"),
            ("cf-aig-skip-cache", "yes", "expected true or false"),
            (
                "cf-aig-cache-key",
                &"k".repeat(1025),
                "1 to 1024 characters",
            ),
        ] {
            let err = Directives::parse(&headers(&[(name, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{name}={value}: {err}");
        }
    }
}
