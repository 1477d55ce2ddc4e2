"""The fake backend's Responses WebSocket (`GET …/backend-api/codex/responses` + Upgrade), as the
real one behaves (../../shared/codex-websocket.md and CODEX-FACTS.md):

- the handshake answers 101 with `x-codex-turn-state`; permessage-deflate is not accepted (Codex
  then sends plain frames); a revoked token gets 401;
- one `response.create` text frame per request, answered by the SSE stream's events, one JSON
  text frame each, preceded by a `codex.rate_limits` event when the account has usage headers;
- `previous_response_id` is looked up in this connection's memory only (a new socket, or an id
  it did not produce, gets `previous_response_not_found`); `generate: false` is a warm-up;
- encrypted content is checked as on HTTP (`check_input`): a refusal is an error frame (or a
  `response.failed` event with `rejection = "stream"`);
- every scripted answer kind: quota / rate / status as error frames with their headers,
  `sse_quota` as `response.failed`, `tool`, `cut` (TCP close mid-response);
- a connection older than `ws_max_age` gets `websocket_connection_limit_reached`.

Every socket and every frame is recorded (`FakeUpstream.sockets`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import wsproto
import wsproto.events as ws_events

from tests.fakes.upstream import (
    Credentials,
    Recorded,
    check_input,
    tool_call_events,
    turn_events,
    usage_limit_error,
)

if TYPE_CHECKING:
    from tests.fakes.upstream import FakeUpstream, _Handler

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WINDOW_NAMES = ("primary", "secondary")


@dataclass
class WsFrame:
    from_client: bool
    text: str
    at: float

    def json(self) -> Any:
        return json.loads(self.text)

    @property
    def type(self) -> str | None:
        try:
            value = self.json().get("type")
        except (ValueError, AttributeError):
            return None
        return value if isinstance(value, str) else None


@dataclass
class WsSocket(Credentials):
    """One WebSocket connection as the fake saw it."""

    path: str
    headers: dict[str, str]
    opened: float
    frames: list[WsFrame] = field(default_factory=list)
    closed: float | None = None
    close_frame: bool = False  # the client sent a close frame (else it dropped TCP)
    response_ids: list[str] = field(default_factory=list)  # this connection's memory

    def client_frames(self) -> list[WsFrame]:
        return [f for f in self.frames if f.from_client]

    def server_types(self) -> list[str | None]:
        return [f.type for f in self.frames if not f.from_client]


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def sse_payloads(events: list[bytes]) -> list[str]:
    """The JSON of each SSE event: what the socket sends one frame each."""
    out = []
    for event in events:
        for line in event.decode().split("\n"):
            if line.startswith("data: "):
                out.append(line[6:])
    return out


def rate_limits_event(headers: dict[str, str]) -> str | None:
    """`codex.rate_limits` as the backend sends it in-stream, from the account's x-codex-*
    usage headers (what HTTP answers carry as headers)."""
    limits: dict[str, Any] = {}
    for name in WINDOW_NAMES:
        used = headers.get(f"x-codex-{name}-used-percent")
        if used is None:
            continue
        window: dict[str, Any] = {"used_percent": float(used)}
        if (minutes := headers.get(f"x-codex-{name}-window-minutes")) is not None:
            window["window_minutes"] = int(float(minutes))
        if (reset := headers.get(f"x-codex-{name}-reset-at")) is not None:
            window["reset_at"] = int(float(reset))
        limits[name] = window
    if not limits:
        return None
    event = {
        "type": "codex.rate_limits",
        "plan_type": "plus",
        "rate_limits": {"primary": limits.get("primary"), "secondary": limits.get("secondary")},
        "credits": {"has_credits": False, "unlimited": False, "balance": "0"},
    }
    return json.dumps(event)


def error_frame(status: int, error: dict[str, Any], headers: dict[str, str] | None = None) -> str:
    return json.dumps({"type": "error", "status": status, "error": error, "headers": headers or {}})


class WsSession:
    """Serves one upgraded connection on the handler's thread."""

    def __init__(self, handler: _Handler, record: WsSocket) -> None:
        self.handler = handler
        self.fake: FakeUpstream = handler.fake
        self.record = record
        self.sock: socket.socket = handler.connection
        self.ws = wsproto.Connection(wsproto.ConnectionType.SERVER)
        self.memory: set[str] = set()
        self.serial = 0
        self.open = True

    # -- the wire ---------------------------------------------------------------------------------

    def send_text(self, text: str) -> None:
        self.record.frames.append(WsFrame(False, text, time.time()))
        self.sock.sendall(self.ws.send(ws_events.TextMessage(data=text)))

    def drop(self) -> None:
        """A TCP close without a close frame (as after a cut)."""
        self.open = False
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self, code: int = 1000, reason: str = "") -> None:
        try:
            self.sock.sendall(self.ws.send(ws_events.CloseConnection(code=code, reason=reason)))
        except (OSError, wsproto.utilities.LocalProtocolError):
            pass
        self.drop()

    def run(self) -> None:
        pending = ""
        self.sock.settimeout(None)
        try:
            while self.open:
                data = self.sock.recv(65536)
                self.ws.receive_data(data or None)
                if not data:
                    break
                for event in self.ws.events():
                    if isinstance(event, ws_events.TextMessage):
                        pending += event.data
                        if event.message_finished:
                            text, pending = pending, ""
                            self.record.frames.append(WsFrame(True, text, time.time()))
                            self.on_request(text)
                    elif isinstance(event, ws_events.BytesMessage):
                        self.close(1003, "binary frames are not supported")
                    elif isinstance(event, ws_events.Ping):
                        self.sock.sendall(self.ws.send(event.response()))
                    elif isinstance(event, ws_events.CloseConnection):
                        self.record.close_frame = True
                        if self.ws.state is wsproto.connection.ConnectionState.REMOTE_CLOSING:
                            self.sock.sendall(self.ws.send(event.response()))
                        self.open = False
                    if not self.open:
                        break
        except (OSError, wsproto.utilities.RemoteProtocolError):
            pass
        finally:
            self.record.closed = time.time()
            self.open = False

    # -- requests ---------------------------------------------------------------------------------

    def new_id(self) -> str:
        self.serial += 1
        return f"resp_ws{id(self) % 10_000}_{self.serial}"

    def on_request(self, text: str) -> None:
        fake = self.fake
        account = self.record.account_id
        recorded = Recorded(
            "WS", self.record.path, self.record.headers, text.encode(), time.time(), raw=b""
        )
        recorded.socket = fake.sockets.index(self.record)
        fake.requests.append(recorded)
        delay = fake.seen_delay + fake.delay_per_kib * len(text.encode()) / 1024
        if delay:
            time.sleep(delay)
        try:
            request = json.loads(text)
            if not isinstance(request, dict) or request.get("type") != "response.create":
                raise ValueError("not a response.create")
        except ValueError:
            self.send_text(
                error_frame(400, {"type": "invalid_request_error", "message": "bad frame"})
            )
            return
        if time.time() - self.record.opened >= fake.ws_max_age:
            self.send_text(
                error_frame(
                    400,
                    {
                        "type": "invalid_request_error",
                        "code": "websocket_connection_limit_reached",
                        "message": "Responses websocket connection limit reached (60 minutes). "
                        "Create a new websocket connection to continue.",
                    },
                )
            )
            return
        previous = request.get("previous_response_id")
        if previous is not None and previous not in self.memory:
            recorded.rejected = "previous_response_not_found"
            self.send_text(
                error_frame(
                    400,
                    {
                        "type": "invalid_request_error",
                        "code": "previous_response_not_found",
                        "message": f"Previous response with id '{previous}' not found.",
                        "param": "previous_response_id",
                    },
                )
            )
            return
        message = check_input(request.get("input"), account, request.get("store"))
        if message is not None:
            recorded.rejected = message
            with fake.lock:
                fake.rejected.append(recorded)
            self.reject(message)
            return
        if request.get("generate") is False:  # warm-up: an empty response to chain from
            rid = self.new_id()
            self.memory.add(rid)
            events = turn_events([], rid)
            self.send_events([events[0], events[-1]])
            return
        self.answer(request, account)

    def reject(self, message: str) -> None:
        code = None if self.fake.rejection == "null_code" else "invalid_encrypted_content"
        if message.startswith("Item with id"):
            code = None
        error = {"type": "invalid_request_error", "code": code, "param": None, "message": message}
        if self.fake.rejection == "stream":
            failed = {"id": "resp_rejected", "status": "failed", "error": error}
            self.send_text(json.dumps({"type": "response.created", "response": {"id": "x"}}))
            self.send_text(json.dumps({"type": "response.failed", "response": failed}))
        else:
            self.send_text(error_frame(400, error))

    def send_events(self, events: list[bytes], delay: float = 0.0) -> None:
        for i, payload in enumerate(sse_payloads(events)):
            if i and delay:
                time.sleep(delay)
            self.send_text(payload)
            if '"response.completed"' in payload[:40]:
                rid = json.loads(payload)["response"]["id"]
                self.memory.add(rid)
                self.record.response_ids.append(rid)

    def answer(self, request: dict[str, Any], account: str | None) -> None:
        fake = self.fake
        handler = self.handler
        items = request.get("input") or [{}]
        usage_headers = fake.usage_headers.get(account or "", {})
        if isinstance(items[-1], dict) and items[-1].get("type") == "compaction_trigger":
            from tests.fakes.upstream import compaction_item

            item = compaction_item(account)
            added = {k: v for k, v in item.items() if k != "encrypted_content"}
            rid = self.new_id()
            with fake.lock:
                fake.compactions += 1
            for text in (
                {"type": "response.created", "response": {"id": rid}},
                {"type": "response.output_item.added", "output_index": 0, "item": added},
                {"type": "response.output_item.done", "output_index": 0, "item": item},
            ):
                self.send_text(json.dumps(text))
            self.send_events(turn_events([], rid)[-1:])
            return
        answer = fake.answer_for(account)
        headers = {**usage_headers, **answer.headers}
        if answer.kind == "quota":
            resets_at = answer.resets_at or time.time() + 3600
            self.send_text(error_frame(429, usage_limit_error(resets_at), headers))
            return
        if answer.kind == "rate":
            error = {"type": "rate_limit_exceeded", "message": "Rate limit reached"}
            self.send_text(
                error_frame(429, error, {"retry-after": str(answer.retry_after), **headers})
            )
            return
        if answer.kind == "status":
            try:
                error = json.loads(answer.body).get("error") or {}
            except (ValueError, AttributeError):
                error = {"message": answer.body.decode(errors="replace")}
            self.send_text(error_frame(answer.status, error, headers))
            return
        if (limits := rate_limits_event(headers)) is not None:
            self.send_text(limits)
        rid = self.new_id()
        if answer.kind == "sse_quota":
            self.send_text(json.dumps({"type": "response.created", "response": {"id": rid}}))
            self.send_text(json.dumps({"type": "response.failed", "response": {"id": rid, "error": {
                "code": "usage_limit_reached", "message": "The usage limit has been reached",
                "resets_at": int(answer.resets_at or time.time() + 3600)}}}))  # fmt: skip
            return
        if answer.kind == "tool":
            fake.tool_calls += 1
            events = tool_call_events(
                f"call_{fake.tool_calls}", handler._reasoning(account), response_id=rid
            )
            self.send_events(events, answer.delay)
            return
        if answer.kind == "cut":
            events = turn_events([f"part{i} " for i in range(answer.events)], rid)
            self.send_events(events[: 2 + answer.events // 2], answer.delay)
            self.drop()
            return
        parts = [f"hello from {account} " if i == 0 else f"part{i} " for i in range(answer.events)]
        events = turn_events(
            parts, rid, handler._reasoning(account), input_tokens=fake.usage_tokens or 10
        )
        self.send_events(events, answer.delay)


def serve_websocket(handler: _Handler, recorded: Recorded) -> None:
    """Answer an upgrade on `…/responses`: 101, then serve frames until the socket ends."""
    fake = handler.fake
    headers = recorded.headers
    if recorded.token in fake.revoked or recorded.token is None:
        handler._send(401, b'{"detail":"Unauthorized"}')
        return
    if fake.handshake_answers:  # scripted refusals of the upgrade itself
        with fake.lock:
            status, body = fake.handshake_answers.pop(0)
        handler._send(status, body)
        return
    key = headers.get("sec-websocket-key", "")
    if headers.get("sec-websocket-version") != "13" or not key:
        handler._send(400, b'{"detail":"bad websocket handshake"}')
        return
    record = WsSocket(recorded.path, headers, time.time())
    with fake.lock:
        fake.sockets.append(record)
        fake.turn_states += 1
        turn_state = f"ts-{record.account_id}-{fake.turn_states}"
    handler.send_response(101)
    handler.send_header("upgrade", "websocket")
    handler.send_header("connection", "Upgrade")
    handler.send_header("sec-websocket-accept", accept_key(key))
    handler.send_header("x-codex-turn-state", turn_state)
    handler.send_header("x-models-etag", '"fake"')
    handler.end_headers()
    handler.wfile.flush()
    handler.close_connection = True
    WsSession(handler, record).run()
