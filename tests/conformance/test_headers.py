"""`cf-aig-*` request headers sent through the SDKs' `extra_headers`, and credential handling."""

from __future__ import annotations

import json
import uuid

import openai
import pytest

from harness import (
    ANTHROPIC_API_KEY,
    ANTHROPIC_MODEL,
    GATEWAY_TOKEN,
    MOCK_REPLY,
    OPENAI_API_KEY,
    QUERY_SECRET,
    assert_completed,
    header_value,
    logged_metadata,
    make_openai_client,
    openai_chat,
)


def test_metadata_is_logged(openai_client, gateway):
    # Five entries is the most allowed; every scalar type.
    metadata = {"user": "alice", "team": "search", "n": 3, "ratio": 0.5, "vip": True}
    _, headers = openai_chat(openai_client, headers={"cf-aig-metadata": json.dumps(metadata)})
    record = gateway.wait_for_log(headers["cf-aig-log-id"])
    assert logged_metadata(record) == metadata


def test_event_id_is_echoed_and_logged(openai_client, gateway):
    event_id = f"evt-{uuid.uuid4()}"
    _, headers = openai_chat(openai_client, headers={"cf-aig-event-id": event_id})
    assert headers["cf-aig-event-id"] == event_id
    assert gateway.wait_for_log(headers["cf-aig-log-id"])["event_id"] == event_id


@pytest.mark.parametrize(
    "provider, headers",
    [("groq", {}), ("openai", {"cf-aig-request-timeout": "300", "x-mock-delay-ms": "3000"})],
    ids=["502-unreachable", "504-timeout"],
)
def test_event_id_is_echoed_on_gateway_failures(gateway, provider, headers):
    event_id = f"evt-{uuid.uuid4()}"
    with (
        make_openai_client(gateway.provider_url(provider)) as client,
        pytest.raises(openai.InternalServerError) as info,
    ):
        openai_chat(client, headers=headers | {"cf-aig-event-id": event_id})
    response_headers = info.value.response.headers
    assert gateway.wait_for_log(response_headers["cf-aig-log-id"])["event_id"] == event_id
    assert response_headers.get("cf-aig-event-id") == event_id


def test_collect_log_false_keeps_no_log(openai_client, gateway):
    event_id = f"unlogged-{uuid.uuid4()}"
    completion, headers = openai_chat(
        openai_client, headers={"cf-aig-collect-log": "false", "cf-aig-event-id": event_id}
    )
    assert completion.choices[0].message.content == MOCK_REPLY
    assert "cf-aig-log-id" not in headers
    assert headers["cf-aig-event-id"] == event_id

    # Records are written in order; once a later request's record is there, an earlier one
    # would be too.
    _, later = openai_chat(openai_client)
    gateway.wait_for_log(later["cf-aig-log-id"])
    by_event = [("filters", json.dumps([{"key": "event_id", "operator": "eq", "value": [event_id]}]))]
    assert gateway.list_logs(query=by_event) == []
    assert gateway.list_logs(query=[("search", event_id)]) == []


def test_collect_log_payload_false_still_logs_the_record(openai_client, gateway):
    completion, headers = openai_chat(openai_client, headers={"cf-aig-collect-log-payload": "false"})
    log_id = headers["cf-aig-log-id"]
    record = gateway.wait_for_log(log_id)
    assert_completed(record)
    assert record["tokens_in"] == completion.usage.prompt_tokens
    assert record["tokens_out"] == completion.usage.completion_tokens
    assert record["request_size"] > 0 and record["response_size"] > 0
    # No bodies were stored: no heads, and the body endpoints answer 404.
    assert record["request_head"] is None and record["response_head"] is None
    for kind in ("request", "response"):
        resp = gateway.log_body(log_id, kind)
        assert resp.status == 404, (kind, resp.body)
        assert resp.json()["success"] is False
        assert resp.json()["errors"][0]["code"] == 3003


@pytest.mark.parametrize(
    "custom_cost, expected",
    [
        ({"total_cost": 0.25}, lambda tin, tout: 0.25),
        ({"per_token_in": 0.001, "per_token_out": 0.002}, lambda tin, tout: tin * 0.001 + tout * 0.002),
    ],
    ids=["total", "per-token"],
)
def test_custom_cost(openai_client, gateway, custom_cost, expected):
    completion, headers = openai_chat(openai_client, headers={"cf-aig-custom-cost": json.dumps(custom_cost)})
    record = gateway.wait_for_log(headers["cf-aig-log-id"])
    assert record["custom_cost"] is True
    usage = completion.usage
    assert record["cost"] == pytest.approx(expected(usage.prompt_tokens, usage.completion_tokens))


ALL_CONTROL_HEADERS = {
    "cf-aig-metadata": '{"k": "v"}',
    "cf-aig-event-id": "evt-forwarding",
    "cf-aig-collect-log": "true",
    "cf-aig-collect-log-payload": "true",
    "cf-aig-custom-cost": '{"total_cost": 0.01}',
    "cf-aig-request-timeout": "10000",
    "cf-aig-authorization": f"Bearer {GATEWAY_TOKEN}",
}


def assert_control_headers_stripped(upstream: dict):
    names = [name.lower() for name, _ in upstream["headers"]]
    assert not [n for n in names if n.startswith("cf-aig-")], names


def test_openai_credentials_forwarded_control_headers_not(openai_client, gateway, mock, marker):
    _, headers = openai_chat(openai_client, headers=ALL_CONTROL_HEADERS | {"x-conformance-id": marker})
    (upstream,) = mock.requests_marked(marker)
    assert upstream["path"] == "/v1/chat/completions"
    assert header_value(upstream, "authorization") == f"Bearer {OPENAI_API_KEY}"
    assert_control_headers_stripped(upstream)

    log_id = headers["cf-aig-log-id"]
    record = gateway.wait_for_log(log_id)
    assert record["authentication"] is True  # cf-aig-authorization was given
    gateway.assert_secret_not_logged(OPENAI_API_KEY, log_id=log_id)
    gateway.assert_secret_not_logged(GATEWAY_TOKEN, log_id=log_id)


def test_anthropic_credentials_forwarded_control_headers_not(anthropic_client, gateway, mock, marker):
    raw = anthropic_client.messages.with_raw_response.create(
        model=ANTHROPIC_MODEL,
        max_tokens=16,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers=ALL_CONTROL_HEADERS | {"x-conformance-id": marker},
    )
    (upstream,) = mock.requests_marked(marker)
    assert upstream["path"] == "/v1/messages"
    assert header_value(upstream, "x-api-key") == ANTHROPIC_API_KEY
    assert header_value(upstream, "anthropic-version")
    assert_control_headers_stripped(upstream)

    log_id = raw.headers["cf-aig-log-id"]
    gateway.wait_for_log(log_id)
    gateway.assert_secret_not_logged(ANTHROPIC_API_KEY, log_id=log_id)


def test_query_string_is_forwarded_but_not_logged(openai_client, gateway, mock, marker):
    """Some providers take keys in the query (Google's `?key=`): forwarded, never logged."""
    secret = QUERY_SECRET
    _, headers = openai_chat(
        openai_client, headers={"x-conformance-id": marker}, extra_query={"key": secret, "trace": "1"}
    )
    (upstream,) = mock.requests_marked(marker)
    assert upstream["path"] == "/v1/chat/completions"
    assert upstream["query"] == f"key={secret}&trace=1"
    log_id = headers["cf-aig-log-id"]
    record = gateway.wait_for_log(log_id)
    assert record["path"] == "/chat/completions"
    gateway.assert_secret_not_logged(secret, log_id=log_id)
