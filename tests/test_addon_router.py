"""AccountRouter, AuthInjector, StatusEndpoint, WebSocketRefusal with mitmproxy's test helpers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from mitmproxy.test import taddons, tflow, tutils

from cao.addons.gateway import Gateway
from cao.addons.router import (
    REDACTED_AUTH,
    AccountRouter,
    AuthInjector,
    StatusEndpoint,
    WebSocketRefusal,
)
from tests.helpers import write_account


@pytest.fixture
def gateway(data_dir: Path) -> Iterator[Gateway]:
    write_account(data_dir, "a")
    write_account(data_dir, "b")
    gw = Gateway()
    with taddons.context(gw) as tctx:
        tctx.configure(gw, cao_data_dir=str(data_dir))
        yield gw


def model_flow(**headers: str) -> tflow.HTTPFlow:
    request = tutils.treq(path=b"/backend-api/codex/responses", method=b"POST")
    request.headers["authorization"] = "Bearer codex-own"
    for k, v in headers.items():
        request.headers[k.replace("_", "-")] = v
    return tflow.tflow(req=request)


def token(data_dir: Path, name: str) -> str:
    return str(json.loads((data_dir / name / "auth.json").read_text())["tokens"]["access_token"])


async def test_router_sets_account_and_injector_the_token(gateway: Gateway, data_dir: Path) -> None:
    router, injector = AccountRouter(gateway), AuthInjector(gateway)
    flow = model_flow(session_id="s1")
    router.requestheaders(flow)
    # Between hooks (where mitmweb's view looks) the flow holds no token.
    assert flow.request.headers["authorization"] == REDACTED_AUTH
    assert flow.request.headers["chatgpt-account-id"] == "acct-a"
    await injector.request(flow)
    assert flow.request.headers["authorization"] == f"Bearer {token(data_dir, 'a')}"
    flow.response = tutils.tresp()
    router.responseheaders(flow)
    assert flow.request.headers["authorization"] == REDACTED_AUTH


async def test_moved_conversation_drops_turn_state(gateway: Gateway) -> None:
    router = AccountRouter(gateway)
    router.requestheaders(model_flow(session_id="s1"))
    gateway.live.update_state(lambda s: setattr(s.account("a"), "cooling_until", 4e9))
    flow = model_flow(session_id="s1", x_codex_turn_state="from-a")
    router.requestheaders(flow)
    assert flow.request.headers["chatgpt-account-id"] == "acct-b"
    assert "x-codex-turn-state" not in flow.request.headers
    assert gateway.live.store.load_state().switches[-1].reason == "quota"


async def test_passthrough_puts_codex_auth_back(data_dir: Path) -> None:
    write_account(data_dir, "a")
    gw = Gateway()
    with taddons.context(gw) as tctx:
        tctx.configure(gw, cao_data_dir=str(data_dir), cao_passthrough_auth=True)
        flow = model_flow()
        AccountRouter(gw).requestheaders(flow)
        assert flow.request.headers["authorization"] == REDACTED_AUTH
        await AuthInjector(gw).request(flow)
        assert flow.request.headers["authorization"] == "Bearer codex-own"
        assert "chatgpt-account-id" not in flow.request.headers


def test_no_usable_account_answers_429(gateway: Gateway) -> None:
    for name in ("a", "b"):
        gateway.live.update_state(lambda s, n=name: setattr(s.account(n), "cooling_until", 4e9))
    flow = model_flow()
    AccountRouter(gateway).requestheaders(flow)
    assert flow.response is not None and flow.response.status_code == 429
    assert json.loads(flow.response.content or b"")["error"]["resets_at"] == 4_000_000_000


def test_status_endpoint_and_websocket(gateway: Gateway) -> None:
    flow = tflow.tflow(req=tutils.treq(path=b"/__cao/status", method=b"GET"))
    StatusEndpoint(gateway).requestheaders(flow)
    assert flow.response is not None
    assert [a["name"] for a in json.loads(flow.response.content or b"")["accounts"]] == ["a", "b"]
    ws = model_flow(upgrade="websocket")
    WebSocketRefusal().requestheaders(ws)
    assert ws.response is not None and ws.response.status_code == 426


def test_bad_options_are_refused(data_dir: Path) -> None:
    from mitmproxy.exceptions import OptionsError

    gw = Gateway()
    with taddons.context(gw) as tctx:
        with pytest.raises(OptionsError):
            tctx.configure(gw, cao_data_dir="")
        with pytest.raises(OptionsError):
            tctx.configure(gw, cao_data_dir=str(data_dir), cao_switch_at=0)
        with pytest.raises(OptionsError):
            tctx.configure(gw, cao_data_dir=str(data_dir), cao_upstream="ftp://x")
