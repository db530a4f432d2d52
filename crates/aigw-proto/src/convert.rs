//! Conversions between `aigw.shard.v1` messages and `aigw-types`.

use aigw_types::{LogRecord, Metadata, MetadataValue, RequestOutcome};
use ulid::Ulid;

use crate::shard;

/// A wire message that does not describe a valid value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// A log id is not 16 bytes.
    #[error("log id must be 16 bytes, got {0}")]
    BadId(usize),
    /// A metadata number is not a JSON number.
    #[error("metadata `{0}` has a number that is not valid JSON")]
    BadNumber(String),
    /// A metadata entry carries no value.
    #[error("metadata `{0}` has no value")]
    MissingValue(String),
    /// A numeric field is out of range.
    #[error("`{0}` is out of range")]
    OutOfRange(&'static str),
}

/// Decode a 16-byte log id.
pub fn id_from_bytes(bytes: &[u8]) -> Result<Ulid, ConvertError> {
    let array: [u8; 16] = bytes
        .try_into()
        .map_err(|_| ConvertError::BadId(bytes.len()))?;
    Ok(Ulid::from_bytes(array))
}

impl From<aigw_gateway_state::CacheEntry> for shard::CachedResponse {
    fn from(e: aigw_gateway_state::CacheEntry) -> Self {
        Self {
            status: u32::from(e.status),
            content_type: e.content_type,
            body: e.body,
            expires_at_ms: e.expires_at_ms,
        }
    }
}

impl TryFrom<shard::CachedResponse> for aigw_gateway_state::CacheEntry {
    type Error = ConvertError;

    fn try_from(r: shard::CachedResponse) -> Result<Self, ConvertError> {
        Ok(Self {
            status: u16::try_from(r.status).map_err(|_| ConvertError::OutOfRange("status"))?,
            content_type: r.content_type,
            body: r.body,
            expires_at_ms: r.expires_at_ms,
        })
    }
}

impl From<aigw_gateway_state::Lease> for shard::LeaseRateResponse {
    fn from(l: aigw_gateway_state::Lease) -> Self {
        Self {
            granted: l.granted,
            valid_until_ms: l.valid_until_ms,
            retry_after_ms: l.retry_after_ms,
            remaining: l.remaining,
        }
    }
}

impl From<shard::LeaseRateResponse> for aigw_gateway_state::Lease {
    fn from(r: shard::LeaseRateResponse) -> Self {
        Self {
            granted: r.granted,
            valid_until_ms: r.valid_until_ms,
            retry_after_ms: r.retry_after_ms,
            remaining: r.remaining,
        }
    }
}

impl shard::LeaseRateRequest {
    /// The rate policy this request leases under.
    pub fn policy(&self) -> aigw_gateway_state::RatePolicy {
        aigw_gateway_state::RatePolicy {
            limit: self.limit,
            interval_ms: self.interval_ms.max(1),
            technique: if self.sliding {
                aigw_gateway_state::Technique::Sliding
            } else {
                aigw_gateway_state::Technique::Fixed
            },
        }
    }
}

impl From<RequestOutcome> for shard::Outcome {
    fn from(o: RequestOutcome) -> Self {
        match o {
            RequestOutcome::Completed => Self::Completed,
            RequestOutcome::ClientAborted => Self::ClientAborted,
            RequestOutcome::UpstreamUnreachable => Self::UpstreamUnreachable,
            RequestOutcome::UpstreamTimeout => Self::UpstreamTimeout,
            RequestOutcome::UpstreamBodyError => Self::UpstreamBodyError,
        }
    }
}

impl From<shard::Outcome> for RequestOutcome {
    fn from(o: shard::Outcome) -> Self {
        match o {
            shard::Outcome::Completed => Self::Completed,
            shard::Outcome::ClientAborted => Self::ClientAborted,
            shard::Outcome::UpstreamUnreachable => Self::UpstreamUnreachable,
            shard::Outcome::UpstreamTimeout => Self::UpstreamTimeout,
            shard::Outcome::UpstreamBodyError => Self::UpstreamBodyError,
        }
    }
}

/// Encode metadata for the wire.
pub fn metadata_to_proto(metadata: &Metadata) -> Vec<shard::MetadataEntry> {
    use shard::metadata_entry::Value;
    metadata
        .iter()
        .map(|(key, value)| shard::MetadataEntry {
            key: key.clone(),
            value: Some(match value {
                MetadataValue::String(s) => Value::Text(s.clone()),
                MetadataValue::Number(n) => Value::Number(n.to_string()),
                MetadataValue::Bool(b) => Value::Flag(*b),
            }),
        })
        .collect()
}

/// Decode metadata from the wire.
pub fn metadata_from_proto(entries: Vec<shard::MetadataEntry>) -> Result<Metadata, ConvertError> {
    use shard::metadata_entry::Value;
    entries
        .into_iter()
        .map(|e| {
            let value = match e.value {
                Some(Value::Text(s)) => MetadataValue::String(s),
                Some(Value::Number(n)) => MetadataValue::Number(
                    serde_json::from_str(&n).map_err(|_| ConvertError::BadNumber(e.key.clone()))?,
                ),
                Some(Value::Flag(b)) => MetadataValue::Bool(b),
                None => return Err(ConvertError::MissingValue(e.key)),
            };
            Ok((e.key, value))
        })
        .collect()
}

impl From<&LogRecord> for shard::LogRecord {
    fn from(r: &LogRecord) -> Self {
        Self {
            id: r.id.to_bytes().to_vec().into(),
            created_at_ms: r.created_at_ms,
            account_id: r.account_id.clone(),
            gateway_id: r.gateway_id.clone(),
            provider: r.provider.clone(),
            model: r.model.clone(),
            model_type: r.model_type.clone(),
            path: r.path.clone(),
            request_type: r.request_type.clone(),
            method: r.method.clone(),
            status_code: u32::from(r.status_code),
            success: r.success,
            cached: r.cached,
            outcome: shard::Outcome::from(r.outcome).into(),
            error: r.error.clone(),
            duration_ms: r.duration_ms,
            time_to_first_byte_ms: r.time_to_first_byte_ms,
            streamed: r.streamed,
            tokens_in: r.tokens_in,
            tokens_out: r.tokens_out,
            cost: r.cost,
            custom_cost: r.custom_cost,
            metadata: metadata_to_proto(&r.metadata),
            event_id: r.event_id.clone(),
            step: r.step,
            attempt: r.attempt,
            feedback: r.feedback.map(i32::from),
            score: r.score,
            request_content_type: r.request_content_type.clone(),
            response_content_type: r.response_content_type.clone(),
            request_size: r.request_size,
            response_size: r.response_size,
            user_agent: r.user_agent.clone(),
            authentication: r.authentication,
            payload_collected: r.payload_collected,
            // Assigned by the shard when it stores the bodies.
            bodies: None,
            request_body_truncated: r.request_body_truncated,
            response_body_truncated: r.response_body_truncated,
        }
    }
}

impl TryFrom<shard::LogRecord> for LogRecord {
    type Error = ConvertError;

    fn try_from(p: shard::LogRecord) -> Result<Self, ConvertError> {
        let outcome = shard::Outcome::try_from(p.outcome).unwrap_or(shard::Outcome::Completed);
        Ok(Self {
            id: id_from_bytes(&p.id)?,
            created_at_ms: p.created_at_ms,
            account_id: p.account_id,
            gateway_id: p.gateway_id,
            provider: p.provider,
            model: p.model,
            model_type: p.model_type,
            path: p.path,
            request_type: p.request_type,
            method: p.method,
            status_code: u16::try_from(p.status_code)
                .map_err(|_| ConvertError::OutOfRange("status_code"))?,
            success: p.success,
            cached: p.cached,
            outcome: outcome.into(),
            error: p.error,
            duration_ms: p.duration_ms,
            time_to_first_byte_ms: p.time_to_first_byte_ms,
            streamed: p.streamed,
            tokens_in: p.tokens_in,
            tokens_out: p.tokens_out,
            cost: p.cost,
            custom_cost: p.custom_cost,
            metadata: metadata_from_proto(p.metadata)?,
            event_id: p.event_id,
            step: p.step,
            attempt: p.attempt.max(1),
            feedback: p
                .feedback
                .map(|f| i8::try_from(f).map_err(|_| ConvertError::OutOfRange("feedback")))
                .transpose()?,
            score: p.score,
            request_content_type: p.request_content_type,
            response_content_type: p.response_content_type,
            request_size: p.request_size,
            response_size: p.response_size,
            user_agent: p.user_agent,
            authentication: p.authentication,
            payload_collected: p.payload_collected,
            request_body_truncated: p.request_body_truncated,
            response_body_truncated: p.response_body_truncated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_record_round_trips() {
        let mut r = LogRecord::new(Ulid::new(), 1_700_000_000_123, "a", "g", "openai");
        r.metadata.insert(
            "big".into(),
            MetadataValue::Number(serde_json::Number::from(u64::MAX)),
        );
        r.metadata.insert(
            "f".into(),
            MetadataValue::Number(serde_json::Number::from_f64(1.5).unwrap()),
        );
        r.metadata
            .insert("s".into(), MetadataValue::String("x".into()));
        r.metadata.insert("b".into(), MetadataValue::Bool(false));
        r.feedback = Some(-1);
        r.outcome = RequestOutcome::UpstreamTimeout;
        r.tokens_in = Some(3);
        r.cost = Some(0.25);
        let wire = shard::LogRecord::from(&r);
        assert_eq!(LogRecord::try_from(wire).unwrap(), r);
    }

    #[test]
    fn bad_wire_values_are_rejected() {
        let mut wire = shard::LogRecord::from(&LogRecord::new(Ulid::new(), 0, "a", "g", "p"));
        wire.id = vec![1, 2, 3].into();
        assert_eq!(
            LogRecord::try_from(wire).unwrap_err(),
            ConvertError::BadId(3)
        );
    }
}
