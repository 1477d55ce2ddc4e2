"""A conversation that moves to another account keeps working, with the real Codex CLI (each
pinned version) through the real gateway, against a fake backend that rejects encrypted content
minted by another account exactly as the real one does.

Each test ends with Codex exiting 0 with account b's answer; the fake's log says how many 400s
it took: none where the gateway knew who minted what, one where only the reactive path could
tell (the gateway restarted between two turns)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.codex_harness import (
    EXEC_ARGS,
    enable_shim,
    make_user_home,
    resume_args,
    run_codex,
    session_id,
)
from tests.fakes.upstream import Answer, FakeUpstream
from tests.gateway_proc import GatewayProcess
from tests.helpers import write_account

pytestmark = pytest.mark.codex


class World:
    """Accounts a and b, Codex's own home, and the gateway (restartable) behind the shim."""

    def __init__(self, data_dir: Path, upstream: FakeUpstream, tmp: Path, codex: Path) -> None:
        write_account(data_dir, "a")
        write_account(data_dir, "b")
        self.data_dir, self.upstream, self.codex = data_dir, upstream, codex
        self.home = make_user_home(tmp, upstream)
        self.bin, self.work = tmp / "bin", tmp
        self.gateway: GatewayProcess | None = None
        self.logs: list[str] = []

    def start(self, *args: str) -> GatewayProcess:
        self.gateway = GatewayProcess(self.data_dir, self.upstream.url, *args).start()
        self.shim = enable_shim(self.data_dir, self.gateway.url, self.bin, self.codex)
        return self.gateway

    def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
            self.logs.append(self.gateway.output)
            self.gateway = None

    def codex_run(self, args: list[str]) -> str:
        result = run_codex([str(self.shim), *args], self.home, self.work)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        return output

    def status(self) -> dict[str, object]:
        assert self.gateway is not None
        return dict(httpx.get(self.gateway.base + "/__cao/status").json()["history"])


@pytest.fixture
def world(data_dir: Path, upstream: FakeUpstream, tmp_path: Path, codex: Path) -> World:
    w = World(data_dir, upstream, tmp_path, codex)
    yield w  # type: ignore[misc]
    w.stop()


def input_types(request: object) -> list[str]:
    return [i.get("type") for i in request.json()["input"]]  # type: ignore[attr-defined]


def test_second_turn_after_a_hits_its_limit(world: World, upstream: FakeUpstream) -> None:
    """Turn 1 on a (reasoning minted by a); a is limited; `codex exec resume` sends the whole
    history for turn 2: the gateway moves it to b without a's reasoning, at no extra cost."""
    world.start()
    first = world.codex_run([*EXEC_ARGS, "first task"])
    upstream.queue("acct-a", Answer("quota"))
    second = world.codex_run(resume_args(session_id(first), "second task"))
    assert "hello from acct-b" in second
    turns = upstream.model_requests()
    assert [r.account_id for r in turns] == ["acct-a", "acct-a", "acct-b"]
    moved = turns[-1]
    assert upstream.blob_accounts(moved) == []
    texts = json.dumps(moved.json()["input"])
    assert "first task" in texts and "second task" in texts  # the conversation went along
    assert upstream.rejected == []
    assert world.status()["rewrites"] == 1


@pytest.mark.parametrize(
    ("mode", "rejection"),
    [("redirect", "code"), ("inline", "code"), ("redirect", "null_code"), ("inline", "stream")],
)
def test_second_turn_after_a_gateway_restart(
    world: World, upstream: FakeUpstream, mode: str, rejection: str
) -> None:
    """The gateway that saw turn 1 is gone: the new one cannot know who minted a's reasoning,
    so b refuses it once (in each shape the backend uses); the gateway sends the turn again
    without it, and strips that conversation up front from then on."""
    upstream.rejection = rejection
    world.start("--retry-mode", mode)
    first = world.codex_run([*EXEC_ARGS, "first task"])
    world.stop()
    world.start("--retry-mode", mode)
    upstream.queue("acct-a", Answer("quota"))
    session = session_id(first)
    second = world.codex_run(resume_args(session, "second task"))
    assert "hello from acct-b" in second
    assert len(upstream.rejected) == 1
    assert upstream.rejected[0].account_id == "acct-b"
    accepted = upstream.model_requests()[-1]
    assert accepted.account_id == "acct-b" and accepted.rejected is None
    assert upstream.blob_accounts(accepted) == []
    assert "first task" in json.dumps(accepted.json()["input"])
    # Turn 3: b's own reasoning stays, a's is stripped before it goes: no second refusal.
    third = world.codex_run(resume_args(session, "third task"))
    assert "hello from acct-b" in third
    assert len(upstream.rejected) == 1
    assert upstream.blob_accounts(upstream.model_requests()[-1]) == ["acct-b"]
    history = world.status()
    assert history["rejections_retried"] == 1 and history["rejections_passed"] == 0


def test_a_second_refusal_reaches_codex(world: World, upstream: FakeUpstream) -> None:
    """If b still refuses the stripped history, the gateway does not loop: Codex gets the 400
    (and fails the turn, as it would without cao)."""
    world.start()
    first = world.codex_run([*EXEC_ARGS, "first task"])
    world.stop()
    world.start()
    upstream.queue("acct-a", Answer("quota"))
    message = "The encrypted content gAAA…xyz could not be verified."
    body = {"error": {"type": "invalid_request_error", "code": None, "message": message}}
    refusal = Answer("status", status=400, body=json.dumps(body).encode())
    upstream.queue("acct-b", refusal)
    result = run_codex(
        [str(world.shim), *resume_args(session_id(first), "second task")], world.home, world.work
    )
    assert result.returncode != 0
    assert "could not be verified" in result.stdout + result.stderr
    posts = [r for r in upstream.model_requests() if r.account_id == "acct-b"]
    assert len(posts) == 2  # the original and one stripped re-send; no loop
    assert world.status()["rejections_passed"] == 1


def test_compressed_streams_are_read_for_limits_and_blobs(
    world: World, upstream: FakeUpstream, codex: Path
) -> None:
    """Codex 0.171 offers zstd and the backend may take the offer: the gateway reads the
    decoded events (the blobs a minted, a usage limit inside a 200 stream) while Codex gets
    the compressed bytes as sent. (0.169 offers no compression: its answers stay plain.)"""
    upstream.compress = True
    world.start()
    first = world.codex_run([*EXEC_ARGS, "first task"])
    upstream.queue("acct-a", Answer("sse_quota"))
    second = world.codex_run(resume_args(session_id(first), "second task"))
    assert "hello from acct-b" in second
    turns = upstream.model_requests()
    assert [r.account_id for r in turns] == ["acct-a", "acct-a", "acct-b"]
    offers_zstd = "zstd" in turns[0].headers.get("accept-encoding", "")
    assert all(r.compressed_answer == offers_zstd for r in turns)
    assert offers_zstd == ("0.169.0" not in str(codex))
    assert upstream.blob_accounts(turns[-1]) == []  # learned from the compressed stream
    assert upstream.rejected == []


def test_compacted_conversation_stays_then_moves(world: World, upstream: FakeUpstream) -> None:
    """Remote compaction (Codex 0.169+: a turn ending in `compaction_trigger`) leaves a
    compaction item minted by a in the history, the summary of everything before it. The
    conversation stays on a past the switch threshold (a new one goes to b); once a is
    limited, the turn still succeeds on b without it, and the gateway says what was lost."""
    config = world.home / "config.toml"
    config.write_text("model_auto_compact_token_limit = 5000\n" + config.read_text())
    upstream.usage_tokens = 9_000_000  # every turn reports a huge context: Codex compacts
    gw = world.start()
    first = world.codex_run([*EXEC_ARGS, "first task"])
    session = session_id(first)
    upstream.usage_headers["acct-a"] = {
        "x-codex-primary-used-percent": "97",  # above --switch-at (95)
        "x-codex-primary-window-minutes": "300",
        "x-codex-primary-reset-at": "4102444800",
    }
    world.codex_run(resume_args(session, "second task"))  # compacts on a, then answers
    assert upstream.compactions >= 1
    assert "compaction" in input_types(upstream.model_requests()[-1])
    third = world.codex_run(resume_args(session, "third task"))
    assert "hello from acct-a" in third  # pinned by its compaction, though a is at 97 %
    other = world.codex_run([*EXEC_ARGS, "another conversation"])
    assert "hello from acct-b" in other  # new conversations leave a
    upstream.queue("acct-a", Answer("quota"))
    fourth = world.codex_run(resume_args(session, "fourth task"))
    assert "hello from acct-b" in fourth
    moved = upstream.model_requests()[-1]
    assert moved.account_id == "acct-b" and "compaction" not in input_types(moved)
    assert "fourth task" in json.dumps(moved.json()["input"])
    assert upstream.rejected == []
    gw.wait_for_log(r"conversation \S+ lost its compacted history: account a made the summary")
    assert world.status()["compaction_lost"] == 1
