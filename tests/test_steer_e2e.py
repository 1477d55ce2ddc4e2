"""Steering a running gateway (the real one, in front of the fake backend): pause, unpause and
cooldown clear take effect at the next request; --notify calls the desktop notifier."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes.upstream import Answer, FakeUpstream
from tests.gateway_proc import GatewayProcess
from tests.helpers import cao_env, run_cao, wait_for_state, write_account

MODEL = "/backend-api/codex/responses"


def turn(client: httpx.Client, conversation: str, turn_state: str | None = None) -> httpx.Response:
    headers = {
        "authorization": "Bearer codex-own-token",
        "session-id": conversation,
        "thread-id": conversation,
        "content-type": "application/json",
    }
    if turn_state:
        headers["x-codex-turn-state"] = turn_state
    return client.post(MODEL, content=json.dumps({"input": [], "stream": True}), headers=headers)


def served_by(upstream: FakeUpstream) -> str | None:
    return upstream.model_requests()[-1].account_id


def listed(data_dir: Path) -> dict[str, dict[str, object]]:
    return {a["name"]: a for a in json.loads(run_cao(data_dir, "list", "--json").stdout)}


@pytest.fixture
def accounts(data_dir: Path) -> Path:
    for name in ("a", "b", "c"):
        write_account(data_dir, name)
    return data_dir


@pytest.fixture
def gateway(accounts: Path, upstream: FakeUpstream) -> Iterator[GatewayProcess]:
    # Fallback order, so "where the next conversation goes" has one right answer.
    with GatewayProcess(accounts, upstream.url, "--strategy", "order") as gw:
        yield gw


def steer(data_dir: Path, *args: str) -> float:
    """Run a steering command; the moment it returned."""
    result = run_cao(data_dir, *args)
    assert result.returncode == 0, result.stderr
    return time.monotonic()


def test_pause_unpause_and_cooldown_clear_act_at_the_next_request(
    gateway: GatewayProcess, upstream: FakeUpstream, accounts: Path
) -> None:
    with httpx.Client(base_url=gateway.base, follow_redirects=True) as client:
        assert turn(client, "conv-1").status_code == 200
        assert served_by(upstream) == "acct-a"

        # Paused: the next new conversation goes elsewhere, at once.
        done = steer(accounts, "pause", "a")
        assert turn(client, "conv-2").status_code == 200
        took = time.monotonic() - done
        assert served_by(upstream) == "acct-b"
        assert took < 1.0, took
        assert listed(accounts)["a"]["status"] == "paused"
        doc = httpx.get(gateway.base + "/__cao/status").json()
        assert {a["name"]: a["status"] for a in doc["accounts"]}["a"] == "paused"

        # conv-1 finishes the turn it is in on a, and moves at its next turn.
        assert turn(client, "conv-1", turn_state="minted-by-a").status_code == 200
        assert served_by(upstream) == "acct-a"
        assert turn(client, "conv-1").status_code == 200
        assert served_by(upstream) == "acct-b"
        gateway.wait_for_log(r"switch a -> b \(paused\)")

        # Unpaused: a (first in order) takes new conversations again.
        done = steer(accounts, "unpause", "a")
        assert turn(client, "conv-3").status_code == 200
        assert served_by(upstream) == "acct-a" and time.monotonic() - done < 1.0
        assert listed(accounts)["a"]["status"] == "usable"

        # A usage limit cools a down; clearing it brings a back for the next conversation.
        upstream.queue("acct-a", Answer("quota", resets_at=int(time.time()) + 3600))
        assert turn(client, "conv-4").status_code == 200
        assert served_by(upstream) == "acct-b"
        wait_for_state(accounts, lambda s: s["accounts"].get("a", {}).get("cooling_until"))
        assert listed(accounts)["a"]["status"] == "cooling"
        done = steer(accounts, "cooldown", "clear", "a")
        assert turn(client, "conv-5").status_code == 200
        assert served_by(upstream) == "acct-a" and time.monotonic() - done < 1.0
        assert listed(accounts)["a"]["status"] == "usable"

    # The switch names the conversation it moved and why; cao status --json shows it.
    status = json.loads(run_cao(accounts, "status", "--json", "--url", gateway.url).stdout)
    moves = [(s["from"], s["to"], s["reason"], s["conversation"]) for s in status["switches"]]
    assert ("a", "b", "paused", "conv-1") in moves
    assert ("a", "b", "quota", "conv-4") in moves
    live = {a["name"]: a for a in status["accounts"]}
    assert live["a"]["conversations"] == ["conv-5", "conv-3"]
    assert live["b"]["requests_per_minute"] >= 3


def test_a_timed_pause_ends_by_itself(
    gateway: GatewayProcess, upstream: FakeUpstream, accounts: Path
) -> None:
    steer(accounts, "pause", "a", "--until", "2s")
    with httpx.Client(base_url=gateway.base, follow_redirects=True) as client:
        turn(client, "conv-1")
        assert served_by(upstream) == "acct-b"
        time.sleep(2.2)
        turn(client, "conv-2")
        assert served_by(upstream) == "acct-a"


NOTIFY_SEND = """#!/bin/sh
sleep {delay}
printf '%s\\n' "$*" >> {log}
"""


def stand_in_notifier(tmp_path: Path, delay: float = 0.0) -> tuple[Path, Path]:
    """A `notify-send` that records its arguments, one line a call."""
    bin_dir, log = tmp_path / "notify-bin", tmp_path / "notifications"
    bin_dir.mkdir()
    script = bin_dir / "notify-send"
    script.write_text(NOTIFY_SEND.format(delay=delay, log=log))
    script.chmod(0o755)
    return bin_dir, log


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def wait_for_calls(log: Path, count: int, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while len(calls(log)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return calls(log)


def test_notify_once_per_failover_and_once_when_all_are_limited(
    accounts: Path, upstream: FakeUpstream, tmp_path: Path
) -> None:
    bin_dir, log = stand_in_notifier(tmp_path, delay=3.0)
    env = cao_env(accounts, PATH=f"{bin_dir}:{os.environ['PATH']}")
    resets = int(time.time()) + 3600
    with (
        GatewayProcess(accounts, upstream.url, "--strategy", "order", "--notify", env=env) as gw,
        httpx.Client(base_url=gw.base, follow_redirects=True) as client,
    ):
        # A failover: one notification, run in the background (the notifier takes 3 s, the
        # answer does not wait for it).
        upstream.queue("acct-a", Answer("quota", resets_at=resets))
        started = time.monotonic()
        assert turn(client, "conv-1").status_code == 200
        assert time.monotonic() - started < 2.5
        assert calls(log) == []  # still running
        switched = "--app-name=cao cao: account switched a → b (usage limit)"
        assert wait_for_calls(log, 1) == [switched]
        # A second failover within the minute: none.
        upstream.queue("acct-b", Answer("quota", resets_at=resets + 60))
        assert turn(client, "conv-1").status_code == 200
        assert served_by(upstream) == "acct-c"
        # Every account limited: one notification with the earliest reset, then none more.
        upstream.queue("acct-c", Answer("quota", resets_at=resets + 120))
        assert turn(client, "conv-1").status_code == 429
        assert turn(client, "conv-2").status_code == 429
        seen = wait_for_calls(log, 2)
        back = time.strftime("%H:%M", time.localtime(resets))
        assert seen[1].startswith("--app-name=cao cao: every account is limited the first is ")
        assert f"back at {back}" in seen[1]
        time.sleep(3.5)  # anything queued would have run by now
        assert len(calls(log)) == 2
        assert not any(line.count("every account") > 1 for line in calls(log))


def test_notify_without_a_notifier_says_so_once(accounts: Path, upstream: FakeUpstream) -> None:
    env = cao_env(accounts, PATH="/usr/sbin:/sbin")  # no notify-send (nor osascript) there
    with GatewayProcess(accounts, upstream.url, "--notify", env=env) as gw:
        gw.wait_for_log(r"--notify: notify-send not found: no desktop notifications")
        upstream.queue("acct-a", Answer("quota", resets_at=int(time.time()) + 3600))
        with httpx.Client(base_url=gw.base, follow_redirects=True) as client:
            assert turn(client, "conv-1").status_code == 200
    assert gw.output.count("--notify") == 1
