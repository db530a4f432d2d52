//! The Cohere v2 chat wire format (`POST /v2/chat`).

use http::{Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::body::MockBody;
use crate::respond::{Ctx, EmptyList, ErrorStyle, Id};
use crate::sse::{Framing, StreamWriter};
use crate::tokens::Words;
use crate::tools;

#[derive(Deserialize)]
struct ChatRequest {
    #[serde(default)]
    messages: Words,
    stream: Option<bool>,
    tools: Option<serde_json::Value>,
}

#[derive(Clone, Copy, Serialize)]
struct Tokens {
    input_tokens: u64,
    output_tokens: u64,
}

#[derive(Clone, Copy, Serialize)]
struct Usage {
    billed_units: Tokens,
    tokens: Tokens,
}

#[derive(Serialize)]
struct ChatResponse<'a> {
    id: Id,
    finish_reason: &'static str,
    message: AssistantMessage<'a>,
    usage: Usage,
}

#[derive(Serialize)]
struct AssistantMessage<'a> {
    role: &'static str,
    content: [TextContent<'a>; 1],
}

#[derive(Serialize)]
struct TextContent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

#[derive(Serialize)]
struct StartMessage {
    role: &'static str,
    content: EmptyList,
    tool_plan: &'static str,
    tool_calls: EmptyList,
    citations: EmptyList,
}

#[derive(Serialize)]
struct Wrap<T> {
    message: T,
}

#[derive(Serialize)]
struct ContentWrap<T> {
    content: T,
}

#[derive(Serialize)]
struct DeltaText<'a> {
    text: &'a str,
}

#[derive(Serialize)]
struct EndDelta {
    finish_reason: &'static str,
    usage: Usage,
}

/// Cohere v2 stream events; each is also sent as the SSE `event:` name.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
enum StreamEvent<'a> {
    MessageStart {
        id: Id,
        delta: Wrap<StartMessage>,
    },
    ContentStart {
        index: u32,
        delta: Wrap<ContentWrap<TextContent<'a>>>,
    },
    ContentDelta {
        index: u32,
        delta: Wrap<ContentWrap<DeltaText<'a>>>,
    },
    ContentEnd {
        index: u32,
    },
    MessageEnd {
        delta: EndDelta,
    },
}

impl StreamEvent<'_> {
    fn name(&self) -> &'static str {
        match self {
            StreamEvent::MessageStart { .. } => "message-start",
            StreamEvent::ContentStart { .. } => "content-start",
            StreamEvent::ContentDelta { .. } => "content-delta",
            StreamEvent::ContentEnd { .. } => "content-end",
            StreamEvent::MessageEnd { .. } => "message-end",
        }
    }
}

/// Appends `event` to `w` under its own name.
fn emit(w: &mut StreamWriter, event: StreamEvent<'_>) {
    w.event(Some(event.name()), &event);
}

/// `POST /v2/chat`.
pub(crate) fn chat(ctx: &Ctx<'_>, body: &[u8]) -> Response<MockBody> {
    let req: ChatRequest = match ctx.parse(ErrorStyle::OpenAi, body) {
        Ok(req) => req,
        Err(response) => return *response,
    };
    if let Some(name) = tools::first_tool(req.tools.as_ref()) {
        return tools::cohere(&name, req.messages.0, req.stream == Some(true)).respond(ctx);
    }
    let tokens = Tokens {
        input_tokens: req.messages.0,
        output_tokens: ctx.reply.tokens(),
    };
    let usage = Usage {
        billed_units: tokens,
        tokens,
    };
    let id = Id::new("");
    if req.stream != Some(true) {
        return ctx.json(
            StatusCode::OK,
            &ChatResponse {
                id,
                finish_reason: "COMPLETE",
                message: AssistantMessage {
                    role: "assistant",
                    content: [TextContent {
                        kind: "text",
                        text: ctx.reply.text(),
                    }],
                },
                usage,
            },
        );
    }

    let mut w = StreamWriter::new(Framing::Sse, ctx.reply.tokens() as usize + 4);
    emit(
        &mut w,
        StreamEvent::MessageStart {
            id,
            delta: Wrap {
                message: StartMessage {
                    role: "assistant",
                    content: EmptyList,
                    tool_plan: "",
                    tool_calls: EmptyList,
                    citations: EmptyList,
                },
            },
        },
    );
    emit(
        &mut w,
        StreamEvent::ContentStart {
            index: 0,
            delta: Wrap {
                message: ContentWrap {
                    content: TextContent {
                        kind: "text",
                        text: "",
                    },
                },
            },
        },
    );
    for text in ctx.reply.pieces() {
        emit(
            &mut w,
            StreamEvent::ContentDelta {
                index: 0,
                delta: Wrap {
                    message: ContentWrap {
                        content: DeltaText { text },
                    },
                },
            },
        );
    }
    emit(&mut w, StreamEvent::ContentEnd { index: 0 });
    emit(
        &mut w,
        StreamEvent::MessageEnd {
            delta: EndDelta {
                finish_reason: "COMPLETE",
                usage,
            },
        },
    );
    ctx.stream(w)
}
