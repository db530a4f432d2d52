"""Every exchange that reaches its end is logged as `completed`, whatever the response framing.

Regression guard: with a `Content-Length` response (every non-streamed JSON answer) hyper stops
polling the body once the declared length is written and drops it, so the end of the exchange must
be noticed on the last data frame; otherwise the record says `client_aborted` although the client
got the whole response. Chunked (SSE) responses are polled to their end.
"""

from __future__ import annotations

import openai
import pytest

from harness import ANTHROPIC_MODEL, OPENAI_MODEL, openai_chat

# Each exchange returns (response headers, whether the record should say success).


def openai_chat_json(oai, _claude):
    return openai_chat(oai)[1], True


def openai_chat_sse(oai, _claude):
    raw = oai.chat.completions.with_raw_response.create(
        model=OPENAI_MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
    )
    list(raw.parse())
    return raw.headers, True


def openai_models(oai, _claude):
    raw = oai.models.with_raw_response.list()
    list(raw.parse())
    return raw.headers, True


def openai_relayed_429(oai, _claude):
    with pytest.raises(openai.RateLimitError) as info:
        openai_chat(oai, headers={"x-mock-status": "429"})
    return info.value.response.headers, False


def anthropic_messages(_oai, claude):
    raw = claude.messages.with_raw_response.create(
        model=ANTHROPIC_MODEL, max_tokens=16, messages=[{"role": "user", "content": "hi"}]
    )
    raw.parse()
    return raw.headers, True


@pytest.mark.parametrize(
    "exchange",
    [
        openai_chat_sse,
        openai_chat_json,
        openai_models,
        openai_relayed_429,
        anthropic_messages,
    ],
    ids=lambda f: f.__name__,
)
def test_delivered_response_is_logged_completed(openai_client, anthropic_client, gateway, exchange):
    headers, succeeded = exchange(openai_client, anthropic_client)
    record = gateway.wait_for_log(headers["cf-aig-log-id"])
    assert (record["outcome"], record["error"], record["success"]) == ("completed", None, succeeded)


def test_client_disconnect_mid_stream_is_logged_client_aborted(openai_client, gateway):
    raw = openai_client.chat.completions.with_raw_response.create(
        model=OPENAI_MODEL,
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        extra_headers={"x-mock-chunks": "50", "x-mock-chunk-delay-ms": "50"},
    )
    stream = raw.parse()
    next(iter(stream))
    stream.close()  # hang up with most of the stream still to come

    record = gateway.wait_for_log(raw.headers["cf-aig-log-id"])
    assert record["outcome"] == "client_aborted"
    assert record["status_code"] == 200
    assert record["success"] is False
    assert record["streamed"] is True
