"""Debugging aids that never leak: CAO_DEBUG_HEADERS and CAO_CAPTURE_BODY (environment)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mitmproxy import http

from cao.config.files import write_atomic

from .redact import sanitized

log = logging.getLogger("cao.gateway")

DEFAULT_CAPTURE_PATH = "/tmp/cao-last-body.json"


def enabled(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes", "on")


class DebugHeaders:
    """CAO_DEBUG_HEADERS=1: the request as it goes upstream and the answer's headers."""

    def __init__(self) -> None:
        self.on = enabled("CAO_DEBUG_HEADERS")

    def log_request(self, flow: http.HTTPFlow) -> None:
        if self.on:
            r = flow.request
            log.info("debug request %s %s | %s", r.method, r.path, sanitized(r.headers))

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if self.on and flow.response is not None:
            log.info(
                "debug response %s %s | %s",
                flow.response.status_code, flow.request.path, sanitized(flow.response.headers),
            )  # fmt: skip


class CaptureBody:
    """CAO_CAPTURE_BODY=1: the last request body, decoded (zstd), to a 0600 file."""

    def __init__(self) -> None:
        self.on = enabled("CAO_CAPTURE_BODY")
        self.path = Path(os.environ.get("CAO_CAPTURE_BODY_PATH") or DEFAULT_CAPTURE_PATH)

    def request(self, flow: http.HTTPFlow) -> None:
        if not self.on or not flow.request.raw_content:
            return
        body = flow.request.get_content(strict=False) or b""
        try:
            write_atomic(self.path, body, mode=0o600)
        except OSError as e:
            log.warning("cannot write %s: %s", self.path, e.strerror)
