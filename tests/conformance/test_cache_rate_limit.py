"""Gateway caching and rate limiting as SDK users meet them: gateways configured through the
official `cloudflare` SDK (`cache_ttl`, `rate_limiting_*`), then the official `openai` SDK
through them — a MISS then a HIT with the same completion (and the HIT logged as cached, at no
cost), and `openai.RateLimitError` with `Retry-After` once the limit is reached."""

from __future__ import annotations

import time

import openai
import pytest

from harness import MINIMAL_GATEWAY_SETTINGS, make_openai_client, unique_id, wait_until

ACCOUNT = "acct"


def chat(client: openai.OpenAI, content: str, **extra):
    return client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": content}],
        **extra,
    )


def test_a_repeated_completion_is_a_cached_hit(gateway, cf):
    gw_id = unique_id("cached")
    settings = dict(MINIMAL_GATEWAY_SETTINGS, cache_ttl=300)
    cf.ai_gateway.create(account_id=ACCOUNT, id=gw_id, **settings)
    client = make_openai_client(gateway.provider_url("openai", gateway=gw_id))
    try:
        first = chat(client, "cache me")
        second = chat(client, "cache me")
        assert first.headers["cf-aig-cache-status"] == "MISS"
        assert second.headers["cf-aig-cache-status"] == "HIT"
        assert second.parse().model_dump() == first.parse().model_dump()
        # Opting out per request.
        skipped = chat(client, "cache me", extra_headers={"cf-aig-skip-cache": "true"})
        assert "cf-aig-cache-status" not in skipped.headers
        assert skipped.parse().id != first.parse().id

        def cached_logs():
            logs = cf.ai_gateway.logs.list(gateway_id=gw_id, account_id=ACCOUNT).result
            return [log for log in logs if log.cached] if len(logs) >= 3 else None

        cached = wait_until(cached_logs, "the cached request's log")
        assert len(cached) == 1
        assert cached[0].cost == 0
        assert cached[0].tokens_out == first.parse().usage.completion_tokens
    finally:
        client.close()


def test_over_the_limit_the_sdk_raises_rate_limit_error(gateway, cf):
    # Stay clear of an hour boundary: the windows are aligned to the clock.
    left = 3600 - time.time() % 3600
    if left < 30:
        time.sleep(left + 0.1)
    gw_id = unique_id("limited")
    settings = dict(
        MINIMAL_GATEWAY_SETTINGS,
        rate_limiting_limit=3,
        rate_limiting_interval=3600,
        rate_limiting_technique="fixed",
    )
    cf.ai_gateway.create(account_id=ACCOUNT, id=gw_id, **settings)
    client = make_openai_client(gateway.provider_url("openai", gateway=gw_id))
    try:
        for n in range(3):
            assert chat(client, f"request {n}").http_response.status_code == 200
        with pytest.raises(openai.RateLimitError) as refused:
            chat(client, "one too many")
        response = refused.value.response
        assert response.status_code == 429
        assert 1 <= int(response.headers["retry-after"]) <= 3600
        assert response.headers["ratelimit-limit"] == "3"
        assert response.json()["errors"][0]["code"] == 2030
    finally:
        client.close()
