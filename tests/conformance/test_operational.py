"""Health, readiness and Prometheus metrics."""

from __future__ import annotations

import re
import time

from harness import DEADLINE_S, http_request, openai_chat


def test_healthz(gateway):
    resp = http_request("GET", f"{gateway.url}/healthz")
    assert resp.status == 200
    assert resp.json() == {"status": "ok"}


def test_readyz(gateway):
    resp = http_request("GET", f"{gateway.url}/readyz")
    assert resp.status == 200
    assert resp.json() == {"status": "ready"}


def metric(text: str, name: str, labels: str = "") -> float:
    """The value of one sample, e.g. `metric(text, "aigw_http_requests_total",
    'provider="openai",status="2xx"')`; 0 when the series does not exist yet."""
    series = f"{name}{{{labels}}}" if labels else name
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def scrape(gateway) -> str:
    resp = http_request("GET", f"{gateway.url}/metrics")
    assert resp.status == 200
    assert resp.header("content-type").startswith("text/plain")
    return resp.body.decode()


OPENAI_2XX = 'provider="openai",status="2xx"'


def test_metrics_count_requests_and_written_logs(openai_client, gateway):
    before = scrape(gateway)
    for name in ("aigw_http_requests_total", "aigw_logs_written_total", "aigw_log_queue_depth"):
        assert f"# TYPE {name} " in before

    _, headers = openai_chat(openai_client)
    gateway.wait_for_log(headers["cf-aig-log-id"])

    # The counter moves once the shard accepted the batch, which may be just after the log is
    # readable; poll instead of racing it.
    deadline = time.monotonic() + DEADLINE_S
    while True:
        after = scrape(gateway)
        written = metric(after, "aigw_logs_written_total") - metric(before, "aigw_logs_written_total")
        if written >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert written >= 1
    assert (
        metric(after, "aigw_http_requests_total", OPENAI_2XX)
        >= metric(before, "aigw_http_requests_total", OPENAI_2XX) + 1
    )
    assert "aigw_http_request_duration_seconds_count" in after
