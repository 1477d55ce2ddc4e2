"""An account's usage from the source: ChatGPT's `GET /backend-api/wham/usage` (what Codex's
own /status reads). It costs no model quota.

Windows are classified by their length, never by their slot: some plans put a 30-day window in
the primary slot. `used_percent` is what is used, not what remains.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .quota import number
from .state import AccountState, UsageWindow

USAGE_PATH = "/backend-api/wham/usage"
WINDOW_SLOTS = ("primary_window", "secondary_window", "tertiary_window")


@dataclass(frozen=True)
class Window:
    minutes: int  # the window's length: 300 = 5 h, 10080 = weekly, 43200 = 30 days
    used_percent: float
    resets_at: float | None


@dataclass(frozen=True)
class UsageReading:
    at: float
    windows: dict[str, Window] = field(default_factory=dict)  # keyed by str(minutes)
    plan_type: str | None = None
    has_credits: bool | None = None
    credits_unlimited: bool | None = None
    credits_balance: float | None = None
    reset_credits: int | None = None


def parse_window(raw: object, now: float) -> Window | None:
    if not isinstance(raw, dict):
        return None
    used = number(raw.get("used_percent"))
    seconds = number(raw.get("limit_window_seconds"))
    if used is None or seconds is None or not 60 <= seconds <= 10**8:
        return None
    resets_at = number(raw.get("reset_at"))
    if resets_at is None and (after := number(raw.get("reset_after_seconds"))) is not None:
        resets_at = now + after
    return Window(int(seconds // 60), max(0.0, min(used, 100.0)), resets_at)


def parse_usage(document: object, now: float) -> UsageReading:
    """Raises ValueError when the answer is not a usage document at all."""
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    limits = document.get("rate_limit")
    windows: dict[str, Window] = {}
    if isinstance(limits, dict):
        for slot in WINDOW_SLOTS:
            window = parse_window(limits.get(slot), now)
            if window is not None:
                windows[str(window.minutes)] = window
    credits = document.get("credits")
    credits = credits if isinstance(credits, dict) else {}
    reset = document.get("rate_limit_reset_credits")
    reset_count = number(reset.get("available_count")) if isinstance(reset, dict) else None
    plan = document.get("plan_type")
    has_credits, unlimited = credits.get("has_credits"), credits.get("unlimited")
    return UsageReading(
        at=now,
        windows=windows,
        plan_type=plan if isinstance(plan, str) else None,
        has_credits=has_credits if isinstance(has_credits, bool) else None,
        credits_unlimited=unlimited if isinstance(unlimited, bool) else None,
        credits_balance=number(credits.get("balance")),
        reset_credits=int(reset_count) if reset_count is not None and reset_count >= 0 else None,
    )


def apply_reading(account: AccountState, reading: UsageReading) -> None:
    """Record a reading: a window takes it unless a newer reading of it is already there
    (the answer headers the gateway records are readings too)."""
    for key, window in reading.windows.items():
        known = account.usage.get(key)
        if known is None or known.updated_at <= reading.at:
            account.usage[key] = UsageWindow(window.used_percent, window.resets_at, reading.at)
    account.usage_read_at = reading.at
    account.has_credits = reading.has_credits
    account.credits_unlimited = reading.credits_unlimited
    account.credits_balance = reading.credits_balance
    account.reset_credits = reading.reset_credits


def render_usage(
    account: AccountState,
    now: float,
    plan_type: str | None = None,
    email: str | None = None,
) -> dict[str, object]:
    """The backend's `wham/usage` answer for what is recorded of one account (the inverse of
    parse_usage): the shortest current window first, as the backend orders them. Numbers are
    whole: Codex reads each field as an integer and ignores an answer with `42.0`."""
    current = sorted(account.current_usage(now).items(), key=lambda item: int(item[0]))
    slots: dict[str, object] = dict.fromkeys(WINDOW_SLOTS)
    for slot, (minutes, window) in zip(WINDOW_SLOTS, current, strict=False):
        resets_at = int(window.resets_at) if window.resets_at is not None else int(now)
        slots[slot] = {
            "used_percent": round(window.used_percent),
            "limit_window_seconds": int(minutes) * 60,
            "reset_after_seconds": max(0, resets_at - int(now)),
            "reset_at": resets_at,
        }
    balance = account.credits_balance
    reached = account.cooling(now) or any(w.used_percent >= 100 for _, w in current)
    document: dict[str, object] = {
        "plan_type": plan_type or "unknown",
        # `allowed` and `limit_reached` are required: Codex ignores an answer without them
        # ("Limits: data not available yet"; measured with 0.169 and 0.171).
        "rate_limit": {"allowed": not reached, "limit_reached": reached, **slots},
        "credits": {
            "has_credits": bool(account.has_credits),
            "unlimited": bool(account.credits_unlimited),
            "balance": None if balance is None else f"{balance:g}",
        },
        "rate_limit_reset_credits": {"available_count": account.reset_credits or 0},
    }
    if email:
        document["email"] = email
    return document
