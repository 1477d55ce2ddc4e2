"""The real Codex CLI through the real gateway, routed by the `codex` shim `cao gateway enable`
writes. A usage limit on account a must never reach Codex: the turn completes on account b."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.codex_harness import EXEC_ARGS, codex_binary, make_user_home, run_codex
from tests.fakes.upstream import Answer, FakeUpstream
from tests.gateway_proc import GatewayProcess
from tests.helpers import cao_env, run_cao, write_account

pytestmark = pytest.mark.codex

USAGE_LIMIT_WORDS = ("usage limit", "You've hit", "try again at", "Quota exceeded")


@pytest.fixture
def world(data_dir: Path, upstream: FakeUpstream, tmp_path: Path) -> dict[str, Path]:
    write_account(data_dir, "a")
    write_account(data_dir, "b")
    return {"home": make_user_home(tmp_path, upstream), "bin": tmp_path / "bin", "work": tmp_path}


def via_shim(
    world: dict[str, Path], data_dir: Path, gw: GatewayProcess, *mode: str
) -> tuple[int, str]:
    enable = run_cao(
        data_dir,
        "gateway",
        "enable",
        "--url",
        gw.url,
        "--bin-dir",
        str(world["bin"]),
        "--codex",
        str(codex_binary()),
        env=cao_env(data_dir, PATH=f"{world['bin']}:{os.environ['PATH']}"),
    )
    assert enable.returncode == 0, enable.stderr
    result = run_codex(
        [str(world["bin"] / "codex"), *EXEC_ARGS, "say hi"], world["home"], world["work"]
    )
    return result.returncode, result.stdout + result.stderr


def test_plain_turn(world: dict[str, Path], data_dir: Path, upstream: FakeUpstream) -> None:
    with GatewayProcess(data_dir, upstream.url) as gw:
        code, output = via_shim(world, data_dir, gw)
    assert code == 0, output
    assert "hello from acct-a" in output
    turns = upstream.model_requests()
    assert [r.account_id for r in turns] == ["acct-a"]
    # Codex's own login is used only where it belongs (workspace discovery).
    assert all(r.account_id == "acct-user" for r in upstream.requests if "/wham/" in r.path)


@pytest.mark.parametrize("mode", ["redirect", "inline"])
def test_usage_limit_on_a_completes_on_b(
    world: dict[str, Path], data_dir: Path, upstream: FakeUpstream, mode: str
) -> None:
    upstream.queue("acct-a", Answer("quota"))
    with GatewayProcess(data_dir, upstream.url, "--retry-mode", mode) as gw:
        code, output = via_shim(world, data_dir, gw)
    assert code == 0, output
    assert "hello from acct-b" in output
    assert not any(word in output for word in USAGE_LIMIT_WORDS), output
    assert [r.account_id for r in upstream.model_requests()] == ["acct-a", "acct-b"]


def test_tool_call_turn_whose_second_request_hits_the_limit(
    world: dict[str, Path], data_dir: Path, upstream: FakeUpstream
) -> None:
    upstream.queue("acct-a", Answer("tool"), Answer("quota"))
    with GatewayProcess(data_dir, upstream.url) as gw:
        code, output = via_shim(world, data_dir, gw)
    assert code == 0, output
    assert "hello from acct-b" in output and "unsupported call" not in output
    turns = upstream.model_requests()
    assert [r.account_id for r in turns] == ["acct-a", "acct-a", "acct-b"]
    last_input = [item.get("type") for item in turns[-1].json()["input"]]
    assert "function_call_output" in last_input  # the tool's result went along to b
    assert turns[-1].headers["thread-id"] == turns[0].headers["thread-id"]


def test_expired_pool_token_is_refreshed_under_a_live_turn(
    world: dict[str, Path], data_dir: Path, upstream: FakeUpstream
) -> None:
    import json
    import time

    from tests.helpers import fake_token

    write_account(data_dir, "a", exp=time.time() - 60)  # replaces a's login with an expired one
    fresh = fake_token("fresh-a", time.time() + 86400)
    upstream.oauth_answers.append((200, {"access_token": fresh, "refresh_token": "rt-a-1"}))
    with GatewayProcess(data_dir, upstream.url, "--auth-url", upstream.url) as gw:
        code, output = via_shim(world, data_dir, gw)
    assert code == 0, output
    assert "hello from acct-a" in output
    assert sum(1 for r in upstream.requests if r.path == "/oauth/token") == 1
    assert upstream.model_requests()[-1].token == fresh
    assert (
        json.loads((data_dir / "a" / "auth.json").read_text())["tokens"]["refresh_token"]
        == "rt-a-1"
    )


def test_cao_run_falls_back_with_the_real_codex(
    data_dir: Path, upstream: FakeUpstream, tmp_path: Path
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
        str(codex_binary()),
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
