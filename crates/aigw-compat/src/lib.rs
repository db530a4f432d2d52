//! The OpenAI-compatible ("unified") chat-completions endpoint, as pure translation.
//!
//! This crate owns the mapping between an OpenAI chat-completions request whose `model` is
//! `{provider}/{model}` and the native request of that provider (Anthropic Messages, Google AI
//! Studio `generateContent`, Workers AI `ai/run`, Cohere v2 chat; OpenAI-compatible providers get
//! the body back with only `model` rewritten), and the mapping of the native answer — a JSON
//! body, an SSE stream fed chunk by chunk, or an error body — back into OpenAI's
//! `chat.completion`, `chat.completion.chunk` events and error shape. It must not touch HTTP,
//! sockets, async runtimes, clocks or logging: the edge (`aigw-edge::compat`) sends the native
//! request, tees the native bytes into the log and feeds them here, so everything in this crate is
//! a function of its inputs and is tested alone.
//!
//! ```
//! use aigw_compat::{CompatRequest, Framing, ResponseMeta, ResponseTranslator, Target};
//!
//! let body = br#"{"model":"anthropic/claude-sonnet-4-20250514",
//!                 "messages":[{"role":"user","content":"hi"}]}"#;
//! let request = CompatRequest::parse(body)?;
//! let target = Target::for_provider(request.provider())?;
//! let native = aigw_compat::translate_request(target, &request)?;
//! assert_eq!(native.path, "/v1/messages");
//!
//! let meta = ResponseMeta::new("chatcmpl-1", 0, request.model());
//! let mut translator = ResponseTranslator::new(target, Framing::Json, &request, meta);
//! let mut out = translator.feed(br#"{"content":[{"type":"text","text":"Hello"}],"#).to_vec();
//! out.extend_from_slice(&translator.feed(br#""stop_reason":"end_turn","usage":{"input_tokens":1,"output_tokens":1}}"#));
//! out.extend_from_slice(&translator.finish());
//! let completion: serde_json::Value = serde_json::from_slice(&out).unwrap();
//! assert_eq!(completion["choices"][0]["message"]["content"], "Hello");
//! # Ok::<(), aigw_compat::CompatError>(())
//! ```

mod anthropic;
mod chat;
mod cohere;
mod error;
mod google;
mod openai;
mod response;
mod sse;
mod workers_ai;

pub use error::error_body;
pub use response::{Framing, ResponseMeta, ResponseTranslator};

use serde_json::{Map, Value};

/// Why a compat request cannot be translated; every message names the field, provider or feature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompatError {
    /// The body is not a JSON object.
    #[error("the request body is not a JSON object: {0}")]
    InvalidJson(String),
    /// A field is missing or has the wrong shape.
    #[error("`{field}` {reason}")]
    InvalidField {
        /// The field, as a path (`messages[2].tool_call_id`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The provider named by `model` cannot be reached through this endpoint.
    #[error(
        "provider `{0}` is not supported by the OpenAI-compatible endpoint (supported: {list})",
        list = SUPPORTED_PROVIDERS.join(", ")
    )]
    UnsupportedProvider(String),
    /// The request uses something the provider cannot be asked for.
    #[error("{feature} is not supported for provider `{provider}`")]
    UnsupportedFeature {
        /// The provider slug.
        provider: String,
        /// The feature, naming the field (`n > 1`, `logprobs`).
        feature: String,
    },
}

impl CompatError {
    /// Whether the request is well formed but asks for something unsupported (as opposed to
    /// being malformed).
    pub fn is_unsupported(&self) -> bool {
        matches!(
            self,
            Self::UnsupportedProvider(_) | Self::UnsupportedFeature { .. }
        )
    }

    pub(crate) fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Provider slugs the endpoint accepts, in the order error messages list them.
pub const SUPPORTED_PROVIDERS: &[&str] = &[
    "anthropic",
    "google-ai-studio",
    "workers-ai",
    "cohere",
    "openai",
    "groq",
    "mistral",
    "deepseek",
    "grok",
    "perplexity-ai",
    "openrouter",
    "cerebras",
];

/// The native API a compat request is sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Anthropic Messages (`/v1/messages`).
    Anthropic,
    /// Google AI Studio (`/v1beta/models/{model}:generateContent`).
    GoogleAiStudio,
    /// Cloudflare Workers AI (`/{model}` under the `ai/run` base).
    WorkersAi,
    /// Cohere v2 chat (`/v2/chat`).
    Cohere,
    /// An OpenAI-compatible chat-completions API at this path relative to the provider's base
    /// URL; the body passes through with `model` rewritten, the answer untouched.
    OpenAiCompatible(&'static str),
}

impl Target {
    /// The target for a provider slug of the catalogue.
    pub fn for_provider(slug: &str) -> Result<Self, CompatError> {
        Ok(match slug {
            "anthropic" => Self::Anthropic,
            "google-ai-studio" => Self::GoogleAiStudio,
            "workers-ai" => Self::WorkersAi,
            "cohere" => Self::Cohere,
            // Base URLs that already end in their version segment.
            "openai" | "groq" | "deepseek" | "perplexity-ai" => {
                Self::OpenAiCompatible("/chat/completions")
            }
            "mistral" | "grok" | "openrouter" | "cerebras" => {
                Self::OpenAiCompatible("/v1/chat/completions")
            }
            other => return Err(CompatError::UnsupportedProvider(other.to_owned())),
        })
    }

    /// Whether answers are translated (false: relayed as they come).
    pub fn translates(self) -> bool {
        !matches!(self, Self::OpenAiCompatible(_))
    }

    /// The header the client's bearer token (`Authorization: Bearer <key>`) must be moved to,
    /// or `None` when the provider takes `Authorization` itself.
    pub fn credential_header(self) -> Option<&'static str> {
        match self {
            Self::Anthropic => Some("x-api-key"),
            Self::GoogleAiStudio => Some("x-goog-api-key"),
            _ => None,
        }
    }

    /// Headers the provider requires, to be set when the client did not send them.
    pub fn default_headers(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::Anthropic => &[("anthropic-version", "2023-06-01")],
            _ => &[],
        }
    }
}

/// A parsed compat request: the provider and model named by `model`, and the OpenAI body.
#[derive(Debug, Clone, PartialEq)]
pub struct CompatRequest {
    provider: String,
    model: String,
    body: Map<String, Value>,
}

impl CompatRequest {
    /// Parses an OpenAI chat-completions body whose `model` is `{provider}/{model}` (split at the
    /// first `/`).
    pub fn parse(body: &[u8]) -> Result<Self, CompatError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| CompatError::InvalidJson(e.to_string()))?;
        let Value::Object(body) = value else {
            return Err(CompatError::InvalidJson(format!(
                "found {} instead",
                chat::kind(&value)
            )));
        };
        let model = match body.get("model") {
            Some(Value::String(model)) => model,
            Some(_) => return Err(CompatError::field("model", "must be a string")),
            None => return Err(CompatError::field("model", "is required")),
        };
        let (provider, model) = model
            .split_once('/')
            .filter(|(p, m)| !p.is_empty() && !m.is_empty())
            .ok_or_else(|| {
                CompatError::field(
                    "model",
                    format!("must be `{{provider}}/{{model}}`, got `{model}`"),
                )
            })?;
        let (provider, model) = (provider.to_owned(), model.to_owned());
        if !matches!(body.get("messages"), Some(Value::Array(_))) {
            return Err(CompatError::field("messages", "must be an array"));
        }
        Ok(Self {
            provider,
            model,
            body,
        })
    }

    /// The provider slug (before the first `/` of `model`).
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The provider's model name (after the first `/` of `model`).
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Whether the client asked for a stream (`"stream": true`).
    pub fn stream(&self) -> bool {
        self.body.get("stream").and_then(Value::as_bool) == Some(true)
    }

    /// Whether a streamed answer must end with a usage chunk (`stream_options.include_usage`).
    pub fn include_usage(&self) -> bool {
        self.body
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            == Some(true)
    }

    pub(crate) fn body(&self) -> &Map<String, Value> {
        &self.body
    }
}

/// A request ready for the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeRequest {
    /// The path relative to the provider's base URL, starting with `/`.
    pub path: String,
    /// The query string, if any (`alt=sse` for Google streams).
    pub query: Option<&'static str>,
    /// The JSON body.
    pub body: Vec<u8>,
    /// Whether the provider is asked to stream.
    pub stream: bool,
}

/// Translates `request` into `target`'s native request.
pub fn translate_request(
    target: Target,
    request: &CompatRequest,
) -> Result<NativeRequest, CompatError> {
    let stream = request.stream();
    let (path, query, body) = match target {
        Target::OpenAiCompatible(path) => {
            let mut body = request.body.clone();
            body.insert("model".into(), Value::String(request.model.clone()));
            (path.to_owned(), None, Value::Object(body))
        }
        Target::Anthropic => {
            let chat = chat::Chat::parse(request)?;
            ("/v1/messages".to_owned(), None, anthropic::request(&chat)?)
        }
        Target::GoogleAiStudio => {
            let chat = chat::Chat::parse(request)?;
            let model = chat::path_model(request)?;
            let (path, query) = if stream {
                (
                    format!("/v1beta/models/{model}:streamGenerateContent"),
                    Some("alt=sse"),
                )
            } else {
                (format!("/v1beta/models/{model}:generateContent"), None)
            };
            (path, query, google::request(&chat)?)
        }
        Target::WorkersAi => {
            let chat = chat::Chat::parse(request)?;
            let model = chat::path_model(request)?;
            (format!("/{model}"), None, workers_ai::request(&chat)?)
        }
        Target::Cohere => {
            let chat = chat::Chat::parse(request)?;
            ("/v2/chat".to_owned(), None, cohere::request(&chat)?)
        }
    };
    Ok(NativeRequest {
        path,
        query,
        body: to_vec(&body),
        stream,
    })
}

/// Serializes a JSON value (which cannot fail: keys are strings).
pub(crate) fn to_vec(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<CompatRequest, CompatError> {
        CompatRequest::parse(v.to_string().as_bytes())
    }

    #[test]
    fn model_is_split_at_the_first_slash() {
        let r =
            parse(json!({"model": "workers-ai/@cf/meta/llama-3.1-8b-instruct", "messages": []}))
                .unwrap();
        assert_eq!(r.provider(), "workers-ai");
        assert_eq!(r.model(), "@cf/meta/llama-3.1-8b-instruct");
        assert!(!r.stream());
    }

    #[test]
    fn malformed_requests_name_the_problem() {
        let err = CompatRequest::parse(b"{not json").unwrap_err();
        assert!(matches!(err, CompatError::InvalidJson(_)), "{err}");
        let err = CompatRequest::parse(b"[1]").unwrap_err();
        assert!(err.to_string().contains("an array"), "{err}");
        for (body, needle) in [
            (json!({"messages": []}), "`model` is required"),
            (
                json!({"model": 3, "messages": []}),
                "`model` must be a string",
            ),
            (json!({"model": "gpt-4o", "messages": []}), "`gpt-4o`"),
            (json!({"model": "/x", "messages": []}), "{provider}/{model}"),
            (json!({"model": "openai/x"}), "`messages` must be an array"),
        ] {
            let err = parse(body).unwrap_err();
            assert!(!err.is_unsupported());
            assert!(err.to_string().contains(needle), "{err}");
        }
    }

    #[test]
    fn unsupported_providers_are_named() {
        for slug in ["replicate", "huggingface", "nope", "azure-openai"] {
            let err = Target::for_provider(slug).unwrap_err();
            assert!(err.is_unsupported());
            assert!(err.to_string().contains(&format!("`{slug}`")), "{err}");
        }
    }

    #[test]
    fn openai_compatible_providers_pass_through_with_the_bare_model() {
        let r = parse(
            json!({"model": "groq/llama-3.1-8b-instant", "n": 2, "stream": true,
                             "messages": [{"role": "user", "content": "hi"}], "seed": 7}),
        )
        .unwrap();
        let target = Target::for_provider("groq").unwrap();
        assert!(!target.translates());
        let native = translate_request(target, &r).unwrap();
        assert_eq!(native.path, "/chat/completions");
        assert!(native.stream);
        let body: Value = serde_json::from_slice(&native.body).unwrap();
        assert_eq!(
            body,
            json!({"model": "llama-3.1-8b-instant", "n": 2, "stream": true, "seed": 7,
                   "messages": [{"role": "user", "content": "hi"}]})
        );
        let paths: Vec<(&str, &str)> = SUPPORTED_PROVIDERS
            .iter()
            .filter_map(|p| match Target::for_provider(p).unwrap() {
                Target::OpenAiCompatible(path) => Some((*p, path)),
                _ => None,
            })
            .collect();
        assert_eq!(
            paths,
            [
                ("openai", "/chat/completions"),
                ("groq", "/chat/completions"),
                ("mistral", "/v1/chat/completions"),
                ("deepseek", "/chat/completions"),
                ("grok", "/v1/chat/completions"),
                ("perplexity-ai", "/chat/completions"),
                ("openrouter", "/v1/chat/completions"),
                ("cerebras", "/v1/chat/completions"),
            ]
        );
    }

    #[test]
    fn credentials_move_to_the_provider_header() {
        assert_eq!(Target::Anthropic.credential_header(), Some("x-api-key"));
        assert_eq!(
            Target::GoogleAiStudio.credential_header(),
            Some("x-goog-api-key")
        );
        assert_eq!(Target::Cohere.credential_header(), None);
        assert_eq!(
            Target::Anthropic.default_headers(),
            [("anthropic-version", "2023-06-01")]
        );
    }
}
