"""Account homes behave like the user's own Codex, and leave nothing running: the real Codex CLI
(each pinned version) against the fake backend, the TUI on a real pseudo-terminal."""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

from cao.cli.daemons import codex_processes
from tests.codex_harness import EXEC_ARGS, client_config
from tests.fakes.upstream import FakeUpstream
from tests.helpers import Terminal, cao_env, run_cao, write_account

pytestmark = pytest.mark.codex

USER_MODEL = "gpt-user-model-7"


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A git repository: the Codex TUI asks "Trust this folder?" for one it does not trust."""
    path = tmp_path / "work"
    path.mkdir()
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    return path


@pytest.fixture
def user_home(tmp_path: Path, work: Path) -> Path:
    """$HOME with the user's own ~/.codex: a model, an MCP server, a profile, a trusted
    project, a global AGENTS.md."""
    home = tmp_path / "home"
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True)
    (codex_home / "config.toml").write_text(
        f'model = "{USER_MODEL}"\n'
        'model_reasoning_effort = "high"\n'
        "[mcp_servers.userdocs]\n"
        'command = "userdocs-mcp"\n'
        "enabled = false\n"
        f'[projects."{work}"]\n'
        'trust_level = "trusted"\n'
    )
    (codex_home / "fast.config.toml").write_text('model_reasoning_effort = "low"\n')
    (codex_home / "AGENTS.md").write_text("Always answer in haiku.\n")
    return home


@pytest.fixture
def accounts(data_dir: Path, upstream: FakeUpstream) -> list[Path]:
    """Accounts a and b whose Codex talks to the fake backend (set in each account's own
    config.toml: the user's own Codex does not know the fake)."""
    upstream.wham_account_id = None
    own = f'openai_base_url = "{upstream.url}/backend-api/codex"\n' + client_config(upstream)
    made = [write_account(data_dir, name) for name in ("a", "b")]
    for home in made:
        (home / "config.toml").write_text(own)
    return made


def user_env(data_dir: Path, user_home: Path) -> dict[str, str]:
    env = cao_env(data_dir, HOME=str(user_home))
    env.pop("CODEX_HOME", None)
    return env


def codex_count(homes: list[Path]) -> int:
    return sum(len(codex_processes(home)) for home in homes)


def wait_for_daemon(home: Path) -> None:
    """The TUI starts its app-server daemon (`app-server --listen unix:// ...`) some seconds
    after its prompt shows, through a short-lived launcher."""
    deadline = time.monotonic() + 30
    while not any(p.is_daemon and "--listen" in p.argv for p in codex_processes(home)):
        assert time.monotonic() < deadline, "the TUI started no app-server daemon"
        time.sleep(0.2)


def run_tui(
    data_dir: Path, env: dict[str, str], codex: Path, work: Path, home: Path
) -> tuple[str, int]:
    """`cao run --account b` with the TUI: wait for its prompt and its daemon (in `home`),
    quit with Ctrl-C twice. Returns (what the screen got, exit code)."""
    term = Terminal(
        data_dir, "--account", "b", "--codex", str(codex), rows=30, cols=120,
        env=env, cwd=work,
    )  # fmt: skip
    try:
        term.expect("Ask Codex to do anything", timeout=60)
        term.expect(USER_MODEL, timeout=20)
        wait_for_daemon(home)
        for _ in range(2):
            term.send(b"\x03")
            time.sleep(0.5)
        code = term.proc.wait(60)
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
    return term.output.decode("utf-8", "replace"), code


def test_tui_on_b_trusts_the_users_projects_and_shows_the_users_model(
    data_dir: Path,
    upstream: FakeUpstream,
    accounts: list[Path],
    user_home: Path,
    work: Path,
    codex: Path,
) -> None:
    """No "Trust this folder?" for a project the user trusts in ~/.codex, the user's model on
    the status line; and once cao run ends, no Codex process of the run is left (the TUI
    starts an app-server daemon in the account home that outlives it)."""
    before = codex_count(accounts)
    output, code = run_tui(data_dir, user_env(data_dir, user_home), codex, work, accounts[1])
    assert code == 0, output[-1500:]
    assert "Trust this folder" not in output
    assert codex_count(accounts) == before  # cao run stopped the daemon before it exited
    config = (accounts[1] / "config.toml").read_text()
    assert "userdocs" in config and USER_MODEL in config
    assert (accounts[1] / "fast.config.toml").exists()
    assert (accounts[1] / "AGENTS.md").read_text() == "Always answer in haiku.\n"
    assert f"{upstream.url}/backend-api/codex" in config  # the account's own key is kept


def test_exec_on_b_sends_the_users_model(
    data_dir: Path,
    upstream: FakeUpstream,
    accounts: list[Path],
    user_home: Path,
    work: Path,
    codex: Path,
) -> None:
    before = codex_count(accounts)
    result = run_cao(
        data_dir, "run", "--account", "b", "--codex", str(codex), "--", *EXEC_ARGS, "hi",
        env=user_env(data_dir, user_home), cwd=work, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    [request] = upstream.model_requests()
    assert request.account_id == "acct-b"
    assert request.json()["model"] == USER_MODEL
    assert "haiku" in str(request.json())  # the user's global AGENTS.md
    assert codex_count(accounts) == before
    # With a profile of the user's: `-p fast` layers b's copy of ~/.codex/fast.config.toml.
    result = run_cao(
        data_dir, "run", "--account", "b", "--codex", str(codex), "--", "-p", "fast",
        *EXEC_ARGS, "hi", env=user_env(data_dir, user_home), cwd=work, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert upstream.model_requests()[-1].json()["reasoning"]["effort"] == "low"


def test_remove_leaves_no_codex_running(
    data_dir: Path,
    upstream: FakeUpstream,
    accounts: list[Path],
    user_home: Path,
    work: Path,
    codex: Path,
) -> None:
    """The Codex TUI run in b's home by hand (not through cao) leaves its app-server daemon
    and pid-update loop there; `cao remove b` stops both, verified by process."""
    before = codex_count(accounts)
    env = {**os.environ, "CODEX_HOME": str(accounts[1]), "HOME": str(user_home), "TERM": "xterm"}
    master, slave = os.openpty()
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    tui = subprocess.Popen(
        [str(codex)], stdin=slave, stdout=slave, stderr=slave, env=env, cwd=user_home,
        start_new_session=True,
    )  # fmt: skip
    os.close(slave)
    try:
        seen = b""
        deadline = time.monotonic() + 60
        while b"Ask Codex" not in seen and time.monotonic() < deadline:
            if select.select([master], [], [], 1)[0]:
                seen += os.read(master, 65536)
        assert b"Ask Codex" in seen, seen[-1000:]
        wait_for_daemon(accounts[1])
        for _ in range(2):  # quit as a user does
            os.write(master, b"\x03")
            time.sleep(0.5)
        deadline = time.monotonic() + 30
        while tui.poll() is None and time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                with contextlib.suppress(OSError):
                    os.read(master, 65536)
        assert tui.poll() is not None
        assert codex_count(accounts) > before  # the daemon outlives the TUI
        result = run_cao(data_dir, "remove", "b", env=user_env(data_dir, user_home))
        assert result.returncode == 0, result.stderr
        assert codex_count(accounts) == before
        assert not accounts[1].exists()
    finally:
        if tui.poll() is None:
            tui.kill()
        os.close(master)
        for process in codex_processes(accounts[1]):
            os.kill(process.pid, 9)
