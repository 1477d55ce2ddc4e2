"""The pool state (cao-state.json): what the gateway and `cao run` learned about each account.

Cooldowns, "needs login", usage windows and the last account switches live here, so that they
survive a restart and every process on the data dir (gateways, `cao run`, `cao list`) sees them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

MAX_SWITCHES = 50


MAX_TIME = 1e11  # year 5138: a timestamp past it is not one (formatting it would fail)


def _num(value: object) -> float | None:
    """A finite number; a timestamp or percent in the file that is anything else is dropped."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and -MAX_TIME < number < MAX_TIME else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _flag(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _window_minutes(key: object) -> str | None:
    """A usage window's key: its length in whole minutes (as the gateway writes it)."""
    if not isinstance(key, str) or not key.isdigit() or not key.isascii():
        return None
    minutes = int(key)
    return str(minutes) if 1 <= minutes <= 10**6 else None


def window_label(minutes: str | int) -> str:
    """A usage window by its length: 300 -> "5h", 10080 -> "weekly"."""
    m = int(minutes)
    if m % 10080 == 0:
        return "weekly" if m == 10080 else f"{m // 10080}w"
    if m % 1440 == 0:
        return f"{m // 1440}d"
    if m % 60 == 0:
        return f"{m // 60}h"
    return f"{m}m"


@dataclass
class UsageWindow:
    """One rate-limit window as the upstream reported it (keyed by its length in minutes)."""

    used_percent: float
    resets_at: float | None = None
    updated_at: float = 0.0

    def current(self, now: float) -> bool:
        """A window past its reset time says nothing about the account any more."""
        return self.resets_at is None or self.resets_at > now


@dataclass
class AccountState:
    cooling_until: float | None = None
    cooling_reason: str | None = None
    needs_login: str | None = None  # why the tokens cannot be refreshed any more
    last_quota_hit: float | None = None
    last_used: float | None = None
    usage: dict[str, UsageWindow] = field(default_factory=dict)
    # From the usage endpoint (`cao status --refresh`): when it was read, and the credits.
    usage_read_at: float | None = None
    has_credits: bool | None = None
    credits_unlimited: bool | None = None
    credits_balance: float | None = None
    reset_credits: int | None = None
    # Taken out of rotation by the user (`cao pause`): until `paused_until`, or, when that is
    # None, until `cao unpause`.
    paused: bool = False
    paused_until: float | None = None

    def cooling(self, now: float) -> bool:
        return self.cooling_until is not None and self.cooling_until > now

    def is_paused(self, now: float) -> bool:
        return self.paused and (self.paused_until is None or self.paused_until > now)

    def current_usage(self, now: float) -> dict[str, UsageWindow]:
        return {k: w for k, w in self.usage.items() if w.current(now)}

    def spent_windows(self, now: float) -> dict[str, UsageWindow]:
        """Windows at 100 % that have not reset yet: the account cannot serve until then."""
        return {
            k: w
            for k, w in self.current_usage(now).items()
            if w.used_percent >= 100 and w.resets_at is not None
        }

    def limited_until(self, now: float) -> float | None:
        """When the account can serve again, cooling down or with a window spent (the later
        of the two); None while it can."""
        times = [w.resets_at for w in self.spent_windows(now).values() if w.resets_at]
        if self.cooling(now) and self.cooling_until is not None:
            times.append(self.cooling_until)
        return max(times, default=None)

    def limit_reason(self, now: float) -> str | None:
        """Why it is limited: the cooldown's reason, or which window is spent."""
        until = self.limited_until(now)
        if until is None:
            return None
        if self.cooling(now) and self.cooling_until == until:
            return self.cooling_reason or "quota"
        spent = self.spent_windows(now)
        longest = max(spent, key=int)
        return f"{window_label(longest)} window used up"

    @classmethod
    def parse(cls, raw: object) -> AccountState:
        if not isinstance(raw, dict):
            return cls()
        usage: dict[str, UsageWindow] = {}
        raw_usage = raw.get("usage")
        if isinstance(raw_usage, dict):
            for key, w in raw_usage.items():
                minutes = _window_minutes(key)
                percent = _num(w.get("used_percent")) if isinstance(w, dict) else None
                if minutes is None or percent is None or not isinstance(w, dict):
                    continue  # not a window this cao understands ("5h", a list...): dropped
                usage[minutes] = UsageWindow(
                    max(0.0, min(percent, 100.0)),
                    _num(w.get("resets_at")),
                    _num(w.get("updated_at")) or 0.0,
                )
        return cls(
            cooling_until=_num(raw.get("cooling_until")),
            cooling_reason=_text(raw.get("cooling_reason")),
            needs_login=_text(raw.get("needs_login")),
            last_quota_hit=_num(raw.get("last_quota_hit")),
            last_used=_num(raw.get("last_used")),
            usage=usage,
            usage_read_at=_num(raw.get("usage_read_at")),
            has_credits=_flag(raw.get("has_credits")),
            credits_unlimited=_flag(raw.get("credits_unlimited")),
            credits_balance=_num(raw.get("credits_balance")),
            reset_credits=_count(raw.get("reset_credits")),
            paused=_flag(raw.get("paused")) or False,
            paused_until=_num(raw.get("paused_until")),
        )


@dataclass
class Switch:
    at: float
    from_account: str | None
    to_account: str | None
    reason: str
    conversation: str | None = None  # the conversation that moved (None: not known)

    def summary(self) -> dict[str, Any]:
        """As `cao status --json` and the gateway's status endpoint show it."""
        return {"at": self.at, "from": self.from_account, "to": self.to_account,
                "reason": self.reason, "conversation": self.conversation}  # fmt: skip


@dataclass
class PoolState:
    accounts: dict[str, AccountState] = field(default_factory=dict)
    switches: list[Switch] = field(default_factory=list)

    def account(self, name: str) -> AccountState:
        return self.accounts.setdefault(name, AccountState())

    def get(self, name: str) -> AccountState:
        return self.accounts.get(name) or AccountState()

    def record_switch(self, switch: Switch) -> None:
        self.switches.append(switch)
        del self.switches[:-MAX_SWITCHES]

    @classmethod
    def parse(cls, document: object) -> PoolState:
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        raw_accounts = document.get("accounts", {})
        if not isinstance(raw_accounts, dict):
            raise ValueError("'accounts' is not an object")
        switches = []
        raw_switches = document.get("switches", [])
        for s in raw_switches if isinstance(raw_switches, list) else []:
            if isinstance(s, dict) and (at := _num(s.get("at"))) is not None:
                switches.append(
                    Switch(
                        at,
                        _text(s.get("from_account")),
                        _text(s.get("to_account")),
                        _text(s.get("reason")) or "unknown",
                        _text(s.get("conversation")),
                    )
                )
        return cls(
            {str(k): AccountState.parse(v) for k, v in raw_accounts.items()},
            switches[-MAX_SWITCHES:],
        )

    def dump(self) -> dict[str, Any]:
        return {
            "version": 1,
            "accounts": {k: asdict(v) for k, v in self.accounts.items()},
            "switches": [asdict(s) for s in self.switches],
        }
