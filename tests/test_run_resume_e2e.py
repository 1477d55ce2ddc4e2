"""`cao run` continues the same Codex session on the next account, with the real Codex CLI
(each pinned version) against the fake backend, which refuses encrypted content another
account minted exactly as the real one does."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.codex_harness import EXEC_ARGS, client_config
from tests.fakes.upstream import Answer, FakeUpstream
from tests.helpers import CAO, Terminal, assert_no_secret, cao_env, run_cao, write_account
from tests.test_codex_e2e import stop_codex_daemons

pytestmark = pytest.mark.codex


@pytest.fixture
def homes(data_dir: Path, upstream: FakeUpstream) -> list[Path]:
    """Accounts a and b whose Codex talks to the fake backend directly (no gateway)."""
    config = (
        f'openai_base_url = "{upstream.url}/backend-api/codex"\n'
        'cli_auth_credentials_store = "file"\nforced_login_method = "chatgpt"\n'
        + client_config(upstream)
    )
    upstream.wham_account_id = None  # /wham answers for whichever account asks
    made = [write_account(data_dir, name) for name in ("a", "b")]
    for home in made:
        (home / "config.toml").write_text(config)
    return made


def texts(request: object) -> str:
    return json.dumps(request.json()["input"])  # type: ignore[attr-defined]


def sessions_in(home: Path) -> list[Path]:
    return sorted(home.glob("sessions/*/*/*/rollout-*.jsonl"))


def test_exec_continues_the_session_on_b(
    data_dir: Path, upstream: FakeUpstream, homes: list[Path], codex: Path, tmp_path: Path
) -> None:
    """a answers the first request of a tool-call turn and is limited on the follow-up: the
    run ends with exit 0 on b, and b got the earlier history (the prompt, the tool call and
    its result) without a's reasoning."""
    upstream.queue("acct-a", Answer("tool"), Answer("quota"))
    result = run_cao(
        data_dir, "run", "--codex", str(codex), "--", *EXEC_ARGS, "use the clock tool",
        timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hello from acct-b" in result.stdout
    assert "account a hit its usage limit" in result.stderr
    assert "continuing session" in result.stderr and "on account b" in result.stderr
    turns = upstream.model_requests()
    assert [r.account_id for r in turns] == ["acct-a", "acct-a", "acct-b"]
    on_b = turns[-1]
    assert upstream.blob_accounts(on_b) == []
    assert "use the clock tool" in texts(on_b)  # the user's task...
    types = [i.get("type") for i in on_b.json()["input"]]
    assert "function_call" in types and "function_call_output" in types  # ...the tool's result
    assert "Continue where you left off" in texts(on_b)
    assert upstream.rejected == []
    # a's own session file is untouched; b has the stripped copy at the same place.
    a_file, b_file = sessions_in(homes[0])[0], sessions_in(homes[1])[0]
    assert a_file.relative_to(homes[0]) == b_file.relative_to(homes[1])
    assert "acct-a" in str(upstream.blob_accounts(turns[1]))
    assert b"encrypted_content" in a_file.read_bytes()
    assert oct(b_file.stat().st_mode & 0o777) == "0o600"


def test_restart_runs_the_command_again(
    data_dir: Path, upstream: FakeUpstream, homes: list[Path], codex: Path, tmp_path: Path
) -> None:
    upstream.queue("acct-a", Answer("tool"), Answer("quota"))
    result = run_cao(
        data_dir, "run", "--restart", "--codex", str(codex), "--", *EXEC_ARGS, "use the clock",
        timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "continuing session" not in result.stderr
    on_b = upstream.model_requests()[-1]
    types = [i.get("type") for i in on_b.json()["input"]]
    assert "function_call_output" not in types  # from scratch
    assert "use the clock" in texts(on_b) and sessions_in(homes[1])  # b's own new session


def test_ask_waits_for_enter(
    data_dir: Path, upstream: FakeUpstream, homes: list[Path], codex: Path, tmp_path: Path
) -> None:
    upstream.defaults["acct-a"] = Answer("quota")
    argv = [*CAO, "run", "--ask", "--codex", str(codex), "--", *EXEC_ARGS, "a task"]
    env = cao_env(data_dir)
    stopped = subprocess.run(
        argv, env=env, cwd=tmp_path, input="", capture_output=True, text=True, timeout=120
    )
    assert stopped.returncode == 1 and "press Enter to continue on account b" in stopped.stderr
    assert "stopped" in stopped.stderr
    assert {r.account_id for r in upstream.model_requests()} == {"acct-a"}
    going = subprocess.run(
        argv, env=env, cwd=tmp_path, input="\n", capture_output=True, text=True, timeout=120
    )
    assert going.returncode == 0, going.stderr
    assert_no_secret(going.stdout + going.stderr, "cao run --ask")
    assert "hello from acct-b" in going.stdout


def test_tui_moves_the_session_to_b_on_the_same_terminal(
    data_dir: Path, upstream: FakeUpstream, homes: list[Path], codex: Path, tmp_path: Path
) -> None:
    """The TUI shows the limit and waits: cao sees it in the session file, ends Codex as a user
    would, and starts `codex resume <id>` on b. The next message is answered by b, with the
    earlier turns in its input."""
    work = tmp_path / "work"
    work.mkdir()
    term = Terminal(data_dir, "--codex", str(codex), rows=30, cols=100, cwd=work)
    try:
        term.expect("Ask Codex to do anything", timeout=60)
        term.send(b"first question")
        time.sleep(0.5)
        term.send(b"\r")
        term.expect("part2", timeout=60)
        upstream.defaults["acct-a"] = Answer("quota")
        term.send(b"second question")
        time.sleep(0.5)
        term.send(b"\r")
        term.expect("continuing session", timeout=60)
        switched = term.output.index(b"continuing session")
        term.expect("question", timeout=60, since=switched)  # Codex again, the history shown
        time.sleep(2)
        term.send(b"third question")
        time.sleep(0.5)
        term.send(b"\r")
        term.expect("acct-b", timeout=60)
        for _ in range(3):
            term.send(b"\x03")
            time.sleep(0.5)
        code = term.proc.wait(30)
        assert code in (0, 130), term.output.decode("utf-8", "replace")[-1500:]
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
        stop_codex_daemons(homes, codex)
    output = term.output.decode("utf-8", "replace")
    assert "account a hit its usage limit" in output
    on_b = [r for r in upstream.model_requests() if r.account_id == "acct-b"]
    assert on_b, output[-2000:]
    turn = next(r for r in on_b if "third question" in texts(r))
    assert "first question" in texts(turn) and "second question" in texts(turn)
    assert all(upstream.blob_accounts(r).count("acct-a") == 0 for r in on_b)
    assert upstream.rejected == []
    assert os.path.exists(sessions_in(homes[1])[0])
