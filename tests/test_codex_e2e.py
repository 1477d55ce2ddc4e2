"""The real Codex CLI through the real gateway, routed by the `codex` shim `cao gateway enable`
writes. A usage limit on account a must never reach Codex: the turn completes on account b."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.codex_harness import EXEC_ARGS, enable_shim, make_user_home, run_codex
from tests.fakes.upstream import Answer, FakeUpstream
from tests.gateway_proc import GatewayProcess
from tests.helpers import Terminal, run_cao, write_account

pytestmark = pytest.mark.codex

USAGE_LIMIT_WORDS = ("usage limit", "You've hit", "try again at", "Quota exceeded")


@pytest.fixture
def world(data_dir: Path, upstream: FakeUpstream, tmp_path: Path) -> dict[str, Path]:
    write_account(data_dir, "a")
    write_account(data_dir, "b")
    return {"home": make_user_home(tmp_path, upstream), "bin": tmp_path / "bin", "work": tmp_path}


def via_shim(
    world: dict[str, Path], data_dir: Path, gw: GatewayProcess, codex: Path
) -> tuple[int, str]:
    shim = enable_shim(data_dir, gw.url, world["bin"], codex)
    result = run_codex([str(shim), *EXEC_ARGS, "say hi"], world["home"], world["work"])
    return result.returncode, result.stdout + result.stderr


def test_plain_turn(
    world: dict[str, Path], data_dir: Path, upstream: FakeUpstream, codex: Path
) -> None:
    with GatewayProcess(data_dir, upstream.url) as gw:
        code, output = via_shim(world, data_dir, gw, codex)
    assert code == 0, output
    assert "hello from acct-a" in output
    turns = upstream.model_requests()
    assert [r.account_id for r in turns] == ["acct-a"]
    # Codex's own login is used only where it belongs (workspace discovery).
    assert all(r.account_id == "acct-user" for r in upstream.requests if "/wham/" in r.path)


@pytest.mark.parametrize("mode", ["redirect", "inline"])
def test_usage_limit_on_a_completes_on_b(
    world: dict[str, Path], data_dir: Path, upstream: FakeUpstream, mode: str, codex: Path
) -> None:
    upstream.queue("acct-a", Answer("quota"))
    with GatewayProcess(data_dir, upstream.url, "--retry-mode", mode) as gw:
        code, output = via_shim(world, data_dir, gw, codex)
    assert code == 0, output
    assert "hello from acct-b" in output
    assert not any(word in output for word in USAGE_LIMIT_WORDS), output
    assert [r.account_id for r in upstream.model_requests()] == ["acct-a", "acct-b"]


@pytest.mark.parametrize("mode", ["redirect", "inline"])
def test_tool_call_turn_whose_second_request_hits_the_limit(
    world: dict[str, Path], data_dir: Path, upstream: FakeUpstream, codex: Path, mode: str
) -> None:
    """The follow-up of a tool call carries a's reasoning item (its blob bound to a): the
    gateway knows it and takes it out before b sees it. No 400, no extra round trip."""
    upstream.queue("acct-a", Answer("tool"), Answer("quota"))
    with GatewayProcess(data_dir, upstream.url, "--retry-mode", mode) as gw:
        code, output = via_shim(world, data_dir, gw, codex)
        gw.wait_for_log(r"history \S+: a -> b, removed 1 reasoning")
    assert code == 0, output
    assert "hello from acct-b" in output and "unsupported call" not in output
    turns = upstream.model_requests()
    assert [r.account_id for r in turns] == ["acct-a", "acct-a", "acct-b"]
    assert "acct-a" in upstream.blob_accounts(turns[1])  # a's own follow-up kept a's reasoning
    assert upstream.blob_accounts(turns[-1]) == []  # b got none of a's blobs...
    last_input = [item.get("type") for item in turns[-1].json()["input"]]
    assert "function_call" in last_input and "function_call_output" in last_input  # ...the tool
    assert turns[-1].headers["thread-id"] == turns[0].headers["thread-id"]  # pair went along
    assert upstream.rejected == []


def test_expired_pool_token_is_refreshed_under_a_live_turn(
    world: dict[str, Path], data_dir: Path, upstream: FakeUpstream, codex: Path
) -> None:
    import json
    import time

    from tests.helpers import fake_token

    write_account(data_dir, "a", exp=time.time() - 60)  # replaces a's login with an expired one
    fresh = fake_token("fresh-a", time.time() + 86400)
    upstream.oauth_answers.append((200, {"access_token": fresh, "refresh_token": "rt-a-1"}))
    with GatewayProcess(data_dir, upstream.url, "--auth-url", upstream.url) as gw:
        code, output = via_shim(world, data_dir, gw, codex)
    assert code == 0, output
    assert "hello from acct-a" in output
    assert sum(1 for r in upstream.requests if r.path == "/oauth/token") == 1
    assert upstream.model_requests()[-1].token == fresh
    assert (
        json.loads((data_dir / "a" / "auth.json").read_text())["tokens"]["refresh_token"]
        == "rt-a-1"
    )


def test_cao_run_falls_back_with_the_real_codex(
    data_dir: Path, upstream: FakeUpstream, tmp_path: Path, codex: Path
) -> None:
    """No gateway: each account home points Codex at the fake backend; a's usage limit (Codex
    prints it and exits 1) makes `cao run` re-run the same command on b."""
    from tests.codex_harness import client_config

    # Top-level keys first: appended after a [table] they would land inside it.
    config = (
        f'openai_base_url = "{upstream.url}/backend-api/codex"\n'
        'cli_auth_credentials_store = "file"\nforced_login_method = "chatgpt"\n'
        + client_config(upstream)
    )
    upstream.wham_account_id = None  # /wham answers for whichever account asks
    for name in ("a", "b"):
        home = write_account(data_dir, name)
        (home / "config.toml").write_text(config)
    upstream.queue("acct-a", Answer("quota"))
    result = run_cao(
        data_dir,
        "run",
        "--codex",
        str(codex),
        "--",
        *EXEC_ARGS,
        "hi",
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "account a hit its usage limit" in result.stderr
    assert "hello from acct-b" in result.stdout
    assert [r.account_id for r in upstream.model_requests()] == ["acct-a", "acct-b"]


def stop_codex_daemons(homes: list[Path], codex: Path) -> None:
    """The Codex TUI starts an app-server daemon in its CODEX_HOME that outlives it: stop it."""
    for home in homes:
        subprocess.run(
            [str(codex), "app-server", "daemon", "stop"],
            env={**os.environ, "CODEX_HOME": str(home)},
            capture_output=True,
            timeout=30,
        )
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if any(str(home).encode() in cmdline for home in homes):
                os.kill(int(pid), signal.SIGKILL)


def test_cao_run_relays_the_real_codex_tui(
    data_dir: Path, upstream: FakeUpstream, tmp_path: Path, codex: Path
) -> None:
    """The interactive Codex TUI on cao's pseudo-terminal: it draws, takes keys, runs a turn
    against the fake backend, and quits on Ctrl-C."""
    from tests.codex_harness import client_config

    config = (
        f'openai_base_url = "{upstream.url}/backend-api/codex"\n'
        'cli_auth_credentials_store = "file"\nforced_login_method = "chatgpt"\n'
        + client_config(upstream)
    )
    upstream.wham_account_id = None
    homes = [write_account(data_dir, name) for name in ("a", "b")]
    for home in homes:
        (home / "config.toml").write_text(config)
    work = tmp_path / "work"
    work.mkdir()
    term = Terminal(data_dir, "--codex", str(codex), rows=30, cols=100, cwd=work)
    try:
        term.expect("Ask Codex to do anything", timeout=60)
        term.send(b"say hi")
        time.sleep(0.5)
        term.send(b"\r")
        # The answer streams in word by word ("hello from acct-a part1 part2"), drawn at
        # cursor positions: its words arrive, apart.
        term.expect("part2", timeout=60)
        assert b"acct-a" in term.output
        for _ in range(3):  # Codex quits on a second Ctrl-C
            term.send(b"\x03")
            time.sleep(0.5)
        assert term.proc.wait(30) in (0, 130)
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
        stop_codex_daemons(homes, codex)
    assert {r.account_id for r in upstream.model_requests()} == {"acct-a"}
