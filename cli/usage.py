"""`cao status --refresh`: every account's usage read from the source, in parallel."""

from __future__ import annotations

import ssl
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING

from cao.config.defaults import REFRESH_MARGIN_SECONDS
from cao.config.pool import AccountPool, AccountView
from cao.config.tokens import RefreshFailed, refresh_tokens
from cao.config.usage import USAGE_PATH, UsageReading, apply_reading, parse_usage

if TYPE_CHECKING:
    import httpx

TIMEOUT = 5.0  # per request; all accounts are read at once, so the whole refresh takes as long
WORKERS = 8


def read_usage(
    client: httpx.Client, upstream: str, auth_url: str, view: AccountView
) -> UsageReading | str:
    """One account's reading, or why there is none. Its token is refreshed first when it
    expires soon (under the same lock as every refresh); a 401/403 gets one forced refresh."""
    auth = view.auth
    for attempt in (0, 1):
        # As the gateway's fresh_auth: the lock and a refresh only when the token expires soon
        # (or was refused).
        if attempt or auth.expires_within(REFRESH_MARGIN_SECONDS, time.time()):
            try:
                result = refresh_tokens(
                    view.home, auth_url, client, auth.access_token, force=attempt == 1
                )
            except RefreshFailed as failure:
                return f"token refresh failed ({failure.reason})"
            auth = result.auth
        headers = {"authorization": f"Bearer {auth.access_token}"}
        if auth.account_id:
            headers["chatgpt-account-id"] = auth.account_id
        try:
            answer = client.get(upstream + USAGE_PATH, headers=headers)
        except Exception as e:  # httpx errors, and anything else: one line, never a traceback
            return f"usage endpoint unreachable ({type(e).__name__})"
        if answer.status_code in (401, 403) and attempt == 0:
            continue
        if answer.status_code != 200:
            return f"usage endpoint answered {answer.status_code}"
        try:
            return parse_usage(answer.json(), time.time())
        except ValueError:
            return "usage endpoint answered something that is not a usage document"
    return "usage endpoint refused the refreshed token"


def record(pool: AccountPool, name: str, reading: UsageReading) -> None:
    pool.update_state(lambda state: apply_reading(state.account(name), reading))


def refresh_all(
    pool: AccountPool, upstream: str, auth_url: str, upstream_ca: Path | None
) -> dict[str, str]:
    """Read every logged-in account and record the readings; {name: problem} for the rest."""
    import httpx

    views = [v for v in pool.accounts() if v.auth.logged_in and not v.state.needs_login]
    verify: ssl.SSLContext | bool = (
        ssl.create_default_context(cafile=str(upstream_ca)) if upstream_ca else True
    )
    problems: dict[str, str] = {}
    progress = sys.stderr.isatty()
    with (
        httpx.Client(verify=verify, timeout=TIMEOUT, trust_env=False) as client,
        ThreadPoolExecutor(min(WORKERS, max(1, len(views)))) as workers,
    ):
        jobs = {
            workers.submit(read_usage, client, upstream.rstrip("/"), auth_url, v): v.name
            for v in views
        }
        for done, job in enumerate(as_completed(jobs), 1):
            name = jobs[job]
            outcome = job.result()
            if isinstance(outcome, str):
                problems[name] = outcome
            else:
                record(pool, name, outcome)
            if progress:
                sys.stderr.write(f"\rcao: reading usage {done}/{len(views)}")
                sys.stderr.flush()
    if progress and views:
        sys.stderr.write("\r\x1b[K")
    return problems
