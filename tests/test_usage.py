"""Usage from the source (`/backend-api/wham/usage`): the parser, how readings are recorded, and
`cao status --refresh` against the fake backend, in a pipe and on a terminal."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cao.config.state import AccountState, UsageWindow
from cao.config.usage import apply_reading, parse_usage
from tests.fakes.upstream import FakeUpstream, usage_document
from tests.helpers import Terminal, cao_env, fake_token, run_cao, write_account

NOW = 1_800_000_000.0


def test_windows_are_classified_by_length_not_slot() -> None:
    # A plan whose primary slot holds a 30-day window, a weekly one second, a null third.
    document = usage_document(12.5, 30 * 86400, 40.0, 7 * 86400, balance="7.5")
    reading = parse_usage(document, NOW)
    assert set(reading.windows) == {"43200", "10080"}
    assert reading.windows["43200"].used_percent == 12.5
    assert reading.windows["10080"].used_percent == 40.0
    assert reading.credits_balance == 7.5 and reading.has_credits is True
    assert reading.reset_credits == 2 and reading.plan_type == "plus"


def test_null_windows_and_odd_values_are_dropped() -> None:
    document = usage_document(None, 300 * 60)
    document["rate_limit"]["tertiary_window"] = {"used_percent": "x", "limit_window_seconds": 1}
    document["credits"] = {"balance": "not a number", "unlimited": "yes"}
    reading = parse_usage(document, NOW)
    assert reading.windows == {} and reading.credits_balance is None
    assert reading.credits_unlimited is None
    with pytest.raises(ValueError):
        parse_usage([], NOW)


@given(st.recursive(st.none() | st.booleans() | st.floats() | st.text(), st.lists, max_leaves=8)
       | st.dictionaries(st.text(), st.none() | st.integers() | st.text()))  # fmt: skip
def test_any_answer_parses_or_says_why(document: Any) -> None:
    try:
        parse_usage(document, NOW)
    except ValueError:
        pass


def test_the_newer_reading_wins_per_window() -> None:
    account = AccountState(usage={"300": UsageWindow(90.0, NOW + 60, NOW + 10)})
    reading = parse_usage(usage_document(20.0, 300 * 60, 30.0, 10080 * 60), NOW)
    apply_reading(account, reading)
    assert account.usage["300"].used_percent == 90.0  # the gateway's header reading is newer
    assert account.usage["10080"].used_percent == 30.0 and account.usage_read_at == NOW


@pytest.fixture
def three(data_dir: Path, upstream: FakeUpstream) -> Path:
    write_account(data_dir, "a")
    write_account(data_dir, "b", exp=time.time() - 60)  # its token is refreshed first
    write_account(data_dir, "c")
    upstream.usage_documents["acct-a"] = usage_document(97.0, 300 * 60, 10.0, 10080 * 60)
    upstream.usage_documents["acct-b"] = usage_document(5.0, 30 * 86400, balance="12.5")
    upstream.revoked.add(
        json.loads((data_dir / "c" / "auth.json").read_text())["tokens"]["access_token"]
    )  # c's token is refused: one forced refresh, which the fake refuses too
    # Read in parallel: each refresh token gets its own answer, whatever the order.
    fresh = {"access_token": fake_token("fresh-b", time.time() + 86400), "refresh_token": "r"}
    upstream.oauth_by_token["SECRET-refresh-b-0"] = (200, fresh)
    upstream.oauth_by_token["SECRET-refresh-c-0"] = (400, {"error": "refresh_token_reused"})
    return data_dir


def refresh_args(upstream: FakeUpstream) -> list[str]:
    return ["--refresh", "--upstream", upstream.url, "--auth-url", upstream.url]


def test_refresh_reads_every_account_in_a_pipe(three: Path, upstream: FakeUpstream) -> None:
    started = time.monotonic()
    result = run_cao(three, "status", "--json", *refresh_args(upstream))
    assert time.monotonic() - started < 10
    assert result.returncode == 0, result.stderr
    accounts = {a["name"]: a for a in json.loads(result.stdout)["accounts"]}
    a_windows = {w["label"]: w["used_percent"] for w in accounts["a"]["windows"]}
    assert a_windows == {"5h": 97.0, "weekly": 10.0}
    assert [w["label"] for w in accounts["b"]["windows"]] == ["30d"]
    assert accounts["b"]["credits"]["balance"] == 12.5 and accounts["b"]["reset_credits"] == 2
    assert accounts["a"]["usage_read_at"] is not None and accounts["c"]["usage_read_at"] is None
    assert "c: no usage reading" in result.stderr and "\r" not in result.stderr
    # No model request was spent.
    assert upstream.model_requests() == []
    assert sum(1 for r in upstream.requests if r.path == "/oauth/token") == 2
    usage_calls = [r for r in upstream.requests if r.path.endswith("/wham/usage")]
    assert {r.account_id for r in usage_calls} == {"acct-a", "acct-b", "acct-c"}
    # The readings stay: a later `cao status` (no gateway, no refresh) shows them.
    later = json.loads(run_cao(three, "status", "--json").stdout)["accounts"]
    assert later[0]["windows"] and later[0]["usage_read_at"]


def test_refresh_on_a_terminal_shows_progress(three: Path, upstream: FakeUpstream) -> None:
    term = Terminal(
        three, *refresh_args(upstream), "--pretty", command="status", env=cao_env(three),
        rows=40, cols=100,
    )  # fmt: skip
    term.expect("reading usage 3/3")  # progress, on the terminal only
    term.expect("credits 12.5")
    assert term.close() == 0
    out = term.output.decode("utf-8", "replace")
    assert "30d" in out and "usage read" in out


# -- the gateway's polling -------------------------------------------------------------------------


def test_poll_schedule_is_polite_and_backs_off() -> None:
    from cao.addons.usagepoll import MAX_BACKOFF, MIN_GAP, PollSchedule

    schedule = PollSchedule()
    assert schedule.due("a", NOW)
    schedule.polled("a", NOW, ok=True)
    assert not schedule.due("a", NOW + MIN_GAP - 1)  # one request a minute, whatever asks
    assert schedule.due("a", NOW + MIN_GAP)
    delays = []
    at = NOW + MIN_GAP
    for _ in range(10):
        schedule.polled("a", at, ok=False)
        delays.append(schedule.not_before["a"] - at)
        at = schedule.not_before["a"]
    assert delays[:3] == [60.0, 120.0, 240.0] and max(delays) == MAX_BACKOFF
    schedule.polled("a", at, ok=True)
    assert schedule.due("a", at + MIN_GAP)


def test_the_gateway_reads_every_account_and_leaves_one_before_its_429(
    data_dir: Path, upstream: FakeUpstream
) -> None:
    import httpx

    from tests.gateway_proc import GatewayProcess

    write_account(data_dir, "a")
    write_account(data_dir, "b", exp=time.time() + 60)  # expires soon: refreshed before the poll
    upstream.oauth_answers.append(
        (200, {"access_token": fake_token("fresh-b", time.time() + 86400), "refresh_token": "r"})
    )
    upstream.usage_documents["acct-a"] = usage_document(97.0, 300 * 60)  # above --switch-at
    upstream.usage_documents["acct-b"] = usage_document(3.0, 30 * 86400)
    with GatewayProcess(
        data_dir, upstream.url, "--usage-interval", "1", "--auth-url", upstream.url
    ) as gw:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            polled = {r.account_id for r in upstream.requests if r.path.endswith("/wham/usage")}
            if polled == {"acct-a", "acct-b"}:
                break
            time.sleep(0.1)
        assert polled == {"acct-a", "acct-b"}
        time.sleep(2)  # more intervals pass: still one read per account (once a minute)
        reads = [r for r in upstream.requests if r.path.endswith("/wham/usage")]
        assert len(reads) == 2
        assert upstream.model_requests() == []  # no model quota spent
        assert sum(1 for r in upstream.requests if r.path == "/oauth/token") == 1
        answer = httpx.post(
            gw.base + "/backend-api/codex/responses", content=b"{}",
            headers={"session-id": "new"}, follow_redirects=True,
        )  # fmt: skip
        assert b"hello from acct-b" in answer.content  # a was left before any 429
        status = {a["name"]: a for a in httpx.get(gw.base + "/__cao/status").json()["accounts"]}
    assert status["a"]["usage"]["300"]["used_percent"] == 97.0
    assert [r.account_id for r in upstream.model_requests()] == ["acct-b"]
    listed = json.loads(run_cao(data_dir, "status", "--json").stdout)["accounts"]
    assert {a["name"]: [w["label"] for w in a["windows"]] for a in listed} == {
        "a": ["5h"],
        "b": ["30d"],
    }


# -- strategies ------------------------------------------------------------------------------------


def view(name: str, used: float, resets_in: float | None, index: int = 1) -> Any:
    from cao.config.auth import AccountAuth, LoginState
    from cao.config.pool import AccountView

    usage = {} if resets_in is None else {"300": UsageWindow(used, NOW + resets_in, NOW)}
    auth = AccountAuth(LoginState.LOGGED_IN, access_token="t")
    return AccountView(name, index == 0, Path("/x"), auth, AccountState(usage=usage))


def test_strategies_order_new_conversations() -> None:
    from cao.addons.routing import choose_account
    from cao.config.pool import Strategy, by_strategy

    views = [view("a", 50, 7200, 0), view("b", 10, 600), view("c", 0, None)]
    names = {s: [v.name for v in by_strategy(views, NOW, s)] for s in Strategy}
    assert names[Strategy.ORDER] == ["a", "b", "c"]
    assert names[Strategy.RESET_FIRST] == ["b", "a", "c"]  # b's quota expires first
    assert names[Strategy.HEADROOM] == ["c", "b", "a"]  # c has all of it left
    assert choose_account(views, NOW, strategy=Strategy.RESET_FIRST).account.name == "b"  # type: ignore[union-attr]
    # A conversation stays where it is: the strategy is for new ones.
    stay = choose_account(views, NOW, "a", strategy=Strategy.HEADROOM)
    assert stay.account is not None and stay.account.name == "a"


def test_simulation_runs_and_names_a_default() -> None:
    import subprocess
    import sys

    from cao.config.pool import DEFAULT_STRATEGY
    from tests.helpers import REPO

    result = subprocess.run(
        [sys.executable, "-m", "tests.sim.run"], cwd=REPO, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "| strategy | live conversations | blocked (h/week) |" in result.stdout
    assert "| turns that lost their cache |" in result.stdout
    assert f"least blocked, then least expired: {DEFAULT_STRATEGY.value}" in result.stdout
