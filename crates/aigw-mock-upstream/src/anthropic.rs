//! The Anthropic Messages wire format (`POST /v1/messages` and
//! `POST /v1/messages/count_tokens`).

use std::borrow::Cow;

use http::{Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::body::MockBody;
use crate::respond::{Ctx, ErrorStyle, Id, Null};
use crate::sse::{Framing, StreamWriter};
use crate::tokens::Words;
use crate::tools;

#[derive(Deserialize)]
struct MessagesRequest<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    messages: Words,
    #[serde(default)]
    system: Words,
    stream: Option<bool>,
    tools: Option<serde_json::Value>,
}

impl MessagesRequest<'_> {
    fn input_tokens(&self) -> u64 {
        self.messages.0 + self.system.0
    }
}

#[derive(Clone, Copy, Serialize)]
struct Message<'a> {
    id: Id,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: &'a [TextBlock<'a>],
    stop_reason: Option<&'static str>,
    stop_sequence: Null,
    usage: Usage,
}

#[derive(Clone, Copy, Serialize)]
struct TextBlock<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

#[derive(Clone, Copy, Serialize)]
struct Usage {
    input_tokens: u64,
    output_tokens: u64,
}

#[derive(Serialize)]
struct TextDelta<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

#[derive(Serialize)]
struct StopDelta {
    stop_reason: &'static str,
    stop_sequence: Null,
}

#[derive(Serialize)]
struct OutputUsage {
    output_tokens: u64,
}

/// Messages stream events; each is also sent as the SSE `event:` name.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamEvent<'a> {
    MessageStart {
        message: Message<'a>,
    },
    ContentBlockStart {
        index: u32,
        content_block: TextBlock<'a>,
    },
    Ping,
    ContentBlockDelta {
        index: u32,
        delta: TextDelta<'a>,
    },
    ContentBlockStop {
        index: u32,
    },
    MessageDelta {
        delta: StopDelta,
        usage: OutputUsage,
    },
    MessageStop,
}

impl StreamEvent<'_> {
    fn name(&self) -> &'static str {
        match self {
            StreamEvent::MessageStart { .. } => "message_start",
            StreamEvent::ContentBlockStart { .. } => "content_block_start",
            StreamEvent::Ping => "ping",
            StreamEvent::ContentBlockDelta { .. } => "content_block_delta",
            StreamEvent::ContentBlockStop { .. } => "content_block_stop",
            StreamEvent::MessageDelta { .. } => "message_delta",
            StreamEvent::MessageStop => "message_stop",
        }
    }
}

/// Appends `event` to `w` under its own name.
fn emit(w: &mut StreamWriter, event: StreamEvent<'_>) {
    w.event(Some(event.name()), &event);
}

/// `POST /v1/messages`.
pub(crate) fn messages(ctx: &Ctx<'_>, body: &[u8]) -> Response<MockBody> {
    let req: MessagesRequest<'_> = match ctx.parse(ErrorStyle::Anthropic, body) {
        Ok(req) => req,
        Err(response) => return *response,
    };
    let input_tokens = req.input_tokens();
    let model = req.model.as_deref().unwrap_or_default();
    if let Some(name) = tools::first_tool(req.tools.as_ref()) {
        let stream = req.stream == Some(true);
        return tools::anthropic(&name, model, input_tokens, stream).respond(ctx);
    }
    let output_tokens = ctx.reply.tokens();
    let content = [TextBlock {
        kind: "text",
        text: ctx.reply.text(),
    }];
    let message = Message {
        id: Id::new("msg_"),
        kind: "message",
        role: "assistant",
        model,
        content: &content,
        stop_reason: Some("end_turn"),
        stop_sequence: Null,
        usage: Usage {
            input_tokens,
            output_tokens,
        },
    };
    if req.stream != Some(true) {
        return ctx.json(StatusCode::OK, &message);
    }

    let mut w = StreamWriter::new(Framing::Sse, ctx.reply.tokens() as usize + 6);
    emit(
        &mut w,
        StreamEvent::MessageStart {
            message: Message {
                content: &[],
                stop_reason: None,
                usage: Usage {
                    input_tokens,
                    output_tokens: 1,
                },
                ..message
            },
        },
    );
    emit(
        &mut w,
        StreamEvent::ContentBlockStart {
            index: 0,
            content_block: TextBlock {
                kind: "text",
                text: "",
            },
        },
    );
    emit(&mut w, StreamEvent::Ping);
    for text in ctx.reply.pieces() {
        emit(
            &mut w,
            StreamEvent::ContentBlockDelta {
                index: 0,
                delta: TextDelta {
                    kind: "text_delta",
                    text,
                },
            },
        );
    }
    emit(&mut w, StreamEvent::ContentBlockStop { index: 0 });
    emit(
        &mut w,
        StreamEvent::MessageDelta {
            delta: StopDelta {
                stop_reason: "end_turn",
                stop_sequence: Null,
            },
            usage: OutputUsage { output_tokens },
        },
    );
    emit(&mut w, StreamEvent::MessageStop);
    ctx.stream(w)
}

#[derive(Serialize)]
struct TokenCount {
    input_tokens: u64,
}

/// `POST /v1/messages/count_tokens`.
pub(crate) fn count_tokens(ctx: &Ctx<'_>, body: &[u8]) -> Response<MockBody> {
    match ctx.parse::<MessagesRequest<'_>>(ErrorStyle::Anthropic, body) {
        Ok(req) => ctx.json(
            StatusCode::OK,
            &TokenCount {
                input_tokens: req.input_tokens(),
            },
        ),
        Err(response) => *response,
    }
}
