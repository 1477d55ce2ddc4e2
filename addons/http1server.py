"""The two places where the gateway changes mitmproxy 12.3's HTTP/1 server layer (the side that
talks to Codex), both in `Http1Server` (proxy/layers/http/_http1.py):

1. A request head above HEAD_LIMIT gets 431 while it arrives, never held whole.
2. An error answer mitmproxy makes itself (the upstream answered garbage, went away, could not
   be reached) is JSON with a summary that carries no upstream bytes: mitmproxy's own is an
   HTML page that quotes what the upstream sent ("unexpected server response: b'...'"), which
   can echo the request and its token. `error_summary` is also what the log shows.

These depend on mitmproxy's internals: pyproject pins mitmproxy 12.3, and
`install_http1_guards` refuses any other version rather than guess.

(1) mitmproxy 12.3 collects an HTTP/1 request head in h11's ReceiveBuffer with no size limit
(`Http1Server.read_headers`, proxy/layers/http/_http1.py: "FIXME: protect against header size
DoS"); `requestheaders` fires only once the whole head is in. So this module wraps that one
method: before mitmproxy looks for the end of the head, a buffer already past the limit without
one is answered 431 (JSON, `connection: close`), its write side closed, and every further byte
of the connection dropped as it comes (the head deadline in limits.py then closes it). The wrap
depends on mitmproxy's internals: pyproject pins mitmproxy 12.3, and `install_head_limit`
refuses any other version rather than guess.

HEAD_LIMIT: Codex's largest head is a few KB (a ~2 KB access-token JWT, the account id,
x-codex-turn-state, conversation ids, user agent); 32 KiB is well above it and at the size
common servers allow (nginx 4 x 8 KB, Node 16 KB).
"""

from __future__ import annotations

import json
import re
from collections.abc import Generator
from typing import Any

from h11._receivebuffer import ReceiveBuffer
from mitmproxy import http
from mitmproxy.connection import ConnectionState
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.layers.http._events import HttpEvent, ResponseProtocolError
from mitmproxy.proxy.layers.http._http1 import Http1Server
from mitmproxy.version import VERSION

from .notes import note

HEAD_LIMIT = 32 * 1024
PINNED = "12.3."
_END_OF_HEAD = re.compile(rb"\n\r?\n")
_BODY = json.dumps(
    {
        "error": {
            "type": "cao_gateway_refused",
            "code": None,
            "message": f"cao gateway: request head larger than {HEAD_LIMIT // 1024} KB",
        }
    }
).encode()
TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: application/json\r\ncache-control: no-store\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_BODY), _BODY)
)


def error_summary(message: str) -> str:
    """mitmproxy's error text cut before any detail (the detail may quote upstream bytes):
    "unexpected server response: b'...'" -> "unexpected server response"."""
    head = message.split(":", 1)[0].split("\n", 1)[0]
    shown = "".join(c for c in head if c.isprintable())[:80].strip()
    return shown or "upstream error"


class ErrorText:
    """Cuts a flow's error text to its summary before any other addon logs or keeps it."""

    def error(self, flow: http.HTTPFlow) -> None:
        if flow.error is not None:
            flow.error.msg = error_summary(flow.error.msg)


def error_answer(status: int, message: str) -> bytes:
    body = json.dumps(
        {
            "error": {
                "type": "cao_gateway_upstream_error",
                "code": None,
                "message": f"cao gateway: {error_summary(message)} ({status})",
            }
        }
    ).encode()
    reason = {502: b"Bad Gateway", 504: b"Gateway Timeout"}.get(status, b"Error")
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncache-control: no-store\r\n"
        b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (status, reason, len(body), body)
    )


def head_too_large(buffered: bytes, limit: int = HEAD_LIMIT) -> bool:
    """No end of head within the first `limit` bytes of what arrived (a pure rule)."""
    return len(buffered) > limit and _END_OF_HEAD.search(buffered, 0, limit) is None


def _drop(self: Http1Server, event: events.Event) -> Generator[commands.Command, Any, None]:
    """What a refused connection becomes: every byte dropped as it arrives."""
    self.buf = ReceiveBuffer()
    if isinstance(event, events.ConnectionClosed):
        yield commands.CloseConnection(self.conn)


_installed = False


def install_http1_guards() -> None:
    global _installed
    if _installed:
        return
    if not VERSION.startswith(PINNED):
        raise RuntimeError(f"cao's HTTP/1 guards are written for mitmproxy {PINNED}x")
    read_headers_unlimited = Http1Server.read_headers
    send_with_html_errors = Http1Server.send

    def read_headers(
        self: Http1Server, event: events.ConnectionEvent
    ) -> Generator[commands.Command, Any, None]:
        if (
            isinstance(event, events.DataReceived)
            and len(self.buf) > HEAD_LIMIT
            and head_too_large(bytes(self.buf))
        ):
            self.buf = ReceiveBuffer()
            self.state = lambda e: _drop(self, e)
            note(f"a request head larger than {HEAD_LIMIT // 1024} KB (431)")
            yield commands.SendData(self.conn, TOO_LARGE)
            yield commands.CloseTcpConnection(self.conn, half_close=True)
            return
        yield from read_headers_unlimited(self, event)

    def send(self: Http1Server, event: HttpEvent) -> Generator[commands.Command, Any, None]:
        # As mitmproxy's own branch for this event, with our body instead of its HTML page.
        if isinstance(event, ResponseProtocolError):
            if not (self.conn.state & ConnectionState.CAN_WRITE):
                return
            status = event.code.http_status_code()
            if not self.response and status is not None:
                yield commands.SendData(self.conn, error_answer(status, event.message))
            yield commands.CloseConnection(self.conn)
            return
        yield from send_with_html_errors(self, event)

    Http1Server.read_headers = read_headers  # type: ignore[method-assign]
    Http1Server.send = send  # type: ignore[method-assign]
    _installed = True
