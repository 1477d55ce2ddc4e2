"""AccountRouter, AuthInjector, StatusEndpoint with mitmproxy's test helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mitmproxy.test import taddons, tflow, tutils
from mitmproxy.tools.web.app import flow_to_json

from cao.addons.gateway import Gateway
from cao.addons.redact import REDACTED_AUTH
from cao.addons.router import AccountRouter, StatusEndpoint
from tests.helpers import write_account


def model_flow(**headers: str) -> tflow.HTTPFlow:
    request = tutils.treq(path=b"/backend-api/codex/responses", method=b"POST")
    request.headers["authorization"] = "Bearer codex-own"
    for k, v in headers.items():
        request.headers[k.replace("_", "-")] = v
    return tflow.tflow(req=request)


def token(data_dir: Path, name: str) -> str:
    return str(json.loads((data_dir / name / "auth.json").read_text())["tokens"]["access_token"])


def wire_value(flow: tflow.HTTPFlow, name: bytes = b"authorization") -> bytes:
    """What goes upstream: mitmproxy joins the raw field bytes (see redact.WireSecret)."""
    return bytes(flow.request.headers).split(name + b": ", 1)[1].split(b"\r\n", 1)[0]


async def test_router_sends_token_but_shows_it_redacted(gateway: Gateway, data_dir: Path) -> None:
    router = AccountRouter(gateway)
    flow = model_flow(session_id="s1")
    await router.requestheaders(flow)
    assert wire_value(flow) == f"Bearer {token(data_dir, 'a')}".encode()
    assert flow.request.headers["chatgpt-account-id"] == "acct-a"
    # Everything that turns headers into text (mitmweb, exports, logs) sees no token.
    assert flow.request.headers["authorization"] == REDACTED_AUTH
    assert "SECRET" not in json.dumps(flow_to_json(flow))
    assert "SECRET" not in repr(flow.request.headers)
    flow.response = tutils.tresp()
    router.responseheaders(flow)
    assert wire_value(flow) == REDACTED_AUTH.encode()


async def test_moved_conversation_drops_turn_state(gateway: Gateway) -> None:
    router = AccountRouter(gateway)
    await router.requestheaders(model_flow(session_id="s1"))
    gateway.live.update_state(lambda s: setattr(s.account("a"), "cooling_until", 4e9))
    flow = model_flow(session_id="s1", x_codex_turn_state="from-a")
    await router.requestheaders(flow)
    assert flow.request.headers["chatgpt-account-id"] == "acct-b"
    assert "x-codex-turn-state" not in flow.request.headers
    gateway.live.wait_written()
    assert gateway.live.store.load_state().switches[-1].reason == "quota"


async def test_passthrough_puts_codex_auth_back(data_dir: Path) -> None:
    write_account(data_dir, "a")
    gw = Gateway()
    with taddons.context(gw) as tctx:
        tctx.configure(gw, cao_data_dir=str(data_dir), cao_passthrough_auth=True)
        flow = model_flow()
        await AccountRouter(gw).requestheaders(flow)
        assert flow.request.headers["authorization"] == REDACTED_AUTH
        assert wire_value(flow) == b"Bearer codex-own"
        assert "chatgpt-account-id" not in flow.request.headers


async def test_no_usable_account_answers_429(gateway: Gateway) -> None:
    for name in ("a", "b"):
        gateway.live.update_state(lambda s, n=name: setattr(s.account(n), "cooling_until", 4e9))
    flow = model_flow()
    await AccountRouter(gateway).requestheaders(flow)
    assert flow.response is not None and flow.response.status_code == 429
    assert json.loads(flow.response.content or b"")["error"]["resets_at"] == 4_000_000_000


def test_status_endpoint(gateway: Gateway) -> None:
    flow = tflow.tflow(req=tutils.treq(path=b"/__cao/status", method=b"GET"))
    StatusEndpoint(gateway).requestheaders(flow)
    assert flow.response is not None
    assert [a["name"] for a in json.loads(flow.response.content or b"")["accounts"]] == ["a", "b"]


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
