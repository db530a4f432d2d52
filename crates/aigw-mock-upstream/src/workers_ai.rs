//! The Cloudflare Workers AI wire format
//! (`POST /client/v4/accounts/{account}/ai/run/{model}`).

use http::{Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::body::MockBody;
use crate::respond::{Ctx, EmptyList, ErrorStyle};
use crate::sse::{Framing, StreamWriter};
use crate::tokens::Words;
use crate::tools;

#[derive(Deserialize)]
struct RunRequest {
    #[serde(default)]
    prompt: Words,
    #[serde(default)]
    messages: Words,
    stream: Option<bool>,
    tools: Option<serde_json::Value>,
}

#[derive(Clone, Copy, Serialize)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

#[derive(Serialize)]
struct Envelope<'a> {
    result: RunResult<'a>,
    success: bool,
    errors: EmptyList,
    messages: EmptyList,
}

#[derive(Serialize)]
struct RunResult<'a> {
    response: &'a str,
    usage: Usage,
}

#[derive(Serialize)]
struct StreamChunk<'a> {
    response: &'a str,
    p: &'static str,
}

/// `POST /client/v4/accounts/{account}/ai/run/{model}` (the model is not
/// echoed by Workers AI, so it is not needed here).
pub(crate) fn run(ctx: &Ctx<'_>, body: &[u8]) -> Response<MockBody> {
    let req: RunRequest = match ctx.parse(ErrorStyle::OpenAi, body) {
        Ok(req) => req,
        Err(response) => return *response,
    };
    let prompt_tokens = req.prompt.0 + req.messages.0;
    if let Some(name) = tools::first_tool(req.tools.as_ref()) {
        return tools::workers_ai(&name, prompt_tokens, req.stream == Some(true)).respond(ctx);
    }
    let completion_tokens = ctx.reply.tokens();
    let usage = Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens + completion_tokens,
    };
    if req.stream != Some(true) {
        return ctx.json(
            StatusCode::OK,
            &Envelope {
                result: RunResult {
                    response: ctx.reply.text(),
                    usage,
                },
                success: true,
                errors: EmptyList,
                messages: EmptyList,
            },
        );
    }

    let mut w = StreamWriter::new(Framing::Sse, ctx.reply.tokens() as usize + 2);
    for response in ctx.reply.pieces() {
        w.data(&StreamChunk { response, p: "abc" });
    }
    w.data(&RunResult {
        response: "",
        usage,
    });
    w.done();
    ctx.stream(w)
}
