"""Session fixtures: the mock upstream, `aigw serve` in front of it, and SDK clients.

Build the binaries first: `cargo build --release --bin aigw --bin aigw-mock` (or
`make test-conformance`, which does everything).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import anthropic
import openai
import pytest

from harness import (
    MAX_BODY_BYTES,
    Gateway,
    MockUpstream,
    free_port,
    make_anthropic_client,
    make_openai_client,
)

REPO = Path(__file__).resolve().parents[2]
RELEASE = REPO / "target" / "release"


def _binary(name: str) -> Path:
    path = RELEASE / name
    if not path.is_file():
        pytest.fail(
            f"{path} is missing; run `cargo build --release --bin aigw --bin aigw-mock` "
            "(or `make test-conformance`)",
            pytrace=False,
        )
    return path


def _clean_env() -> dict[str, str]:
    """This process's environment without inherited `AIGW_*` settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIGW_")}
    env["RUST_LOG"] = "info"
    return env


@pytest.fixture(scope="session", autouse=True)
def _no_proxy_for_loopback():
    """The SDKs' httpx clients honour *_PROXY variables; keep loopback traffic direct."""
    saved = {k: os.environ.get(k) for k in ("NO_PROXY", "no_proxy")}
    for key, value in saved.items():
        os.environ[key] = ",".join(filter(None, ["127.0.0.1,localhost", value]))
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def mock(tmp_path_factory) -> MockUpstream:
    workdir = tmp_path_factory.mktemp("mock")
    upstream = MockUpstream(_binary("aigw-mock"), workdir, _clean_env())
    yield upstream
    upstream.stop()


@pytest.fixture(scope="session")
def gateway(mock, tmp_path_factory) -> Gateway:
    workdir = tmp_path_factory.mktemp("gateway")
    data_dir = workdir / "data"
    http_port = free_port()
    env = _clean_env() | {
        "AIGW_HTTP_ADDR": f"127.0.0.1:{http_port}",
        "AIGW_GRPC_ADDR": f"127.0.0.1:{free_port()}",
        "AIGW_DATA_DIR": str(data_dir),
        "AIGW_PROVIDERS__OPENAI__BASE_URL": f"{mock.url}/v1",
        "AIGW_PROVIDERS__ANTHROPIC__BASE_URL": mock.url,
        "AIGW_PROVIDERS__WORKERS_AI__BASE_URL": f"{mock.url}/client/v4/accounts/{{account_id}}/ai/run",
        # Nothing listens there: the "provider unreachable" case.
        "AIGW_PROVIDERS__GROQ__BASE_URL": f"http://127.0.0.1:{free_port()}/openai/v1",
        "AIGW_PROXY__MAX_BODY_BYTES": str(MAX_BODY_BYTES),
    }
    gw = Gateway(_binary("aigw"), data_dir, env, http_port)
    gw.start()
    yield gw
    assert gw.running(), f"aigw serve died during the session; output:\n{gw.output()}"
    code = gw.stop()
    assert code == 0, f"aigw serve exited with {code} on SIGTERM; output:\n{gw.output()}"


@pytest.fixture(scope="session")
def openai_client(gateway) -> openai.OpenAI:
    client = make_openai_client(gateway.provider_url("openai"))
    yield client
    client.close()


@pytest.fixture(scope="session")
def anthropic_client(gateway) -> anthropic.Anthropic:
    client = make_anthropic_client(gateway.provider_url("anthropic"))
    yield client
    client.close()


@pytest.fixture
def marker() -> str:
    """A unique value for the `x-conformance-id` header, to find this test's upstream requests
    among those the mock recorded."""
    return uuid.uuid4().hex
