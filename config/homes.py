"""One Codex setup for every account: the user's own CODEX_HOME mirrored into each account home.

What is mirrored from the user's CODEX_HOME (`$CODEX_HOME`, else `~/.codex`):
- `config.toml` (model, reasoning effort, sandbox and approval settings, MCP servers, trusted
  projects, ...) without the keys cao owns in an account home (homeconfig.OWNED_KEYS), nor the
  block `cao gateway enable` marks in the user's file (config/codexconfig.py);
- profiles: `<name>.config.toml` (Codex 0.169/0.171 layer `$CODEX_HOME/<name>.config.toml` for
  `--profile <name>`), the same keys removed;
- `AGENTS.md`, `AGENTS.override.md`, and the `prompts/`, `skills/` (not Codex's own
  `skills/.system`) and `rules/` trees.

What the account keeps: a value is the account's own when it differs from what cao last synced
there (the user edited the account's file, or Codex wrote to it: trust decisions, `/model`).
TOML files merge key by key (a table's keys one by one, arrays whole); other files are kept
whole. Own values win over the user's; a synced value the account deleted stays deleted until
the user's own value changes. What cao synced last is kept in `<home>/.cao-sync.json`, with a
signature (path, size, mtime) of every file involved, so a sync where nothing changed reads one
small file and stats a few others.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from .codexconfig import CONFIG_FILE
from .files import DIR_MODE, ensure_private_dir, write_atomic
from .homeconfig import (
    ACCOUNT_CONFIG,
    ConfigError,
    dump_toml,
    first_line,
    leaves,
    merge,
    nest,
    parse_toml,
    read_toml,
    strip_cao_block,
    without_owned,
)

STAMP_FILE = ".cao-sync.json"
PROFILE_SUFFIX = ".config.toml"
PLAIN_FILES = ("AGENTS.md", "AGENTS.override.md")
TREES = ("prompts", "skills", "rules")
SKIPPED_IN_TREES = frozenset({".system", ".git", "__pycache__", ".DS_Store"})
MAX_FILE_BYTES = 4 * 1024 * 1024  # a prompt or skill file larger than this is not copied
MAX_TREE_FILES = 2000


# -- the sync --------------------------------------------------------------------------------------


@dataclass
class SyncResult:
    changed: list[str] = field(default_factory=list)  # files written or removed in the home
    kept: list[str] = field(default_factory=list)  # the account's own versions, left alone
    problem: str | None = None  # a file of the user's does not parse (nothing of it synced)
    broken: str | None = None  # the account's own config.toml does not parse

    @property
    def ok(self) -> bool:
        return self.problem is None and self.broken is None


def _signature_of(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _tree_files(root: Path) -> Iterator[Path]:
    """Regular files under `root` (relative paths), Codex's own and hidden caches left out;
    symlinks are not followed out of the tree."""
    if not root.is_dir() or root.is_symlink():
        return
    count = 0
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_IN_TREES)
        for name in sorted(files):
            if name in SKIPPED_IN_TREES:
                continue
            path = Path(directory) / name
            if path.is_symlink() or not path.is_file():
                continue
            count += 1
            if count > MAX_TREE_FILES:
                return
            yield path.relative_to(root)


def source_files(source: Path) -> dict[str, str]:
    """What the sync copies from `source`: relative path -> kind (`config`, `profile`,
    `file`)."""
    found: dict[str, str] = {}
    if (source / CONFIG_FILE).is_file():
        found[CONFIG_FILE] = "config"
    with contextlib.suppress(OSError):
        for entry in source.iterdir():
            name = entry.name
            if name.endswith(PROFILE_SUFFIX) and name != CONFIG_FILE and entry.is_file():
                found[name] = "profile"
    for name in PLAIN_FILES:
        if (source / name).is_file():
            found[name] = "file"
    for tree in TREES:
        for relative in _tree_files(source / tree):
            found[str(Path(tree) / relative)] = "file"
    return found


def _load_stamp(home: Path) -> dict[str, Any]:
    try:
        stamp = json.loads((home / STAMP_FILE).read_bytes())
    except (OSError, ValueError):
        return {}
    return stamp if isinstance(stamp, dict) else {}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class HomeSync:
    """One sync of `source` (the user's CODEX_HOME) into `home` (an account's)."""

    def __init__(self, source: Path, home: Path) -> None:
        self.source = source
        self.home = home
        self.stamp = _load_stamp(home)
        self.synced: dict[str, Any] = dict(self.stamp.get("synced") or {})
        self.result = SyncResult()

    def signature(self, files: Mapping[str, str]) -> dict[str, Any]:
        managed = set(files) | set(self.synced) | {CONFIG_FILE}
        return {
            "source": str(self.source),
            "from": {name: _signature_of(self.source / name) for name in sorted(files)},
            "to": {name: _signature_of(self.home / name) for name in sorted(managed)},
        }

    def run(self) -> SyncResult:
        files = source_files(self.source)
        if self.stamp.get("signature") == self.signature(files):
            return self.result  # nothing changed on either side since the last sync
        for name in sorted(set(files) | set(self.synced) | {CONFIG_FILE}):
            kind = files.get(name) or ("config" if name == CONFIG_FILE else None)
            if kind in ("config", "profile") or name.endswith(PROFILE_SUFFIX):
                self.sync_toml(name, present=name in files)
            else:
                self.sync_file(name, present=kind is not None)
        if self.result.ok:
            stamp = {"version": 1, "synced": self.synced, "signature": self.signature(files)}
            write_atomic(self.home / STAMP_FILE, (json.dumps(stamp, indent=1) + "\n").encode())
        return self.result

    def _write(self, name: str, data: bytes) -> None:
        target = self.home / name
        for parent in reversed(Path(name).parents[:-1]):
            directory = self.home / parent
            if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
                raise OSError(f"{directory} is not a directory")
            if not directory.exists():
                directory.mkdir(mode=DIR_MODE)
        write_atomic(target, data)
        self.result.changed.append(name)

    def sync_toml(self, name: str, present: bool) -> None:
        """config.toml or a profile: merged key by key."""
        target = self.home / name
        is_config = name == CONFIG_FILE
        user: dict[str, Any] = {}
        try:
            if present:
                text = (self.source / name).read_text(encoding="utf-8")
                user = parse_toml(strip_cao_block(text), str(self.source / name))
        except (ConfigError, OSError, UnicodeDecodeError) as e:
            self.result.problem = first_line(str(e))
            return
        try:
            account = read_toml(target)
        except ConfigError as e:
            if is_config:
                self.result.broken = first_line(str(e))
            else:
                self.result.kept.append(name)  # a profile of the account's own making
            return
        user = without_owned(user)
        last = leaves(parse_toml(self.synced.get(name, ""), "the last sync"))
        own = leaves(account or {})
        values = merge(leaves(user), own, last)
        if is_config:
            values = {p: v for p, v in values.items() if p[0] not in ACCOUNT_CONFIG}
            values.update({(k,): v for k, v in ACCOUNT_CONFIG.items()})
        elif not present and not any(p not in last or last[p] != v for p, v in own.items()):
            # The user removed the profile and the account never changed it: it goes too.
            if target.exists():
                target.unlink()
                self.result.changed.append(name)
            self.synced.pop(name, None)
            return
        document = nest(values)
        if account is None or document != account:
            self._write(name, dump_toml(document))
        if present:
            self.synced[name] = tomli_w.dumps(user)
        else:
            self.synced.pop(name, None)

    def sync_file(self, name: str, present: bool) -> None:
        """Any other file, whole: the user's copy unless the account's differs from the last
        one synced."""
        target = self.home / name
        last = self.synced.get(name)
        try:
            current = target.read_bytes() if target.is_file() else None
        except OSError:
            current = None
        if current is not None and last is not None and _sha(current) != last:
            self.result.kept.append(name)  # edited in the account: its own now
            if not present:
                self.synced.pop(name, None)
            return
        if current is not None and last is None and present:
            data = self._read_source(name)
            if data is not None and _sha(data) != _sha(current):
                self.result.kept.append(name)  # there before cao synced anything: its own
                return
        if not present:
            if current is not None:
                target.unlink()
                self.result.changed.append(name)
            self.synced.pop(name, None)
            return
        data = self._read_source(name)
        if data is None:
            return
        if current is None and last is not None and last == _sha(data):
            return  # the account deleted it and the user's copy has not changed since
        if current != data:
            self._write(name, data)
        self.synced[name] = _sha(data)

    def _read_source(self, name: str) -> bytes | None:
        path = self.source / name
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                return None
            return path.read_bytes()
        except OSError:
            return None


def sync_home(source: Path, home: Path) -> SyncResult:
    """Bring `home` (an account's CODEX_HOME) in line with `source` (the user's). A `source`
    that does not exist, or that is `home` itself, leaves only cao's own keys to keep."""
    ensure_private_dir(home)
    try:
        same = source.resolve() == home.resolve()
    except OSError:
        same = False
    if same or not source.is_dir():
        source = home / ".cao-no-source"  # nothing to copy: only cao's keys are enforced
    try:
        return HomeSync(source, home).run()
    except OSError as e:
        return SyncResult(problem=f"cannot sync {home}: {e}")
