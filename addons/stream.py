"""Server-sent event answers pass through event by event; the gateway reads along."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from mitmproxy import http

from cao.config.quota import classify_stream_event

from .gateway import Gateway, flow_meta

log = logging.getLogger("cao.gateway")

# Only events carrying one of these are parsed; the rest pass by with a substring check.
WATCHED = (b"response.failed",)
MAX_PENDING = 1 << 20  # an event larger than this is not inspected


def sse_events(block: bytes) -> Iterator[dict[str, Any]]:
    """The JSON `data:` payloads of complete SSE events in `block`."""
    for event in block.split(b"\n\n"):
        data = b"\n".join(
            line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:")
        )
        if not data:
            continue
        try:
            payload = json.loads(data)
        except ValueError:
            continue
        if isinstance(payload, dict):
            yield payload


class SseScanner:
    """A `flow.response.stream` callable: returns each chunk unchanged, and hands the events that
    matter to `on_event` once they are complete."""

    def __init__(self, on_event: Callable[[dict[str, Any]], None]) -> None:
        self.on_event = on_event
        self.pending = b""

    def __call__(self, chunk: bytes) -> bytes:
        if chunk:
            self.feed(chunk.replace(b"\r\n", b"\n") if b"\r" in chunk else chunk)
        return chunk

    def feed(self, chunk: bytes) -> None:
        data = self.pending + chunk if self.pending else chunk
        end = data.rfind(b"\n\n")
        if end < 0:
            self.pending = data if len(data) <= MAX_PENDING else b""
            return
        complete, rest = data[:end], data[end + 2 :]
        self.pending = rest if len(rest) <= MAX_PENDING else b""
        if any(marker in complete for marker in WATCHED):
            for event in sse_events(complete):
                self.on_event(event)


def is_event_stream(response: http.Response) -> bool:
    return str(response.headers.get("content-type", "")).startswith("text/event-stream")


class StreamWatcher:
    """Streams 2xx event-stream answers (others stay buffered for the quota check), and marks an
    account limited when a `response.failed` usage-limit event arrives inside a 200 stream:
    Codex re-sends the turn, and the re-send goes to the next account."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        if response is None or not (200 <= response.status_code < 300):
            return
        if not is_event_stream(response):
            return
        meta = flow_meta(flow)
        account = meta.get("account") if meta else None
        if isinstance(account, str):
            response.stream = SseScanner(lambda event: self.on_event(account, event))
        else:
            response.stream = True

    def on_event(self, account: str, event: dict[str, Any]) -> None:
        signal = classify_stream_event(event, time.time(), self.gateway.cooldown)
        if signal is not None:
            self.gateway.live.mark_limited(account, signal)
