"""The account pool: registry order + each account's login + its pool state, as one view."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from .auth import AccountAuth, LoginState, read_auth
from .names import cao_command
from .quota import QuotaKind, QuotaSignal
from .registry import Registry
from .state import AccountState, PoolState, Switch
from .store import Store


class Availability(StrEnum):
    USABLE = "usable"
    COOLING = "cooling"
    NEEDS_LOGIN = "needs login"
    NOT_LOGGED_IN = "not logged in"
    UNREADABLE = "unreadable auth.json"


@dataclass(frozen=True)
class AccountView:
    name: str
    is_default: bool
    home: Path
    auth: AccountAuth
    state: AccountState

    def availability(self, now: float) -> Availability:
        if self.auth.state is LoginState.NOT_LOGGED_IN:
            return Availability.NOT_LOGGED_IN
        if self.auth.state is LoginState.UNREADABLE:
            return Availability.UNREADABLE
        if self.state.needs_login:
            return Availability.NEEDS_LOGIN
        if self.state.limited_until(now) is not None:  # cooling, or a window at 100 %
            return Availability.COOLING
        return Availability.USABLE

    def usable(self, now: float) -> bool:
        return self.availability(now) is Availability.USABLE

    def max_used_percent(self, now: float) -> float:
        windows = self.state.current_usage(now).values()
        return max((w.used_percent for w in windows), default=0.0)

    def fix_command(self) -> str | None:
        """The command that makes this account usable again, when one can."""
        if self.auth.state is not LoginState.LOGGED_IN or self.state.needs_login:
            return cao_command("add", self.name)
        return None


def account_summary(view: AccountView, now: float) -> dict[str, Any]:
    """Everything known about an account, as JSON for `cao list --json` and the gateway's
    status endpoint. Never a token."""
    state = view.state
    return {
        "name": view.name,
        "default": view.is_default,
        "status": view.availability(now).value,
        "login": view.auth.state.value,
        "problem": view.auth.problem,
        "email": view.auth.email,
        "plan": view.auth.plan_type,
        "account_id": view.auth.account_id,
        "token_expires_at": view.auth.expires_at,
        "cooling_until": state.limited_until(now),
        "cooling_reason": state.limit_reason(now),
        "needs_login": state.needs_login,
        "fix": view.fix_command(),
        "usage": {
            minutes: {"used_percent": w.used_percent, "resets_at": w.resets_at}
            for minutes, w in sorted(state.current_usage(now).items(), key=lambda kv: int(kv[0]))
        },
        "last_quota_hit": state.last_quota_hit,
        "last_used": state.last_used,
    }


def build_views(store: Store, registry: Registry, state: PoolState) -> list[AccountView]:
    views = []
    for name in registry.fallback_order():
        home = store.home(name)
        views.append(
            AccountView(
                name, name == registry.default_account, home, read_auth(home), state.get(name)
            )
        )
    return views


class Strategy(StrEnum):
    """Which usable account a new conversation goes to."""

    ORDER = "order"  # fallback order (default account first)
    RESET_FIRST = "reset-first"  # the one whose unused quota resets soonest: spend it first
    HEADROOM = "headroom"  # the one with the most quota left


# Chosen by the simulation (`make simulate`, tests/sim/run.py; the README shows its table):
# the least time blocked, at about the same expired quota as reset-first.
DEFAULT_STRATEGY = Strategy.HEADROOM


def soonest_reset(view: AccountView, now: float) -> float:
    """When the first of the account's windows with quota left resets (unknown: never)."""
    resets = [
        w.resets_at
        for w in view.state.current_usage(now).values()
        if w.used_percent < 100 and w.resets_at is not None
    ]
    return min(resets, default=math.inf)


def headroom(view: AccountView, now: float) -> float:
    """Percent left in the account's fullest window (no reading: all of it)."""
    return 100.0 - view.max_used_percent(now)


def by_strategy(views: list[AccountView], now: float, strategy: Strategy) -> list[AccountView]:
    """`views` in the order a strategy prefers them; ties keep fallback order (stable)."""
    if strategy is Strategy.RESET_FIRST:
        return sorted(views, key=lambda v: soonest_reset(v, now))
    if strategy is Strategy.HEADROOM:
        return sorted(views, key=lambda v: -headroom(v, now))
    return list(views)


def same_account(views: list[AccountView]) -> list[list[str]]:
    """Groups of cao accounts logged in to one ChatGPT account (one account_id): failover
    between them lands on the same quota, and their copies of one refresh token revoke each
    other."""
    groups: dict[str, list[str]] = {}
    for view in views:
        if view.auth.logged_in and view.auth.account_id:
            groups.setdefault(view.auth.account_id, []).append(view.name)
    return [names for names in groups.values() if len(names) > 1]


def same_account_advice(names: list[str]) -> str:
    """One line: what is wrong and the fix."""
    others = ", ".join(names[1:])
    return (
        f"accounts {', '.join(names)} are the same ChatGPT account: failover between them "
        f"lands on the same quota and their refresh tokens revoke each other; log "
        f"{others} in to another ChatGPT account (`{cao_command('add', names[-1])}` after "
        "signing out in the browser) or `cao remove` it"
    )


def earliest_reset(views: list[AccountView], now: float) -> float | None:
    """When the first of these accounts that is limited (cooling down, or a window at 100 %)
    can serve again."""
    times = [v.state.limited_until(now) for v in views]
    return min((t for t in times if t is not None), default=None)


class AccountPool:
    """The pool for one-shot commands; the gateway's LivePool caches the same views. All state
    changes go through here (under the store's lock)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def accounts(self) -> list[AccountView]:
        return build_views(self.store, self.store.load_registry(), self.store.load_state())

    def earliest_reset(self, now: float | None = None) -> float | None:
        return earliest_reset(self.accounts(), time.time() if now is None else now)

    def update_state(self, mutate: Callable[[PoolState], object]) -> None:
        self.store.update_state(mutate)

    def mark_limited(self, name: str, signal: QuotaSignal) -> None:
        self.mark_cooling(
            name,
            signal.resets_at,
            signal.kind.value,
            quota_hit=signal.kind is QuotaKind.USAGE_LIMIT,
        )

    # A mutation may be applied more than once (the gateway re-applies what is not on disk yet
    # after each re-read): every time in it is taken once, outside.
    def mark_cooling(self, name: str, until: float, reason: str, quota_hit: bool = False) -> None:
        now = time.time()

        def mark(state: PoolState) -> None:
            account = state.account(name)
            account.cooling_until = until
            account.cooling_reason = reason
            if quota_hit:
                account.last_quota_hit = now

        self.update_state(mark)

    def mark_needs_login(self, name: str, reason: str) -> None:
        self.update_state(lambda s: setattr(s.account(name), "needs_login", reason))

    def record_switch(self, from_account: str | None, to_account: str, reason: str) -> None:
        switch = Switch(time.time(), from_account, to_account, reason)
        self.update_state(lambda s: s.record_switch(copy.copy(switch)))
