"""A usage-limit answer never reaches Codex while another account can serve the request."""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx
from mitmproxy import ctx, http

from cao.config.pool import AccountView
from cao.config.quota import QuotaKind, QuotaSignal, classify_error, usage_limit_body
from cao.config.tokens import RefreshFailed

from .gateway import Gateway, flow_meta, token_fingerprint
from .router import JSON
from .routing import TURN_STATE_HEADER
from .stream import is_event_stream, sse_events

log = logging.getLogger("cao.gateway")

# Headers that describe one hop, or that the gateway sets itself, are not copied to a re-send.
NOT_FORWARDED = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "content-length",
        "host",
        "authorization",
        "chatgpt-account-id",
        TURN_STATE_HEADER,
    }
)
NOT_RETURNED = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length"})


def limit_signal(response: http.Response, now: float, cooldown: float) -> QuotaSignal | None:
    if response.status_code != 429 or response.stream:
        return None
    body = response.get_content(strict=False) or b""
    return classify_error(response.status_code, body, response.headers, now, cooldown)


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
        meta = flow_meta(flow)
        account = meta.get("account") if meta else None
        if meta is None or flow.response is None or not isinstance(account, str):
            return
        signal: QuotaSignal | None = None
        if is_unauthorized(flow.response):
            token = meta.get("token")
            await self.gateway.recover_unauthorized(
                account, token if isinstance(token, str) else None
            )
        else:
            signal = limit_signal(flow.response, time.time(), self.gateway.cooldown)
            if signal is None:
                return
            self.gateway.live.mark_limited(account, signal)
        if ctx.options.cao_retry_mode == "inline":
            await self.retry_inline(flow, meta, signal)
        else:
            self.redirect(flow, meta, signal)

    def redirect(
        self, flow: http.HTTPFlow, meta: dict[str, Any], signal: QuotaSignal | None
    ) -> None:
        choice = self.gateway.choose(meta.get("conversation"), continuation=False)
        if choice.account is None:
            self.exhausted(flow, signal)
            return
        # A relative Location: the client resolves it against the gateway's own address.
        flow.response = http.Response.make(
            307, b"", {"location": flow.request.path, "cache-control": "no-store"}
        )
        meta["retry"] = choice.account.name

    async def retry_inline(
        self, flow: http.HTTPFlow, meta: dict[str, Any], signal: QuotaSignal | None
    ) -> None:
        conversation = meta.get("conversation")
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
            meta["account"] = name
            token = auth.access_token or ""
            response = await self.resend(flow, choice.account, token)
            self.gateway.usage.record(name, response.headers)
            if is_unauthorized(response):
                await self.gateway.recover_unauthorized(name, token_fingerprint(token))
                continue
            next_signal = limit_signal(response, time.time(), self.gateway.cooldown)
            if next_signal is None:
                self.watch_events(name, response)
                flow.response = response
                return
            self.gateway.live.mark_limited(name, next_signal)
            signal = next_signal
        self.exhausted(flow, signal)

    async def resend(self, flow: http.HTTPFlow, account: AccountView, token: str) -> http.Response:
        request = flow.request
        headers = [
            (k, v) for k, v in request.headers.items(multi=True) if k.lower() not in NOT_FORWARDED
        ]
        headers.append(("authorization", f"Bearer {token}"))
        if account.auth.account_id:
            headers.append(("chatgpt-account-id", account.auth.account_id))
        client = self.gateway.client()
        started = time.time()
        try:
            upstream = await client.send(
                client.build_request(
                    request.method, request.url, headers=headers, content=request.raw_content or b""
                ),
                stream=True,
            )
            try:
                raw = b"".join([chunk async for chunk in upstream.aiter_raw()])
            finally:
                await upstream.aclose()
        except httpx.HTTPError as e:
            log.warning("re-sending to account %s failed: %s", account.name, type(e).__name__)
            return http.Response.make(
                502,
                f"cao gateway: upstream failed ({type(e).__name__})".encode(),
                {"content-type": "text/plain"},
            )
        fields = [
            (k.encode(), v.encode())
            for k, v in upstream.headers.multi_items()
            if k.lower() not in NOT_RETURNED
        ]
        fields.append((b"content-length", str(len(raw)).encode()))
        return http.Response(
            http_version=b"HTTP/1.1",
            status_code=upstream.status_code,
            reason=upstream.reason_phrase.encode(),
            headers=http.Headers(fields),
            content=raw,
            trailers=None,
            timestamp_start=started,
            timestamp_end=time.time(),
        )

    def watch_events(self, account: str, response: http.Response) -> None:
        """An answer that arrived whole still gets the in-stream usage-limit check."""
        if is_event_stream(response) and b"response.failed" in (response.raw_content or b""):
            from cao.config.quota import classify_stream_event

            for event in sse_events(response.get_content(strict=False) or b""):
                signal = classify_stream_event(event, time.time(), self.gateway.cooldown)
                if signal is not None:
                    self.gateway.live.mark_limited(account, signal)

    def exhausted(self, flow: http.HTTPFlow, signal: QuotaSignal | None) -> None:
        """No account left: a short rate limit (or a 401) passes through (Codex honours
        Retry-After); a usage limit becomes one 429 naming the earliest moment any account is
        usable again."""
        if signal is None or signal.kind is QuotaKind.RATE_LIMIT:
            return
        now = time.time()
        resets_at = self.gateway.live.earliest_reset(now) or signal.resets_at
        flow.response = http.Response.make(429, usage_limit_body(resets_at, now), JSON)
        log.warning(
            "every account is limited; earliest reset %s",
            time.strftime("%H:%M:%S", time.localtime(resets_at)),
        )
