"""The log store is durable: what the management API showed before a restart (gateways and their
settings, logs, bodies, edits, deletions) it shows after, and logs still queued at SIGTERM are
flushed, not lost. Runs a second `aigw serve` with its own data dir, stopped and started again.
"""

from __future__ import annotations

import json

import cloudflare
import pytest

from harness import (
    MINIMAL_GATEWAY_SETTINGS,
    OPENAI_MODEL,
    make_cloudflare_client,
    make_openai_client,
    unique_id,
)


def test_logs_and_gateways_survive_a_restart(second_gateway):
    gw = second_gateway
    gw.start()
    account, gw_id = unique_id("acct"), unique_id("gw")
    settings = MINIMAL_GATEWAY_SETTINGS | {"cache_ttl": 120, "rate_limiting_technique": "sliding"}
    sent_requests: dict[str, bytes] = {}
    with make_cloudflare_client(gw.api_url) as cf:
        created = cf.ai_gateway.create(account_id=account, id=gw_id, **settings)
        with make_openai_client(gw.provider_url("openai", account=account, gateway=gw_id)) as client:
            for i in range(4):
                raw = client.chat.completions.with_raw_response.create(
                    model=OPENAI_MODEL,
                    messages=[{"role": "user", "content": f"persist me {i}"}],
                    extra_headers={"cf-aig-metadata": json.dumps({"i": i})},
                )
                sent_requests[raw.headers["cf-aig-log-id"]] = raw.http_request.content
        ids = list(sent_requests)
        for log_id in ids:
            gw.wait_for_log(log_id, account=account, gateway=gw_id)
        cf.ai_gateway.logs.edit(ids[1], account_id=account, gateway_id=gw_id, feedback=1, score=75)
        cf.ai_gateway.logs.delete(gw_id, account_id=account, filters=[{"key": "id", "operator": "eq", "value": [ids[0]]}])

        # One more, and SIGTERM straight away: a graceful stop flushes queued logs.
        with make_openai_client(gw.provider_url("openai", account=account, gateway=gw_id)) as client:
            raw = client.chat.completions.with_raw_response.create(
                model=OPENAI_MODEL, messages=[{"role": "user", "content": "the last one"}]
            )
        last = raw.headers["cf-aig-log-id"]
        sent_requests[last] = raw.http_request.content
    gw.stop_and_check()

    gw.start()
    with make_cloudflare_client(gw.api_url) as cf:
        fetched = cf.ai_gateway.get(gw_id, account_id=account)
        assert fetched.model_dump() == created.model_dump()

        expected = [last, ids[3], ids[2], ids[1]]
        page = cf.ai_gateway.logs.list(gw_id, account_id=account)
        assert [log.id for log in page.result] == expected
        assert page.result_info.total_count == len(expected)
        for log_id in expected:
            request = cf.ai_gateway.logs.request(log_id, account_id=account, gateway_id=gw_id)
            assert request == json.loads(sent_requests[log_id])
            assert cf.ai_gateway.logs.response(log_id, account_id=account, gateway_id=gw_id)["model"] == OPENAI_MODEL
        with pytest.raises(cloudflare.NotFoundError):
            cf.ai_gateway.logs.get(ids[0], account_id=account, gateway_id=gw_id)

        edited = cf.ai_gateway.logs.get(ids[1], account_id=account, gateway_id=gw_id)
        assert (edited.model_extra["feedback"], edited.model_extra["score"]) == (1, 75)
        by_feedback = cf.ai_gateway.logs.list(
            gw_id, account_id=account, filters=[{"key": "feedback", "operator": "eq", "value": [1]}]
        )
        assert ([log.id for log in by_feedback.result], by_feedback.result_info.total_count) == ([ids[1]], 1)
        by_model = cf.ai_gateway.logs.list(gw_id, account_id=account, model=OPENAI_MODEL)
        assert by_model.result_info.total_count == len(expected)

        # And it keeps working: new logs go after the old ones.
        with make_openai_client(gw.provider_url("openai", account=account, gateway=gw_id)) as client:
            raw = client.chat.completions.with_raw_response.create(
                model=OPENAI_MODEL, messages=[{"role": "user", "content": "after the restart"}]
            )
        newest = raw.headers["cf-aig-log-id"]
        gw.wait_for_log(newest, account=account, gateway=gw_id)
        assert [log.id for log in cf.ai_gateway.logs.list(gw_id, account_id=account)] == [newest, *expected]
    gw.stop_and_check()
