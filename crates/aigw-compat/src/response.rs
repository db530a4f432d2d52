//! Translating a provider's answer as it arrives.

use bytes::Bytes;
use serde_json::Value;

use crate::openai::{Chunks, Completion, Event};
use crate::sse::{SseEvent, SseReader};
use crate::{CompatRequest, Target, anthropic, cohere, google, workers_ai};

/// How the provider framed its (2xx) answer, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One JSON document (buffered, translated at the end).
    Json,
    /// Server-sent events (translated event by event).
    Sse,
}

impl Framing {
    /// `Sse` for `text/event-stream`, `Json` for anything else.
    pub fn from_content_type(content_type: Option<&str>) -> Self {
        if content_type.is_some_and(|ct| ct.trim_start().starts_with("text/event-stream")) {
            Self::Sse
        } else {
            Self::Json
        }
    }
}

/// What the OpenAI answer says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseMeta {
    /// The completion id (`chatcmpl-…`); tool calls without a provider id get ids derived
    /// from it.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// The model reported to the client.
    pub model: String,
}

impl ResponseMeta {
    /// Metadata for one answer.
    pub fn new(id: impl Into<String>, created: u64, model: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            created,
            model: model.into(),
        }
    }
}

/// A provider answer decoder: native JSON or SSE events in, [`Event`]s out.
pub(crate) trait Decode: Send {
    /// A whole (non-streamed) answer; the caller adds [`Event::End`].
    fn json(&mut self, body: &Value, out: &mut Vec<Event>);
    /// One streamed event.
    fn sse(&mut self, event: &SseEvent, out: &mut Vec<Event>);
}

/// Maps a provider's tool-call keys (block or part indexes) to OpenAI tool-call indexes, and
/// names the calls the provider gives no id.
#[derive(Debug)]
pub(crate) struct ToolIndexes {
    keys: Vec<usize>,
    /// The completion id without its `chatcmpl-` prefix.
    id_base: String,
}

impl ToolIndexes {
    /// Tool calls of the answer described by `meta`.
    pub(crate) fn new(meta: &ResponseMeta) -> Self {
        let id_base = meta.id.strip_prefix("chatcmpl-").unwrap_or(&meta.id);
        Self {
            keys: Vec::new(),
            id_base: id_base.to_owned(),
        }
    }

    /// The id of the call at `index`: `given`, or `call_{completion id}_{index}`.
    pub(crate) fn id(&self, index: usize, given: Option<&str>) -> String {
        given.map_or_else(|| format!("call_{}_{index}", self.id_base), str::to_owned)
    }

    /// A new tool call under `key`; returns its OpenAI index.
    pub(crate) fn start(&mut self, key: usize) -> usize {
        self.keys.push(key);
        self.keys.len() - 1
    }

    /// The OpenAI index of the tool call under `key`.
    pub(crate) fn get(&self, key: usize) -> Option<usize> {
        self.keys.iter().rposition(|k| *k == key)
    }

    /// How many tool calls were started.
    pub(crate) fn count(&self) -> usize {
        self.keys.len()
    }
}

/// The event for a tool call given whole (`arguments` as a JSON value or text).
pub(crate) fn whole_tool_call(
    index: usize,
    id: String,
    name: String,
    arguments: Option<&Value>,
    out: &mut Vec<Event>,
) {
    let arguments = match arguments {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "{}".to_owned(),
        Some(v) => v.to_string(),
    };
    out.push(Event::ToolStart { index, id, name });
    out.push(Event::ToolArgs { index, arguments });
}

/// A string member, or `""`.
pub(crate) fn str_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or_default()
}

enum Output {
    Chunks(Chunks),
    Completion(Completion),
}

impl Output {
    fn event(&mut self, event: Event, out: &mut Vec<u8>) {
        match self {
            Self::Chunks(c) => c.event(event, out),
            Self::Completion(c) => c.event(event, out),
        }
    }
}

/// Translation state of a 2xx answer.
struct Success {
    decoder: Box<dyn Decode>,
    framing: Framing,
    sse: SseReader,
    buffer: Vec<u8>,
    output: Output,
}

enum State {
    /// OpenAI-compatible providers: bytes pass through.
    Passthrough,
    /// A 2xx answer.
    Success(Box<Success>),
    /// A non-2xx answer, buffered and rewritten in OpenAI's error shape.
    Error {
        target: Target,
        status: u16,
        buffer: Vec<u8>,
    },
}

/// Turns a provider's answer, fed as it arrives, into the OpenAI answer.
///
/// SSE input is translated event by event (an event split across chunks waits for its end);
/// JSON input and error bodies are buffered and translated by [`finish`](Self::finish).
pub struct ResponseTranslator {
    state: State,
    stream: bool,
}

impl std::fmt::Debug for ResponseTranslator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseTranslator")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl ResponseTranslator {
    /// A translator for a 2xx answer of `target` to `request`, framed as `framing`; the output
    /// is a stream of chunks when the client asked for one, else one completion.
    pub fn new(
        target: Target,
        framing: Framing,
        request: &CompatRequest,
        meta: ResponseMeta,
    ) -> Self {
        let stream = request.stream();
        let tools = ToolIndexes::new(&meta);
        let decoder: Box<dyn Decode> = match target {
            Target::Anthropic => Box::new(anthropic::Decoder { tools }),
            Target::GoogleAiStudio => Box::new(google::Decoder { tools }),
            Target::WorkersAi => Box::new(workers_ai::Decoder { tools }),
            Target::Cohere => Box::new(cohere::Decoder { tools }),
            Target::OpenAiCompatible(_) => {
                return Self {
                    state: State::Passthrough,
                    stream,
                };
            }
        };
        let output = if stream {
            Output::Chunks(Chunks::new(meta, request.include_usage()))
        } else {
            Output::Completion(Completion::new(meta))
        };
        Self {
            state: State::Success(Box::new(Success {
                decoder,
                framing,
                sse: SseReader::default(),
                buffer: Vec::new(),
                output,
            })),
            stream,
        }
    }

    /// A translator for a non-2xx answer of `target` with `status`: the body becomes
    /// `{"error": {"message", "type", "code"}}` (see [`crate::error_body`]).
    pub fn error(target: Target, status: u16) -> Self {
        let state = if target.translates() {
            State::Error {
                target,
                status,
                buffer: Vec::new(),
            }
        } else {
            State::Passthrough
        };
        Self {
            state,
            stream: false,
        }
    }

    /// The `Content-Type` of the translated answer (`None`: keep the provider's).
    pub fn content_type(&self) -> Option<&'static str> {
        match &self.state {
            State::Passthrough => None,
            State::Success(_) if self.stream => Some("text/event-stream"),
            _ => Some("application/json"),
        }
    }

    /// Takes in the next piece of the answer; returns what can be sent already (possibly
    /// nothing).
    pub fn feed(&mut self, chunk: &[u8]) -> Bytes {
        match &mut self.state {
            State::Passthrough => Bytes::copy_from_slice(chunk),
            State::Error { buffer, .. } => {
                buffer.extend_from_slice(chunk);
                Bytes::new()
            }
            State::Success(s) => s.feed(chunk),
        }
    }

    /// The answer ended: returns the rest of the translation.
    pub fn finish(&mut self) -> Bytes {
        match &mut self.state {
            State::Passthrough => Bytes::new(),
            State::Error {
                target,
                status,
                buffer,
            } => Bytes::from(crate::error_body(*target, *status, buffer)),
            State::Success(s) => s.finish(),
        }
    }
}

impl Success {
    fn feed(&mut self, chunk: &[u8]) -> Bytes {
        if self.framing == Framing::Json {
            self.buffer.extend_from_slice(chunk);
            return Bytes::new();
        }
        let mut events = Vec::new();
        for event in self.sse.feed(chunk) {
            self.decoder.sse(&event, &mut events);
        }
        self.write(events)
    }

    fn finish(&mut self) -> Bytes {
        let mut events = Vec::new();
        match self.framing {
            Framing::Json => match serde_json::from_slice::<Value>(&self.buffer) {
                Ok(body) => self.decoder.json(&body, &mut events),
                Err(e) => events.push(Event::Error {
                    message: format!("the provider's answer is not valid JSON: {e}"),
                    kind: "api_error".into(),
                }),
            },
            Framing::Sse => {
                for event in self.sse.finish() {
                    self.decoder.sse(&event, &mut events);
                }
            }
        }
        // Streams that end without their end marker (Google has none) end here.
        events.push(Event::End);
        self.write(events)
    }

    fn write(&mut self, events: Vec<Event>) -> Bytes {
        let mut out = Vec::new();
        for event in events {
            self.output.event(event, &mut out);
        }
        Bytes::from(out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A request for `provider/m`, streamed or not, with usage in the stream.
    pub(crate) fn request(provider: &str, stream: bool) -> CompatRequest {
        let body = serde_json::json!({"model": format!("{provider}/m"), "stream": stream,
            "stream_options": if stream { serde_json::json!({"include_usage": true}) } else { Value::Null },
            "messages": []});
        CompatRequest::parse(body.to_string().as_bytes()).unwrap()
    }

    /// Feeds `chunks` through a translator and returns all output.
    pub(crate) fn run(target: Target, framing: Framing, stream: bool, chunks: &[&[u8]]) -> String {
        let provider = match target {
            Target::Anthropic => "anthropic",
            Target::GoogleAiStudio => "google-ai-studio",
            Target::WorkersAi => "workers-ai",
            Target::Cohere => "cohere",
            Target::OpenAiCompatible(_) => "openai",
        };
        let mut t = ResponseTranslator::new(
            target,
            framing,
            &request(provider, stream),
            ResponseMeta::new("chatcmpl-T", 1, "m"),
        );
        let mut out = Vec::new();
        for c in chunks {
            out.extend_from_slice(&t.feed(c));
        }
        out.extend_from_slice(&t.finish());
        String::from_utf8(out).unwrap()
    }

    /// Feeds `input` whole, then split at every byte boundary, and checks the output is the
    /// same; returns it.
    pub(crate) fn run_split(target: Target, stream: bool, input: &str) -> String {
        let whole = run(target, Framing::Sse, stream, &[input.as_bytes()]);
        for at in 1..input.len() {
            let (a, b) = input.as_bytes().split_at(at);
            assert_eq!(
                run(target, Framing::Sse, stream, &[a, b]),
                whole,
                "split at {at}"
            );
        }
        whole
    }

    /// The `chat.completion` for a whole JSON `body` of `target`.
    pub(crate) fn completion(target: Target, body: &str) -> Value {
        serde_json::from_str(&run(target, Framing::Json, false, &[body.as_bytes()])).unwrap()
    }

    /// A tool call as [`summary`] lists it.
    pub(crate) fn call(id: &str, name: &str, arguments: &str) -> (String, String, String) {
        (id.to_owned(), name.to_owned(), arguments.to_owned())
    }

    /// Translates the native stream `input` (split anywhere) for a streaming client and checks
    /// the text, tool calls (id, name, arguments), finish reason and usage it adds up to.
    pub(crate) fn assert_stream(
        target: Target,
        input: &str,
        text: &str,
        calls: &[(&str, &str, &str)],
        finish: &str,
        usage: Value,
    ) {
        let got = summary(&chunks(&run_split(target, true, input)));
        let calls = calls.iter().map(|(i, n, a)| call(i, n, a)).collect();
        assert_eq!(got, (text.to_owned(), calls, finish.to_owned(), usage));
    }

    /// The JSON payloads of an OpenAI SSE stream (without `[DONE]`, asserted last).
    pub(crate) fn chunks(sse: &str) -> Vec<Value> {
        let datas: Vec<&str> = sse
            .split("\n\n")
            .filter(|s| !s.is_empty())
            .map(|s| s.strip_prefix("data: ").expect("data line"))
            .collect();
        assert_eq!(datas.last(), Some(&"[DONE]"), "{sse}");
        datas[..datas.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }

    /// Concatenated text deltas, tool calls (id, name, arguments), finish reason, usage.
    pub(crate) fn summary(
        chunks: &[Value],
    ) -> (String, Vec<(String, String, String)>, String, Value) {
        let mut text = String::new();
        let mut calls: Vec<(String, String, String)> = Vec::new();
        let mut finish = String::new();
        let mut usage = Value::Null;
        for c in chunks {
            if !c["usage"].is_null() {
                usage = c["usage"].clone();
            }
            let Some(choice) = c["choices"].get(0) else {
                continue;
            };
            if let Some(t) = choice["delta"]["content"].as_str() {
                text.push_str(t);
            }
            for call in choice["delta"]["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let i = call["index"].as_u64().unwrap() as usize;
                if let Some(id) = call["id"].as_str() {
                    assert_eq!(i, calls.len(), "tool calls start in order");
                    calls.push((
                        id.into(),
                        call["function"]["name"].as_str().unwrap().into(),
                        String::new(),
                    ));
                }
                calls[i]
                    .2
                    .push_str(call["function"]["arguments"].as_str().unwrap_or_default());
            }
            if let Some(f) = choice["finish_reason"].as_str() {
                finish = f.into();
            }
        }
        (text, calls, finish, usage)
    }

    #[test]
    fn passthrough_is_untouched() {
        let mut t = ResponseTranslator::new(
            Target::OpenAiCompatible("/chat/completions"),
            Framing::Sse,
            &request("groq", true),
            ResponseMeta::new("x", 0, "m"),
        );
        assert_eq!(t.content_type(), None);
        assert_eq!(&t.feed(b"data: x\n\n")[..], b"data: x\n\n");
        assert!(t.finish().is_empty());
    }

    #[test]
    fn a_json_answer_can_be_streamed_and_garbage_is_an_error() {
        let body = r#"{"id":"1","finish_reason":"COMPLETE","message":{"role":"assistant","content":[{"type":"text","text":"hi"}]}}"#;
        let out = run(Target::Cohere, Framing::Json, true, &[body.as_bytes()]);
        let (text, _, finish, _) = summary(&chunks(&out));
        assert_eq!((text.as_str(), finish.as_str()), ("hi", "stop"));

        let out = run(Target::Cohere, Framing::Json, false, &[b"<html>"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not valid JSON"),
            "{v}"
        );
    }

    #[test]
    fn content_types_follow_the_client() {
        let meta = ResponseMeta::new("x", 0, "m");
        let t = ResponseTranslator::new(
            Target::Anthropic,
            Framing::Json,
            &request("anthropic", true),
            meta.clone(),
        );
        assert_eq!(t.content_type(), Some("text/event-stream"));
        let t = ResponseTranslator::new(
            Target::Anthropic,
            Framing::Sse,
            &request("anthropic", false),
            meta,
        );
        assert_eq!(t.content_type(), Some("application/json"));
        assert_eq!(
            ResponseTranslator::error(Target::Cohere, 500).content_type(),
            Some("application/json")
        );
        assert_eq!(
            Framing::from_content_type(Some("text/event-stream; charset=utf-8")),
            Framing::Sse
        );
        assert_eq!(Framing::from_content_type(None), Framing::Json);
    }
}
