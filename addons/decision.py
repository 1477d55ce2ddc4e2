"""What the gateway decided for one flow: one typed object in `flow.metadata`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mitmproxy import http

META = "cao"  # flow.metadata key of the FlowDecision


@dataclass(eq=False)
class FlowDecision:
    """What the gateway decided for one flow, in `flow.metadata[META]`. Never a secret."""

    started: float
    client_path: str | None = field(default=None, repr=False)  # as Codex sent it (with the key)
    passthrough: bool = False  # Codex's own auth goes upstream (not model traffic, or the option)
    account: str | None = None  # the pool account serving it (None: answered locally)
    conversation: str | None = None
    token: str | None = None  # fingerprint of the access token sent, to spot a rotation
    retry: str | None = None  # the account a 307 sends Codex's re-send to
    # The body as Codex sent it, kept once the history rewrite changed it (an inline retry on
    # another account rewrites from it again).
    original_body: bytes | None = field(default=None, repr=False)
    strip_unknown: bool = False  # strip every blob not proven to be the account's (no id)
    stripped_unknown: bool = False  # this request already went without such blobs
    # A WebSocket upgrade no account can serve: it goes to the account back soonest, and its
    # requests are answered with the usage limit (websocket.py).
    exhausted: bool = False
    socket: Any = field(default=None, repr=False)  # websocket.SocketState once upgraded

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        # mitmproxy deep-copies metadata to save, export or show a flow, and can serialize
        # only plain values: they get this summary (no body).
        return {
            "account": self.account,
            "passthrough": self.passthrough,
            "conversation": self.conversation,
            "retry": self.retry,
            "history_rewritten": self.original_body is not None,
        }


def decision_of(flow: http.HTTPFlow) -> FlowDecision | None:
    decision = flow.metadata.get(META)
    return decision if isinstance(decision, FlowDecision) else None


def decision_for(flow: http.HTTPFlow, started: float) -> FlowDecision:
    """The flow's decision, opened if no addon did yet."""
    decision = decision_of(flow)
    if decision is None:
        decision = flow.metadata[META] = FlowDecision(started=started)
    return decision


def redirect_to_same(flow: http.HTTPFlow) -> http.Response:
    """A 307 to the URL Codex used (Codex re-sends the same request to it)."""
    decision = decision_of(flow)
    path = decision.client_path if decision and decision.client_path else flow.request.path
    # A relative Location: the client resolves it against the gateway's own address.
    return http.Response.make(307, b"", {"location": path, "cache-control": "no-store"})
