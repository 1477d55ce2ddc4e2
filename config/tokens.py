"""Refreshing an account's tokens without ever redeeming one refresh token twice.

Refresh tokens are single-use. Codex 0.169 (measured with strace) refreshes like this: it POSTs
to the token endpoint, then takes `flock(LOCK_EX)` on `CODEX_HOME/auth.lock`, re-reads auth.json
and commits under `flock` on `auth.json.lock` (temp file + rename). cao takes the same advisory
locks, and holds `auth.lock` across its whole refresh (re-read, redeem, commit), so every cao
process and Codex's own commit step serialize on it. Because Codex redeems before it locks, a
`refresh_token_reused` answer may mean Codex rotated the tokens a moment ago: cao then waits for
auth.json to change and adopts what Codex wrote before it calls the account lost.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import filelock
import httpx

from .auth import AccountAuth, read_auth, write_refreshed_tokens
from .defaults import CODEX_CLIENT_ID, REFRESH_MARGIN_SECONDS

REFRESH_LOCK = "auth.lock"  # Codex's refresh lock
COMMIT_LOCK = "auth.json.lock"  # Codex's lock for writing auth.json
LOCK_TIMEOUT = 5.0  # bounded: a lock another process holds longer means "try another account"
ADOPT_WAIT = 3.0  # how long a `refresh_token_reused` waits for another process's commit
PERMANENT_ERRORS = frozenset({
    "refresh_token_reused", "refresh_token_expired", "refresh_token_invalidated", "invalid_grant",
})  # fmt: skip


class RefreshFailed(Exception):
    """`permanent`: the account needs `codex login` again; else try later."""

    def __init__(self, reason: str, permanent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


@dataclass(frozen=True)
class RefreshResult:
    auth: AccountAuth
    refreshed: bool  # False: another process had already rotated the tokens; adopted them


def account_lock(home: Path, name: str = REFRESH_LOCK) -> filelock.FileLock:
    # thread_local=False: the gateway acquires in a worker thread.
    return filelock.FileLock(home / name, timeout=LOCK_TIMEOUT, mode=0o600, thread_local=False)


def _error_code(status: int, body: bytes) -> str:
    try:
        document: Any = json.loads(body)
    except ValueError:
        return f"http {status}"
    error = document.get("error") if isinstance(document, dict) else None
    if isinstance(error, dict):
        error = error.get("code") or error.get("type")
    return error if isinstance(error, str) else f"http {status}"


def redeem(client: httpx.Client, auth_url: str, refresh_token: str) -> dict[str, Any]:
    """One POST to the token endpoint. Raises RefreshFailed."""
    try:
        response = client.post(
            auth_url.rstrip("/") + "/oauth/token",
            json={"client_id": CODEX_CLIENT_ID, "grant_type": "refresh_token",
                  "refresh_token": refresh_token},
        )  # fmt: skip
    except httpx.HTTPError as e:
        raise RefreshFailed(f"token endpoint unreachable ({type(e).__name__})", False) from None
    if response.status_code == 200:
        try:
            tokens = response.json()
        except ValueError:
            raise RefreshFailed("token endpoint answered no JSON", False) from None
        if isinstance(tokens, dict) and isinstance(tokens.get("access_token"), str):
            return tokens
        raise RefreshFailed("token endpoint answered no access_token", False)
    code = _error_code(response.status_code, response.content)
    raise RefreshFailed(code, code in PERMANENT_ERRORS or response.status_code == 401)


def _wait_for_rotation(home: Path, used_refresh_token: str, wait: float) -> AccountAuth | None:
    deadline = time.monotonic() + wait
    while True:
        auth = read_auth(home)
        if auth.logged_in and auth.refresh_token and auth.refresh_token != used_refresh_token:
            return auth
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)


def refresh_tokens(
    home: Path,
    auth_url: str,
    client: httpx.Client,
    seen_access_token: str | None,
    force: bool = False,
    margin: float = REFRESH_MARGIN_SECONDS,
    adopt_wait: float = ADOPT_WAIT,
) -> RefreshResult:
    """Make the account's access token fresh. `seen_access_token` is the token the caller holds:
    if auth.json already has another one that is fresh, it is adopted without a refresh. `force`
    refreshes even an unexpired token (after an upstream 401). Blocking: run in a thread.
    A lock held elsewhere past LOCK_TIMEOUT, or a file that cannot be read or written, is a
    transient RefreshFailed."""
    try:
        return _refresh_locked(home, auth_url, client, seen_access_token, force, margin, adopt_wait)
    except filelock.Timeout:
        raise RefreshFailed("auth.lock held by another process", False) from None
    except OSError as e:
        raise RefreshFailed(f"cannot use {home.name}'s files: {e.strerror or e}", False) from None


def _refresh_locked(
    home: Path,
    auth_url: str,
    client: httpx.Client,
    seen_access_token: str | None,
    force: bool,
    margin: float,
    adopt_wait: float,
) -> RefreshResult:
    with account_lock(home):
        current = read_auth(home)
        if not current.logged_in:
            raise RefreshFailed(current.problem or current.state.value, True)
        now = time.time()
        rotated = seen_access_token is not None and current.access_token != seen_access_token
        if (rotated or not force) and not current.expires_within(margin, now):
            return RefreshResult(current, refreshed=False)
        if not current.refresh_token:
            raise RefreshFailed("no refresh token", True)
        try:
            tokens = redeem(client, auth_url, current.refresh_token)
        except RefreshFailed as failure:
            if failure.reason != "refresh_token_reused":
                raise
            used = current.refresh_token
        else:
            with account_lock(home, COMMIT_LOCK):
                write_refreshed_tokens(home, current, tokens)
            return RefreshResult(read_auth(home), refreshed=True)
    # Outside the lock: let a process that redeemed first (Codex locks only to commit) finish.
    adopted = _wait_for_rotation(home, used, adopt_wait)
    if adopted is None:
        raise RefreshFailed("refresh_token_reused", True)
    return RefreshResult(adopted, refreshed=False)
