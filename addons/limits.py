"""No local user can stop the gateway: bounds on what one connection or one peer may hold.

- File descriptors: the soft limit is raised to the hard one at start (often 1024 -> 500k+).
- Open connections per peer (per OS user; all remote peers share one budget): above
  CONNECTIONS_PER_PEER a new one is closed at once, so one peer's flood never starves another's
  (the gateway's own user has its own budget; other local users are refused by peer.py anyway).
- A connection must send a complete request head within HEAD_SECONDS of being accepted.
- A request head (line + headers) above HEAD_LIMIT gets 431 while it arrives (http1server.py).
- A conversation id (session-id, thread-id) above CONVERSATION_ID_LIMIT characters gets 400:
  the gateway keeps one entry per conversation.
- A repeated error (asyncio's accept loop on EMFILE, say) is logged once, then counted.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections import Counter
from typing import Any

from mitmproxy import connection, ctx, http

from .access import refusal
from .http1server import install_http1_guards
from .notes import note
from .peer import PeerCheck
from .routing import CONVERSATION_HEADERS

log = logging.getLogger("cao.gateway")

CONNECTIONS_PER_PEER = 512  # Codex holds a handful; a flood is refused past this
HEAD_SECONDS = 10.0  # accept -> complete request head (Codex sends it at once)
CONVERSATION_ID_LIMIT = 256  # Codex's ids are UUIDs (36 characters)


def raise_file_limit() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit; the (soft, hard) now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as e:
            log.warning("could not raise the open-file limit from %d: %s", soft, e)
    return soft, hard


def oversized_conversation(headers: http.Headers) -> str | None:
    for name in CONVERSATION_HEADERS:
        if len(headers.get(name, "")) > CONVERSATION_ID_LIMIT:
            return name
    return None


class RepeatedErrors:
    """asyncio's exception handler: each distinct message once, then a count every minute."""

    def __init__(self, every: float = 60.0) -> None:
        self.every = every
        self.seen: dict[str, tuple[int, float]] = {}

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", "error"))
        error = context.get("exception")
        key = f"{message}: {type(error).__name__}: {error}" if error else message
        count, last = self.seen.get(key, (0, 0.0))
        now = time.monotonic()
        if now - last < self.every:
            self.seen[key] = (count + 1, last)
            return
        more = f" (and {count} more times)" if count else ""
        log.error("%s%s", key, more)  # no traceback: one line, never a loop of them
        self.seen[key] = (0, now)


class ConnectionLimits:
    """Per-peer connection budget and a deadline for the first request head."""

    def __init__(self, peers: PeerCheck) -> None:
        self.peers = peers
        self.open: Counter[str] = Counter()
        self.budget_of: dict[str, str] = {}
        self.deadlines: dict[str, asyncio.TimerHandle] = {}

    def running(self) -> None:
        soft, hard = raise_file_limit()
        log.debug("open-file limit %d (hard %d)", soft, hard)
        install_http1_guards()
        asyncio.get_running_loop().set_exception_handler(RepeatedErrors())

    def client_connected(self, client: connection.Client) -> None:
        if client.error:  # refused already (peer.py)
            return
        peer = self.peers.peer(client)
        if peer is None:
            return
        budget = peer.budget
        if self.open[budget] >= CONNECTIONS_PER_PEER:
            client.error = "cao gateway: too many connections from this peer"
            note(f"more than {CONNECTIONS_PER_PEER} connections ({budget})")
            return
        self.open[budget] += 1
        self.budget_of[client.id] = budget
        loop = asyncio.get_running_loop()
        self.deadlines[client.id] = loop.call_later(HEAD_SECONDS, self.head_overdue, client)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if (deadline := self.deadlines.pop(flow.client_conn.id, None)) is not None:
            deadline.cancel()
        if flow.response is None and (name := oversized_conversation(flow.request.headers)):
            flow.response = refusal(400, f"cao gateway: {name} longer than 256 characters")

    def client_disconnected(self, client: connection.Client) -> None:
        if (deadline := self.deadlines.pop(client.id, None)) is not None:
            deadline.cancel()
        if (budget := self.budget_of.pop(client.id, None)) is not None:
            self.open[budget] -= 1
            if self.open[budget] <= 0:
                del self.open[budget]

    def head_overdue(self, client: connection.Client) -> None:
        self.deadlines.pop(client.id, None)
        note(f"no request head within {HEAD_SECONDS:.0f} s: closed")
        close_client(client)


def close_client(client: connection.Client) -> None:
    """Close a live client connection from an addon (mitmproxy 12.3: cancel the task that
    serves it, as its own inactivity timeout does in proxy/server.py `on_timeout`)."""
    proxyserver = ctx.master.addons.get("proxyserver")
    handler = proxyserver.connections.get(client.id) if proxyserver else None
    io = handler.transports.get(client) if handler else None
    if io is not None and io.handler is not None:
        io.handler.cancel("cao: no request head in time")
