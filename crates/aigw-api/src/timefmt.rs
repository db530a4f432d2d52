//! Epoch milliseconds ↔ RFC 3339, the only time representation on the wire.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::ApiError;

/// Render `ms` since the epoch as RFC 3339 in UTC (`2024-05-01T12:00:00.123Z`).
pub(crate) fn format_ms(ms: i64) -> Result<String, ApiError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .ok_or_else(|| ApiError::Internal(format!("timestamp {ms} ms is out of range")))
}

/// Parse RFC 3339 (any offset) or a bare `YYYY-MM-DD` (midnight UTC) into epoch milliseconds.
pub(crate) fn parse_ms(text: &str) -> Result<i64, String> {
    let full;
    let text = if text.len() == 10 && text.as_bytes().get(4) == Some(&b'-') {
        full = format!("{text}T00:00:00Z");
        &full
    } else {
        text
    };
    let t = OffsetDateTime::parse(text, &Rfc3339).map_err(|e| {
        format!("`{text}` is not an RFC 3339 date-time (like 2024-05-01T12:00:00Z): {e}")
    })?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| format!("`{text}` is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_milliseconds() {
        let ms = 1_714_564_800_123;
        let text = format_ms(ms).unwrap();
        assert_eq!(text, "2024-05-01T12:00:00.123Z");
        assert_eq!(parse_ms(&text).unwrap(), ms);
    }

    #[test]
    fn accepts_offsets_and_dates() {
        assert_eq!(
            parse_ms("2024-05-01T14:00:00+02:00").unwrap(),
            1_714_564_800_000
        );
        assert_eq!(parse_ms("2024-05-01").unwrap(), 1_714_521_600_000);
        assert!(parse_ms("yesterday").is_err());
        assert!(parse_ms("2024-13-01").is_err());
    }
}
