"""Only this user's Codex may use the gateway: checked before anything else is done.

- `Host` must name the address the gateway listens on (a DNS-rebinding page sends its own name).
- A request with `Origin`, a `Sec-Fetch-Site` other than `none`, or the `OPTIONS` method comes
  from a browser: refused, and no CORS header is ever sent.
- The connection was made by this OS user's process (peer.py, checked once per connection).
  Where the OS cannot vouch (a remote client of an --allow-remote gateway) or --require-key
  asks for it, the path must start with `/cao/<this install's key>`; a key in the path is
  always checked and stripped (old shims keep working).
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
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from mitmproxy import ctx, http
from mitmproxy.exceptions import OptionsError
from mitmproxy.net.http import url

from cao.config.access import ROUTE, gateway_key, key_path, strip_route
from cao.config.store import Store

from .decision import decision_for
from .peer import Peer, PeerCheck

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


# Where the gateway's own and Codex's paths live; a path that names them in another case is not
# canonical (a lenient upstream might still route it).
_OWN_PREFIXES = ("/backend-api", "/__cao", "/cao/")
HTTP_VERSIONS = frozenset({"HTTP/1.1", "HTTP/1.0"})


def non_canonical(path: str) -> bool:
    """`//`, `;params`, a known prefix in another case, or no leading `/` (a path Codex never
    sends, which a lenient router upstream might still take for an API path)."""
    path = path.split("?", 1)[0]
    if not path.startswith("/") or "//" in path or ";" in path:
        return True
    lowered = path.lower()
    return any(lowered.startswith(p) and not path.startswith(p) for p in _OWN_PREFIXES)


def is_websocket_upgrade(headers: Mapping[str, str]) -> bool:
    """An `Upgrade` header naming websocket among its tokens (`websocket, foo` included):
    the one rule for the HTTP and WebSocket paths alike."""
    tokens = headers.get("upgrade", "").split(",")
    return any(token.strip().lower().split("/", 1)[0] == "websocket" for token in tokens)


def served_path(path: str, peer: Peer | None, key: str | None) -> str | tuple[int, str]:
    """The path to serve (a valid key taken off), or why the request is refused."""
    if peer is None:  # never checked: nothing vouches for it
        return 403, "cao gateway: not this user's Codex"
    if path.startswith(ROUTE):
        stripped = strip_route(path, key) if key else None
        if stripped is None:
            return 403, "cao gateway: wrong key (rotated? `cao gateway enable` or `url --key`)"
    elif peer.key_required:
        return 403, "cao gateway: this gateway needs its key (`cao gateway url --key`)"
    else:
        stripped = path
    if hides_a_segment(stripped):
        return 400, "cao gateway: dot-segments and encoded separators are not allowed"
    if non_canonical(stripped):
        return 400, "cao gateway: not a canonical path"
    return stripped


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

    def __init__(self, peers: PeerCheck) -> None:
        self.peers = peers
        self.key: str | None = None
        self.store: Store | None = None
        self.key_stamp: int | None = None
        self.hosts: frozenset[str] = frozenset()

    def configure(self, updated: set[str]) -> None:
        if "cao_data_dir" in updated and ctx.options.cao_data_dir:
            self.store = Store(Path(ctx.options.cao_data_dir))
            self.key_stamp = None
            if self.current_key() is None:
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
        problem = self.problem(request)
        if problem is not None:
            flow.response = refusal(*problem)
            return
        key = self.current_key() if request.path.startswith(ROUTE) else self.key
        stripped = served_path(request.path, self.peers.peer(flow.client_conn), key)
        if isinstance(stripped, tuple):
            flow.response = refusal(*stripped)
            return
        decision_for(flow, time.time()).client_path = request.path
        request.path = stripped
        # What mitmproxy does in reverse mode unless keep_host_header: the upstream's name.
        request.host_header = url.hostport(request.scheme, request.host, request.port)

    def current_key(self) -> str | None:
        """The install's key, read again when `cao gateway rotate-key` replaced the file."""
        if self.store is None:
            return self.key
        try:
            stamp = key_path(self.store).stat().st_mtime_ns
        except OSError:
            return self.key
        if stamp != self.key_stamp:
            self.key = gateway_key(self.store, create=False) or self.key
            self.key_stamp = stamp
        return self.key

    def problem(self, request: http.Request) -> tuple[int, str] | None:
        """Host and browser checks, before the key is looked at."""
        host = (request.host_header or "").lower()
        if request.http_version not in HTTP_VERSIONS:
            return 400, "cao gateway: HTTP/1.1 only"
        if request.authority:  # an absolute-form target would name its own upstream
            return 400, "cao gateway: absolute-form request targets are not allowed"
        if host not in self.hosts:
            return 403, "cao gateway: wrong Host (it serves only its own address)"
        if request.method == "OPTIONS" or "origin" in request.headers:
            return 403, "cao gateway: browsers may not use this gateway"
        if request.headers.get("sec-fetch-site", "none").lower() != "none":
            return 403, "cao gateway: browsers may not use this gateway"
        return None
