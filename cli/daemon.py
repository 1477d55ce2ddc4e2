"""The gateway in the background: `cao gateway start --daemon`, `stop` and `restart`.

One daemon per data dir. `<data dir>/gateway.pid` says which process it is (and the options it
was started with, for `restart`); a pid is signalled only once its command line shows it is a
mitmdump of this data dir (a pid reused by another program is never touched). The daemon logs
to `<data dir>/gateway.log` (5 MB, two older files kept); what mitmdump prints before that file
opens (an error at start) goes to `gateway.out`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated

import typer

from cao.config.errors import CaoError
from cao.config.files import FILE_MODE, write_json_atomic
from cao.config.store import Store

from .base import JsonFlag, cao_words, gateway_app, print_json, say, store_of

PID_FILE = "gateway.pid"
LAST_FILE = "gateway.last.json"  # how the last daemon was started (restart, the shim)
LOG_FILE = "gateway.log"
OUT_FILE = "gateway.out"
READY_TIMEOUT = 20.0  # a cold mitmdump start on a loaded 2-core machine takes a few seconds
STOP_TIMEOUT = 10.0


@dataclass
class DaemonRecord:
    """What gateway.pid holds."""

    pid: int
    url: str
    tool: str
    args: list[str] = field(default_factory=list)
    started: float = 0.0


def pid_path(store: Store) -> Path:
    return store.data_dir / PID_FILE


def log_path(store: Store) -> Path:
    return store.data_dir / LOG_FILE


def cao_executable() -> list[str]:
    """How to run this cao again (the shim and the login service call it)."""
    beside = Path(sys.executable).parent / "cao"
    if beside.exists():
        return [str(beside)]
    return [sys.executable, "-m", "cao.cli.app"]


def read_record(store: Store, name: str = PID_FILE) -> DaemonRecord | None:
    try:
        document = json.loads((store.data_dir / name).read_text())
        return DaemonRecord(
            pid=int(document["pid"]),
            url=str(document["url"]),
            tool=str(document["tool"]),
            args=[str(a) for a in document.get("args", [])],
            started=float(document.get("started", 0.0)),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def command_line(pid: int) -> list[str] | None:
    """A process's argv (None when it is gone, or a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc (macOS): ask ps
        try:
            out = subprocess.run(
                ["ps", "-o", "command=", "-p", str(pid)],
                capture_output=True, text=True, timeout=5, check=False,
            ).stdout.strip()  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.split() if out else None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part] or None


def is_our_gateway(pid: int, store: Store) -> bool:
    """Is `pid` a mitmdump/mitmweb serving this data dir?"""
    argv = command_line(pid)
    if not argv:
        return False
    tool = any(Path(a).name in ("mitmdump", "mitmweb") for a in argv[:3])
    return tool and f"cao_data_dir={store.data_dir}" in argv


def running_daemon(store: Store) -> DaemonRecord | None:
    """The daemon of this data dir, if it runs; a stale pid file is removed."""
    record = read_record(store)
    if record is None:
        return None
    if is_our_gateway(record.pid, store):
        return record
    with contextlib.suppress(FileNotFoundError):
        pid_path(store).unlink()
    return None


def _last_words(store: Store) -> str:
    """The last meaningful line the gateway wrote, for a one-line error."""
    for path in (store.data_dir / OUT_FILE, log_path(store)):
        try:
            lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
        except OSError:
            continue
        lines = [line for line in lines if line and not line.startswith("Traceback")]
        if lines:
            return lines[-1][-200:]
    return "no output"


def without_setting(args: list[str], name: str) -> list[str]:
    """mitmdump's args without `--set NAME=...` (it refuses an option set twice)."""
    kept: list[str] = []
    skip = False
    for i, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if arg == "--set" and i + 1 < len(args) and args[i + 1].startswith(f"{name}="):
            skip = True
            continue
        kept.append(arg)
    return kept


def spawn(
    store: Store,
    tool: str,
    args: list[str],
    url: str,
    ready: Callable[[str], bool],
    timeout: float = READY_TIMEOUT,
) -> DaemonRecord:
    """Start mitmdump detached (own session, no terminal, stdio off the caller's) and wait
    until `ready(url)` says it answers. Raises CaoError with the gateway's last words."""
    if (record := running_daemon(store)) is not None:
        raise CaoError(
            f"a gateway already runs for {store.data_dir} (pid {record.pid}, {record.url}): "
            f"`{cao_words(store, 'gateway restart')}` restarts it"
        )
    out = store.data_dir / OUT_FILE
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    daemon_args = without_setting(without_setting(args, "termlog_verbosity"), "cao_log_file")
    daemon_args += [
        "--set", f"cao_log_file={log_path(store)}",
        "--set", "termlog_verbosity=error",  # the log file has the rest
    ]  # fmt: skip
    try:
        proc = subprocess.Popen(
            [tool, *daemon_args],
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=fd,
            start_new_session=True,  # no terminal: a closed shell or Ctrl-C there spares it
            close_fds=True,
            cwd=store.data_dir,
        )
    finally:
        os.close(fd)
    record = DaemonRecord(proc.pid, url, tool, args, time.time())
    write_json_atomic(pid_path(store), asdict(record))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:  # reaped here: no zombie
            with contextlib.suppress(FileNotFoundError):
                pid_path(store).unlink()
            raise CaoError(f"the gateway did not start: {_last_words(store)}")
        if ready(url):
            write_json_atomic(store.data_dir / LAST_FILE, asdict(record))
            return record
        time.sleep(0.05)
    _terminate(proc.pid)
    with contextlib.suppress(FileNotFoundError):
        pid_path(store).unlink()
    raise CaoError(f"the gateway did not answer within {timeout:.0f} s: {_last_words(store)}")


def _terminate(pid: int, timeout: float = STOP_TIMEOUT) -> bool:
    """SIGTERM (mitmdump flushes the pool state), then SIGKILL; True once it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # our own child (a failed start): reap it
        if command_line(pid) is None:
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return False


def stop_daemon(store: Store) -> DaemonRecord | None:
    """Stop this data dir's daemon; the record of what was stopped (None: none ran)."""
    record = running_daemon(store)
    if record is None:
        return None
    _terminate(record.pid)
    with contextlib.suppress(FileNotFoundError):
        pid_path(store).unlink()
    return record


@gateway_app.command()
def stop(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Stop the gateway started with `cao gateway start --daemon` (exit 1: none ran)."""
    store = store_of(ctx)
    record = stop_daemon(store)
    if as_json:
        print_json({"stopped": record is not None, "pid": record.pid if record else None})
    elif record is None:
        say(f"no gateway daemon runs for {store.data_dir}")
    else:
        say(f"stopped the gateway at {record.url} (pid {record.pid})")
    raise typer.Exit(0 if record is not None else 1)


@gateway_app.command()
def restart(
    ctx: typer.Context,
    wait: Annotated[float, typer.Option(min=1, help="Seconds to wait for it to answer.")] = (
        READY_TIMEOUT
    ),
) -> None:
    """Restart the background gateway with the options it was started with (or start the
    last one again)."""
    from .probe import answers

    store = store_of(ctx)
    record = stop_daemon(store) or read_record(store, LAST_FILE)
    if record is None:
        raise CaoError(
            f"no gateway daemon was started for {store.data_dir}: start one with "
            f"`{cao_words(store, 'gateway start --daemon')}`"
        )
    started = spawn(store, record.tool, record.args, record.url, answers(store), wait)
    say(f"restarted the gateway at {started.url} (pid {started.pid}); log: {log_path(store)}")


@gateway_app.command()
def ensure(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Its address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Its port.")] = 4319,
    wait: Annotated[float, typer.Option(min=1, help="Seconds to wait for it to answer.")] = 10.0,
) -> None:
    """Start the background gateway unless it answers (what the shim runs): with the options
    of the last daemon at that address, else the defaults. Exit 1 with one line if it
    cannot."""
    from cao.config.defaults import gateway_url

    from .probe import Answer, answers, probe

    store = store_of(ctx)
    url = gateway_url(host, port)
    found = probe(url, store)
    if found.answer is Answer.OURS:
        return
    if found.answer is not Answer.DOWN:
        raise CaoError(found.words(url))
    last = read_record(store, LAST_FILE)
    if last is not None and last.url == url and running_daemon(store) is None:
        spawn(store, last.tool, last.args, url, answers(store), wait)
        return
    command = [*cao_executable(), "--data-dir", str(store.data_dir), "gateway", "start",
               "--daemon", "--host", host, "--port", str(port), "--wait", str(wait)]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=wait + 5,
                              stdin=subprocess.DEVNULL, check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise CaoError(f"the gateway at {url} did not start within {wait:.0f} s") from None
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["the gateway did not start"]
        raise CaoError(lines[-1].removeprefix("cao: error: "))
