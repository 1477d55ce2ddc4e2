"""Only this user's Codex may use the gateway: checked before anything else is done.

- `Host` must name the address the gateway listens on (a DNS-rebinding page sends its own name).
- A request with `Origin`, a `Sec-Fetch-Site` other than `none`, or the `OPTIONS` method comes
  from a browser: refused, and no CORS header is ever sent.
- The path must start with `/cao/<this install's key>` (config/access.py); the gateway strips it.
- The rest may not hide a dot-segment or an encoded `/`, `.` or `\\`.
- A body must declare its length: larger than the limit (mitmproxy's body_size_limit), it is
  refused with 413 before it is read. A chunked one would be held until it passed the limit:
  its connection is closed unread.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from mitmproxy import ctx, http
from mitmproxy.exceptions import OptionsError
from mitmproxy.net.http import url

from cao.config.access import gateway_key, strip_route
from cao.config.store import Store

from .decision import decision_for

log = logging.getLogger("cao.gateway")

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
_ENCODED = ("%2e", "%2f", "%5c")
JSON = {"content-type": "application/json", "cache-control": "no-store"}


def refusal(status: int, message: str) -> http.Response:
    body = {"error": {"type": "cao_gateway_refused", "code": None, "message": message}}
    return http.Response.make(status, json.dumps(body).encode(), JSON)


def hides_a_segment(path: str) -> bool:
    """A dot-segment, or a percent-encoded `.`, `/` or `\\`, anywhere in the path."""
    path = path.split("?", 1)[0]
    lowered = path.lower()
    if any(code in lowered for code in _ENCODED) or "\\" in path:
        return True
    return any(segment in (".", "..") for segment in path.split("/"))


def route_problem(stripped: str | None) -> tuple[int, str] | None:
    """What is wrong with the path once the key is taken off (None: no key, or not ours)."""
    if stripped is None:
        return 403, "cao gateway: not this user's Codex (route Codex with `cao gateway url`)"
    if hides_a_segment(stripped):
        return 400, "cao gateway: dot-segments and encoded separators are not allowed"
    return None


def allowed_hosts(addresses: list[tuple[str, int]]) -> frozenset[str]:
    """The Host values that name where the gateway listens."""
    names: set[str] = set()
    for host, port in addresses:
        names.update(f"{name}:{port}" for name in LOOPBACK_NAMES)
        if host not in ("127.0.0.1", "::1", "0.0.0.0", "::"):  # noqa: S104
            names.add(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    return frozenset(names)


def fail_closed[Hook: Callable[..., Any]](hook: Hook) -> Hook:
    """An unexpected error on the request path answers 503 (Codex retries it) instead of
    letting the request go upstream as it is: never with the wrong credentials."""

    @functools.wraps(hook)
    async def guarded(self: object, flow: http.HTTPFlow) -> None:
        try:
            result = hook(self, flow)
            if isinstance(result, Awaitable):
                await result
        except Exception as e:
            log.error(
                "%s failed on %s (%s): answered 503",
                type(self).__name__,
                flow.request.method,
                type(e).__name__,
            )
            flow.response = refusal(503, "cao gateway: internal error, try again")

    return guarded  # type: ignore[return-value]


class AccessGuard:
    """Answers 403/400 to anything that is not this user's Codex, before any other addon."""

    def __init__(self) -> None:
        self.key: str | None = None
        self.hosts: frozenset[str] = frozenset()

    def configure(self, updated: set[str]) -> None:
        if "cao_data_dir" in updated and ctx.options.cao_data_dir:
            self.key = gateway_key(Store(Path(ctx.options.cao_data_dir)), create=False)
            if self.key is None:
                raise OptionsError("no gateway key in the data dir: start with `cao gateway start`")
        if "keep_host_header" in updated and not ctx.options.keep_host_header:
            raise OptionsError("the gateway needs keep_host_header (it checks Host itself)")

    def running(self) -> None:
        proxyserver = ctx.master.addons.get("proxyserver")
        addresses = proxyserver.listen_addrs() if proxyserver else []
        self.hosts = allowed_hosts([(str(a[0]), int(a[1])) for a in addresses if len(a) >= 2])

    @fail_closed
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        request = flow.request
        if "transfer-encoding" in request.headers:
            # Codex sends its bodies with a length. mitmproxy reads a body before it sends
            # any answer, and one of unknown length would be held until it passed the limit:
            # the connection is closed instead, before a byte of it is read.
            log.warning("refused a request body without Content-Length: connection closed")
            flow.kill()
            return
        stripped = strip_route(request.path, self.key) if self.key else None
        problem = self.problem(request) or route_problem(stripped)
        if problem is not None:
            flow.response = refusal(*problem)
            return
        assert stripped is not None  # route_problem said so
        decision_for(flow, time.time()).client_path = request.path
        request.path = stripped
        # What mitmproxy does in reverse mode unless keep_host_header: the upstream's name.
        request.host_header = url.hostport(request.scheme, request.host, request.port)

    def problem(self, request: http.Request) -> tuple[int, str] | None:
        """Host and browser checks, before the key is looked at."""
        host = (request.host_header or "").lower()
        if host not in self.hosts:
            return 403, "cao gateway: wrong Host (it serves only its own address)"
        if request.method == "OPTIONS" or "origin" in request.headers:
            return 403, "cao gateway: browsers may not use this gateway"
        if request.headers.get("sec-fetch-site", "none").lower() != "none":
            return 403, "cao gateway: browsers may not use this gateway"
        return None
