//! Tool calls: a request that offers tools is answered with a call to the first one, with the
//! arguments [`ARGUMENTS`], in each provider's own wire format (JSON and streamed).

use serde_json::{Value, json};

use http::{Response, StatusCode};

use crate::body::MockBody;
use crate::respond::{Ctx, Id, unix_now};
use crate::sse::{Framing, StreamWriter};
use crate::tokens::count_words;

/// A tool-call answer: one JSON body, or a stream.
pub(crate) enum Answer {
    Json(Value),
    Stream(StreamWriter),
}

impl Answer {
    /// The response carrying it (faults applied as for any answer).
    pub(crate) fn respond(self, ctx: &Ctx<'_>) -> Response<MockBody> {
        match self {
            Answer::Json(body) => ctx.json(StatusCode::OK, &body),
            Answer::Stream(w) => ctx.stream(w),
        }
    }
}

/// A writer for a server-sent-events tool-call stream.
fn sse() -> StreamWriter {
    StreamWriter::new(Framing::Sse, 8)
}

/// The arguments of every mock tool call.
pub(crate) const ARGUMENTS: &str = r#"{"location":"Paris"}"#;

/// [`ARGUMENTS`] in the pieces a stream sends them in.
pub(crate) const ARGUMENT_PIECES: [&str; 2] = [r#"{"location":"#, r#""Paris"}"#];

/// Completion tokens of a tool call (the words of its arguments).
pub(crate) fn tokens() -> u64 {
    count_words(ARGUMENTS)
}

/// The arguments as a JSON object.
pub(crate) fn arguments() -> Value {
    json!({"location": "Paris"})
}

/// The name of the first tool of a request's `tools`, whatever the provider's shape:
/// `{name}` (Anthropic, Workers AI), `{function: {name}}` (OpenAI, Cohere, Workers AI) or
/// `{functionDeclarations: [{name}]}` (Google).
pub(crate) fn first_tool(tools: Option<&Value>) -> Option<String> {
    tools?.as_array()?.iter().find_map(|tool| {
        let name = tool
            .get("name")
            .or_else(|| tool.get("function")?.get("name"))
            .or_else(|| tool.get("functionDeclarations")?.get(0)?.get("name"))?;
        name.as_str().map(str::to_owned)
    })
}

/// OpenAI chat completions: the answer (JSON or streamed) calling `name`.
pub(crate) fn openai_chat(
    name: &str,
    model: &str,
    prompt: u64,
    stream: bool,
    include_usage: bool,
) -> Answer {
    let id = Id::new("call_").to_string();
    let usage = json!({"prompt_tokens": prompt, "completion_tokens": tokens(), "total_tokens": prompt + tokens()});
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-mocktool", "object": "chat.completion.chunk", "created": unix_now(),
               "model": model, "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    };
    if !stream {
        return Answer::Json(json!({
            "id": Id::new("chatcmpl-"), "object": "chat.completion", "created": unix_now(), "model": model,
            "choices": [{"index": 0, "logprobs": null, "finish_reason": "tool_calls",
                "message": {"role": "assistant", "content": null, "refusal": null,
                    "tool_calls": [{"id": id, "type": "function", "function": {"name": name, "arguments": ARGUMENTS}}]}}],
            "usage": usage,
        }));
    }
    let mut w = sse();
    w.data(&chunk(
        json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": id, "type": "function",
               "function": {"name": name, "arguments": ""}}]}),
        Value::Null,
    ));
    for piece in ARGUMENT_PIECES {
        w.data(&chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
            Value::Null,
        ));
    }
    w.data(&chunk(json!({}), json!("tool_calls")));
    if include_usage {
        let mut last = chunk(json!({}), Value::Null);
        last["choices"] = json!([]);
        last["usage"] = usage;
        w.data(&last);
    }
    w.done();
    Answer::Stream(w)
}

/// Anthropic Messages: the answer (JSON or streamed) with a `tool_use` block calling `name`.
pub(crate) fn anthropic(name: &str, model: &str, input_tokens: u64, stream: bool) -> Answer {
    let id = Id::new("toolu_").to_string();
    let message = |content: Value, stop: Value, output: u64| {
        json!({"id": Id::new("msg_"), "type": "message", "role": "assistant", "model": model,
               "content": content, "stop_reason": stop, "stop_sequence": null,
               "usage": {"input_tokens": input_tokens, "output_tokens": output}})
    };
    if !stream {
        let block = json!([{"type": "tool_use", "id": id, "name": name, "input": arguments()}]);
        return Answer::Json(message(block, json!("tool_use"), tokens()));
    }
    let mut w = sse();
    let mut emit = |event: &str, data: Value| w.event(Some(event), &data);
    emit(
        "message_start",
        json!({"type": "message_start", "message": message(json!([]), Value::Null, 1)}),
    );
    emit(
        "content_block_start",
        json!({"type": "content_block_start", "index": 0,
               "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
    );
    for piece in ARGUMENT_PIECES {
        emit(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
                   "delta": {"type": "input_json_delta", "partial_json": piece}}),
        );
    }
    emit(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    );
    emit(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
               "usage": {"output_tokens": tokens()}}),
    );
    emit("message_stop", json!({"type": "message_stop"}));
    Answer::Stream(w)
}

/// Cohere v2 chat: the answer (JSON or streamed) with a tool plan and a call to `name`.
pub(crate) fn cohere(name: &str, input_tokens: u64, stream: bool) -> Answer {
    let call_id = format!("{name}_{}", Id::new(""));
    let plan = format!("I will call {name}.");
    let counts = json!({"input_tokens": input_tokens, "output_tokens": tokens()});
    let usage = json!({"billed_units": counts, "tokens": counts});
    if !stream {
        return Answer::Json(json!({
            "id": Id::new(""), "finish_reason": "TOOL_CALL", "usage": usage,
            "message": {"role": "assistant", "tool_plan": plan, "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": name, "arguments": ARGUMENTS}}]},
        }));
    }
    let mut w = sse();
    let mut emit = |event: &str, data: Value| w.event(Some(event), &data);
    emit(
        "message-start",
        json!({"id": Id::new(""), "type": "message-start", "delta": {"message": {"role": "assistant",
               "content": [], "tool_plan": "", "tool_calls": [], "citations": []}}}),
    );
    emit(
        "tool-plan-delta",
        json!({"type": "tool-plan-delta", "delta": {"message": {"tool_plan": plan}}}),
    );
    emit(
        "tool-call-start",
        json!({"type": "tool-call-start", "index": 0, "delta": {"message": {"tool_calls":
               {"id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}}}}),
    );
    for piece in ARGUMENT_PIECES {
        emit(
            "tool-call-delta",
            json!({"type": "tool-call-delta", "index": 0,
                   "delta": {"message": {"tool_calls": {"function": {"arguments": piece}}}}}),
        );
    }
    emit(
        "tool-call-end",
        json!({"type": "tool-call-end", "index": 0}),
    );
    emit(
        "message-end",
        json!({"type": "message-end", "delta": {"finish_reason": "TOOL_CALL", "usage": usage}}),
    );
    Answer::Stream(w)
}

/// Workers AI: the answer (JSON or streamed) with a traditional `tool_calls` entry for `name`.
pub(crate) fn workers_ai(name: &str, prompt: u64, stream: bool) -> Answer {
    let calls = json!([{"name": name, "arguments": arguments()}]);
    let usage = json!({"prompt_tokens": prompt, "completion_tokens": tokens(), "total_tokens": prompt + tokens()});
    if !stream {
        return Answer::Json(json!({
            "result": {"response": null, "tool_calls": calls, "usage": usage},
            "success": true, "errors": [], "messages": [],
        }));
    }
    let mut w = sse();
    w.data(&json!({"response": "", "tool_calls": calls, "p": "abc"}));
    w.data(&json!({"response": "", "usage": usage}));
    w.done();
    Answer::Stream(w)
}

/// Google AI Studio: a `GenerateContentResponse` with a `functionCall` part calling `name`
/// (the whole answer, or the one chunk of a stream).
pub(crate) fn google(name: &str, model: &str, prompt: u64) -> Value {
    json!({
        "candidates": [{"content": {"role": "model",
            "parts": [{"functionCall": {"name": name, "args": arguments()}}]},
            "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": prompt, "candidatesTokenCount": tokens(),
                          "totalTokenCount": prompt + tokens()},
        "modelVersion": model,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_tool_is_found_in_every_shape() {
        let first = |v: Value| first_tool(Some(&v));
        assert_eq!(
            first(json!([{"name": "a"}, {"name": "b"}])).as_deref(),
            Some("a")
        );
        assert_eq!(
            first(json!([{"type": "function", "function": {"name": "f"}}])).as_deref(),
            Some("f")
        );
        assert_eq!(
            first(json!([{"googleSearch": {}}, {"functionDeclarations": [{"name": "g"}]}]))
                .as_deref(),
            Some("g")
        );
        assert_eq!(first(json!([])), None);
        assert_eq!(first_tool(None), None);
        let pieces: String = ARGUMENT_PIECES.concat();
        assert_eq!(pieces, ARGUMENTS);
        assert_eq!(
            serde_json::from_str::<Value>(ARGUMENTS).unwrap(),
            arguments()
        );
    }
}
