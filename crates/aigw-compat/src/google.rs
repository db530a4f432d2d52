//! Google AI Studio (Gemini) `generateContent` / `streamGenerateContent?alt=sse`.

use serde_json::{Map, Value, json};

use crate::CompatError;
use crate::chat::{Chat, Message, Part, ResponseFormat, ToolChoice, data_url, push_turn};
use crate::openai::{Event, Usage};
use crate::response::{Decode, ToolIndexes, str_of, whole_tool_call};
use crate::sse::SseEvent;

/// Appends `parts` as a `role` turn (Gemini wants the responses to parallel function calls in
/// one turn).
fn push(contents: &mut Vec<Value>, role: &str, parts: Vec<Value>) {
    push_turn(contents, role, "parts", parts);
}

/// A tool result as the `response` object Gemini takes: a JSON object as is, anything else
/// under `result`.
fn function_response(content: &str) -> Value {
    match serde_json::from_str::<Value>(content) {
        Ok(v @ Value::Object(_)) => v,
        Ok(v) => json!({"result": v}),
        Err(_) => json!({"result": content}),
    }
}

/// The `generateContent` request body (the model and streaming go in the URL).
pub(crate) fn request(chat: &Chat) -> Result<Value, CompatError> {
    let mut contents = Vec::new();
    for (i, message) in chat.messages.iter().enumerate() {
        match message {
            Message::System(_) => {}
            Message::User(parts) => {
                let parts = parts
                    .iter()
                    .enumerate()
                    .map(|(j, p)| match p {
                        Part::Text(text) => Ok(json!({"text": text})),
                        Part::Image(url) => data_url(url)
                            .map(|(mime, data)| json!({"inlineData": {"mimeType": mime, "data": data}}))
                            .ok_or_else(|| {
                                chat.unsupported(format!(
                                    "an image_url that is not a base64 data: URL (messages[{i}].content[{j}])"
                                ))
                            }),
                    })
                    .collect::<Result<_, _>>()?;
                push(&mut contents, "user", parts);
            }
            Message::Assistant { text, tool_calls } => {
                let mut parts = Vec::new();
                if !text.is_empty() {
                    parts.push(json!({"text": text}));
                }
                parts.extend(tool_calls.iter().map(
                    |c| json!({"functionCall": {"name": c.name, "args": c.arguments_object()}}),
                ));
                push(&mut contents, "model", parts);
            }
            Message::Tool { name, content, .. } => push(
                &mut contents,
                "user",
                vec![
                    json!({"functionResponse": {"name": name, "response": function_response(content)}}),
                ],
            ),
        }
    }
    let mut body = Map::new();
    body.insert("contents".into(), Value::Array(contents));
    if let Some(system) = chat.system_text() {
        body.insert(
            "systemInstruction".into(),
            json!({"parts": [{"text": system}]}),
        );
    }
    let mut config = Map::new();
    chat.sampling(
        [
            "maxOutputTokens",
            "temperature",
            "topP",
            "seed",
            "frequencyPenalty",
            "presencePenalty",
            "stopSequences",
        ],
        &mut config,
    );
    if let Some(format) = &chat.response_format {
        config.insert("responseMimeType".into(), json!("application/json"));
        if let ResponseFormat::JsonSchema(schema) = format {
            config.insert("responseJsonSchema".into(), schema.clone());
        }
    }
    if !config.is_empty() {
        body.insert("generationConfig".into(), Value::Object(config));
    }
    if !chat.tools.is_empty() {
        let declarations: Vec<Value> = chat
            .tools
            .iter()
            .map(|t| {
                let mut d = json!({"name": t.name});
                if let Some(desc) = &t.description {
                    d["description"] = json!(desc);
                }
                if let Some(params) = &t.parameters {
                    d["parametersJsonSchema"] = params.clone();
                }
                d
            })
            .collect();
        body.insert(
            "tools".into(),
            json!([{"functionDeclarations": declarations}]),
        );
        let config = match &chat.tool_choice {
            None | Some(ToolChoice::Auto) => None,
            Some(ToolChoice::None) => Some(json!({"mode": "NONE"})),
            Some(ToolChoice::Required) => Some(json!({"mode": "ANY"})),
            Some(ToolChoice::Function(name)) => {
                Some(json!({"mode": "ANY", "allowedFunctionNames": [name]}))
            }
        };
        if let Some(config) = config {
            body.insert(
                "toolConfig".into(),
                json!({"functionCallingConfig": config}),
            );
        }
    }
    Ok(Value::Object(body))
}

fn finish(reason: &str) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            "content_filter"
        }
        _ => "stop",
    }
}

/// Decodes `GenerateContentResponse`s: a whole answer, or each streamed one (same shape).
#[derive(Debug)]
pub(crate) struct Decoder {
    pub(crate) tools: ToolIndexes,
}

impl Decode for Decoder {
    fn json(&mut self, body: &Value, out: &mut Vec<Event>) {
        if let Some(error) = body.get("error") {
            out.push(Event::Error {
                message: str_of(error, "message").to_owned(),
                kind: str_of(error, "status").to_owned(),
            });
            return;
        }
        let candidate = &body["candidates"][0];
        for part in candidate["content"]["parts"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(call) = part.get("functionCall") {
                let index = self.tools.start(self.tools.count());
                let id = self.tools.id(index, call["id"].as_str());
                let name = str_of(call, "name").to_owned();
                whole_tool_call(index, id, name, call.get("args"), out);
            } else if let Some(text) = part["text"].as_str()
                && part["thought"] != true
            {
                out.push(Event::Text(text.to_owned()));
            }
        }
        if let Some(reason) = candidate["finishReason"].as_str() {
            out.push(Event::Finish(finish(reason)));
        } else if body["promptFeedback"]["blockReason"].is_string() {
            out.push(Event::Finish("content_filter"));
        }
        if let Some(u) = body.get("usageMetadata") {
            let n = |k| u.get(k).and_then(Value::as_u64);
            let completion = match (n("candidatesTokenCount"), n("thoughtsTokenCount")) {
                (None, None) => None,
                (c, t) => Some(c.unwrap_or(0) + t.unwrap_or(0)),
            };
            out.push(Event::Usage(Usage {
                prompt: n("promptTokenCount"),
                completion,
                cached: n("cachedContentTokenCount"),
            }));
        }
    }

    fn sse(&mut self, event: &SseEvent, out: &mut Vec<Event>) {
        if let Ok(body) = serde_json::from_str::<Value>(&event.data) {
            self.json(&body, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response::tests::{assert_stream, completion};
    use crate::{CompatRequest, Target, translate_request};

    fn native(body: Value) -> (String, Option<&'static str>, Value) {
        let r = CompatRequest::parse(body.to_string().as_bytes()).unwrap();
        let n = translate_request(Target::GoogleAiStudio, &r).unwrap();
        (n.path, n.query, serde_json::from_slice(&n.body).unwrap())
    }

    #[test]
    fn request_maps_system_tools_history_and_generation_config() {
        let (path, query, body) = native(json!({
        "model": "google-ai-studio/gemini-2.0-flash", "max_completion_tokens": 64, "temperature": 0.2,
        "stop": "END", "seed": 3, "response_format": {"type": "json_object"},
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                   "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/"}}]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 21}"},
            {"role": "assistant", "content": "21 degrees."},
            {"role": "user", "content": "Thanks"}
        ]}));
        assert_eq!(
            (path.as_str(), query),
            ("/v1beta/models/gemini-2.0-flash:generateContent", None)
        );
        assert_eq!(
            body,
            json!({
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "generationConfig": {"maxOutputTokens": 64, "temperature": 0.2, "stopSequences": ["END"],
                                 "seed": 3, "responseMimeType": "application/json"},
            "tools": [{"functionDeclarations": [{"name": "get_weather", "description": "Weather",
                "parametersJsonSchema": {"type": "object", "properties": {"location": {"type": "string"}}}}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
            "contents": [
                {"role": "user", "parts": [{"text": "Weather?"}, {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/"}}]},
                {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"location": "Paris"}}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp": 21}}}]},
                {"role": "model", "parts": [{"text": "21 degrees."}]},
                {"role": "user", "parts": [{"text": "Thanks"}]}
            ]})
        );
    }

    #[test]
    fn streaming_uses_sse_and_url_images_are_refused() {
        let (path, query, body) = native(
            json!({"model": "google-ai-studio/gemini-2.0-flash", "stream": true,
            "messages": []}),
        );
        assert_eq!(
            path,
            "/v1beta/models/gemini-2.0-flash:streamGenerateContent"
        );
        assert_eq!(query, Some("alt=sse"));
        assert_eq!(body, json!({"contents": []}));
        assert_eq!(function_response("plain"), json!({"result": "plain"}));
        assert_eq!(function_response("[1]"), json!({"result": [1]}));

        let r = CompatRequest::parse(
            json!({"model": "google-ai-studio/g", "messages": [{"role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        let err = translate_request(Target::GoogleAiStudio, &r).unwrap_err();
        assert!(
            err.is_unsupported() && err.to_string().contains("google-ai-studio"),
            "{err}"
        );
    }

    #[test]
    fn json_answer_with_function_call_and_usage() {
        let body = r#"{"candidates":[{"content":{"role":"model","parts":[
              {"text":"thinking...","thought":true},{"text":"Checking. "},
              {"functionCall":{"name":"get_weather","args":{"location":"Paris"}}}]},
            "finishReason":"STOP","index":0}],
            "usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":4,"thoughtsTokenCount":2,"totalTokenCount":14},
            "modelVersion":"gemini-2.0-flash"}"#;
        let v: Value = completion(Target::GoogleAiStudio, body);
        let message = &v["choices"][0]["message"];
        assert_eq!(message["content"], "Checking. ");
        assert_eq!(
            message["tool_calls"],
            json!([{"id": "call_T_0", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}}])
        );
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 8, "completion_tokens": 6, "total_tokens": 14})
        );

        let blocked =
            r#"{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":3}}"#;
        let v: Value = completion(Target::GoogleAiStudio, blocked);
        assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
    }

    #[test]
    fn stream_chunks_translate_one_by_one_split_anywhere() {
        let stream = concat!(
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hel\"}],\"role\":\"model\"},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":5,\"candidatesTokenCount\":1}}\r\n\r\n",
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"lo\"}],\"role\":\"model\"},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":5,\"candidatesTokenCount\":2}}\r\n\r\n",
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"name\":\"a\",\"args\":{}}},{\"functionCall\":{\"name\":\"b\",\"args\":{\"x\":1}}}],\"role\":\"model\"},\"finishReason\":\"STOP\",\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":5,\"candidatesTokenCount\":9}}\r\n\r\n",
        );
        assert_stream(
            Target::GoogleAiStudio,
            stream,
            "Hello",
            &[("call_T_0", "a", "{}"), ("call_T_1", "b", "{\"x\":1}")],
            "tool_calls",
            json!({"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}),
        );
    }
}
