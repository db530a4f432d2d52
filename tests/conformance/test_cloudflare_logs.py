"""The official `cloudflare` SDK's `ai_gateway.logs` calls against aigw, checked against the
requests that were actually sent through the gateway.

A module fixture sends a known mix (OpenAI and Anthropic via the mock, relayed failures, metadata,
event ids, a custom cost, a stream) through a fresh gateway and waits until every log is
visible; the read-only tests query it. Tests that edit or delete logs make gateways of their own.
Expected answers are computed from what was sent and received, never from the API itself.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import anthropic
import cloudflare
import httpx
import openai
import pytest
from cloudflare.types.ai_gateway import LogDeleteResponse, LogGetResponse, LogListResponse

from harness import (
    ANTHROPIC_MODEL,
    DEADLINE_S,
    MAX_BODY_BYTES,
    MINIMAL_GATEWAY_SETTINGS,
    OPENAI_MODEL,
    http_request,
    make_anthropic_client,
    make_openai_client,
    unique_id,
    words,
)

OTHER_OPENAI_MODEL = "gpt-4o"


@dataclass
class Sent:
    """One exchange sent through the gateway, as the client saw it."""

    index: int
    log_id: str
    provider: str
    model: str
    status: int
    tokens_in: int | None
    tokens_out: int | None
    metadata: dict
    event_id: str | None
    request: bytes
    #: The response body as received (`None` for a stream, which the SDK consumed).
    response: bytes | None
    streamed: bool = False
    custom_cost: float | None = None
    #: The log as `GET .../logs/{id}` first answered it (for `created_at` boundaries).
    record: dict = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return 200 <= self.status < 300

    @property
    def created_at(self) -> datetime:
        return datetime.fromisoformat(self.record["created_at"].replace("Z", "+00:00"))


def control_headers(metadata: dict, event_id: str | None, extra: dict) -> dict:
    headers = dict(extra)
    if metadata:
        headers["cf-aig-metadata"] = json.dumps(metadata)
    if event_id:
        headers["cf-aig-event-id"] = event_id
    return headers


def send_openai(client, index, *, model, content, metadata=None, event_id=None, extra=None, stream=False):
    metadata = metadata or {}
    headers = control_headers(metadata, event_id, extra or {})
    messages = [{"role": "user", "content": content}]
    try:
        if stream:
            raw = client.chat.completions.with_raw_response.create(
                model=model,
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
                extra_headers=headers,
            )
            usage = list(raw.parse())[-1].usage
            response = None
        else:
            raw = client.chat.completions.with_raw_response.create(
                model=model, messages=messages, extra_headers=headers
            )
            usage = raw.parse().usage
            response = raw.http_response.content
        tokens = (usage.prompt_tokens, usage.completion_tokens)
        http_request, status, log_id = raw.http_request, raw.status_code, raw.headers["cf-aig-log-id"]
    except openai.APIStatusError as err:
        tokens, response = (None, None), err.response.content
        http_request, status = err.response.request, err.status_code
        log_id = err.response.headers["cf-aig-log-id"]
    custom = json.loads(headers.get("cf-aig-custom-cost", "{}")).get("total_cost")
    return Sent(
        index, log_id, "openai", model, status, *tokens, metadata, event_id,
        http_request.content, response, streamed=stream, custom_cost=custom,
    )  # fmt: skip


def send_anthropic(client, index, *, content, metadata=None, event_id=None, extra=None):
    metadata = metadata or {}
    headers = control_headers(metadata, event_id, extra or {})
    try:
        raw = client.messages.with_raw_response.create(
            model=ANTHROPIC_MODEL,
            max_tokens=32,
            messages=[{"role": "user", "content": content}],
            extra_headers=headers,
        )
        usage = raw.parse().usage
        assert usage.input_tokens == words(content)
        tokens, response = (usage.input_tokens, usage.output_tokens), raw.http_response.content
        http_request, status, log_id = raw.http_request, raw.status_code, raw.headers["cf-aig-log-id"]
    except anthropic.APIStatusError as err:
        tokens, response = (None, None), err.response.content
        http_request, status = err.response.request, err.status_code
        log_id = err.response.headers["cf-aig-log-id"]
    return Sent(
        index, log_id, "anthropic", ANTHROPIC_MODEL, status, *tokens, metadata, event_id,
        http_request.content, response,
    )  # fmt: skip


def next_millisecond() -> None:
    """Let the clock move on, so consecutive logs never share a `created_at` millisecond and
    "newest first" is the order they were sent in."""
    time.sleep(0.003)


@dataclass
class Mix:
    account: str
    gateway_id: str
    sent: list[Sent]

    def newest_first(self, keep=lambda s: True) -> list[str]:
        return [s.log_id for s in reversed(self.sent) if keep(s)]


@pytest.fixture(scope="module")
def mix(cf, gateway) -> Mix:
    account, gw_id = unique_id("acct"), unique_id("logs")
    cf.ai_gateway.create(account_id=account, id=gw_id, **MINIMAL_GATEWAY_SETTINGS)
    oai = make_openai_client(gateway.provider_url("openai", account=account, gateway=gw_id))
    claude = make_anthropic_client(gateway.provider_url("anthropic", account=account, gateway=gw_id))
    senders = [
        lambda i: send_openai(
            oai, i, model=OPENAI_MODEL, content="one two three",
            metadata={"user": "alice", "tier": "pro"}, event_id="evt-first",
        ),
        lambda i: send_openai(
            oai, i, model=OTHER_OPENAI_MODEL,
            content="a much longer prompt of exactly twelve words for the bigger model",
            metadata={"user": "bob", "n": 7}, event_id="evt-second",
        ),
        lambda i: send_anthropic(claude, i, content="hello claude", metadata={"user": "alice"}, event_id="evt-third"),
        lambda i: send_openai(
            oai, i, model=OPENAI_MODEL, content="this one fails upstream",
            metadata={"user": "carol"}, event_id="evt-fourth", extra={"x-mock-status": "500"},
        ),
        lambda i: send_anthropic(claude, i, content="rate limited", event_id="evt-fifth", extra={"x-mock-status": "429"}),
        lambda i: send_openai(
            oai, i, model=OPENAI_MODEL, content="priced by hand",
            metadata={"vip": True}, extra={"cf-aig-custom-cost": json.dumps({"total_cost": 0.5})},
        ),
        lambda i: send_openai(
            oai, i, model=OPENAI_MODEL, content="stream four words", event_id="evt-seventh",
            extra={"x-mock-chunks": "4"}, stream=True,
        ),
    ]  # fmt: skip
    sent = []
    for index, send in enumerate(senders):
        next_millisecond()
        sent.append(send(index))
    oai.close()
    claude.close()
    for s in sent:
        s.record = gateway.wait_for_log(s.log_id, account=account, gateway=gw_id)
    return Mix(account, gw_id, sent)


def ids(items) -> list[str]:
    return [item.id for item in items]


# ---------------------------------------------------------------------------------------------
# list


def test_list_is_newest_first_and_matches_what_was_sent(cf, mix):
    page = cf.ai_gateway.logs.list(mix.gateway_id, account_id=mix.account)
    assert ids(page.result) == mix.newest_first()
    info = page.result_info
    assert (info.page, info.per_page, info.count, info.total_count) == (1, 20, len(mix.sent), len(mix.sent))

    by_id = {s.log_id: s for s in mix.sent}
    for log in page.result:
        assert isinstance(log, LogListResponse)
        s = by_id[log.id]
        assert log.provider == s.provider
        assert log.model == s.model
        assert log.ai_model_type == "chat"
        assert log.status_code == s.status
        assert log.success is s.success
        assert log.cached is False
        assert (log.tokens_in, log.tokens_out) == (s.tokens_in, s.tokens_out)
        assert (json.loads(log.metadata) if log.metadata else {}) == s.metadata
        assert log.model_extra["event_id"] == s.event_id
        assert log.model_extra["streamed"] is s.streamed
        assert log.request_size == len(s.request)
        if s.response is not None:
            assert log.response_size == len(s.response)
        if s.custom_cost is not None:
            assert (log.cost, log.custom_cost) == (pytest.approx(s.custom_cost), True)
        elif s.success:
            assert log.cost > 0 and log.custom_cost is False
    created = [log.created_at for log in page.result]
    assert all(isinstance(c, datetime) and c.tzinfo is not None for c in created)
    assert created == sorted(created, reverse=True)


def test_list_pagination(cf, mix):
    expected = mix.newest_first()
    first = cf.ai_gateway.logs.list(mix.gateway_id, account_id=mix.account, per_page=2)
    assert ids(first.result) == expected[:2]
    assert (first.result_info.count, first.result_info.total_count) == (2, len(expected))
    second = cf.ai_gateway.logs.list(mix.gateway_id, account_id=mix.account, per_page=2, page=2)
    assert ids(second.result) == expected[2:4]
    past_the_end = cf.ai_gateway.logs.list(mix.gateway_id, account_id=mix.account, per_page=2, page=9)
    assert past_the_end.result == []
    assert past_the_end.result_info.total_count == len(expected)
    # Auto-pagination collects every log exactly once, in order.
    assert ids(cf.ai_gateway.logs.list(mix.gateway_id, account_id=mix.account, per_page=2)) == expected
    assert ids(cf.ai_gateway.logs.list(mix.gateway_id, account_id=mix.account, per_page=1)) == expected


def f(key, operator, *values) -> dict:
    return {"key": key, "operator": operator, "value": list(values)}


def at(s: Sent, delta_ms: int = 0) -> datetime:
    """`delta_ms` after the log's `created_at`."""
    return s.created_at + timedelta(milliseconds=delta_ms)


def rfc3339(t: datetime) -> str:
    """`2024-05-01T12:00:00.123Z`, the API's own format."""
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


# (filters, which sent exchanges they select); lambdas take the mix for run-time values.
FILTER_CASES = {
    "model-eq": (lambda m: [f("model", "eq", OTHER_OPENAI_MODEL)], lambda s: s.model == OTHER_OPENAI_MODEL),
    "model-eq-two-values": (
        lambda m: [f("model", "eq", OTHER_OPENAI_MODEL, ANTHROPIC_MODEL)],
        lambda s: s.model in (OTHER_OPENAI_MODEL, ANTHROPIC_MODEL),
    ),
    "model-neq": (lambda m: [f("model", "neq", OPENAI_MODEL)], lambda s: s.model != OPENAI_MODEL),
    "model-contains": (lambda m: [f("model", "contains", "4O")], lambda s: "4o" in s.model),
    "success-false": (lambda m: [f("success", "eq", False)], lambda s: not s.success),
    "success-true": (lambda m: [f("success", "eq", True)], lambda s: s.success),
    "provider": (lambda m: [f("provider", "eq", "anthropic")], lambda s: s.provider == "anthropic"),
    "metadata-value": (lambda m: [f("metadata.value", "eq", "alice")], lambda s: s.metadata.get("user") == "alice"),
    "metadata-value-number": (lambda m: [f("metadata.value", "eq", 7)], lambda s: s.metadata.get("n") == 7),
    "metadata-key": (lambda m: [f("metadata.key", "eq", "tier")], lambda s: "tier" in s.metadata),
    "tokens-in-gt": (lambda m: [f("tokens_in", "gt", 10)], lambda s: (s.tokens_in or 0) > 10),
    "tokens-in-lt": (lambda m: [f("tokens_in", "lt", 3)], lambda s: s.tokens_in is not None and s.tokens_in < 3),
    "tokens-out-gt": (lambda m: [f("tokens_out", "gt", 4)], lambda s: (s.tokens_out or 0) > 4),
    "cost-gt": (lambda m: [f("cost", "gt", 0.4)], lambda s: s.custom_cost is not None),
    "event-id": (lambda m: [f("event_id", "eq", "evt-fourth")], lambda s: s.event_id == "evt-fourth"),
    "status-code": (lambda m: [f("status_code", "eq", 429)], lambda s: s.status == 429),
    "id": (lambda m: [f("id", "eq", m.sent[2].log_id)], lambda s: s.index == 2),
    # Bounds sit 1 ms before a log's created_at: after everything of the log before it (sent
    # at least 3 ms earlier), so the cases hold even if ids and created_at differ a little.
    "created-at-gt": (
        lambda m: [f("created_at", "gt", rfc3339(at(m.sent[4], -1)))],
        lambda s: s.index >= 4,
    ),
    "two-filters": (
        lambda m: [f("provider", "eq", "openai"), f("success", "eq", True)],
        lambda s: s.provider == "openai" and s.success,
    ),
}


@pytest.mark.parametrize("case", FILTER_CASES.values(), ids=FILTER_CASES.keys())
def test_list_filters(cf, mix, case):
    filters, selects = case
    expected = mix.newest_first(selects)
    assert 0 < len(expected) < len(mix.sent), "the case must select some logs, not all"
    page = cf.ai_gateway.logs.list(mix.gateway_id, account_id=mix.account, filters=filters(mix))
    assert ids(page.result) == expected
    assert page.result_info.total_count == len(expected)




# The SDK's flat parameters (bounds are inclusive).
FLAT_CASES = {
    "model": (lambda m: {"model": OTHER_OPENAI_MODEL}, lambda s: s.model == OTHER_OPENAI_MODEL),
    "success-false": (lambda m: {"success": False}, lambda s: not s.success),
    "provider": (lambda m: {"provider": "anthropic"}, lambda s: s.provider == "anthropic"),
    "min-cost": (lambda m: {"min_cost": 0.5}, lambda s: s.custom_cost is not None),
    "max-cost": (lambda m: {"max_cost": 0.4, "success": True}, lambda s: s.success and s.custom_cost is None),
    "min-tokens-in": (lambda m: {"min_tokens_in": 12}, lambda s: (s.tokens_in or 0) >= 12),
    "max-tokens-in": (lambda m: {"max_tokens_in": 3}, lambda s: s.tokens_in is not None and s.tokens_in <= 3),
    "total-tokens": (
        lambda m: {"min_total_tokens": 8, "max_total_tokens": 8},
        lambda s: s.tokens_in is not None and s.tokens_in + s.tokens_out == 8,
    ),
    "start-date": (lambda m: {"start_date": at(m.sent[3])}, lambda s: s.index >= 3),
    "end-date-text": (lambda m: {"end_date": rfc3339(at(m.sent[2], -1))}, lambda s: s.index <= 1),
    "date-range": (
        lambda m: {"start_date": at(m.sent[2], -1), "end_date": at(m.sent[5], -1)},
        lambda s: 2 <= s.index <= 4,
    ),
    "combined": (
        lambda m: {"provider": "openai", "success": True, "min_tokens_out": 5, "model_type": "chat"},
        lambda s: s.provider == "openai" and s.success and s.tokens_out >= 5,
    ),
}


@pytest.mark.parametrize("case", FLAT_CASES.values(), ids=FLAT_CASES.keys())
def test_list_flat_parameters(cf, mix, case):
    params, selects = case
    expected = mix.newest_first(selects)
    assert 0 < len(expected) < len(mix.sent), "the case must select some logs, not all"
    page = cf.ai_gateway.logs.list(mix.gateway_id, account_id=mix.account, **params(mix))
    assert ids(page.result) == expected


def test_list_order_by(cf, mix):
    def listed(**order):
        return ids(cf.ai_gateway.logs.list(mix.gateway_id, account_id=mix.account, **order))

    assert listed(order_by="created_at", order_by_direction="asc") == [s.log_id for s in mix.sent]
    assert listed(order_by="created_at", order_by_direction="desc") == mix.newest_first()
    # Ties are broken by id in the same direction; ids grow with time.
    for column in ("model", "provider", "success"):
        key = {"model": lambda s: s.model, "provider": lambda s: s.provider, "success": lambda s: s.success}[column]
        ascending = [s.log_id for s in sorted(mix.sent, key=lambda s: (key(s), s.index))]
        assert listed(order_by=column, order_by_direction="asc") == ascending, column
        assert listed(order_by=column, order_by_direction="desc") == ascending[::-1], column
    # The legacy `direction` parameter means the same.
    assert listed(order_by="created_at", direction="asc") == [s.log_id for s in mix.sent]


@pytest.mark.parametrize(
    "needle, selects",
    [
        ("alice", lambda s: s.metadata.get("user") == "alice"),
        ("ALICE", lambda s: s.metadata.get("user") == "alice"),
        ("evt-fifth", lambda s: s.event_id == "evt-fifth"),
        ("claude", lambda s: s.provider == "anthropic"),
        ("tier", lambda s: "tier" in s.metadata),
    ],
)
def test_list_search(cf, mix, needle, selects):
    expected = mix.newest_first(selects)
    assert 0 < len(expected) < len(mix.sent)
    assert ids(cf.ai_gateway.logs.list(mix.gateway_id, account_id=mix.account, search=needle)) == expected
    assert ids(cf.ai_gateway.logs.list(mix.gateway_id, account_id=mix.account, search="no such text")) == []


def test_list_unknown_gateway_is_not_found(cf, mix):
    with pytest.raises(cloudflare.NotFoundError):
        cf.ai_gateway.logs.list("no-such-gateway", account_id=mix.account)


def test_time_filters_follow_created_at(cf, gateway):
    """`created_at` filters and `start_date` / `end_date` select by the `created_at` the API
    shows, also for a request whose body took a while to arrive."""
    account, gw_id = unique_id("acct"), unique_id("gw")
    cf.ai_gateway.create(account_id=account, id=gw_id, **MINIMAL_GATEWAY_SETTINGS)
    url = f"{gateway.provider_url('openai', account=account, gateway=gw_id)}/chat/completions"
    body = json.dumps({"model": OPENAI_MODEL, "messages": [{"role": "user", "content": "slow upload"}]})

    def slow_upload():
        yield body[:20].encode()
        time.sleep(0.2)  # the request has started; the rest of its body comes later
        yield body[20:].encode()

    with httpx.Client(trust_env=False, timeout=DEADLINE_S) as client:
        slow = client.post(url, content=slow_upload(), headers={"content-type": "application/json"})
        assert slow.status_code == 200
        next_millisecond()
        quick = client.post(url, content=body, headers={"content-type": "application/json"})
    slow_id, quick_id = slow.headers["cf-aig-log-id"], quick.headers["cf-aig-log-id"]
    slow_log = gateway.wait_for_log(slow_id, account=account, gateway=gw_id)
    quick_log = gateway.wait_for_log(quick_id, account=account, gateway=gw_id)
    slow_at = datetime.fromisoformat(slow_log["created_at"].replace("Z", "+00:00"))
    assert slow_at < datetime.fromisoformat(quick_log["created_at"].replace("Z", "+00:00"))

    def listed(**params):
        return ids(cf.ai_gateway.logs.list(gw_id, account_id=account, **params))

    assert listed() == [quick_id, slow_id]
    assert listed(filters=[f("created_at", "eq", slow_log["created_at"])]) == [slow_id]
    assert listed(end_date=slow_log["created_at"]) == [slow_id]  # inclusive
    assert listed(start_date=slow_at + timedelta(milliseconds=1)) == [quick_id]
    assert listed(filters=[f("created_at", "lt", rfc3339(slow_at + timedelta(milliseconds=1)))]) == [slow_id]


def test_order_follows_created_at(cf, gateway):
    """"Newest first" is by the `created_at` the API shows, also when a slow upload started
    before a quick request but finished after it."""
    account, gw_id = unique_id("acct"), unique_id("gw")
    cf.ai_gateway.create(account_id=account, id=gw_id, **MINIMAL_GATEWAY_SETTINGS)
    url = f"{gateway.provider_url('openai', account=account, gateway=gw_id)}/chat/completions"
    body = json.dumps({"model": OPENAI_MODEL, "messages": [{"role": "user", "content": "slow upload"}]})
    first_part_sent = threading.Event()

    def slow_upload():
        yield body[:20].encode()
        first_part_sent.set()
        time.sleep(0.3)
        yield body[20:].encode()

    with httpx.Client(trust_env=False, timeout=DEADLINE_S) as client, ThreadPoolExecutor(1) as pool:
        slow = pool.submit(client.post, url, content=slow_upload(), headers={"content-type": "application/json"})
        assert first_part_sent.wait(DEADLINE_S)
        time.sleep(0.05)  # let the gateway start on it
        quick = client.post(url, content=body, headers={"content-type": "application/json"})
        log_ids = [slow.result().headers["cf-aig-log-id"], quick.headers["cf-aig-log-id"]]
    for log_id in log_ids:
        gateway.wait_for_log(log_id, account=account, gateway=gw_id)

    # Whatever order the two started in, the listing must agree with their created_at.
    newest_first = cf.ai_gateway.logs.list(gw_id, account_id=account).result
    assert sorted(ids(newest_first)) == sorted(log_ids)
    created = [log.created_at for log in newest_first]
    assert created == sorted(created, reverse=True), [(log.id, log.created_at.isoformat()) for log in newest_first]
    oldest_first = cf.ai_gateway.logs.list(gw_id, account_id=account, order_by="created_at", order_by_direction="asc")
    assert [log.created_at for log in oldest_first.result] == sorted(created)


# ---------------------------------------------------------------------------------------------
# get one, bodies


def test_get_matches_the_exchange(cf, mix):
    for s in mix.sent:
        log = cf.ai_gateway.logs.get(s.log_id, account_id=mix.account, gateway_id=mix.gateway_id)
        assert isinstance(log, LogGetResponse)
        assert log.id == s.log_id  # == the cf-aig-log-id the proxy answered with
        assert (log.provider, log.model, log.status_code, log.success) == (s.provider, s.model, s.status, s.success)
        assert (log.tokens_in, log.tokens_out) == (s.tokens_in, s.tokens_out)
        assert (json.loads(log.metadata) if log.metadata else {}) == s.metadata
        assert log.model_extra["event_id"] == s.event_id
        assert log.path == ("/v1/messages" if s.provider == "anthropic" else "/chat/completions")
        assert log.request_type == "provider"
        assert log.step == 0
        assert log.request_content_type == "application/json"
        assert log.request_size == len(s.request)
        # The heads are the start of the stored bodies; these are short, so complete.
        assert log.request_head == s.request.decode()
        assert log.request_head_complete is True
        if s.response is not None:
            assert log.response_head == s.response.decode()
            assert log.response_head_complete is True
        else:
            assert log.response_head.startswith("data: ")
        assert log.duration >= 0


def test_request_and_response_bodies(cf, mix):
    for s in mix.sent:
        request = cf.ai_gateway.logs.request(s.log_id, account_id=mix.account, gateway_id=mix.gateway_id)
        assert request == json.loads(s.request), s.index
        if s.response is not None:
            response = cf.ai_gateway.logs.response(s.log_id, account_id=mix.account, gateway_id=mix.gateway_id)
            assert response == json.loads(s.response), s.index


def test_streamed_response_body(cf, mix):
    (s,) = [s for s in mix.sent if s.streamed]
    with cf.ai_gateway.logs.with_streaming_response.response(
        s.log_id, account_id=mix.account, gateway_id=mix.gateway_id
    ) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        text = resp.read().decode()
    deltas = [
        json.loads(line[len("data: ") :])
        for line in text.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]
    content = "".join(
        (d["choices"][0]["delta"].get("content") or "") for d in deltas if d.get("choices")
    )
    assert content == "tok0 tok1 tok2 tok3"


def test_get_unknown_or_foreign_log_is_not_found(cf, mix, gateway):
    with pytest.raises(cloudflare.NotFoundError):
        cf.ai_gateway.logs.get("01HWT0D8F80000000000000099", account_id=mix.account, gateway_id=mix.gateway_id)
    with pytest.raises(cloudflare.NotFoundError):
        cf.ai_gateway.logs.request("01HWT0D8F80000000000000099", account_id=mix.account, gateway_id=mix.gateway_id)
    # A log is only reachable through its own account and gateway.
    other_gw = cf.ai_gateway.create(account_id=mix.account, id=unique_id("gw"), **MINIMAL_GATEWAY_SETTINGS).id
    log_id = mix.sent[0].log_id
    with pytest.raises(cloudflare.NotFoundError):
        cf.ai_gateway.logs.get(log_id, account_id=mix.account, gateway_id=other_gw)
    with pytest.raises(cloudflare.NotFoundError):
        cf.ai_gateway.logs.request(log_id, account_id=mix.account, gateway_id=other_gw)
    with pytest.raises(cloudflare.NotFoundError):
        cf.ai_gateway.logs.get(log_id, account_id=unique_id("acct"), gateway_id=mix.gateway_id)


def test_bad_log_id_is_a_bad_request(cf, mix):
    with pytest.raises(cloudflare.BadRequestError) as info:
        cf.ai_gateway.logs.get("not-a-log-id", account_id=mix.account, gateway_id=mix.gateway_id)
    assert "`id`" in info.value.body["errors"][0]["message"]


# ---------------------------------------------------------------------------------------------
# edit and delete (gateways of their own)


def populate(cf, gateway, models: list[str]) -> tuple[str, str, list[str]]:
    """A fresh gateway with one chat completion per model (oldest first); (account, gateway, ids)."""
    account, gw_id = unique_id("acct"), unique_id("gw")
    cf.ai_gateway.create(account_id=account, id=gw_id, **MINIMAL_GATEWAY_SETTINGS)
    log_ids = []
    with make_openai_client(gateway.provider_url("openai", account=account, gateway=gw_id)) as client:
        for i, model in enumerate(models):
            next_millisecond()
            raw = client.chat.completions.with_raw_response.create(
                model=model,
                messages=[{"role": "user", "content": f"request number {i}"}],
                extra_headers={"cf-aig-metadata": json.dumps({"i": i})},
            )
            log_ids.append(raw.headers["cf-aig-log-id"])
    for log_id in log_ids:
        gateway.wait_for_log(log_id, account=account, gateway=gw_id)
    return account, gw_id, log_ids


def test_edit_feedback_score_metadata(cf, gateway):
    account, gw_id, (first, second, third) = populate(cf, gateway, [OPENAI_MODEL] * 3)
    edited = cf.ai_gateway.logs.edit(
        second, account_id=account, gateway_id=gw_id, feedback=1, score=90, metadata={"team": "a", "n": 2, "ok": True}
    )
    assert isinstance(edited, dict)
    assert (edited["id"], edited["feedback"], edited["score"]) == (second, 1, 90)
    assert json.loads(edited["metadata"]) == {"team": "a", "n": 2, "ok": True}

    log = cf.ai_gateway.logs.get(second, account_id=account, gateway_id=gw_id)
    assert json.loads(log.metadata) == {"team": "a", "n": 2, "ok": True}  # replaced whole
    assert (log.model_extra["feedback"], log.model_extra["score"]) == (1, 90)
    assert log.tokens_in is not None and log.request_head  # the rest is untouched

    cf.ai_gateway.logs.edit(third, account_id=account, gateway_id=gw_id, feedback=-1)
    # Only what was sent changes: a later score-only edit keeps the feedback.
    cf.ai_gateway.logs.edit(third, account_id=account, gateway_id=gw_id, score=12.5)
    third_log = cf.ai_gateway.logs.get(third, account_id=account, gateway_id=gw_id)
    assert (third_log.model_extra["feedback"], third_log.model_extra["score"]) == (-1, 12.5)
    assert json.loads(third_log.metadata) == {"i": 2}

    def by_filter(*filters):
        return ids(cf.ai_gateway.logs.list(gw_id, account_id=account, filters=list(filters)))

    assert by_filter(f("feedback", "eq", 1)) == [second]
    assert by_filter(f("feedback", "eq", -1)) == [third]
    assert by_filter(f("feedback", "neq", 1)) == [third, first]
    assert ids(cf.ai_gateway.logs.list(gw_id, account_id=account, feedback=1)) == [second]
    assert by_filter(f("metadata.value", "eq", "a")) == [second]
    assert by_filter(f("metadata.key", "eq", "i")) == [third, first]  # the old metadata is gone
    assert ids(cf.ai_gateway.logs.list(gw_id, account_id=account, search="team")) == [second]


@pytest.mark.parametrize(
    "edit, needle",
    [({"feedback": 5}, "`feedback`"), ({"score": 101}, "`score`"), ({"metadata": {"a": [1]}}, "`metadata.a`")],
    ids=["feedback", "score", "metadata"],
)
def test_edit_invalid_is_a_bad_request_naming_the_field(cf, gateway, edit, needle):
    account, gw_id, (log_id,) = populate(cf, gateway, [OPENAI_MODEL])
    with pytest.raises(cloudflare.BadRequestError) as info:
        cf.ai_gateway.logs.edit(log_id, account_id=account, gateway_id=gw_id, **edit)
    assert needle in info.value.body["errors"][0]["message"]
    log = cf.ai_gateway.logs.get(log_id, account_id=account, gateway_id=gw_id)
    assert json.loads(log.metadata) == {"i": 0} and log.model_extra["feedback"] is None


def test_edit_unknown_log_is_not_found(cf, gateway):
    account, gw_id, _ = populate(cf, gateway, [])
    with pytest.raises(cloudflare.NotFoundError):
        cf.ai_gateway.logs.edit("01HWT0D8F80000000000000099", account_id=account, gateway_id=gw_id, feedback=1)


def deleted_count(response: LogDeleteResponse) -> int:
    """How many logs a delete removed. The SDK does not unwrap this call's envelope (its
    `success` is the envelope's), so aigw's count is at `result.deleted`."""
    return response.model_extra["result"]["deleted"]


def test_delete_with_filters_and_limit(cf, gateway):
    models = [OPENAI_MODEL, OPENAI_MODEL, OTHER_OPENAI_MODEL, OPENAI_MODEL, OPENAI_MODEL]
    account, gw_id, log_ids = populate(cf, gateway, models)
    neighbour_account, neighbour, (kept,) = populate(cf, gateway, [OPENAI_MODEL])

    def remaining():
        page = cf.ai_gateway.logs.list(gw_id, account_id=account)
        assert page.result_info.total_count == len(page.result)
        return ids(page.result)

    mini = [f("model", "eq", OPENAI_MODEL)]
    # The two oldest gpt-4o-mini logs.
    deleted = cf.ai_gateway.logs.delete(
        gw_id, account_id=account, filters=mini, limit=2, order_by="created_at", order_by_direction="asc"
    )
    assert isinstance(deleted, LogDeleteResponse) and deleted.success is True
    assert deleted_count(deleted) == 2
    assert remaining() == [log_ids[4], log_ids[3], log_ids[2]]
    for gone in log_ids[:2]:
        with pytest.raises(cloudflare.NotFoundError):
            cf.ai_gateway.logs.get(gone, account_id=account, gateway_id=gw_id)
        with pytest.raises(cloudflare.NotFoundError):
            cf.ai_gateway.logs.request(gone, account_id=account, gateway_id=gw_id)
        with pytest.raises(cloudflare.NotFoundError):
            cf.ai_gateway.logs.response(gone, account_id=account, gateway_id=gw_id)
        assert list((gateway.data_dir / "blobs").rglob(f"*{gone}*")) == []
    # The survivors keep their bodies.
    assert cf.ai_gateway.logs.request(log_ids[3], account_id=account, gateway_id=gw_id)["model"] == OPENAI_MODEL

    # Newest first (the default direction), one.
    deleted = cf.ai_gateway.logs.delete(gw_id, account_id=account, filters=mini, limit=1)
    assert deleted_count(deleted) == 1
    assert remaining() == [log_ids[3], log_ids[2]]

    # A filter that matches nothing deletes nothing.
    deleted = cf.ai_gateway.logs.delete(gw_id, account_id=account, filters=[f("model", "eq", "no-such-model")])
    assert deleted_count(deleted) == 0
    assert remaining() == [log_ids[3], log_ids[2]]

    # Everything.
    deleted = cf.ai_gateway.logs.delete(gw_id, account_id=account)
    assert deleted.success is True and deleted_count(deleted) == 2
    assert remaining() == []
    # Other gateways' logs are untouched.
    assert ids(cf.ai_gateway.logs.list(neighbour, account_id=neighbour_account)) == [kept]


def test_delete_refuses_parameters_it_does_not_know(cf, gateway):
    """A misspelt parameter must not widen a delete to every log."""
    account, gw_id, log_ids = populate(cf, gateway, [OPENAI_MODEL])
    with pytest.raises(cloudflare.BadRequestError) as info:
        cf.ai_gateway.logs.delete(gw_id, account_id=account, extra_query={"model": OPENAI_MODEL})
    assert "`model`" in info.value.body["errors"][0]["message"]
    with pytest.raises(cloudflare.BadRequestError) as info:
        cf.ai_gateway.logs.delete(gw_id, account_id=account, limit=0)
    assert "`limit`" in info.value.body["errors"][0]["message"]
    assert ids(cf.ai_gateway.logs.list(gw_id, account_id=account)) == log_ids


# ---------------------------------------------------------------------------------------------
# Bodies larger than proxy.max_body_bytes


def test_oversized_response_is_relayed_whole_and_stored_truncated(gateway):
    # ~1.3 MB of SSE, over the gateway's 1 MiB limit.
    resp = http_request(
        "POST",
        f"{gateway.provider_url('openai')}/chat/completions",
        headers={"x-mock-chunks": "6000"},
        body={"model": OPENAI_MODEL, "stream": True, "messages": [{"role": "user", "content": "long"}]},
    )
    assert resp.status == 200
    assert len(resp.body) > MAX_BODY_BYTES  # the client got all of it
    log_id = resp.header("cf-aig-log-id")
    record = gateway.wait_for_log(log_id)
    assert record["response_size"] == len(resp.body)
    assert record["response_truncated"] is True
    assert record["response_head_complete"] is False
    assert record["outcome"] == "completed" and record["success"] is True
    stored = gateway.log_body(log_id, "response")
    assert stored.status == 200
    assert stored.header("cf-aig-body-truncated") == "true"
    assert stored.body == resp.body[:MAX_BODY_BYTES]


#: `proxy.max_body_bytes` of the gateway started for the oversized-usage tests.
SMALL_BODY_LIMIT = 65536


def openai_long_answer(base_url: str, stream: bool):
    with make_openai_client(f"{base_url}/openai") as client:
        raw = client.chat.completions.with_raw_response.create(
            model=OPENAI_MODEL,
            messages=[{"role": "user", "content": "a long answer please"}],
            stream=stream,
            **({"stream_options": {"include_usage": True}} if stream else {}),
            extra_headers={"x-mock-chunks": "10000"},
        )
        usage = list(raw.parse())[-1].usage if stream else raw.parse().usage
    return raw.headers["cf-aig-log-id"], (usage.prompt_tokens, usage.completion_tokens)


def anthropic_long_answer(base_url: str, stream: bool):
    with make_anthropic_client(f"{base_url}/anthropic") as client:
        request = {
            "model": ANTHROPIC_MODEL,
            "max_tokens": 20000,
            "messages": [{"role": "user", "content": "a long answer please"}],
            "extra_headers": {"x-mock-chunks": "10000"},
        }
        if stream:
            with client.messages.stream(**request) as s:
                log_id = s.response.headers["cf-aig-log-id"]
                usage = s.get_final_message().usage
        else:
            raw = client.messages.with_raw_response.create(**request)
            log_id, usage = raw.headers["cf-aig-log-id"], raw.parse().usage
    return log_id, (usage.input_tokens, usage.output_tokens)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
@pytest.mark.parametrize("exchange", [openai_long_answer, anthropic_long_answer], ids=["openai", "anthropic"])
def test_oversized_response_still_has_tokens_and_cost(second_gateway, exchange, stream):
    """Usage belongs to the exchange, not to the stored copy of its body: a response over the
    body limit (usage at or near its end) must still be logged with its tokens and cost."""
    gw = second_gateway
    gw.env["AIGW_PROXY__MAX_BODY_BYTES"] = str(SMALL_BODY_LIMIT)
    gw.start()
    log_id, tokens = exchange(f"{gw.url}/v1/acct/default", stream)
    assert tokens == (4, 10000)
    record = gw.wait_for_log(log_id)
    assert record["response_size"] > SMALL_BODY_LIMIT
    assert record["response_truncated"] is True
    assert (record["tokens_in"], record["tokens_out"]) == tokens
    assert record["cost"] is not None and record["cost"] > 0
