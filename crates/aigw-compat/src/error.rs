//! Provider error bodies in OpenAI's error shape.

use serde_json::{Value, json};

use crate::Target;

/// Longest provider text quoted in a message when the body is not JSON.
const MAX_QUOTED: usize = 1000;

/// The OpenAI `error.type` for an HTTP status.
fn type_for(status: u16) -> &'static str {
    match status {
        400 | 413 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        _ => "api_error",
    }
}

/// Rewrites a provider's non-2xx body as `{"error": {"message", "type", "param", "code"}}`, the
/// shape the OpenAI SDKs read: the message and type come from the provider's own error shape
/// (Anthropic `error.{type,message}`, Google `error.{status,message,code}`, Workers AI and the
/// gateway's own `errors[0].{message,code}`, Cohere `message`); a body of another shape is
/// quoted as the message.
pub fn error_body(target: Target, status: u16, body: &[u8]) -> Vec<u8> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let (mut message, mut kind, mut code) = (None, None, Value::Null);
    if let Some(v) = &parsed {
        if let Some(error) = v.get("error").filter(|e| e.is_object()) {
            message = error
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_owned);
            kind = error
                .get("type")
                .or_else(|| error.get("status"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            code = error.get("code").cloned().unwrap_or(Value::Null);
        } else if let Some(first) = v.get("errors").and_then(|e| e.get(0)) {
            message = first
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_owned);
            code = first.get("code").cloned().unwrap_or(Value::Null);
        } else if let Some(m) = v.get("message").and_then(Value::as_str) {
            message = Some(m.to_owned());
        } else if let Some(m) = v.get("error").and_then(Value::as_str) {
            message = Some(m.to_owned());
        }
    }
    let message = message.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        let provider = match target {
            Target::Anthropic => "anthropic",
            Target::GoogleAiStudio => "google-ai-studio",
            Target::WorkersAi => "workers-ai",
            Target::Cohere => "cohere",
            Target::OpenAiCompatible(_) => "the provider",
        };
        if text.is_empty() {
            format!("{provider} answered with status {status}")
        } else {
            let cut: String = text.chars().take(MAX_QUOTED).collect();
            format!("{provider} answered with status {status}: {cut}")
        }
    });
    let kind = kind.unwrap_or_else(|| type_for(status).to_owned());
    crate::to_vec(
        &json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(target: Target, status: u16, body: &str) -> Value {
        serde_json::from_slice(&error_body(target, status, body.as_bytes())).unwrap()
    }

    #[test]
    fn each_provider_shape_becomes_an_openai_error() {
        let e = error(
            Target::Anthropic,
            429,
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
        );
        assert_eq!(e["error"]["message"], "slow down");
        assert_eq!(e["error"]["type"], "rate_limit_error");

        let e = error(
            Target::GoogleAiStudio,
            400,
            r#"{"error":{"code":400,"message":"API key not valid","status":"INVALID_ARGUMENT"}}"#,
        );
        assert_eq!(
            (e["error"]["message"].as_str(), e["error"]["type"].as_str()),
            (Some("API key not valid"), Some("INVALID_ARGUMENT"))
        );
        assert_eq!(e["error"]["code"], 400);

        let e = error(
            Target::WorkersAi,
            401,
            r#"{"result":null,"success":false,"errors":[{"code":10000,"message":"Authentication error"}],"messages":[]}"#,
        );
        assert_eq!(e["error"]["message"], "Authentication error");
        assert_eq!(e["error"]["type"], "authentication_error");
        assert_eq!(e["error"]["code"], 10000);

        let e = error(
            Target::Cohere,
            400,
            r#"{"id":"x","message":"invalid request: model not found"}"#,
        );
        assert_eq!(e["error"]["message"], "invalid request: model not found");
        assert_eq!(e["error"]["type"], "invalid_request_error");
    }

    #[test]
    fn other_bodies_are_quoted() {
        let e = error(Target::Cohere, 502, "<html>bad gateway</html>");
        assert_eq!(
            e["error"]["message"],
            "cohere answered with status 502: <html>bad gateway</html>"
        );
        assert_eq!(e["error"]["type"], "api_error");
        let e = error(Target::Anthropic, 503, "");
        assert_eq!(e["error"]["message"], "anthropic answered with status 503");
    }
}
