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
    PAUSED = "paused"  # by the user (`cao pause`): out of rotation, still logged in
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
        if self.state.is_paused(now):
            return Availability.PAUSED
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
    paused = state.is_paused(now)
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
        "paused": paused,
        "paused_until": state.paused_until if paused else None,  # null: until `cao unpause`
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


def back_at(view: AccountView, now: float) -> float | None:
    """When an account that is limited (cooling down, a window at 100 %) or paused for a while
    is usable again (None: it is not waiting for a time: usable, paused until `cao unpause`,
    or needs a login)."""
    state = view.state
    limited = state.limited_until(now)
    times = [] if limited is None else [limited]
    if state.is_paused(now):
        if state.paused_until is None:
            return None
        times.append(state.paused_until)
    return max(times, default=None)


def earliest_reset(views: list[AccountView], now: float) -> float | None:
    """When the first of these accounts that is limited (cooling down, or a window at 100 %)
    or paused for a while can serve again."""
    times = [back_at(v, now) for v in views]
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

    def record_switch(
        self, from_account: str | None, to_account: str, reason: str,
        conversation: str | None = None,
    ) -> Switch:  # fmt: skip
        switch = Switch(time.time(), from_account, to_account, reason, conversation)
        self.update_state(lambda s: s.record_switch(copy.copy(switch)))
        return switch

    # -- the user's steering (`cao pause`, `cao unpause`, `cao cooldown clear`) -----------------

    def pause(self, name: str, until: float | None) -> None:
        """Out of rotation until `until` (None: until unpaused); still logged in."""

        def mark(state: PoolState) -> None:
            account = state.account(name)
            account.paused, account.paused_until = True, until

        self.update_state(mark)

    def unpause(self, name: str) -> bool:
        """Back in rotation; False if it was not paused."""

        def clear(state: PoolState) -> bool:
            account = state.account(name)
            was = account.is_paused(time.time())
            account.paused, account.paused_until = False, None
            return was

        return bool(self.store.update_state(clear))

    def clear_cooldown(self, name: str) -> bool:
        """End a cooldown early (the backend reset the account before the time it gave), and
        forget the readings that said it was used up (a window at 100 % is a limit too); False
        if it was not limited."""

        def clear(state: PoolState) -> bool:
            account = state.account(name)
            was = account.limited_until(time.time()) is not None
            account.cooling_until = account.cooling_reason = None
            account.usage = {k: w for k, w in account.usage.items() if w.used_percent < 100}
            return was

        return bool(self.store.update_state(clear))
