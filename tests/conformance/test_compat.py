"""The official OpenAI SDK against aigw's OpenAI-compatible endpoint
(`/v1/{account}/{gateway}/compat/chat/completions`, `model` = `{provider}/{model}`): chat, streams
and tool-call round trips for each translated provider and a passthrough one, each answer's usage
in the stored log (read back through the management API), and the SDK's errors for what the
endpoint refuses."""

from __future__ import annotations

import json

import openai
import pytest

from conftest import new_gateway
from harness import (
    MOCK_REPLY,
    MOCK_REPLY_TOKENS,
    assert_completed,
    chunk_reply,
    header_value,
    make_openai_client,
    words,
)

SYSTEM = "You are terse"
PROMPT = "Say hello to the gateway"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    },
}

#: provider → (model, logged path, streamed logged path, upstream path the mock sees)
PROVIDERS = {
    "anthropic": ("claude-sonnet-4-20250514", "/v1/messages", "/v1/messages", "/v1/messages"),
    "google-ai-studio": (
        "gemini-2.0-flash",
        "/v1beta/models/gemini-2.0-flash:generateContent",
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent",
        "/v1beta/models/gemini-2.0-flash:generateContent",
    ),
    "workers-ai": (
        "@cf/meta/llama-3.1-8b-instruct",
        "/@cf/meta/llama-3.1-8b-instruct",
        "/@cf/meta/llama-3.1-8b-instruct",
        "/client/v4/accounts/acct/ai/run/@cf/meta/llama-3.1-8b-instruct",
    ),
    "cohere": ("command-r-plus", "/v2/chat", "/v2/chat", "/v2/chat"),
    "groq": ("llama-3.1-8b-instant", "/chat/completions", "/chat/completions", "/v1/chat/completions"),
}


@pytest.fixture(scope="module")
def compat_gateway(mock, tmp_path_factory):
    """A gateway whose Google AI Studio, Cohere and Groq providers are the mock too (the session
    gateway points Groq at a closed port on purpose)."""
    gw = new_gateway(
        mock,
        tmp_path_factory.mktemp("compat-gateway"),
        AIGW_PROVIDERS__GOOGLE_AI_STUDIO__BASE_URL=mock.url,
        AIGW_PROVIDERS__COHERE__BASE_URL=mock.url,
        AIGW_PROVIDERS__GROQ__BASE_URL=f"{mock.url}/v1",
    )
    gw.start()
    yield gw
    gw.stop_and_check()


@pytest.fixture(scope="module")
def client(compat_gateway) -> openai.OpenAI:
    c = make_openai_client(f"{compat_gateway.url}/v1/acct/default/compat")
    yield c
    c.close()


def messages() -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]


def assert_logged(record: dict, provider: str, path: str, usage, *, streamed: bool) -> None:
    """The stored log is the native exchange, with the usage the SDK saw."""
    assert record["provider"] == provider
    assert record["model"] == PROVIDERS[provider][0]
    assert record["path"] == path
    assert record["status_code"] == 200
    assert record["streamed"] is streamed
    assert_completed(record)
    assert (record["tokens_in"], record["tokens_out"]) == (usage.prompt_tokens, usage.completion_tokens)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_chat_with_system_prompt(client, compat_gateway, mock, marker, provider):
    model, path, _, upstream_path = PROVIDERS[provider]
    raw = client.chat.completions.with_raw_response.create(
        model=f"{provider}/{model}",
        messages=messages(),
        max_tokens=64,
        extra_headers={"x-conformance-id": marker},
    )
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == MOCK_REPLY
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == words(SYSTEM) + words(PROMPT)
    assert completion.usage.completion_tokens == MOCK_REPLY_TOKENS
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + MOCK_REPLY_TOKENS

    # The provider got its own format, the system prompt where it takes one.
    (upstream,) = mock.requests_marked(marker)
    assert upstream["path"] == upstream_path
    native = json.loads(upstream["body"])
    system = {
        "anthropic": lambda: native["system"],
        "google-ai-studio": lambda: native["systemInstruction"]["parts"][0]["text"],
    }.get(provider, lambda: native["messages"][0]["content"])()
    assert system == SYSTEM
    key = {"anthropic": "x-api-key", "google-ai-studio": "x-goog-api-key"}.get(provider, "authorization")
    assert header_value(upstream, key).endswith(client.api_key)

    record = compat_gateway.wait_for_log(raw.headers["cf-aig-log-id"])
    assert_logged(record, provider, path, completion.usage, streamed=False)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_stream_with_usage(client, compat_gateway, provider):
    model, _, path, _ = PROVIDERS[provider]
    raw = client.chat.completions.with_raw_response.create(
        model=f"{provider}/{model}",
        messages=messages(),
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-mock-chunks": "6"},
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == chunk_reply(6)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (words(SYSTEM) + words(PROMPT), 6)

    record = compat_gateway.wait_for_log(raw.headers["cf-aig-log-id"])
    assert_logged(record, provider, path, usage, streamed=True)


def streamed_tool_calls(stream) -> tuple[list[dict], str]:
    """Tool calls assembled from a stream's deltas, and its finish reason."""
    calls: dict[int, dict] = {}
    finish = None
    for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        for delta in choice.delta.tool_calls or []:
            call = calls.setdefault(delta.index, {"id": None, "name": None, "arguments": ""})
            call["id"] = delta.id or call["id"]
            if delta.function and delta.function.name:
                call["name"] = delta.function.name
            if delta.function and delta.function.arguments:
                call["arguments"] += delta.function.arguments
        finish = choice.finish_reason or finish
    return [calls[i] for i in sorted(calls)], finish


@pytest.mark.parametrize("provider", PROVIDERS)
def test_tool_call_round_trip(client, compat_gateway, mock, marker, provider):
    model = f"{provider}/{PROVIDERS[provider][0]}"
    history = [{"role": "user", "content": "What is the weather in Paris?"}]

    completion = client.chat.completions.create(model=model, messages=history, tools=[WEATHER_TOOL])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "Paris"}
    assert call.id

    # Streamed, the call arrives as incremental deltas.
    calls, finish = streamed_tool_calls(
        client.chat.completions.create(model=model, messages=history, tools=[WEATHER_TOOL], stream=True)
    )
    assert finish == "tool_calls"
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [("get_weather", {"location": "Paris"})]
    assert calls[0]["id"]

    # The tool's result goes back; the model answers in text.
    history.append(choice.message.model_dump(exclude_none=True))
    history.append({"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"})
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=history, extra_headers={"x-conformance-id": marker}
    )
    final = raw.parse()
    assert final.choices[0].message.content == MOCK_REPLY
    assert final.choices[0].finish_reason == "stop"
    (upstream,) = mock.requests_marked(marker)
    assert "sunny, 21 C" in upstream["body"]
    record = compat_gateway.wait_for_log(raw.headers["cf-aig-log-id"])
    assert record["provider"] == provider
    assert (record["tokens_in"], record["tokens_out"]) == (final.usage.prompt_tokens, MOCK_REPLY_TOKENS)


@pytest.mark.parametrize(
    ("model", "extra", "needle"),
    [
        ("replicate/some-model", {}, "provider `replicate`"),
        ("nope/x", {}, "provider `nope`"),
        ("gpt-4o-mini", {}, "{provider}/{model}"),
        (f"anthropic/{PROVIDERS['anthropic'][0]}", {"n": 2}, "`n` other than 1"),
        (f"anthropic/{PROVIDERS['anthropic'][0]}", {"logprobs": True}, "`logprobs`"),
    ],
)
def test_unsupported_requests_raise_bad_request(client, mock, marker, model, extra, needle):
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model=model, messages=messages(), extra_headers={"x-conformance-id": marker}, **extra
        )
    assert raised.value.status_code == 400
    assert needle in str(raised.value)
    body = raised.value.body
    assert body["success"] is False and body["errors"][0]["code"] in (2008, 2009), body
    assert mock.requests_marked(marker) == [], "nothing reached the provider"


@pytest.mark.parametrize("provider", ["anthropic", "google-ai-studio", "cohere"])
def test_upstream_errors_raise_with_their_status_and_message(client, provider):
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(
            model=f"{provider}/{PROVIDERS[provider][0]}",
            messages=messages(),
            extra_headers={"x-mock-status": "429"},
        )
    assert raised.value.status_code == 429
    # The SDK read the provider's error, translated into OpenAI's shape.
    assert raised.value.body["message"] == "mock injected 429"
    assert isinstance(raised.value.type, str) and raised.value.type
