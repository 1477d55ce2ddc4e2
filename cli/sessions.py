"""`cao sessions`: recent Codex sessions across every account home."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer

from cao.config.pool import AccountPool
from cao.config.sessions import SessionFile, SessionSummary, session_files, summarize

from .base import JsonFlag, app, human_until, print_json, say, store_of, text_table

MESSAGE_WIDTH = 40


def recent_sessions(pool: AccountPool, limit: int) -> list[SessionSummary]:
    """Newest first. A session continued on several accounts has a copy in each home: the
    newest copy stands for it."""
    newest: dict[str, tuple[float, str, SessionFile]] = {}
    for view in pool.accounts():
        for session in session_files(view.home):
            modified = session.modified
            if session.id not in newest or modified > newest[session.id][0]:
                newest[session.id] = (modified, view.name, session)
    chosen = sorted(newest.values(), key=lambda entry: entry[0], reverse=True)[:limit]
    return [summarize(session, account) for _, account, session in chosen]


def shorten(text: str | None, width: int = MESSAGE_WIDTH) -> str:
    if not text:
        return "-"
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


@app.command()
def sessions(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, help="How many sessions to list.")] = 20,
    as_json: JsonFlag = False,
) -> None:
    """List recent Codex sessions of every account, newest first.

    Continue one on a usable account with `cao run --resume ID`.
    """
    found = recent_sessions(AccountPool(store_of(ctx)), limit)
    if as_json:
        print_json([s.as_json() for s in found])
        return
    if not found:
        say("no sessions yet: Codex records one per conversation in each account home")
        return
    now = time.time()
    rows = [
        [
            s.id,
            s.account,
            human_until(s.started, now) if s.started else "-",
            human_until(s.last_activity, now),
            shorten(s.first_message),
        ]
        for s in found
    ]
    sys.stdout.write(
        text_table(["id", "account", "started", "last activity", "first message"], rows)
    )
