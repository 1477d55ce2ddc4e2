"""Server-sent event answers pass through event by event; the gateway reads along."""

from __future__ import annotations

import json
import logging
import time
import zlib
from collections.abc import Callable, Iterator
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from mitmproxy import http

from cao.config.history import is_rejection_event
from cao.config.quota import classify_stream_event

from .decision import FlowDecision, decision_of

if TYPE_CHECKING:
    from .gateway import Gateway

try:  # the zstd module mitmproxy itself uses
    from compression import zstd  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # Python < 3.14
    from backports import zstd  # type: ignore[no-redef,unused-ignore]

log = logging.getLogger("cao.gateway")

# Only events carrying one of these are parsed; the rest pass by with a substring check.
WATCHED = (b"response.failed", b"encrypted_content")
MAX_PENDING = 1 << 20  # an event larger than this is not inspected

Decoder = Callable[[bytes], bytes]


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


class ZstdFrames:
    """Decodes a zstd stream chunk by chunk, across frame boundaries."""

    def __init__(self) -> None:
        self.decompressor = zstd.ZstdDecompressor()

    def __call__(self, chunk: bytes) -> bytes:
        out = b""
        while chunk:
            out += self.decompressor.decompress(chunk)
            if not self.decompressor.eof:
                break
            chunk = self.decompressor.unused_data
            self.decompressor = zstd.ZstdDecompressor()
        return out


def stream_decoder(content_encoding: str) -> Decoder | None:
    """Incremental decoding of a compressed stream (Codex 0.171+ offers zstd and gzip), so the
    gateway reads events while the client gets the bytes as sent. None for identity; raises
    ValueError for an encoding it cannot read."""
    name = content_encoding.strip().lower()
    if name in ("", "identity"):
        return None
    if name == "zstd":
        return ZstdFrames()
    if name in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress
    if name == "deflate":
        return zlib.decompressobj().decompress
    raise ValueError(f"cannot read a {name!r} stream")


class SseScanner:
    """A `flow.response.stream` callable: returns each chunk unchanged, and hands the events that
    matter to `on_event` once they are complete (decoded first if the stream is compressed)."""

    def __init__(
        self, on_event: Callable[[dict[str, Any]], object], decoder: Decoder | None = None
    ) -> None:
        self.on_event = on_event
        self.decoder = decoder
        self.pending = b""
        self.broken = False

    def __call__(self, chunk: bytes) -> bytes:
        if chunk and not self.broken:
            try:
                data = self.decoder(chunk) if self.decoder is not None else chunk
            except Exception as e:  # a corrupt stream is Codex's to judge; we stop reading it
                log.warning("cannot decode an event stream (%s): not inspected", type(e).__name__)
                self.broken = True
                return chunk
            if data:
                self.feed(data.replace(b"\r\n", b"\n") if b"\r" in data else data)
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


class Outcome(StrEnum):
    """What a `response.failed` event meant for the request (the WebSocket relay acts on it)."""

    LIMITED = "limited"  # the account cooled: the request belongs on another account
    RESEND = "resend"  # a refused blob: send again without unproven ones


class AnswerReader:
    """What one answer's events tell the gateway: a usage limit inside a 200 stream (the
    account cools; Codex re-sends and the re-send goes elsewhere), a refused blob inside it
    (Codex re-sends; the re-send goes without unproven blobs), and the blobs it mints.
    SSE events and WebSocket frames alike."""

    def __init__(self, gateway: Gateway, decision: FlowDecision, account: str) -> None:
        self.gateway = gateway
        self.decision = decision
        self.account = account

    def on_event(self, event: dict[str, Any]) -> Outcome | None:
        if event.get("type") == "response.failed":
            signal = classify_stream_event(event, time.time(), self.gateway.cooldown)
            if signal is not None:
                self.gateway.live.mark_limited(self.account, signal)
                return Outcome.LIMITED
            if is_rejection_event(event) and self.gateway.history.take_rejection(self.decision):
                return Outcome.RESEND
            return None
        self.gateway.history.learn(self.account, self.decision.conversation, event)
        return None

    def read_whole(self, response: http.Response) -> None:
        """An answer that arrived in one piece (inline retry) is read the same way."""
        if not is_event_stream(response):
            return
        raw = response.raw_content or b""
        if not raw:
            return
        body = response.get_content(strict=False) or b""
        if any(marker in body for marker in WATCHED):
            for event in sse_events(body.replace(b"\r\n", b"\n")):
                self.on_event(event)


class StreamWatcher:
    """Streams 2xx event-stream answers (others stay buffered for the quota check) and reads
    their events along the way (AnswerReader)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        if response is None or not (200 <= response.status_code < 300):
            return
        if not is_event_stream(response):
            return
        decision = decision_of(flow)
        if decision is None or decision.account is None:
            response.stream = True
            return
        try:
            decoder = stream_decoder(response.headers.get("content-encoding", ""))
        except ValueError as e:
            log.warning("%s: events not inspected", e)
            response.stream = True
            return
        reader = AnswerReader(self.gateway, decision, decision.account)
        response.stream = SseScanner(reader.on_event, decoder)
