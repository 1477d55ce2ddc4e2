"""The one quota classifier: what an upstream answer says about an account's limits.

Used by the gateway (HTTP answers and SSE events) and by `cao run` (what Codex prints).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from .defaults import COOLDOWN_SECONDS

# A reset time further out than this is not believed (the longest window is a week).
MAX_RESET_SECONDS = 8 * 86400
WINDOWS = ("primary", "secondary")


class QuotaKind(StrEnum):
    USAGE_LIMIT = "quota"  # the plan's usage limit: the account is out until its reset
    RATE_LIMIT = "rate limit"  # short-term: back in Retry-After seconds


@dataclass(frozen=True)
class QuotaSignal:
    kind: QuotaKind
    resets_at: float  # when the account can be tried again
    message: str | None = None


def number(value: object) -> float | None:
    """A finite number from a JSON value or header (a decimal string too); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def sane_reset(resets_at: float | None, now: float, cooldown: float) -> float:
    """A reset time we can act on: in the future and not absurdly far."""
    if resets_at is None or resets_at <= now:
        return now + cooldown
    return min(resets_at, now + MAX_RESET_SECONDS)


def usage_windows(headers: Mapping[str, str]) -> dict[str, tuple[float, float | None]]:
    """x-codex-{primary,secondary}-* headers as {window minutes: (used percent, reset-at)}."""
    windows: dict[str, tuple[float, float | None]] = {}
    for name in WINDOWS:
        used = number(headers.get(f"x-codex-{name}-used-percent"))
        minutes = number(headers.get(f"x-codex-{name}-window-minutes"))
        if used is None or minutes is None or not 1 <= minutes <= 10**6:
            continue
        reset = number(headers.get(f"x-codex-{name}-reset-at"))
        windows[str(int(minutes))] = (max(0.0, min(used, 100.0)), reset)
    return windows


def reset_from_headers(headers: Mapping[str, str]) -> float | None:
    """The latest reset time of a window the headers say is full."""
    full = [r for used, r in usage_windows(headers).values() if used >= 100 and r is not None]
    return max(full, default=None)


def error_object(body: bytes | str | Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The `error` of an answer body or of a `response.failed` event's response."""
    if isinstance(body, bytes | str):
        try:
            body = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return None
    if not isinstance(body, Mapping):
        return None
    error = body.get(
        "error",
        body.get("response", {}).get("error")
        if isinstance(body.get("response"), Mapping)
        else None,
    )
    return error if isinstance(error, Mapping) else None


def _kind_of(error: Mapping[str, Any]) -> str | None:
    for key in ("type", "code"):
        value = error.get(key)
        if isinstance(value, str):
            return value
    return None


def classify_error(
    status: int,
    body: bytes | str | Mapping[str, Any],
    headers: Mapping[str, str],
    now: float,
    cooldown: float = COOLDOWN_SECONDS,
) -> QuotaSignal | None:
    """An HTTP answer: a 429 usage limit or rate limit, else None."""
    if status != 429:
        return None
    error = error_object(body) or {}
    kind = _kind_of(error)
    message = error.get("message") if isinstance(error.get("message"), str) else None
    if kind == "rate_limit_exceeded":
        retry_after = number(headers.get("retry-after"))
        wait = retry_after if retry_after is not None and retry_after > 0 else 60.0
        return QuotaSignal(QuotaKind.RATE_LIMIT, now + min(wait, 3600.0), message)
    if kind in ("usage_limit_reached", "insufficient_quota"):
        resets_at = number(error.get("resets_at"))
        if resets_at is None and (seconds := number(error.get("resets_in_seconds"))) is not None:
            resets_at = now + seconds
        if resets_at is None:
            resets_at = reset_from_headers(headers)
        return QuotaSignal(QuotaKind.USAGE_LIMIT, sane_reset(resets_at, now, cooldown), message)
    return None


def classify_stream_event(
    event: Mapping[str, Any], now: float, cooldown: float = COOLDOWN_SECONDS
) -> QuotaSignal | None:
    """A `response.failed` SSE event whose error is usage_limit_reached."""
    if event.get("type") != "response.failed":
        return None
    error = error_object(event)
    if error is None or _kind_of(error) not in ("usage_limit_reached", "insufficient_quota"):
        return None
    resets_at = number(error.get("resets_at"))
    if resets_at is None and (seconds := number(error.get("resets_in_seconds"))) is not None:
        resets_at = now + seconds
    message = error.get("message") if isinstance(error.get("message"), str) else None
    return QuotaSignal(QuotaKind.USAGE_LIMIT, sane_reset(resets_at, now, cooldown), message)


def usage_limit_error(resets_at: float, now: float, plan_type: str | None = None) -> dict[str, Any]:
    """The usage-limit error object Codex understands, for when no account is usable."""
    error: dict[str, Any] = {
        "type": "usage_limit_reached",
        "message": "The usage limit has been reached on every cao account",
        "resets_at": math.ceil(resets_at),
        "resets_in_seconds": max(0, math.ceil(resets_at - now)),
    }
    if plan_type:
        error["plan_type"] = plan_type
    return error


def usage_limit_body(resets_at: float, now: float, plan_type: str | None = None) -> bytes:
    """The 429 body Codex understands (HTTP)."""
    return json.dumps({"error": usage_limit_error(resets_at, now, plan_type)}).encode()


def usage_limit_frame(resets_at: float, now: float, plan_type: str | None = None) -> bytes:
    """The same answer as a WebSocket error frame (Codex reads it as that HTTP answer)."""
    error = usage_limit_error(resets_at, now, plan_type)
    return json.dumps({"type": "error", "status": 429, "error": error, "headers": {}}).encode()


# -- what Codex prints (cao run) ------------------------------------------------------------------

# What Codex prints when it stops on a limit (codex-protocol.md): specific phrases only, so that
# ordinary text ("context window exceeded", "quota" in a file) never counts.
USAGE_LIMIT_PATTERNS = (
    r"you(?:'|’)ve hit your usage limit",
    r"usage limit has been reached",
    r"\busage_limit_reached\b",
    r"quota exceeded\. check your plan",
)
# Codex's format_retry_timestamp: "5:34 AM" the same day, else "Dec 4th, 2026 12:00 AM"
# ("%b %-d<suffix>, %Y %-I:%M %p"), after "Try again at" or "or try again at".
_TRY_AGAIN = re.compile(
    r"try again (?:at|after) (?:(?P<date>[A-Za-z]{3,9}\.? \d{1,2}(?:st|nd|rd|th)?)"
    r"(?:,? (?P<year>\d{4}))?,? )?"
    r"(?P<hour>\d{1,2}):(?P<minute>\d{2})\s*(?P<ampm>[AaPp]\.?[Mm]\.?)?",
    re.IGNORECASE,
)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


def compile_patterns(extra: tuple[str, ...] | list[str] = ()) -> list[re.Pattern[str]]:
    return [re.compile(p, re.IGNORECASE) for p in (*USAGE_LIMIT_PATTERNS, *extra)]


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def reset_from_text(text: str, now: datetime) -> float | None:
    """'...try again at 5:34 AM' (local time; the next such moment, or on the date given)."""
    matches = list(_TRY_AGAIN.finditer(text))
    if not matches:
        return None
    match = matches[-1]  # the most recent message
    hour, minute = int(match["hour"]), int(match["minute"])
    ampm = (match["ampm"] or "").lower().replace(".", "")
    if ampm == "pm" and hour < 12:
        hour += 12
    elif ampm == "am" and hour == 12:
        hour = 0
    if hour > 23 or minute > 59:
        return None
    when = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if match["date"]:
        day = re.sub(r"(st|nd|rd|th)$", "", match["date"].replace(".", ""), flags=re.IGNORECASE)
        year = int(match["year"]) if match["year"] else now.year
        parsed = None
        for form in ("%b %d %Y", "%B %d %Y"):
            try:
                parsed = datetime.strptime(f"{day.title()} {year}", form)
                break
            except ValueError:
                continue
        if parsed is not None:
            when = when.replace(year=parsed.year, month=parsed.month, day=parsed.day)
            if not match["year"] and when < now - timedelta(days=180):
                when = when.replace(year=now.year + 1)  # "Jan 2nd" seen in late December
            if match["year"]:
                return when.timestamp() if when > now else None
    while when <= now:
        when += timedelta(days=1)
    return when.timestamp()


def classify_output(
    text: str,
    patterns: list[re.Pattern[str]],
    now: float,
    cooldown: float = COOLDOWN_SECONDS,
) -> QuotaSignal | None:
    """The tail of what Codex printed before it exited non-zero."""
    plain = strip_ansi(text)
    if not any(p.search(plain) for p in patterns):
        return None
    resets_at = reset_from_text(plain, datetime.fromtimestamp(now).astimezone())
    return QuotaSignal(QuotaKind.USAGE_LIMIT, sane_reset(resets_at, now, cooldown), None)
