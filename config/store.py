"""The data dir: registry, pool state and one CODEX_HOME per account, behind one file lock."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import tomli_w

from .defaults import DATA_DIR_ENV, DATA_DIR_NAME
from .errors import CaoError, InvalidInput
from .files import ensure_private_dir, quarantine, write_atomic, write_json_atomic
from .homeconfig import ACCOUNT_CONFIG
from .names import is_safe_name, validate_name
from .registry import Registry
from .state import PoolState

if TYPE_CHECKING:
    import filelock

T = TypeVar("T")
D = TypeVar("D")

REGISTRY_FILE = "registry.json"
STATE_FILE = "cao-state.json"
log = logging.getLogger("cao")
LOCK_FILE = ".cao.lock"
LOCK_TIMEOUT = 30.0


def resolve_data_dir(option: str | Path | None, env: Mapping[str, str] = os.environ) -> Path:
    """--data-dir, else $CAO_DATA_DIR, else ~/.codex-account-orchestrator. An empty value is
    refused, given either way (a script's unset variable must not pick a directory)."""
    if option is not None:
        given, where = str(option), "--data-dir"
    elif DATA_DIR_ENV in env:
        given, where = env[DATA_DIR_ENV], DATA_DIR_ENV
    else:
        given, where = "", ""
    if where and not given.strip():
        raise InvalidInput(
            f"{where} is empty: give a directory, or leave it out for ~/{DATA_DIR_NAME}"
        )
    path = Path(given).expanduser().absolute() if where else Path.home() / DATA_DIR_NAME
    if path.exists() and not path.is_dir():
        raise InvalidInput(f"{path} is a file, not a data dir")
    return path


class Store:
    """All state on disk. Every read-modify-write of a shared file happens under `lock`."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.registry_path = data_dir / REGISTRY_FILE
        self.state_path = data_dir / STATE_FILE
        self._lock: filelock.FileLock | None = None
        # Files this Store found corrupt and kept aside (path -> the .corrupt-* copy), so that
        # a long-running reader can put back what it still knows.
        self.quarantined: dict[Path, Path] = {}

    def ensure(self) -> None:
        ensure_private_dir(self.data_dir)

    def lock(self) -> filelock.FileLock:
        self.ensure()
        if self._lock is None:
            import filelock  # ~30 ms to import; read-only commands never need it

            # Reentrant within a thread, exclusive across processes (flock on the lock file).
            self._lock = filelock.FileLock(
                self.data_dir / LOCK_FILE, timeout=LOCK_TIMEOUT, mode=0o600
            )
        return self._lock

    def _locked(self) -> filelock.FileLock:
        import filelock

        lock = self.lock()
        try:
            lock.acquire()
        except filelock.Timeout:
            raise CaoError(
                f"{self.data_dir} is locked by another cao process for over {LOCK_TIMEOUT:.0f}s"
            ) from None
        return lock

    # -- generic JSON documents ----------------------------------------------------------------

    def good_copy(self, path: Path) -> Path:
        """The last content cao wrote to `path`: what a damaged file is restored from."""
        return path.with_name(f".{path.name}.good")

    def good_copy_since(self, path: Path, mtime_ns: int) -> bool:
        """Is there a readable last good copy of `path` written after `mtime_ns`? (Then a
        repair restored content newer than what a reader read at that time.)"""
        good = self.good_copy(path)
        try:
            if good.stat().st_mtime_ns <= mtime_ns:
                return False
            json.loads(good.read_bytes())
        except (OSError, ValueError):
            return False
        return True

    def _load(
        self,
        path: Path,
        parse: Callable[[object], D],
        empty: Callable[[], D],
        rebuild: Callable[[], tuple[D, str] | None] | None = None,
    ) -> D:
        """Read a document. A damaged one is set aside (`.corrupt-*`) under the lock and
        replaced by its last good copy, else by what `rebuild` finds on disk, else read as
        empty; one line says which."""
        try:
            return parse(json.loads(path.read_bytes()))
        except FileNotFoundError:
            return empty()
        except ValueError:
            pass
        lock = self._locked()
        try:
            try:
                return parse(json.loads(path.read_bytes()))  # another process may have fixed it
            except FileNotFoundError:
                return empty()
            except ValueError as e:
                reason = str(e).splitlines()[0][:80]
                kept = self.quarantined[path] = quarantine(path)
            damaged = f"{path.name} was damaged ({reason}; kept as {kept.name})"
            good = self.good_copy(path)
            try:
                content = good.read_bytes()
                document = parse(json.loads(content))
            except (OSError, ValueError):
                pass
            else:
                write_atomic(path, content)
                log.warning("%s: restored the last copy cao wrote", damaged)
                return document
            found = rebuild() if rebuild is not None else None
            if found is None:
                log.warning("%s: read as empty", damaged)
                return empty()
            document, what = found
            log.warning("%s and it had no good copy: %s", damaged, what)
            return document
        finally:
            lock.release()

    def _update(
        self,
        path: Path,
        parse: Callable[[object], D],
        empty: Callable[[], D],
        dump: Callable[[D], object],
        mutate: Callable[[D], T],
        keep_good: bool = False,
    ) -> T:
        lock = self._locked()
        try:
            document = self._load(path, parse, empty)
            result = mutate(document)
            write_json_atomic(path, dump(document))
            if keep_good:
                write_json_atomic(self.good_copy(path), dump(document))
            return result
        finally:
            lock.release()

    # -- registry ------------------------------------------------------------------------------

    def load_registry(self) -> Registry:
        return self._load(self.registry_path, Registry.parse, Registry, self._registry_from_homes)

    def _registry_from_homes(self) -> tuple[Registry, str] | None:
        """A registry of the account homes on disk (in name order), written; None when there
        is none."""
        names = sorted(
            entry.name
            for entry in self.data_dir.iterdir()
            if is_safe_name(entry.name)
            and entry.is_dir()
            and not entry.is_symlink()
            and any((entry / f).is_file() for f in ("auth.json", "config.toml"))
        )
        if not names:
            return None
        registry = Registry()
        for name in names:
            registry.add(name)
        # No good copy of a guess: a running gateway's copy must still win over it.
        write_json_atomic(self.registry_path, registry.dump())
        return registry, (
            f"rebuilt it from the {len(names)} account homes on disk, in name order: "
            f"{', '.join(names)} (default {names[0]}; `cao use NAME` picks another)"
        )

    def update_registry(self, mutate: Callable[[Registry], T]) -> T:
        return self._update(
            self.registry_path, Registry.parse, Registry, Registry.dump, mutate, keep_good=True
        )

    # -- pool state ----------------------------------------------------------------------------

    def load_state(self) -> PoolState:
        return self._load(self.state_path, PoolState.parse, PoolState)

    def update_state(self, mutate: Callable[[PoolState], T]) -> T:
        return self._update(
            self.state_path, PoolState.parse, PoolState, PoolState.dump, mutate, keep_good=True
        )

    # -- account homes -------------------------------------------------------------------------

    def home(self, name: str) -> Path:
        return self.data_dir / validate_name(name)

    def prepare_home(self, name: str) -> Path:
        """Create the account's CODEX_HOME (0700) with our config.toml unless one exists."""
        self.ensure()
        home = self.home(name)
        ensure_private_dir(home)
        config = home / "config.toml"
        if not config.exists():
            write_atomic(config, tomli_w.dumps(ACCOUNT_CONFIG).encode())
        return home

    def delete_home(self, name: str) -> None:
        home = self.home(name)
        if home.is_symlink():
            home.unlink()  # never follow a link out of the data dir
        elif home.exists():
            shutil.rmtree(home)

    def require_account(self, name: str) -> Registry:
        registry = self.load_registry()
        if validate_name(name) not in registry.accounts:
            known = ", ".join(registry.accounts) or "none yet"
            raise CaoError(f"no account named {name!r} (accounts: {known})")
        return registry
