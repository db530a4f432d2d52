"""The WebSocket API (`GET /v1/{account}/{gateway}` upgraded) driven with the `websockets`
library: one connection carrying many concurrent requests, streaming routed by eventId, bad
messages answered without closing the connection, authentication by header and by
subprotocol, and a long sequential run with flat memory."""

import json
from pathlib import Path

import cloudflare
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from harness import (
    ACCOUNT_TOKEN,
    OPENAI_API_KEY,
    OPENAI_MODEL,
    TOKEN_ACCOUNT,
    MINIMAL_GATEWAY_SETTINGS,
    chunk_reply,
    unique_id,
    wait_until,
)


def ws_url(gateway, account: str, gw: str = "default") -> str:
    return gateway.url.replace("http://", "ws://") + f"/v1/{account}/{gw}"


def create(event_id: str, chunks: int | None = None, stream: bool = False, **extra) -> str:
    headers = {"authorization": f"Bearer {OPENAI_API_KEY}"}
    if chunks is not None:
        headers["x-mock-chunks"] = str(chunks)
    request = {
        "eventId": event_id,
        "provider": "openai",
        "endpoint": "chat/completions",
        "headers": headers,
        "query": {
            "model": OPENAI_MODEL,
            "messages": [{"role": "user", "content": "hello over a socket"}],
            "stream": stream,
        },
    }
    request.update(extra)
    return json.dumps({"type": "universal.create", "request": request})


def receive(ws) -> dict:
    return json.loads(ws.recv(timeout=10))


def stream_text(chunks: list[str]) -> str:
    """The reply text of an OpenAI SSE stream cut into arbitrary chunks."""
    text = []
    for line in "".join(chunks).splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            event = json.loads(line[len("data: "):])
            if event.get("choices"):
                text.append(event["choices"][0]["delta"].get("content") or "")
    return "".join(text)


def test_a_request_is_answered_with_its_metadata_and_logged(gateway, cf):
    account = unique_id("ws")
    session_metadata = json.dumps({"session": "s-1"})
    with connect(ws_url(gateway, account), additional_headers={"cf-aig-metadata": session_metadata}) as ws:
        ws.send(create("evt-1"))
        message = receive(ws)
    assert message["type"] == "universal.created"
    metadata = message["metadata"]
    assert metadata["eventId"] == "evt-1" and metadata["step"] == 0
    assert metadata["contentType"].startswith("application/json")
    assert message["response"]["choices"][0]["message"]["content"]
    def stored():
        try:
            return cf.ai_gateway.logs.get(metadata["logId"], account_id=account, gateway_id="default")
        except cloudflare.NotFoundError:
            return None

    log = wait_until(stored, "the request's log")
    assert json.loads(log.metadata) == {"session": "s-1"}, "connect-time headers apply"


def test_twenty_concurrent_streams_are_routed_by_event_id_in_order(gateway):
    sizes = {f"evt-{i}": 5 + i for i in range(20)}
    with connect(ws_url(gateway, unique_id("ws"))) as ws:
        for event_id, n in sizes.items():
            ws.send(create(event_id, chunks=n, stream=True))
        chunks = {event_id: [] for event_id in sizes}
        seen = {event_id: [] for event_id in sizes}
        done = set()
        while len(done) < len(sizes):
            message = receive(ws)
            event_id = message["metadata"]["eventId"]
            seen[event_id].append(message["type"])
            if message["type"] == "universal.stream":
                chunks[event_id].append(message["chunk"])
            elif message["type"] == "universal.done":
                done.add(event_id)
            else:
                assert message["type"] == "universal.created", message
    for event_id, n in sizes.items():
        assert seen[event_id][0] == "universal.created"
        assert seen[event_id][-1] == "universal.done"
        assert stream_text(chunks[event_id]) == chunk_reply(n), event_id


def test_bad_messages_get_errors_and_the_connection_stays_usable(gateway):
    with connect(ws_url(gateway, unique_id("ws")), max_size=None) as ws:
        ws.send("{not json")
        assert receive(ws)["type"] == "universal.error"
        ws.send(json.dumps({"type": "universal.delete", "request": {"eventId": "e-type"}}))
        message = receive(ws)
        assert message["type"] == "universal.error" and message["metadata"]["eventId"] == "e-type"
        assert "unknown message type" in message["error"]["message"]
        ws.send("x" * (2 * 1024 * 1024))
        message = receive(ws)
        assert message["type"] == "universal.error" and message["error"]["code"] == 413
        ws.send(create("e-provider", provider="nope"))
        message = receive(ws)
        assert message["type"] == "universal.error" and message["metadata"]["eventId"] == "e-provider"
        assert "steps[0].provider" in message["error"]["message"]
        ws.send(create("e-ok"))
        message = receive(ws)
        assert message["type"] == "universal.created" and message["metadata"]["eventId"] == "e-ok"


def test_an_authenticated_gateway_takes_the_token_by_header_or_subprotocol(gateway, cf):
    gw = unique_id("locked")
    cf.ai_gateway.create(account_id=TOKEN_ACCOUNT, id=gw, **(MINIMAL_GATEWAY_SETTINGS | {"authentication": True}))
    url = ws_url(gateway, TOKEN_ACCOUNT, gw)

    def works(ws) -> None:
        ws.send(create("evt-auth"))
        assert receive(ws)["type"] == "universal.created"

    wait_until(lambda: _refused(url), "the edge to know the locked gateway")
    with pytest.raises(InvalidStatus) as refused:
        with connect(url, additional_headers={"cf-aig-authorization": "Bearer wrong"}):
            pass
    assert refused.value.response.status_code == 401
    with connect(url, additional_headers={"cf-aig-authorization": f"Bearer {ACCOUNT_TOKEN}"}) as ws:
        works(ws)
    protocol = f"cf-aig-authorization.{ACCOUNT_TOKEN}"
    with connect(url, subprotocols=[protocol]) as ws:
        assert ws.subprotocol == protocol, "the accepted protocol is echoed"
        works(ws)


def _refused(url: str) -> bool:
    """Whether an unauthenticated upgrade is refused with 401 (not 404: the gateway exists)."""
    try:
        with connect(url):
            return False
    except InvalidStatus as e:
        return e.response.status_code == 401


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_thousand_sequential_requests_on_one_connection_keep_memory_flat(gateway):
    with connect(ws_url(gateway, unique_id("ws"))) as ws:
        for i in range(100):
            ws.send(create(f"warm-{i}"))
            assert receive(ws)["type"] == "universal.created"
        before = _rss_kib(gateway.proc.pid)
        for i in range(1000):
            ws.send(create(f"seq-{i}"))
            message = receive(ws)
            assert message["type"] == "universal.created" and message["metadata"]["eventId"] == f"seq-{i}"
        after = _rss_kib(gateway.proc.pid)
    assert after - before < 32 * 1024, f"RSS grew from {before} KiB to {after} KiB"
