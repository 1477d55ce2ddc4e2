"""The real Codex CLI (each pinned version) directly against the fake backend's WebSocket, no
gateway: the fake speaks the protocol as Codex expects it, and Codex does on each answer what
CODEX-FACTS.md says (the gateway's failover relies on it)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.codex_harness import EXEC_ARGS, make_user_home, run_codex
from tests.fakes.upstream import Answer, FakeUpstream

pytestmark = pytest.mark.codex

ACCOUNT = "acct-user"


def direct_home(upstream: FakeUpstream, tmp_path: Path) -> Path:
    upstream.websockets = True
    home = make_user_home(tmp_path, upstream)
    config = home / "config.toml"
    config.write_text(
        f'openai_base_url = "{upstream.url}/backend-api/codex"\n' + config.read_text()
    )
    upstream.wham_account_id = None
    return home


def codex_exec(codex: Path, home: Path, tmp_path: Path) -> tuple[int, str]:
    result = run_codex([str(codex), *EXEC_ARGS, "say hi"], home, tmp_path, timeout=90)
    return result.returncode, result.stdout + result.stderr


def error_answer(code: str) -> Answer:
    error = {"type": "invalid_request_error", "code": code, "message": code}
    return Answer("status", status=400, body=json.dumps({"error": error}).encode())


def test_warm_up_then_incremental_follow_ups(
    upstream: FakeUpstream, tmp_path: Path, codex: Path
) -> None:
    home = direct_home(upstream, tmp_path)
    upstream.queue(ACCOUNT, Answer("tool"), Answer("tool"))
    code, output = codex_exec(codex, home, tmp_path)
    assert code == 0, output
    assert upstream.model_requests() == []
    [socket] = upstream.sockets
    frames = [f.json() for f in socket.client_frames()]
    assert frames[0]["generate"] is False and frames[0]["input"] == []
    assert frames[1]["previous_response_id"] == socket.response_ids[0]  # the warm-up's
    assert len(frames[1]["input"]) > 3
    assert len(frames) == 4 and len(socket.response_ids) == 4  # warm-up, 2 tool calls, answer
    for previous, frame in zip(socket.response_ids[1:3], frames[2:], strict=True):
        assert frame["previous_response_id"] == previous
        assert [i["type"] for i in frame["input"]] == ["function_call_output"]


def test_usage_limit_frame_is_fatal(upstream: FakeUpstream, tmp_path: Path, codex: Path) -> None:
    home = direct_home(upstream, tmp_path)
    upstream.queue(ACCOUNT, Answer("quota"))
    code, output = codex_exec(codex, home, tmp_path)
    assert code == 1
    assert "usage limit" in output and "try again at" in output
    assert len(upstream.sockets) == 1


@pytest.mark.parametrize(
    "answers",
    [
        [error_answer("websocket_connection_limit_reached")],
        [error_answer("previous_response_not_found")],
        [Answer("cut")],
        [Answer("sse_quota")],
        [error_answer("websocket_connection_limit_reached")] * 3,
    ],
    ids=["connection-limit", "previous-not-found", "cut", "response-failed", "three"],
)
def test_retryable_answers_reconnect_with_the_full_request(
    upstream: FakeUpstream, tmp_path: Path, codex: Path, answers: list[Answer]
) -> None:
    home = direct_home(upstream, tmp_path)
    upstream.queue(ACCOUNT, *answers)
    code, output = codex_exec(codex, home, tmp_path)
    assert code == 0, output
    assert len(upstream.sockets) == 1 + len(answers)
    for socket in upstream.sockets[1:]:
        [frame] = [f.json() for f in socket.client_frames()]  # no warm-up on a reconnect
        assert "previous_response_id" not in frame and len(frame["input"]) > 3
    # The first reconnect of a request is silent; each later one is counted on screen.
    assert "Reconnecting... 1/5" not in output
    assert ("Reconnecting... 2/5" in output) == (len(answers) > 1)


def test_handshake_429(upstream: FakeUpstream, tmp_path: Path, codex: Path) -> None:
    """Why the gateway never refuses an upgrade with 429: Codex shows the reset time only
    sometimes (both versions, at random: a race in Codex), else "exceeded retry limit"."""
    home = direct_home(upstream, tmp_path)
    resets_at = int(time.time()) + 7200
    error = {"type": "usage_limit_reached", "message": "The usage limit has been reached",
             "resets_at": resets_at, "resets_in_seconds": 7200}  # fmt: skip
    upstream.handshake_answers = [(429, json.dumps({"error": error}).encode())] * 10
    code, output = codex_exec(codex, home, tmp_path)
    assert code == 1
    assert "failed to connect to Responses WebSocket" in output
    assert (
        "exceeded retry limit, last status: 429" in output
        or "hit your usage limit" in output.replace("’", "'")
    ), output
