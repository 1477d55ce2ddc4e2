"""Running Codex so the user keeps a real terminal while cao reads along.

On a terminal, Codex runs on a pseudo-terminal that cao relays byte for byte in raw mode: colours,
keys, Ctrl-C and Ctrl-Z reach Codex as if cao were not there, and window resizes are copied over.
Without a terminal, cao relays pipes. Either way output is written out as it arrives; cao keeps
only the last bytes, to look for a usage-limit message once Codex has exited.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import select
import signal
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import subprocess

TAIL_BYTES = 16 * 1024
CHUNK = 64 * 1024
DRAIN = 256 * 1024
WATCH_INTERVAL = 0.25  # how often a `watch` is asked
# Ending Codex as a user does: Ctrl-C twice (its TUI quits on the second, session written),
# then SIGTERM and SIGKILL if it hangs. Seconds after the watch fired.
STOP_STEPS = ((0.0, "ctrl-c"), (0.4, "ctrl-c"), (8.0, "term"), (12.0, "kill"))

Watch = Callable[[], bool]
Rewrite = Callable[[bytes], bytes]  # what the user sees of a chunk of Codex's output


class OutputTail:
    """The last TAIL_BYTES bytes of what went by."""

    def __init__(self, limit: int = TAIL_BYTES) -> None:
        self.limit = limit
        self.buffer = bytearray()

    def feed(self, data: bytes) -> None:
        if len(data) >= self.limit:
            self.buffer = bytearray(data[-self.limit :])
            return
        self.buffer += data
        if len(self.buffer) > 2 * self.limit:
            del self.buffer[: -self.limit]

    def text(self) -> str:
        return bytes(self.buffer[-self.limit :]).decode("utf-8", "replace")


def exit_code(status: int) -> int:
    """A shell's view of a wait status: the exit code, or 128+N for signal N."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        view = view[written:]


def is_terminal() -> bool:
    return os.isatty(sys.stdin.fileno()) and os.isatty(sys.stdout.fileno())


def run(
    argv: Sequence[str],
    env: Mapping[str, str],
    watch: Watch | None = None,
    rewrite: Rewrite | None = None,
) -> tuple[int, str]:
    """Run to completion; return (exit code, tail of the output as Codex wrote it). On a
    terminal, `watch` is asked every WATCH_INTERVAL; once it says True, Codex is ended cleanly.
    `rewrite` changes what is shown (`cao add` replaces Codex's `codex login` advice)."""
    if is_terminal():
        return run_on_pty(argv, env, watch, rewrite)
    return run_on_pipes(argv, env, rewrite)


# -- pseudo-terminal ------------------------------------------------------------------------------


def _copy_window_size(source: int, target: int) -> None:
    with contextlib.suppress(OSError):
        size = fcntl.ioctl(source, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(target, termios.TIOCSWINSZ, size)  # the child gets SIGWINCH from the kernel


@contextlib.contextmanager
def _raw(fd: int) -> Iterator[None]:
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSAFLUSH, saved)


def run_on_pty(
    argv: Sequence[str],
    env: Mapping[str, str],
    watch: Watch | None = None,
    rewrite: Rewrite | None = None,
) -> tuple[int, str]:
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    sys.stdout.flush()
    pid, master = pty.fork()
    if pid == 0:  # the child: Codex on the pty's other end
        try:
            os.execvpe(argv[0], list(argv), dict(env))  # noqa: S606
        except OSError as e:
            os.write(2, f"cao: cannot run {argv[0]}: {e.strerror}\r\n".encode())
        os._exit(127)
    _copy_window_size(stdin, master)
    tail = OutputTail()
    status: int | None = None

    def on_winch(signum: int, frame: FrameType | None) -> None:
        _copy_window_size(stdin, master)

    def forward(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    # SIGCHLD (Codex exited or stopped) wakes the loop through this pipe: no waitpid() per chunk.
    wake_r, wake_w = os.pipe()
    for fd in (wake_r, wake_w, master):
        os.set_blocking(fd, False)
    handlers = {
        signal.SIGWINCH: on_winch,
        signal.SIGTERM: forward,
        signal.SIGHUP: forward,
        signal.SIGCHLD: lambda signum, frame: None,
    }
    previous = {s: signal.signal(s, h) for s, h in handlers.items()}
    previous_wakeup = signal.set_wakeup_fd(wake_w)
    reading_stdin = True
    stopping: float | None = None  # when the watch fired
    steps = list(STOP_STEPS)
    next_watch = time.monotonic() + WATCH_INTERVAL
    try:
        with _raw(stdin):
            while True:
                watched = [master, wake_r, stdin] if reading_stdin else [master, wake_r]
                timeout = WATCH_INTERVAL if watch is not None else 1.0
                ready, _, _ = select.select(watched, [], [], timeout)
                now = time.monotonic()
                if watch is not None and stopping is None and now >= next_watch:
                    next_watch = now + WATCH_INTERVAL
                    if watch():
                        stopping, reading_stdin = now, False  # keys no longer reach Codex
                if stopping is not None and status is None:
                    while steps and now - stopping >= steps[0][0]:
                        _stop_step(steps.pop(0)[1], pid, master)
                if master in ready:
                    data = _drain(master)
                    if data is None:  # EOF/EIO: the child's side is closed and drained
                        break
                    write_all(stdout, rewrite(data) if rewrite else data)
                    tail.feed(data)
                if stdin in ready:
                    data = os.read(stdin, CHUNK)
                    if data:
                        write_all(master, data)
                    else:
                        reading_stdin = False
                if wake_r in ready or not ready:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 512)
                    if status is None:
                        status = _check_child(pid, stdin, master)
    finally:
        signal.set_wakeup_fd(previous_wakeup)
        for s, h in previous.items():
            signal.signal(s, h)
        for fd in (master, wake_r, wake_w):
            os.close(fd)
    if status is None:
        _, status = os.waitpid(pid, 0)
    return exit_code(status), tail.text()


def _stop_step(step: str, pid: int, master: int) -> None:
    with contextlib.suppress(OSError):
        if step == "ctrl-c":
            os.write(master, b"\x03")
        else:
            os.kill(pid, signal.SIGTERM if step == "term" else signal.SIGKILL)


def _drain(master: int) -> bytes | None:
    """What the pty holds now, up to DRAIN bytes (one write for many small reads); None at EOF."""
    data = bytearray()
    while len(data) < DRAIN:
        try:
            chunk = os.read(master, CHUNK)
        except BlockingIOError:
            break
        except OSError:  # EIO once the child's side is closed
            chunk = b""
        if not chunk:
            return bytes(data) if data else None
        data += chunk
    return bytes(data)


def _check_child(pid: int, stdin: int, master: int) -> int | None:
    """Reap an exited child; relay job control when Codex stops itself (Ctrl-Z)."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG | os.WUNTRACED)
    except ChildProcessError:
        return None
    if done == 0:
        return None
    if os.WIFSTOPPED(status):
        # Stop ourselves too, with the terminal restored; carry on (and wake Codex) on fg.
        saved = termios.tcgetattr(stdin)
        with contextlib.suppress(termios.error):
            termios.tcsetattr(stdin, termios.TCSAFLUSH, _cooked(saved))
        os.kill(os.getpid(), signal.SIGSTOP)
        tty.setraw(stdin)
        _copy_window_size(stdin, master)
        os.kill(pid, signal.SIGCONT)
        return None
    return status


def _cooked(mode: list[Any]) -> list[Any]:
    """The terminal mode a shell expects back while Codex is stopped."""
    cooked = list(mode)
    cooked[3] |= termios.ECHO | termios.ICANON | termios.ISIG
    cooked[1] |= termios.OPOST
    return cooked


# -- pipes ----------------------------------------------------------------------------------------


def run_on_pipes(
    argv: Sequence[str], env: Mapping[str, str], rewrite: Rewrite | None = None
) -> tuple[int, str]:
    import subprocess  # ~10 ms to import; only this path needs it

    sys.stdout.flush()
    sys.stderr.flush()
    try:
        proc = subprocess.Popen(
            list(argv), env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    except OSError as e:
        return 127, f"cannot run {argv[0]}: {e.strerror}"
    assert proc.stdout is not None and proc.stderr is not None
    targets = {proc.stdout.fileno(): sys.stdout.fileno(), proc.stderr.fileno(): sys.stderr.fileno()}
    tail = OutputTail()
    # Ctrl-C reaches Codex too (same process group); Codex decides, cao reports its exit.
    previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    previous_term = signal.signal(signal.SIGTERM, lambda s, f: proc.send_signal(s))
    try:
        while targets:
            ready, _, _ = select.select(list(targets), [], [])  # PEP 475: EINTR is retried
            for fd in ready:
                data = os.read(fd, CHUNK)
                if not data:
                    del targets[fd]
                    continue
                write_all(targets[fd], rewrite(data) if rewrite else data)
                tail.feed(data)
        return exit_code(_wait(proc)), tail.text()
    finally:
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous_term)
        proc.stdout.close()
        proc.stderr.close()


def _wait(proc: subprocess.Popen[bytes]) -> int:
    _, status = os.waitpid(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return status
