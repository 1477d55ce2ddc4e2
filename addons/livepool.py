"""The pool as a long-running gateway sees it: cached, re-read when a file on disk changes."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cao.config.auth import AUTH_FILE, AccountAuth, LoginState, read_auth
from cao.config.files import corrupt_copies
from cao.config.names import cao_command
from cao.config.pool import AccountPool, AccountView
from cao.config.registry import Registry
from cao.config.state import AccountState, PoolState, Switch
from cao.config.store import Store

log = logging.getLogger("cao.gateway")

Fingerprint = tuple[int, int, int] | None
Mutation = Callable[[PoolState], object]
# A burst of changes (a usage limit, then the switch it causes) becomes one write, made after
# the re-sent request is on its way.
WRITE_DELAY = 0.05
# A file changed this close to when it was read may change again with the same fingerprint
# (same clock tick, same size, a reused inode): it is read again until its age is past this
# ("racy git"). So `cao pause` and the like take effect at the next request, always.
RACY_NS = 50_000_000


def _fingerprint(path: str | Path) -> Fingerprint:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _racy(files: tuple[Fingerprint, ...], read_ns: int) -> bool:
    # (A file dated far in the future is not racy: it would be re-read on every request.)
    return any(f is not None and abs(f[0] - read_ns) < RACY_NS for f in files)


class LivePool(AccountPool):
    """Reads registry, pool state and auth.json files only when they change (a few stat() calls
    per request), so accounts added or logged in while the gateway runs are used at once.

    A state change takes effect in memory at once and is written to disk (lock, fsync, rename:
    ~5 ms) by one background thread, in order, WRITE_DELAY later: a usage limit never stalls the
    event loop, and so never the other streams."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self._registry = Registry()
        # mtime (ns) of each file when the cached copy was read, and the damaged copies of it
        # kept aside then (a new one means somebody repaired it since).
        self._read_at: dict[Path, int] = {}
        self._corrupt_seen: dict[Path, set[str]] = {}
        self._state = PoolState()
        self._files: tuple[Fingerprint, Fingerprint] | None = None
        self._racy = False  # a file was read in the moment it changed: read it again
        self._auth: dict[str, tuple[Fingerprint, AccountAuth]] = {}
        self._views: list[AccountView] = []
        self._stale = False  # the in-memory state changed: rebuild the views
        self._pending: list[Mutation] = []  # applied in memory, not yet on disk
        self._pending_lock = threading.Lock()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cao-state")
        self._write_scheduled = False
        # Plain strings, built once: views() stats these on every request.
        self._registry_file = os.fspath(store.registry_path)
        self._state_file = os.fspath(store.state_path)
        self._auth_files: dict[str, str] = {}

    def accounts(self) -> list[AccountView]:
        return self.views()

    def views(self) -> list[AccountView]:
        files = (_fingerprint(self._registry_file), _fingerprint(self._state_file))
        changed = self._stale
        self._stale = False
        if files != self._files or self._racy:
            changed = True
            self._files = files
            self._racy = _racy(files, time.time_ns())
            self._reload()
        for name in self._registry.accounts:
            print_ = _fingerprint(self._auth_file(name))
            cached = self._auth.get(name)
            if cached is None or cached[0] != print_:
                auth = read_auth(self.store.data_dir / name)
                self._auth[name] = (print_, auth)
                changed = True
                if auth.state is LoginState.UNREADABLE:  # said when found, with its fix
                    log.warning("account %s: its auth.json is unreadable (%s): run `%s`",
                                name, auth.problem, cao_command("add", name))  # fmt: skip
        if changed:
            self._views = [
                AccountView(
                    name,
                    name == self._registry.default_account,
                    self.store.data_dir / name,
                    self._auth[name][1],
                    self._state.get(name),
                )
                for name in self._registry.fallback_order()
            ]
        return self._views

    def _auth_file(self, name: str) -> str:
        path = self._auth_files.get(name)
        if path is None:
            path = self._auth_files[name] = os.fspath(self.store.data_dir / name / AUTH_FILE)
        return path

    def _reload(self) -> None:
        registry_path, state_path = self.store.registry_path, self.store.state_path
        registry, state = self.store.load_registry(), self.store.load_state()
        # A damaged file was set aside (by this process or another: a `cao list` may notice
        # first) and replaced by the last good copy, a rebuild, or nothing. What the gateway
        # holds wins unless a good copy newer than what it read came back: a repair never
        # takes accounts, cooldowns, usage or switches away from a running gateway.
        if (
            self._repaired(registry_path)
            and self._registry.accounts
            and not self._newer_good_copy(registry_path)
        ):
            registry = self._registry
            self.store.update_registry(_restore_registry(registry))
            log.warning("registry.json was damaged: restored the %d accounts the gateway "
                        "knew", len(registry.accounts))  # fmt: skip
        if self._repaired(state_path) and (self._state.accounts or self._state.switches):
            ours_newer = not self._newer_good_copy(state_path)
            self.update_state(_restore_state(self._state, ours_newer))
            log.warning("cao-state.json was damaged: the gateway wrote back its copy")
        for path in (registry_path, state_path):
            print_ = _fingerprint(path)
            self._read_at[path] = print_[0] if print_ else 0
        self._registry, self._state = registry, state
        with self._pending_lock:
            pending = list(self._pending)
        for mutate in pending:  # not on disk yet: keep them in force
            mutate(self._state)

    def _newer_good_copy(self, path: Path) -> bool:
        return self.store.good_copy_since(path, self._read_at.get(path, 0))

    def _repaired(self, path: Path) -> bool:
        """Was `path` found damaged and set aside since the last read (by anyone)?"""
        seen = self._corrupt_seen.get(path)
        now = corrupt_copies(path)
        self._corrupt_seen[path] = now
        mine = self.store.quarantined.pop(path, None) is not None
        return mine or (seen is not None and bool(now - seen))

    def switches(self) -> list[Switch]:
        """The recorded account switches, oldest first (those not on disk yet included)."""
        self.views()
        return list(self._state.switches)

    def view(self, name: str) -> AccountView | None:
        return next((v for v in self.views() if v.name == name), None)

    def update_state(self, mutate: Mutation) -> None:
        mutate(self._state)
        self._stale = True
        with self._pending_lock:
            self._pending.append(mutate)
        if self._write_scheduled:
            return
        self._write_scheduled = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not inside mitmproxy's loop (tests): write now
            self._submit_write()
        else:
            loop.call_later(WRITE_DELAY, self._submit_write)

    def _submit_write(self) -> None:
        self._write_scheduled = False
        with contextlib.suppress(RuntimeError):  # the writer is already shut down
            self._writer.submit(self._write_pending)

    def _write_pending(self) -> None:
        """One locked read-modify-write for every change made since the last one, in order."""
        with self._pending_lock:
            batch = list(self._pending)
        if not batch:
            return

        def apply(state: PoolState) -> None:
            before = set(state.accounts)
            for mutate in batch:
                mutate(state)
            # A change queued for an account removed since (`cao remove`) must not bring its
            # entry back.
            created = set(state.accounts) - before
            if created:
                registered = set(self.store.load_registry().accounts)
                for name in created - registered:
                    del state.accounts[name]

        try:
            self.store.update_state(apply)
        except Exception as e:  # a lock timeout or a full disk must not kill the writer
            log.warning("could not save the pool state: %s", e)
        finally:
            with self._pending_lock:
                del self._pending[: len(batch)]  # only this thread removes: the batch leads
            self._files = None  # what is on disk is the truth again: re-read it on next use

    def wait_written(self) -> None:
        """Block until every state change made so far is on disk."""
        self._writer.submit(self._write_pending).result()

    def flush(self) -> None:
        """Write what is pending and stop the writer (at shutdown)."""
        with contextlib.suppress(RuntimeError):
            self._writer.submit(self._write_pending)
        self._writer.shutdown(wait=True)

    def mark_cooling(self, name: str, until: float, reason: str, quota_hit: bool = False) -> None:
        super().mark_cooling(name, until, reason, quota_hit)
        log.info(
            "account %s: %s, cooling until %s",
            name,
            reason,
            time.strftime("%H:%M:%S", time.localtime(until)),
        )

    def mark_needs_login(self, name: str, reason: str) -> None:
        super().mark_needs_login(name, reason)
        log.warning("account %s needs login (%s): run `%s`", name, reason, cao_command("add", name))

    def record_switch(
        self, from_account: str | None, to_account: str, reason: str,
        conversation: str | None = None,
    ) -> Switch:  # fmt: skip
        switch = super().record_switch(from_account, to_account, reason, conversation)
        log.info("switch %s -> %s (%s)", from_account or "-", to_account, reason)
        return switch


def _restore_registry(known: Registry) -> Callable[[Registry], None]:
    def restore(registry: Registry) -> None:
        # What the gateway read is newer than any copy cao kept: it wins.
        registry.accounts = list(known.accounts)
        registry.default_account = known.default_account
        registry.extra = dict(known.extra)

    return restore


def _restore_state(known: PoolState, ours_newer: bool) -> Mutation:
    """Put back what the gateway held after a repair: every account it knows, its entry
    winning, or (when the repaired file came from a good copy written after the gateway's
    read) with what the file has overlaid on it; and every switch either side holds."""
    known = copy.deepcopy(known)

    def restore(state: PoolState) -> None:
        for name, account in known.accounts.items():
            theirs = state.accounts.get(name)
            if ours_newer or theirs is None:
                state.accounts[name] = copy.deepcopy(account)
            else:
                state.accounts[name] = _overlay(account, theirs)
        switches = {(s.at, s.from_account, s.to_account, s.reason): s for s in state.switches}
        for s in known.switches:
            switches.setdefault((s.at, s.from_account, s.to_account, s.reason), s)
        state.switches[:] = []
        for s in sorted(switches.values(), key=lambda s: s.at):
            state.record_switch(copy.copy(s))

    return restore


def _overlay(ours: AccountState, theirs: AccountState) -> AccountState:
    """`ours` with every field `theirs` has set (a newer write, perhaps made into an empty
    state after a repair), and per usage window the newer reading."""
    merged = copy.deepcopy(ours)
    for f in dataclasses.fields(AccountState):
        value = getattr(theirs, f.name)
        if f.name != "usage" and value is not None:
            setattr(merged, f.name, value)
    for key, window in theirs.usage.items():
        mine = merged.usage.get(key)
        if mine is None or window.updated_at >= mine.updated_at:
            merged.usage[key] = copy.copy(window)
    return merged
