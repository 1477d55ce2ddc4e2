"""Keeping account homes in line with the user's own Codex setup (config/homes.py), from the
commands that start Codex in them (`cao add`, `cao import`, `cao run`)."""

from __future__ import annotations

from collections.abc import Iterable

from cao.config.homeconfig import user_codex_home
from cao.config.homes import SyncResult, sync_home
from cao.config.store import Store

from .base import warn


def sync_account_home(store: Store, name: str) -> SyncResult:
    result = sync_account_homes(store, [name])[name]
    if result.broken:
        warn(f"account {name}: {result.broken}; Codex cannot start there until it is fixed")
    return result


def sync_account_homes(store: Store, names: Iterable[str]) -> dict[str, SyncResult]:
    """Sync each account's home under the data dir's lock. A problem with the user's own
    setup is said once (not once per account); an account's broken config.toml is the
    caller's to report (in `result.broken`)."""
    source = user_codex_home(data_dir=store.data_dir)
    results: dict[str, SyncResult] = {}
    said: set[str] = set()
    import filelock

    lock = store.lock()
    try:
        lock.acquire()
    except filelock.Timeout:
        warn(f"{store.data_dir} is locked by another cao process: account homes not synced")
        return {name: SyncResult() for name in names}
    try:
        for name in names:
            result = results[name] = sync_home(source, store.home(name))
            problem = result.problem
            if problem and problem not in said:
                said.add(problem)
                warn(f"{problem}; the accounts keep the Codex setup they had")
    finally:
        lock.release()
    return results
