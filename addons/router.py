"""Per-request addons: answer locally what must not go upstream, pick the account, put its
credentials on the request as late as possible and take them off again as early as possible."""

from __future__ import annotations

import json
import logging
import time

from mitmproxy import http

from cao.config import defaults
from cao.config.quota import usage_limit_body

from .gateway import META, Gateway, flow_meta, is_model_path
from .routing import TURN_STATE_HEADER, conversation_id, is_continuation

log = logging.getLogger("cao.gateway")

# What the flow carries in place of a token whenever something (mitmweb, a log) can look at it.
REDACTED_AUTH = "Bearer <redacted by cao>"
JSON = {"content-type": "application/json", "cache-control": "no-store"}


def json_response(status: int, document: object) -> http.Response:
    return http.Response.make(status, json.dumps(document, indent=2).encode(), JSON)


class StatusEndpoint:
    """GET /__cao/status: the gateway's own view of the pool, never forwarded upstream."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.request.path.split("?", 1)[0] == defaults.STATUS_PATH:
            flow.response = json_response(200, self.gateway.status_document())


class WebSocketRefusal:
    """Answer WebSocket upgrades 426, so Codex uses HTTP/SSE at once (a usage limit inside a
    WebSocket session could not be retried on another account)."""

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is None and flow.request.headers.get("upgrade", "").lower() == "websocket":
            flow.response = http.Response.make(
                426, b"cao gateway: use HTTP/SSE", {"content-type": "text/plain"}
            )


class AccountRouter:
    """Chooses the account for each model request and keeps secrets off the flow."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        request = flow.request
        meta: dict[str, object] = {"started": time.time()}
        flow.metadata[META] = meta
        if "authorization" in request.headers:
            # Codex's own token: kept off the flow, put back only if it is forwarded as-is.
            self.gateway.client_tokens[flow.id] = request.headers["authorization"]
            request.headers["authorization"] = REDACTED_AUTH
        if self.gateway.passthrough or not is_model_path(request.path):
            meta["passthrough"] = True
            return
        conversation = conversation_id(request.headers)
        choice = self.gateway.choose(conversation, is_continuation(request.headers))
        if choice.account is None:
            now = time.time()
            resets_at = self.gateway.live.earliest_reset(now) or now + self.gateway.cooldown
            flow.response = http.Response.make(429, usage_limit_body(resets_at, now), JSON)
            meta["account"] = None
            return
        if choice.moved_from is not None:
            # The turn state was minted for the other account.
            request.headers.pop(TURN_STATE_HEADER, None)
        self.gateway.assign(conversation, choice)
        meta["account"] = choice.account.name
        meta["conversation"] = conversation
        if choice.account.auth.account_id:
            request.headers["chatgpt-account-id"] = choice.account.auth.account_id

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        self._redact(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._redact(flow)
        self.gateway.client_tokens.pop(flow.id, None)

    def response(self, flow: http.HTTPFlow) -> None:
        self.gateway.client_tokens.pop(flow.id, None)

    def _redact(self, flow: http.HTTPFlow) -> None:
        if "authorization" in flow.request.headers:
            flow.request.headers["authorization"] = REDACTED_AUTH


class AuthInjector:
    """Runs last in the addon chain (after mitmweb's view), right before the request goes out:
    the only moment the real token is on the flow."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def request(self, flow: http.HTTPFlow) -> None:
        meta = flow_meta(flow)
        if meta is None or flow.response is not None:
            return
        if meta.get("passthrough"):
            token = self.gateway.client_tokens.get(flow.id)
            if token is not None:
                flow.request.headers["authorization"] = token
            return
        name = meta.get("account")
        if isinstance(name, str):
            token = await self.gateway.access_token(name)
            flow.request.headers["authorization"] = f"Bearer {token}"


class RequestLog:
    """One line per request: method, path, account, status, duration. Never a header value."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def response(self, flow: http.HTTPFlow) -> None:
        self._log(flow, str(flow.response.status_code) if flow.response else "-")

    def error(self, flow: http.HTTPFlow) -> None:
        self._log(flow, f"error ({flow.error.msg if flow.error else 'unknown'})")

    def _log(self, flow: http.HTTPFlow, outcome: str) -> None:
        meta = flow_meta(flow) or {}
        started = meta.get("started")
        took = (time.time() - started) * 1000 if isinstance(started, float) else 0.0
        account = meta.get("account") or ("passthrough" if meta.get("passthrough") else "-")
        path = flow.request.path.split("?", 1)[0]
        log.info("%s %s account=%s %s %.0fms", flow.request.method, path, account, outcome, took)
