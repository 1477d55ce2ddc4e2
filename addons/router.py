"""Per-request addons: answer locally what must not go upstream, pick the account, put its
credentials on the request (as a WireSecret, see redact.py) and take them off once sent."""

from __future__ import annotations

import json
import logging
import time

from mitmproxy import http

from cao.config import defaults
from cao.config.access import hide_route
from cao.config.auth import AccountAuth
from cao.config.pool import Availability
from cao.config.quota import usage_limit_body
from cao.config.tokens import RefreshFailed

from .access import fail_closed, is_websocket_upgrade
from .decision import decision_for, decision_of
from .gateway import Gateway, is_model_path, token_fingerprint
from .redact import redact, set_secret_header
from .routing import TURN_STATE_HEADER, Choice, conversation_id, is_continuation

log = logging.getLogger("cao.gateway")

JSON = {"content-type": "application/json", "cache-control": "no-store"}


def json_response(status: int, document: object) -> http.Response:
    return http.Response.make(status, json.dumps(document, indent=2).encode(), JSON)


class StatusEndpoint:
    """GET /__cao/status: the gateway's own view of the pool, never forwarded upstream."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is None and flow.request.path.split("?", 1)[0] == defaults.STATUS_PATH:
            flow.response = json_response(200, self.gateway.status_document())


async def route(
    gateway: Gateway, conversation: str | None, continuation: bool
) -> tuple[Choice, AccountAuth | None]:
    """The one routing decision for a model request, HTTP or WebSocket upgrade alike: the
    account (stickiness, strategy, --switch-at, cooldowns) and a token good for a while. An
    account whose refresh fails is marked and the next one is tried."""
    choice = gateway.choose(conversation, continuation)
    while choice.account is not None:
        try:
            return choice, await gateway.fresh_auth(choice.account)
        except RefreshFailed:  # the account is marked now; the next one is tried
            choice = gateway.choose(conversation, continuation)
    return choice, None


async def back_soonest(gateway: Gateway, now: float) -> tuple[Choice, AccountAuth | None]:
    """For a WebSocket upgrade no account can serve: the cooling account back soonest. A 429
    on the handshake would make Codex say only "exceeded retry limit"; on an open socket the
    gateway answers each request with the usage limit and its reset time (websocket.py)."""
    cooling = [v for v in gateway.live.views() if v.availability(now) is Availability.COOLING]
    for view in sorted(cooling, key=lambda v: v.state.cooling_until or now):
        try:
            return Choice(view), await gateway.fresh_auth(view)
        except RefreshFailed:
            continue
    return Choice(None), None


class AccountRouter:
    """Chooses the account for each model request and keeps secrets off the flow."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    @fail_closed
    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        request = flow.request
        decision = decision_for(flow, time.time())
        if self.gateway.passthrough or not is_model_path(request.path):
            decision.passthrough = True
            if "authorization" in request.headers:  # Codex's own token, forwarded as it is
                set_secret_header(
                    request.headers, "authorization", request.headers["authorization"]
                )
            self.gateway.debug.log_request(flow)
            return
        conversation = conversation_id(request.headers)
        choice, auth = await route(self.gateway, conversation, is_continuation(request.headers))
        now = time.time()
        if (choice.account is None or auth is None) and is_websocket_upgrade(request.headers):
            choice, auth = await back_soonest(self.gateway, now)
            decision.exhausted = choice.account is not None
        if choice.account is None or auth is None:
            resets_at = self.gateway.live.earliest_reset(now) or now + self.gateway.cooldown
            flow.response = http.Response.make(429, usage_limit_body(resets_at, now), JSON)
            return
        if choice.moved_from is not None:
            # The turn state was minted for the other account.
            request.headers.pop(TURN_STATE_HEADER, None)
        if not decision.exhausted:
            self.gateway.assign(conversation, choice)
        decision.account = choice.account.name
        decision.conversation = conversation
        token = auth.access_token or ""
        decision.token = token_fingerprint(token)  # to tell later whether it was rotated
        set_secret_header(request.headers, "authorization", f"Bearer {token}")
        if choice.account.auth.account_id:
            request.headers["chatgpt-account-id"] = choice.account.auth.account_id
        self.gateway.debug.log_request(flow)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        self._redact(flow)
        decision = decision_of(flow)
        if decision is not None and decision.account is not None and flow.response is not None:
            self.gateway.usage.record(decision.account, flow.response.headers)

    def error(self, flow: http.HTTPFlow) -> None:
        self._redact(flow)

    def _redact(self, flow: http.HTTPFlow) -> None:
        redact(flow.request.headers)


class RequestLog:
    """One line per request: method, path, account, status, duration. Never a header value."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def response(self, flow: http.HTTPFlow) -> None:
        self._log(flow, str(flow.response.status_code) if flow.response else "-")

    def error(self, flow: http.HTTPFlow) -> None:
        self._log(flow, f"error ({flow.error.msg if flow.error else 'unknown'})")

    def _log(self, flow: http.HTTPFlow, outcome: str) -> None:
        decision = decision_of(flow)
        took = (time.time() - decision.started) * 1000 if decision else 0.0
        account = "-"
        if decision is not None:
            account = decision.account or ("passthrough" if decision.passthrough else "-")
        path = hide_route(flow.request.path.split("?", 1)[0])
        log.info("%s %s account=%s %s %.0fms", flow.request.method, path, account, outcome, took)
