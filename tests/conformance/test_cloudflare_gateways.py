"""The official `cloudflare` SDK's `ai_gateway` gateway calls against aigw's management API, and
what the settings they store do to the requests sent through the gateway.

Every test works in accounts and gateways of its own (uuid-based ids), so none depends on another.
"""

from __future__ import annotations

from datetime import datetime

import cloudflare
import pytest
from cloudflare.types.ai_gateway import (
    AIGatewayCreateResponse,
    AIGatewayDeleteResponse,
    AIGatewayGetResponse,
    AIGatewayListResponse,
    AIGatewayUpdateResponse,
)

from harness import (
    MINIMAL_GATEWAY_SETTINGS,
    ULID_RE,
    http_request,
    make_openai_client,
    openai_chat,
    unique_id,
    wait_until,
)

#: Every setting aigw stores, away from its default.
FULL_SETTINGS = {
    "cache_invalidate_on_update": True,
    "cache_ttl": 300,
    "collect_logs": False,
    "rate_limiting_interval": 60,
    "rate_limiting_limit": 100,
    "rate_limiting_technique": "sliding",
    "authentication": True,
    "log_management": 10000,
    "log_management_strategy": "DELETE_OLDEST",
    "logpush": False,
}

SETTING_NAMES = list(FULL_SETTINGS)


def settings_of(gw) -> dict:
    return {name: getattr(gw, name) for name in SETTING_NAMES}


def assert_api_error(err: cloudflare.APIStatusError, status: int, code: int, needle: str | None = None):
    """The SDK exception carries the v4 error envelope with one error of `code`."""
    assert err.status_code == status
    body = err.body
    assert body["success"] is False and body["result"] is None, body
    (error,) = body["errors"]
    assert error["code"] == code, body
    if needle is not None:
        assert needle in error["message"], body
    return error["message"]


def send_chat(gateway, account: str, gateway_id: str) -> dict:
    """One chat completion through `account/gateway_id`; the response headers."""
    with make_openai_client(gateway.provider_url("openai", account=account, gateway=gateway_id)) as client:
        return openai_chat(client)[1]


# ---------------------------------------------------------------------------------------------
# create


def test_create_minimal(cf, gateway):
    account, gw_id = unique_id("acct"), unique_id("gw")
    before = datetime.now().astimezone()
    created = cf.ai_gateway.create(account_id=account, id=gw_id, **MINIMAL_GATEWAY_SETTINGS)

    assert isinstance(created, AIGatewayCreateResponse)
    assert created.id == gw_id
    assert created.is_default is False
    assert created.collect_logs is True
    assert created.cache_invalidate_on_update is False
    # Unset limits read back as 0 (Cloudflare's "off"), the technique as its default.
    assert (created.cache_ttl, created.rate_limiting_interval, created.rate_limiting_limit) == (0, 0, 0)
    assert created.rate_limiting_technique == "fixed"
    assert created.authentication is False
    assert created.log_management is None and created.log_management_strategy is None
    assert isinstance(created.created_at, datetime) and created.created_at.tzinfo is not None
    assert created.modified_at == created.created_at
    # Timestamps come from the same clock as ours, at millisecond precision.
    assert created.created_at >= before.replace(microsecond=before.microsecond // 1000 * 1000)
    assert created.model_extra.get("account_id") == account

    # The new gateway serves inference requests and logs them under its own id.
    headers = send_chat(gateway, account, gw_id)
    record = gateway.wait_for_log(headers["cf-aig-log-id"], account=account, gateway=gw_id)
    assert record["gateway_id"] == gw_id


def test_create_with_every_setting(cf):
    account, gw_id = unique_id("acct"), unique_id("gw")
    created = cf.ai_gateway.create(account_id=account, id=gw_id, **FULL_SETTINGS, zdr=False, dlp=None)
    assert created.id == gw_id
    assert settings_of(created) == FULL_SETTINGS

    fetched = cf.ai_gateway.get(gw_id, account_id=account)
    assert settings_of(fetched) == FULL_SETTINGS
    assert (fetched.created_at, fetched.modified_at) == (created.created_at, created.modified_at)


def test_create_duplicate_is_a_conflict(cf):
    account, gw_id = unique_id("acct"), unique_id("gw")
    first = cf.ai_gateway.create(account_id=account, id=gw_id, **MINIMAL_GATEWAY_SETTINGS)
    with pytest.raises(cloudflare.ConflictError) as info:
        cf.ai_gateway.create(account_id=account, id=gw_id, **FULL_SETTINGS)
    assert_api_error(info.value, 409, 3004, gw_id)
    # The existing gateway is untouched.
    assert settings_of(cf.ai_gateway.get(gw_id, account_id=account)) == settings_of(first)
    # The same id in another account is another gateway.
    other = cf.ai_gateway.create(account_id=unique_id("acct"), id=gw_id, **MINIMAL_GATEWAY_SETTINGS)
    assert other.id == gw_id


@pytest.mark.parametrize("bad_id", ["Bad Id", "UPPER", "a" * 65, "dot.ted", "slash%2Fed"])
def test_create_invalid_id_is_a_bad_request(cf, bad_id):
    account = unique_id("acct")
    with pytest.raises(cloudflare.BadRequestError) as info:
        cf.ai_gateway.create(account_id=account, id=bad_id, **MINIMAL_GATEWAY_SETTINGS)
    assert_api_error(info.value, 400, 3002, "`id`")
    assert list(cf.ai_gateway.list(account_id=account)) == []


@pytest.mark.parametrize(
    "setting, value",
    [
        ("cache_ttl", -1),
        ("rate_limiting_technique", "leaky"),
        ("log_management_strategy", "KEEP_ALL"),
        ("log_management", 0),
        ("collect_logs", "yes"),
    ],
)
def test_create_invalid_setting_is_a_bad_request_naming_it(cf, setting, value):
    account = unique_id("acct")
    settings = MINIMAL_GATEWAY_SETTINGS | {setting: value}
    with pytest.raises(cloudflare.BadRequestError) as info:
        cf.ai_gateway.create(account_id=account, id=unique_id("gw"), **settings)
    assert_api_error(info.value, 400, 3002, f"`{setting}`")


def test_create_with_retry_settings(cf):
    account, gw_id = unique_id("acct"), unique_id("gw")
    retry = {"retry_max_attempts": 3, "retry_delay": 500, "retry_backoff": "exponential"}
    created = cf.ai_gateway.create(account_id=account, id=gw_id, **MINIMAL_GATEWAY_SETTINGS, **retry)
    assert {k: getattr(created, k) for k in retry} == retry
    fetched = cf.ai_gateway.get(gw_id, account_id=account)
    assert {k: getattr(fetched, k) for k in retry} == retry


# ---------------------------------------------------------------------------------------------
# list


def test_list_pages_and_search(cf):
    account = unique_id("acct")
    ids = sorted(f"{name}-{unique_id('gw')}" for name in ("alpha", "beta", "gamma-full"))
    for gw_id in ids:
        cf.ai_gateway.create(account_id=account, id=gw_id, **MINIMAL_GATEWAY_SETTINGS)

    first = cf.ai_gateway.list(account_id=account, per_page=1)
    assert len(first.result) == 1 and isinstance(first.result[0], AIGatewayListResponse)
    info = first.result_info
    assert (info.page, info.per_page, info.count, info.total_count) == (1, 1, 1, 3)

    # Auto-pagination walks page after page until an empty one: each gateway exactly once.
    walked = [g.id for g in cf.ai_gateway.list(account_id=account, per_page=1)]
    assert sorted(walked) == ids

    everything = cf.ai_gateway.list(account_id=account)
    assert sorted(g.id for g in everything.result) == ids
    assert everything.result_info.total_count == 3
    assert all(g.model_extra.get("account_id") == account for g in everything.result)

    (full_id,) = [i for i in ids if i.startswith("gamma-full")]
    assert [g.id for g in cf.ai_gateway.list(account_id=account, search="full")] == [full_id]
    assert [g.id for g in cf.ai_gateway.list(account_id=account, search="no-such")] == []

    # Gateways are per account.
    assert list(cf.ai_gateway.list(account_id=unique_id("acct"))) == []


def test_list_shows_the_default_gateway_once_used(cf, gateway):
    account = unique_id("acct")
    headers = send_chat(gateway, account, "default")
    gateway.wait_for_log(headers["cf-aig-log-id"], account=account)
    # The implicit default gateway is persisted in the background on first use.
    listed = wait_until(lambda: list(cf.ai_gateway.list(account_id=account)), "default is listed")
    assert [(g.id, g.is_default) for g in listed] == [("default", True)]
    assert cf.ai_gateway.get("default", account_id=account).collect_logs is True


def test_list_per_page_out_of_range(cf):
    for per_page in (0, 51):
        with pytest.raises(cloudflare.BadRequestError) as info:
            cf.ai_gateway.list(account_id=unique_id("acct"), per_page=per_page)
        assert_api_error(info.value, 400, 3001, "`per_page`")


# ---------------------------------------------------------------------------------------------
# get / update


def test_get(cf):
    account, gw_id = unique_id("acct"), unique_id("gw")
    created = cf.ai_gateway.create(account_id=account, id=gw_id, **FULL_SETTINGS)
    fetched = cf.ai_gateway.get(gw_id, account_id=account)
    assert isinstance(fetched, AIGatewayGetResponse)
    assert fetched.model_dump() == created.model_dump()


def test_get_unknown_is_not_found(cf):
    with pytest.raises(cloudflare.NotFoundError) as info:
        cf.ai_gateway.get("no-such-gateway", account_id=unique_id("acct"))
    assert_api_error(info.value, 404, 3003, "no-such-gateway")


def test_update_replaces_settings(cf):
    account, gw_id = unique_id("acct"), unique_id("gw")
    created = cf.ai_gateway.create(account_id=account, id=gw_id, **FULL_SETTINGS)
    new_settings = MINIMAL_GATEWAY_SETTINGS | {
        "cache_ttl": 60,
        "rate_limiting_interval": 10,
        "rate_limiting_limit": 5,
        "rate_limiting_technique": "fixed",
    }
    updated = cf.ai_gateway.update(gw_id, account_id=account, **new_settings)
    assert isinstance(updated, AIGatewayUpdateResponse)
    assert updated.id == gw_id
    # PUT replaces every setting: what was not sent is back to its default.
    expected = {
        "cache_invalidate_on_update": False,
        "cache_ttl": 60,
        "collect_logs": True,
        "rate_limiting_interval": 10,
        "rate_limiting_limit": 5,
        "rate_limiting_technique": "fixed",
        "authentication": False,
        "log_management": None,
        "log_management_strategy": None,
        "logpush": False,
    }
    assert settings_of(updated) == expected
    assert updated.created_at == created.created_at
    assert updated.modified_at >= created.modified_at
    assert settings_of(cf.ai_gateway.get(gw_id, account_id=account)) == expected


def test_update_unknown_is_not_found(cf):
    with pytest.raises(cloudflare.NotFoundError):
        cf.ai_gateway.update("no-such-gateway", account_id=unique_id("acct"), **MINIMAL_GATEWAY_SETTINGS)


def test_update_collect_logs_takes_effect(cf, gateway):
    account, gw_id = unique_id("acct"), unique_id("gw")
    cf.ai_gateway.create(account_id=account, id=gw_id, **MINIMAL_GATEWAY_SETTINGS)
    logged = send_chat(gateway, account, gw_id)["cf-aig-log-id"]
    gateway.wait_for_log(logged, account=account, gateway=gw_id)

    cf.ai_gateway.update(gw_id, account_id=account, **MINIMAL_GATEWAY_SETTINGS | {"collect_logs": False})
    # Read-your-writes: the very next request through the gateway is not logged.
    unlogged = send_chat(gateway, account, gw_id)
    assert "cf-aig-log-id" not in unlogged

    cf.ai_gateway.update(gw_id, account_id=account, **MINIMAL_GATEWAY_SETTINGS)
    relogged = send_chat(gateway, account, gw_id)["cf-aig-log-id"]
    gateway.wait_for_log(relogged, account=account, gateway=gw_id)
    # Logs are written in order: with the last one visible, the gateway holds exactly two.
    assert [log.id for log in cf.ai_gateway.logs.list(gw_id, account_id=account)] == [relogged, logged]


def test_gateway_created_without_logging_logs_nothing(cf, gateway):
    account, gw_id = unique_id("acct"), unique_id("gw")
    cf.ai_gateway.create(account_id=account, id=gw_id, **MINIMAL_GATEWAY_SETTINGS | {"collect_logs": False})
    assert "cf-aig-log-id" not in send_chat(gateway, account, gw_id)


# ---------------------------------------------------------------------------------------------
# delete


def test_delete(cf, gateway):
    account, gw_id = unique_id("acct"), unique_id("gw")
    keep = cf.ai_gateway.create(account_id=account, id=unique_id("keep"), **MINIMAL_GATEWAY_SETTINGS)
    created = cf.ai_gateway.create(account_id=account, id=gw_id, **FULL_SETTINGS)

    deleted = cf.ai_gateway.delete(gw_id, account_id=account)
    assert isinstance(deleted, AIGatewayDeleteResponse)
    assert deleted.id == gw_id
    assert settings_of(deleted) == settings_of(created)

    with pytest.raises(cloudflare.NotFoundError):
        cf.ai_gateway.get(gw_id, account_id=account)
    with pytest.raises(cloudflare.NotFoundError):
        cf.ai_gateway.delete(gw_id, account_id=account)
    assert [g.id for g in cf.ai_gateway.list(account_id=account)] == [keep.id]

    # The proxy no longer knows the gateway.
    resp = http_request(
        "POST",
        f"{gateway.provider_url('openai', account=account, gateway=gw_id)}/chat/completions",
        body={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert resp.status == 404
    assert resp.json()["errors"][0]["code"] == 2010


def test_delete_removes_the_gateways_logs(cf, gateway):
    account, gw_id = unique_id("acct"), unique_id("gw")
    cf.ai_gateway.create(account_id=account, id=gw_id, **MINIMAL_GATEWAY_SETTINGS)
    # A neighbour in the same account whose logs must survive.
    neighbour = cf.ai_gateway.create(account_id=account, id=unique_id("gw"), **MINIMAL_GATEWAY_SETTINGS).id
    old_ids = [send_chat(gateway, account, gw_id)["cf-aig-log-id"] for _ in range(3)]
    kept = send_chat(gateway, account, neighbour)["cf-aig-log-id"]
    for log_id in old_ids:
        gateway.wait_for_log(log_id, account=account, gateway=gw_id)
    gateway.wait_for_log(kept, account=account, gateway=neighbour)

    cf.ai_gateway.delete(gw_id, account_id=account)
    cf.ai_gateway.create(account_id=account, id=gw_id, **MINIMAL_GATEWAY_SETTINGS)

    page = cf.ai_gateway.logs.list(gw_id, account_id=account)
    assert page.result == []
    assert page.result_info.total_count == 0
    for log_id in old_ids:
        assert ULID_RE.match(log_id)
        with pytest.raises(cloudflare.NotFoundError):
            cf.ai_gateway.logs.get(log_id, account_id=account, gateway_id=gw_id)
        with pytest.raises(cloudflare.NotFoundError):
            cf.ai_gateway.logs.request(log_id, account_id=account, gateway_id=gw_id)
        with pytest.raises(cloudflare.NotFoundError):
            cf.ai_gateway.logs.response(log_id, account_id=account, gateway_id=gw_id)
        # The bodies are gone from the blob store too (not only unreachable).
        assert [p for p in (gateway.data_dir / "blobs").rglob(f"*{log_id}*")] == []

    assert [log.id for log in cf.ai_gateway.logs.list(neighbour, account_id=account)] == [kept]
    # The re-created gateway logs afresh.
    fresh = send_chat(gateway, account, gw_id)["cf-aig-log-id"]
    gateway.wait_for_log(fresh, account=account, gateway=gw_id)
    assert [log.id for log in cf.ai_gateway.logs.list(gw_id, account_id=account)] == [fresh]


def test_logs_of_requests_in_flight_do_not_outlive_their_gateway(cf, gateway):
    """A request still streaming when its gateway is deleted must not leave a log behind that
    shows up in a later gateway of the same id."""
    account, gw_id = unique_id("acct"), unique_id("gw")
    cf.ai_gateway.create(account_id=account, id=gw_id, **MINIMAL_GATEWAY_SETTINGS)
    barrier_gw = cf.ai_gateway.create(account_id=account, id=unique_id("gw"), **MINIMAL_GATEWAY_SETTINGS).id

    with make_openai_client(gateway.provider_url("openai", account=account, gateway=gw_id)) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "still streaming"}],
            stream=True,
            extra_headers={"x-mock-chunks": "3", "x-mock-chunk-delay-ms": "200"},
        )
        in_flight = raw.headers["cf-aig-log-id"]
        chunks = iter(raw.parse())
        next(chunks)  # the exchange is under way
        cf.ai_gateway.delete(gw_id, account_id=account)
        list(chunks)  # and now it ends, after the delete

    # Logs are written in order: once a later request's log is visible, the in-flight one has
    # been written (or dropped).
    barrier = send_chat(gateway, account, barrier_gw)["cf-aig-log-id"]
    gateway.wait_for_log(barrier, account=account, gateway=barrier_gw)

    cf.ai_gateway.create(account_id=account, id=gw_id, **MINIMAL_GATEWAY_SETTINGS)
    assert [log.id for log in cf.ai_gateway.logs.list(gw_id, account_id=account)] == []
    with pytest.raises(cloudflare.NotFoundError):
        cf.ai_gateway.logs.get(in_flight, account_id=account, gateway_id=gw_id)


# ---------------------------------------------------------------------------------------------
# The implicit `default` gateway (exists in every account; persisted on first use)


def test_default_gateway_can_be_configured_before_first_use(cf, gateway):
    """`GET .../gateways/default` answers for an account that never used it (the default
    gateway always exists), so updating it must work too — e.g. to switch logging off before
    the first request."""
    account = unique_id("acct")
    assert cf.ai_gateway.get("default", account_id=account).is_default is True
    updated = cf.ai_gateway.update("default", account_id=account, **MINIMAL_GATEWAY_SETTINGS | {"collect_logs": False})
    assert (updated.id, updated.collect_logs) == ("default", False)
    assert "cf-aig-log-id" not in send_chat(gateway, account, "default")


def test_default_gateway_reads_are_stable_before_first_use(cf):
    account = unique_id("acct")
    first = cf.ai_gateway.get("default", account_id=account)
    second = cf.ai_gateway.get("default", account_id=account)
    assert (second.created_at, second.modified_at) == (first.created_at, first.modified_at)


def test_deleting_the_default_gateway_removes_its_logs(cf, gateway):
    account = unique_id("acct")
    old = send_chat(gateway, account, "default")["cf-aig-log-id"]
    gateway.wait_for_log(old, account=account)
    wait_until(lambda: list(cf.ai_gateway.list(account_id=account)), "default is persisted")
    deleted = cf.ai_gateway.delete("default", account_id=account)
    assert (deleted.id, deleted.is_default) == ("default", True)
    # `default` comes back on next use, empty.
    new = send_chat(gateway, account, "default")["cf-aig-log-id"]
    gateway.wait_for_log(new, account=account)
    assert [log.id for log in cf.ai_gateway.logs.list("default", account_id=account)] == [new]
