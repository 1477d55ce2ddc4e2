"""The gateway in the background: `cao gateway start --daemon`, `stop`, `restart`, its log,
and the login service files (systemd unit, launchd plist)."""

from __future__ import annotations

import json
import logging
import os
import plistlib
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mitmproxy.test import taddons

from cao.addons.logfile import LogFile
from cao.cli.daemon import command_line
from cao.cli.service import render_plist, render_unit, service_command
from tests.fakes.upstream import FakeUpstream
from tests.helpers import CAO, cao_env, run_cao, write_account


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_state(pid: int) -> str | None:
    """The kernel's state letter of a process (Z: a zombie), None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return None


def gone(pid: int) -> bool:
    """Ended. A daemon outlives the cao that started it, so init adopts it: a zombie of init
    is init's to reap (this sandbox's PID 1 reaps late), never one of ours."""
    state = process_state(pid)
    if state is None:
        return True
    ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return state == "Z" and ppid == 1


@pytest.fixture
def daemon_dir(data_dir: Path) -> Iterator[Path]:
    write_account(data_dir, "a")
    yield data_dir
    pid_file = data_dir / "gateway.pid"
    if pid_file.exists():  # a test that failed half-way: stop what it started, by its pid
        pid = json.loads(pid_file.read_text())["pid"]
        if command_line(pid) and "mitmdump" in " ".join(command_line(pid) or []):
            os.kill(pid, signal.SIGKILL)


def test_start_stop_restart(daemon_dir: Path, upstream: FakeUpstream) -> None:
    port = free_port()
    started = run_cao(daemon_dir, "gateway", "start", "--daemon", "--port", str(port),
                      "--upstream", upstream.url, timeout=60)  # fmt: skip
    assert started.returncode == 0, started.stderr
    record = json.loads((daemon_dir / "gateway.pid").read_text())
    pid = record["pid"]
    assert record["url"] == f"http://127.0.0.1:{port}"
    assert process_state(pid) in ("S", "R")
    # Detached: its own session, no terminal, stdio not the caller's.
    assert os.getsid(pid) == pid
    assert not os.readlink(f"/proc/{pid}/fd/0").startswith("/dev/pts")
    assert f"stop it with `cao --data-dir {daemon_dir} gateway stop`" in started.stderr
    log = daemon_dir / "gateway.log"
    assert "cao gateway listening on" in log.read_text()
    assert oct(log.stat().st_mode & 0o777) == "0o600"

    second = run_cao(daemon_dir, "gateway", "start", "--daemon", "--port", str(free_port()))
    assert second.returncode == 1
    assert f"a gateway already runs for {daemon_dir} (pid {pid}" in second.stderr
    status = run_cao(daemon_dir, "gateway", "status", "--port", str(port))
    assert status.returncode == 0 and "up at" in status.stderr

    restarted = run_cao(daemon_dir, "gateway", "restart", timeout=60)
    assert restarted.returncode == 0, restarted.stderr
    new_pid = json.loads((daemon_dir / "gateway.pid").read_text())["pid"]
    assert new_pid != pid and gone(pid)
    assert run_cao(daemon_dir, "gateway", "status", "--port", str(port)).returncode == 0

    stopped = run_cao(daemon_dir, "gateway", "stop")
    assert stopped.returncode == 0 and f"(pid {new_pid})" in stopped.stderr
    assert gone(new_pid)
    assert not (daemon_dir / "gateway.pid").exists()
    again = run_cao(daemon_dir, "gateway", "stop")
    assert again.returncode == 1 and "no gateway daemon runs" in again.stderr


def test_stop_never_signals_a_process_that_is_not_our_gateway(daemon_dir: Path) -> None:
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        (daemon_dir / "gateway.pid").write_text(
            json.dumps({"pid": bystander.pid, "url": "http://127.0.0.1:1", "tool": "mitmdump"})
        )
        result = run_cao(daemon_dir, "gateway", "stop")
        assert result.returncode == 1 and "no gateway daemon runs" in result.stderr
        assert bystander.poll() is None  # untouched
        assert not (daemon_dir / "gateway.pid").exists()  # the stale file is gone
    finally:
        bystander.kill()
        bystander.wait()


def test_a_daemon_that_cannot_start_says_why(daemon_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cao(daemon_dir, "gateway", "start", "--daemon", "--port", str(port))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"port {port} on 127.0.0.1 is in use" in result.stderr
    assert not (daemon_dir / "gateway.pid").exists()


def test_port_zero_is_refused_for_a_daemon(daemon_dir: Path) -> None:
    result = run_cao(daemon_dir, "gateway", "start", "--daemon", "--port", "0")
    assert result.returncode == 2 and "--daemon needs a fixed --port" in result.stderr


def test_the_log_file_rotates_and_stays_private(tmp_path: Path) -> None:
    addon = LogFile()
    path = tmp_path / "gateway.log"
    with taddons.context(addon) as tctx:
        tctx.configure(addon, cao_log_file=str(path), cao_log_max_bytes=2048)
        logger = logging.getLogger("rotation-test")  # reaches the root's handlers
        logger.setLevel(logging.INFO)
        for i in range(200):
            logger.info("request %d %s", i, "x" * 40)
        addon.done()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["gateway.log", "gateway.log.1", "gateway.log.2"]
    for name in files:
        size = (tmp_path / name).stat().st_size
        assert size <= 2048 + 200
        assert oct((tmp_path / name).stat().st_mode & 0o777) == "0o600"
    assert "request 199" in path.read_text()


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    command = service_command(CAO, tmp_path / "data dir", ["--port", "18902"])
    unit = tmp_path / "cao-gateway.service"
    unit.write_text(render_unit(command, tmp_path))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    problems = [line for line in result.stderr.splitlines() if "cao-gateway" in line]
    assert result.returncode == 0 and not problems, result.stderr
    assert f"'{tmp_path}/data dir'" in unit.read_text()  # quoted for systemd's splitting


def test_launchd_plist_parses(tmp_path: Path) -> None:
    command = service_command(["/usr/local/bin/cao"], tmp_path, ["--port", "18902"])
    document = plistlib.loads(render_plist(command, tmp_path))
    assert document["ProgramArguments"][:4] == ["/usr/local/bin/cao", "--data-dir",
                                                str(tmp_path), "gateway"]  # fmt: skip
    assert document["ProgramArguments"][4:7] == ["start", "--port", "18902"]
    assert document["RunAtLoad"] is True and document["KeepAlive"] == {"SuccessfulExit": False}


def test_enable_at_login_installs_the_service_and_disable_removes_it(
    daemon_dir: Path, tmp_path: Path, fake_codex_path: Path
) -> None:
    if sys.platform == "darwin":
        pytest.skip("the launchd agent is checked by parsing (test_launchd_plist_parses)")
    env = cao_env(daemon_dir, XDG_CONFIG_HOME=str(tmp_path / "xdg"),
                  PATH=f"{fake_codex_path}:/usr/bin:/bin")  # fmt: skip
    bin_dir = str(tmp_path / "shim-bin")
    port = str(free_port())
    enabled = run_cao(daemon_dir, "gateway", "enable", "--at-login", "--port", port,
                      "--bin-dir", bin_dir, "--no-config", env=env)  # fmt: skip
    assert enabled.returncode == 0, enabled.stderr
    unit = tmp_path / "xdg" / "systemd" / "user" / "cao-gateway.service"
    text = unit.read_text()
    assert f"--data-dir {daemon_dir} gateway start --port {port} --log-file" in text
    # Without a user bus (this sandbox) the unit is installed and the line says how to load it.
    assert str(unit) in enabled.stderr
    disabled = run_cao(daemon_dir, "gateway", "disable", "--bin-dir", bin_dir, env=env)
    assert disabled.returncode == 0 and f"removed the login service {unit}" in disabled.stderr
    assert not unit.exists()
