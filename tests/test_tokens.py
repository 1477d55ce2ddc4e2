"""refresh_tokens: one refresh per account, adoption of tokens others rotated, error classes."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from cao.config.auth import read_auth
from cao.config.tokens import RefreshFailed, account_lock, refresh_tokens
from tests.helpers import fake_token, write_account


def transport(
    calls: list[dict[str, object]],
    status: int = 200,
    body: object = None,
) -> httpx.Client:
    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(json.loads(request.content))
        payload = body if body is not None else {
            "access_token": fake_token(f"new{len(calls)}", time.time() + 86400),
            "refresh_token": f"rt-new-{len(calls)}"}  # fmt: skip
        return httpx.Response(status, json=payload)

    return httpx.Client(transport=httpx.MockTransport(handle))


def expired_home(tmp_path: Path) -> Path:
    return write_account(tmp_path, "a", exp=time.time() - 10, unknown_field="kept")


def test_refreshes_expired_token_and_keeps_unknown_fields(tmp_path: Path) -> None:
    home = expired_home(tmp_path)
    calls: list[dict[str, object]] = []
    result = refresh_tokens(home, "https://auth.test", transport(calls), None)
    assert result.refreshed and len(calls) == 1
    assert calls[0] == {
        "client_id": "app_EMoamEEZ73f0CkXaXp7hrann",
        "grant_type": "refresh_token",
        "refresh_token": "SECRET-refresh-a-0",
    }
    doc = json.loads((home / "auth.json").read_text())
    assert doc["unknown_field"] == "kept" and doc["tokens"]["refresh_token"] == "rt-new-1"
    assert (home / "auth.json").stat().st_mode & 0o777 == 0o600
    assert (home / "auth.lock").exists()  # Codex's own refresh lock


def test_fresh_token_is_not_refreshed_unless_forced(tmp_path: Path) -> None:
    home = write_account(tmp_path, "a")
    calls: list[dict[str, object]] = []
    assert not refresh_tokens(home, "https://auth.test", transport(calls), None).refreshed
    assert calls == []
    seen = read_auth(home).access_token
    assert refresh_tokens(home, "https://auth.test", transport(calls), seen, force=True).refreshed
    assert len(calls) == 1


def test_tokens_rotated_by_another_process_are_adopted(tmp_path: Path) -> None:
    home = expired_home(tmp_path)
    stale = read_auth(home).access_token
    calls: list[dict[str, object]] = []
    refresh_tokens(home, "https://auth.test", transport(calls), stale)
    # A second caller that saw the stale token finds the rotated one: no second redeem.
    result = refresh_tokens(home, "https://auth.test", transport(calls), stale, force=True)
    assert not result.refreshed and len(calls) == 1


@pytest.mark.parametrize(
    ("status", "body", "permanent"),
    [
        (400, {"error": "refresh_token_expired"}, True),
        (400, {"error": {"code": "refresh_token_invalidated"}}, True),
        (400, {"error": "invalid_grant"}, True),
        (401, {"error": "whatever"}, True),
        (503, {"error": "down"}, False),
        (400, {"error": "temporarily_unavailable"}, False),
        (200, {"nope": 1}, False),
    ],
)
def test_failures_are_classified(
    tmp_path: Path, status: int, body: object, permanent: bool
) -> None:
    home = expired_home(tmp_path)
    with pytest.raises(RefreshFailed) as failure:
        refresh_tokens(home, "https://auth.test", transport([], status, body), None)
    assert failure.value.permanent is permanent
    assert read_auth(home).refresh_token == "SECRET-refresh-a-0"  # nothing half-written


def test_unreachable_endpoint_is_transient(tmp_path: Path) -> None:
    home = expired_home(tmp_path)
    client = httpx.Client(timeout=0.5)
    with pytest.raises(RefreshFailed) as failure:
        refresh_tokens(home, "http://127.0.0.1:9", client, None)
    assert not failure.value.permanent


def test_reused_adopts_what_a_faster_process_commits(tmp_path: Path) -> None:
    """Codex redeems before it locks: our `refresh_token_reused` may be its rotation."""
    home = expired_home(tmp_path)

    def codex_commits_late() -> None:
        time.sleep(0.3)
        with account_lock(home):
            doc = json.loads((home / "auth.json").read_text())
            doc["tokens"]["refresh_token"] = "rt-by-codex"
            doc["tokens"]["access_token"] = fake_token("by-codex", time.time() + 86400)
            (home / "auth.json").write_text(json.dumps(doc))

    thread = threading.Thread(target=codex_commits_late)
    thread.start()
    result = refresh_tokens(
        home, "https://auth.test", transport([], 400, {"error": "refresh_token_reused"}), None
    )
    thread.join()
    assert not result.refreshed and result.auth.refresh_token == "rt-by-codex"


def test_reused_with_nobody_rotating_is_permanent(tmp_path: Path) -> None:
    home = expired_home(tmp_path)
    with pytest.raises(RefreshFailed) as failure:
        refresh_tokens(
            home,
            "https://auth.test",
            transport([], 400, {"error": "refresh_token_reused"}),
            None,
            adopt_wait=0.2,
        )
    assert failure.value.permanent and failure.value.reason == "refresh_token_reused"


def test_refresh_waits_for_codex_holding_auth_lock(tmp_path: Path) -> None:
    home = expired_home(tmp_path)
    calls: list[dict[str, object]] = []
    lock = account_lock(home)
    lock.acquire()
    done = threading.Event()
    threading.Thread(
        target=lambda: (
            refresh_tokens(home, "https://auth.test", transport(calls), None),
            done.set(),
        )
    ).start()
    time.sleep(0.3)
    assert not done.is_set() and calls == []  # blocked on the lock Codex takes
    lock.release()
    assert done.wait(5) and len(calls) == 1
