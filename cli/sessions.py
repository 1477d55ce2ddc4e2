"""`cao sessions`: recent Codex sessions across every account home and the user's own
CODEX_HOME (where Codex keeps them in gateway mode)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from cao.config.homeconfig import user_codex_home
from cao.config.pool import AccountPool
from cao.config.sessions import SessionFile, SessionSummary, session_files, summarize
from cao.config.store import Store

from .base import JsonFlag, app, human_until, print_json, say, store_of, text_table

MESSAGE_WIDTH = 32
CWD_WIDTH = 24


def session_homes(store: Store) -> list[tuple[str | None, Path]]:
    """(account, home) for every account, then (None, the user's own CODEX_HOME)."""
    homes: list[tuple[str | None, Path]] = [(v.name, v.home) for v in AccountPool(store).accounts()]
    own = user_codex_home(data_dir=store.data_dir)
    if all(own != home for _, home in homes):
        homes.append((None, own))
    return homes


def recent_sessions(store: Store, limit: int) -> list[SessionSummary]:
    """Newest first. A session continued on several accounts has a copy in each home: the
    newest copy stands for it."""
    newest: dict[str, tuple[float, str | None, SessionFile]] = {}
    for account, home in session_homes(store):
        for session in session_files(home):
            modified = session.modified
            if session.id not in newest or modified > newest[session.id][0]:
                newest[session.id] = (modified, account, session)
    chosen = sorted(newest.values(), key=lambda entry: entry[0], reverse=True)[:limit]
    return [summarize(session, account) for _, account, session in chosen]


def shorten(text: str | None, width: int = MESSAGE_WIDTH) -> str:
    if not text:
        return "-"
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def short_path(path: str | None, width: int = CWD_WIDTH) -> str:
    """A directory as a user reads it: `~` for the home dir, the end kept when too long."""
    if not path:
        return "-"
    home = os.path.expanduser("~")
    if home != "/" and (path == home or path.startswith(home + os.sep)):
        path = "~" + path[len(home) :]
    return path if len(path) <= width else "…" + path[-(width - 1) :]


def where(summary: SessionSummary) -> str:
    return summary.account if summary.account is not None else short_path(str(summary.home), 16)


@app.command()
def sessions(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, help="How many sessions to list.")] = 20,
    as_json: JsonFlag = False,
) -> None:
    """List recent Codex sessions of every account and of your own CODEX_HOME (gateway mode),
    newest first, with the directory each was started in.

    Continue one on a usable account with `cao run --resume ID` (any unique start of the id).
    """
    found = recent_sessions(store_of(ctx), limit)
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
            where(s),
            human_until(s.last_activity, now),
            short_path(s.cwd),
            shorten(s.first_message),
        ]
        for s in found
    ]
    sys.stdout.write(text_table(["id", "account", "last activity", "cwd", "first message"], rows))
