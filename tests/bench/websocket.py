"""`make bench`'s WebSocket rows: a 20-tool-call turn of the real Codex against a fake whose time
per request grows with the bytes it receives (as a real upstream over a real network does), and
the latency the gateway adds to each frame.

- Codex turn (the fake spends 30 ms + 0.8 ms per KiB received on each request): direct over
  WebSocket, through the gateway over WebSocket, and through the gateway over HTTP
  (`--transport http`, the fallback): the turn's time from its first request to its last at
  the upstream, `codex exec`'s wall time, and the bytes Codex's requests put on the upstream
  link (HTTP bodies as sent, zstd; WebSocket frames, plain JSON).
- Frame round trip: one `response.create` frame up, the first answer frame back, on one open
  socket, direct vs through the gateway (incremental requests of a conversation that stays: the
  gateway passes them undecoded).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import wsproto
import wsproto.events as ws_events

from tests.codex_harness import EXEC_ARGS, client_config
from tests.fakes.upstream import Answer, FakeUpstream
from tests.gateway_proc import GatewayProcess
from tests.helpers import auth_document

MODEL = "/backend-api/codex/responses"
TOOL_CALLS = 20
# The fake upstream's time per request, as a network and a backend would spend it: a round trip
# (the real backend adds its model time on top, seconds per request) and ~10 Mbit/s up (a 70 KB
# first request costs ~55 ms).
ROUND_TRIP = 0.03
SECONDS_PER_KIB = 0.0008


def codex_path() -> Path | None:
    from tests.codex_harness import CODEX_VERSIONS
    from tests.helpers import REPO

    root = Path(os.environ.get("CAO_TEST_CODEX_ROOT") or REPO / ".tools")
    path = root / f"codex-{CODEX_VERSIONS[-1]}" / "node_modules" / ".bin" / "codex"
    return path if path.exists() else None


def codex_home(root: Path, upstream: FakeUpstream, base_url: str) -> Path:
    home = root / "codex-home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "auth.json").write_text(json.dumps(auth_document("user", account_id="acct-user")))
    (home / "config.toml").write_text(f'openai_base_url = "{base_url}"\n' + client_config(upstream))
    return home


def upstream_bytes(upstream: FakeUpstream, since: int) -> int:
    """Bytes of model requests the fake received since request `since` (bodies as sent)."""
    total = 0
    for r in upstream.requests[since:]:
        if r.method == "WS":
            total += len(r.body)
        elif r.method == "POST" and r.path.endswith("/responses"):
            total += len(r.raw)
    return total


def codex_turn(
    codex: Path, home: Path, work: Path, upstream: FakeUpstream, account: str
) -> dict[str, float]:
    """One `codex exec` whose turn makes TOOL_CALLS tool calls: its wall time, the time from
    the turn's first model request to its last as the upstream saw them (Codex's start-up left
    out), the bytes its requests put on the upstream link, and whether it used a socket."""
    upstream.queue(account, *[Answer("tool") for _ in range(TOOL_CALLS)])
    since = len(upstream.requests)
    sockets = len(upstream.sockets)
    started = time.perf_counter()
    result = subprocess.run(
        [str(codex), *EXEC_ARGS, "use the clock"],
        env={**os.environ, "CODEX_HOME": str(home)},
        cwd=work,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    seconds = time.perf_counter() - started
    assert result.returncode == 0, result.stderr[-2000:]
    assert "hello from" in result.stdout, result.stdout
    turn = [
        r.at
        for r in upstream.requests[since:]
        if (r.method == "WS" and b'"generate":false' not in r.body[:2048])
        or (r.method == "POST" and r.path.endswith("/responses"))
    ]
    assert len(turn) == TOOL_CALLS + 1, len(turn)
    return {
        "seconds": seconds,
        "turn": turn[-1] - turn[0],
        "bytes": upstream_bytes(upstream, since),
        "socket": float(len(upstream.sockets) > sockets),
    }


def tool_turns(root: Path, codex: Path, runs: int) -> tuple[list[Any], dict[str, Any]]:
    from tests.bench.run import Row, data_dir_with

    upstream = FakeUpstream().start()
    upstream.websockets = True
    upstream.delay_per_kib = SECONDS_PER_KIB
    upstream.seen_delay = ROUND_TRIP
    upstream.wham_account_id = None
    gateways = {
        "ws": GatewayProcess(data_dir_with(root / "gw-ws", ["a", "b"]), upstream.url),
        "http": GatewayProcess(
            data_dir_with(root / "gw-http", ["a", "b"]), upstream.url, "--transport", "http"
        ),
    }
    sides = ("direct", "ws", "http")
    results: dict[str, dict[str, list[float]]] = {
        side: {"seconds": [], "turn": [], "bytes": []} for side in sides
    }
    try:
        for gw in gateways.values():
            gw.start()
        homes = {
            "direct": codex_home(root / "direct", upstream, f"{upstream.url}/backend-api/codex"),
            "ws": codex_home(root / "ws", upstream, f"{gateways['ws'].base}/backend-api/codex"),
            "http": codex_home(
                root / "http", upstream, f"{gateways['http'].base}/backend-api/codex"
            ),
        }
        accounts = {"direct": "acct-user", "ws": "acct-a", "http": "acct-a"}
        for i in range(runs + 1):  # the first round warms caches up and is not counted
            for side in sides:  # interleaved: drift of the machine hits all three alike
                run = codex_turn(codex, homes[side], root, upstream, accounts[side])
                assert run["socket"] == (side != "http"), side
                if i:
                    for key in results[side]:
                        results[side][key].append(run[key])
    finally:
        for gw in gateways.values():
            gw.stop()
        upstream.stop()
    median = {
        side: {k: statistics.median(v) for k, v in values.items()}
        for side, values in results.items()
    }
    d, w, h = median["direct"], median["ws"], median["http"]
    rows = [
        Row(f"Codex {TOOL_CALLS}-tool-call turn over WebSocket, first to last request", "s",
            d["turn"], w["turn"], "within 5 % of direct", w["turn"] <= 1.05 * d["turn"]),
        Row(f"Codex {TOOL_CALLS}-tool-call turn over WebSocket, codex exec wall time", "s",
            d["seconds"], w["seconds"], "within 5 % of direct",
            w["seconds"] <= 1.05 * d["seconds"]),
        Row(f"Codex {TOOL_CALLS}-tool-call turn over WebSocket, bytes upstream", "KB",
            d["bytes"] / 1e3, w["bytes"] / 1e3, "within 5 % of direct",
            w["bytes"] <= 1.05 * d["bytes"]),
        Row("same turn through the gateway over HTTP (--transport http), first to last "
            "request", "s", d["turn"], h["turn"], "the fallback's cost"),
        Row("same turn over HTTP, codex exec wall time", "s", d["seconds"], h["seconds"],
            "the fallback's cost"),
        Row("same turn over HTTP, bytes upstream", "KB", d["bytes"] / 1e3, h["bytes"] / 1e3,
            "the fallback's cost"),
    ]  # fmt: skip
    raw = {"runs": runs, "round_trip": ROUND_TRIP, "seconds_per_kib": SECONDS_PER_KIB}
    return rows, {**raw, "results": results}


# -- frame round trips -------------------------------------------------------------------------


class WsClient:
    """A minimal blocking WebSocket client (wsproto), as Codex uses the socket."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        request = ws_events.Request(
            host=f"{host}:{port}",
            target=path.rstrip("/") + MODEL,
            extra_headers=[(k.encode(), v.encode()) for k, v in headers.items()],
        )
        self.sock.sendall(self.ws.send(request))
        self.pending: list[Any] = []
        while not any(isinstance(e, ws_events.AcceptConnection) for e in self.pending):
            self._read()
            if any(isinstance(e, ws_events.RejectConnection) for e in self.pending):
                raise RuntimeError("upgrade refused")
        self.pending.clear()
        self.text = ""

    def _read(self) -> None:
        data = self.sock.recv(1 << 16)
        if not data:
            raise RuntimeError("socket closed")
        self.ws.receive_data(data)
        self.pending.extend(self.ws.events())

    def send(self, document: dict[str, Any]) -> None:
        self.sock.sendall(self.ws.send(ws_events.TextMessage(json.dumps(document))))

    def frame(self) -> str:
        while True:
            while self.pending:
                event = self.pending.pop(0)
                if isinstance(event, ws_events.TextMessage):
                    self.text += event.data
                    if event.message_finished:
                        text, self.text = self.text, ""
                        return text
            self._read()

    def close(self) -> None:
        self.sock.close()


def round_trips(upstream_url: str, gateway_base: str, n: int) -> list[Any]:
    """Time from a `response.create` frame sent to the first answer frame, and to the last,
    on one open socket each, interleaved direct / gateway."""
    from tests.bench.run import Row, ms, pct

    headers = {"authorization": "Bearer bench", "thread-id": "bench-ws",
               "chatgpt-account-id": "acct-a"}  # fmt: skip
    clients = {
        "direct": WsClient(upstream_url, headers),
        "gateway": WsClient(gateway_base, headers),
    }
    previous: dict[str, str | None] = {"direct": None, "gateway": None}
    first: dict[str, list[float]] = {"direct": [], "gateway": []}
    try:
        for i in range(n + 20):
            for side, client in clients.items():
                request: dict[str, Any] = {
                    "type": "response.create",
                    "input": [{"type": "function_call_output", "call_id": f"c{i}", "output": "ok"}],
                }
                if previous[side]:
                    request["previous_response_id"] = previous[side]
                started = time.perf_counter()
                client.send(request)
                client.frame()
                took = time.perf_counter() - started
                while True:
                    event = json.loads(client.frame())
                    if event["type"] == "response.completed":
                        previous[side] = event["response"]["id"]
                        break
                    assert event["type"] != "error", event
                if i >= 20:
                    first[side].append(took)
    finally:
        for client in clients.values():
            client.close()
    d, g = first["direct"], first["gateway"]
    added = [gi - di for gi, di in zip(g, d, strict=True)]
    return [
        Row("WebSocket frame round trip (request frame -> first answer frame), median", "ms",
            ms(statistics.median(d)), ms(statistics.median(g)), "adds <= 2 ms",
            ms(statistics.median(g)) - ms(statistics.median(d)) <= 2.0),
        Row("WebSocket frame round trip, p99", "ms", ms(pct(d, 0.99)), ms(pct(g, 0.99))),
        Row("WebSocket added latency per round trip (paired), median", "ms",
            None, ms(statistics.median(added))),
        Row("WebSocket added latency per round trip (paired), p99", "ms", None,
            ms(pct(added, 0.99))),
    ]  # fmt: skip


def frame_rows(root: Path, n: int) -> list[Any]:
    from tests.bench.run import data_dir_with

    upstream = FakeUpstream().start()
    upstream.websockets = True
    upstream.defaults[None] = Answer(events=3)
    gw = GatewayProcess(data_dir_with(root / "gw-frames", ["a", "b"]), upstream.url)
    try:
        gw.start()
        return round_trips(upstream.url, gw.base, n)
    finally:
        gw.stop()
        upstream.stop()


# -- the relay's own cost per frame -------------------------------------------------------------


def relay_cost(root: Path, n: int) -> list[Any]:
    """WebSocketRelay.websocket_message alone, in this process (median µs per frame): what the
    gateway's addon adds to each frame on top of mitmproxy's relay."""
    from mitmproxy.test import taddons, tflow
    from mitmproxy.websocket import WebSocketMessage
    from wsproto.frame_protocol import Opcode

    from cao.addons.decision import FlowDecision
    from cao.addons.gateway import Gateway
    from cao.addons.websocket import WebSocketRelay
    from tests.bench.run import Row, data_dir_with, history_of
    from tests.fakes.upstream import reasoning_item

    data = data_dir_with(root, ["a", "b"])
    gateway = Gateway()
    relay = WebSocketRelay(gateway)
    foreign = reasoning_item("acct-b")
    first = {"type": "response.create", "model": "gpt", "input": history_of(77_000, [foreign]),
             "previous_response_id": "resp_warm", "store": False}  # fmt: skip
    incremental = {"type": "response.create", "previous_response_id": "resp_1", "input": [
        {"type": "function_call_output", "call_id": "c1", "output": "x" * 1900}]}  # fmt: skip
    delta = {"type": "response.output_text.delta", "item_id": "msg_1", "delta": "hello "}
    done = {"type": "response.output_item.done", "item": reasoning_item("acct-a")}
    cases = [
        ("stays", True, incremental, "request frame, 2 KB (incremental)"),
        ("stays", True, first, "request frame, 77 KB (first on a socket)"),
        ("stays", False, delta, "answer frame: text delta"),
        ("stays", False, done, "answer frame: reasoning item (its blob recorded)"),
        ("moved", True, first, "request frame, 77 KB, moved conversation (rewritten)"),
    ]
    rows = []
    with taddons.context(relay, gateway) as tctx:
        tctx.configure(gateway, cao_data_dir=str(data))
        gateway.history.learn("b", "moved", {"item": foreign})
        flows = {}
        for conversation in ("stays", "moved"):
            flow = tflow.twebsocketflow(messages=False)
            flow.metadata["cao"] = FlowDecision(0.0, account="a", conversation=conversation)
            relay.websocket_start(flow)
            flow.metadata["cao"].socket.response_ids.update({"resp_warm", "resp_1"})
            flows[conversation] = flow
        for conversation, from_client, document, label in cases:
            flow = flows[conversation]
            assert flow.websocket is not None
            content = json.dumps(document).encode()
            times = []
            for _ in range(n):
                message = WebSocketMessage(Opcode.TEXT, from_client, content)
                flow.websocket.messages.append(message)
                started = time.perf_counter()
                relay.websocket_message(flow)
                times.append(time.perf_counter() - started)
                assert not message.dropped, label
            rows.append(Row(f"relay addon per frame: {label}", "µs", None,
                            statistics.median(times) * 1e6))  # fmt: skip
    return rows
