//! The OpenAI wire format: chat completions, legacy completions, embeddings,
//! the Responses API and the model list (paths under `/v1/`).

use std::borrow::Cow;

use http::{Method, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::body::MockBody;
use crate::respond::{Ctx, EmptyList, EmptyMap, ErrorStyle, Id, Null, error_response, unix_now};
use crate::sse::{Framing, StreamWriter};
use crate::tokens::{Words, count_words};
use crate::tools;

/// Dimensions of the mock embeddings.
const EMBEDDING_DIMS: usize = 8;

/// Answers an OpenAI route; `sub` is the path after `/v1/`. `None` when no
/// OpenAI route matches.
pub(crate) fn route(
    ctx: &Ctx<'_>,
    method: &Method,
    sub: &str,
    body: &[u8],
) -> Option<Response<MockBody>> {
    Some(match (method, sub) {
        (&Method::POST, "chat/completions") => chat(ctx, body),
        (&Method::POST, "completions") => completions(ctx, body),
        (&Method::POST, "embeddings") => embeddings(ctx, body),
        (&Method::POST, "responses") => responses(ctx, body),
        (&Method::GET, "models") => models(ctx),
        _ => return None,
    })
}

#[derive(Clone, Copy, Serialize)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

impl Usage {
    fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

// ---------------------------------------------------------------------------
// Chat completions

#[derive(Deserialize)]
struct ChatRequest<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    messages: Words,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    tools: Option<Value>,
}

#[derive(Serialize)]
struct ChatCompletion<'a> {
    id: Id,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [ChatChoice<'a>; 1],
    usage: Usage,
}

#[derive(Serialize)]
struct ChatChoice<'a> {
    index: u32,
    message: AssistantMessage<'a>,
    logprobs: Null,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct AssistantMessage<'a> {
    role: &'static str,
    content: &'a str,
    refusal: Null,
}

#[derive(Clone, Copy, Serialize)]
struct ChatChunk<'a> {
    id: Id,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [ChunkChoice<'a>],
    usage: Option<Usage>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Null,
    finish_reason: Option<&'static str>,
}

impl<'a> ChunkChoice<'a> {
    fn new(delta: Delta<'a>, finish_reason: Option<&'static str>) -> Self {
        Self {
            index: 0,
            delta,
            logprobs: Null,
            finish_reason,
        }
    }
}

#[derive(Default, Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

fn chat(ctx: &Ctx<'_>, body: &[u8]) -> Response<MockBody> {
    let req: ChatRequest<'_> = match ctx.parse(ErrorStyle::OpenAi, body) {
        Ok(req) => req,
        Err(response) => return *response,
    };
    let model = req.model.as_deref().unwrap_or_default();
    if let Some(name) = tools::first_tool(req.tools.as_ref()) {
        let stream = req.stream == Some(true);
        let usage = include_usage(req.stream_options.as_ref());
        return tools::openai_chat(&name, model, req.messages.0, stream, usage).respond(ctx);
    }
    let usage = Usage::new(req.messages.0, ctx.reply.tokens());
    if req.stream != Some(true) {
        return ctx.json(
            StatusCode::OK,
            &ChatCompletion {
                id: Id::new("chatcmpl-"),
                object: "chat.completion",
                created: unix_now(),
                model,
                choices: [ChatChoice {
                    index: 0,
                    message: AssistantMessage {
                        role: "assistant",
                        content: ctx.reply.text(),
                        refusal: Null,
                    },
                    logprobs: Null,
                    finish_reason: "stop",
                }],
                usage,
            },
        );
    }

    let base = ChatChunk {
        id: Id::new("chatcmpl-"),
        object: "chat.completion.chunk",
        created: unix_now(),
        model,
        choices: &[],
        usage: None,
    };
    let mut w = StreamWriter::new(Framing::Sse, ctx.reply.tokens() as usize + 4);
    let first = Delta {
        role: Some("assistant"),
        content: Some(""),
    };
    w.data(&ChatChunk {
        choices: &[ChunkChoice::new(first, None)],
        ..base
    });
    for piece in ctx.reply.pieces() {
        let delta = Delta {
            role: None,
            content: Some(piece),
        };
        w.data(&ChatChunk {
            choices: &[ChunkChoice::new(delta, None)],
            ..base
        });
    }
    w.data(&ChatChunk {
        choices: &[ChunkChoice::new(Delta::default(), Some("stop"))],
        ..base
    });
    if include_usage(req.stream_options.as_ref()) {
        w.data(&ChatChunk {
            usage: Some(usage),
            ..base
        });
    }
    w.done();
    ctx.stream(w)
}

fn include_usage(options: Option<&StreamOptions>) -> bool {
    options.and_then(|o| o.include_usage).unwrap_or(false)
}

// ---------------------------------------------------------------------------
// Legacy completions

#[derive(Deserialize)]
struct CompletionRequest<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    prompt: Words,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
}

#[derive(Clone, Copy, Serialize)]
struct TextCompletion<'a> {
    id: Id,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [TextChoice<'a>],
    usage: Option<Usage>,
}

#[derive(Serialize)]
struct TextChoice<'a> {
    text: &'a str,
    index: u32,
    logprobs: Null,
    finish_reason: Option<&'static str>,
}

impl<'a> TextChoice<'a> {
    fn new(text: &'a str, finish_reason: Option<&'static str>) -> Self {
        Self {
            text,
            index: 0,
            logprobs: Null,
            finish_reason,
        }
    }
}

fn completions(ctx: &Ctx<'_>, body: &[u8]) -> Response<MockBody> {
    let req: CompletionRequest<'_> = match ctx.parse(ErrorStyle::OpenAi, body) {
        Ok(req) => req,
        Err(response) => return *response,
    };
    let usage = Usage::new(req.prompt.0, ctx.reply.tokens());
    let base = TextCompletion {
        id: Id::new("cmpl-"),
        object: "text_completion",
        created: unix_now(),
        model: req.model.as_deref().unwrap_or_default(),
        choices: &[],
        usage: None,
    };
    if req.stream != Some(true) {
        return ctx.json(
            StatusCode::OK,
            &TextCompletion {
                choices: &[TextChoice::new(ctx.reply.text(), Some("stop"))],
                usage: Some(usage),
                ..base
            },
        );
    }

    let mut w = StreamWriter::new(Framing::Sse, ctx.reply.tokens() as usize + 3);
    for piece in ctx.reply.pieces() {
        w.data(&TextCompletion {
            choices: &[TextChoice::new(piece, None)],
            ..base
        });
    }
    w.data(&TextCompletion {
        choices: &[TextChoice::new("", Some("stop"))],
        ..base
    });
    if include_usage(req.stream_options.as_ref()) {
        w.data(&TextCompletion {
            usage: Some(usage),
            ..base
        });
    }
    w.done();
    ctx.stream(w)
}

// ---------------------------------------------------------------------------
// Embeddings

#[derive(Deserialize)]
struct EmbeddingsRequest<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    input: Value,
    #[serde(borrow)]
    encoding_format: Option<Cow<'a, str>>,
}

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<EmbeddingItem>,
    model: &'a str,
    usage: EmbeddingUsage,
}

#[derive(Serialize)]
struct EmbeddingItem {
    object: &'static str,
    index: usize,
    embedding: EmbeddingVector,
}

#[derive(Serialize)]
#[serde(untagged)]
enum EmbeddingVector {
    Float([f32; EMBEDDING_DIMS]),
    Base64(String),
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

/// One embedding input: a hash of its content and its token count.
struct EmbeddingInput {
    hash: u64,
    tokens: u64,
}

fn embeddings(ctx: &Ctx<'_>, body: &[u8]) -> Response<MockBody> {
    let req: EmbeddingsRequest<'_> = match ctx.parse(ErrorStyle::OpenAi, body) {
        Ok(req) => req,
        Err(response) => return *response,
    };
    let bad_request = |message: &str| {
        error_response(
            ErrorStyle::OpenAi,
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            message,
        )
    };
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => return bad_request("mock: encoding_format must be `float` or `base64`"),
    };
    let inputs = match embedding_inputs(&req.input) {
        Ok(inputs) => inputs,
        Err(message) => return bad_request(message),
    };
    let prompt_tokens = inputs.iter().map(|input| input.tokens).sum();
    let data = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let vector = embedding_vector(input.hash);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                EmbeddingVector::Base64(base64_encode(&bytes))
            } else {
                EmbeddingVector::Float(vector)
            };
            EmbeddingItem {
                object: "embedding",
                index,
                embedding,
            }
        })
        .collect();
    ctx.json(
        StatusCode::OK,
        &EmbeddingList {
            object: "list",
            data,
            model: req.model.as_deref().unwrap_or_default(),
            usage: EmbeddingUsage {
                prompt_tokens,
                total_tokens: prompt_tokens,
            },
        },
    )
}

/// Splits `input` (a string, an array of strings, a token array or an array
/// of token arrays) into the inputs that each get one embedding.
fn embedding_inputs(input: &Value) -> Result<Vec<EmbeddingInput>, &'static str> {
    const SHAPE: &str =
        "mock: input must be a string, an array of strings, or an array of token arrays";
    match input {
        Value::String(text) => Ok(vec![text_input(text)]),
        Value::Array(items) if items.is_empty() => Err("mock: input must not be empty"),
        Value::Array(items) if items.iter().all(Value::is_number) => Ok(vec![token_input(items)]),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(text) => Ok(text_input(text)),
                Value::Array(tokens) if tokens.iter().all(Value::is_number) => {
                    Ok(token_input(tokens))
                }
                _ => Err(SHAPE),
            })
            .collect(),
        _ => Err(SHAPE),
    }
}

fn text_input(text: &str) -> EmbeddingInput {
    EmbeddingInput {
        hash: fnv1a(text.as_bytes().iter().copied(), FNV_OFFSET),
        tokens: count_words(text),
    }
}

fn token_input(tokens: &[Value]) -> EmbeddingInput {
    let hash = tokens.iter().fold(FNV_OFFSET, |hash, token| {
        let bits = token.as_f64().map_or(0, f64::to_bits);
        fnv1a(bits.to_le_bytes(), hash)
    });
    EmbeddingInput {
        hash,
        tokens: tokens.len() as u64,
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv1a(bytes: impl IntoIterator<Item = u8>, seed: u64) -> u64 {
    bytes.into_iter().fold(seed, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A deterministic vector: each byte of `hash` mapped to `(2b - 255) / 256`,
/// which is exact in both `f32` and decimal notation.
fn embedding_vector(hash: u64) -> [f32; EMBEDDING_DIMS] {
    std::array::from_fn(|i| {
        let byte = (hash >> (8 * i)) as u8;
        (2.0 * f32::from(byte) - 255.0) / 256.0
    })
}

/// Standard base64 with padding.
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Responses API

#[derive(Deserialize)]
struct ResponsesRequest<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    input: Words,
    #[serde(default)]
    instructions: Words,
    stream: Option<bool>,
}

#[derive(Clone, Copy, Serialize)]
struct ResponseObject<'a> {
    id: Id,
    object: &'static str,
    created_at: u64,
    status: &'static str,
    error: Null,
    incomplete_details: Null,
    instructions: Null,
    max_output_tokens: Null,
    model: &'a str,
    output: &'a [OutputMessage<'a>],
    parallel_tool_calls: bool,
    previous_response_id: Null,
    reasoning: Reasoning,
    store: bool,
    temperature: f32,
    text: TextConfig,
    tool_choice: &'static str,
    tools: EmptyList,
    top_p: f32,
    truncation: &'static str,
    usage: Option<ResponsesUsage>,
    user: Null,
    metadata: EmptyMap,
}

#[derive(Clone, Copy, Serialize)]
struct Reasoning {
    effort: Null,
    summary: Null,
}

#[derive(Clone, Copy, Serialize)]
struct TextConfig {
    format: TypeOnly,
}

#[derive(Clone, Copy, Serialize)]
struct TypeOnly {
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Clone, Copy, Serialize)]
struct ResponsesUsage {
    input_tokens: u64,
    input_tokens_details: CachedTokens,
    output_tokens: u64,
    output_tokens_details: ReasoningTokens,
    total_tokens: u64,
}

#[derive(Clone, Copy, Serialize)]
struct CachedTokens {
    cached_tokens: u64,
}

#[derive(Clone, Copy, Serialize)]
struct ReasoningTokens {
    reasoning_tokens: u64,
}

#[derive(Clone, Copy, Serialize)]
struct OutputMessage<'a> {
    id: Id,
    #[serde(rename = "type")]
    kind: &'static str,
    status: &'static str,
    role: &'static str,
    content: &'a [OutputText<'a>],
}

#[derive(Clone, Copy, Serialize)]
struct OutputText<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
    annotations: EmptyList,
}

impl<'a> OutputText<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            kind: "output_text",
            text,
            annotations: EmptyList,
        }
    }
}

/// Responses API stream events; each is also sent as the SSE `event:` name.
#[derive(Serialize)]
#[serde(tag = "type")]
enum ResponseEvent<'a> {
    #[serde(rename = "response.created")]
    Created {
        sequence_number: u32,
        response: ResponseObject<'a>,
    },
    #[serde(rename = "response.in_progress")]
    InProgress {
        sequence_number: u32,
        response: ResponseObject<'a>,
    },
    #[serde(rename = "response.output_item.added")]
    ItemAdded {
        sequence_number: u32,
        output_index: u32,
        item: OutputMessage<'a>,
    },
    #[serde(rename = "response.content_part.added")]
    PartAdded {
        sequence_number: u32,
        item_id: Id,
        output_index: u32,
        content_index: u32,
        part: OutputText<'a>,
    },
    #[serde(rename = "response.output_text.delta")]
    TextDelta {
        sequence_number: u32,
        item_id: Id,
        output_index: u32,
        content_index: u32,
        delta: &'a str,
        logprobs: EmptyList,
    },
    #[serde(rename = "response.output_text.done")]
    TextDone {
        sequence_number: u32,
        item_id: Id,
        output_index: u32,
        content_index: u32,
        text: &'a str,
        logprobs: EmptyList,
    },
    #[serde(rename = "response.content_part.done")]
    PartDone {
        sequence_number: u32,
        item_id: Id,
        output_index: u32,
        content_index: u32,
        part: OutputText<'a>,
    },
    #[serde(rename = "response.output_item.done")]
    ItemDone {
        sequence_number: u32,
        output_index: u32,
        item: OutputMessage<'a>,
    },
    #[serde(rename = "response.completed")]
    Completed {
        sequence_number: u32,
        response: ResponseObject<'a>,
    },
}

/// Appends `event` to `w` under its own name.
fn emit(w: &mut StreamWriter, event: ResponseEvent<'_>) {
    w.event(Some(event.name()), &event);
}

impl ResponseEvent<'_> {
    fn name(&self) -> &'static str {
        match self {
            ResponseEvent::Created { .. } => "response.created",
            ResponseEvent::InProgress { .. } => "response.in_progress",
            ResponseEvent::ItemAdded { .. } => "response.output_item.added",
            ResponseEvent::PartAdded { .. } => "response.content_part.added",
            ResponseEvent::TextDelta { .. } => "response.output_text.delta",
            ResponseEvent::TextDone { .. } => "response.output_text.done",
            ResponseEvent::PartDone { .. } => "response.content_part.done",
            ResponseEvent::ItemDone { .. } => "response.output_item.done",
            ResponseEvent::Completed { .. } => "response.completed",
        }
    }
}

fn responses(ctx: &Ctx<'_>, body: &[u8]) -> Response<MockBody> {
    let req: ResponsesRequest<'_> = match ctx.parse(ErrorStyle::OpenAi, body) {
        Ok(req) => req,
        Err(response) => return *response,
    };
    let input_tokens = req.input.0 + req.instructions.0;
    let output_tokens = ctx.reply.tokens();
    let usage = ResponsesUsage {
        input_tokens,
        input_tokens_details: CachedTokens { cached_tokens: 0 },
        output_tokens,
        output_tokens_details: ReasoningTokens {
            reasoning_tokens: 0,
        },
        total_tokens: input_tokens + output_tokens,
    };
    let text = ctx.reply.text();
    let content = [OutputText::new(text)];
    let message = OutputMessage {
        id: Id::new("msg_"),
        kind: "message",
        status: "completed",
        role: "assistant",
        content: &content,
    };
    let output = [message];
    let completed = ResponseObject {
        id: Id::new("resp_"),
        object: "response",
        created_at: unix_now(),
        status: "completed",
        error: Null,
        incomplete_details: Null,
        instructions: Null,
        max_output_tokens: Null,
        model: req.model.as_deref().unwrap_or_default(),
        output: &output,
        parallel_tool_calls: true,
        previous_response_id: Null,
        reasoning: Reasoning {
            effort: Null,
            summary: Null,
        },
        store: false,
        temperature: 1.0,
        text: TextConfig {
            format: TypeOnly { kind: "text" },
        },
        tool_choice: "auto",
        tools: EmptyList,
        top_p: 1.0,
        truncation: "disabled",
        usage: Some(usage),
        user: Null,
        metadata: EmptyMap,
    };
    if req.stream != Some(true) {
        return ctx.json(StatusCode::OK, &completed);
    }

    let in_progress = ResponseObject {
        status: "in_progress",
        output: &[],
        usage: None,
        ..completed
    };
    let item_id = message.id;
    let empty_item = OutputMessage {
        status: "in_progress",
        content: &[],
        ..message
    };
    let mut w = StreamWriter::new(Framing::Sse, ctx.reply.tokens() as usize + 8);
    let mut next = 0;
    let mut seq = move || {
        next += 1;
        next - 1
    };
    emit(
        &mut w,
        ResponseEvent::Created {
            sequence_number: seq(),
            response: in_progress,
        },
    );
    emit(
        &mut w,
        ResponseEvent::InProgress {
            sequence_number: seq(),
            response: in_progress,
        },
    );
    emit(
        &mut w,
        ResponseEvent::ItemAdded {
            sequence_number: seq(),
            output_index: 0,
            item: empty_item,
        },
    );
    emit(
        &mut w,
        ResponseEvent::PartAdded {
            sequence_number: seq(),
            item_id,
            output_index: 0,
            content_index: 0,
            part: OutputText::new(""),
        },
    );
    for delta in ctx.reply.pieces() {
        emit(
            &mut w,
            ResponseEvent::TextDelta {
                sequence_number: seq(),
                item_id,
                output_index: 0,
                content_index: 0,
                delta,
                logprobs: EmptyList,
            },
        );
    }
    emit(
        &mut w,
        ResponseEvent::TextDone {
            sequence_number: seq(),
            item_id,
            output_index: 0,
            content_index: 0,
            text,
            logprobs: EmptyList,
        },
    );
    emit(
        &mut w,
        ResponseEvent::PartDone {
            sequence_number: seq(),
            item_id,
            output_index: 0,
            content_index: 0,
            part: content[0],
        },
    );
    emit(
        &mut w,
        ResponseEvent::ItemDone {
            sequence_number: seq(),
            output_index: 0,
            item: message,
        },
    );
    emit(
        &mut w,
        ResponseEvent::Completed {
            sequence_number: seq(),
            response: completed,
        },
    );
    ctx.stream(w)
}

// ---------------------------------------------------------------------------
// Models

#[derive(Serialize)]
struct ModelList {
    object: &'static str,
    data: [ModelEntry; 1],
}

#[derive(Serialize)]
struct ModelEntry {
    id: &'static str,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
}

fn models(ctx: &Ctx<'_>) -> Response<MockBody> {
    ctx.json(
        StatusCode::OK,
        &ModelList {
            object: "list",
            data: [ModelEntry {
                id: "gpt-4o-mini",
                object: "model",
                created: 1_721_172_741,
                owned_by: "mock",
            }],
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"M"), "TQ==");
        assert_eq!(base64_encode(b"Ma"), "TWE=");
        assert_eq!(base64_encode(b"Man"), "TWFu");
        assert_eq!(base64_encode(&1.0f32.to_le_bytes()), "AACAPw==");
    }

    #[test]
    fn embeddings_are_deterministic_and_bounded() {
        let a = embedding_vector(text_input("hello world").hash);
        assert_eq!(a, embedding_vector(text_input("hello world").hash));
        assert_ne!(a, embedding_vector(text_input("hello there").hash));
        assert!(a.iter().all(|v| (-1.0..1.0).contains(v)));
    }

    #[test]
    fn embedding_inputs_accept_every_openai_shape() {
        let count = |json: &str| {
            embedding_inputs(&serde_json::from_str(json).expect("json"))
                .map(|inputs| inputs.iter().map(|i| i.tokens).collect::<Vec<_>>())
        };
        assert_eq!(count(r#""a b c""#), Ok(vec![3]));
        assert_eq!(count(r#"["a b", "c"]"#), Ok(vec![2, 1]));
        assert_eq!(count("[1, 2, 3]"), Ok(vec![3]));
        assert_eq!(count("[[1, 2], [3]]"), Ok(vec![2, 1]));
        assert!(count("[]").is_err());
        assert!(count(r#"[{"x": 1}]"#).is_err());
    }
}
