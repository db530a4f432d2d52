"""Session fixtures: the mock upstream, `aigw serve` in front of it, and SDK clients (openai and
anthropic for inference, cloudflare for the `/client/v4` management API).

At the end of the session the gateway is stopped with SIGTERM and its whole data dir and console
output are scanned: no credential the suite used may appear there in plaintext.

Build the binaries first: `cargo build --bin aigw --bin aigw-mock` (or `make test-conformance`,
which does everything). `CONFORMANCE_BIN_DIR` selects another build (e.g. `target/release`).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import anthropic
import cloudflare
import openai
import pytest

from harness import (
    ACCOUNT_TOKEN,
    ADMIN_TOKEN,
    MAX_BODY_BYTES,
    TOKEN_ACCOUNT,
    Gateway,
    MockUpstream,
    free_port,
    make_anthropic_client,
    make_cloudflare_client,
    make_openai_client,
)

REPO = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("CONFORMANCE_BIN_DIR", REPO / "target" / "debug"))


def _binary(name: str) -> Path:
    path = BIN_DIR / name
    if not path.is_file():
        pytest.fail(
            f"{path} is missing; run `cargo build --bin aigw --bin aigw-mock` "
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


def new_mock(workdir: Path, *, tls: bool = False) -> MockUpstream:
    """A started `aigw-mock` (HTTPS with its own CA in `.ca_file` when `tls`); stop it."""
    return MockUpstream(_binary("aigw-mock"), workdir, _clean_env(), tls=tls)


@pytest.fixture(scope="session")
def mock(tmp_path_factory) -> MockUpstream:
    upstream = new_mock(tmp_path_factory.mktemp("mock"))
    yield upstream
    upstream.stop()


def new_gateway(mock: MockUpstream, workdir: Path, **extra_env: str) -> Gateway:
    """An `aigw serve` (not started) in front of `mock`, with its data dir and config file in
    `workdir`. Account-scoped management tokens can only be configured in a file, by their
    SHA-256; everything else comes from `AIGW_*` variables (`extra_env` adds or overrides)."""
    data_dir = workdir / "data"
    http_port = free_port()
    config = workdir / "aigw.toml"
    digest = hashlib.sha256(ACCOUNT_TOKEN.encode()).hexdigest()
    config.write_text(f'[[api_tokens]]\naccount_id = "{TOKEN_ACCOUNT}"\ntoken_sha256 = "{digest}"\n')
    env = _clean_env() | {
        "AIGW_ADMIN_TOKEN": ADMIN_TOKEN,
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
    return Gateway(_binary("aigw"), data_dir, env | extra_env, http_port, config=config)


@pytest.fixture(scope="session")
def gateway(mock, tmp_path_factory) -> Gateway:
    gw = new_gateway(mock, tmp_path_factory.mktemp("gateway"))
    gw.start()
    yield gw
    gw.stop_and_check()


@pytest.fixture
def second_gateway(mock, tmp_path_factory) -> Gateway:
    """Another `aigw serve` with its own data dir, for tests that stop and restart it. Not
    started; stopped at the end if still running."""
    gw = new_gateway(mock, tmp_path_factory.mktemp("second-gateway"))
    yield gw
    gw.stop()


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


@pytest.fixture(scope="session")
def cf(gateway) -> cloudflare.Cloudflare:
    """`cloudflare.Cloudflare` with the admin token."""
    client = make_cloudflare_client(gateway.api_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def cf_account(gateway) -> cloudflare.Cloudflare:
    """`cloudflare.Cloudflare` with the token scoped to `TOKEN_ACCOUNT`."""
    client = make_cloudflare_client(gateway.api_url, ACCOUNT_TOKEN)
    yield client
    client.close()


@pytest.fixture
def marker() -> str:
    """A unique value for the `x-conformance-id` header, to find this test's upstream requests
    among those the mock recorded."""
    return uuid.uuid4().hex
