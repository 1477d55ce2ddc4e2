"""SseScanner and StreamWatcher."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from mitmproxy.test import taddons, tflow, tutils

from cao.addons.decision import META, FlowDecision
from cao.addons.gateway import Gateway
from cao.addons.stream import SseScanner, StreamWatcher, stream_decoder
from cao.config.history import fingerprint
from tests.fakes.upstream import reasoning_item, sse, turn_events
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


def compressed(events: list[bytes], encoding: str) -> bytes:
    if encoding == "zstd":
        from backports import zstd

        compressor = zstd.ZstdCompressor()
        return (
            b"".join(compressor.compress(e, zstd.ZstdCompressor.FLUSH_BLOCK) for e in events)
            + compressor.flush()
        )
    import gzip

    return gzip.compress(b"".join(events))


@pytest.mark.parametrize("encoding", ["zstd", "gzip"])
def test_scanner_reads_compressed_streams_and_passes_the_bytes_as_sent(encoding: str) -> None:
    seen: list[dict[str, object]] = []
    scanner = SseScanner(seen.append, stream_decoder(encoding))
    item = reasoning_item("acct-a")
    failed = sse("response.failed", {"response": {"error": {"code": "usage_limit_reached"}}})
    stream = compressed([*turn_events(["x"], reasoning=item), failed], encoding)
    out = b""
    for i in range(0, len(stream), 5):  # arbitrary chunk boundaries, mid-frame
        out += scanner(stream[i : i + 5])
    assert out == stream  # Codex gets the compressed bytes untouched
    assert [e["type"] for e in seen] == ["response.output_item.done", "response.failed"]
    assert seen[0]["item"] == item


def test_zstd_decoder_crosses_frames_and_refuses_unknown_encodings() -> None:
    from backports import zstd

    decode = stream_decoder("zstd")
    assert decode is not None
    data = zstd.compress(b"one ") + zstd.compress(b"two")
    assert decode(data[:7]) + decode(data[7:]) == b"one two"
    assert stream_decoder("identity") is None and stream_decoder("") is None
    with pytest.raises(ValueError):
        stream_decoder("br")


def test_scanner_stops_reading_a_corrupt_stream_but_passes_it_on() -> None:
    seen: list[dict[str, object]] = []
    scanner = SseScanner(seen.append, stream_decoder("zstd"))
    assert scanner(b"definitely not zstd") == b"definitely not zstd"
    assert scanner(b"more") == b"more" and seen == []


def test_watcher_learns_blobs_and_flags_a_refusal_in_the_stream(data_dir: Path) -> None:
    write_account(data_dir, "a")
    gw = Gateway()
    with taddons.context(gw) as tctx:
        tctx.configure(gw, cao_data_dir=str(data_dir))
        watcher = StreamWatcher(gw)
        headers = ((b"content-type", b"text/event-stream"), (b"content-encoding", b"zstd"))
        flow = tflow.tflow(resp=tutils.tresp(headers=headers))
        flow.metadata[META] = FlowDecision(started=0.0, account="a", conversation="t1")
        watcher.responseheaders(flow)
        item = reasoning_item("acct-a")
        error = {"code": None, "message": "The encrypted content gAAA…x could not be verified."}
        events = [*turn_events(["x"], reasoning=item),
                  sse("response.failed", {"response": {"error": error}})]  # fmt: skip
        flow.response.stream(compressed(events, "zstd"))  # type: ignore[union-attr,operator]
        assert gw.history.ledger.owner(fingerprint(item["encrypted_content"])) == "a"
        record = gw.conversations.record("t1")
        assert record.minted_by == {"a"} and record.strip_unknown
