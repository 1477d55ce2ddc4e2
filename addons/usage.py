"""Usage windows from upstream answers, recorded per account without a disk write per request."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from cao.config.quota import WINDOWS, usage_windows
from cao.config.state import PoolState, UsageWindow

from .livepool import LivePool

Windows = dict[str, tuple[float, float | None]]
MIN_WRITE_INTERVAL = 1.0  # per account
LAST_USED_INTERVAL = 60.0  # last_used is for humans; a minute's precision is plenty


def rate_limit_headers(event: Mapping[str, Any]) -> dict[str, str]:
    """A WebSocket `codex.rate_limits` event as the `x-codex-*` headers an HTTP answer carries,
    so both feed the one reading (config/quota.py `usage_windows`)."""
    headers: dict[str, str] = {}
    limits = event.get("rate_limits")
    if not isinstance(limits, Mapping):
        return headers
    for name in WINDOWS:
        window = limits.get(name)
        if not isinstance(window, Mapping):
            continue
        for key, header in (
            ("used_percent", "used-percent"),
            ("window_minutes", "window-minutes"),
            ("reset_at", "reset-at"),
        ):
            value = window.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                headers[f"x-codex-{name}-{header}"] = str(value)
    return headers


class UsageBook:
    """Writes an account's windows when a value changes, at most once a second per account."""

    def __init__(self, live: LivePool) -> None:
        self.live = live
        self.known: dict[str, Windows] = {}
        self.written: dict[str, float] = {}
        self.last_used_written: dict[str, float] = {}
        self.scheduled: set[str] = set()

    def record(self, account: str, headers: Mapping[str, str]) -> None:
        now = time.time()
        windows = usage_windows(headers)
        changed = bool(windows) and windows != self.known.get(account)
        if changed:
            self.known[account] = windows
        stale = now - self.last_used_written.get(account, 0.0) >= LAST_USED_INTERVAL
        if not (changed or stale) or account in self.scheduled:
            return
        wait = self.written.get(account, 0.0) + MIN_WRITE_INTERVAL - now
        if wait <= 0:
            self.flush(account)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self.scheduled.add(account)
        loop.call_later(wait, self.flush, account)

    def flush(self, account: str) -> None:
        self.scheduled.discard(account)
        now = time.time()
        windows = self.known.get(account, {})

        def apply(state: PoolState) -> None:
            entry = state.account(account)
            for minutes, (used, resets_at) in windows.items():
                entry.usage[minutes] = UsageWindow(used, resets_at, now)
            entry.last_used = now

        self.live.update_state(apply)
        self.written[account] = now
        self.last_used_written[account] = now
