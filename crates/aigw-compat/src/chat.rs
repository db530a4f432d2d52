//! The OpenAI request, read once into a provider-neutral shape that each provider module maps
//! to its own wire format. Everything the translated providers cannot take is refused here or
//! there with an error naming the field.

use serde_json::{Map, Value};

use crate::{CompatError, CompatRequest};

/// A content part of a message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Part {
    /// Text.
    Text(String),
    /// An image by URL (`https://…` or `data:{mime};base64,{data}`).
    Image(String),
}

/// A tool call made by the assistant earlier in the conversation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ToolCall {
    pub(crate) id: String,
    pub(crate) name: String,
    /// The arguments as the JSON text OpenAI carries.
    pub(crate) arguments: String,
}

impl ToolCall {
    /// The arguments as a JSON object (`{}` when they are empty or not an object).
    pub(crate) fn arguments_object(&self) -> Value {
        match serde_json::from_str::<Value>(&self.arguments) {
            Ok(v @ Value::Object(_)) => v,
            _ => Value::Object(Map::new()),
        }
    }
}

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Message {
    /// A `system` or `developer` message's text.
    System(String),
    /// A user turn.
    User(Vec<Part>),
    /// An assistant turn: its text and the tools it called.
    Assistant {
        text: String,
        tool_calls: Vec<ToolCall>,
    },
    /// A tool's result, for the call `call_id` of function `name`.
    Tool {
        call_id: String,
        name: String,
        content: String,
    },
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Tool {
    pub(crate) name: String,
    pub(crate) description: Option<String>,
    /// JSON Schema of the arguments.
    pub(crate) parameters: Option<Value>,
}

/// `tool_choice`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ToolChoice {
    Auto,
    None,
    Required,
    Function(String),
}

/// `response_format`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ResponseFormat {
    /// `json_object`.
    JsonObject,
    /// `json_schema`: the schema.
    JsonSchema(Value),
}

/// A chat-completions request in provider-neutral form.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Chat {
    pub(crate) provider: String,
    pub(crate) model: String,
    pub(crate) messages: Vec<Message>,
    pub(crate) tools: Vec<Tool>,
    pub(crate) tool_choice: Option<ToolChoice>,
    pub(crate) parallel_tool_calls: Option<bool>,
    pub(crate) max_tokens: Option<u64>,
    pub(crate) temperature: Option<f64>,
    pub(crate) top_p: Option<f64>,
    pub(crate) stop: Vec<String>,
    pub(crate) seed: Option<i64>,
    pub(crate) frequency_penalty: Option<f64>,
    pub(crate) presence_penalty: Option<f64>,
    pub(crate) response_format: Option<ResponseFormat>,
    pub(crate) user: Option<String>,
    pub(crate) stream: bool,
}

/// A JSON value's kind, for messages.
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The model of a request whose model goes into the URL path: refused if it could leave its
/// path segment(s) (`?`, `#`, `%`, whitespace, `.`/`..` or empty segments).
pub(crate) fn path_model(request: &CompatRequest) -> Result<&str, CompatError> {
    let model = request.model();
    let bad_char = model
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#' | '%' | '\\'));
    let bad_segment = model
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..");
    if bad_char || bad_segment {
        return Err(CompatError::field(
            "model",
            format!("`{model}` is not a valid model name for a URL path"),
        ));
    }
    Ok(model)
}

impl Chat {
    /// Reads and checks the request for a translated provider.
    pub(crate) fn parse(request: &CompatRequest) -> Result<Self, CompatError> {
        let body = request.body();
        let provider = request.provider();
        let unsupported = |feature: &str| CompatError::UnsupportedFeature {
            provider: provider.to_owned(),
            feature: feature.to_owned(),
        };
        if let Some(n) = body.get("n").filter(|v| !v.is_null())
            && n.as_u64().is_none_or(|n| n > 1)
        {
            return Err(unsupported("`n` other than 1"));
        }
        if body.get("logprobs").and_then(Value::as_bool) == Some(true)
            || body.get("top_logprobs").is_some_and(|v| !v.is_null())
        {
            return Err(unsupported("`logprobs`"));
        }
        if body
            .get("modalities")
            .and_then(Value::as_array)
            .is_some_and(|m| m.iter().any(|m| m != "text"))
            || body.get("audio").is_some_and(|v| !v.is_null())
        {
            return Err(unsupported("audio output (`modalities`, `audio`)"));
        }
        let messages = messages(body, provider)?;
        let (tools, tool_choice) = tools(body)?;
        Ok(Self {
            provider: provider.to_owned(),
            model: request.model().to_owned(),
            messages,
            tools,
            tool_choice,
            parallel_tool_calls: opt(body, "parallel_tool_calls", Value::as_bool, "a boolean")?,
            max_tokens: match opt(body, "max_completion_tokens", Value::as_u64, "an integer")? {
                Some(n) => Some(n),
                None => opt(body, "max_tokens", Value::as_u64, "an integer")?,
            },
            temperature: opt(body, "temperature", Value::as_f64, "a number")?,
            top_p: opt(body, "top_p", Value::as_f64, "a number")?,
            stop: stop(body)?,
            seed: opt(body, "seed", Value::as_i64, "an integer")?,
            frequency_penalty: opt(body, "frequency_penalty", Value::as_f64, "a number")?,
            presence_penalty: opt(body, "presence_penalty", Value::as_f64, "a number")?,
            response_format: response_format(body)?,
            user: opt(body, "user", |v| v.as_str().map(str::to_owned), "a string")?,
            stream: request.stream(),
        })
    }

    /// The error for a feature `self.provider` cannot take.
    pub(crate) fn unsupported(&self, feature: impl Into<String>) -> CompatError {
        CompatError::UnsupportedFeature {
            provider: self.provider.clone(),
            feature: feature.into(),
        }
    }

    /// Writes the sampling parameters the client set into `into`, under the provider's `names`
    /// for, in order: max tokens, temperature, top p, seed, frequency penalty, presence
    /// penalty, stop sequences (an empty name: the provider has no such parameter).
    pub(crate) fn sampling(&self, names: [&str; 7], into: &mut Map<String, Value>) {
        let values = [
            self.max_tokens.map(Value::from),
            self.temperature.map(Value::from),
            self.top_p.map(Value::from),
            self.seed.map(Value::from),
            self.frequency_penalty.map(Value::from),
            self.presence_penalty.map(Value::from),
            (!self.stop.is_empty()).then(|| Value::from(self.stop.clone())),
        ];
        for (name, value) in names.into_iter().zip(values) {
            if let Some(value) = value.filter(|_| !name.is_empty()) {
                into.insert(name.to_owned(), value);
            }
        }
    }

    /// The system and developer messages' text, joined by blank lines.
    pub(crate) fn system_text(&self) -> Option<String> {
        let texts: Vec<&str> = self
            .messages
            .iter()
            .filter_map(|m| match m {
                Message::System(text) => Some(text.as_str()),
                _ => None,
            })
            .collect();
        (!texts.is_empty()).then(|| texts.join("\n\n"))
    }
}

/// An optional scalar field (`null` counts as absent).
fn opt<T>(
    body: &Map<String, Value>,
    field: &str,
    read: impl Fn(&Value) -> Option<T>,
    expected: &str,
) -> Result<Option<T>, CompatError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => read(v)
            .map(Some)
            .ok_or_else(|| CompatError::field(field, format!("must be {expected}"))),
    }
}

fn stop(body: &Map<String, Value>) -> Result<Vec<String>, CompatError> {
    match body.get("stop") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|s| s.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| CompatError::field("stop", "must be a string or an array of strings")),
        Some(_) => Err(CompatError::field(
            "stop",
            "must be a string or an array of strings",
        )),
    }
}

fn response_format(body: &Map<String, Value>) -> Result<Option<ResponseFormat>, CompatError> {
    let Some(format) = body.get("response_format").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(ResponseFormat::JsonObject)),
        Some("json_schema") => format
            .get("json_schema")
            .and_then(|s| s.get("schema"))
            .cloned()
            .map(|schema| Some(ResponseFormat::JsonSchema(schema)))
            .ok_or_else(|| CompatError::field("response_format.json_schema.schema", "is required")),
        _ => Err(CompatError::field(
            "response_format.type",
            "must be text, json_object or json_schema",
        )),
    }
}

/// A string field of an object, required.
fn text_field<'a>(obj: &'a Value, field: &str, at: &str) -> Result<&'a str, CompatError> {
    obj.get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| CompatError::field(format!("{at}.{field}"), "must be a string"))
}

fn messages(body: &Map<String, Value>, provider: &str) -> Result<Vec<Message>, CompatError> {
    let raw = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| CompatError::field("messages", "must be an array"))?;
    let mut out: Vec<Message> = Vec::with_capacity(raw.len());
    for (i, m) in raw.iter().enumerate() {
        let at = format!("messages[{i}]");
        let role = text_field(m, "role", &at)?;
        let content = m.get("content").unwrap_or(&Value::Null);
        let message = match role {
            "system" | "developer" => Message::System(joined_text(content, &at, provider)?),
            "user" => Message::User(parts(content, &at, provider)?),
            "assistant" => Message::Assistant {
                text: joined_text(content, &at, provider)?,
                tool_calls: tool_calls(m, &at)?,
            },
            "tool" => {
                let call_id = text_field(m, "tool_call_id", &at)?.to_owned();
                let name = out
                    .iter()
                    .rev()
                    .find_map(|earlier| match earlier {
                        Message::Assistant { tool_calls, .. } => tool_calls
                            .iter()
                            .find(|c| c.id == call_id)
                            .map(|c| c.name.clone()),
                        _ => None,
                    })
                    .ok_or_else(|| {
                        CompatError::field(
                            format!("{at}.tool_call_id"),
                            format!(
                                "`{call_id}` answers no tool call of an earlier assistant message"
                            ),
                        )
                    })?;
                let content = joined_text(content, &at, provider)?;
                Message::Tool {
                    call_id,
                    name,
                    content,
                }
            }
            other => {
                return Err(CompatError::field(
                    format!("{at}.role"),
                    format!("`{other}` is not system, developer, user, assistant or tool"),
                ));
            }
        };
        out.push(message);
    }
    Ok(out)
}

/// Content as parts: a string is one text part; `null` is none.
fn parts(content: &Value, at: &str, provider: &str) -> Result<Vec<Part>, CompatError> {
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => Ok(vec![Part::Text(s.clone())]),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(j, part)| {
                let at = format!("{at}.content[{j}]");
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => Ok(Part::Text(text_field(part, "text", &at)?.to_owned())),
                    Some("image_url") => {
                        let url = part
                            .get("image_url")
                            .and_then(|i| i.get("url").or(Some(i)))
                            .and_then(Value::as_str)
                            .ok_or_else(|| {
                                CompatError::field(
                                    format!("{at}.image_url.url"),
                                    "must be a string",
                                )
                            })?;
                        Ok(Part::Image(url.to_owned()))
                    }
                    Some(other) => Err(CompatError::UnsupportedFeature {
                        provider: provider.to_owned(),
                        feature: format!("content part type `{other}` ({at})"),
                    }),
                    None => Err(CompatError::field(format!("{at}.type"), "must be a string")),
                }
            })
            .collect(),
        other => Err(CompatError::field(
            format!("{at}.content"),
            format!(
                "must be a string, an array of parts or null, not {}",
                kind(other)
            ),
        )),
    }
}

/// Content that may only hold text (system, assistant and tool messages), joined.
fn joined_text(content: &Value, at: &str, provider: &str) -> Result<String, CompatError> {
    let mut text = String::new();
    for part in parts(content, at, provider)? {
        match part {
            Part::Text(t) => text.push_str(&t),
            Part::Image(_) => {
                return Err(CompatError::UnsupportedFeature {
                    provider: provider.to_owned(),
                    feature: format!("an image in a non-user message ({at})"),
                });
            }
        }
    }
    Ok(text)
}

fn tool_calls(message: &Value, at: &str) -> Result<Vec<ToolCall>, CompatError> {
    let Some(calls) = message.get("tool_calls").filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let calls = calls
        .as_array()
        .ok_or_else(|| CompatError::field(format!("{at}.tool_calls"), "must be an array"))?;
    calls
        .iter()
        .enumerate()
        .map(|(k, call)| {
            let at = format!("{at}.tool_calls[{k}]");
            let function = call
                .get("function")
                .ok_or_else(|| CompatError::field(format!("{at}.function"), "is required"))?;
            let fat = format!("{at}.function");
            Ok(ToolCall {
                id: text_field(call, "id", &at)?.to_owned(),
                name: text_field(function, "name", &fat)?.to_owned(),
                arguments: match function.get("arguments") {
                    None | Some(Value::Null) => "{}".to_owned(),
                    Some(Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                },
            })
        })
        .collect()
}

fn tools(body: &Map<String, Value>) -> Result<(Vec<Tool>, Option<ToolChoice>), CompatError> {
    let tools = match body.get("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, tool)| {
                let at = format!("tools[{i}]");
                if tool.get("type").and_then(Value::as_str) != Some("function") {
                    return Err(CompatError::field(
                        format!("{at}.type"),
                        "must be `function`",
                    ));
                }
                let function = tool
                    .get("function")
                    .ok_or_else(|| CompatError::field(format!("{at}.function"), "is required"))?;
                let fat = format!("{at}.function");
                Ok(Tool {
                    name: text_field(function, "name", &fat)?.to_owned(),
                    description: function
                        .get("description")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    parameters: function.get("parameters").filter(|p| !p.is_null()).cloned(),
                })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(CompatError::field("tools", "must be an array")),
    };
    let choice = match body.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            _ => {
                return Err(CompatError::field(
                    "tool_choice",
                    "must be auto, none, required or a function",
                ));
            }
        }),
        Some(v) => Some(ToolChoice::Function(
            v.get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| CompatError::field("tool_choice.function.name", "is required"))?
                .to_owned(),
        )),
    };
    if let Some(ToolChoice::Function(name)) = &choice
        && !tools.iter().any(|t| &t.name == name)
    {
        return Err(CompatError::field(
            "tool_choice.function.name",
            format!("`{name}` is not one of `tools`"),
        ));
    }
    Ok((tools, choice))
}

/// Appends `items` to `turns` as a `{"role": role, key: items}` turn, merged into the previous
/// turn when it has the same role (nothing is appended for no items).
pub(crate) fn push_turn(turns: &mut Vec<Value>, role: &str, key: &str, items: Vec<Value>) {
    if items.is_empty() {
        return;
    }
    if let Some(existing) = turns
        .last_mut()
        .filter(|t| t["role"] == role)
        .and_then(|t| t[key].as_array_mut())
    {
        existing.extend(items);
        return;
    }
    let mut turn = Map::new();
    turn.insert("role".into(), Value::String(role.to_owned()));
    turn.insert(key.into(), Value::Array(items));
    turns.push(Value::Object(turn));
}

/// `data:{mime};base64,{data}` split into its media type and data.
pub(crate) fn data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let mime = meta.strip_suffix(";base64")?;
    Some((mime, data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn chat(body: Value) -> Result<Chat, CompatError> {
        Chat::parse(&CompatRequest::parse(body.to_string().as_bytes())?)
    }

    #[test]
    fn a_conversation_with_tools_is_read_whole() {
        let c = chat(json!({
            "model": "anthropic/claude", "max_completion_tokens": 50, "max_tokens": 10,
            "stop": "END", "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "tools": [{"type": "function", "function": {"name": "get_weather",
                       "parameters": {"type": "object"}}}],
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "weather?"},
                                             {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "sunny"}]}
            ]}))
        .unwrap();
        assert_eq!(c.max_tokens, Some(50), "max_completion_tokens wins");
        assert_eq!(c.stop, ["END"]);
        assert_eq!(
            c.tool_choice,
            Some(ToolChoice::Function("get_weather".into()))
        );
        assert_eq!(c.system_text().as_deref(), Some("be brief"));
        assert_eq!(
            c.messages[1],
            Message::User(vec![
                Part::Text("weather?".into()),
                Part::Image("data:image/png;base64,AAA".into())
            ])
        );
        assert_eq!(
            c.messages[3],
            Message::Tool {
                call_id: "call_1".into(),
                name: "get_weather".into(),
                content: "sunny".into()
            }
        );
    }

    #[test]
    fn unsupported_features_and_bad_fields_are_named() {
        let base = |extra: Value| {
            let mut body = json!({"model": "cohere/command-r", "messages": [{"role": "user", "content": "hi"}]});
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            chat(body).unwrap_err().to_string()
        };
        assert!(
            base(json!({"n": 2}))
                .contains("`n` other than 1 is not supported for provider `cohere`")
        );
        assert!(base(json!({"logprobs": true})).contains("`logprobs`"));
        assert!(base(json!({"temperature": "hot"})).contains("`temperature` must be a number"));
        assert!(base(json!({"stop": [1]})).contains("`stop`"));
        assert!(
            base(json!({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}))
                .contains("content part type `input_audio` (messages[0].content[0])")
        );
        assert!(
            base(json!({"messages": [{"role": "robot", "content": "x"}]}))
                .contains("messages[0].role")
        );
        assert!(
            base(json!({"messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]}))
                .contains("`nope` answers no tool call")
        );
        assert!(
            base(json!({"tool_choice": {"type": "function", "function": {"name": "x"}}}))
                .contains("`x` is not one of `tools`")
        );
        assert!(base(json!({"tools": [{"type": "retrieval"}]})).contains("tools[0].type"));
        assert!(chat(json!({"model": "cohere/c", "n": 1, "messages": []})).is_ok());
    }

    #[test]
    fn models_that_could_leave_the_path_are_refused() {
        for model in ["a b", "../x", "x/../../y", "x?y", "x#", "a//b", "%2e%2e"] {
            let r = CompatRequest::parse(
                json!({"model": format!("workers-ai/{model}"), "messages": []})
                    .to_string()
                    .as_bytes(),
            )
            .unwrap();
            assert!(path_model(&r).is_err(), "{model}");
        }
        let r = CompatRequest::parse(
            br#"{"model":"workers-ai/@cf/meta/llama-3.1-8b-instruct","messages":[]}"#,
        )
        .unwrap();
        assert_eq!(path_model(&r).unwrap(), "@cf/meta/llama-3.1-8b-instruct");
    }

    #[test]
    fn data_urls_split() {
        assert_eq!(
            data_url("data:image/png;base64,QUJD"),
            Some(("image/png", "QUJD"))
        );
        assert_eq!(data_url("https://x/y.png"), None);
        assert_eq!(data_url("data:text/plain,hi"), None);
    }
}
