"""The official Anthropic SDK through aigw: what the SDK sees matches what aigw logs."""

from __future__ import annotations

from harness import (
    ANTHROPIC_MODEL,
    MOCK_REPLY,
    MOCK_REPLY_TOKENS,
    ULID_RE,
    assert_completed,
    chunk_reply,
    words,
)

SYSTEM = "You are terse"


def assert_logged_message(record: dict, usage, *, streamed: bool):
    assert record["provider"] == "anthropic"
    assert record["model"] == ANTHROPIC_MODEL
    assert record["model_type"] == "chat"
    assert record["path"] == "/v1/messages"
    assert record["status_code"] == 200
    assert record["streamed"] is streamed
    assert_completed(record)
    assert record["tokens_in"] == usage.input_tokens
    assert record["tokens_out"] == usage.output_tokens
    assert record["cost"] > 0


def test_messages_create(anthropic_client, gateway):
    prompt = "Say hello to the gateway"
    raw = anthropic_client.messages.with_raw_response.create(
        model=ANTHROPIC_MODEL,
        max_tokens=64,
        system=SYSTEM,
        messages=[{"role": "user", "content": prompt}],
    )
    message = raw.parse()

    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == ANTHROPIC_MODEL
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == MOCK_REPLY
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == words(prompt) + words(SYSTEM)
    assert message.usage.output_tokens == MOCK_REPLY_TOKENS

    log_id = raw.headers["cf-aig-log-id"]
    assert ULID_RE.match(log_id), log_id
    assert_logged_message(gateway.wait_for_log(log_id), message.usage, streamed=False)


def test_messages_stream(anthropic_client, gateway):
    prompt = "Stream seven tokens to me"
    with anthropic_client.messages.stream(
        model=ANTHROPIC_MODEL,
        max_tokens=64,
        system=SYSTEM,
        messages=[{"role": "user", "content": prompt}],
        extra_headers={"x-mock-chunks": "7"},
    ) as stream:
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        log_id = stream.response.headers["cf-aig-log-id"]
        text = "".join(stream.text_stream)
        final = stream.get_final_message()

    assert text == chunk_reply(7)
    assert final.content[0].text == chunk_reply(7)
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == words(prompt) + words(SYSTEM)
    assert final.usage.output_tokens == 7
    assert_logged_message(gateway.wait_for_log(log_id), final.usage, streamed=True)
