"""Providers over HTTPS: aigw verifies the provider's certificate (the built-in roots plus
`proxy.upstream_ca_file`), speaks HTTP/2 when the provider offers it by ALPN, and answers a
provider it cannot trust with its own 502."""

from __future__ import annotations

import openai
import pytest

from conftest import new_gateway, new_mock
from harness import (
    MOCK_REPLY,
    OPENAI_MODEL,
    assert_error_envelope,
    chunk_reply,
    delta_text,
    http_request,
    make_openai_client,
    openai_chat,
)


@pytest.fixture(scope="module")
def tls_mock(tmp_path_factory):
    upstream = new_mock(tmp_path_factory.mktemp("tls-mock"), tls=True)
    yield upstream
    upstream.stop()


def https_gateway(tls_mock, workdir, **extra_env: str):
    gw = new_gateway(
        tls_mock,
        workdir,
        AIGW_PROVIDERS__OPENAI__BASE_URL=f"{tls_mock.url}/v1",
        **extra_env,
    )
    gw.start()
    return gw


def test_https_provider_is_reached_over_http2(tls_mock, tmp_path, marker):
    gw = https_gateway(tls_mock, tmp_path, AIGW_PROXY__UPSTREAM_CA_FILE=str(tls_mock.ca_file))
    try:
        with make_openai_client(gw.provider_url("openai")) as client:
            headers = {"x-conformance-id": marker}
            reply, reply_headers = openai_chat(client, headers=headers)
            assert reply.choices[0].message.content == MOCK_REPLY
            log_id = reply_headers["cf-aig-log-id"]
            stream = client.chat.completions.create(
                model=OPENAI_MODEL,
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                extra_headers=headers | {"x-mock-chunks": "6"},
            )
            assert "".join(delta_text(chunk) for chunk in stream) == chunk_reply(6)
        record = gw.wait_for_log(log_id)
        assert record["provider"] == "openai" and record["status_code"] == 200, record
        seen = tls_mock.requests_marked(marker)
        assert [r["version"] for r in seen] == ["HTTP/2.0", "HTTP/2.0"], seen
        # The provider sees the client's credential; the gateway's directives stay behind.
        assert all(r["path"] == "/v1/chat/completions" for r in seen)
        assert all((dict(r["headers"]).get("authorization") or "").startswith("Bearer ") for r in seen)
    finally:
        gw.stop_and_check()


def test_untrusted_provider_certificate_is_a_502_naming_the_provider(tls_mock, tmp_path, marker):
    gw = https_gateway(tls_mock, tmp_path)
    try:
        resp = http_request(
            "POST",
            f"{gw.provider_url('openai')}/chat/completions",
            headers={"authorization": "Bearer sk-test", "x-conformance-id": marker},
            body={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert resp.status == 502, resp
        message = assert_error_envelope(resp.json(), 2020)
        assert "provider `openai` is unreachable" in message
        assert "certificate" in message.lower(), message
        # Nothing reached the provider: the handshake failed before any request was sent.
        assert tls_mock.requests_marked(marker) == []
    finally:
        gw.stop_and_check()
