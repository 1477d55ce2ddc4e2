"""`cao status --watch`: the pool live, redrawn in place about once a second.

Each frame is `cao status`'s document (the running gateway's view through its status endpoint,
the state on disk when none answers), drawn on the terminal's alternate screen line by line
over the previous frame (no clearing, so no flicker), every line cut to the terminal's width.
`q` or Ctrl-C ends it and puts the terminal back (its mode, the cursor, the screen). In a pipe
it prints each frame that changed as plain lines."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterator
from types import FrameType
from typing import IO, Any

from cao.config.pool import Availability

from .base import human_until, status_words
from .dashboard import short_conversation, window_line

TICK = 1.0
ENTER = "\x1b[?1049h\x1b[?25l"  # alternate screen, cursor hidden
LEAVE = "\x1b[?25h\x1b[?1049l"  # cursor shown, the user's screen back
HOME, CLEAR_LINE, CLEAR_BELOW = "\x1b[H", "\x1b[K", "\x1b[J"
SHOWN_SWITCHES = 5
SHOWN_CONVERSATIONS = 3

Document = dict[str, Any]


# -- the frame (rich markup lines) -----------------------------------------------------------


def clock(when: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(when))


def next_reset(document: Document) -> str | None:
    """The first moment something comes back: a cooldown's end, a pause's, or a window's
    reset."""
    now = document["generated_at"]
    events: list[tuple[float, str]] = []
    for a in document["accounts"]:
        if a["status"] == Availability.COOLING and a["cooling_until"]:
            events.append((a["cooling_until"], f"{a['name']} back"))
        if a.get("paused_until"):
            events.append((a["paused_until"], f"{a['name']} unpaused"))
        for w in a["windows"]:
            if not w["reset"] and w["resets_at"] and w["resets_at"] > now:
                events.append((w["resets_at"], f"{a['name']} {w['label']} resets"))
    if not events:
        return None
    at, what = min(events)
    return f"{what} {human_until(at, now)} ({clock(at)})"


def frame(document: Document) -> list[str]:
    """Rich markup lines: header, one block per account, the last switches."""
    from rich.markup import escape

    now = document["generated_at"]
    gw, summary = document["gateway"], document["summary"]
    running = gw["running"]
    where = (
        f"gateway [green]up[/] at {escape(gw['url'])}"
        if running
        else f"[yellow]no gateway[/] at {escape(gw['url'])}: the state on disk"
    )
    lines = [
        f"[bold]cao[/] {clock(now)}  {where}  {summary['usable']}/{summary['accounts']} usable",
    ]
    upcoming = next_reset(document)
    lines.append(f"[dim]next: {escape(upcoming) if upcoming else '-'}  ·  q quits[/]")
    if not document["accounts"]:
        lines += ["", "no accounts yet: add one with `cao add NAME`"]
    for a in document["accounts"]:
        colour = {Availability.USABLE: "green", Availability.COOLING: "yellow"}.get(
            a["status"], "red"
        )
        if a["status"] == Availability.PAUSED:
            colour = "cyan"
        head = [
            f"[bold]{'*' if a['default'] else ' '} {escape(a['name'])}[/]",
            f"[{colour}]{escape(status_words(a, now))}[/]",
        ]
        conversations = a.get("conversations")
        if running and conversations is not None:
            head.append(f"{len(conversations)} conv")
            head.append(f"{a.get('requests_per_minute') or 0} req/min")
        lines += ["", "  ".join(head)]
        lines += [window_line(w, now) for w in a["windows"]]
        if conversations:
            shown = " ".join(short_conversation(c) for c in conversations[:SHOWN_CONVERSATIONS])
            more = len(conversations) - SHOWN_CONVERSATIONS
            lines.append(
                f"    [dim]serving[/] {escape(shown)}" + (f" [dim](+{more})[/]" if more > 0 else "")
            )
    switches = document["switches"][:SHOWN_SWITCHES]
    if switches:
        lines += ["", "[bold]last switches[/]"]
    for s in switches:
        conversation = s.get("conversation")
        lines.append(
            f"  {clock(s['at'])}  {escape(s['from'] or '-')} → {escape(s['to'] or '-')}  "
            f"[dim]{escape(s['reason'])}"
            + (f"  {escape(short_conversation(conversation))}" if conversation else "")
            + "[/]"
        )
    return lines


# -- drawing ------------------------------------------------------------------------------------


def plain(lines: list[str]) -> list[str]:
    from rich.text import Text

    return [Text.from_markup(line).plain for line in lines]


def screen_text(lines: list[str], columns: int, rows: int, color: bool) -> str:
    """One frame as terminal output: from the top left, each line cut to `columns` and the rest
    of it cleared, at most `rows - 1` lines (no scrolling), the screen below cleared."""
    from io import StringIO

    from rich.console import Console
    from rich.text import Text

    if len(lines) > rows - 1:
        hidden = len(lines) - (rows - 2)
        lines = [*lines[: max(rows - 2, 0)], f"[dim]… {hidden} more lines (a taller window)[/]"]
    buffer = StringIO()
    console = Console(
        file=buffer, width=columns, force_terminal=True, no_color=not color,
        color_system="standard" if color else None, highlight=False, emoji=False,
    )  # fmt: skip
    out = [HOME]
    for line in lines[: max(rows - 1, 1)]:
        text = Text.from_markup(line)
        text.truncate(columns, overflow="ellipsis")
        buffer.seek(0)
        buffer.truncate()
        console.print(text, end="", soft_wrap=True)
        # A line as wide as the screen needs no clearing (and clearing there would erase its
        # last cell, where the cursor waits to wrap).
        out.append(buffer.getvalue() + (CLEAR_LINE if text.cell_len < columns else "") + "\r\n")
    out.append(CLEAR_BELOW)
    return "".join(out)


@contextlib.contextmanager
def terminal_session(out: IO[str], keys: int | None) -> Iterator[None]:
    """The alternate screen with the cursor hidden and, when keys come from a terminal, cbreak
    mode (keys unbuffered and not echoed; Ctrl-C still a signal). All put back on the way out,
    whatever the way out is."""
    saved = termios.tcgetattr(keys) if keys is not None else None
    previous_term = signal.getsignal(signal.SIGTERM)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        if keys is not None:
            tty.setcbreak(keys, termios.TCSANOW)
        out.write(ENTER)
        out.flush()
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            out.write(LEAVE)
            out.flush()
        if keys is not None and saved is not None:
            termios.tcsetattr(keys, termios.TCSADRAIN, saved)
        signal.signal(signal.SIGTERM, previous_term)


def wait_for_key(keys: int | None, wake: int, timeout: float) -> str:
    """A key typed within `timeout` ('' if none); returns early on a resize."""
    sources = [wake] + ([keys] if keys is not None else [])
    ready, _, _ = select.select(sources, [], [], max(timeout, 0.0))
    if wake in ready:
        os.read(wake, 64)
        return ""
    if keys is not None and keys in ready:
        return os.read(keys, 64).decode(errors="replace")
    return ""


def run_watch(document: Callable[[], Document], out: IO[str] = sys.stdout) -> None:
    """Until `q` or Ctrl-C: the terminal view, or plain lines off a terminal."""
    try:
        if out.isatty():
            watch_terminal(document, out)
        else:
            watch_pipe(document, out)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # `cao status --watch | head`: the reader is done
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())


def watch_terminal(document: Callable[[], Document], out: IO[str]) -> None:
    keys = sys.stdin.fileno() if sys.stdin.isatty() else None
    color = "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)

    def resized(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(OSError):
            os.write(wake_write, b"r")

    previous_winch = signal.signal(signal.SIGWINCH, resized)
    try:
        with terminal_session(out, keys):
            while True:
                started = time.monotonic()
                lines = frame(document())
                size = os.get_terminal_size(out.fileno())
                out.write(screen_text(lines, size.columns, size.lines, color))
                out.flush()
                deadline = started + TICK
                while (left := deadline - time.monotonic()) > 0:
                    key = wait_for_key(keys, wake_read, left)
                    if key[:1] in ("q", "Q"):
                        return
                    if not key:
                        break  # a resize, or the tick: draw again
    finally:
        signal.signal(signal.SIGWINCH, previous_winch)
        os.close(wake_read)
        os.close(wake_write)


def watch_pipe(document: Callable[[], Document], out: IO[str]) -> None:
    """Each frame that differs from the last one printed, as plain lines, a blank line apart."""
    last: list[str] = []
    while True:
        started = time.monotonic()
        lines = plain(frame(document()))
        if lines[1:] != last[1:]:  # the first line holds the clock
            out.write(("\n" if last else "") + "\n".join(lines) + "\n")
            out.flush()
            last = lines
        time.sleep(max(TICK - (time.monotonic() - started), 0.0))
