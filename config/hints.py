"""Command lines printed as hints: each must work as printed, pasted into any shell."""

from __future__ import annotations

import shlex
from pathlib import Path

from .store import resolve_data_dir


def cao_line(data_dir: Path | None, words: str) -> str:
    """`cao WORDS`, with `--data-dir` when `data_dir` is not the default one (a new shell may
    not have the CAO_DATA_DIR this one has)."""
    if data_dir is None or Path(data_dir) == resolve_data_dir(None, {}):
        return f"cao {words}"
    return f"cao --data-dir {shlex.quote(str(data_dir))} {words}"


def port_words(host: str, port: int, default_host: str, default_port: int) -> str:
    """` --host H --port P` for what differs from the defaults."""
    words = ""
    if host != default_host:
        words += f" --host {host}"
    if port != default_port:
        words += f" --port {port}"
    return words
