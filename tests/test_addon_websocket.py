"""WebSocketRelay and its pure helpers, with mitmproxy's test helpers (the proof with the real
Codex is tests/test_websocket_e2e.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from mitmproxy.test import taddons, tflow, tutils
from mitmproxy.websocket import WebSocketMessage
from wsproto.frame_protocol import Opcode

from cao.addons.decision import FlowDecision
from cao.addons.gateway import Gateway
from cao.addons.router import AccountRouter
from cao.addons.usage import rate_limit_headers
from cao.addons.websocket import (
    RECONNECT_FRAME,
    SocketState,
    WebSocketRelay,
    frame_type,
    is_websocket_upgrade,
    response_id,
)
from cao.config.quota import usage_windows
from tests.fakes.upstream import reasoning_item


def test_frame_type_and_response_id() -> None:
    assert frame_type(b'{"type":"response.create","input":[]}') == "response.create"
    assert frame_type(b' { "type" : "error", "status": 429}') == "error"
    assert frame_type(b'{"status":429,"type":"error"}') is None  # not first: not guessed
    assert frame_type(b"\x00binary") is None
    created = b'{"type":"response.created","response":{"id":"resp_9","object":"response"}}'
    assert response_id(created) == "resp_9"
    assert is_websocket_upgrade({"upgrade": "WebSocket"})
    assert not is_websocket_upgrade({})


def test_rate_limits_event_reads_as_headers() -> None:
    event = {
        "type": "codex.rate_limits",
        "rate_limits": {
            "primary": {"used_percent": 42.5, "window_minutes": 300, "reset_at": 1800000000},
            "secondary": None,
        },
    }
    headers = rate_limit_headers(event)
    assert usage_windows(headers) == {"300": (42.5, 1800000000.0)}
    assert rate_limit_headers({"rate_limits": "junk"}) == {}
    assert rate_limit_headers({"rate_limits": {"primary": {"used_percent": True}}}) == {}


def upgrade_flow(conversation: str = "conv-1") -> tflow.HTTPFlow:
    flow = tflow.twebsocketflow(messages=False)
    flow.response = None  # as in requestheaders, before the 101
    flow.request.path = "/backend-api/codex/responses"
    flow.request.headers["thread-id"] = conversation
    return flow


@pytest.fixture
def relay(gateway: Gateway, data_dir: Path) -> Any:
    addon = WebSocketRelay(gateway)
    with taddons.context(addon, gateway) as tctx:
        tctx.configure(gateway, cao_data_dir=str(data_dir), cao_transport="auto")
        yield addon, tctx


def open_socket(gateway: Gateway, relay: WebSocketRelay, account: str = "a") -> tflow.HTTPFlow:
    flow = tflow.twebsocketflow(messages=False)
    flow.metadata["cao"] = FlowDecision(time.time(), account=account, conversation="conv-1")
    relay.websocket_start(flow)
    return flow


def send(relay: WebSocketRelay, flow: tflow.HTTPFlow, from_client: bool, doc: object) -> Any:
    assert flow.websocket is not None
    message = WebSocketMessage(Opcode.TEXT, from_client, json.dumps(doc).encode())
    flow.websocket.messages.append(message)
    relay.websocket_message(flow)
    return message


def test_transport_http_refuses_upgrades(relay: Any) -> None:
    addon, tctx = relay
    tctx.configure(addon, cao_transport="http")
    flow = upgrade_flow()
    addon.requestheaders(flow)
    assert flow.response is not None and flow.response.status_code == 426
    tctx.configure(addon, cao_transport="auto")
    flow = upgrade_flow()
    addon.requestheaders(flow)
    assert flow.response is None


def test_frames_of_a_conversation_that_stays_pass_untouched(gateway: Gateway, relay: Any) -> None:
    addon, _ = relay
    flow = open_socket(gateway, addon)
    frame = {"type": "response.create", "previous_response_id": "resp_1", "input": [{}]}
    message = send(addon, flow, True, frame)
    raw = message.content
    assert not message.dropped and message.content is raw
    state = flow.metadata["cao"].socket
    assert isinstance(state, SocketState) and state.requests == 1


def test_moved_conversation_frames_lose_foreign_blobs(gateway: Gateway, relay: Any) -> None:
    addon, _ = relay
    mine = reasoning_item("acct-a")
    gateway.history.learn("a", "conv-1", {"item": mine})  # a minted it; b serves now
    flow = open_socket(gateway, addon, "b")
    created = {"type": "response.created", "response": {"object": "response", "id": "resp_b1"}}
    send(addon, flow, False, created)
    assert flow.metadata["cao"].socket.response_ids == {"resp_b1"}
    frame = {"type": "response.create", "input": [{"role": "user", "content": "hi"}, mine]}
    message = send(addon, flow, True, frame)
    assert json.loads(message.content)["input"] == [{"role": "user", "content": "hi"}]
    # A response id this socket never produced is never forwarded (a moved conversation).
    injected: list[bytes] = []
    addon.inject = lambda _flow, frame: injected.append(frame)
    foreign = {"type": "response.create", "previous_response_id": "resp_a9", "input": []}
    dropped = send(addon, flow, True, foreign)
    assert dropped.dropped
    assert [json.loads(f)["error"]["code"] for f in injected] == ["previous_response_not_found"]


def test_usage_limit_frame_before_output_becomes_a_reconnect(gateway: Gateway, relay: Any) -> None:
    addon, _ = relay
    flow = open_socket(gateway, addon)
    send(addon, flow, True, {"type": "response.create", "input": []})
    error = {
        "type": "error",
        "status": 429,
        "error": {"type": "usage_limit_reached", "resets_at": int(time.time()) + 3600},
        "headers": {},
    }
    message = send(addon, flow, False, error)
    assert message.content == RECONNECT_FRAME
    assert not gateway.live.view("a").usable(time.time())  # a cools, as over HTTP
    late = send(addon, flow, False, {"type": "response.created", "response": {"id": "x"}})
    assert late.dropped  # nothing more of this socket reaches Codex


def test_usage_limit_after_output_reaches_codex(gateway: Gateway, relay: Any) -> None:
    addon, _ = relay
    flow = open_socket(gateway, addon)
    send(addon, flow, True, {"type": "response.create", "input": []})
    send(addon, flow, False, {"type": "response.output_text.delta", "delta": "x"})
    error = {"type": "error", "status": 429, "error": {"type": "usage_limit_reached"}}
    message = send(addon, flow, False, error)
    assert json.loads(message.content) == error


def test_last_account_limited_gets_the_earliest_reset(
    gateway: Gateway, relay: Any, data_dir: Path
) -> None:
    from cao.config.quota import QuotaKind, QuotaSignal

    addon, _ = relay
    soon = time.time() + 600
    gateway.live.mark_limited("b", QuotaSignal(QuotaKind.USAGE_LIMIT, soon))
    flow = open_socket(gateway, addon)
    send(addon, flow, True, {"type": "response.create", "input": []})
    error = {
        "type": "error",
        "status": 429,
        "error": {"type": "usage_limit_reached", "resets_at": int(time.time()) + 7200},
    }
    message = send(addon, flow, False, error)
    frame = json.loads(message.content)
    assert frame["status"] == 429 and frame["error"]["type"] == "usage_limit_reached"
    assert frame["error"]["resets_at"] == int(soon) + 1 or frame["error"]["resets_at"] == int(soon)


def test_router_opens_an_exhausted_upgrade_on_the_account_back_soonest(
    gateway: Gateway,
) -> None:
    from cao.config.quota import QuotaKind, QuotaSignal

    now = time.time()
    gateway.live.mark_limited("a", QuotaSignal(QuotaKind.USAGE_LIMIT, now + 7200))
    gateway.live.mark_limited("b", QuotaSignal(QuotaKind.USAGE_LIMIT, now + 600))
    import asyncio

    router = AccountRouter(gateway)
    upgrade = upgrade_flow()
    asyncio.run(router.requestheaders(upgrade))
    decision = upgrade.metadata["cao"]
    assert upgrade.response is None and decision.account == "b" and decision.exhausted
    post = tflow.tflow(req=tutils.treq(path=b"/backend-api/codex/responses", method=b"POST"))
    asyncio.run(router.requestheaders(post))
    assert post.response is not None and post.response.status_code == 429


def test_rate_limit_with_no_account_left_passes(gateway: Gateway, relay: Any) -> None:
    from cao.config.quota import QuotaKind, QuotaSignal

    addon, _ = relay
    gateway.live.mark_limited("b", QuotaSignal(QuotaKind.USAGE_LIMIT, time.time() + 600))
    flow = open_socket(gateway, addon)
    send(addon, flow, True, {"type": "response.create", "input": []})
    error = {
        "type": "error",
        "status": 429,
        "error": {"type": "rate_limit_exceeded", "message": "slow down"},
        "headers": {"retry-after": "2"},
    }
    message = send(addon, flow, False, error)
    assert json.loads(message.content) == error  # Codex waits Retry-After and re-sends


def test_an_internal_error_ends_the_socket_as_codex_retries(
    gateway: Gateway, relay: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    addon, _ = relay
    flow = open_socket(gateway, addon)

    def broken(*args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(addon, "server_frame", broken)
    message = send(addon, flow, False, {"type": "response.created", "response": {"id": "r"}})
    assert message.content == RECONNECT_FRAME
    assert flow.metadata["cao"].socket.ended.startswith("internal error")
