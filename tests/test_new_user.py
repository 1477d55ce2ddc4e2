"""Issue 23's defects, found by using cao as a new user would: one test (or a few) per item, each
failing on main before its fix. Real processes where the item is about them."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.upstream import Answer, FakeUpstream
from tests.gateway_proc import GatewayProcess
from tests.helpers import run_cao, wait_for_state, write_account

MODEL = "/backend-api/codex/responses"


def turn(gw: GatewayProcess, conversation: str) -> httpx.Response:
    return httpx.post(
        gw.base + MODEL,
        content=json.dumps({"input": [], "stream": True}),
        headers={"thread-id": conversation, "content-type": "application/json"},
        follow_redirects=True,
        timeout=10,
    )


def served_by(upstream: FakeUpstream) -> str | None:
    return upstream.model_requests()[-1].account_id


def gateway_view(gw: GatewayProcess) -> dict[str, dict[str, Any]]:
    document = httpx.get(gw.base + "/__cao/status", timeout=5).json()
    return {a["name"]: a for a in document["accounts"]}


# 1. A cao command wipes a running gateway's state (data loss) ----------------------------------


def rich_state(now: float) -> dict[str, Any]:
    """Four switches and every account's usage; a's 5h window is spent (until its reset)."""
    soon, later = now + 3 * 3600, now + 3 * 86400
    windows = {"a": (100, 40), "b": (20, 30), "c": (10, 5)}
    return {
        "version": 1,
        "accounts": {
            name: {
                "usage": {
                    "300": {"used_percent": five, "resets_at": soon, "updated_at": now - 60},
                    "10080": {"used_percent": week, "resets_at": later, "updated_at": now - 60},
                }
            }
            for name, (five, week) in windows.items()
        },
        "switches": [
            {"at": now - 400 + i, "from_account": "a", "to_account": "b", "reason": "quota"}
            for i in range(4)
        ],
    }


def holds_everything(document: dict[str, Any]) -> bool:
    accounts = document.get("accounts", {})
    return len(document.get("switches", [])) >= 4 and all(
        accounts.get(n, {}).get("usage", {}).get("300") for n in "abc"
    )


@pytest.mark.parametrize("first", ["cli", "gateway"])
@pytest.mark.parametrize("written_by_cao", [False, True], ids=["hand-written", "cao-written"])
def test_a_cao_command_never_wipes_a_running_gateways_state(
    data_dir: Path, upstream: FakeUpstream, first: str, written_by_cao: bool
) -> None:
    """Gateway running, cao-state.json damaged, then whichever of `cao list` and the gateway
    notices it first: the gateway's copy wins and nothing it held is lost. `cao-written`: the
    state was last written by cao (it has a last good copy); `hand-written`: it has none."""
    for name in "abc":
        write_account(data_dir, name)
    state_file = data_dir / "cao-state.json"
    state_file.write_text(json.dumps(rich_state(time.time())))
    with GatewayProcess(data_dir, upstream.url) as gw:
        assert gateway_view(gw)["a"]["usage"]["300"]["used_percent"] == 100  # it read the file
        if written_by_cao:  # a limit on c (the most headroom): the gateway writes the state
            upstream.queue("acct-c", Answer(kind="quota", resets_at=time.time() + 7200))
            turn(gw, "conv-0")
            wait_for_state(data_dir, lambda d: len(d.get("switches", [])) >= 5)
        state_file.write_text('{"accounts": {"a": {"usage": ')  # damaged by hand
        if first == "gateway":
            gateway_view(gw)
        listed = run_cao(data_dir, "list", "--json")
        assert listed.returncode == 0 and "Traceback" not in listed.stderr
        if first == "cli" and written_by_cao:  # the last good copy: nothing missing even here
            usage = {a["name"]: a["usage"] for a in json.loads(listed.stdout)}
            assert usage["a"]["300"]["used_percent"] == 100
        view = gateway_view(gw)
        assert view["a"]["usage"]["300"]["used_percent"] == 100
        assert view["c"]["usage"]["10080"]["used_percent"] == 5
        on_disk = wait_for_state(data_dir, holds_everything)
        assert len(on_disk["switches"]) == (5 if written_by_cao else 4), on_disk["switches"][-3:]
        # And it stays that way: another command reads it whole, the gateway keeps it.
        assert json.loads(run_cao(data_dir, "list", "--json").stdout)[0]["usage"]["300"]
        turn(gw, "conv-1")
        assert served_by(upstream) != "acct-a"  # a's 5h window is still spent
        gw.wait_for_log("cao-state.json")
    assert list(data_dir.glob("cao-state.json.corrupt-*"))  # the damaged file is kept aside
    assert holds_everything(json.loads(state_file.read_text()))


# 3. A damaged registry.json --------------------------------------------------------------------


def test_a_damaged_registry_without_a_good_copy_finds_the_homes_on_disk(data_dir: Path) -> None:
    for name in ("zed", "alice", "bob"):
        write_account(data_dir, name)
    (data_dir / "registry.json").write_text("{ damaged")  # and no .registry.json.good
    listed = run_cao(data_dir, "list", "--json")
    assert listed.returncode == 0
    assert [a["name"] for a in json.loads(listed.stdout)] == ["alice", "bob", "zed"]
    (line,) = listed.stderr.splitlines()  # one line says what happened
    assert "registry.json was damaged" in line and "rebuilt it from the 3 account homes" in line
    assert "registry.json.corrupt-" in line and "started empty" not in line
    assert json.loads((data_dir / "registry.json").read_text())["accounts"] == [
        "alice",
        "bob",
        "zed",
    ]
    again = run_cao(data_dir, "list")
    assert again.returncode == 0 and again.stderr == ""  # said once: it is repaired


def test_a_damaged_registry_with_a_good_copy_says_one_thing(data_dir: Path) -> None:
    write_account(data_dir, "a")
    write_account(data_dir, "b")
    assert run_cao(data_dir, "use", "b").returncode == 0  # cao writes it: a good copy is kept
    (data_dir / "registry.json").write_text("[")
    listed = run_cao(data_dir, "list", "--json")
    assert [a["name"] for a in json.loads(listed.stdout)] == ["b", "a"]
    (line,) = listed.stderr.splitlines()
    assert "restored the last copy cao wrote" in line and "started empty" not in line
