"""The official OpenAI SDK through aigw: what the SDK sees matches what aigw logs (read back through
the management API)."""

from __future__ import annotations

import json
import time

import pytest

from harness import (
    MOCK_REPLY,
    MOCK_REPLY_TOKENS,
    OPENAI_MODEL,
    ULID_RE,
    assert_completed,
    chunk_reply,
    delta_text,
    logged_metadata,
    openai_chat,
    parse_rfc3339,
    ulid_ms,
    words,
)


def assert_logged(record: dict, *, model: str, path: str, model_type: str, streamed: bool):
    """The record describes a completed 200 exchange with the OpenAI upstream (found under
    account `acct`, as `wait_for_log` looks there)."""
    assert record["provider"] == "openai"
    assert record["gateway_id"] == "default"
    assert record["model"] == model
    assert record["model_type"] == model_type
    assert record["path"] == path
    assert record["status_code"] == 200
    assert record["streamed"] is streamed
    assert_completed(record)


def test_chat_completion(openai_client, gateway):
    prompt = "Say hello to the gateway"
    before_ms = time.time_ns() // 1_000_000
    raw = openai_client.chat.completions.with_raw_response.create(
        model=OPENAI_MODEL, messages=[{"role": "user", "content": prompt}]
    )
    completion, headers = raw.parse(), raw.headers

    assert completion.object == "chat.completion"
    assert completion.model == OPENAI_MODEL
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == MOCK_REPLY
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == words(prompt)
    assert completion.usage.completion_tokens == MOCK_REPLY_TOKENS
    assert headers["content-type"].startswith("application/json")

    log_id = headers["cf-aig-log-id"]
    assert len(log_id) == 26 and ULID_RE.match(log_id), log_id
    record = gateway.wait_for_log(log_id)
    after_ms = time.time_ns() // 1_000_000
    assert_logged(record, model=OPENAI_MODEL, path="/chat/completions", model_type="chat", streamed=False)
    assert record["method"] == "POST"
    assert record["request_type"] == "provider"
    assert record["cached"] is False
    assert record["tokens_in"] == completion.usage.prompt_tokens
    assert record["tokens_out"] == completion.usage.completion_tokens
    assert record["cost"] > 0
    assert record["custom_cost"] is False
    assert logged_metadata(record) == {}
    assert record["event_id"] is None
    assert record["feedback"] is None and record["score"] is None
    assert record["authentication"] is False
    assert record["request_content_type"] == "application/json"
    assert record["response_content_type"].startswith("application/json")
    assert record["user_agent"].startswith("OpenAI/Python")

    # created_at is RFC 3339, taken while the request was in flight; the id's timestamp is
    # from the same exchange.
    created_ms = round(parse_rfc3339(record["created_at"]).timestamp() * 1000)
    assert before_ms <= created_ms <= after_ms
    assert before_ms <= ulid_ms(log_id) <= after_ms
    assert 0 <= record["time_to_first_byte"] <= record["duration"]

    # The payload was collected: sizes are the bytes on the wire, and both bodies are stored
    # exactly (GET one shows their start; the body endpoints return them whole).
    request_bytes = raw.http_request.content
    response_bytes = raw.http_response.content
    assert (record["request_size"], record["response_size"]) == (len(request_bytes), len(response_bytes))
    assert (record["request_truncated"], record["response_truncated"]) == (False, False)
    assert record["request_head"] == request_bytes.decode()
    assert record["response_head"] == response_bytes.decode()
    assert record["request_head_complete"] is True and record["response_head_complete"] is True
    stored_request = gateway.log_body(log_id, "request")
    stored_response = gateway.log_body(log_id, "response")
    assert (stored_request.status, stored_request.body) == (200, request_bytes)
    assert (stored_response.status, stored_response.body) == (200, response_bytes)
    assert stored_request.header("content-type") == "application/json"


def test_log_ids_are_unique_and_time_ordered(openai_client):
    ids = [openai_chat(openai_client)[1]["cf-aig-log-id"] for _ in range(3)]
    assert len(set(ids)) == 3
    # The first 10 characters are the millisecond timestamp (the rest is random within one ms).
    timestamps = [log_id[:10] for log_id in ids]
    assert timestamps == sorted(timestamps)


def test_chat_completion_stream_with_usage(openai_client, gateway):
    prompt = "Count to twelve please"
    raw = openai_client.chat.completions.with_raw_response.create(
        model=OPENAI_MODEL,
        messages=[{"role": "user", "content": prompt}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-mock-chunks": "12"},
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    chunks = list(raw.parse())

    text = "".join(delta_text(c) for c in chunks)
    assert text == chunk_reply(12)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    # With include_usage the last chunk, and only it, carries usage and no choices.
    with_usage = [c for c in chunks if c.usage is not None]
    assert with_usage == [chunks[-1]]
    usage = chunks[-1].usage
    assert chunks[-1].choices == []
    assert usage.prompt_tokens == words(prompt)
    assert usage.completion_tokens == 12

    log_id = raw.headers["cf-aig-log-id"]
    record = gateway.wait_for_log(log_id)
    assert_logged(record, model=OPENAI_MODEL, path="/chat/completions", model_type="chat", streamed=True)
    assert record["response_content_type"].startswith("text/event-stream")
    assert record["tokens_in"] == usage.prompt_tokens
    assert record["tokens_out"] == usage.completion_tokens
    assert record["cost"] > 0
    # The whole event stream, as relayed, is the stored response body: the same events the SDK
    # parsed, in order, and as many bytes as the record says were sent.
    stored = gateway.log_body(log_id, "response")
    assert stored.status == 200
    assert stored.header("content-type").startswith("text/event-stream")
    data = [line[len("data: ") :] for line in stored.body.decode().splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    events = [json.loads(d) for d in data[:-1]]
    assert [e["id"] for e in events] == [c.id for c in chunks]
    assert events[-1]["usage"]["completion_tokens"] == usage.completion_tokens
    assert record["response_size"] == len(stored.body)
    assert record["request_head"] == raw.http_request.content.decode()


def test_stream_is_relayed_as_it_arrives(openai_client):
    """Chunks reach the SDK while the upstream is still producing them, not all at the end."""
    delay_s = 0.2
    stream = openai_client.chat.completions.create(
        model=OPENAI_MODEL,
        messages=[{"role": "user", "content": "slowly"}],
        stream=True,
        extra_headers={"x-mock-chunks": "5", "x-mock-chunk-delay-ms": str(int(delay_s * 1000))},
    )
    arrivals = [(time.monotonic(), delta_text(chunk)) for chunk in stream]
    content = [t for t, text in arrivals if text]
    assert len(content) == 5
    # The mock waits 4 delays between the first and the last word; a buffering proxy would hand
    # them over together. (A lower bound only: never an assertion that anything is fast.)
    assert content[-1] - content[0] >= 2 * delay_s


def test_embeddings_default_base64(openai_client, gateway, mock, marker):
    inputs = ["the quick brown fox", "jumps"]
    raw = openai_client.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input=inputs, extra_headers={"x-conformance-id": marker}
    )
    result = raw.parse()

    # The SDK asked for base64 by default and decoded it.
    (upstream,) = mock.requests_marked(marker)
    assert json.loads(upstream["body"])["encoding_format"] == "base64"
    assert [d.index for d in result.data] == [0, 1]
    vectors = [d.embedding for d in result.data]
    assert all(len(v) == 8 and all(isinstance(x, float) and -1 <= x < 1 for x in v) for v in vectors)
    assert vectors[0] != vectors[1]
    assert result.usage.prompt_tokens == sum(words(t) for t in inputs)

    # The base64 bytes were relayed intact: they decode to the vectors sent as floats.
    floats = openai_client.embeddings.create(
        model="text-embedding-3-small", input=inputs, encoding_format="float"
    )
    assert [d.embedding for d in floats.data] == vectors

    record = gateway.wait_for_log(raw.headers["cf-aig-log-id"])
    assert_logged(
        record, model="text-embedding-3-small", path="/embeddings", model_type="embedding", streamed=False
    )
    assert record["tokens_in"] == result.usage.prompt_tokens
    assert record["tokens_out"] is None


def test_models_list(openai_client, gateway):
    raw = openai_client.models.with_raw_response.list()
    models = list(raw.parse())
    assert [m.id for m in models] == ["gpt-4o-mini"]
    assert models[0].owned_by == "mock"

    record = gateway.wait_for_log(raw.headers["cf-aig-log-id"])
    assert record["method"] == "GET"
    assert record["path"] == "/models"
    assert record["status_code"] == 200
    assert_completed(record)
    assert record["tokens_in"] is None and record["tokens_out"] is None


@pytest.fixture
def responses_api(openai_client):
    if not hasattr(openai_client, "responses"):
        pytest.skip("this openai SDK version has no Responses API")
    return openai_client.responses


def test_responses_create(responses_api, gateway):
    prompt = "Tell me about gateways"
    raw = responses_api.with_raw_response.create(model=OPENAI_MODEL, input=prompt, instructions="Be brief")
    response = raw.parse()

    assert response.status == "completed"
    assert response.output_text == MOCK_REPLY
    assert response.usage.input_tokens == words(prompt) + words("Be brief")
    assert response.usage.output_tokens == MOCK_REPLY_TOKENS

    record = gateway.wait_for_log(raw.headers["cf-aig-log-id"])
    assert_logged(record, model=OPENAI_MODEL, path="/responses", model_type="chat", streamed=False)
    assert record["tokens_in"] == response.usage.input_tokens
    assert record["tokens_out"] == response.usage.output_tokens
    assert record["cost"] > 0


def test_responses_stream(responses_api, gateway):
    prompt = "Stream me some tokens"
    raw = responses_api.with_raw_response.create(
        model=OPENAI_MODEL, input=prompt, stream=True, extra_headers={"x-mock-chunks": "9"}
    )
    events = list(raw.parse())

    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == chunk_reply(9)
    assert events[0].type == "response.created"
    assert events[-1].type == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1].response
    assert final.output_text == chunk_reply(9)
    assert final.usage.input_tokens == words(prompt)
    assert final.usage.output_tokens == 9

    record = gateway.wait_for_log(raw.headers["cf-aig-log-id"])
    assert_logged(record, model=OPENAI_MODEL, path="/responses", model_type="chat", streamed=True)
    assert record["tokens_in"] == final.usage.input_tokens
    assert record["tokens_out"] == final.usage.output_tokens


def test_responses_stream_helper(responses_api):
    with responses_api.stream(model=OPENAI_MODEL, input="one two three") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == MOCK_REPLY
    assert final.output_text == MOCK_REPLY
    assert final.usage.input_tokens == 3
