"""The real Codex CLI through the real gateway while the user pauses the account it is on: the
session's next turn goes to the next account, and the switch names the session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.codex_harness import (
    EXEC_ARGS,
    enable_shim,
    make_user_home,
    resume_args,
    run_codex,
    session_id,
)
from tests.fakes.upstream import FakeUpstream
from tests.gateway_proc import GatewayProcess
from tests.helpers import run_cao, write_account

pytestmark = pytest.mark.codex


def test_pausing_the_account_under_a_codex_session_moves_its_next_turn(
    data_dir: Path, upstream: FakeUpstream, tmp_path: Path, codex: Path
) -> None:
    write_account(data_dir, "a")
    write_account(data_dir, "b")
    home = make_user_home(tmp_path, upstream)
    with GatewayProcess(data_dir, upstream.url, "--strategy", "order") as gw:
        shim = str(enable_shim(data_dir, gw.url, tmp_path / "bin", codex))
        first = run_codex([shim, *EXEC_ARGS, "say hi"], home, tmp_path)
        assert first.returncode == 0, first.stderr
        assert "hello from acct-a" in first.stdout + first.stderr
        session = session_id(first.stdout + first.stderr)

        assert run_cao(data_dir, "pause", "a").returncode == 0
        again = run_codex([shim, *resume_args(session, "and again")], home, tmp_path)
        assert again.returncode == 0, again.stderr
        assert "hello from acct-b" in again.stdout + again.stderr
        gw.wait_for_log(r"switch a -> b \(paused\)")
        status = json.loads(run_cao(data_dir, "status", "--json", "--url", gw.url).stdout)
    turns = upstream.model_requests()
    assert [r.account_id for r in turns] == ["acct-a", "acct-b"]
    assert turns[1].headers["thread-id"] == turns[0].headers["thread-id"] == session
    assert upstream.rejected == []  # a's reasoning was taken out before b saw it
    assert {"from": "a", "to": "b", "reason": "paused", "conversation": session}.items() <= (
        status["switches"][0].items()
    )
    accounts = {a["name"]: a for a in status["accounts"]}
    assert accounts["a"]["status"] == "paused"
    assert accounts["b"]["conversations"] == [session]
