"""A conversation that moves to another account keeps working: encrypted content the new
account did not mint is taken out of the history before the request goes (proactive), and a
refusal of content of unknown origin is answered by sending once more without it (reactive)."""

from __future__ import annotations

import json
import logging
import time

from mitmproxy import ctx, http

from cao.config.history import is_rejection
from cao.config.pool import AccountView
from cao.config.tokens import RefreshFailed

from .access import fail_closed
from .decision import FlowDecision, decision_of, redirect_to_same
from .gateway import Gateway
from .stream import AnswerReader
from .upstream import resend

log = logging.getLogger("cao.gateway")

COMPACT_SUFFIX = "/responses/compact"


def refused_history(response: http.Response) -> bool:
    if response.status_code != 400 or response.stream:
        return False
    return is_rejection(400, response.get_content(strict=False) or b"")


async def send_for(
    gateway: Gateway, flow: http.HTTPFlow, decision: FlowDecision, view: AccountView, token: str
) -> http.Response:
    """The one way the gateway re-sends a request itself: its history made acceptable to
    `view`'s account, sent once more without unproven blobs if that account refuses one, and
    the answer read for usage, limits and the blobs it mints."""
    history = gateway.history
    history.prepare(flow.request, decision, view.name)
    response = await resend(gateway.client(), flow.request, view, token)
    if refused_history(response) and history.take_rejection(decision):
        history.prepare(flow.request, decision, view.name)
        response = await resend(gateway.client(), flow.request, view, token)
    gateway.usage.record(view.name, response.headers)
    if 200 <= response.status_code < 300:
        AnswerReader(gateway, decision, view.name).read_whole(response)
    return response


class HistoryGuard:
    """Rewrites model requests for the account that serves them, learns what compaction answers
    mint, and retries a request the upstream refused for its history (once)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        decision = decision_of(flow)
        if decision is None or decision.account is None or flow.response is not None:
            return
        if flow.request.method == "POST":
            self.gateway.history.prepare(flow.request, decision, decision.account)

    async def response(self, flow: http.HTTPFlow) -> None:
        decision = decision_of(flow)
        response = flow.response
        if decision is None or decision.account is None or response is None or response.stream:
            return
        if response.status_code == 200 and flow.request.path.split("?", 1)[0].endswith(
            COMPACT_SUFFIX
        ):
            self._learn_compaction(decision, decision.account, response)
            return
        if not refused_history(response) or not self.gateway.history.take_rejection(decision):
            return
        if ctx.options.cao_retry_mode == "redirect" and decision.conversation:
            # Codex re-sends the same body; the conversation is now stripped up front.
            flow.response = redirect_to_same(flow)
            decision.retry = decision.account
            return
        view = self.gateway.live.view(decision.account)
        if view is None or not view.usable(time.time()):
            return
        try:
            auth = await self.gateway.fresh_auth(view)
        except RefreshFailed:
            return  # the account is marked; Codex gets the refusal and re-sends
        flow.response = await send_for(self.gateway, flow, decision, view, auth.access_token or "")

    def _learn_compaction(
        self, decision: FlowDecision, account: str, response: http.Response
    ) -> None:
        try:
            document = json.loads(response.get_content(strict=False) or b"")
        except ValueError:
            return
        self.gateway.history.learn(account, decision.conversation, document)
