"""Errors: those the gateway produces itself (status + JSON envelope with a stable code), seen
through the SDKs' exception types and byte-exact over plain HTTP; and the provider's own errors,
which are relayed unchanged."""

from __future__ import annotations

import json

import anthropic
import httpx
import openai
import pytest

from harness import (
    ANTHROPIC_MODEL,
    MAX_BODY_BYTES,
    OPENAI_MODEL,
    assert_error_envelope,
    chunk_reply,
    delta_text,
    http_request,
    make_openai_client,
    openai_chat,
)

CHAT_BODY = {"model": OPENAI_MODEL, "messages": [{"role": "user", "content": "hi"}]}


def sdk_status_error(exc_type: type[Exception], call):
    """Run `call`, expecting the SDK to raise exactly `exc_type` (not a subclass); return it."""
    with pytest.raises(exc_type) as info:
        call()
    assert type(info.value) is exc_type, repr(info.value)
    return info.value


def assert_sdk_gateway_error(
    err: openai.APIStatusError, status: int, code: int, message_contains: str | None = None
):
    """The SDK exception carries the gateway's status and envelope (as `.body` and on the wire)."""
    assert err.status_code == status
    assert err.response.headers["content-type"].startswith("application/json")
    assert err.body == err.response.json()
    return assert_error_envelope(err.body, code, message_contains=message_contains)


# ---------------------------------------------------------------------------------------------
# Rejected before anything is sent upstream (no log record, no upstream request)


@pytest.mark.parametrize(
    "base_url, exc_type, status, code, needle",
    [
        (lambda gw: gw.provider_url("nope-ai"), openai.BadRequestError, 400, 2002, "`nope-ai`"),
        (
            lambda gw: gw.provider_url("custom-unconfigured"),
            openai.BadRequestError,
            400,
            2002,
            "custom-unconfigured",
        ),
        # The SDK appends /chat/completions: account "acct", gateway "chat", provider "completions".
        (lambda gw: f"{gw.url}/v1/acct", openai.BadRequestError, 400, 2001, "missing upstream path"),
        (
            lambda gw: gw.provider_url("openai", gateway="no-such-gateway"),
            openai.NotFoundError,
            404,
            2010,
            "no-such-gateway",
        ),
    ],
    ids=["unknown-provider", "unconfigured-custom-provider", "malformed-path", "unknown-gateway"],
)
def test_sdk_sees_request_errors(gateway, mock, marker, base_url, exc_type, status, code, needle):
    with make_openai_client(base_url(gateway)) as client:
        err = sdk_status_error(exc_type, lambda: openai_chat(client, headers={"x-conformance-id": marker}))
    assert_sdk_gateway_error(err, status, code, needle)
    assert "cf-aig-log-id" not in err.response.headers
    assert mock.requests_marked(marker) == []


SIX_ENTRIES = json.dumps({k: 1 for k in "abcdef"})


@pytest.mark.parametrize(
    "header, value, code, needle",
    [
        ("cf-aig-metadata", "not json", 2004, "not valid JSON"),
        ("cf-aig-metadata", "[1, 2]", 2004, "must be a JSON object"),
        ("cf-aig-metadata", SIX_ENTRIES, 2004, "6 entries"),
        ("cf-aig-metadata", '{"user": {"id": 1}}', 2004, "`user` is an object"),
        ("cf-aig-metadata", '{"tags": ["a"]}', 2004, "`tags` is an array"),
        ("cf-aig-metadata", '{"user": null}', 2004, "`user` is null"),
        ("cf-aig-collect-log", "maybe", 2003, "cf-aig-collect-log header"),
        ("cf-aig-collect-log-payload", "nope", 2003, "cf-aig-collect-log-payload header"),
        ("cf-aig-request-timeout", "soon", 2003, "cf-aig-request-timeout header"),
        ("cf-aig-request-timeout", "0", 2003, "cf-aig-request-timeout header"),
        ("cf-aig-request-timeout", "-5", 2003, "cf-aig-request-timeout header"),
        ("cf-aig-request-timeout", "3600001", 2003, "cf-aig-request-timeout header"),
        ("cf-aig-custom-cost", '{"total_cost": -1}', 2003, "cf-aig-custom-cost header"),
        ("cf-aig-event-id", "e" * 257, 2003, "cf-aig-event-id header"),
    ],
)
def test_invalid_control_header(openai_client, mock, marker, header, value, code, needle):
    err = sdk_status_error(
        openai.BadRequestError,
        lambda: openai_chat(openai_client, headers={header: value, "x-conformance-id": marker}),
    )
    assert_sdk_gateway_error(err, 400, code, needle)
    assert "cf-aig-log-id" not in err.response.headers
    assert mock.requests_marked(marker) == []


def test_body_over_limit_sdk(openai_client, mock, marker):
    err = sdk_status_error(
        openai.APIStatusError,
        lambda: openai_chat(
            openai_client, content="x" * (MAX_BODY_BYTES + 1), headers={"x-conformance-id": marker}
        ),
    )
    assert_sdk_gateway_error(err, 413, 2011, str(MAX_BODY_BYTES))
    assert mock.requests_marked(marker) == []


def padded_chat_body(size: int) -> bytes:
    """A valid chat request of exactly `size` bytes (JSON padded with trailing spaces)."""
    body = json.dumps(CHAT_BODY).encode()
    return body + b" " * (size - len(body))


def test_body_at_limit_is_accepted(gateway):
    resp = http_request(
        "POST",
        f"{gateway.provider_url('openai')}/chat/completions",
        headers={"content-type": "application/json"},
        body=padded_chat_body(MAX_BODY_BYTES),
    )
    assert resp.status == 200, resp.body
    log_id = resp.header("cf-aig-log-id")
    record = gateway.wait_for_log(log_id)
    assert record["request_size"] == MAX_BODY_BYTES
    # A body exactly at the limit is stored whole, not truncated.
    assert record["request_truncated"] is False
    assert record["request_head_complete"] is False  # longer than the head GET one shows
    stored = gateway.log_body(log_id, "request")
    assert stored.status == 200 and stored.header("cf-aig-body-truncated") is None
    assert stored.body == padded_chat_body(MAX_BODY_BYTES)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_over_limit_plain(gateway, chunked):
    body = padded_chat_body(MAX_BODY_BYTES + 1)
    url = f"{gateway.provider_url('openai')}/chat/completions"
    headers = {"content-type": "application/json"}
    # httpx (the SDKs' transport) still reads the response when the gateway stops reading the
    # body early; a generator body is sent chunked, without Content-Length.
    content = iter([body[:65536], body[65536:]]) if chunked else body
    with httpx.Client(trust_env=False) as client:
        resp = client.post(url, headers=headers, content=content)
    assert resp.status_code == 413
    assert ("content-length" in resp.request.headers) is not chunked
    assert_error_envelope(resp.json(), 2011, message_contains=f"limit of {MAX_BODY_BYTES} bytes")


# ---------------------------------------------------------------------------------------------
# Exact wire format of gateway errors (plain HTTP, no SDK in between)


@pytest.mark.parametrize(
    "method, path, status, code, needle",
    [
        ("POST", "/v1/acct/default/nope-ai/chat/completions", 400, 2002, "unknown provider `nope-ai`"),
        ("POST", "/v1/acct", 400, 2001, "malformed gateway path"),
        # `/v1/{account}/{gateway}` is the Universal Endpoint: a chat body is not a step.
        ("POST", "/v1/acct/default", 400, 2006, "`steps[0].*` unknown field `messages`"),
        ("POST", "/v1/acct/default/openai", 400, 2001, "missing upstream path"),
        ("POST", "/v1/acct/default/openai/", 400, 2001, "missing upstream path"),
        ("POST", "/v1/bad%20acct/default/openai/chat/completions", 400, 2001, "invalid account id"),
        (
            "POST",
            "/v1/acct/no-such-gateway/openai/chat/completions",
            404,
            2010,
            "gateway `no-such-gateway` not found",
        ),
        ("GET", "/nope", 404, 2012, "no route for GET /nope"),
        ("GET", "/", 404, 2012, "no route for GET /"),
        (
            "POST",
            "/v2/acct/default/openai/chat/completions",
            404,
            2012,
            "/v2/acct/default/openai/chat/completions",
        ),
    ],
)
def test_gateway_error_wire_format(gateway, method, path, status, code, needle):
    resp = http_request(method, gateway.url + path, body=CHAT_BODY if method == "POST" else None)
    assert resp.status == status, resp.body
    assert resp.header("content-type") == "application/json"
    assert int(resp.header("content-length")) == len(resp.body)
    assert_error_envelope(resp.json(), code, message_contains=needle)
    assert resp.header("cf-aig-log-id") is None


def test_invalid_header_wire_format(gateway):
    resp = http_request(
        "POST",
        f"{gateway.provider_url('openai')}/chat/completions",
        headers={"cf-aig-request-timeout": "soon"},
        body=CHAT_BODY,
    )
    assert resp.status == 400
    assert resp.json() == {
        "success": False,
        "errors": [
            {
                "code": 2003,
                "message": "invalid cf-aig-request-timeout header: "
                "expected milliseconds between 1 and 3600000, got `soon`",
            }
        ],
    }


# ---------------------------------------------------------------------------------------------
# The upstream could not answer: the gateway answers 502/504 itself, and logs it


@pytest.mark.parametrize(
    "provider, headers, status, code, outcome, needles",
    [
        ("groq", {}, 502, 2020, "upstream_unreachable", ["provider `groq` is unreachable"]),
        (
            "openai",
            {"x-mock-reset": "before-headers"},
            502,
            2020,
            "upstream_unreachable",
            ["provider `openai` is unreachable"],
        ),
        (
            "openai",
            {"cf-aig-request-timeout": "300", "x-mock-delay-ms": "3000"},
            504,
            2021,
            "upstream_timeout",
            ["provider `openai`", "300 ms"],
        ),
    ],
    ids=["unreachable", "reset-before-headers", "timeout"],
)
def test_upstream_failure(gateway, provider, headers, status, code, outcome, needles):
    with make_openai_client(gateway.provider_url(provider)) as client:
        err = sdk_status_error(openai.InternalServerError, lambda: openai_chat(client, headers=headers))
    message = assert_sdk_gateway_error(err, status, code)
    for needle in needles:
        assert needle in message

    record = gateway.wait_for_log(err.response.headers["cf-aig-log-id"])
    assert record["provider"] == provider
    assert record["model"] == OPENAI_MODEL
    assert record["status_code"] == status
    assert record["success"] is False
    assert record["outcome"] == outcome
    assert record["error"] == message
    assert record["tokens_in"] is None and record["tokens_out"] is None


# ---------------------------------------------------------------------------------------------
# The provider's own errors are relayed unchanged


def direct_mock_error(mock, path: str, status: int, body: dict) -> httpx.Response:
    """The same failing request sent straight to the mock: what the gateway must relay."""
    with httpx.Client(trust_env=False) as client:
        return client.post(f"{mock.url}{path}", json=body, headers={"x-mock-status": str(status)})


@pytest.mark.parametrize(
    "status, exc_type",
    [
        (400, openai.BadRequestError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
    ],
)
def test_openai_upstream_error_relayed(openai_client, gateway, mock, status, exc_type):
    err = sdk_status_error(
        exc_type,
        lambda: openai_chat(
            openai_client, content="hi", headers={"x-mock-status": str(status), "x-mock-retry-after": "7"}
        ),
    )
    direct = direct_mock_error(mock, "/v1/chat/completions", status, CHAT_BODY)
    assert err.status_code == status == direct.status_code
    assert err.response.content == direct.content
    assert err.body == direct.json()["error"]  # the SDK unwraps OpenAI's {"error": {...}}
    assert err.response.headers["retry-after"] == "7"

    record = gateway.wait_for_log(err.response.headers["cf-aig-log-id"])
    assert record["status_code"] == status
    assert record["success"] is False
    assert record["outcome"] == "completed"
    assert record["tokens_in"] is None


@pytest.mark.parametrize(
    "status, exc_type",
    [(429, anthropic.RateLimitError), (500, anthropic.InternalServerError), (529, anthropic.OverloadedError)],
)
def test_anthropic_upstream_error_relayed(anthropic_client, gateway, mock, status, exc_type):
    request = {"model": ANTHROPIC_MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    err = sdk_status_error(
        exc_type,
        lambda: anthropic_client.messages.create(**request, extra_headers={"x-mock-status": str(status)}),
    )
    direct = direct_mock_error(mock, "/v1/messages", status, request)
    assert err.status_code == status == direct.status_code
    assert err.response.content == direct.content
    assert err.body == direct.json()  # {"type": "error", "error": {...}}

    record = gateway.wait_for_log(err.response.headers["cf-aig-log-id"])
    assert record["provider"] == "anthropic"
    assert record["status_code"] == status
    assert record["success"] is False
    assert record["outcome"] == "completed"


# ---------------------------------------------------------------------------------------------
# The upstream breaks or stalls mid-stream: the SDK's stream raises, the record says so


def assert_mid_stream_failure(record: dict, outcome: str, error_contains: str):
    assert record["status_code"] == 200
    assert record["streamed"] is True
    assert record["success"] is False
    assert record["outcome"] == outcome
    assert error_contains in record["error"]
    assert record["response_size"] > 0


@pytest.mark.parametrize(
    "headers, outcome, error_contains",
    [
        ({"x-mock-reset": "mid-stream"}, "upstream_body_error", "mid-body"),
        # cf-aig-request-timeout is also the longest silence allowed mid-stream.
        (
            {"x-mock-chunk-delay-ms": "3000", "cf-aig-request-timeout": "300"},
            "upstream_timeout",
            "sent nothing for 300ms",
        ),
    ],
    ids=["reset", "stall"],
)
def test_openai_stream_broken_mid_stream(openai_client, gateway, headers, outcome, error_contains):
    raw = openai_client.chat.completions.with_raw_response.create(
        model=OPENAI_MODEL,
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        extra_headers=headers | {"x-mock-chunks": "20"},
    )
    received = []
    with pytest.raises(httpx.RemoteProtocolError):
        for chunk in raw.parse():
            received.append(delta_text(chunk))
    assert chunk_reply(20).startswith("".join(received))
    record = gateway.wait_for_log(raw.headers["cf-aig-log-id"])
    assert_mid_stream_failure(record, outcome, error_contains)


def test_anthropic_stream_reset_mid_stream(anthropic_client, gateway):
    with pytest.raises(httpx.RemoteProtocolError):
        with anthropic_client.messages.stream(
            model=ANTHROPIC_MODEL,
            max_tokens=64,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-mock-reset": "mid-stream", "x-mock-chunks": "20"},
        ) as stream:
            log_id = stream.response.headers["cf-aig-log-id"]
            for _ in stream.text_stream:
                pass
    assert_mid_stream_failure(gateway.wait_for_log(log_id), "upstream_body_error", "mid-body")
