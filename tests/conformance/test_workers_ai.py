"""Workers AI (no official Python SDK): its base URL takes the account id from the gateway path."""

from __future__ import annotations

from harness import MOCK_REPLY, MOCK_REPLY_TOKENS, assert_completed, header_value, http_request

MODEL = "@cf/meta/llama-3.1-8b-instruct"


def test_account_id_reaches_the_upstream_url(gateway, mock, marker):
    body = b'{"prompt": "four words of prompt"}'
    resp = http_request(
        "POST",
        f"{gateway.provider_url('workers-ai', account='acct-42')}/{MODEL}",
        headers={"x-conformance-id": marker, "authorization": "Bearer cf-token"},
        body=body,
    )
    assert resp.status == 200, resp.body
    assert resp.json()["result"]["response"] == MOCK_REPLY

    (upstream,) = mock.requests_marked(marker)
    assert upstream["path"] == f"/client/v4/accounts/acct-42/ai/run/{MODEL}"
    assert header_value(upstream, "authorization") == "Bearer cf-token"

    log_id = resp.header("cf-aig-log-id")
    # The log belongs to account acct-42: found there, and not under another account.
    record = gateway.wait_for_log(log_id, account="acct-42")
    assert gateway.get_log(log_id, account="acct").status == 404
    assert record["provider"] == "workers-ai"
    assert record["gateway_id"] == "default"
    assert record["model"] == MODEL
    assert (record["tokens_in"], record["tokens_out"]) == (4, MOCK_REPLY_TOKENS)
    assert (record["request_size"], record["response_size"]) == (len(body), len(resp.body))
    assert record["status_code"] == 200
    assert_completed(record)
    stored = gateway.log_body(log_id, "request", account="acct-42")
    assert (stored.status, stored.body) == (200, body)
