"""Codex's WebSocket transport through the real gateway, with the real Codex CLI (each pinned
version) against the fake backend's WebSocket (tests/fakes/ws_upstream.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from tests.codex_harness import EXEC_ARGS, enable_shim, make_user_home, resume_args, run_codex
from tests.codex_harness import session_id as session_of
from tests.fakes.upstream import Answer, FakeUpstream
from tests.gateway_proc import GatewayProcess
from tests.helpers import write_account

pytestmark = pytest.mark.codex

USAGE_LIMIT_WORDS = ("usage limit", "You've hit", "You’ve hit", "Quota exceeded")


class World:
    """Accounts a and b, Codex's own home, the gateway (restartable) behind the shim."""

    def __init__(self, data_dir: Path, upstream: FakeUpstream, tmp: Path, codex: Path) -> None:
        upstream.websockets = True
        write_account(data_dir, "a")
        write_account(data_dir, "b")
        self.data_dir, self.upstream, self.codex = data_dir, upstream, codex
        self.home = make_user_home(tmp, upstream)
        self.bin, self.work = tmp / "bin", tmp
        self.gateway: GatewayProcess | None = None

    def start(self, *args: str) -> GatewayProcess:
        self.gateway = GatewayProcess(self.data_dir, self.upstream.url, *args).start()
        self.shim = enable_shim(self.data_dir, self.gateway.url, self.bin, self.codex)
        return self.gateway

    def stop(self) -> str:
        output = ""
        if self.gateway is not None:
            self.gateway.stop()
            output = self.gateway.output
            self.gateway = None
        return output

    def codex_run(self, args: list[str], code: int = 0) -> str:
        result = run_codex([str(self.shim), *args], self.home, self.work, timeout=90)
        output = result.stdout + result.stderr
        assert result.returncode == code, output
        return output


@pytest.fixture
def world(data_dir: Path, upstream: FakeUpstream, tmp_path: Path, codex: Path) -> World:
    w = World(data_dir, upstream, tmp_path, codex)
    yield w  # type: ignore[misc]
    w.stop()


def no_limit_text(output: str) -> None:
    assert not any(word in output for word in USAGE_LIMIT_WORDS), output


def test_plain_turn_goes_over_the_socket(world: World, upstream: FakeUpstream) -> None:
    gw = world.start()
    output = world.codex_run([*EXEC_ARGS, "say hi"])
    gw.wait_for_log(r"websocket account=a conversation=\S+ requests=1 ")
    assert "hello from acct-a" in output
    assert upstream.model_requests() == []  # no HTTP POST: the turn went over the socket
    assert len(upstream.sockets) == 1
    socket = upstream.sockets[0]
    assert socket.account_id == "acct-a"
    assert socket.token is not None and socket.token.startswith("eyJ")  # a's pool token
    assert [f.json().get("generate") for f in socket.client_frames()] == [False, None]
    assert socket.server_types()[-1] == "response.completed"
    assert "Falling back" not in output and "ERROR" not in output


def test_ten_tool_calls_stay_incremental(world: World, upstream: FakeUpstream) -> None:
    """Follow-ups carry previous_response_id and only the new item, through the gateway
    untouched (byte for byte what Codex sent)."""
    upstream.queue("acct-a", *[Answer("tool") for _ in range(10)])
    world.start()
    output = world.codex_run([*EXEC_ARGS, "use the clock ten times"])
    assert "hello from acct-a" in output
    assert upstream.model_requests() == []
    assert len(upstream.sockets) == 1
    frames = [f.json() for f in upstream.sockets[0].client_frames()]
    follow_ups = frames[2:]
    assert len(follow_ups) == 10
    ids = upstream.sockets[0].response_ids
    for frame in follow_ups:
        assert frame["previous_response_id"] in ids
        assert [i["type"] for i in frame["input"]] == ["function_call_output"]


@pytest.mark.parametrize("kind", ["quota", "rate", "sse_quota"])
def test_usage_limit_frame_fails_over_to_b(world: World, upstream: FakeUpstream, kind: str) -> None:
    """a's usage limit (an error frame; a rate limit; a `response.failed`) arrives on a tool
    call's follow-up (mid-turn): Codex never sees it, reconnects, and the turn completes on b
    without a's blobs."""
    upstream.queue("acct-a", Answer("tool"), Answer(kind))
    gw = world.start()
    output = world.codex_run([*EXEC_ARGS, "use the clock"])
    gw.wait_for_log(r"websocket failover \S+: account a hit its .*; Codex reconnects to b")
    gw.wait_for_log(r"history \S+: a -> b, removed 1 reasoning")
    assert "hello from acct-b" in output
    no_limit_text(output)
    assert "Reconnecting" not in output
    assert [s.account_id for s in upstream.sockets] == ["acct-a", "acct-b"]
    on_b = upstream.ws_requests()[-1]
    assert on_b.account_id == "acct-b"
    assert upstream.blob_accounts(on_b) == []  # nothing of a's on b
    body = on_b.json()
    assert "previous_response_id" not in body
    types = [i.get("type") for i in body["input"]]
    assert "function_call" in types and "function_call_output" in types
    assert upstream.rejected == []
    assert upstream.model_requests() == []


def test_two_failovers_in_one_request(world: World, upstream: FakeUpstream, data_dir: Path) -> None:
    """a and b both limited: two reconnects in a row, the turn completes on c. (Codex counts
    each reconnect of one request: the second prints "Reconnecting... 2/5", measured.)"""
    write_account(data_dir, "c")
    upstream.queue("acct-a", Answer("quota"))
    upstream.queue("acct-b", Answer("quota"))
    world.start()
    output = world.codex_run([*EXEC_ARGS, "say hi"])
    assert "hello from acct-c" in output
    no_limit_text(output)
    assert [s.account_id for s in upstream.sockets] == ["acct-a", "acct-b", "acct-c"]


def test_connection_limit_passes_through_and_stays(world: World, upstream: FakeUpstream) -> None:
    """The backend's own connection limit reaches Codex (it reconnects and re-sends in full);
    the conversation stays on its account."""
    upstream.queue("acct-a", *[Answer("tool") for _ in range(3)])
    upstream.ws_max_age = 0.05
    world.start()
    output = world.codex_run([*EXEC_ARGS, "use the clock"])
    assert "hello from acct-a" in output
    assert {s.account_id for s in upstream.sockets} == {"acct-a"}
    assert len(upstream.sockets) > 1


def test_revoked_token_on_the_handshake(
    world: World, upstream: FakeUpstream, data_dir: Path
) -> None:
    """a's token was revoked elsewhere and its refresh fails: the upgrade's 401 never reaches
    Codex (it would spend Codex's own refresh token); the turn completes on b over the socket."""
    auth = json.loads((data_dir / "a" / "auth.json").read_text())
    upstream.revoked = {auth["tokens"]["access_token"]}
    gw = world.start("--auth-url", upstream.url)
    output = world.codex_run([*EXEC_ARGS, "say hi"])
    gw.wait_for_log(r"GET /backend-api/codex/responses account=a 307")
    assert "hello from acct-b" in output
    assert "Falling back" not in output and "Reconnecting" not in output
    refreshes = [r.body for r in upstream.requests if r.path.endswith("/oauth/token")]
    assert not any(b"refresh-user" in body for body in refreshes)  # Codex kept its own login
    assert upstream.sockets[-1].account_id == "acct-b"


def test_all_accounts_exhausted_says_when(world: World, upstream: FakeUpstream) -> None:
    soon, later = time.time() + 2 * 3600, time.time() + 5 * 3600
    upstream.queue("acct-a", Answer("quota", resets_at=later))
    upstream.queue("acct-b", Answer("quota", resets_at=soon))
    gw = world.start()
    output = world.codex_run([*EXEC_ARGS, "say hi"], code=1)
    gw.wait_for_log("every account is limited")
    assert "usage limit" in output
    expected = time.strftime("%-I:%M %p", time.localtime(soon + 1)).lstrip("0")
    assert f"try again at {expected}" in output.lower().replace("am", "AM").replace("pm", "PM")
    # A new Codex process: the upgrade still opens (to the account back soonest) and its
    # request is answered by the gateway with the same reset.
    before = len(upstream.ws_requests())
    again = world.codex_run([*EXEC_ARGS, "say hi"], code=1)
    assert "usage limit" in again and len(upstream.ws_requests()) == before


@pytest.mark.parametrize("rejection", ["code", "null_code", "stream"])
def test_resumed_after_a_gateway_restart(
    world: World, upstream: FakeUpstream, rejection: str
) -> None:
    """The new gateway cannot know who minted turn 1's reasoning: b refuses it (an error frame
    with or without its code, or `response.failed`); the gateway has Codex re-send on a new
    socket, stripped, and the turn completes."""
    upstream.rejection = rejection
    world.start()
    first = world.codex_run([*EXEC_ARGS, "first task"])
    world.stop()
    gw = world.start()
    upstream.queue("acct-a", Answer("quota"))
    second = world.codex_run(resume_args(session_of(first), "second task"))
    gw.wait_for_log(r"refused encrypted content of unknown origin")
    assert "hello from acct-b" in second
    no_limit_text(second)
    assert len(upstream.rejected) == 1 and upstream.rejected[0].account_id == "acct-b"
    accepted = upstream.ws_requests()[-1]
    assert accepted.account_id == "acct-b" and accepted.rejected is None
    assert upstream.blob_accounts(accepted) == []
    assert "first task" in json.dumps(accepted.json()["input"])


def test_transport_http_falls_back_at_once(world: World, upstream: FakeUpstream) -> None:
    world.start("--transport", "http")
    output = world.codex_run([*EXEC_ARGS, "say hi"])
    assert "hello from acct-a" in output
    assert upstream.sockets == []
    assert len(upstream.model_requests()) == 1
    assert "Reconnecting" not in output


def test_rate_limits_event_feeds_usage(world: World, upstream: FakeUpstream) -> None:
    """The in-frame `codex.rate_limits` event is read as the HTTP x-codex-* headers are."""
    reset = int(time.time()) + 1800
    upstream.usage_headers["acct-a"] = {
        "x-codex-primary-used-percent": "42",
        "x-codex-primary-window-minutes": "300",
        "x-codex-primary-reset-at": str(reset),
    }
    gw = world.start()
    world.codex_run([*EXEC_ARGS, "say hi"])
    assert "codex.rate_limits" in upstream.sockets[0].server_types()
    deadline = time.time() + 5
    usage: dict[str, object] = {}
    while time.time() < deadline:
        accounts = httpx.get(gw.base + "/__cao/status").json()["accounts"]
        usage = {a["name"]: a["usage"] for a in accounts}
        if usage.get("a"):
            break
        time.sleep(0.1)
    assert usage["a"] == {"300": {"used_percent": 42.0, "resets_at": float(reset)}}


def test_mitmweb_shows_the_socket_without_a_token(
    world: World, upstream: FakeUpstream, data_dir: Path
) -> None:
    """--web: the handshake is a flow like any other (its token redacted) and the socket's
    messages are shown, none with a token."""
    import re

    from tests.test_access_e2e import pool_tokens
    from tests.test_refresh_e2e import free_port

    upstream.queue("acct-a", Answer("tool"))
    web_port = free_port()
    gw = world.start("--web", "--web-port", str(web_port))
    world.codex_run([*EXEC_ARGS, "use the clock"])
    token = re.search(r"token=(\w+)", gw.wait_for_log("Web server listening at"))
    assert token is not None
    with httpx.Client(
        base_url=f"http://127.0.0.1:{web_port}",
        headers={"authorization": f"Bearer {token.group(1)}"},
        timeout=10,
    ) as web:
        flows = web.get("/flows").json()
        sockets = [f for f in flows if f.get("websocket")]
        assert len(sockets) == 1
        seen = [web.get("/flows").text, web.get(f"/flows/{sockets[0]['id']}").text]
        messages = web.get(f"/flows/{sockets[0]['id']}/messages/content/auto.json")
        assert messages.status_code == 200, messages.text
        seen.append(messages.text)
    text = "\n".join(seen)
    assert "response.create" in messages.text and "function_call_output" in messages.text
    assert "redacted by cao" in text
    for secret in pool_tokens(data_dir):
        assert secret not in text


def test_compacted_conversation_over_the_socket(
    world: World, upstream: FakeUpstream, data_dir: Path
) -> None:
    """Remote compaction over the socket (a `response.create` ending in `compaction_trigger`):
    the gateway learns a's compaction item from the frames, keeps the conversation on a past
    --switch-at (usage read from `codex.rate_limits` events), and when a is limited the turn
    completes on b without it, the loss logged."""
    config = world.home / "config.toml"
    config.write_text("model_auto_compact_token_limit = 5000\n" + config.read_text())
    upstream.usage_tokens = 9_000_000  # every turn reports a huge context: Codex compacts
    gw = world.start()
    first = world.codex_run([*EXEC_ARGS, "first task"])
    session = session_of(first)
    upstream.usage_headers["acct-a"] = {
        "x-codex-primary-used-percent": "97",  # above --switch-at (95)
        "x-codex-primary-window-minutes": "300",
        "x-codex-primary-reset-at": "4102444800",
    }
    world.codex_run(resume_args(session, "second task"))  # compacts on a, then answers
    assert upstream.compactions >= 1
    third = world.codex_run(resume_args(session, "third task"))
    assert "hello from acct-a" in third  # pinned by its compaction, though a is at 97 %
    other = world.codex_run([*EXEC_ARGS, "another conversation"])
    assert "hello from acct-b" in other  # new conversations leave a
    upstream.queue("acct-a", Answer("quota"))
    fourth = world.codex_run(resume_args(session, "fourth task"))
    assert "hello from acct-b" in fourth
    no_limit_text(fourth)
    moved = upstream.ws_requests()[-1]
    types = [i.get("type") for i in moved.json()["input"]]
    assert moved.account_id == "acct-b" and "compaction" not in types
    assert "fourth task" in json.dumps(moved.json()["input"])
    assert upstream.rejected == []
    assert upstream.model_requests() == []
    gw.wait_for_log(r"conversation \S+ lost its compacted history: account a made the summary")
