"""Codex's usage view through the gateway: `…/wham/usage` answered from the pool, everything
else under chatgpt_base_url upstream with Codex's own credentials (a real gateway in front of
the fake backend)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cao.config.state import AccountState, UsageWindow
from cao.config.usage import parse_usage, render_usage
from tests.fakes.upstream import FakeUpstream, usage_document
from tests.gateway_proc import GatewayProcess
from tests.helpers import ISSUED_SECRETS, write_account

OWN = {"authorization": "Bearer codex-own-token", "chatgpt-account-id": "acct-user"}


@pytest.fixture
def gateway(data_dir: Path, upstream: FakeUpstream) -> Iterator[GatewayProcess]:
    write_account(data_dir, "a")
    write_account(data_dir, "b")
    upstream.usage_documents["acct-user"] = usage_document(100.0, 300 * 60, 100.0)
    upstream.usage_documents["acct-a"] = usage_document(42.0, 300 * 60, 7.0, balance="3.5")
    upstream.usage_documents["acct-b"] = usage_document(10.0, 300 * 60, 1.0)
    with GatewayProcess(data_dir, upstream.url, "--strategy", "order") as gw:
        yield gw


def usage_reads(upstream: FakeUpstream) -> list[str | None]:
    return [r.account_id for r in upstream.requests if r.path.endswith("/wham/usage")]


def test_usage_is_the_next_accounts(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    with httpx.Client(base_url=gateway.base, timeout=10) as client:
        first = client.get("/backend-api/wham/usage", headers=OWN)
        again = client.get("/api/codex/usage", headers=OWN)
    assert first.status_code == 200, first.text
    document = first.json()
    # a (the default, first in order) would serve the next request: its windows, not 100 %.
    primary = document["rate_limit"]["primary_window"]
    assert primary["used_percent"] == 42 and isinstance(primary["used_percent"], int)
    assert primary["limit_window_seconds"] == 300 * 60
    assert document["rate_limit"]["secondary_window"]["used_percent"] == 7
    assert document["plan_type"] == "plus" and document["email"] == "a@example.com"
    assert document["credits"] == {"has_credits": True, "unlimited": False, "balance": "3.5"}
    assert again.json()["rate_limit"] == document["rate_limit"]
    # Read from the source once (it was older than a minute), then served from the record.
    assert usage_reads(upstream) == ["acct-a"]


def test_usage_follows_the_routing(
    gateway: GatewayProcess, upstream: FakeUpstream, data_dir: Path
) -> None:
    from cao.config.store import Store

    Store(data_dir).update_state(
        lambda s: setattr(s.account("a"), "cooling_until", time.time() + 3600)
    )
    with httpx.Client(base_url=gateway.base, timeout=10) as client:
        document = client.get("/backend-api/wham/usage", headers=OWN).json()
    assert document["rate_limit"]["primary_window"]["used_percent"] == 10  # b's
    assert usage_reads(upstream) == ["acct-b"]


def test_other_paths_keep_codex_own_credentials(
    gateway: GatewayProcess, upstream: FakeUpstream
) -> None:
    with httpx.Client(base_url=gateway.base, timeout=10) as client:
        for path in (
            "/backend-api/wham/accounts/check",
            "/backend-api/wham/settings/user",
            "/backend-api/wham/rate-limit-reset-credits",
            "/backend-api/ps/plugins/x",
        ):
            assert client.get(path, headers=OWN).status_code == 200
        assert client.post("/backend-api/ps/mcp", headers=OWN, content=b"{}").status_code == 200
    passed = [r for r in upstream.requests if not r.path.endswith("/wham/usage")]
    assert len(passed) == 5
    for request in passed:
        assert request.headers["authorization"] == "Bearer codex-own-token", request.path
        assert request.headers["chatgpt-account-id"] == "acct-user"
        assert not any(secret in str(request.headers) for secret in ISSUED_SECRETS)


def test_passthrough_mode_passes_usage_upstream(data_dir: Path, upstream: FakeUpstream) -> None:
    upstream.usage_documents["acct-user"] = usage_document(100.0, 300 * 60)
    with GatewayProcess(data_dir, upstream.url, "--passthrough-auth") as gw:
        answer = httpx.get(f"{gw.base}/backend-api/wham/usage", headers=OWN, timeout=10)
    assert answer.json()["rate_limit"]["primary_window"]["used_percent"] == 100.0


def test_render_is_the_inverse_of_parse() -> None:
    now = 1_000_000.0
    state = AccountState(usage={
        "10080": UsageWindow(7.4, now + 86400, now), "300": UsageWindow(41.6, now + 600, now),
        "60": UsageWindow(99.0, now - 1, now),  # past its reset: says nothing any more
    }, has_credits=False, credits_balance=0.0, reset_credits=2)  # fmt: skip
    document = render_usage(state, now, "pro")
    limits = document["rate_limit"]
    assert isinstance(limits, dict)
    assert limits["primary_window"] == {
        "used_percent": 42,
        "limit_window_seconds": 18000,
        "reset_after_seconds": 600,
        "reset_at": 1_000_600,
    }
    assert limits["tertiary_window"] is None and "email" not in document
    reading = parse_usage(document, now)
    assert sorted(reading.windows) == ["10080", "300"] and reading.plan_type == "pro"
    assert reading.reset_credits == 2 and reading.credits_balance == 0.0
