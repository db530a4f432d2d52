"""Management API authentication and parameter validation, through the official `cloudflare` SDK
(and plain HTTP where the SDK cannot send what is tested).

The admin token (`AIGW_ADMIN_TOKEN`) may do everything; the account token, configured in the
gateway's TOML file as `[[api_tokens]]` by its SHA-256 only, may manage `TOKEN_ACCOUNT` alone.
"""

from __future__ import annotations

import cloudflare
import pytest

from harness import (
    ACCOUNT_TOKEN,
    MINIMAL_GATEWAY_SETTINGS,
    OPENAI_MODEL,
    TOKEN_ACCOUNT,
    http_request,
    make_cloudflare_client,
    make_openai_client,
    openai_chat,
    unique_id,
)

LOG_ID = "01HWT0D8F80000000000000099"

# Every call, as a function of (client, account, gateway id).
CALLS = {
    "gateways.create": lambda c, a, g: c.ai_gateway.create(account_id=a, id=g, **MINIMAL_GATEWAY_SETTINGS),
    "gateways.list": lambda c, a, g: c.ai_gateway.list(account_id=a),
    "gateways.get": lambda c, a, g: c.ai_gateway.get(g, account_id=a),
    "gateways.update": lambda c, a, g: c.ai_gateway.update(g, account_id=a, **MINIMAL_GATEWAY_SETTINGS),
    "gateways.delete": lambda c, a, g: c.ai_gateway.delete(g, account_id=a),
    "logs.list": lambda c, a, g: c.ai_gateway.logs.list(g, account_id=a),
    "logs.get": lambda c, a, g: c.ai_gateway.logs.get(LOG_ID, account_id=a, gateway_id=g),
    "logs.request": lambda c, a, g: c.ai_gateway.logs.request(LOG_ID, account_id=a, gateway_id=g),
    "logs.response": lambda c, a, g: c.ai_gateway.logs.response(LOG_ID, account_id=a, gateway_id=g),
    "logs.edit": lambda c, a, g: c.ai_gateway.logs.edit(LOG_ID, account_id=a, gateway_id=g, feedback=1),
    "logs.delete": lambda c, a, g: c.ai_gateway.logs.delete(g, account_id=a),
}


def only_error(err: cloudflare.APIStatusError) -> dict:
    body = err.body
    assert body["success"] is False and body["result"] is None, body
    (error,) = body["errors"]
    return error


@pytest.fixture
def account_gateway(cf) -> tuple[str, str]:
    """A gateway in an account other than `TOKEN_ACCOUNT`, made with the admin token."""
    account, gw_id = unique_id("acct"), unique_id("gw")
    cf.ai_gateway.create(account_id=account, id=gw_id, **MINIMAL_GATEWAY_SETTINGS)
    return account, gw_id


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_wrong_token_is_unauthenticated(gateway, account_gateway, call):
    account, gw_id = account_gateway
    with make_cloudflare_client(gateway.api_url, "not-the-admin-token-at-all") as wrong:
        with pytest.raises(cloudflare.AuthenticationError) as info:
            call(wrong, account, gw_id)
    assert info.value.status_code == 401
    assert only_error(info.value)["code"] == 10000


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Basic YWRtaW46YWRtaW4=", f"Token {ACCOUNT_TOKEN}"],
    ids=["none", "empty", "scheme-only", "blank-token", "basic", "other-scheme"],
)
def test_missing_or_malformed_authorization_is_unauthenticated(gateway, authorization):
    headers = {} if authorization is None else {"authorization": authorization}
    resp = http_request("GET", f"{gateway.api_url}/accounts/{TOKEN_ACCOUNT}/ai-gateway/gateways", headers=headers)
    assert resp.status == 401, resp.body
    assert resp.json()["errors"][0]["code"] == 10000


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_account_token_cannot_reach_another_account(cf, cf_account, account_gateway, call):
    account, gw_id = account_gateway
    with pytest.raises(cloudflare.PermissionDeniedError) as info:
        call(cf_account, account, gw_id)
    assert info.value.status_code == 403
    error = only_error(info.value)
    assert error["code"] == 9109
    assert f"`{account}`" in error["message"]
    # Nothing was changed on the way: the gateway is still there, with its settings.
    assert cf.ai_gateway.get(gw_id, account_id=account).collect_logs is True
    assert [g.id for g in cf.ai_gateway.list(account_id=account)] == [gw_id]


def test_account_token_manages_its_own_account(cf, cf_account, gateway):
    gw_id = unique_id("gw")
    created = cf_account.ai_gateway.create(account_id=TOKEN_ACCOUNT, id=gw_id, **MINIMAL_GATEWAY_SETTINGS)
    assert created.id == gw_id
    assert [g.id for g in cf_account.ai_gateway.list(account_id=TOKEN_ACCOUNT, search=gw_id)] == [gw_id]
    assert cf_account.ai_gateway.get(gw_id, account_id=TOKEN_ACCOUNT).id == gw_id
    # The admin sees what the account token made.
    assert cf.ai_gateway.get(gw_id, account_id=TOKEN_ACCOUNT).id == gw_id

    with make_openai_client(gateway.provider_url("openai", account=TOKEN_ACCOUNT, gateway=gw_id)) as client:
        completion, headers = openai_chat(client, content="scoped token test")
    log_id = headers["cf-aig-log-id"]
    gateway.wait_for_log(log_id, account=TOKEN_ACCOUNT, gateway=gw_id)

    assert [log.id for log in cf_account.ai_gateway.logs.list(gw_id, account_id=TOKEN_ACCOUNT)] == [log_id]
    log = cf_account.ai_gateway.logs.get(log_id, account_id=TOKEN_ACCOUNT, gateway_id=gw_id)
    assert (log.model, log.tokens_in) == (OPENAI_MODEL, completion.usage.prompt_tokens)
    request = cf_account.ai_gateway.logs.request(log_id, account_id=TOKEN_ACCOUNT, gateway_id=gw_id)
    assert request["messages"][0]["content"] == "scoped token test"
    cf_account.ai_gateway.logs.edit(log_id, account_id=TOKEN_ACCOUNT, gateway_id=gw_id, feedback=1)
    cf_account.ai_gateway.update(gw_id, account_id=TOKEN_ACCOUNT, **MINIMAL_GATEWAY_SETTINGS | {"cache_ttl": 5})
    cf_account.ai_gateway.logs.delete(gw_id, account_id=TOKEN_ACCOUNT)
    assert cf_account.ai_gateway.logs.list(gw_id, account_id=TOKEN_ACCOUNT).result == []
    cf_account.ai_gateway.delete(gw_id, account_id=TOKEN_ACCOUNT)
    with pytest.raises(cloudflare.NotFoundError):
        cf.ai_gateway.get(gw_id, account_id=TOKEN_ACCOUNT)


# ---------------------------------------------------------------------------------------------
# Invalid parameters: 400, and the message names the parameter


def f(key, operator, *values) -> dict:
    return {"key": key, "operator": operator, "value": list(values)}


BAD_LIST_PARAMS = {
    "unknown-filter-key": ({"filters": [f("colour", "eq", "red")]}, "`filters[0].key`"),
    "unrecorded-filter-key": ({"filters": [f("wholesale", "eq", True)]}, "`filters[0].key`"),
    "second-filter-key": (
        {"filters": [f("model", "eq", OPENAI_MODEL), f("colour", "eq", "red")]},
        "`filters[1].key`",
    ),
    "operator-for-key": ({"filters": [f("model", "gt", "a")]}, "`filters[0].operator`"),
    "filter-value-type": ({"filters": [f("tokens_in", "gt", "many")]}, "`filters[0].value`"),
    "filter-feedback-value": ({"filters": [f("feedback", "eq", 2)]}, "`filters[0].value`"),
    "filter-bad-date": ({"filters": [f("created_at", "gt", "soon")]}, "`filters[0].value`"),
    "ambiguous-multi-value-filters": (
        {"filters": [f("model", "eq", "a", "b"), f("cached", "eq", True)]},
        "`filters.value`",
    ),
    "per-page-too-big": ({"per_page": 500}, "`per_page`"),
    "per-page-zero": ({"per_page": 0}, "`per_page`"),
    "page-zero": ({"page": 0}, "`page`"),
    "start-date": ({"start_date": "yesterday"}, "`start_date`"),
    "end-date": ({"end_date": "2024-13-01"}, "`end_date`"),
    "order-by": ({"order_by": "colour"}, "`order_by`"),
    "order-by-direction": ({"order_by_direction": "sideways"}, "`order_by_direction`"),
    "min-cost": ({"min_cost": "cheap"}, "`min_cost`"),
    "success": ({"success": "maybe"}, "`success`"),
}


@pytest.mark.parametrize("case", BAD_LIST_PARAMS.values(), ids=BAD_LIST_PARAMS.keys())
def test_logs_list_bad_parameter_is_named(cf, account_gateway, case):
    params, needle = case
    account, gw_id = account_gateway
    with pytest.raises(cloudflare.BadRequestError) as info:
        cf.ai_gateway.logs.list(gw_id, account_id=account, **params)
    assert info.value.status_code == 400
    error = only_error(info.value)
    assert error["code"] == 3001
    assert needle in error["message"], error


def test_logs_delete_bad_filter_is_named(cf, account_gateway):
    account, gw_id = account_gateway
    with pytest.raises(cloudflare.BadRequestError) as info:
        cf.ai_gateway.logs.delete(gw_id, account_id=account, filters=[f("colour", "eq", "red")])
    assert "`filters[0].key`" in only_error(info.value)["message"]


def test_bad_account_id_is_named(cf):
    with pytest.raises(cloudflare.BadRequestError) as info:
        cf.ai_gateway.list(account_id="bad.account")
    assert "`account_id`" in only_error(info.value)["message"]


# ---------------------------------------------------------------------------------------------
# Routing under /client/v4 (plain HTTP: the SDK has no call for a wrong path)


def test_unknown_route_and_method(gateway):
    auth = {"authorization": f"Bearer {gateway.admin_token}"}
    resp = http_request("GET", f"{gateway.api_url}/accounts/a/ai-gateway/nothing-here", headers=auth)
    assert (resp.status, resp.json()["errors"][0]["code"]) == (404, 7000)
    resp = http_request("PATCH", f"{gateway.api_url}/accounts/a/ai-gateway/gateways", headers=auth)
    assert (resp.status, resp.json()["errors"][0]["code"]) == (405, 7001)
    # Both only after authentication: nothing about the API's shape leaks to strangers.
    resp = http_request("GET", f"{gateway.api_url}/accounts/a/ai-gateway/nothing-here")
    assert resp.status == 401
