"""A usage-limit answer never reaches Codex while another account can serve the request."""

from __future__ import annotations

import json
import logging
import time

from mitmproxy import ctx, http

from cao.config.quota import QuotaKind, QuotaSignal, classify_error, usage_limit_body
from cao.config.tokens import RefreshFailed

from .decision import FlowDecision, decision_of, redirect_to_same
from .gateway import Gateway, token_fingerprint
from .history import send_for
from .router import JSON

log = logging.getLogger("cao.gateway")


def limit_signal(response: http.Response, now: float, cooldown: float) -> QuotaSignal | None:
    if response.status_code != 429 or response.stream:
        return None
    body = response.get_content(strict=False) or b""
    return classify_error(response.status_code, body, response.headers, now, cooldown)


def unavailable(until: float | None) -> http.Response:
    """What Codex gets when every account was refused with 401: a 503 it retries."""
    wait = max(1, round(until - time.time())) if until else 30
    body = {"error": {"type": "cao_gateway_unavailable", "code": None,
                      "message": "cao gateway: the upstream refused every account's token "
                                 f"(401); retrying in {wait} s"}}  # fmt: skip
    return http.Response.make(503, json.dumps(body).encode(), {**JSON, "retry-after": str(wait)})


def is_unauthorized(response: http.Response) -> bool:
    return response.status_code == 401 and not response.stream


class QuotaRetry:
    """On a 429 usage limit (or rate limit) the account cools down and the same request goes to
    the next usable account: by a 307 to the same URL that Codex follows (redirect mode, the
    answer streams), or re-sent by the gateway itself (inline mode, answered in one piece).
    A 401 gets one token refresh and the same treatment: Codex never sees it."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def response(self, flow: http.HTTPFlow) -> None:
        decision = decision_of(flow)
        if decision is None or flow.response is None or decision.account is None:
            return
        account = decision.account
        signal: QuotaSignal | None = None
        if is_unauthorized(flow.response):
            await self.gateway.recover_unauthorized(account, decision.token)
        else:
            signal = limit_signal(flow.response, time.time(), self.gateway.cooldown)
            if signal is None:
                return
            self.gateway.live.mark_limited(account, signal)
        if ctx.options.cao_retry_mode == "inline":
            await self.retry_inline(flow, decision, signal)
        else:
            self.redirect(flow, decision, signal)

    def redirect(
        self, flow: http.HTTPFlow, decision: FlowDecision, signal: QuotaSignal | None
    ) -> None:
        choice = self.gateway.choose(decision.conversation, continuation=False)
        if choice.account is None:
            self.exhausted(flow, signal)
            return
        flow.response = redirect_to_same(flow)
        decision.retry = choice.account.name

    async def retry_inline(
        self, flow: http.HTTPFlow, decision: FlowDecision, signal: QuotaSignal | None
    ) -> None:
        conversation = decision.conversation
        for _ in range(len(self.gateway.live.views()) + 1):
            choice = self.gateway.choose(conversation, continuation=False)
            if choice.account is None:
                break
            name = choice.account.name
            try:
                auth = await self.gateway.fresh_auth(choice.account)
            except RefreshFailed:
                continue
            self.gateway.assign(conversation, choice)
            decision.account = name
            token = auth.access_token or ""
            response = await send_for(self.gateway, flow, decision, choice.account, token)
            if is_unauthorized(response):
                await self.gateway.recover_unauthorized(name, token_fingerprint(token))
                continue
            next_signal = limit_signal(response, time.time(), self.gateway.cooldown)
            if next_signal is None:
                flow.response = response
                return
            self.gateway.live.mark_limited(name, next_signal)
            signal = next_signal
        self.exhausted(flow, signal)

    def exhausted(self, flow: http.HTTPFlow, signal: QuotaSignal | None) -> None:
        """No account left: a short rate limit passes through (Codex honours Retry-After); a
        usage limit becomes one 429 naming the earliest moment any account is usable again; a
        401 becomes a 503 (Codex retries it): a 401 would make Codex refresh its own login."""
        if signal is None:
            flow.response = unavailable(self.gateway.live.earliest_reset(time.time()))
            log.warning("every account was refused by the upstream (401): answered 503")
            return
        if signal.kind is QuotaKind.RATE_LIMIT:
            return
        now = time.time()
        resets_at = self.gateway.live.earliest_reset(now) or signal.resets_at
        flow.response = http.Response.make(429, usage_limit_body(resets_at, now), JSON)
        log.warning(
            "every account is limited; earliest reset %s",
            time.strftime("%H:%M:%S", time.localtime(resets_at)),
        )
