"""The real Codex TUI (each pinned version) on a terminal (tmux), routed by `cao gateway
enable`: its own login is spent (100 %) while the pool account that serves it is at 42 %.
Codex's status line, `/status` and its rate-limit prompt must show the pool's view."""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.codex_harness import USER_ACCOUNT
from tests.fakes.upstream import FakeUpstream, usage_document
from tests.gateway_proc import GatewayProcess
from tests.helpers import run_cao, write_account
from tests.test_codex_e2e import stop_codex_daemons
from tests.test_everywhere_e2e import assert_no_pool_token_off_the_model_path, user_home

pytestmark = pytest.mark.codex


class Tmux:
    """One program in a detached tmux session of a tmux server of its own: keys in, the
    rendered screen out."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], cwd: Path) -> None:
        self.name = name
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        shell = f"cd {shlex.quote(str(cwd))} && env {exports} {shlex.join(command)}"
        self.tmux("new-session", "-d", "-s", name, "-x", "120", "-y", "40", shell)

    def tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.name, "-f", os.devnull, *args],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout  # fmt: skip

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", self.name, *keys)

    def type(self, text: str) -> None:
        """Type `text` and submit it. Codex reads keys that arrive together as a paste, and an
        Enter it gets while it is still busy can be lost: Enter is sent once the text shows,
        and again while the screen shows no reaction to it."""
        self.keys("-l", text)
        self.wait_for(text, timeout=15)
        time.sleep(0.5)
        for _ in range(5):
            before = self.screen()
            self.keys("Enter")
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                time.sleep(0.2)
                if self.screen() != before:
                    return
        raise AssertionError(f"Codex never took {text!r}:\n{self.screen()}")

    def screen(self) -> str:
        try:
            return self.tmux("capture-pane", "-p", "-t", self.name)
        except subprocess.CalledProcessError:
            return ""

    def wait_for(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.3)
        raise AssertionError(f"{text!r} not on screen:\n{self.screen()}")

    def kill(self) -> None:
        subprocess.run(
            ["tmux", "-L", self.name, "kill-server"], capture_output=True, timeout=30, check=False
        )


def read_status(tui: Tmux) -> str:
    """What `/status` shows once it has the limits (the first may only ask for a refresh)."""
    status = ""
    for _ in range(5):
        tui.type("/status")
        tui.wait_for("Session:", timeout=30)
        time.sleep(1)
        status = tui.screen().rsplit(">_ OpenAI Codex", 1)[-1]
        if "5h limit" in status:
            break
        time.sleep(2)
    return status


@pytest.fixture
def routed(
    data_dir: Path, upstream: FakeUpstream, codex: Path, tmp_path: Path
) -> Iterator[tuple[Path, GatewayProcess]]:
    write_account(data_dir, "a")
    upstream.usage_documents[USER_ACCOUNT] = usage_document(100.0, 300 * 60, 100.0)
    upstream.usage_documents["acct-a"] = usage_document(42.0, 300 * 60, 17.0)
    home = user_home(tmp_path, upstream)
    with GatewayProcess(data_dir, upstream.url) as gw:
        enabled = run_cao(
            data_dir, "gateway", "enable", "--port", str(gw.port), "--bin-dir",
            str(tmp_path / "bin"), "--codex", str(codex), "--codex-home", str(home),
        )  # fmt: skip
        assert enabled.returncode == 0, enabled.stderr
        yield home, gw


def test_tui_shows_the_pools_limits(
    routed: tuple[Path, GatewayProcess],
    upstream: FakeUpstream,
    codex: Path,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    home, _ = routed
    work = tmp_path / "work"
    work.mkdir()
    env = {"CODEX_HOME": str(home), "TERM": "xterm-256color", "PATH": os.environ["PATH"]}
    tui = Tmux(f"cao-tui-{os.getpid()}", [str(codex)], env, work)
    try:
        tui.wait_for("Ask Codex", timeout=60)
        tui.type("first question")
        tui.wait_for("part2", timeout=60)
        time.sleep(3)  # Codex reads its usage after the turn
        after_turn = tui.screen()
        status = read_status(tui)
    finally:
        tui.kill()
        stop_codex_daemons([home], codex)
    assert "Approaching rate limits" not in after_turn
    assert "cheaper model" not in after_turn
    assert "<1% left" not in after_turn and "<1% left" not in status
    assert "58% left" in status and "83% left" in status, status  # a's 42 % and 17 %
    bottom = after_turn.strip().splitlines()[-1]
    assert "limit" not in bottom, bottom  # no "⚠ 5h limit: only <1% left" status line
    usage_reads = [r for r in upstream.requests if r.path.endswith("/wham/usage")]
    assert all(r.account_id != USER_ACCOUNT for r in usage_reads)  # never the user's own
    assert_no_pool_token_off_the_model_path(upstream, data_dir)


def test_control_codex_own_usage_view_shows_the_spent_login(
    data_dir: Path, upstream: FakeUpstream, codex: Path, tmp_path: Path
) -> None:
    """The same TUI with chatgpt_base_url straight at the backend (as before the gateway
    answered it): Codex believes its own spent login. Proves the test above can fail."""
    write_account(data_dir, "a")
    upstream.usage_documents[USER_ACCOUNT] = usage_document(100.0, 300 * 60, 100.0)
    home = user_home(tmp_path, upstream)
    config = home / "config.toml"
    with GatewayProcess(data_dir, upstream.url) as gw:
        config.write_text(
            f'openai_base_url = "{gw.base}/backend-api/codex"\n'
            f'chatgpt_base_url = "http://localhost:{upstream.port}/backend-api/"\n'
            + config.read_text()
        )
        work = tmp_path / "work"
        work.mkdir()
        env = {"CODEX_HOME": str(home), "TERM": "xterm-256color", "PATH": os.environ["PATH"]}
        tui = Tmux(f"cao-tui-control-{os.getpid()}", [str(codex)], env, work)
        try:
            tui.wait_for("Ask Codex", timeout=60)
            tui.type("first question")
            with contextlib.suppress(AssertionError):  # Codex may hold a turn it thinks spent
                tui.wait_for("part2", timeout=30)
            status = read_status(tui)
        finally:
            tui.kill()
            stop_codex_daemons([home], codex)
    assert "0% left" in status, status  # the spent login's view, not the pool's
