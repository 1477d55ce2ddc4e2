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
    upstream.oauth_answers.append(
        (200, {"access_token": fake_token("fresh-b", time.time() + 86400), "refresh_token": "r"})
    )
    upstream.oauth_answers.append((400, {"error": "refresh_token_reused"}))
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
