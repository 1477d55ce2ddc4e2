"""Steering the pool by hand: `cao pause`, `cao unpause`, `cao cooldown clear`.

Each is one locked, atomic write of the pool state; a running gateway sees it on its next
request (it stats the state file on every request) and `cao run` on its next pick."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta
from typing import Annotated

import typer

from cao.config.errors import InvalidInput
from cao.config.names import cao_command
from cao.config.pool import AccountPool

from .base import AccountName, account_name, app, human_until, local_time, say, store_of, warn

cooldown_app = typer.Typer(
    help="End an account's cooldown early.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(cooldown_app, name="cooldown")

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
DURATION = re.compile(r"(?:(\d+)([smhdw]))+")
DURATION_PART = re.compile(r"(\d+)([smhdw])")
CLOCK = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?")
LONGEST = 10 * 365 * 86400  # a pause for longer is one until `cao unpause`
WHEN_FORMS = (
    "a duration (2h, 30m, 1d, 1h30m), a clock time (18:00) or a date-time (2026-12-24T09:00)"
)


def parse_when(text: str, now: datetime) -> float:
    """--until WHEN as a Unix time: a duration from now, a clock time (today, or tomorrow if
    it is past), or an ISO date-time (local time unless it names its zone). `now` is aware."""
    word = text.strip().lower()
    if DURATION.fullmatch(word):
        seconds = sum(int(n) * UNITS[unit] for n, unit in DURATION_PART.findall(word))
        if not 0 < seconds <= LONGEST:
            raise InvalidInput(f"--until {text!r}: give a duration between 1s and 10 years")
        return now.timestamp() + seconds
    if clock := CLOCK.fullmatch(word):
        hour, minute, second = (int(g or 0) for g in clock.groups())
        at = now.replace(hour=hour, minute=minute, second=second, microsecond=0)
        if at <= now:
            at += timedelta(days=1)
        return at.timestamp()
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(f"--until {text!r}: give {WHEN_FORMS}") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=now.tzinfo)
    if at <= now:
        raise InvalidInput(f"--until {text!r} is in the past")
    if at.timestamp() - now.timestamp() > LONGEST:
        raise InvalidInput(f"--until {text!r}: more than 10 years away; pause without --until")
    return at.timestamp()


def registered(ctx: typer.Context, name: str) -> tuple[AccountPool, str]:
    store = store_of(ctx)
    name = account_name(name)
    store.require_account(name)
    return AccountPool(store), name


@app.command()
def pause(
    ctx: typer.Context,
    name: AccountName,
    until: Annotated[
        str | None,
        typer.Option(
            metavar="WHEN",
            help="Back in rotation at WHEN: 2h, 30m, 1d, 18:00 (today or tomorrow), or "
            "2026-12-24T09:00 [default: until `cao unpause`].",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Take an account out of rotation (it stays logged in): new conversations and moves skip
    it, and a conversation it serves moves at its next turn."""
    when = parse_when(until, datetime.now().astimezone()) if until is not None else None
    pool, name = registered(ctx, name)
    pool.pause(name, when)
    if when is None:
        say(f"paused {name} until `{cao_command('unpause', name)}`")
    else:
        say(f"paused {name} until {local_time(when)} ({human_until(when)})")
    if not any(v.usable(time.time()) for v in pool.accounts()):
        warn("no account is usable now: Codex gets a usage-limit answer until one is")


@app.command()
def unpause(ctx: typer.Context, name: AccountName) -> None:
    """Put a paused account back in rotation."""
    pool, name = registered(ctx, name)
    say(f"unpaused {name}" if pool.unpause(name) else f"{name} was not paused")


@cooldown_app.command("clear")
def cooldown_clear(ctx: typer.Context, name: AccountName) -> None:
    """End an account's cooldown now (say, after the backend reset it early); its next
    request says whether it really has quota again."""
    pool, name = registered(ctx, name)
    cleared = pool.clear_cooldown(name)
    say(f"cleared {name}'s cooldown" if cleared else f"{name} was not cooling down")
