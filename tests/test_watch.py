"""`cao status --watch`: the frame, its drawing at a fixed width, a pipe, and the real thing in
a terminal (tmux: what the screen shows) against a running gateway and the fake backend."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.cells import cell_len

from cao.cli.watch import CLEAR_LINE, frame, next_reset, plain, screen_text
from tests.fakes.upstream import Answer, FakeUpstream
from tests.gateway_proc import GatewayProcess
from tests.helpers import CAO, cao_env, run_cao, write_account

MODEL = "/backend-api/codex/responses"
LONG = "a-very-long-account-name-that-a-user-might-pick-to-be-sure-0123"  # 63 characters
CONVERSATION = "019aef3c-aaaa-7000-8000-00000000c0f1"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def document(now: float = 1_800_000_000.0, running: bool = True) -> dict[str, Any]:
    def account(name: str, **fields: Any) -> dict[str, Any]:
        return {
            "name": name, "default": name == "a", "status": "usable", "cooling_until": None,
            "cooling_reason": None, "paused": False, "paused_until": None, "fix": None,
            "problem": None, "token_expires_at": None, "windows": [],
            "conversations": [] if running else None, "requests_per_minute": 0 if running else None,
            **fields,
        }  # fmt: skip

    window = {"window_minutes": 300, "label": "5h", "used_percent": 40.0,
              "resets_at": now + 7200, "reset": False}  # fmt: skip
    return {
        "generated_at": now,
        "gateway": {"url": "http://127.0.0.1:4319", "running": running},
        "summary": {"accounts": 3, "usable": 1},
        "accounts": [
            account(
                "a",
                windows=[window],
                conversations=[CONVERSATION, "c2", "c3", "c4"] if running else None,
                requests_per_minute=12,
            ),
            account("b", status="cooling", cooling_until=now + 600, cooling_reason="quota"),
            account(LONG, status="paused", paused=True, paused_until=now + 3600),
        ],
        "switches": [
            {
                "at": now - 5,
                "from": "b",
                "to": "a",
                "reason": "quota",
                "conversation": CONVERSATION,
            }
        ],
    }


def test_frame_shows_what_the_gateway_does() -> None:
    lines = plain(frame(document()))
    text = "\n".join(lines)
    assert "gateway up at http://127.0.0.1:4319  1/3 usable" in lines[0]
    assert "next: b back in 10m" in lines[1]
    assert "* a  usable  4 conv  12 req/min" in text
    assert "5h      ████████░░░░░░░░░░░░   40%  resets in 2h00m" in text
    assert "serving …0000c0f1 c2 c3 (+1)" in text
    assert "cooling until" in text and "(quota)" in text
    assert f"{LONG}  paused until" in text
    assert re.search(r"\d\d:\d\d:\d\d  b → a  quota  …0000c0f1", text)


def test_frame_without_a_gateway_says_it_shows_the_disk() -> None:
    lines = plain(frame(document(running=False)))
    assert "no gateway at http://127.0.0.1:4319: the state on disk" in lines[0]
    assert not any("req/min" in line or "serving" in line for line in lines)


def test_next_reset_is_the_first_thing_to_come_back() -> None:
    doc = document()
    doc["accounts"][1]["cooling_until"] = doc["generated_at"] + 9000  # after a's 5h window
    doc["accounts"][2]["paused_until"] = doc["generated_at"] + 9500
    assert (next_reset(doc) or "").startswith("a 5h resets in 2h00m")


@pytest.mark.parametrize("columns", [80, 60, 40])
def test_no_line_is_wider_than_the_terminal(columns: int) -> None:
    drawn = screen_text(frame(document()), columns, 40, color=True)
    lines = drawn.split("\r\n")
    assert lines[0].startswith("\x1b[H")
    for line in lines:
        visible = ANSI.sub("", line)
        assert cell_len(visible) <= columns, visible
        # Clearing the rest of a line that fills the width would erase its last cell.
        if cell_len(visible) == columns:
            assert CLEAR_LINE not in line.rsplit("\x1b[0m", 1)[-1]
    assert any(cell_len(ANSI.sub("", line)) == columns for line in lines)  # LONG was cut


def test_a_short_terminal_never_scrolls() -> None:
    lines = screen_text(frame(document()), 80, 8, color=False).split("\r\n")
    assert len(lines) == 8  # 7 lines and what clears below
    assert "more lines" in ANSI.sub("", lines[6])


def test_in_a_pipe_plain_lines_and_ctrl_c_ends_it(data_dir: Path) -> None:
    write_account(data_dir, "a")
    run_cao(data_dir, "pause", "a")
    proc = subprocess.Popen(
        [*CAO, "status", "--watch", "--url", "http://127.0.0.1:9"],
        env=cao_env(data_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    first = [proc.stdout.readline() for _ in range(4)]
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and err == ""
    assert "no gateway at http://127.0.0.1:9: the state on disk" in first[0]
    assert first[3] == "* a  paused\n"
    assert "\x1b" not in "".join(first) + out


def test_watch_goes_alone(data_dir: Path) -> None:
    for extra in (["--json"], ["--compact"], ["--doctor"]):
        r = run_cao(data_dir, "status", "--watch", *extra)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr


# -- in a real terminal (tmux), against a running gateway -------------------------------------


class Tmux:
    """One tmux server of our own (its own socket), stopped by the test."""

    def __init__(self, tmp_path: Path, env: dict[str, str], columns: int, rows: int) -> None:
        self.socket = f"cao-watch-{os.getpid()}"
        self.env = env
        self.dir = tmp_path
        self.columns, self.rows = columns, rows

    def tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, "-f", os.devnull, *args],
            env=self.env, capture_output=True, text=True, check=True, timeout=10,
        ).stdout  # fmt: skip

    def start(self, script: str) -> None:
        path = self.dir / "session.sh"
        path.write_text(script)
        size = ("-x", str(self.columns), "-y", str(self.rows))
        self.tmux("new-session", "-d", *size, "bash", "--norc", "--noprofile", str(path))

    def screen(self) -> list[str]:
        """What the pane shows, lines joined where the terminal wrapped them."""
        return self.tmux("capture-pane", "-p", "-J").splitlines()

    def flag(self, name: str) -> str:
        return self.tmux("display", "-p", f"#{{{name}}}").strip()

    def wait_for(self, text: str, timeout: float = 15.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.screen()):
                return time.monotonic()
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not on screen:\n" + "\n".join(self.screen()))

    def stop(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], env=self.env,
                       capture_output=True, timeout=10)  # fmt: skip


def wait_for_file(path: Path, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text().endswith("\n"):
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} never written")
        time.sleep(0.05)
    return path.read_text().strip()


@pytest.fixture
def pool(data_dir: Path, upstream: FakeUpstream) -> Iterator[GatewayProcess]:
    for name in ("alpha", "beta", LONG):
        write_account(data_dir, name)
    with GatewayProcess(data_dir, upstream.url, "--strategy", "order") as gw:
        yield gw


def turn(client: httpx.Client, conversation: str) -> httpx.Response:
    return client.post(MODEL, content=json.dumps({"input": [], "stream": True}), headers={
        "authorization": "Bearer codex-own-token", "session-id": conversation,
        "thread-id": conversation, "content-type": "application/json"})  # fmt: skip


def test_watch_in_a_terminal_follows_a_failover_and_gives_the_terminal_back(
    pool: GatewayProcess, upstream: FakeUpstream, data_dir: Path, tmp_path: Path
) -> None:
    # The pool's account switches (newest first) carry the conversation's id end.
    conversation = "019aef3c-0000-7000-8000-0000000d1e55"
    watch = shlex.join([*CAO, "status", "--watch", "--url", pool.url])
    out = tmp_path
    # q ends the first run, Ctrl-C the second; the terminal's mode is saved around each.
    script = f"""trap 'true' INT
stty -g > {out}/before
{watch}; echo $? > {out}/rc1; stty -g > {out}/after1
{watch}; echo $? > {out}/rc2; stty -g > {out}/after2
exec sleep 600
"""
    term = Tmux(tmp_path, cao_env(data_dir, TERM="xterm-256color"), columns=80, rows=40)
    try:
        with httpx.Client(base_url=pool.base, follow_redirects=True) as client:
            assert turn(client, conversation).status_code == 200
            term.start(script)
            term.wait_for("gateway up at")
            assert term.flag("alternate_on") == "1" and term.flag("cursor_flag") == "0"
            mode = subprocess.run(["stty", "-F", term.flag("pane_tty"), "-a"],
                                  capture_output=True, text=True, check=True).stdout  # fmt: skip
            assert "-icanon" in mode.split() and "-echo" in mode.split()  # keys, unechoed
            term.wait_for("alpha  usable  1 conv")

            # A failover while it runs: on screen within 2 s.
            upstream.queue("acct-alpha", Answer("quota", resets_at=int(time.time()) + 3600))
            assert turn(client, conversation).status_code == 200
            done = time.monotonic()
            shown = term.wait_for("alpha → beta  quota  …000d1e55", timeout=10)
            print(f"failover on screen {shown - done:.2f} s after its answer")
            assert shown - done < 2.0, shown - done
        screen = term.screen()
        assert any("alpha  cooling until" in line for line in screen)
        assert any(line.startswith("  beta  usable  1 conv") for line in screen)
        # 80 columns: no line wider (a wider one would have wrapped: -J joins it back).
        assert max(cell_len(line) for line in screen) <= 80
        assert any(line.startswith(f"  {LONG[:20]}") and line.endswith("…") for line in screen)

        term.tmux("send-keys", "q")
        # (after1 is written last: once it is whole, so is rc1)
        assert wait_for_file(out / "after1") == (out / "before").read_text().strip()
        assert (out / "rc1").read_text() == "0\n"
        time.sleep(0.2)  # the next run starts
        term.wait_for("gateway up at")
        term.tmux("send-keys", "C-c")
        assert wait_for_file(out / "after2") == (out / "before").read_text().strip()
        assert (out / "rc2").read_text() == "0\n"
        assert term.flag("alternate_on") == "0" and term.flag("cursor_flag") == "1"
    finally:
        term.stop()
