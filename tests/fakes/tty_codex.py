#!/usr/bin/env python3
"""A stand-in for Codex's TUI in PTY tests: reports what a TUI would care about."""

import fcntl
import os
import signal
import struct
import sys
import termios
import time


def size() -> str:
    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(1, termios.TIOCGWINSZ, b"\0" * 8))
    return f"{rows}x{cols}"


def say(text: str) -> None:
    sys.stdout.write(text + "\r\n")
    sys.stdout.flush()


signal.signal(signal.SIGWINCH, lambda s, f: say(f"winch {size()}"))


def on_int(s: int, f: object) -> None:
    say("got sigint")
    sys.exit(130)


signal.signal(signal.SIGINT, on_int)


def on_tstp(s: int, f: object) -> None:
    # As a TUI suspends: with SIGSTOP. (A default SIGTSTP is discarded by the kernel here: a
    # pty's session leader is an orphaned process group, under cao as under script(1).)
    say("suspending")
    os.kill(os.getpid(), signal.SIGSTOP)
    say("resumed")


signal.signal(signal.SIGTSTP, on_tstp)
say(f"isatty stdin={os.isatty(0)} stdout={os.isatty(1)} size={size()}")
say("ready")
deadline = time.time() + 20
while time.time() < deadline:
    time.sleep(0.05)
say("timeout")
sys.exit(3)
