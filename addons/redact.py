"""Keeping secrets off everything a person can see: mitmweb, exports, logs.

mitmproxy pushes a flow to mitmweb after *every* hook (it fires an `update` hook after each
lifecycle hook), including the last `request` hook before the request goes upstream. So no
placement of a plain token on the flow is unseen by the UI. Instead the token is stored as a
`WireSecret`: bytes that go on the wire unchanged (mitmproxy joins raw header bytes to send
them), but read as a redacted string wherever mitmproxy decodes header values into text.
"""

from __future__ import annotations

from mitmproxy import http

REDACTED_AUTH = "Bearer <redacted by cao>"
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
SECRET_WORDS = ("token", "key", "session", "secret", "auth", "cookie")


class WireSecret(bytes):
    """A header value for the wire only; as text it is always REDACTED_AUTH."""

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return REDACTED_AUTH

    def __repr__(self) -> str:
        return repr(REDACTED_AUTH)

    __str__ = __repr__


def set_secret_header(headers: http.Headers, name: str, value: str) -> None:
    """Replace every `name` header with one secret value."""
    key = name.lower().encode()
    fields = [(k, v) for k, v in headers.fields if k.lower() != key]
    fields.append((name.encode(), WireSecret(value.encode())))
    headers.fields = tuple(fields)


def redact(headers: http.Headers, name: str = "authorization") -> None:
    """Put a plain redacted value in place of a secret once it is no longer needed."""
    if name in headers:
        headers[name] = REDACTED_AUTH


def shorten(value: str) -> str:
    """First 6 and last 4 characters: enough to tell tokens apart, useless to steal."""
    if value.lower().startswith("bearer "):
        return "Bearer " + shorten(value[7:])
    return f"{value[:6]}…{value[-4:]}" if len(value) > 16 else "…"


def is_secret_header(name: str) -> bool:
    lowered = name.lower()
    return lowered in SECRET_HEADERS or any(word in lowered for word in SECRET_WORDS)


def sanitized(headers: http.Headers) -> str:
    """All headers on one line, secrets shortened (WireSecrets shortened from their real value)."""
    parts = []
    for raw_name, raw_value in headers.fields:
        name = raw_name.decode("latin-1")
        value = bytes(raw_value).decode("utf-8", "replace")
        parts.append(f"{name}: {shorten(value) if is_secret_header(name) else value}")
    return "; ".join(parts)
