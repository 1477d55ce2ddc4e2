"""The one quota classifier."""

from __future__ import annotations

import json

import pytest

from cao.config.quota import (
    MAX_RESET_SECONDS,
    QuotaKind,
    classify_error,
    classify_stream_event,
    reset_from_headers,
    usage_limit_body,
    usage_windows,
)

NOW = 1_800_000_000.0


def body(**error: object) -> bytes:
    return json.dumps({"error": error}).encode()


def test_usage_limit_with_resets_at() -> None:
    s = classify_error(429, body(type="usage_limit_reached", resets_at=NOW + 100), {}, NOW)
    assert s is not None and s.kind is QuotaKind.USAGE_LIMIT and s.resets_at == NOW + 100


def test_usage_limit_falls_back_to_resets_in_then_headers_then_cooldown() -> None:
    s = classify_error(429, body(type="usage_limit_reached", resets_in_seconds=60), {}, NOW)
    assert s is not None and s.resets_at == NOW + 60
    headers = {
        "x-codex-primary-used-percent": "100", "x-codex-primary-window-minutes": "300",
        "x-codex-primary-reset-at": str(int(NOW + 500)),
        "x-codex-secondary-used-percent": "40", "x-codex-secondary-window-minutes": "10080",
        "x-codex-secondary-reset-at": str(int(NOW + 9000)),
    }  # fmt: skip
    s = classify_error(429, body(type="usage_limit_reached"), headers, NOW)
    assert s is not None and s.resets_at == NOW + 500
    s = classify_error(429, body(type="usage_limit_reached"), {}, NOW, cooldown=900)
    assert s is not None and s.resets_at == NOW + 900


@pytest.mark.parametrize("resets_at", [0, -5, NOW - 1, "soon", None, float("nan")])
def test_unusable_reset_times_use_cooldown(resets_at: object) -> None:
    s = classify_error(429, body(type="usage_limit_reached", resets_at=resets_at), {}, NOW, 900)
    assert s is not None and s.resets_at == NOW + 900


def test_absurd_reset_is_capped() -> None:
    s = classify_error(429, body(type="usage_limit_reached", resets_at=NOW * 100), {}, NOW)
    assert s is not None and s.resets_at == NOW + MAX_RESET_SECONDS


def test_rate_limit_uses_retry_after() -> None:
    s = classify_error(429, body(type="rate_limit_exceeded"), {"retry-after": "7"}, NOW)
    assert s is not None and s.kind is QuotaKind.RATE_LIMIT and s.resets_at == NOW + 7


@pytest.mark.parametrize(
    ("status", "payload"),
    [
        (200, body(type="usage_limit_reached")),
        (429, b"not json"),
        (429, b"[]"),
        (429, body(type="context_length_exceeded")),
        (500, body(type="usage_limit_reached")),
        (429, b'{"error": "usage_limit_reached"}'),
    ],
)
def test_not_quota(status: int, payload: bytes) -> None:
    assert classify_error(status, payload, {}, NOW) is None


def test_insufficient_quota_counts_as_usage_limit() -> None:
    s = classify_error(429, body(type="insufficient_quota"), {}, NOW)
    assert s is not None and s.kind is QuotaKind.USAGE_LIMIT


def test_stream_event() -> None:
    event = {"type": "response.failed", "response": {"error": {
        "code": "usage_limit_reached", "resets_at": NOW + 50}}}  # fmt: skip
    s = classify_stream_event(event, NOW)
    assert s is not None and s.resets_at == NOW + 50
    assert classify_stream_event({"type": "response.failed", "response": {"error": {
        "code": "server_error"}}}, NOW) is None  # fmt: skip
    assert classify_stream_event({"type": "response.completed"}, NOW) is None


def test_usage_windows_are_keyed_by_length() -> None:
    headers = {
        "x-codex-primary-used-percent": "12.5", "x-codex-primary-window-minutes": "10080",
        "x-codex-secondary-used-percent": "abc", "x-codex-secondary-window-minutes": "300",
    }  # fmt: skip
    assert usage_windows(headers) == {"10080": (12.5, None)}
    assert reset_from_headers(headers) is None


def test_exhausted_body_is_what_codex_reads() -> None:
    error = json.loads(usage_limit_body(NOW + 61.2, NOW, "plus"))["error"]
    assert error == {
        "type": "usage_limit_reached",
        "message": "The usage limit has been reached on every cao account",
        "resets_at": int(NOW) + 62, "resets_in_seconds": 62, "plan_type": "plus",
    }  # fmt: skip
