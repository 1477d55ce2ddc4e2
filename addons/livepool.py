"""The pool as a long-running gateway sees it: cached, re-read when a file on disk changes."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from cao.config.auth import AUTH_FILE, AccountAuth, read_auth
from cao.config.pool import AccountPool, AccountView
from cao.config.registry import Registry
from cao.config.state import PoolState
from cao.config.store import Store

log = logging.getLogger("cao.gateway")

Fingerprint = tuple[int, int, int] | None


def _fingerprint(path: Path) -> Fingerprint:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class LivePool(AccountPool):
    """Reads registry, pool state and auth.json files only when they change (a few stat() calls
    per request), so accounts added or logged in while the gateway runs are used at once."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self._registry = Registry()
        self._state = PoolState()
        self._files: tuple[Fingerprint, Fingerprint] | None = None
        self._auth: dict[str, tuple[Fingerprint, AccountAuth]] = {}
        self._views: list[AccountView] = []

    def accounts(self) -> list[AccountView]:
        return self.views()

    def views(self) -> list[AccountView]:
        files = (_fingerprint(self.store.registry_path), _fingerprint(self.store.state_path))
        changed = files != self._files
        if changed:
            self._files = files
            self._registry = self.store.load_registry()
            self._state = self.store.load_state()
        for name in self._registry.accounts:
            path = self.store.data_dir / name / AUTH_FILE
            print_ = _fingerprint(path)
            cached = self._auth.get(name)
            if cached is None or cached[0] != print_:
                self._auth[name] = (print_, read_auth(path.parent))
                changed = True
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

    def view(self, name: str) -> AccountView | None:
        return next((v for v in self.views() if v.name == name), None)

    def update_state(self, mutate: Callable[[PoolState], object]) -> None:
        super().update_state(mutate)
        self._files = None  # re-read on next use

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
        log.warning("account %s needs login (%s): run `cao add %s`", name, reason, name)

    def record_switch(self, from_account: str | None, to_account: str, reason: str) -> None:
        super().record_switch(from_account, to_account, reason)
        log.info("switch %s -> %s (%s)", from_account or "-", to_account, reason)
