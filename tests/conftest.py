from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mitmproxy.test import taddons

from cao.addons.gateway import Gateway
from tests.codex_harness import CODEX_VERSIONS, codex_binary
from tests.fakes.upstream import FakeUpstream
from tests.gateway_proc import GatewayProcess
from tests.helpers import FAKE_CODEX, write_account


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir(mode=0o700)
    return d


@pytest.fixture
def fake_codex_path(tmp_path: Path) -> Path:
    """A PATH dir whose `codex` is the recording fake."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "codex").symlink_to(FAKE_CODEX)
    return bindir


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    """The fake ChatGPT backend (and auth endpoint) on loopback, stopped after the test."""
    fake = FakeUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture(params=CODEX_VERSIONS)
def codex(request: pytest.FixtureRequest) -> Path:
    """The real Codex CLI, once per pinned version (`make codex`)."""
    return codex_binary(request.param)


@pytest.fixture
def gateway(data_dir: Path) -> Iterator[Gateway]:
    """The Gateway addon in a test mitmproxy, over a data dir with accounts a and b."""
    write_account(data_dir, "a")
    write_account(data_dir, "b")
    gw = Gateway()
    with taddons.context(gw) as tctx:
        tctx.configure(gw, cao_data_dir=str(data_dir))
        yield gw


@pytest.fixture
def gw(data_dir: Path, upstream: FakeUpstream) -> Iterator[GatewayProcess]:
    """A real `cao gateway start` (mitmdump) over accounts a and b, in front of the fake."""
    write_account(data_dir, "a")
    write_account(data_dir, "b")
    gateway = GatewayProcess(data_dir, upstream.url, "--auth-url", upstream.url).start()
    try:
        yield gateway
    finally:
        gateway.stop()
