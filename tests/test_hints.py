"""Every hint cao prints is a command that works as printed: each test takes the line cao
printed, runs it (`cao` as installed), and checks it did what it says."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cao.cli.daemon import command_line
from tests.fakes.upstream import FakeUpstream
from tests.gateway_proc import GatewayProcess
from tests.helpers import CAO, cao_env, run_cao, write_account


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def as_printed(line: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a hint exactly as cao printed it (its `cao` is the installed one)."""
    words = shlex.split(line)
    assert words[0] == "cao", line
    return subprocess.run([*CAO, *words[1:]], env=env, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip


def quoted(text: str, after: str) -> str:
    """The first `command` printed after `after`."""
    match = re.search(re.escape(after) + r".*?`([^`]+)`", text, re.S)
    assert match, text
    return match.group(1)


@pytest.fixture
def world(data_dir: Path, tmp_path: Path, fake_codex_path: Path) -> Iterator[dict[str, str]]:
    """A data dir outside the default place, a HOME of its own, no CAO_DATA_DIR in the env:
    hints must name the data dir themselves."""
    write_account(data_dir, "a")
    env = cao_env(data_dir, HOME=str(tmp_path / "home"), PATH=f"{fake_codex_path}:/usr/bin:/bin")
    del env["CAO_DATA_DIR"]
    yield env
    record = data_dir / "gateway.pid"
    if record.exists():
        pid = json.loads(record.read_text())["pid"]
        if "mitmdump" in " ".join(command_line(pid) or []):
            os.kill(pid, signal.SIGTERM)


def test_the_listening_line_names_enable_and_url_that_work(
    data_dir: Path, upstream: FakeUpstream, world: dict[str, str], tmp_path: Path
) -> None:
    with GatewayProcess(data_dir, upstream.url) as gw:
        line = gw.wait_for_log("Route Codex through it")
        enable = quoted(line, "Route Codex through it")
        assert enable == f"cao --data-dir {data_dir} gateway enable --port {gw.port}"
        done = as_printed(enable, world)
        assert done.returncode == 0, done.stderr
        shim = tmp_path / "home" / ".local" / "bin" / "codex"
        assert f"127.0.0.1:{gw.port}/backend-api/codex" in shim.read_text()
        url = as_printed(re.search(r"\$\((.*?)\)", line).group(1), world)  # type: ignore[union-attr]
        assert url.stdout == f"{gw.url}/backend-api/codex\n"
        # The one rule: without --port, `url` names the gateway the shim routes Codex to.
        plain = run_cao(data_dir, "--data-dir", str(data_dir), "gateway", "url", env=world)
        assert plain.stdout == url.stdout


def test_status_start_stop_and_restart_hints(data_dir: Path, world: dict[str, str]) -> None:
    port = free_port()
    down = run_cao(data_dir, "--data-dir", str(data_dir), "gateway", "status", "--port",
                   str(port), env=world)  # fmt: skip
    assert down.returncode == 1
    start = quoted(down.stderr, "start it with")
    started = as_printed(start, world)  # the real upstream is contacted only on use (lazy)
    assert started.returncode == 0, started.stderr
    up = run_cao(data_dir, "--data-dir", str(data_dir), "gateway", "status", "--port", str(port),
                 env=world)  # fmt: skip
    assert up.returncode == 0 and "up at" in up.stderr
    again = run_cao(data_dir, "--data-dir", str(data_dir), "gateway", "start", "--daemon",
                    "--port", str(port), env=world)  # fmt: skip
    assert again.returncode == 1
    restarted = as_printed(quoted(again.stderr, "already runs"), world)
    assert restarted.returncode == 0, restarted.stderr
    stopped = as_printed(quoted(started.stderr, "stop it with"), world)
    assert stopped.returncode == 0, stopped.stderr


def test_a_gateway_of_another_data_dir_is_named_not_down(
    data_dir: Path, upstream: FakeUpstream, world: dict[str, str], tmp_path: Path
) -> None:
    other = tmp_path / "other-data"
    other.mkdir(mode=0o700)
    write_account(other, "x")
    with GatewayProcess(other, upstream.url) as gw:
        status = run_cao(data_dir, "--data-dir", str(data_dir), "gateway", "status", "--port",
                         str(gw.port), env=world)  # fmt: skip
        assert status.returncode == 1
        assert f"a gateway runs at {gw.url} with another data dir ({other})" in status.stderr
        # `start` on that port says who is there, not just "in use".
        start = run_cao(data_dir, "--data-dir", str(data_dir), "gateway", "start", "--port",
                        str(gw.port), env=world)  # fmt: skip
        assert start.returncode == 1
        assert f"with another data dir ({other})): pick another with --port" in start.stderr
        # The doctor's fix for a shim pointed there works as printed.
        enabled = run_cao(data_dir, "--data-dir", str(data_dir), "gateway", "enable", "--port",
                          str(gw.port), "--no-config", env=world)  # fmt: skip
        assert enabled.returncode == 0, enabled.stderr
        doctor = run_cao(data_dir, "--data-dir", str(data_dir), "status", "--doctor", "--json",
                         env=world)  # fmt: skip
        checks = json.loads(doctor.stdout)["checks"]
        check = next(c for c in checks if "another data dir" in c["message"])
        fix = check["fix"].split("   ")[0]
        assert as_printed(fix, world).returncode in (0, 1)  # a status of that data dir
        assert "x" in as_printed(fix, world).stdout + as_printed(fix, world).stderr


def test_the_doctors_fix_for_a_foreign_listener_works(
    data_dir: Path, world: dict[str, str]
) -> None:
    with socket.socket() as foreign:
        foreign.bind(("127.0.0.1", 0))
        foreign.listen()
        port = foreign.getsockname()[1]
        enabled = run_cao(data_dir, "--data-dir", str(data_dir), "gateway", "enable", "--port",
                          str(port), "--no-config", env=world)  # fmt: skip
        assert enabled.returncode == 0, enabled.stderr
        doctor = run_cao(data_dir, "--data-dir", str(data_dir), "status", "--doctor", "--json",
                         env=world, timeout=60)  # fmt: skip
    checks = json.loads(doctor.stdout)["checks"]
    check = next(c for c in checks if "Codex cannot use it" in c["message"])
    assert "does not answer as a cao gateway" in check["message"]
    first, second = check["fix"].split(" && ")
    assert as_printed(first, world).returncode == 0
    assert as_printed(second, world).returncode == 0
    status = run_cao(data_dir, "--data-dir", str(data_dir), "gateway", "status", env=world)
    assert status.returncode == 0, status.stderr  # the shim's gateway, the one rule
    as_printed(f"cao --data-dir {data_dir} gateway stop", world)
