"""Codex's Responses WebSocket through the gateway.

The upgrade is a model request like any other: AccountRouter routes it (router.py `route`) and
puts the account's token (a WireSecret, redacted once sent) and `chatgpt-account-id` on it. Once
the socket is open, frames pass through as they arrive; the relay reads along:

- Codex's `response.create` frames of a conversation that moved to this account get the one
  history rewrite (blobs.py, as HTTP bodies); others pass untouched and undecoded.
- A usage limit or rate limit (an error frame, or `response.failed`) before any output of that
  response reached Codex cools the account (config/quota.py) and, while another account can
  serve, is replaced by a `websocket_connection_limit_reached` error frame: Codex drops the
  socket, reconnects ~0.2 s later and re-sends the whole request on the new socket, silently;
  the router sends that upgrade to the next account (codex-websocket.md, CODEX-FACTS.md).
- A refusal of encrypted content of unknown origin is handled the same way: the conversation is
  stripped of unproven blobs from then on, and Codex's re-send goes without them.
- No account left: Codex gets the usage limit as an error frame with the earliest reset.
- `codex.rate_limits` events feed the usage records (usage.py), blobs the ledger (stream.py).
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

from mitmproxy import ctx, http
from mitmproxy.addonmanager import Loader
from mitmproxy.proxy.layers.websocket import Fragmentizer
from mitmproxy.websocket import WebSocketMessage

from cao.config.history import is_rejection
from cao.config.quota import QuotaKind, classify_error, usage_limit_frame

from .access import is_websocket_upgrade
from .decision import FlowDecision, decision_of
from .gateway import Gateway
from .stream import AnswerReader, Outcome
from .usage import rate_limit_headers

log = logging.getLogger("cao.gateway")

TRANSPORTS = ("auto", "http")

# The error frame Codex answers by reconnecting and re-sending the whole request, printing
# nothing (measured with 0.169 and 0.171; codex-websocket.md).
RECONNECT_FRAME = json.dumps(
    {
        "type": "error",
        "status": 400,
        "error": {
            "type": "invalid_request_error",
            "code": "websocket_connection_limit_reached",
            "message": "cao gateway: continue on a new connection",
        },
    }
).encode()
PREVIOUS_NOT_FOUND_FRAME = json.dumps(
    {
        "type": "error",
        "status": 400,
        "error": {
            "type": "invalid_request_error",
            "code": "previous_response_not_found",
            "message": "cao gateway: that response was made on another account",
            "param": "previous_response_id",
        },
    }
).encode()

WARM_UP_MAX = 16 << 10
_TYPE = re.compile(rb'\A\s*\{\s*"type"\s*:\s*"([^"]{1,64})"')
_RESPONSE_ID = re.compile(rb'"response"\s*:\s*\{\s*"id"\s*:\s*"([^"]{1,200})"')
_PREVIOUS_ID = re.compile(rb'"previous_response_id"\s*:\s*"([^"]{1,200})"')
# Server frames that say nothing of the response's output reaching Codex.
NOT_OUTPUT = frozenset(
    {"response.created", "response.in_progress", "response.failed", "codex.rate_limits"}
)


def frame_type(content: bytes) -> str | None:
    """The `type` of a JSON frame, read from its first bytes (no decode)."""
    match = _TYPE.match(content, 0, 128)
    return match.group(1).decode("ascii", "replace") if match else None


def response_id(content: bytes) -> str | None:
    match = _RESPONSE_ID.search(content, 0, 512)
    return match.group(1).decode("ascii", "replace") if match else None


def json_object(content: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None
    return document if isinstance(document, dict) else None


@dataclass(eq=False)
class SocketState:
    """One Codex socket as the relay sees it (FlowDecision.socket)."""

    account: str
    conversation: str | None
    opened: float
    reader: AnswerReader
    requests: int = 0
    output_seen: bool = False  # output of the current response has reached Codex
    response_ids: set[str] = field(default_factory=set)  # made on this socket (its account)
    ended: str | None = None  # why the gateway ended the socket (Codex reconnects)
    rewritten: int = 0


class WebSocketRelay:
    """`--transport auto` passes Codex's WebSocket through (see the module doc); `http` answers
    upgrades 426, and Codex uses HTTP/SSE at once."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.keep_messages = False

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "cao_transport",
            str,
            "auto",
            "auto: pass Codex's WebSocket through; http: answer upgrades 426 (HTTP/SSE).",
            choices=TRANSPORTS,
        )
        # A rewritten frame goes as one frame, as Codex sends it (mitmproxy's default splits a
        # changed message into 4 KB fragments, which some servers refuse).
        Fragmentizer.FRAGMENT_SIZE = 64 << 20

    def running(self) -> None:
        # mitmweb shows the messages; mitmdump need not keep a long socket's frames in memory.
        self.keep_messages = ctx.master.addons.get("view") is not None

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if (
            flow.response is None
            and ctx.options.cao_transport == "http"
            and is_websocket_upgrade(flow.request.headers)
        ):
            flow.response = http.Response.make(
                426, b"cao gateway: use HTTP/SSE (--transport http)", {"content-type": "text/plain"}
            )

    def websocket_start(self, flow: http.HTTPFlow) -> None:
        decision = decision_of(flow)
        if decision is None or decision.account is None:
            return  # passthrough: Codex's own auth, nothing to read
        decision.socket = SocketState(
            decision.account,
            decision.conversation,
            time.time(),
            AnswerReader(self.gateway, decision, decision.account),
        )

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        decision = decision_of(flow)
        state = decision.socket if decision is not None else None
        if decision is None or not isinstance(state, SocketState) or flow.websocket is None:
            return
        messages = flow.websocket.messages
        message = messages[-1]
        if not self.keep_messages and len(messages) > 1:
            del messages[:-1]
        if message.injected:
            return
        try:
            if state.ended is not None:
                message.drop()  # the socket is done; Codex reconnects
            elif message.from_client:
                self.client_frame(flow, decision, state, message)
            else:
                self.server_frame(flow, decision, state, message)
        except Exception as e:  # fail closed: Codex re-sends on a new socket, as after a 503
            log.error("WebSocketRelay failed on a frame (%s): socket ended", type(e).__name__)
            state.ended = f"internal error ({type(e).__name__})"
            if message.from_client:
                message.drop()
                self.inject(flow, RECONNECT_FRAME)
            else:
                message.content = RECONNECT_FRAME

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        decision = decision_of(flow)
        state = decision.socket if decision is not None else None
        if not isinstance(state, SocketState):
            return
        log.info(
            "websocket account=%s conversation=%s requests=%d %.1fs%s",
            state.account,
            state.conversation or "-",
            state.requests,
            time.time() - state.opened,
            f" ({state.ended})" if state.ended else "",
        )

    # -- Codex -> upstream -------------------------------------------------------------------------

    def client_frame(
        self,
        flow: http.HTTPFlow,
        decision: FlowDecision,
        state: SocketState,
        message: WebSocketMessage,
    ) -> None:
        content = message.content
        state.output_seen = False
        # A warm-up has no input, so it is small: large frames are not scanned for it.
        warm_up = len(content) <= WARM_UP_MAX and b'"generate":false' in content
        if not warm_up:
            state.requests += 1
        if decision.exhausted:
            if not warm_up and not self.exhausted_answer(flow, state, message):
                decision.exhausted = False  # the account is back: it serves from now on
            return
        history = self.gateway.history
        if not history.needs_rewrite(decision, state.account):
            return  # a conversation that stays: its frames pass undecoded
        previous = _PREVIOUS_ID.search(content)
        if previous is not None and previous.group(1).decode() not in state.response_ids:
            # Never another account's response id: Codex re-sends in full on a new socket.
            message.drop()
            self.inject(flow, PREVIOUS_NOT_FOUND_FRAME)
            state.ended = "foreign previous_response_id"
            return
        rewritten = history.rewrite(content, decision, state.account)
        if rewritten is not None:
            message.content = rewritten
            state.rewritten += 1

    def exhausted_answer(
        self, flow: http.HTTPFlow, state: SocketState, message: WebSocketMessage
    ) -> bool:
        """A request on a socket no account can serve: the usage limit with the earliest reset,
        unless the account came back meanwhile (then False: it goes upstream)."""
        now = time.time()
        view = self.gateway.live.view(state.account)
        if view is not None and view.usable(now):
            return False
        message.drop()
        self.inject(flow, self.exhausted_frame(state))
        return True

    def exhausted_frame(self, state: SocketState) -> bytes:
        """The usage limit naming the earliest moment any account is usable again."""
        now = time.time()
        resets_at = self.gateway.live.earliest_reset(now) or now + self.gateway.cooldown
        log.warning(
            "websocket %s: every account is limited; earliest reset %s",
            state.conversation or "-",
            time.strftime("%H:%M:%S", time.localtime(resets_at)),
        )
        return usage_limit_frame(resets_at, now)

    # -- upstream -> Codex -------------------------------------------------------------------------

    def server_frame(
        self,
        flow: http.HTTPFlow,
        decision: FlowDecision,
        state: SocketState,
        message: WebSocketMessage,
    ) -> None:
        content = message.content
        kind = frame_type(content)
        if kind == "error":
            self.error_frame(flow, state, message)
            return
        if kind not in NOT_OUTPUT:
            state.output_seen = True
        if kind in ("response.created", "response.completed"):
            rid = response_id(content)
            if rid is None and kind == "response.created":  # an unusual key order: decode
                response = (json_object(content) or {}).get("response")
                rid = response.get("id") if isinstance(response, dict) else None
            if isinstance(rid, str):
                state.response_ids.add(rid)
        if kind == "codex.rate_limits":
            if (event := json_object(content)) is not None:
                self.gateway.usage.record(state.account, rate_limit_headers(event))
            return
        if kind == "response.failed" or b"encrypted_content" in content:
            event = json_object(content)
            if event is None:
                return
            outcome = state.reader.on_event(event)
            if outcome is Outcome.LIMITED:
                self.limited(state, message, QuotaKind.USAGE_LIMIT, "usage limit (in-stream)")
            elif outcome is Outcome.RESEND:
                self.reconnect(state, message, "refused encrypted content")

    def error_frame(
        self, flow: http.HTTPFlow, state: SocketState, message: WebSocketMessage
    ) -> None:
        event = json_object(message.content)
        if event is None:
            return
        status = event.get("status", event.get("status_code"))
        status = status if isinstance(status, int) else 0
        raw_headers = event.get("headers")
        headers = (
            {str(k).lower(): str(v) for k, v in raw_headers.items()}
            if isinstance(raw_headers, dict)
            else {}
        )
        now = time.time()
        signal = classify_error(status, event, headers, now, self.gateway.cooldown)
        if signal is not None:
            self.gateway.usage.record(state.account, headers)
            self.gateway.live.mark_limited(state.account, signal)
            self.limited(state, message, signal.kind, signal.kind.value)
        elif is_rejection(status, event) and self.gateway.history.take_rejection(
            state.reader.decision
        ):
            self.reconnect(state, message, "refused encrypted content")

    def limited(
        self, state: SocketState, message: WebSocketMessage, kind: QuotaKind, why: str
    ) -> None:
        """The account just cooled. Before any output: Codex goes on elsewhere, or learns when
        to come back; after output, Codex gets the answer as it is (as over HTTP). A rate limit
        with no account left passes as it is too (Codex honours its Retry-After)."""
        if state.output_seen:
            return
        choice = self.gateway.choose(state.conversation, continuation=False)
        if choice.account is not None and choice.account.name != state.account:
            log.warning(
                "websocket failover %s: account %s hit its %s; Codex reconnects to %s",
                state.conversation or "-",
                state.account,
                why,
                choice.account.name,
            )
            self.reconnect(state, message, f"failover: {why}")
            return
        if kind is QuotaKind.USAGE_LIMIT:
            message.content = self.exhausted_frame(state)

    def reconnect(self, state: SocketState, message: WebSocketMessage, why: str) -> None:
        """Codex drops this socket and re-sends the whole request on a new one."""
        message.content = RECONNECT_FRAME
        state.ended = why

    def inject(self, flow: http.HTTPFlow, frame: bytes) -> None:
        ctx.master.commands.call("inject.websocket", flow, True, frame, True)
