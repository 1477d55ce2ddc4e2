"""Codex's session files (rollouts) in each account home: finding them, watching a running
session for a usage limit, and copying a session to another account so Codex can resume it.

What Codex 0.169/0.171 need to resume a session recorded under another CODEX_HOME (measured,
see tests/fakes/CODEX-FACTS.md): the rollout file at the same relative path under the new home
(`sessions/YYYY/MM/DD/rollout-<time>-<id>.jsonl`); no index entry, and the `session_meta`
account fields do not stop it. Its encrypted content was minted by the old account, which the
new one refuses: the copy goes without it (config/history.py, the rewrite the gateway uses).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .errors import CaoError
from .files import DIR_MODE, write_atomic
from .history import HistoryEdit, ItemKind, strip_items

SESSIONS_DIR = "sessions"
_ROLLOUT = re.compile(
    r"^rollout-.+-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.jsonl$"
)
SESSION_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
SESSION_PREFIX = re.compile(r"^[0-9a-fA-F][0-9a-fA-F-]{0,35}$")  # what --resume takes
USAGE_LIMIT_ERROR = "usage_limit_exceeded"  # Codex's codex_error_info for a usage limit
SCAN_INTERVAL = 2.0  # seconds between looks for new session files while Codex runs


class SessionError(CaoError):
    """A session cannot be continued (missing, or a format this cao does not know)."""


@dataclass(frozen=True)
class SessionFile:
    id: str
    path: Path
    home: Path

    @property
    def relative(self) -> Path:
        return self.path.relative_to(self.home)

    @property
    def modified(self) -> float:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return 0.0


def session_files(home: Path) -> Iterator[SessionFile]:
    root = home / SESSIONS_DIR
    if not root.is_dir():
        return
    for path in root.glob("*/*/*/rollout-*.jsonl"):
        match = _ROLLOUT.match(path.name)
        if match and path.is_file() and not path.is_symlink():
            yield SessionFile(match.group(1), path, home)


def find_session(home: Path, session_id: str) -> SessionFile | None:
    found = [s for s in session_files(home) if s.id == session_id]
    return max(found, key=lambda s: s.modified, default=None)


def sessions_by_prefix(homes: Iterable[Path], prefix: str) -> dict[str, list[SessionFile]]:
    """Session id -> its copies (newest first) in `homes`, for every id starting with
    `prefix` (case-insensitive)."""
    prefix = prefix.lower()
    found: dict[str, list[SessionFile]] = {}
    for home in homes:
        for session in session_files(home):
            if session.id.startswith(prefix):
                found.setdefault(session.id, []).append(session)
    for copies in found.values():
        copies.sort(key=lambda s: s.modified, reverse=True)
    return found


def newest_session(home: Path, since: float) -> SessionFile | None:
    """The session Codex wrote to last, if it wrote since `since` (the run's start)."""
    recent = [s for s in session_files(home) if s.modified >= since - 1.0]
    return max(recent, key=lambda s: s.modified, default=None)


# -- what a session is about (`cao sessions`) ------------------------------------------------------


@dataclass
class SessionSummary:
    id: str
    account: str | None  # None: the user's own CODEX_HOME (Codex run directly, gateway mode)
    path: Path
    started: float | None
    last_activity: float
    first_message: str | None
    cwd: str | None
    home: Path

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "account": self.account,
            "started": self.started,
            "last_activity": self.last_activity,
            "first_message": self.first_message,
            "cwd": self.cwd,
            "home": str(self.home),
            "path": str(self.path),
        }


def _timestamp(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _user_text(payload: dict[str, Any]) -> str | None:
    """The text of a message the user typed (not the context Codex adds in <tags>)."""
    if payload.get("type") != "message" or payload.get("role") != "user":
        return None
    content = payload.get("content")
    texts = [
        c["text"]
        for c in content or []
        if isinstance(c, dict) and c.get("type") == "input_text" and isinstance(c.get("text"), str)
    ]
    text = " ".join(t.strip() for t in texts).strip()
    return text if text and not text.startswith("<") else None


def summarize(session: SessionFile, account: str | None, scan_lines: int = 400) -> SessionSummary:
    """Reads the head of the file only: a session can be many MB."""
    started = cwd = first = None
    try:
        with session.path.open("rb") as f:
            for number, line in enumerate(f):
                if number >= scan_lines or first is not None:
                    break
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                payload = record.get("payload") if isinstance(record, dict) else None
                if not isinstance(payload, dict):
                    continue
                if record.get("type") == "session_meta":
                    started = _timestamp(payload.get("timestamp"))
                    cwd = payload.get("cwd") if isinstance(payload.get("cwd"), str) else None
                elif record.get("type") == "response_item":
                    first = _user_text(payload)
    except OSError:
        pass
    return SessionSummary(
        session.id, account, session.path, started, session.modified, first, cwd, session.home
    )


# -- watching a running session --------------------------------------------------------------------


def limit_message(record: object) -> str | None:
    """The usage-limit message of a rollout line Codex writes when a turn stops on one
    (`event_msg` with `codex_error_info: usage_limit_exceeded`), else None."""
    if not isinstance(record, dict) or record.get("type") != "event_msg":
        return None
    payload = record.get("payload")
    if not isinstance(payload, dict):
        return None
    for error in (payload.get("error"), payload):
        if isinstance(error, dict) and error.get("codex_error_info") == USAGE_LIMIT_ERROR:
            message = error.get("message")
            return message if isinstance(message, str) else "usage limit"
    return None


@dataclass
class LimitWatch:
    """Follows the session files Codex writes in `home` from `since` on, for a usage limit the
    interactive TUI shows and waits on (it does not exit)."""

    home: Path
    since: float
    offsets: dict[Path, int] = field(default_factory=dict)
    message: str | None = None
    session: SessionFile | None = None
    candidates: list[SessionFile] = field(default_factory=list)
    next_scan: float = 0.0

    def __post_init__(self) -> None:
        # Only what Codex writes from now on counts: a resumed session (or a copy of one)
        # already holds the limit that ended it on another account.
        for session in session_files(self.home):
            with contextlib.suppress(OSError):
                self.offsets[session.path] = session.path.stat().st_size

    def poll(self) -> bool:
        """True once a turn of a session written since `since` stopped on a usage limit."""
        if self.message is not None:
            return True
        now = time.monotonic()
        if now >= self.next_scan:  # a directory walk every SCAN_INTERVAL, not every poll
            self.next_scan = now + SCAN_INTERVAL
            self.candidates = [
                s for s in session_files(self.home) if s.modified >= self.since - 1.0
            ]
        for session in self.candidates:
            found = self._read_new(session.path)
            if found is not None:
                self.message, self.session = found, session
                return True
        return False

    def _read_new(self, path: Path) -> str | None:
        offset = self.offsets.get(path, 0)
        try:
            with path.open("rb") as f:
                f.seek(offset)
                data = f.read()
        except OSError:
            return None
        end = data.rfind(b"\n") + 1  # whole lines only: Codex may be mid-write
        self.offsets[path] = offset + end
        for line in data[:end].splitlines():
            if USAGE_LIMIT_ERROR.encode() not in line:
                continue
            try:
                message = limit_message(json.loads(line))
            except ValueError:
                continue
            if message is not None:
                return message
        return None


# -- moving a session to another account ----------------------------------------------------------


def _records(path: Path) -> list[tuple[bytes, dict[str, Any] | None]]:
    try:
        lines = path.read_bytes().splitlines()
    except OSError as e:
        raise SessionError(f"cannot read {path}: {e.strerror}") from None
    records: list[tuple[bytes, dict[str, Any] | None]] = []
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise SessionError(f"{path.name} is not a Codex session file this cao knows") from None
        records.append((line, record if isinstance(record, dict) else None))
    first = records[0][1] if records else None
    if first is None or first.get("type") != "session_meta":
        raise SessionError(f"{path.name} is not a Codex session file this cao knows")
    return records


def strip_session(path: Path) -> tuple[bytes, HistoryEdit]:
    """The session file without any encrypted content (all of it was minted by the account
    that recorded it), items removed whole and tool calls with their outputs, by the rewrite
    the gateway uses. Lines are kept byte for byte unless they change."""
    records = _records(path)
    payloads = [
        record["payload"]
        for _, record in records
        if record is not None
        and record.get("type") == "response_item"
        and isinstance(record.get("payload"), dict)
    ]
    edit = strip_items(payloads, lambda _: True, drop_orphans=True)
    kept = {id(item) for item in edit.items}
    total = HistoryEdit(edit.items, edit.removed.copy())
    out: list[bytes] = []
    for line, record in records:
        if record is None:
            out.append(line)
            continue
        payload = record.get("payload")
        kind = record.get("type")
        if kind == "response_item" and isinstance(payload, dict):
            if id(payload) in kept:
                out.append(line)
            continue
        history = payload.get("replacement_history") if isinstance(payload, dict) else None
        if kind == "compacted" and isinstance(history, list):
            replaced = strip_items(history, lambda _: True, drop_orphans=True)
            if replaced.changed:
                assert isinstance(payload, dict)
                payload["replacement_history"] = replaced.items
                total.removed.update(replaced.removed)
                line = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()
        out.append(line)
    return b"\n".join(out) + b"\n", total


def copy_session(session: SessionFile, target_home: Path) -> tuple[SessionFile, HistoryEdit]:
    """Make `session` resumable from `target_home`: the stripped copy at the same relative
    path (written atomically, 0600; a copy there from an earlier move is replaced). The source
    file is never modified."""
    data, edit = strip_session(session.path)
    target = target_home / session.relative
    for parent in reversed(target.relative_to(target_home).parents):
        directory = target_home / parent
        if not directory.exists():
            directory.mkdir(mode=DIR_MODE)
    if target.resolve() == session.path.resolve():
        raise SessionError("the session is already in that account's home")
    write_atomic(target, data)
    os.utime(target)  # the newest copy is the one to continue from
    return SessionFile(session.id, target, target_home), edit


def lost_compaction(edit: HistoryEdit) -> bool:
    return bool(edit.removed[ItemKind.COMPACTION])
