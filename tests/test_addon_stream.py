"""SseScanner and StreamWatcher."""

from __future__ import annotations

import json
import time
from pathlib import Path

from mitmproxy.test import taddons, tflow, tutils

from cao.addons.decision import META, FlowDecision
from cao.addons.gateway import Gateway
from cao.addons.stream import SseScanner, StreamWatcher
from tests.fakes.upstream import sse, turn_events
from tests.helpers import write_account


def test_scanner_passes_bytes_unchanged_and_finds_split_events() -> None:
    seen: list[dict[str, object]] = []
    scanner = SseScanner(seen.append)
    failed = sse("response.failed", {"response": {"error": {"code": "usage_limit_reached"}}})
    stream = b"".join(turn_events(["x"])) + failed
    out = b""
    for i in range(0, len(stream), 7):  # arbitrary chunk boundaries
        out += scanner(stream[i : i + 7])
    assert out == stream
    assert [e["type"] for e in seen] == ["response.failed"]


def test_watcher_streams_only_2xx_event_streams_and_marks_limit(data_dir: Path) -> None:
    write_account(data_dir, "a")
    gw = Gateway()
    with taddons.context(gw) as tctx:
        tctx.configure(gw, cao_data_dir=str(data_dir))
        watcher = StreamWatcher(gw)
        flow = tflow.tflow(resp=tutils.tresp(headers=((b"content-type", b"text/event-stream"),)))
        flow.metadata[META] = FlowDecision(started=0.0, account="a")
        watcher.responseheaders(flow)
        assert callable(flow.response.stream)  # type: ignore[union-attr]
        resets_at = int(time.time()) + 3600
        event = {"type": "response.failed", "response": {"error": {
            "code": "usage_limit_reached", "resets_at": resets_at}}}  # fmt: skip
        flow.response.stream(f"data: {json.dumps(event)}\n\n".encode())  # type: ignore[union-attr,operator]
        gw.live.wait_written()
        assert gw.live.store.load_state().get("a").cooling_until == resets_at

        limited = tflow.tflow(resp=tutils.tresp(status_code=429))
        watcher.responseheaders(limited)
        assert not limited.response.stream  # type: ignore[union-attr]
