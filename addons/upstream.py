"""Requests the gateway sends upstream itself (an inline retry), answered in one piece."""

from __future__ import annotations

import logging
import time

import httpx
from mitmproxy import http

from cao.config.pool import AccountView

from .routing import TURN_STATE_HEADER

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


async def resend(
    client: httpx.AsyncClient, request: http.Request, account: AccountView, token: str
) -> http.Response:
    """`request` (its body as it is now) sent again with `account`'s credentials. The answer's
    bytes are kept as sent (a compressed answer stays compressed, with its header)."""
    headers = [
        (k, v) for k, v in request.headers.items(multi=True) if k.lower() not in NOT_FORWARDED
    ]
    headers.append(("authorization", f"Bearer {token}"))
    if account.auth.account_id:
        headers.append(("chatgpt-account-id", account.auth.account_id))
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
