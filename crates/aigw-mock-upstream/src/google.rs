//! The Google AI Studio (Gemini) wire format
//! (`POST /v1beta/models/{model}:generateContent` and
//! `:streamGenerateContent`, as SSE with `?alt=sse`, else as a JSON array).

use http::{Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::body::MockBody;
use crate::respond::{Ctx, ErrorStyle};
use crate::sse::{Framing, StreamWriter};
use crate::tokens::Words;
use crate::tools;

#[derive(Deserialize)]
struct GenerateRequest {
    #[serde(default)]
    contents: Words,
    #[serde(default, rename = "systemInstruction", alias = "system_instruction")]
    system_instruction: Words,
    tools: Option<serde_json::Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerateResponse<'a> {
    candidates: [Candidate<'a>; 1],
    usage_metadata: UsageMetadata,
    model_version: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Candidate<'a> {
    content: Content<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finish_reason: Option<&'static str>,
    index: u32,
}

#[derive(Serialize)]
struct Content<'a> {
    parts: [Part<'a>; 1],
    role: &'static str,
}

#[derive(Serialize)]
struct Part<'a> {
    text: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    prompt_token_count: u64,
    candidates_token_count: u64,
    total_token_count: u64,
}

impl UsageMetadata {
    fn new(prompt: u64, candidates: u64) -> Self {
        Self {
            prompt_token_count: prompt,
            candidates_token_count: candidates,
            total_token_count: prompt + candidates,
        }
    }
}

fn generate_response<'a>(
    model: &'a str,
    text: &'a str,
    finish_reason: Option<&'static str>,
    usage_metadata: UsageMetadata,
) -> GenerateResponse<'a> {
    GenerateResponse {
        candidates: [Candidate {
            content: Content {
                parts: [Part { text }],
                role: "model",
            },
            finish_reason,
            index: 0,
        }],
        usage_metadata,
        model_version: model,
    }
}

/// How a `generateContent`-family request wants its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `:generateContent`: one JSON object.
    Unary,
    /// `:streamGenerateContent`, framed as given.
    Stream(Framing),
}

/// `POST /v1beta/models/{model}:generateContent` / `:streamGenerateContent`.
pub(crate) fn generate(ctx: &Ctx<'_>, model: &str, mode: Mode, body: &[u8]) -> Response<MockBody> {
    let req: GenerateRequest = match ctx.parse(ErrorStyle::OpenAi, body) {
        Ok(req) => req,
        Err(response) => return *response,
    };
    let prompt = req.contents.0 + req.system_instruction.0;
    if let Some(name) = tools::first_tool(req.tools.as_ref()) {
        let answer = tools::google(&name, model, prompt);
        return match mode {
            Mode::Unary => ctx.json(StatusCode::OK, &answer),
            Mode::Stream(framing) => {
                let mut w = StreamWriter::new(framing, 1);
                w.data(&answer);
                ctx.stream(w)
            }
        };
    }
    let framing = match mode {
        Mode::Unary => {
            let usage = UsageMetadata::new(prompt, ctx.reply.tokens());
            return ctx.json(
                StatusCode::OK,
                &generate_response(model, ctx.reply.text(), Some("STOP"), usage),
            );
        }
        Mode::Stream(framing) => framing,
    };

    let total = ctx.reply.tokens();
    let mut w = StreamWriter::new(framing, total as usize + 1);
    if total == 0 {
        w.data(&generate_response(
            model,
            "",
            Some("STOP"),
            UsageMetadata::new(prompt, 0),
        ));
    }
    for (i, text) in (1..).zip(ctx.reply.pieces()) {
        let finish_reason = (i == total).then_some("STOP");
        w.data(&generate_response(
            model,
            text,
            finish_reason,
            UsageMetadata::new(prompt, i),
        ));
    }
    ctx.stream(w)
}
