"""Processes under test and small helpers shared by the conformance tests.

`MockUpstream` and `Gateway` wrap the two binaries (`aigw-mock`, `aigw serve`); `conftest.py`
starts one of each per session. The helpers below talk plain HTTP (for byte-exact checks that an
SDK would hide) and read the gateway's log records back through its management API
(`/client/v4/.../logs`, Cloudflare's wire format) with the admin token.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import select
import signal
import socket
import ssl
import subprocess
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import anthropic
import cloudflare
import openai

#: Generous deadline for anything we wait for (start-up, a request). Never a speed assertion.
DEADLINE_S = 10.0

#: Deadline for a log record to become visible through the management API (the log pipeline
#: is asynchronous: queue, batch, Raft commit). Generous on purpose; never a speed assertion.
LOG_DEADLINE_S = 30.0

#: Crockford base32, 26 characters: the shape of a ULID.
ULID_RE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")

#: `proxy.max_body_bytes` of the gateway under test.
MAX_BODY_BYTES = 1024 * 1024

#: Provider credentials the SDKs send; they must reach the mock and never be logged.
OPENAI_API_KEY = "sk-conformance-openai-6f0c1b9e27d4"
ANTHROPIC_API_KEY = "sk-ant-conformance-3a8e5d7c41f2"

#: Management API tokens. The admin token may do everything; the account token (configured as
#: `[[api_tokens]]` by its SHA-256 only) may manage `TOKEN_ACCOUNT` alone.
ADMIN_TOKEN = "conformance-admin-token-5b1e0f3a9c"
ACCOUNT_TOKEN = "conformance-account-token-77d2c4e8"
TOKEN_ACCOUNT = "acct-scoped"

#: A provider key sent in the query string (as Google's `?key=`): forwarded, never logged.
QUERY_SECRET = "query-secret-9d2f4a71"

#: The gateway's own credential (`cf-aig-authorization`): consumed, never forwarded or logged.
GATEWAY_TOKEN = "cf-aig-gateway-token-4e1d"

#: Everything that must never be stored or printed by the gateway.
SECRETS = (OPENAI_API_KEY, ANTHROPIC_API_KEY, QUERY_SECRET, GATEWAY_TOKEN, ADMIN_TOKEN, ACCOUNT_TOKEN)

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


def wait_until(condition, what: str, timeout: float = LOG_DEADLINE_S):
    """Poll `condition()` until it returns something truthy (returned); fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not true after {timeout}s: {what} (last: {value!r})")
        time.sleep(0.02)


def unique_id(prefix: str) -> str:
    """A fresh account or gateway id (`^[a-z0-9_-]{1,64}$`), so tests never share state."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


#: The settings `ai_gateway.create` / `update` require, at their most neutral.
MINIMAL_GATEWAY_SETTINGS = {
    "cache_invalidate_on_update": False,
    "cache_ttl": None,
    "collect_logs": True,
    "rate_limiting_interval": None,
    "rate_limiting_limit": None,
}


def make_cloudflare_client(api_url: str, token: str = ADMIN_TOKEN) -> cloudflare.Cloudflare:
    """The official `cloudflare` SDK pointed at the gateway's management API; never retries."""
    return cloudflare.Cloudflare(api_token=token, base_url=api_url, max_retries=0, timeout=DEADLINE_S)


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
    ca_file: Path | None = None,
) -> HttpResponse:
    """One request with `http.client`: no retries, no redirects, no proxy, no header rewriting.

    A dict body is sent as JSON. Non-2xx statuses are returned, not raised. An `https` URL is
    verified against `ca_file`.
    """
    parsed = urllib.parse.urlsplit(url)
    target = parsed.path + (f"?{parsed.query}" if parsed.query else "")
    headers = dict(headers or {})
    if isinstance(body, dict):
        body = json.dumps(body)
        headers.setdefault("content-type", "application/json")
    if isinstance(body, str):
        body = body.encode()
    if parsed.scheme == "https":
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        conn = http.client.HTTPSConnection(
            parsed.hostname, parsed.port, timeout=timeout, context=context
        )
    else:
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


def logged_metadata(record: dict) -> dict:
    """A log's `metadata`, which the API sends as a JSON *string* (Cloudflare's model); `{}` when
    the log has none."""
    text = record["metadata"]
    if text is None:
        return {}
    assert isinstance(text, str), record
    value = json.loads(text)
    assert isinstance(value, dict), record
    return value


def parse_rfc3339(text: str) -> datetime:
    """An RFC 3339 timestamp with an explicit offset (`Z` or `±hh:mm`)."""
    assert isinstance(text, str) and re.search(r"(Z|[+-]\d\d:\d\d)$", text), text
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert parsed.tzinfo is not None, text
    return parsed


def ulid_ms(log_id: str) -> int:
    """The millisecond timestamp in a ULID's first 10 characters."""
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    n = 0
    for c in log_id[:10]:
        n = n * 32 + alphabet.index(c)
    return n


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
    """`aigw-mock --addr 127.0.0.1:0`, which prints `listening on 127.0.0.1:PORT` once bound.

    With `tls`, it serves HTTPS (HTTP/2 or HTTP/1.1 by ALPN) for `localhost`, with a certificate
    signed by a CA it makes at start and writes to `self.ca_file`."""

    def __init__(self, binary: Path, workdir: Path, env: dict[str, str], *, tls: bool = False):
        self.stderr_path = workdir / "mock.stderr"
        self.ca_file = workdir / "mock-ca.pem" if tls else None
        args = [str(binary), "--addr", "127.0.0.1:0"]
        if self.ca_file:
            args += ["--tls", str(self.ca_file)]
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                args,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
            )
        try:
            line = self._first_line()
            match = re.fullmatch(r"listening on (127\.0\.0\.1:\d+)", line)
            assert match, f"unexpected first line from aigw-mock: {line!r}"
            port = match.group(1).rsplit(":", 1)[1]
            # The certificate names `localhost`, not the address.
            self.url = f"https://localhost:{port}" if tls else f"http://{match.group(1)}"
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
        resp = http_request("GET", f"{self.url}/__mock/requests", ca_file=self.ca_file)
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
    """`aigw serve`, configured through `AIGW_*` environment variables plus, optionally, a TOML
    file (`--config`) for what only a file can say (`[[api_tokens]]`)."""

    def __init__(
        self,
        binary: Path,
        data_dir: Path,
        env: dict[str, str],
        http_port: int,
        *,
        config: Path | None = None,
        admin_token: str = ADMIN_TOKEN,
    ):
        self.binary = binary
        self.data_dir = data_dir
        self.env = env
        self.config = config
        self.admin_token = admin_token
        self.proc: subprocess.Popen | None = None
        self.output_path = data_dir.parent / "gateway.out"
        self.url = f"http://127.0.0.1:{http_port}"
        #: Base URL of the management API (what `Cloudflare(base_url=...)` takes).
        self.api_url = f"{self.url}/client/v4"

    def start(self) -> None:
        args = [str(self.binary), "serve"]
        if self.config is not None:
            args += ["--config", str(self.config)]
        # Appended, so a restarted gateway's output follows the earlier run's.
        with open(self.output_path, "ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=self.env)
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

    def stop_and_check(self) -> None:
        """SIGTERM must exit 0; then (everything flushed) no credential may be on disk or in the
        output."""
        assert self.running(), f"aigw serve died; output:\n{self.output()}"
        code = self.stop()
        assert code == 0, f"aigw serve exited with {code} on SIGTERM; output:\n{self.output()}"
        for secret in SECRETS:
            assert self.files_containing(secret) == [], f"a secret ({secret[:8]}…) is stored in plaintext"
            assert secret not in self.output(tail=None), f"a secret ({secret[:8]}…) was printed"

    def output(self, tail: int | None = 4000) -> str:
        """What the process printed (its tracing output): the last `tail` characters, or all."""
        return _tail(self.output_path, tail)

    def provider_url(self, provider: str, *, account: str = "acct", gateway: str = "default") -> str:
        return f"{self.url}/v1/{account}/{gateway}/{provider}"

    # -- management API (plain HTTP) ------------------------------------------------------------

    def api(
        self,
        method: str,
        path: str,
        *,
        query: dict | list | None = None,
        body: dict | None = None,
        token: str | None = None,
    ) -> HttpResponse:
        """One management call, `path` relative to `/client/v4`, with the admin token unless
        `token` is given."""
        url = self.api_url + path
        if query:
            url += "?" + urllib.parse.urlencode(query, doseq=True)
        headers = {"authorization": f"Bearer {token or self.admin_token}"}
        return http_request(method, url, headers=headers, body=body)

    @staticmethod
    def logs_path(account: str, gateway: str) -> str:
        return f"/accounts/{account}/ai-gateway/gateways/{gateway}/logs"

    def get_log(self, log_id: str, *, account: str = "acct", gateway: str = "default") -> HttpResponse:
        """`GET .../logs/{id}` as it comes (any status)."""
        return self.api("GET", f"{self.logs_path(account, gateway)}/{log_id}")

    def log_body(
        self, log_id: str, kind: str, *, account: str = "acct", gateway: str = "default"
    ) -> HttpResponse:
        """`GET .../logs/{id}/request` or `/response`: the stored body, raw (any status)."""
        assert kind in ("request", "response"), kind
        return self.api("GET", f"{self.logs_path(account, gateway)}/{log_id}/{kind}")

    def wait_for_log(
        self,
        log_id: str,
        *,
        account: str = "acct",
        gateway: str = "default",
        timeout: float = LOG_DEADLINE_S,
    ) -> dict:
        """Poll `GET .../logs/{log_id}` until it answers 200; return the log (`result`).

        Logs are written asynchronously, so 404 means "not yet"; any other status fails at once.
        """
        assert log_id and ULID_RE.match(log_id), f"not a log id: {log_id!r}"
        deadline = time.monotonic() + timeout
        while True:
            resp = self.get_log(log_id, account=account, gateway=gateway)
            if resp.status == 200:
                body = resp.json()
                assert body["success"] is True and body["errors"] == [], body
                record = body["result"]
                assert record["id"] == log_id, record
                return record
            assert resp.status == 404, f"GET log {log_id}: {resp.status} {resp.body!r}"
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"log {log_id} not visible in {account}/{gateway} after {timeout}s "
                    f"(last answer {resp.status} {resp.body!r}); gateway output:\n{self.output()}"
                )
            time.sleep(0.02)

    def list_logs(
        self,
        *,
        account: str = "acct",
        gateway: str = "default",
        query: list[tuple[str, str]] | None = None,
        per_page: int = 50,
    ) -> list[dict]:
        """Every log `GET .../logs` lists for `query`, following the pages."""
        logs: list[dict] = []
        page = 1
        while True:
            params = list(query or []) + [("page", str(page)), ("per_page", str(per_page))]
            resp = self.api("GET", self.logs_path(account, gateway), query=params)
            assert resp.status == 200, (resp.status, resp.body)
            body = resp.json()
            if not body["result"]:
                return logs
            logs += body["result"]
            page += 1

    def assert_secret_not_logged(
        self, secret: str, *, log_id: str, account: str = "acct", gateway: str = "default"
    ) -> None:
        """`secret` appears nowhere the gateway keeps or shows what it logged: the management
        API's answers about `log_id` (list, get one, both bodies), its console output, and every
        file under its data dir (bodies are zstd-compressed and the index is sled, so a plaintext
        hit there is a real leak)."""
        shown = [
            ("GET logs (list)", json.dumps(self.list_logs(account=account, gateway=gateway))),
            ("GET logs/{id}", self.get_log(log_id, account=account, gateway=gateway).body.decode()),
        ]
        for kind in ("request", "response"):
            resp = self.log_body(log_id, kind, account=account, gateway=gateway)
            shown.append((f"GET logs/{{id}}/{kind}", resp.body.decode(errors="replace")))
        for where, text in shown:
            assert secret not in text, f"secret returned by the management API ({where})"
        assert secret not in self.output(tail=None), "secret printed by the gateway"
        assert self.files_containing(secret) == [], "secret stored in plaintext in the data dir"

    def files_containing(self, secret: str) -> list[Path]:
        """Files under the data dir whose bytes contain `secret`."""
        needle = secret.encode()
        hits = []
        for path in sorted(self.data_dir.rglob("*")):
            if path.is_file():
                try:
                    if needle in path.read_bytes():
                        hits.append(path)
                except FileNotFoundError:  # removed while we looked (sled rewrites segments)
                    pass
        return hits
