"""AccessGuard and fail_closed with mitmproxy's test helpers."""

from __future__ import annotations

from pathlib import Path

import pytest
from mitmproxy.test import tflow, tutils

from cao.addons.access import AccessGuard, allowed_hosts, fail_closed, hides_a_segment
from cao.addons.decision import decision_of
from cao.addons.peer import Peer, PeerCheck
from cao.config.access import gateway_key
from cao.config.store import Store

MINE = Peer(0, True, False)  # this OS user's process, as the kernel said
REMOTE = Peer(None, False, True)  # a remote client of an --allow-remote gateway


@pytest.fixture
def guard(data_dir: Path) -> AccessGuard:
    g = AccessGuard(PeerCheck())
    g.key = gateway_key(Store(data_dir))
    g.hosts = allowed_hosts([("127.0.0.1", 4319)])
    return g


def flow_for(
    path: str, host: str = "127.0.0.1:4319", guard: AccessGuard | None = None,
    peer: Peer | None = MINE, **headers: str,
) -> tflow.HTTPFlow:  # fmt: skip
    request = tutils.treq(path=path.encode(), method=b"POST")
    request.host_header = host
    for name, value in headers.items():
        request.headers[name.replace("_", "-")] = value
    flow = tflow.tflow(req=request)
    if guard is not None and peer is not None:
        guard.peers.peers[flow.client_conn.id] = peer
    return flow


async def test_the_users_codex_gets_through_on_the_plain_url(guard: AccessGuard) -> None:
    path = "/backend-api/codex/responses"
    flow = flow_for(path, guard=guard)
    await guard.requestheaders(flow)
    assert flow.response is None
    assert flow.request.path == "/backend-api/codex/responses"
    decision = decision_of(flow)
    assert decision is not None and decision.client_path == path  # for a 307 back to it
    assert flow.request.host_header != "127.0.0.1:4319"  # the upstream's name now


@pytest.mark.parametrize("peer", [MINE, REMOTE, Peer(0, True, True)])
async def test_an_old_keyed_url_still_works_with_the_key_stripped(
    guard: AccessGuard, peer: Peer
) -> None:
    path = f"/cao/{guard.key}/backend-api/codex/responses"
    flow = flow_for(path, guard=guard, peer=peer)
    await guard.requestheaders(flow)
    assert flow.response is None
    assert flow.request.path == "/backend-api/codex/responses"
    assert decision_of(flow).client_path == path  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("path", "peer"),
    [
        ("/backend-api/codex/responses", None),  # a connection nobody checked
        ("/backend-api/codex/responses", REMOTE),  # no key where the OS cannot vouch
        ("/backend-api/codex/responses", Peer(0, True, True)),  # --require-key
        ("/cao/wrong-key-000000000000000000000000000000000/backend-api/codex/responses", MINE),
    ],
)
async def test_where_the_os_cannot_vouch_the_key_is_needed(
    guard: AccessGuard, path: str, peer: Peer | None
) -> None:
    flow = flow_for(path, guard=guard, peer=peer)
    await guard.requestheaders(flow)
    assert flow.response is not None and flow.response.status_code == 403
    assert flow.request.path == path  # never stripped, never sent


@pytest.mark.parametrize(
    ("path", "host", "headers", "status"),
    [
        ("{route}/backend-api/codex/responses", "evil.example:4319", {}, 403),
        ("{route}/backend-api/codex/responses", "127.0.0.1:4319", {"origin": "null"}, 403),
        ("{route}/x", "127.0.0.1:4319", {"sec_fetch_site": "cross-site"}, 403),
        ("{route}/backend-api/codex/../wham", "127.0.0.1:4319", {}, 400),
    ],
)
async def test_refusals(
    guard: AccessGuard, path: str, host: str, headers: dict[str, str], status: int
) -> None:
    flow = flow_for(path.format(route=f"/cao/{guard.key}"), host, guard, **headers)
    await guard.requestheaders(flow)
    assert flow.response is not None and flow.response.status_code == status
    assert not any(k.lower().startswith("access-control") for k in flow.response.headers)


async def test_a_body_without_length_is_not_read(guard: AccessGuard) -> None:
    flow = flow_for("/backend-api/codex/responses", guard=guard, transfer_encoding="chunked")
    await guard.requestheaders(flow)
    assert flow.killable is False or flow.error is not None


async def test_an_error_in_the_guard_fails_closed(
    guard: AccessGuard, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(guard, "problem", broken)
    flow = flow_for(f"/cao/{guard.key}/backend-api/codex/responses", guard=guard)
    await guard.requestheaders(flow)
    assert flow.response is not None and flow.response.status_code == 503
    assert flow.request.path.startswith("/cao/")  # never stripped, never sent


async def test_fail_closed_on_sync_and_async_hooks() -> None:
    class Hooks:
        @fail_closed
        def sync(self, flow: tflow.HTTPFlow) -> None:
            raise ValueError

        @fail_closed
        async def later(self, flow: tflow.HTTPFlow) -> None:
            raise OSError

    for hook in (Hooks().sync, Hooks().later):
        flow = tflow.tflow()
        await hook(flow)
        assert flow.response is not None and flow.response.status_code == 503


def test_segments_and_hosts() -> None:
    assert hides_a_segment("/a/%2E%2e/b") and hides_a_segment("/a/./b")
    assert not hides_a_segment("/backend-api/codex/responses?x=../y")
    assert "[::1]:4319" in allowed_hosts([("::1", 4319)])
    assert "10.0.0.5:80" in allowed_hosts([("10.0.0.5", 80)])
