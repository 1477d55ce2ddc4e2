"""The Codex processes that run from an account home, and stopping the ones Codex leaves behind.

The Codex TUI (0.169/0.171) starts an app-server daemon from its CODEX_HOME (`codex app-server
--listen unix:// ... --managed-daemon`, ~190 MB) and a `codex app-server daemon pid-update-loop`
(~55 MB). Both are session leaders re-parented to init, run a copy of Codex installed under
`<home>/packages/app-server-daemon/`, and outlive the TUI (measured; tests/fakes/CODEX-FACTS.md).
cao finds them by process, in /proc: a `codex` whose environment says CODEX_HOME=<home>, or
whose executable lies under <home>, or whose pid (with its start time) Codex recorded in
`<home>/app-server-daemon/*.pid`. It does not trust `codex app-server daemon stop`, which leaves
the pid-update loop running. Without /proc (macOS) only the recorded daemons are found (checked
with `ps`), and only `cao remove` stops them: a Codex still using them cannot be seen.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
DAEMON_DIR = "app-server-daemon"
TERM_GRACE = 5.0  # seconds from SIGTERM to SIGKILL (the daemon takes ~1.4 s to exit)
KILL_GRACE = 2.0
POLL = 0.05
STOP_ROUNDS = 3


@dataclass(frozen=True)
class CodexProcess:
    pid: int
    argv: tuple[str, ...]
    start: int  # clock ticks since boot (/proc/PID/stat field 22): tells a reused pid apart

    @property
    def is_daemon(self) -> bool:
        """The app-server daemon or its helpers, not a Codex the user talks to (argv[1] for
        the native binary, argv[2] behind an interpreter: node's npm wrapper, a script)."""
        return "app-server" in self.argv[1:3]


def _start_ticks(pid: int) -> int | None:
    try:
        return int((PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _is_codex(argv: tuple[str, ...]) -> bool:
    # The native binary, or node running the npm wrapper (`node .../bin/codex`).
    return any(Path(arg).name == "codex" for arg in argv[:2])


def _recorded_pids(home: Path) -> dict[int, int | None]:
    """pid -> start ticks, from the pid files Codex writes for its daemon."""
    found: dict[int, int | None] = {}
    with contextlib.suppress(OSError):
        for path in (home / DAEMON_DIR).glob("*.pid"):
            with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
                record = json.loads(path.read_text())
                identity = record.get("processIdentity") or {}
                found[int(record["pid"])] = identity.get("startTicks")
    return found


def _environ_home(pid: int) -> str | None:
    try:
        data = (PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return None
    for entry in data.split(b"\0"):
        if entry.startswith(b"CODEX_HOME="):
            return os.fsdecode(entry[len(b"CODEX_HOME=") :])
    return None


def _same_path(value: str, home: Path) -> bool:
    try:
        return Path(value).resolve() == home
    except OSError:
        return False


def _recorded_without_proc(home: Path) -> list[CodexProcess]:
    """Without /proc (macOS): the daemons Codex recorded in its pid files, if `ps` still shows
    a Codex app-server under that pid. Their start time cannot be read: `start` is 0."""
    import subprocess

    found = []
    for pid in _recorded_pids(home):
        try:
            shown = subprocess.run(
                ["ps", "-ww", "-o", "command=", "-p", str(pid)], capture_output=True, text=True,
                timeout=5, stdin=subprocess.DEVNULL, check=False,
            ).stdout.split()  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            continue
        process = CodexProcess(pid, tuple(shown), 0)
        if shown and _is_codex(process.argv) and process.is_daemon:
            found.append(process)
    return found


def codex_processes(home: Path) -> list[CodexProcess]:
    """Every live Codex process running from `home` (not this process). Without /proc, only
    the daemons Codex recorded (no client is seen)."""
    try:
        home = home.resolve()
    except OSError:
        return []
    if not PROC.is_dir():
        return _recorded_without_proc(home)
    try:
        pids = [int(p) for p in os.listdir(PROC) if p.isdigit()]
    except OSError:
        return []
    recorded = _recorded_pids(home)
    own = os.getpid()
    found: list[CodexProcess] = []
    for pid in pids:
        if pid == own:
            continue
        try:
            raw = (PROC / str(pid) / "cmdline").read_bytes()
        except OSError:
            continue
        argv = tuple(os.fsdecode(a) for a in raw.split(b"\0") if a)
        if not argv or not _is_codex(argv):
            continue
        start = _start_ticks(pid)
        if start is None:
            continue
        exe = ""
        with contextlib.suppress(OSError):
            exe = os.readlink(PROC / str(pid) / "exe")
        env_home = _environ_home(pid)
        ours = (
            (env_home is not None and _same_path(env_home, home))
            or exe.startswith(f"{home}{os.sep}")
            or argv[0].startswith(f"{home}{os.sep}")
            or (pid in recorded and recorded[pid] in (None, start))
        )
        if ours:
            found.append(CodexProcess(pid, argv, start))
    return found


def _alive(process: CodexProcess) -> bool:
    if process.start == 0:  # no /proc: is the pid there at all
        try:
            os.kill(process.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return _start_ticks(process.pid) == process.start and not _zombie(process.pid)


def _zombie(pid: int) -> bool:
    try:
        return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _signal_all(processes: Iterable[CodexProcess], signum: int) -> None:
    for process in processes:
        if _alive(process):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(process.pid, signum)


def _wait_gone(processes: list[CodexProcess], timeout: float) -> list[CodexProcess]:
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in processes if _alive(p)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(POLL)


def stop_processes(processes: list[CodexProcess]) -> list[CodexProcess]:
    """SIGTERM, wait, SIGKILL, wait: what is still alive after that (normally nothing)."""
    if not processes:
        return []
    _signal_all(processes, signal.SIGTERM)
    left = _wait_gone(processes, TERM_GRACE)
    if left:
        _signal_all(left, signal.SIGKILL)
        left = _wait_gone(left, KILL_GRACE)
    return left


def clients(home: Path) -> list[CodexProcess]:
    """Codex processes in `home` that a user talks to (a TUI, an exec run)."""
    return [p for p in codex_processes(home) if not p.is_daemon]


def stop_daemons(home: Path) -> tuple[list[CodexProcess], list[CodexProcess]]:
    """Stop what Codex left running from `home`, unless a Codex still runs there (another
    `cao run` on the same account uses the daemon). Returns (stopped, still alive). Without
    /proc no client can be seen, so nothing is stopped here (`cao remove` still does)."""
    if not PROC.is_dir():
        return [], []
    stopped: list[CodexProcess] = []
    for _ in range(STOP_ROUNDS):
        processes = codex_processes(home)
        if not processes or any(not p.is_daemon for p in processes):
            break
        left = stop_processes(processes)
        if left:
            return stopped, left
        # Codex starts its daemon through a short-lived launcher: one stopped mid-way may
        # have forked the daemon just before; look again.
        stopped += processes
    return stopped, []


def not_stopped(home: Path, left: list[CodexProcess]) -> str:
    return f"Codex processes from {home} did not stop (pid {', '.join(str(p.pid) for p in left)})"
