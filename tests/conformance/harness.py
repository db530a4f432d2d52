"""Processes under test and small helpers shared by the conformance tests.

`MockUpstream` and `Gateway` wrap the two binaries (`aigw-mock`, `aigw serve`); `conftest.py`
starts one of each per session. The helpers below talk plain HTTP (for byte-exact checks that an
SDK would hide) and read the gateway's `logs.jsonl`.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import select
import signal
import socket
import subprocess
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import anthropic
import openai

#: Generous deadline for anything we wait for (start-up, log records). Never a speed assertion.
DEADLINE_S = 10.0

#: Crockford base32, 26 characters: the shape of a ULID.
ULID_RE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")

#: `proxy.max_body_bytes` of the gateway under test.
MAX_BODY_BYTES = 1024 * 1024

#: Provider credentials the SDKs send; they must reach the mock and never be logged.
OPENAI_API_KEY = "sk-conformance-openai-6f0c1b9e27d4"
ANTHROPIC_API_KEY = "sk-ant-conformance-3a8e5d7c41f2"

OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-sonnet-4-5-20250929"

#: The mock's reply when no `x-mock-reply` / `x-mock-chunks` header is given.
MOCK_REPLY = "Hello from the mock upstream."
MOCK_REPLY_TOKENS = 5


def free_port() -> int:
    """A port that was free a moment ago (bound to port 0, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def words(text: str) -> int:
    """Token count as the mock computes it: whitespace-separated words."""
    return len(text.split())


def chunk_reply(n: int) -> str:
    """The mock's reply for `x-mock-chunks: n`."""
    return " ".join(f"tok{i}" for i in range(n))


# ---------------------------------------------------------------------------------------------
# SDK clients


def make_openai_client(base_url: str) -> openai.OpenAI:
    """An OpenAI client that never retries (errors surface as they are)."""
    return openai.OpenAI(base_url=base_url, api_key=OPENAI_API_KEY, max_retries=0, timeout=DEADLINE_S)


def make_anthropic_client(base_url: str) -> anthropic.Anthropic:
    """An Anthropic client that never retries."""
    return anthropic.Anthropic(
        base_url=base_url, api_key=ANTHROPIC_API_KEY, max_retries=0, timeout=DEADLINE_S
    )


def delta_text(chunk) -> str:
    """The text a chat-completion stream chunk adds ("" for role, finish and usage chunks)."""
    return (chunk.choices[0].delta.content or "") if chunk.choices else ""


def openai_chat(
    client: openai.OpenAI,
    *,
    headers: dict[str, str] | None = None,
    content: str = "Say hello to the gateway",
    **kwargs,
):
    """A non-streaming chat completion; returns `(completion, response headers)`."""
    raw = client.chat.completions.with_raw_response.create(
        model=OPENAI_MODEL,
        messages=[{"role": "user", "content": content}],
        extra_headers=headers or {},
        **kwargs,
    )
    return raw.parse(), raw.headers


# ---------------------------------------------------------------------------------------------
# Plain HTTP


@dataclass
class HttpResponse:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self):
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


def http_request(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | str | dict | None = None,
    timeout: float = DEADLINE_S,
) -> HttpResponse:
    """One request with `http.client`: no retries, no redirects, no proxy, no header rewriting.

    A dict body is sent as JSON. Non-2xx statuses are returned, not raised.
    """
    parsed = urllib.parse.urlsplit(url)
    target = parsed.path + (f"?{parsed.query}" if parsed.query else "")
    headers = dict(headers or {})
    if isinstance(body, dict):
        body = json.dumps(body)
        headers.setdefault("content-type", "application/json")
    if isinstance(body, str):
        body = body.encode()
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=timeout)
    try:
        conn.request(method, target, body=body, headers=headers)
        resp = conn.getresponse()
        return HttpResponse(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def assert_error_envelope(body: object, code: int, *, message_contains: str | None = None) -> str:
    """Check `{"success": false, "errors": [{"code": code, "message": str}]}` exactly; return the
    message."""
    assert isinstance(body, dict), body
    assert set(body) == {"success", "errors"}, body
    assert body["success"] is False, body
    errors = body["errors"]
    assert isinstance(errors, list) and len(errors) == 1, body
    error = errors[0]
    assert set(error) == {"code", "message"}, body
    assert type(error["code"]) is int and error["code"] == code, body
    assert isinstance(error["message"], str) and error["message"], body
    if message_contains is not None:
        assert message_contains in error["message"], body
    return error["message"]


def assert_completed(record: dict) -> None:
    """The exchange ended normally with a 2xx: `success` is true."""
    assert record["outcome"] == "completed", record
    assert record["error"] is None, record
    assert record["success"] is True, record


# ---------------------------------------------------------------------------------------------
# Processes


def _terminate(proc: subprocess.Popen | None) -> int | None:
    """SIGTERM, then SIGKILL if it lingers; the exit code (negative: killed by that signal)."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=DEADLINE_S)
    return proc.returncode


def _tail(path: Path, limit: int | None = 4000) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "<no output>"
    return (text[-limit:] if limit else text) or "<empty>"


class MockUpstream:
    """`aigw-mock --addr 127.0.0.1:0`, which prints `listening on 127.0.0.1:PORT` once bound."""

    def __init__(self, binary: Path, workdir: Path, env: dict[str, str]):
        self.stderr_path = workdir / "mock.stderr"
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                [str(binary), "--addr", "127.0.0.1:0"],
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
            )
        try:
            line = self._first_line()
            match = re.fullmatch(r"listening on (127\.0\.0\.1:\d+)", line)
            assert match, f"unexpected first line from aigw-mock: {line!r}"
            self.url = f"http://{match.group(1)}"
        except BaseException:
            self.stop()
            raise

    def _first_line(self) -> str:
        deadline = time.monotonic() + DEADLINE_S
        buf = b""
        fd = self.proc.stdout.fileno()
        while b"\n" not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.proc.poll() is not None:
                raise RuntimeError(
                    f"aigw-mock did not report its address (exit code {self.proc.poll()}); "
                    f"stdout so far {buf!r}; stderr:\n{_tail(self.stderr_path)}"
                )
            ready, _, _ = select.select([fd], [], [], min(remaining, 0.2))
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    continue
                buf += chunk
        return buf.split(b"\n", 1)[0].decode().strip()

    def requests(self) -> list[dict]:
        """Every request the mock recorded (the last 1024), oldest first."""
        resp = http_request("GET", f"{self.url}/__mock/requests")
        assert resp.status == 200, resp
        return resp.json()

    def requests_marked(self, marker: str) -> list[dict]:
        """The recorded requests carrying `x-conformance-id: marker`."""
        return [r for r in self.requests() if header_value(r, "x-conformance-id") == marker]

    def stop(self) -> None:
        _terminate(self.proc)
        if self.proc.stdout:
            self.proc.stdout.close()


def header_value(seen_request: dict, name: str) -> str | None:
    """First value of header `name` in a request recorded by the mock."""
    for key, value in seen_request["headers"]:
        if key.lower() == name.lower():
            return value
    return None


class Gateway:
    """`aigw serve`, configured only through `AIGW_*` environment variables."""

    def __init__(self, binary: Path, data_dir: Path, env: dict[str, str], http_port: int):
        self.binary = binary
        self.data_dir = data_dir
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.output_path = data_dir.parent / "gateway.out"
        self.url = f"http://127.0.0.1:{http_port}"
        self.log_path = data_dir / "logs.jsonl"

    def start(self) -> None:
        with open(self.output_path, "wb") as out:
            self.proc = subprocess.Popen(
                [str(self.binary), "serve"], stdout=out, stderr=subprocess.STDOUT, env=self.env
            )
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + DEADLINE_S
        last_error: object = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"aigw serve exited with code {self.proc.returncode}; output:\n{self.output()}"
                )
            try:
                resp = http_request("GET", f"{self.url}/healthz", timeout=1)
                if resp.status == 200:
                    return
                last_error = f"status {resp.status}: {resp.body!r}"
            except OSError as e:
                last_error = e
            time.sleep(0.05)
        raise RuntimeError(
            f"aigw serve not healthy after {DEADLINE_S}s (last: {last_error}); output:\n{self.output()}"
        )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        """Shut down with SIGTERM (graceful: open responses finish, queued logs are flushed)."""
        return _terminate(self.proc)

    def output(self, tail: int | None = 4000) -> str:
        """What the process printed (its tracing output): the last `tail` characters, or all."""
        return _tail(self.output_path, tail)

    def provider_url(self, provider: str, *, account: str = "acct", gateway: str = "default") -> str:
        return f"{self.url}/v1/{account}/{gateway}/{provider}"

    # -- logs.jsonl ---------------------------------------------------------------------------

    def log_records(self) -> list[dict]:
        """Every complete record written so far (a line still being written is skipped)."""
        try:
            text = self.log_path.read_text()
        except FileNotFoundError:
            return []
        complete = text[: text.rfind("\n") + 1]
        return [json.loads(line) for line in complete.splitlines() if line.strip()]

    def wait_for_log(self, log_id: str, timeout: float = DEADLINE_S) -> dict:
        """Poll `logs.jsonl` until the record with `id == log_id` appears; return it."""
        assert log_id and ULID_RE.match(log_id), f"not a log id: {log_id!r}"
        deadline = time.monotonic() + timeout
        while True:
            for record in self.log_records():
                if record["id"] == log_id:
                    return record
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"no log record {log_id} in {self.log_path} after {timeout}s; "
                    f"gateway output:\n{self.output()}"
                )
            time.sleep(0.02)
