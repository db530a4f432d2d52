//! Token usage and model extraction, per wire format.
//!
//! Everything here runs off the hot path, on bodies the edge has already captured. Bodies may be
//! truncated at their end (huge responses keep only a prefix) or be plain garbage: extraction never
//! panics and returns whatever the intact part of the body says.
//!
//! # How bodies are read
//!
//! A body whose first non-blank byte is `{` or `[` is read as JSON: one object, a JSON array of
//! objects (Gemini's non-SSE `streamGenerateContent`), or several whitespace-separated objects
//! (Cohere v1's newline-delimited stream). Anything else is read as server-sent events when the
//! response was `text/event-stream` (`streamed`) or starts like an event stream (`data:`,
//! `event:`, `id:`, `:`). Only the top-level fields that matter are decoded (everything else is
//! skipped without being built), and a value of an unexpected type reads as "absent" rather than
//! failing the whole body. When a body is cut short, the top-level fields that were complete before
//! the cut are kept.
//!
//! In an event stream, lines may end in `\n`, `\r\n` or `\r`; `data:` may or may not be followed by
//! a space; multi-line `data` is joined with `\n` as the SSE spec says. An event is only
//! JSON-decoded when a cheap substring search says it can carry what is still missing (a non-null
//! `"usage"` and the like, or `"model"` while no model is known yet), so the text chunks of a
//! long stream are skimmed, not parsed. When only the token counts are wanted
//! ([`extract_tokens`]: the request named the model), a JSON object with a top-level `usage`
//! member is read from that member on, skipping the choices' text before it.
//!
//! # Per wire format
//!
//! - **OpenAI-style** (OpenAI, Azure, Groq, Mistral, DeepSeek, OpenRouter, …, and Workers AI):
//!   `usage.prompt_tokens` / `usage.completion_tokens`, or the Responses API's
//!   `usage.input_tokens` / `usage.output_tokens`; the Responses API stream's
//!   `response.usage` / `response.model` (`response.completed`, also `response.incomplete`);
//!   Workers AI's `result.usage`; Groq's `x_groq.usage` when there is no top-level `usage`. The
//!   last non-null usage wins; the model is the first non-empty top-level `model` (or
//!   `response.model`). Embeddings report only `prompt_tokens`, so `tokens_out` is `None` for them.
//! - **Anthropic**: `usage.input_tokens + cache_creation_input_tokens + cache_read_input_tokens`
//!   and `usage.output_tokens`. In a stream, `message_start` carries `message.model` and the
//!   initial `message.usage`; each `message_delta` usage field that is present overrides the
//!   earlier value (they are cumulative), so the final `output_tokens` — and `input_tokens` when
//!   the delta repeats it — win.
//! - **Google AI Studio**: the last `usageMetadata`: `promptTokenCount` in,
//!   `candidatesTokenCount + thoughtsTokenCount` out (thinking tokens are billed as output);
//!   the model is the first `modelVersion`.
//! - **Cohere**: v2 `usage.tokens` falling back, field by field, to `usage.billed_units`
//!   (`message-end` events carry it in `delta.usage`); v1 `meta.billed_units` falling back to
//!   `meta.tokens` (the v1 stream's `stream-end` line carries it in `response.meta`). Cohere
//!   responses do not name the model.
//! - **Opaque**: nothing is extracted.
//!
//! For Anthropic, Google AI Studio and Cohere, paths of their OpenAI-compatible endpoints
//! (ending in `/chat/completions`, `/completions`, `/embeddings` or `/responses`) are read as
//! OpenAI-style.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::sync::LazyLock;

use memchr::memmem::{Finder, FinderRev};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::registry::WireFormat;

/// What a response body says about the tokens it consumed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt / input tokens.
    pub tokens_in: Option<u64>,
    /// Completion / output tokens.
    pub tokens_out: Option<u64>,
    /// Model named by the response, if any.
    pub model: Option<String>,
}

/// Extract usage from a complete (or truncated) response body.
///
/// `path` is the upstream path (query string optional); `streamed` says the response was
/// `text/event-stream`. See the [module docs](self) for what is read for each wire format.
pub fn extract_usage(wire: WireFormat, path: &str, body: &[u8], streamed: bool) -> Usage {
    extract(wire, path, body, streamed, Wanted::All)
}

/// [`extract_usage`] for a caller that needs only the token counts (the request named the
/// model): the response's model may be left out.
///
/// A JSON object with a top-level `usage` member — OpenAI's and Anthropic's answers, and those
/// of most OpenAI-compatible APIs, where it follows the text of every choice — is read from
/// that member on, without walking the members before it. Otherwise, and when that member
/// holds no token counts, this is [`extract_usage`].
pub fn extract_tokens(wire: WireFormat, path: &str, body: &[u8], streamed: bool) -> Usage {
    extract(wire, path, body, streamed, Wanted::Tokens)
}

/// What the caller of [`extract`] wants of a body.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wanted {
    /// Token counts and the model.
    All,
    /// Token counts only.
    Tokens,
}

fn extract(wire: WireFormat, path: &str, body: &[u8], streamed: bool, wanted: Wanted) -> Usage {
    match wire {
        WireFormat::Opaque => Usage::default(),
        WireFormat::OpenAi | WireFormat::WorkersAi => run::<OpenAiSink>(body, streamed, wanted),
        _ if openai_compatible_path(path) => run::<OpenAiSink>(body, streamed, wanted),
        WireFormat::Anthropic => run::<AnthropicSink>(body, streamed, wanted),
        WireFormat::GoogleAiStudio => run::<GoogleSink>(body, streamed, wanted),
        WireFormat::Cohere => run::<CohereSink>(body, streamed, wanted),
    }
}

/// Usage from the *end* of a response whose stored copy was cut at the size limit (usage comes
/// last in most formats). An event-stream tail is read from its first complete line; a JSON
/// tail is searched for the last `usage` / `usageMetadata` / `meta` object, which is then read
/// as if it were the whole body.
pub fn extract_usage_tail(wire: WireFormat, path: &str, tail: &[u8], streamed: bool) -> Usage {
    if streamed {
        let start = memchr::memchr(b'\n', tail).map_or(tail.len(), |i| i + 1);
        return extract_usage(wire, path, &tail[start..], true);
    }
    for key in ["usage", "usageMetadata", "meta"] {
        let quoted = format!("\"{key}\"");
        let Some(pos) = memchr::memmem::rfind(tail, quoted.as_bytes()) else {
            continue;
        };
        let after = &tail[pos + quoted.len()..];
        let Some(start) = after
            .iter()
            .position(|b| !b.is_ascii_whitespace() && *b != b':')
        else {
            continue;
        };
        let mut values =
            serde_json::Deserializer::from_slice(&after[start..]).into_iter::<serde_json::Value>();
        let Some(Ok(value)) = values.next() else {
            continue;
        };
        let mut body = serde_json::Map::new();
        if wire == WireFormat::WorkersAi {
            body.insert(
                "result".to_owned(),
                serde_json::json!({ key: value.clone() }),
            );
        }
        body.insert(key.to_owned(), value);
        let usage = extract_usage(
            wire,
            path,
            serde_json::Value::Object(body).to_string().as_bytes(),
            false,
        );
        if usage.tokens_in.is_some() || usage.tokens_out.is_some() {
            return usage;
        }
    }
    Usage::default()
}

/// The model a request asks for, from its JSON body or its path.
///
/// - OpenAI-style, Anthropic, Cohere: the top-level string `model` of a JSON object body (bodies
///   that do not start with `{` are not parsed). Azure OpenAI names a deployment in the path, not
///   a model; its body rarely has `model`, so this is usually `None` there.
/// - Workers AI: the path is the model (`/@cf/meta/llama-3.1-8b-instruct` →
///   `@cf/meta/llama-3.1-8b-instruct`), except on the OpenAI-compatible paths (`/v1/chat/completions`
///   and the like), where the body's `model` is used.
/// - Google AI Studio: the path segment after `models/` (or `tunedModels/`), up to `:`
///   (`/v1beta/models/gemini-1.5-flash:generateContent` → `gemini-1.5-flash`), else the body's
///   `model` (OpenAI-compatible endpoint).
/// - Opaque: `None`.
///
/// An empty model is `None`.
pub fn request_model(wire: WireFormat, path: &str, body: &[u8]) -> Option<String> {
    match wire {
        WireFormat::Opaque => None,
        WireFormat::WorkersAi => workers_ai_model(path)
            .map(str::to_owned)
            .or_else(|| body_model(body)),
        WireFormat::GoogleAiStudio => google_model(path)
            .map(str::to_owned)
            .or_else(|| body_model(body)),
        WireFormat::OpenAi | WireFormat::Anthropic | WireFormat::Cohere => body_model(body),
    }
}

/// Classify an upstream path as `chat`, `completion`, `embedding`, `image`, `audio` or `other`.
///
/// The query string and trailing slashes are ignored. Rules, first match wins:
/// 1. `chat`: the path ends in `/chat/completions`, `/messages`, `/chat` (Cohere), `/responses`,
///    `:generateContent` or `:streamGenerateContent`;
/// 2. `completion`: ends in `/completions` or `/complete` (Anthropic's legacy API);
/// 3. `embedding`: ends in `/embeddings`, `/embed`, `:embedContent` or `:batchEmbedContents`;
/// 4. `image`: has an `images` segment (`/images/generations`, `/images/edits`);
/// 5. `audio`: has an `audio` segment (`/audio/speech`, `/audio/transcriptions`);
/// 6. `other`: anything else — including Workers AI model paths (`/@cf/meta/llama-3.1-8b-instruct`),
///    which say nothing about the task, and sub-resources such as `/messages/count_tokens`.
pub fn model_type(path: &str) -> &'static str {
    let p = strip_query(path).trim_end_matches('/');
    let ends = |suffixes: &[&str]| suffixes.iter().any(|s| p.ends_with(s));
    if ends(&[
        "/chat/completions",
        "/messages",
        "/chat",
        "/responses",
        ":generateContent",
        ":streamGenerateContent",
    ]) {
        "chat"
    } else if ends(&["/completions", "/complete"]) {
        "completion"
    } else if ends(&[
        "/embeddings",
        "/embed",
        ":embedContent",
        ":batchEmbedContents",
    ]) {
        "embedding"
    } else if p.split('/').any(|s| s == "images") {
        "image"
    } else if p.split('/').any(|s| s == "audio") {
        "audio"
    } else {
        "other"
    }
}

// ---------------------------------------------------------------------------------------------
// Paths

fn strip_query(path: &str) -> &str {
    path.split_once('?').map_or(path, |(p, _)| p)
}

/// Paths of the OpenAI-compatible endpoints that providers with their own format also serve.
fn openai_compatible_path(path: &str) -> bool {
    let p = strip_query(path).trim_end_matches('/');
    [
        "/chat/completions",
        "/completions",
        "/embeddings",
        "/responses",
    ]
    .iter()
    .any(|s| p.ends_with(s))
}

fn workers_ai_model(path: &str) -> Option<&str> {
    if openai_compatible_path(path) {
        return None;
    }
    let model = strip_query(path).trim_matches('/');
    (!model.is_empty()).then_some(model)
}

fn google_model(path: &str) -> Option<&str> {
    let mut segments = strip_query(path).split('/');
    while let Some(segment) = segments.next() {
        if segment == "models" || segment == "tunedModels" {
            let name = segments.next()?.split(':').next()?;
            return (!name.is_empty()).then_some(name);
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Body dispatch

const BOM: &[u8] = b"\xEF\xBB\xBF";

fn without_bom(body: &[u8]) -> &[u8] {
    body.strip_prefix(BOM).unwrap_or(body)
}

fn first_non_blank(body: &[u8]) -> Option<u8> {
    body.iter().copied().find(|b| !b.is_ascii_whitespace())
}

fn looks_like_sse(body: &[u8]) -> bool {
    const FIELDS: [&[u8]; 5] = [b"data", b"event:", b"id:", b"retry:", b":"];
    let start = body.trim_ascii_start();
    FIELDS.iter().any(|p| start.starts_with(p))
}

fn run<S: UsageSink + Default>(body: &[u8], streamed: bool, wanted: Wanted) -> Usage {
    let body = without_bom(body);
    let first = first_non_blank(body);
    if wanted == Wanted::Tokens
        && first == Some(b'{')
        && let Some(usage) = top_level_usage::<S>(body)
    {
        return usage;
    }
    let mut sink = S::default();
    match first {
        Some(b'{' | b'[') => walk_all(body, &mut sink),
        Some(_) if streamed || looks_like_sse(body) => {
            for data in SseEvents::new(body) {
                if sink.wants(&data) {
                    walk_all(&data, &mut sink);
                }
            }
        }
        _ => {}
    }
    sink.finish()
}

/// The token counts of the JSON object `body`'s top-level `usage` member, read from that member
/// on: `{` and the body from the last `"usage"` key on must be one whole object, which they
/// are only when that key is a member of the object the body's final `}` closes. (A `"usage"`
/// inside a string has its quotes escaped, so it is not a key: no `{` or `,` comes before it.)
/// `None` when the body is not like that, or the member holds no token counts.
fn top_level_usage<S: UsageSink + Default>(body: &[u8]) -> Option<Usage> {
    let at = LAST_USAGE.rfind(body)?;
    if !matches!(body[..at].trim_ascii_end().last(), Some(b'{' | b',')) {
        return None;
    }
    let mut members = Vec::with_capacity(1 + body.len() - at);
    members.push(b'{');
    members.extend_from_slice(&body[at..]);
    let mut sink = S::default();
    let mut de = serde_json::Deserializer::from_slice(&members);
    Walk(&mut sink).deserialize(&mut de).ok()?;
    de.end().ok()?;
    let usage = sink.finish();
    (usage.tokens_in.is_some() || usage.tokens_out.is_some()).then_some(usage)
}

fn body_model(body: &[u8]) -> Option<String> {
    let body = without_bom(body);
    if first_non_blank(body) != Some(b'{') {
        return None;
    }
    match scan_model(body) {
        Scanned::Found(model) => Some(model.to_owned()),
        Scanned::Absent => None,
        Scanned::Unsure => walk_model(body),
    }
}

/// The request's model, read by the serde walk.
fn walk_model(body: &[u8]) -> Option<String> {
    let mut sink = ModelSink::default();
    let mut de = serde_json::Deserializer::from_slice(body);
    // An error is expected: the walk is cut short as soon as the model is found.
    let _ = Walk(&mut sink).deserialize(&mut de);
    sink.model
}

/// What [`scan_model`] made of a body.
#[derive(Debug, PartialEq, Eq)]
enum Scanned<'a> {
    /// The first top-level `model` member holding a non-empty string.
    Found(&'a str),
    /// A whole object without one.
    Absent,
    /// Anything the scan does not read (escapes in a key or in the model, a cut or malformed
    /// body): the serde walk decides.
    Unsure,
}

/// The request's model, found by skipping over the top-level members before it without
/// parsing them: the serde walk spent more on its early stop (an error with a message) and on
/// the members before `model` (the SDKs send `messages` first) than on finding it. On a
/// well-formed body it answers as the walk does; on a malformed one it may be more lenient.
fn scan_model(body: &[u8]) -> Scanned<'_> {
    let mut at = skip_blank(body, 0);
    if body.get(at) != Some(&b'{') {
        return Scanned::Unsure;
    }
    at = skip_blank(body, at + 1);
    if body.get(at) == Some(&b'}') {
        return Scanned::Absent;
    }
    loop {
        let Some((key, after_key)) = plain_string(body, at) else {
            return Scanned::Unsure;
        };
        at = skip_blank(body, after_key);
        if body.get(at) != Some(&b':') {
            return Scanned::Unsure;
        }
        at = skip_blank(body, at + 1);
        if key == b"model" && body.get(at) == Some(&b'"') {
            let Some((model, _)) = plain_string(body, at) else {
                return Scanned::Unsure;
            };
            match std::str::from_utf8(model) {
                Ok("") => {}
                Ok(model) => return Scanned::Found(model),
                Err(_) => return Scanned::Unsure,
            }
        }
        let Some(end) = skip_json_value(body, at) else {
            return Scanned::Unsure;
        };
        at = end;
        match body.get(at) {
            Some(b',') => at = skip_blank(body, at + 1),
            Some(b'}') => return Scanned::Absent,
            _ => return Scanned::Unsure,
        }
    }
}

/// The first byte at or after `at` that is not JSON whitespace.
fn skip_blank(body: &[u8], at: usize) -> usize {
    at + body
        .get(at..)
        .unwrap_or_default()
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\n' | b'\t' | b'\r'))
        .count()
}

/// The contents of the string starting at `at` and the index after it, when it has no
/// escapes.
fn plain_string(body: &[u8], at: usize) -> Option<(&[u8], usize)> {
    if body.get(at) != Some(&b'"') {
        return None;
    }
    let rest = body.get(at + 1..)?;
    let end = memchr::memchr2(b'"', b'\\', rest)?;
    (rest[end] == b'"').then(|| (&rest[..end], at + 1 + end + 1))
}

/// Where the JSON value starting at `at` ends: the `,` or closing bracket after it. The value
/// is skipped unchecked (strings followed to their closing quote, brackets counted); `None`
/// when the body ends first.
fn skip_json_value(body: &[u8], at: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = at;
    loop {
        match *body.get(i)? {
            b'"' => {
                // To the closing quote, stepping over escaped characters.
                loop {
                    i += 1 + memchr::memchr2(b'"', b'\\', body.get(i + 1..)?)?;
                    if body[i] == b'"' {
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'{' | b'[' => {
                depth += 1;
                i += 1;
            }
            b'}' | b']' => {
                // A closing bracket at depth 0 ends the enclosing object, not this value.
                if depth == 0 {
                    return Some(i);
                }
                depth -= 1;
                i += 1;
            }
            b',' if depth == 0 => return Some(i),
            _ => i += 1,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Server-sent events

/// The `data` of each event of a (possibly truncated) server-sent event stream.
struct SseEvents<'a> {
    rest: &'a [u8],
}

impl<'a> SseEvents<'a> {
    fn new(body: &'a [u8]) -> Self {
        Self { rest: body }
    }

    /// The next line, without its terminator (`\n`, `\r\n` or `\r`).
    fn next_line(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let rest = self.rest;
        match memchr::memchr2(b'\n', b'\r', rest) {
            Some(i) => {
                let skip = if rest.get(i) == Some(&b'\r') && rest.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                self.rest = rest.get(i + skip..).unwrap_or_default();
                rest.get(..i)
            }
            None => {
                self.rest = &[];
                Some(rest)
            }
        }
    }
}

impl<'a> Iterator for SseEvents<'a> {
    type Item = Cow<'a, [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut data: Option<Cow<'a, [u8]>> = None;
        loop {
            let Some(line) = self.next_line() else {
                // End of input: dispatch what we have, even without the closing blank line (the
                // body may have been truncated right after it).
                return data;
            };
            if line.is_empty() {
                if data.is_some() {
                    return data;
                }
                continue;
            }
            let Some(field) = line.strip_prefix(b"data") else {
                continue; // comment, event:, id:, retry:, or an unknown field
            };
            let value = match field.split_first() {
                None => field,
                Some((&b':', value)) => value.strip_prefix(b" ").unwrap_or(value),
                Some(_) => continue, // a field merely starting with "data"
            };
            data = Some(match data {
                None => Cow::Borrowed(value),
                Some(previous) => {
                    let mut joined = previous.into_owned();
                    joined.push(b'\n');
                    joined.extend_from_slice(value);
                    Cow::Owned(joined)
                }
            });
        }
    }
}

static USAGE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\""));
static MODEL: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"model\""));
static META: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"meta\""));
static USAGE_METADATA: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new(b"\"usageMetadata\""));
static MODEL_VERSION: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new(b"\"modelVersion\""));
/// The last `"usage"` of a body (building the searcher per call cost more than searching).
static LAST_USAGE: LazyLock<FinderRev<'static>> = LazyLock::new(|| FinderRev::new(b"\"usage\""));

/// Whether `data` has the (quoted) key `finder` looks for with a value other than `null`.
///
/// Inside JSON strings quotes are escaped, so a hit is a key or a string value; a string value is
/// not followed by `:`. Nesting is not tracked: this is a filter, the JSON parse decides.
fn has_key(data: &[u8], finder: &Finder<'_>) -> bool {
    let len = finder.needle().len();
    finder.find_iter(data).any(|i| {
        let after = data.get(i + len..).unwrap_or_default().trim_ascii_start();
        match after.strip_prefix(b":") {
            Some(value) => !value.trim_ascii_start().starts_with(b"null"),
            None => false,
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Lenient JSON walking

/// Receives the top-level fields of the JSON objects of a body, one at a time.
trait Sink {
    /// Consume the value of `key` from `map` (skip it with [`skip`] if unwanted).
    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error>;

    /// Stop walking: everything wanted has been seen.
    fn done(&self) -> bool {
        false
    }
}

/// A [`Sink`] collecting usage.
trait UsageSink: Sink {
    /// Whether an event's data may carry something this sink still wants.
    fn wants(&self, data: &[u8]) -> bool;

    /// What was collected.
    fn finish(self) -> Usage;
}

fn skip<'de, A: MapAccess<'de>>(map: &mut A) -> Result<(), A::Error> {
    map.next_value::<IgnoredAny>().map(drop)
}

/// Walk every top-level JSON value of `bytes` (one, or several separated by whitespace) into
/// `sink`, stopping at the first syntax error (e.g. where a truncated body ends).
fn walk_all<S: Sink>(bytes: &[u8], sink: &mut S) {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    while de.end().is_err() {
        if Walk(&mut *sink).deserialize(&mut de).is_err() || sink.done() {
            return;
        }
    }
}

/// Feeds the fields of an object — or of each object of an array — to a [`Sink`]. Fields read
/// before an error (truncation, garbage) have already been handed over.
struct Walk<'s, S>(&'s mut S);

impl<'de, S: Sink> DeserializeSeed<'de> for Walk<'_, S> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, S: Sink> Visitor<'de> for Walk<'_, S> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object or an array of objects")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(key)) = map.next_key()? {
            self.0.field(&key, &mut map)?;
            if self.0.done() {
                return Err(de::Error::custom("done"));
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let sink = self.0;
        while seq.next_element_seed(Walk(&mut *sink))?.is_some() {}
        Ok(())
    }
}

/// An object key, borrowed from the body unless it has escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// A value that reads as `None` when the JSON has another type than expected (so one odd field
/// does not void its neighbours). Syntax errors still fail.
#[derive(Debug)]
struct Lenient<T>(Option<T>);

impl<T> Default for Lenient<T> {
    fn default() -> Self {
        Self(None)
    }
}

/// How a [`Lenient`] value is built from each kind of JSON value; unhandled kinds read as `None`.
trait FromJson: Sized {
    fn from_u64(_: u64) -> Option<Self> {
        None
    }
    fn from_i64(_: i64) -> Option<Self> {
        None
    }
    fn from_f64(_: f64) -> Option<Self> {
        None
    }
    fn from_text(_: &str) -> Option<Self> {
        None
    }
    fn from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Option<Self>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

/// Token counts: non-negative integers (integral floats such as `12.0` are accepted).
impl FromJson for u64 {
    fn from_u64(v: u64) -> Option<Self> {
        Some(v)
    }
    fn from_i64(v: i64) -> Option<Self> {
        u64::try_from(v).ok()
    }
    fn from_f64(v: f64) -> Option<Self> {
        // 2^64 is exactly representable; anything below it that is integral fits.
        ((0.0..18_446_744_073_709_551_616.0).contains(&v) && v.fract() == 0.0).then_some(v as u64)
    }
}

impl FromJson for String {
    fn from_text(v: &str) -> Option<Self> {
        Some(v.to_owned())
    }
}

/// Lets a `#[derive(Deserialize)]` struct of lenient fields be a lenient object.
macro_rules! lenient_object {
    ($($t:ty),* $(,)?) => {$(
        impl FromJson for $t {
            fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
                <$t>::deserialize(de::value::MapAccessDeserializer::new(map)).map(Some)
            }
        }
    )*};
}

impl<'de, T: FromJson> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LenientVisitor<T>(PhantomData<T>);
        impl<'de, T: FromJson> Visitor<'de> for LenientVisitor<T> {
            type Value = Lenient<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Lenient<T>, E> {
                Ok(Lenient(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Lenient<T>, E> {
                Ok(Lenient(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Lenient<T>, E> {
                Ok(Lenient(None))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Lenient<T>, E> {
                Ok(Lenient(T::from_u64(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Lenient<T>, E> {
                Ok(Lenient(T::from_i64(v)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Lenient<T>, E> {
                Ok(Lenient(T::from_f64(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Lenient<T>, E> {
                Ok(Lenient(T::from_text(v)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Lenient<T>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Lenient(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Lenient<T>, A::Error> {
                T::from_map(map).map(Lenient)
            }
        }
        deserializer.deserialize_any(LenientVisitor(PhantomData))
    }
}

type Count = Lenient<u64>;
type Text = Lenient<String>;
type Tokens = (Option<u64>, Option<u64>);

/// `Some` unless both counts are missing.
fn tokens(tokens_in: Option<u64>, tokens_out: Option<u64>) -> Option<Tokens> {
    (tokens_in.is_some() || tokens_out.is_some()).then_some((tokens_in, tokens_out))
}

/// The sum of the counts present, `None` if none is.
fn sum(counts: &[Option<u64>]) -> Option<u64> {
    counts.iter().flatten().fold(None, |acc: Option<u64>, n| {
        Some(acc.unwrap_or(0).saturating_add(*n))
    })
}

/// Keep the first non-empty model.
fn first_model(slot: &mut Option<String>, value: Text) {
    if slot.is_none() {
        *slot = value.0.filter(|m| !m.is_empty());
    }
}

fn usage_from(tokens: Option<Tokens>, model: Option<String>) -> Usage {
    let (tokens_in, tokens_out) = tokens.unwrap_or_default();
    Usage {
        tokens_in,
        tokens_out,
        model,
    }
}

// ---------------------------------------------------------------------------------------------
// Request model

#[derive(Default)]
struct ModelSink {
    model: Option<String>,
}

impl Sink for ModelSink {
    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "model" => first_model(&mut self.model, map.next_value()?),
            _ => skip(map)?,
        }
        Ok(())
    }

    fn done(&self) -> bool {
        self.model.is_some()
    }
}

// ---------------------------------------------------------------------------------------------
// OpenAI-style (and Workers AI)

#[derive(Deserialize, Default)]
#[serde(default)]
struct OpenAiUsage {
    prompt_tokens: Count,
    completion_tokens: Count,
    input_tokens: Count,
    output_tokens: Count,
}

impl OpenAiUsage {
    fn tokens(self) -> Option<Tokens> {
        tokens(
            self.prompt_tokens.0.or(self.input_tokens.0),
            self.completion_tokens.0.or(self.output_tokens.0),
        )
    }
}

/// Workers AI's `result` and Groq's `x_groq`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct WithOpenAiUsage {
    usage: Lenient<OpenAiUsage>,
}

/// The Responses API stream's `response` object.
#[derive(Deserialize, Default)]
#[serde(default)]
struct ResponseObject {
    model: Text,
    usage: Lenient<OpenAiUsage>,
}

lenient_object!(OpenAiUsage, WithOpenAiUsage, ResponseObject);

#[derive(Default)]
struct OpenAiSink {
    model: Option<String>,
    usage: Option<Tokens>,
    x_groq: Option<Tokens>,
}

impl OpenAiSink {
    fn set_usage(&mut self, usage: Lenient<OpenAiUsage>) {
        if let Some(t) = usage.0.and_then(OpenAiUsage::tokens) {
            self.usage = Some(t);
        }
    }
}

impl Sink for OpenAiSink {
    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "model" if self.model.is_none() => first_model(&mut self.model, map.next_value()?),
            "usage" => self.set_usage(map.next_value()?),
            "response" => {
                if let Some(r) = map.next_value::<Lenient<ResponseObject>>()?.0 {
                    first_model(&mut self.model, r.model);
                    self.set_usage(r.usage);
                }
            }
            "result" => {
                if let Some(r) = map.next_value::<Lenient<WithOpenAiUsage>>()?.0 {
                    self.set_usage(r.usage);
                }
            }
            "x_groq" => {
                let groq = map.next_value::<Lenient<WithOpenAiUsage>>()?;
                if let Some(t) = groq.0.and_then(|g| g.usage.0).and_then(OpenAiUsage::tokens) {
                    self.x_groq = Some(t);
                }
            }
            _ => skip(map)?,
        }
        Ok(())
    }
}

impl UsageSink for OpenAiSink {
    fn wants(&self, data: &[u8]) -> bool {
        has_key(data, &USAGE) || (self.model.is_none() && has_key(data, &MODEL))
    }

    fn finish(self) -> Usage {
        usage_from(self.usage.or(self.x_groq), self.model)
    }
}

// ---------------------------------------------------------------------------------------------
// Anthropic

#[derive(Deserialize, Default)]
#[serde(default)]
struct AnthropicUsage {
    input_tokens: Count,
    cache_creation_input_tokens: Count,
    cache_read_input_tokens: Count,
    output_tokens: Count,
}

/// `message_start`'s `message`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct AnthropicMessage {
    model: Text,
    usage: Lenient<AnthropicUsage>,
}

lenient_object!(AnthropicUsage, AnthropicMessage);

#[derive(Default)]
struct AnthropicSink {
    model: Option<String>,
    input: Option<u64>,
    cache_creation: Option<u64>,
    cache_read: Option<u64>,
    output: Option<u64>,
}

impl AnthropicSink {
    /// Later values override earlier ones, field by field (stream usage is cumulative).
    fn apply(&mut self, usage: Lenient<AnthropicUsage>) {
        let Some(u) = usage.0 else { return };
        for (slot, value) in [
            (&mut self.input, u.input_tokens),
            (&mut self.cache_creation, u.cache_creation_input_tokens),
            (&mut self.cache_read, u.cache_read_input_tokens),
            (&mut self.output, u.output_tokens),
        ] {
            if value.0.is_some() {
                *slot = value.0;
            }
        }
    }
}

impl Sink for AnthropicSink {
    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "model" if self.model.is_none() => first_model(&mut self.model, map.next_value()?),
            "usage" => self.apply(map.next_value()?),
            "message" => {
                if let Some(m) = map.next_value::<Lenient<AnthropicMessage>>()?.0 {
                    first_model(&mut self.model, m.model);
                    self.apply(m.usage);
                }
            }
            _ => skip(map)?,
        }
        Ok(())
    }
}

impl UsageSink for AnthropicSink {
    fn wants(&self, data: &[u8]) -> bool {
        has_key(data, &USAGE) || (self.model.is_none() && has_key(data, &MODEL))
    }

    fn finish(self) -> Usage {
        Usage {
            tokens_in: sum(&[self.input, self.cache_creation, self.cache_read]),
            tokens_out: self.output,
            model: self.model,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Google AI Studio

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct GoogleUsage {
    prompt_token_count: Count,
    candidates_token_count: Count,
    thoughts_token_count: Count,
}

lenient_object!(GoogleUsage);

#[derive(Default)]
struct GoogleSink {
    model: Option<String>,
    usage: Option<Tokens>,
}

impl Sink for GoogleSink {
    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "modelVersion" if self.model.is_none() => {
                first_model(&mut self.model, map.next_value()?);
            }
            "usageMetadata" => {
                if let Some(u) = map.next_value::<Lenient<GoogleUsage>>()?.0 {
                    let out = sum(&[u.candidates_token_count.0, u.thoughts_token_count.0]);
                    if let Some(t) = tokens(u.prompt_token_count.0, out) {
                        self.usage = Some(t);
                    }
                }
            }
            _ => skip(map)?,
        }
        Ok(())
    }
}

impl UsageSink for GoogleSink {
    fn wants(&self, data: &[u8]) -> bool {
        has_key(data, &USAGE_METADATA) || (self.model.is_none() && has_key(data, &MODEL_VERSION))
    }

    fn finish(self) -> Usage {
        usage_from(self.usage, self.model)
    }
}

// ---------------------------------------------------------------------------------------------
// Cohere

#[derive(Deserialize, Default)]
#[serde(default)]
struct CohereUnits {
    input_tokens: Count,
    output_tokens: Count,
}

/// v2 `usage` and v1 `meta` have the same two members; which one wins differs.
#[derive(Deserialize, Default)]
#[serde(default)]
struct CohereCounts {
    tokens: Lenient<CohereUnits>,
    billed_units: Lenient<CohereUnits>,
}

impl CohereCounts {
    /// Per field, `first` if present, else `second`.
    fn merge(first: Option<CohereUnits>, second: Option<CohereUnits>) -> Option<Tokens> {
        let (a, b) = (first.unwrap_or_default(), second.unwrap_or_default());
        tokens(
            a.input_tokens.0.or(b.input_tokens.0),
            a.output_tokens.0.or(b.output_tokens.0),
        )
    }

    /// v2 `usage`: `tokens`, then `billed_units`.
    fn v2(counts: Lenient<Self>) -> Option<Tokens> {
        counts
            .0
            .and_then(|c| Self::merge(c.tokens.0, c.billed_units.0))
    }

    /// v1 `meta`: `billed_units`, then `tokens`.
    fn v1(counts: Lenient<Self>) -> Option<Tokens> {
        counts
            .0
            .and_then(|c| Self::merge(c.billed_units.0, c.tokens.0))
    }
}

/// v2 `message-end`'s `delta`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct CohereDelta {
    usage: Lenient<CohereCounts>,
}

/// v1 `stream-end`'s `response`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct CohereResponse {
    meta: Lenient<CohereCounts>,
    usage: Lenient<CohereCounts>,
}

lenient_object!(CohereUnits, CohereCounts, CohereDelta, CohereResponse);

#[derive(Default)]
struct CohereSink {
    usage: Option<Tokens>,
}

impl CohereSink {
    fn set(&mut self, t: Option<Tokens>) {
        if t.is_some() {
            self.usage = t;
        }
    }
}

impl Sink for CohereSink {
    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "usage" => self.set(CohereCounts::v2(map.next_value()?)),
            "meta" => self.set(CohereCounts::v1(map.next_value()?)),
            "delta" => {
                if let Some(d) = map.next_value::<Lenient<CohereDelta>>()?.0 {
                    self.set(CohereCounts::v2(d.usage));
                }
            }
            "response" => {
                if let Some(r) = map.next_value::<Lenient<CohereResponse>>()?.0 {
                    self.set(CohereCounts::v1(r.meta));
                    self.set(CohereCounts::v2(r.usage));
                }
            }
            _ => skip(map)?,
        }
        Ok(())
    }
}

impl UsageSink for CohereSink {
    fn wants(&self, data: &[u8]) -> bool {
        has_key(data, &USAGE) || has_key(data, &META)
    }

    fn finish(self) -> Usage {
        usage_from(self.usage, None)
    }
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(tokens_in: Option<u64>, tokens_out: Option<u64>, model: Option<&str>) -> Usage {
        Usage {
            tokens_in,
            tokens_out,
            model: model.map(str::to_owned),
        }
    }

    fn full(tokens_in: u64, tokens_out: u64, model: &str) -> Usage {
        usage(Some(tokens_in), Some(tokens_out), Some(model))
    }

    /// [`extract_usage`], checking that [`extract_tokens`] reads the same token counts.
    fn extracted(wire: WireFormat, path: &str, body: &[u8], streamed: bool) -> Usage {
        let usage = extract_usage(wire, path, body, streamed);
        let tokens = extract_tokens(wire, path, body, streamed);
        assert_eq!(
            (tokens.tokens_in, tokens.tokens_out),
            (usage.tokens_in, usage.tokens_out),
            "token counts of {:?}",
            String::from_utf8_lossy(body)
        );
        usage
    }

    fn crlf(s: &str) -> String {
        s.replace('\n', "\r\n")
    }

    fn oai(body: &str, streamed: bool) -> Usage {
        extracted(
            WireFormat::OpenAi,
            "/chat/completions",
            body.as_bytes(),
            streamed,
        )
    }

    // --- OpenAI-style -------------------------------------------------------------------------

    const OPENAI_CHAT: &str = r#"{
      "id": "chatcmpl-123", "object": "chat.completion", "created": 1728933352,
      "model": "gpt-4o-mini-2024-07-18",
      "choices": [{"index": 0, "message": {"role": "assistant",
        "content": "Hi \"usage\": {\"prompt_tokens\": 999} \u00e9"}, "finish_reason": "stop"}],
      "usage": {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
        "prompt_tokens_details": {"cached_tokens": 0}},
      "system_fingerprint": "fp_6b68a8204b"
    }"#;

    #[test]
    fn openai_chat_json() {
        assert_eq!(
            oai(OPENAI_CHAT, false),
            full(19, 10, "gpt-4o-mini-2024-07-18")
        );
    }

    #[test]
    fn a_top_level_usage_member_is_read_from_that_member_on() {
        let read = |body: &str| top_level_usage::<OpenAiSink>(body.as_bytes());
        // Members after it; a quoted "usage" in a string before it.
        assert_eq!(read(OPENAI_CHAT), Some(usage(Some(19), Some(10), None)));
        assert_eq!(
            top_level_usage::<AnthropicSink>(ANTHROPIC_JSON.as_bytes()),
            Some(usage(Some(2095 + 100 + 1000), Some(503), None))
        );
        // The last "usage" key is not top-level: nested after it, or inside a string.
        let nested_after = r#"{"usage":{"prompt_tokens":1,"completion_tokens":2},
            "extra":{"usage":{"prompt_tokens":99,"completion_tokens":99}}}"#;
        let quoted_after = r#"{"usage":{"prompt_tokens":1,"completion_tokens":2},
            "note":""usage":{"prompt_tokens":99,"completion_tokens":99}}"}"#;
        let only_nested = r#"{"choices":[{"usage":{"prompt_tokens":99,"completion_tokens":99}}]}"#;
        for body in [nested_after, quoted_after, only_nested] {
            assert_eq!(read(body), None, "{body}");
        }
        // Read by walking the whole body instead.
        let tokens = |body: &str| {
            let u = extract_tokens(
                WireFormat::OpenAi,
                "/chat/completions",
                body.as_bytes(),
                false,
            );
            (u.tokens_in, u.tokens_out)
        };
        assert_eq!(tokens(nested_after), (Some(1), Some(2)));
        assert_eq!(tokens(quoted_after), (Some(1), Some(2)));
        assert_eq!(tokens(only_nested), (None, None));
        // A null usage is no answer: Groq's x_groq usage still counts.
        let null_usage =
            r#"{"x_groq":{"usage":{"prompt_tokens":3,"completion_tokens":4}},"usage":null}"#;
        assert_eq!(read(null_usage), None);
        assert_eq!(tokens(null_usage), (Some(3), Some(4)));
    }

    #[test]
    fn openai_embeddings_have_no_output_tokens() {
        let body = r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,-0.2]}],
            "model":"text-embedding-3-small","usage":{"prompt_tokens":5,"total_tokens":5}}"#;
        let u = extracted(WireFormat::OpenAi, "/embeddings", body.as_bytes(), false);
        assert_eq!(u, usage(Some(5), None, Some("text-embedding-3-small")));
    }

    #[test]
    fn openai_legacy_completions_json() {
        let body = r#"{"id":"cmpl-1","object":"text_completion","model":"gpt-3.5-turbo-instruct",
            "choices":[{"text":"x","index":0}],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}"#;
        let u = extracted(WireFormat::OpenAi, "/completions", body.as_bytes(), false);
        assert_eq!(u, full(5, 7, "gpt-3.5-turbo-instruct"));
    }

    #[test]
    fn openai_responses_api_json() {
        let body = r#"{"id":"resp_1","object":"response","status":"completed","model":"gpt-4.1-2025-04-14",
            "output":[{"type":"message","content":[{"type":"output_text","text":"hi"}]}],
            "tools":[{"type":"function","name":"f","parameters":{"type":"object","properties":{"usage":{"type":"string"}}}}],
            "usage":{"input_tokens":36,"input_tokens_details":{"cached_tokens":0},"output_tokens":87,
                     "output_tokens_details":{"reasoning_tokens":0},"total_tokens":123}}"#;
        let u = extracted(WireFormat::OpenAi, "/responses", body.as_bytes(), false);
        assert_eq!(u, full(36, 87, "gpt-4.1-2025-04-14"));
    }

    fn openai_chunks(n: usize, include_usage: bool) -> String {
        let usage_null = if include_usage {
            r#","usage":null"#
        } else {
            ""
        };
        let mut s = String::new();
        s.push_str(&format!(
            "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"\"}}}}]{usage_null}}}\n\n"
        ));
        for i in 0..n {
            s.push_str(&format!(
                "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{i} \\\"usage\\\":1\"}}}}]{usage_null}}}\n\n"
            ));
        }
        if include_usage {
            s.push_str("data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":200,\"total_tokens\":212}}\n\n");
        }
        s.push_str("data: [DONE]\n\n");
        s
    }

    #[test]
    fn openai_chat_stream_with_include_usage() {
        let body = openai_chunks(20, true);
        assert_eq!(oai(&body, true), full(12, 200, "gpt-4o-2024-08-06"));
        assert_eq!(oai(&crlf(&body), true), full(12, 200, "gpt-4o-2024-08-06"));
        assert_eq!(
            oai(&body.replace('\n', "\r"), true),
            full(12, 200, "gpt-4o-2024-08-06")
        );
        assert_eq!(
            oai(&body.replace("data: ", "data:"), true),
            full(12, 200, "gpt-4o-2024-08-06")
        );
    }

    #[test]
    fn openai_chat_stream_without_usage_still_has_model() {
        let body = openai_chunks(3, false);
        assert_eq!(
            oai(&body, true),
            usage(None, None, Some("gpt-4o-2024-08-06"))
        );
    }

    #[test]
    fn openai_stream_takes_the_last_usage_and_the_first_model() {
        let body = "data: {\"model\":\"\",\"choices\":[],\"prompt_filter_results\":[]}\n\n\
                    data: {\"model\":\"first\",\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\n\
                    data: {\"model\":\"second\",\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":5}}\n\n\
                    data: {\"model\":\"third\",\"usage\":null}\n\n";
        assert_eq!(oai(body, true), full(1, 5, "first"));
    }

    #[test]
    fn openai_stream_truncated_mid_usage_keeps_what_was_complete() {
        let body = openai_chunks(5, true);
        let cut = body.find("\"completion_tokens\"").unwrap();
        assert_eq!(
            oai(&body[..cut], true),
            usage(None, None, Some("gpt-4o-2024-08-06"))
        );
        // Cut after the usage event but before its blank line: still read.
        let cut = body.find("data: [DONE]").unwrap() - 2;
        assert_eq!(oai(&body[..cut], true), full(12, 200, "gpt-4o-2024-08-06"));
    }

    #[test]
    fn openai_stream_without_blank_lines_between_events() {
        let body = "data: {\"model\":\"m\",\"usage\":null}\n\
                    data: {\"model\":\"m\",\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\
                    data: [DONE]\n";
        assert_eq!(oai(body, true), full(3, 4, "m"));
    }

    #[test]
    fn sse_multi_line_data_is_joined() {
        let body = "event: x\nid: 1\n: comment\ndata: {\"model\": \"m\",\ndata:  \"usage\": {\"prompt_tokens\": 2,\ndata: \"completion_tokens\": 3}}\n\n";
        assert_eq!(oai(body, true), full(2, 3, "m"));
        let events: Vec<_> = SseEvents::new(b"data\ndata: a\n\ndatax: no\n\ndata:b").collect();
        assert_eq!(
            events,
            vec![Cow::Borrowed(&b"\na"[..]), Cow::Borrowed(&b"b"[..])]
        );
    }

    #[test]
    fn openai_responses_api_stream() {
        let body = r#"event: response.created
data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_1","status":"in_progress","model":"o4-mini-2025-04-16","output":[],"usage":null}}

event: response.output_text.delta
data: {"type":"response.output_text.delta","item_id":"msg_1","output_index":0,"delta":"Hi"}

event: response.completed
data: {"type":"response.completed","sequence_number":9,"response":{"id":"resp_1","status":"completed","model":"o4-mini-2025-04-16","output":[{"type":"message","content":[{"type":"output_text","text":"Hi"}]}],"usage":{"input_tokens":37,"output_tokens":11,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":48}}}

"#;
        let u = extracted(WireFormat::OpenAi, "/responses", body.as_bytes(), true);
        assert_eq!(u, full(37, 11, "o4-mini-2025-04-16"));
        let u = extracted(
            WireFormat::OpenAi,
            "/responses",
            crlf(body).as_bytes(),
            true,
        );
        assert_eq!(u, full(37, 11, "o4-mini-2025-04-16"));
    }

    #[test]
    fn groq_x_groq_usage_is_a_fallback() {
        let body = "data: {\"model\":\"llama-3.1-8b-instant\",\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n\
                    data: {\"model\":\"llama-3.1-8b-instant\",\"choices\":[],\"x_groq\":{\"id\":\"req\",\"usage\":{\"prompt_tokens\":8,\"completion_tokens\":2}}}\n\n\
                    data: [DONE]\n\n";
        assert_eq!(oai(body, true), full(8, 2, "llama-3.1-8b-instant"));
        let both = r#"{"model":"m","x_groq":{"usage":{"prompt_tokens":1,"completion_tokens":1}},"usage":{"prompt_tokens":9,"completion_tokens":9}}"#;
        assert_eq!(oai(both, false), full(9, 9, "m"));
    }

    #[test]
    fn openai_json_truncated_keeps_the_model() {
        let cut = OPENAI_CHAT.find("\"choices\"").unwrap() + 20;
        assert_eq!(
            oai(&OPENAI_CHAT[..cut], false),
            usage(None, None, Some("gpt-4o-mini-2024-07-18"))
        );
        for i in 0..OPENAI_CHAT.len() {
            let _ = oai(&OPENAI_CHAT[..i], false);
            let _ = oai(&OPENAI_CHAT[..i], true);
        }
    }

    #[test]
    fn odd_values_read_as_absent_without_voiding_neighbours() {
        let body = r#"{"model":42,"usage":{"prompt_tokens":"7","completion_tokens":12.0,"extra":[1,{"a":null}]}}"#;
        assert_eq!(oai(body, false), usage(None, Some(12), None));
        let body = r#"{"model":"m","usage":{"prompt_tokens":-1,"completion_tokens":1.5}}"#;
        assert_eq!(oai(body, false), usage(None, None, Some("m")));
        let body = r#"{"model":"m","usage":[1,2],"x":{"usage":{"prompt_tokens":1}}}"#;
        assert_eq!(oai(body, false), usage(None, None, Some("m")));
        let body = r#"{"model":"m","usage":{"prompt_tokens":1e30,"completion_tokens":18446744073709551615}}"#;
        assert_eq!(oai(body, false), usage(None, Some(u64::MAX), Some("m")));
        let body =
            r#"{"mo\u0064el":"escaped-key","usage":{"prompt_tokens":1,"completion_tokens":2}}"#;
        assert_eq!(oai(body, false), full(1, 2, "escaped-key"));
    }

    #[test]
    fn garbage_never_panics() {
        let samples: &[&[u8]] = &[
            b"",
            b"   ",
            b"\xEF\xBB\xBF",
            b"null",
            b"42",
            b"\"str\"",
            b"[1,2,3]",
            b"[[[[[[[[[[[[[[[[[[[[",
            b"{{{{",
            b"{\"usage\":",
            b"{\"usage\":{\"prompt_tokens\":",
            b"\xff\xfe\x00garbage",
            b"data:",
            b"data: {\"usage\"",
            b"data: \xff\xff\n\n",
            b"\r\n\r\n\r",
            b"<html>502 Bad Gateway</html>",
        ];
        let deep = "[".repeat(100_000) + &"{\"a\":".repeat(10_000);
        let wires = [
            WireFormat::OpenAi,
            WireFormat::Anthropic,
            WireFormat::WorkersAi,
            WireFormat::GoogleAiStudio,
            WireFormat::Cohere,
            WireFormat::Opaque,
        ];
        for wire in wires {
            for body in samples.iter().copied().chain([deep.as_bytes()]) {
                for streamed in [false, true] {
                    let u = extracted(wire, "/x", body, streamed);
                    assert_eq!(
                        (u.tokens_in, u.tokens_out),
                        (None, None),
                        "{wire:?} {body:?}"
                    );
                }
                let _ = request_model(wire, "/x", body);
            }
        }
    }

    #[test]
    fn html_body_is_not_read_as_sse_unless_streamed() {
        assert_eq!(oai("<html>", false), Usage::default());
        assert!(looks_like_sse(b"  data: {}"));
        assert!(looks_like_sse(b": keep-alive\n"));
        assert!(!looks_like_sse(b"<html>"));
    }

    #[test]
    fn sse_body_without_event_stream_content_type_is_sniffed() {
        let body = openai_chunks(2, true);
        assert_eq!(oai(&body, false), full(12, 200, "gpt-4o-2024-08-06"));
        // And a JSON body on an event-stream response is read as JSON.
        assert_eq!(
            oai(OPENAI_CHAT, true),
            full(19, 10, "gpt-4o-mini-2024-07-18")
        );
    }

    #[test]
    fn bom_is_skipped() {
        let body = format!("\u{feff}{OPENAI_CHAT}");
        assert_eq!(oai(&body, false), full(19, 10, "gpt-4o-mini-2024-07-18"));
    }

    // --- Workers AI ---------------------------------------------------------------------------

    const WAI_PATH: &str = "/@cf/meta/llama-3.1-8b-instruct";

    #[test]
    fn workers_ai_json() {
        let body = r#"{"result":{"response":"Hello","tool_calls":[],"usage":{"prompt_tokens":23,"completion_tokens":9,"total_tokens":32}},"success":true,"errors":[],"messages":[]}"#;
        let u = extracted(WireFormat::WorkersAi, WAI_PATH, body.as_bytes(), false);
        assert_eq!(u, usage(Some(23), Some(9), None));
        let body = r#"{"result":{"shape":[1,768],"data":[[0.1]]},"success":true}"#;
        let u = extracted(
            WireFormat::WorkersAi,
            "/@cf/baai/bge-base-en-v1.5",
            body.as_bytes(),
            false,
        );
        assert_eq!(u, Usage::default());
    }

    #[test]
    fn workers_ai_stream() {
        let body = "data: {\"response\":\"Hel\",\"p\":\"abc\"}\n\n\
                    data: {\"response\":\"lo\",\"usage\":null}\n\n\
                    data: {\"response\":\"\",\"usage\":{\"prompt_tokens\":23,\"completion_tokens\":2,\"total_tokens\":25}}\n\n\
                    data: [DONE]\n\n";
        for b in [body.to_owned(), crlf(body)] {
            let u = extracted(WireFormat::WorkersAi, WAI_PATH, b.as_bytes(), true);
            assert_eq!(u, usage(Some(23), Some(2), None));
        }
    }

    #[test]
    fn workers_ai_openai_compatible_endpoint() {
        let body = r#"{"id":"x","object":"chat.completion","model":"@cf/meta/llama-3.1-8b-instruct","choices":[],"usage":{"prompt_tokens":4,"completion_tokens":5}}"#;
        let u = extracted(
            WireFormat::WorkersAi,
            "/v1/chat/completions",
            body.as_bytes(),
            false,
        );
        assert_eq!(u, full(4, 5, "@cf/meta/llama-3.1-8b-instruct"));
    }

    // --- Anthropic ----------------------------------------------------------------------------

    fn anthropic(body: &str, streamed: bool) -> Usage {
        extracted(
            WireFormat::Anthropic,
            "/v1/messages",
            body.as_bytes(),
            streamed,
        )
    }

    const ANTHROPIC_JSON: &str = r#"{"id":"msg_01","type":"message","role":"assistant","model":"claude-3-5-sonnet-20241022",
        "content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn","stop_sequence":null,
        "usage":{"input_tokens":2095,"cache_creation_input_tokens":100,"cache_read_input_tokens":1000,
                 "cache_creation":{"ephemeral_5m_input_tokens":100},"output_tokens":503,"service_tier":"standard"}}"#;

    #[test]
    fn anthropic_json_sums_cache_tokens_into_input() {
        assert_eq!(
            anthropic(ANTHROPIC_JSON, false),
            full(3195, 503, "claude-3-5-sonnet-20241022")
        );
        let plain =
            r#"{"model":"claude-3-haiku-20240307","usage":{"input_tokens":10,"output_tokens":3}}"#;
        assert_eq!(
            anthropic(plain, false),
            full(10, 3, "claude-3-haiku-20240307")
        );
    }

    #[test]
    fn anthropic_json_truncated_keeps_the_model() {
        let cut = ANTHROPIC_JSON.find("\"stop_reason\"").unwrap();
        assert_eq!(
            anthropic(&ANTHROPIC_JSON[..cut], false),
            usage(None, None, Some("claude-3-5-sonnet-20241022"))
        );
    }

    fn anthropic_stream(deltas: usize, final_usage: &str) -> String {
        let mut s = String::from(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-20250514\",\"stop_reason\":null,\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":5,\"cache_read_input_tokens\":10,\"output_tokens\":1}}}\n\n\
             event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
             event: ping\ndata: {\"type\": \"ping\"}\n\n",
        );
        for i in 0..deltas {
            s.push_str(&format!(
                "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"word{i} \"}}}}\n\n"
            ));
        }
        s.push_str(
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        );
        s.push_str(&format!(
            "event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\",\"stop_sequence\":null}},\"usage\":{final_usage}}}\n\n"
        ));
        s.push_str("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        s
    }

    #[test]
    fn anthropic_sse_stream() {
        let body = anthropic_stream(10, r#"{"output_tokens":15}"#);
        assert_eq!(
            anthropic(&body, true),
            full(40, 15, "claude-sonnet-4-20250514")
        );
        assert_eq!(
            anthropic(&crlf(&body), true),
            full(40, 15, "claude-sonnet-4-20250514")
        );
    }

    #[test]
    fn anthropic_stream_prefers_message_delta_input_tokens() {
        let body = anthropic_stream(
            2,
            r#"{"input_tokens":30,"cache_creation_input_tokens":5,"cache_read_input_tokens":10,"output_tokens":15}"#,
        );
        assert_eq!(
            anthropic(&body, true),
            full(45, 15, "claude-sonnet-4-20250514")
        );
    }

    #[test]
    fn anthropic_stream_cumulative_output_takes_the_last() {
        let mut body = anthropic_stream(1, r#"{"output_tokens":7}"#);
        body.push_str("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"output_tokens\":9}}\n\n");
        assert_eq!(
            anthropic(&body, true),
            full(40, 9, "claude-sonnet-4-20250514")
        );
    }

    #[test]
    fn anthropic_stream_truncated_before_message_delta() {
        let body = anthropic_stream(10, r#"{"output_tokens":15}"#);
        let cut = body.find("word5").unwrap();
        // What message_start said: input with cache, and its provisional output count.
        assert_eq!(
            anthropic(&body[..cut], true),
            full(40, 1, "claude-sonnet-4-20250514")
        );
    }

    // --- Google AI Studio ---------------------------------------------------------------------

    fn google(path: &str, body: &str, streamed: bool) -> Usage {
        extracted(WireFormat::GoogleAiStudio, path, body.as_bytes(), streamed)
    }

    const GEMINI_PATH: &str = "/v1beta/models/gemini-1.5-flash:generateContent";
    const GEMINI_STREAM_PATH: &str =
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse";

    #[test]
    fn google_json() {
        let body = r#"{"candidates":[{"content":{"parts":[{"text":"Hi"}],"role":"model"},"finishReason":"STOP"}],
            "usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":12,"totalTokenCount":20},
            "modelVersion":"gemini-1.5-flash-002","responseId":"abc"}"#;
        assert_eq!(
            google(GEMINI_PATH, body, false),
            full(8, 12, "gemini-1.5-flash-002")
        );
    }

    #[test]
    fn google_thinking_tokens_count_as_output() {
        let body = r#"{"usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":12,"thoughtsTokenCount":30},"modelVersion":"gemini-2.5-flash"}"#;
        assert_eq!(
            google(GEMINI_PATH, body, false),
            full(8, 42, "gemini-2.5-flash")
        );
        let body = r#"{"usageMetadata":{"promptTokenCount":8,"totalTokenCount":8}}"#;
        assert_eq!(google(GEMINI_PATH, body, false), usage(Some(8), None, None));
    }

    fn gemini_chunk(text: &str, prompt: u64, candidates: u64) -> String {
        format!(
            r#"{{"candidates": [{{"content": {{"parts": [{{"text": "{text}"}}],"role": "model"}},"index": 0}}],"usageMetadata": {{"promptTokenCount": {prompt},"candidatesTokenCount": {candidates},"totalTokenCount": {}}},"modelVersion": "gemini-2.5-flash"}}"#,
            prompt + candidates
        )
    }

    #[test]
    fn google_sse_stream_takes_the_last_usage() {
        let body = format!(
            "data: {}\r\n\r\ndata: {}\r\n\r\ndata: {}\r\n\r\n",
            gemini_chunk("a", 5, 1),
            gemini_chunk("b", 5, 4),
            gemini_chunk("c", 5, 9)
        );
        assert_eq!(
            google(GEMINI_STREAM_PATH, &body, true),
            full(5, 9, "gemini-2.5-flash")
        );
    }

    #[test]
    fn google_json_array_stream() {
        let body = format!(
            "[{},\r\n{},\r\n{}]",
            gemini_chunk("a", 5, 1),
            gemini_chunk("b", 5, 4),
            gemini_chunk("c", 5, 9)
        );
        let path = "/v1beta/models/gemini-2.5-flash:streamGenerateContent";
        assert_eq!(google(path, &body, false), full(5, 9, "gemini-2.5-flash"));
        // Truncated inside the last chunk: the complete ones still count.
        let cut = body.rfind("totalTokenCount").unwrap();
        assert_eq!(
            google(path, &body[..cut], false),
            full(5, 4, "gemini-2.5-flash")
        );
    }

    #[test]
    fn google_openai_compatible_endpoint() {
        let body = r#"{"model":"gemini-2.0-flash","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#;
        let u = google("/v1beta/openai/chat/completions", body, false);
        assert_eq!(u, full(3, 4, "gemini-2.0-flash"));
    }

    #[test]
    fn google_embeddings_have_no_usage() {
        let body = r#"{"embedding":{"values":[0.1,0.2]}}"#;
        let path = "/v1beta/models/text-embedding-004:embedContent";
        assert_eq!(google(path, body, false), Usage::default());
    }

    // --- Cohere -------------------------------------------------------------------------------

    fn cohere(path: &str, body: &str, streamed: bool) -> Usage {
        extracted(WireFormat::Cohere, path, body.as_bytes(), streamed)
    }

    #[test]
    fn cohere_v2_json_prefers_tokens_then_billed_units() {
        let body = r#"{"id":"x","message":{"role":"assistant","content":[{"type":"text","text":"hi"}]},"finish_reason":"COMPLETE",
            "usage":{"billed_units":{"input_tokens":5,"output_tokens":10},"tokens":{"input_tokens":71,"output_tokens":10}}}"#;
        assert_eq!(
            cohere("/v2/chat", body, false),
            usage(Some(71), Some(10), None)
        );
        let body = r#"{"usage":{"billed_units":{"input_tokens":5,"output_tokens":10},"tokens":{"output_tokens":11}}}"#;
        assert_eq!(
            cohere("/v2/chat", body, false),
            usage(Some(5), Some(11), None)
        );
    }

    #[test]
    fn cohere_v1_json_prefers_billed_units() {
        let body = r#"{"response_id":"r","text":"hi","generation_id":"g","finish_reason":"COMPLETE",
            "meta":{"api_version":{"version":"1"},"billed_units":{"input_tokens":6,"output_tokens":2},"tokens":{"input_tokens":70,"output_tokens":2}}}"#;
        assert_eq!(
            cohere("/v1/chat", body, false),
            usage(Some(6), Some(2), None)
        );
        let embed = r#"{"id":"e","embeddings":{"float":[[0.1]]},"texts":["a"],"meta":{"api_version":{"version":"2"},"billed_units":{"input_tokens":3}}}"#;
        assert_eq!(
            cohere("/v2/embed", embed, false),
            usage(Some(3), None, None)
        );
    }

    #[test]
    fn cohere_v2_sse_message_end() {
        let body = "event: message-start\ndata: {\"id\":\"x\",\"type\":\"message-start\",\"delta\":{\"message\":{\"role\":\"assistant\"}}}\n\n\
                    event: content-delta\ndata: {\"type\":\"content-delta\",\"index\":0,\"delta\":{\"message\":{\"content\":{\"text\":\"Hi\"}}}}\n\n\
                    event: message-end\ndata: {\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"COMPLETE\",\"usage\":{\"billed_units\":{\"input_tokens\":5,\"output_tokens\":2},\"tokens\":{\"input_tokens\":70,\"output_tokens\":2}}}}\n\n";
        assert_eq!(
            cohere("/v2/chat", body, true),
            usage(Some(70), Some(2), None)
        );
        assert_eq!(
            cohere("/v2/chat", &crlf(body), true),
            usage(Some(70), Some(2), None)
        );
    }

    #[test]
    fn cohere_v1_ndjson_stream_end() {
        let body = "{\"is_finished\":false,\"event_type\":\"stream-start\",\"generation_id\":\"g\"}\n\
                    {\"is_finished\":false,\"event_type\":\"text-generation\",\"text\":\"Hi\"}\n\
                    {\"is_finished\":true,\"event_type\":\"stream-end\",\"response\":{\"response_id\":\"r\",\"text\":\"Hi\",\"meta\":{\"billed_units\":{\"input_tokens\":4,\"output_tokens\":1},\"tokens\":{\"input_tokens\":60,\"output_tokens\":1}}},\"finish_reason\":\"COMPLETE\"}\n";
        assert_eq!(
            cohere("/v1/chat", body, false),
            usage(Some(4), Some(1), None)
        );
        // Truncated before stream-end: nothing, but no panic.
        let cut = body.find("stream-end").unwrap();
        assert_eq!(cohere("/v1/chat", &body[..cut], false), Usage::default());
    }

    #[test]
    fn opaque_extracts_nothing() {
        let u = extracted(
            WireFormat::Opaque,
            "/v1/predictions",
            OPENAI_CHAT.as_bytes(),
            false,
        );
        assert_eq!(u, Usage::default());
    }

    // --- request_model ------------------------------------------------------------------------

    #[test]
    fn request_model_from_body() {
        let body = br#"  {"messages":[{"role":"user","content":"\"model\":\"nope\""}],"model":"gpt-4o","stream":true}"#;
        for wire in [
            WireFormat::OpenAi,
            WireFormat::Anthropic,
            WireFormat::Cohere,
        ] {
            assert_eq!(
                request_model(wire, "/chat/completions", body),
                Some("gpt-4o".into())
            );
        }
        let nested = br#"{"input":{"model":"inner"},"model":"outer"}"#;
        assert_eq!(
            request_model(WireFormat::OpenAi, "/responses", nested),
            Some("outer".into())
        );
        // Found before the truncation point.
        let cut = br#"{"model":"claude-3-5-haiku-latest","messages":[{"role":"us"#;
        assert_eq!(
            request_model(WireFormat::Anthropic, "/v1/messages", cut),
            Some("claude-3-5-haiku-latest".into())
        );
    }

    #[test]
    fn the_model_scan_answers_as_the_walk_does() {
        let found = |body: &[u8]| match scan_model(body) {
            Scanned::Found(model) => Some(model.to_owned()),
            other => panic!("{other:?} for {}", String::from_utf8_lossy(body)),
        };
        for body in [
            &br#"{"model":"gpt-4o-mini","messages":[]}"#[..],
            br#"{"messages":[{"role":"user","content":"say \"model\": {\"x\"} ]"}],"model":"gpt-4o"}"#,
            br#" { "stream" : true , "n":1.5e3, "stop":null, "model" : "m" } "#,
            br#"{"input":{"model":"inner","a":[1,[2,{"b":"]"}]]},"model":"outer"}"#,
            br#"{"model":"","model":"second"}"#,
            br#"{"model":null,"tools":[],"model":"third"}"#,
            br#"{"model":"cut before the end","messages":[{"role":"us"#,
            "{\"model\":\"caf\u{e9}\"}".as_bytes(),
        ] {
            assert_eq!(found(body), walk_model(body), "{}", String::from_utf8_lossy(body));
        }
        for body in [
            &br#"{}"#[..],
            br#"{"messages":[{"model":"nested"}],"model":42}"#,
        ] {
            assert_eq!(scan_model(body), Scanned::Absent);
            assert_eq!(walk_model(body), None);
        }
        // Left to the walk: escapes in a key or the model, cut or malformed bodies.
        for body in [
            &br#"{"mod\u0065l":"escaped-key"}"#[..],
            br#"{"model":"a\/b"}"#,
            br#"{"messages":[{"role":"us"#,
            br#"{"model" "x"}"#,
            br#"{"a":1]"#,
            b"{\"model\":\"\xff\"}",
        ] {
            assert_eq!(
                scan_model(body),
                Scanned::Unsure,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(
            body_model(br#"{"mod\u0065l":"escaped-key"}"#).as_deref(),
            Some("escaped-key")
        );
        assert_eq!(body_model(br#"{"model":"a\/b"}"#).as_deref(), Some("a/b"));
    }

    #[test]
    fn request_model_absent_or_garbage() {
        for body in [
            &b""[..],
            b"[{\"model\":\"x\"}]",
            b"model=gpt-4o",
            b"--boundary\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1",
            b"{\"model\":null}",
            b"{\"model\":\"\"}",
            b"{\"model\":42}",
            b"{\"messages\":[]}",
            b"{\"mod",
            b"\xff\xfe",
        ] {
            assert_eq!(
                request_model(WireFormat::OpenAi, "/chat/completions", body),
                None,
                "{body:?}"
            );
        }
        assert_eq!(
            request_model(WireFormat::Opaque, "/x", br#"{"model":"m"}"#),
            None
        );
    }

    #[test]
    fn request_model_azure_falls_back_to_body() {
        assert_eq!(
            request_model(WireFormat::OpenAi, "/gpt4o-deploy/chat/completions", b"{}"),
            None
        );
        assert_eq!(
            request_model(
                WireFormat::OpenAi,
                "/gpt4o-deploy/chat/completions",
                br#"{"model":"gpt-4o"}"#
            ),
            Some("gpt-4o".into())
        );
    }

    #[test]
    fn request_model_workers_ai_path() {
        let body = br#"{"prompt":"hi","model":"ignored"}"#;
        assert_eq!(
            request_model(
                WireFormat::WorkersAi,
                "/@cf/meta/llama-3.1-8b-instruct",
                body
            ),
            Some("@cf/meta/llama-3.1-8b-instruct".into())
        );
        assert_eq!(
            request_model(
                WireFormat::WorkersAi,
                "@hf/thebloke/zephyr-7b-beta-awq?x=1",
                b""
            ),
            Some("@hf/thebloke/zephyr-7b-beta-awq".into())
        );
        assert_eq!(
            request_model(
                WireFormat::WorkersAi,
                "/v1/chat/completions",
                br#"{"model":"@cf/a/b"}"#
            ),
            Some("@cf/a/b".into())
        );
        assert_eq!(request_model(WireFormat::WorkersAi, "/", b""), None);
    }

    #[test]
    fn request_model_google_path() {
        let g = |p: &str| request_model(WireFormat::GoogleAiStudio, p, b"{\"contents\":[]}");
        assert_eq!(
            g("/v1beta/models/gemini-1.5-flash:generateContent"),
            Some("gemini-1.5-flash".into())
        );
        assert_eq!(
            g("/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"),
            Some("gemini-2.5-pro".into())
        );
        assert_eq!(
            g("/v1/models/text-embedding-004:embedContent"),
            Some("text-embedding-004".into())
        );
        assert_eq!(
            g("/v1beta/tunedModels/my-tune-1:generateContent"),
            Some("my-tune-1".into())
        );
        assert_eq!(g("/v1beta/models/:generateContent"), None);
        assert_eq!(g("/v1beta/models"), None);
        assert_eq!(
            request_model(
                WireFormat::GoogleAiStudio,
                "/v1beta/openai/chat/completions",
                br#"{"model":"gemini-2.0-flash"}"#
            ),
            Some("gemini-2.0-flash".into())
        );
    }

    // --- model_type ---------------------------------------------------------------------------

    #[test]
    fn model_type_rules() {
        for (path, want) in [
            ("/chat/completions", "chat"),
            ("/v1/chat/completions?x=1", "chat"),
            ("/deployment/chat/completions/", "chat"),
            ("/v1/messages", "chat"),
            ("/v1/chat", "chat"),
            ("/v2/chat", "chat"),
            ("/v1/responses", "chat"),
            ("/v1beta/models/gemini-1.5-flash:generateContent", "chat"),
            (
                "/v1beta/models/gemini-1.5-flash:streamGenerateContent?alt=sse",
                "chat",
            ),
            ("/completions", "completion"),
            ("/v1/completions", "completion"),
            ("/v1/complete", "completion"),
            ("/embeddings", "embedding"),
            ("/v1/embed", "embedding"),
            ("/v2/embed", "embedding"),
            (
                "/v1beta/models/text-embedding-004:embedContent",
                "embedding",
            ),
            (
                "/v1beta/models/text-embedding-004:batchEmbedContents",
                "embedding",
            ),
            ("/images/generations", "image"),
            ("/dep/images/edits", "image"),
            ("/audio/transcriptions", "audio"),
            ("/v1/audio/speech", "audio"),
            ("/@cf/meta/llama-3.1-8b-instruct", "other"),
            ("/v1/messages/count_tokens", "other"),
            ("/v1/responses/resp_123", "other"),
            ("/v1/models", "other"),
            ("", "other"),
            ("/", "other"),
        ] {
            assert_eq!(model_type(path), want, "{path}");
        }
    }

    #[test]
    fn has_key_ignores_null_and_string_values() {
        assert!(has_key(br#"{"usage": {"a":1}}"#, &USAGE));
        assert!(has_key(br#"{"usage" :0}"#, &USAGE));
        assert!(!has_key(br#"{"usage": null}"#, &USAGE));
        assert!(!has_key(br#"{"type":"usage"}"#, &USAGE));
        assert!(!has_key(br#"{"text":"\"usage\": 1"}"#, &USAGE));
        assert!(has_key(br#"{"usage":null,"x":{"usage":{}}}"#, &USAGE));
        assert!(!has_key(br#"{"usage""#, &USAGE));
    }

    #[test]
    fn usage_is_found_in_the_tail_of_a_cut_response() {
        let openai_json = br#"lots of text","refusal":null}}],"usage":{"prompt_tokens":7,"completion_tokens":9000,"total_tokens":9007}}"#;
        let u = extract_usage_tail(WireFormat::OpenAi, "/chat/completions", openai_json, false);
        assert_eq!((u.tokens_in, u.tokens_out), (Some(7), Some(9000)));
        let anthropic_json = br#"more text"}],"stop_reason":"end_turn","usage":{"input_tokens":4,"output_tokens":10000}}"#;
        let u = extract_usage_tail(WireFormat::Anthropic, "/v1/messages", anthropic_json, false);
        assert_eq!((u.tokens_in, u.tokens_out), (Some(4), Some(10000)));
        let workers = br#"ds"},"usage":{"prompt_tokens":3,"completion_tokens":44,"total_tokens":47}},"success":true,"errors":[]}"#;
        let u = extract_usage_tail(WireFormat::WorkersAi, "/@cf/meta/llama", workers, false);
        assert_eq!((u.tokens_in, u.tokens_out), (Some(3), Some(44)));
        let google = br#"xt"}]}}],"usageMetadata":{"promptTokenCount":2,"candidatesTokenCount":77},"modelVersion":"g"}"#;
        let u = extract_usage_tail(
            WireFormat::GoogleAiStudio,
            "/v1beta/models/g:generateContent",
            google,
            false,
        );
        assert_eq!((u.tokens_in, u.tokens_out), (Some(2), Some(77)));
        let sse = b"tial line\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":123}}\n\ndata: [DONE]\n\n";
        let u = extract_usage_tail(WireFormat::OpenAi, "/chat/completions", sse, true);
        assert_eq!((u.tokens_in, u.tokens_out), (Some(5), Some(123)));
        let anthropic_sse = b"ext\"}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":10000}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let u = extract_usage_tail(WireFormat::Anthropic, "/v1/messages", anthropic_sse, true);
        assert_eq!(u.tokens_out, Some(10000));
        assert_eq!(
            extract_usage_tail(WireFormat::OpenAi, "/x", b"no usage here", false),
            Usage::default()
        );
    }
}
