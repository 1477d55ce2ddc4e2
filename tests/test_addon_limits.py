"""The pure rules of addons/limits.py and addons/http1server.py."""

from __future__ import annotations

import asyncio
import logging
import resource

import pytest
from mitmproxy import http

from cao.addons.http1server import HEAD_LIMIT, head_too_large
from cao.addons.limits import RepeatedErrors, oversized_conversation, raise_file_limit


def test_a_head_is_too_large_only_without_an_end_in_the_limit() -> None:
    assert not head_too_large(b"GET / HTTP/1.1\r\n" + b"h: v\r\n" * 10)
    assert head_too_large(b"GET / HTTP/1.1\r\nx: " + b"a" * HEAD_LIMIT)
    # A small head followed by a large body in the same read is fine.
    assert not head_too_large(b"POST / HTTP/1.1\r\nc: 1\r\n\r\n" + b"b" * (2 * HEAD_LIMIT))
    assert head_too_large(b"a" * HEAD_LIMIT + b"\r\n\r\n" + b"b" * 10)


def test_conversation_ids_are_bounded() -> None:
    assert oversized_conversation(http.Headers(session_id="x" * 36)) is None
    assert oversized_conversation(http.Headers(thread_id="x" * 257)) == "thread-id"


def test_the_file_limit_is_raised_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
        assert raise_file_limit() == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_repeated_loop_error_is_logged_once_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handler = RepeatedErrors(every=60)
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.ERROR, "cao.gateway"):
            for _ in range(1000):
                handler(loop, {"message": "socket.accept() out of system resource",
                               "exception": OSError(24, "Too many open files")})  # fmt: skip
        assert len(caplog.records) == 1
        handler.seen = {k: (c, -1e9) for k, (c, _) in handler.seen.items()}  # a minute later
        with caplog.at_level(logging.ERROR, "cao.gateway"):
            handler(loop, {"message": "socket.accept() out of system resource",
                           "exception": OSError(24, "Too many open files")})  # fmt: skip
        assert len(caplog.records) == 2 and "999 more times" in caplog.records[-1].getMessage()
    finally:
        loop.close()


def test_error_text_keeps_no_upstream_bytes() -> None:
    from cao.addons.http1server import error_answer, error_summary

    assert error_summary("unexpected server response: b'GARBAGE Bearer x'") == (
        "unexpected server response"
    )
    assert error_summary("Connection killed.") == "Connection killed."  # mitmproxy's kill check
    assert error_summary("\x00:") == "upstream error"
    raw = error_answer(502, "unexpected server response: b'GARBAGE'")
    assert raw.startswith(b"HTTP/1.1 502 ") and b"GARBAGE" not in raw
