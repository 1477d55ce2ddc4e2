"""What answers at a gateway address, as seen from one data dir: its own gateway, another data
dir's (or another user's, which refuses), another program, or nothing. Status commands, the
doctor, `start` and the shim's `ensure` say which, instead of "not answering"."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cao.config import defaults
from cao.config.access import gateway_key, status_url
from cao.config.store import Store

from .base import cao_words

# A gateway on loopback answers in milliseconds; a listener that never answers must not make a
# command hang (well under a second, connect and read together).
STATUS_TIMEOUT = 0.4


class Answer(StrEnum):
    """What is at a gateway URL, as seen from this data dir."""

    OURS = "ours"  # this data dir's gateway
    OTHER_DATA_DIR = "other data dir"  # a cao gateway, serving another data dir
    REFUSED = "refused"  # a cao gateway that refuses us (another user's, or another key)
    NOT_A_GATEWAY = "not a gateway"  # something else listens there
    DOWN = "down"  # nothing listens


@dataclass(frozen=True)
class Probe:
    answer: Answer
    document: dict[str, Any] | None = None

    def words(self, url: str) -> str:
        """For humans: what is at `url`."""
        if self.answer is Answer.OTHER_DATA_DIR:
            other = (self.document or {}).get("gateway", {}).get("data_dir")
            return f"a gateway runs at {url} with another data dir ({other})"
        if self.answer is Answer.REFUSED:
            return f"a gateway runs at {url} but refuses this user or data dir"
        if self.answer is Answer.NOT_A_GATEWAY:
            return f"something that does not answer as a cao gateway listens at {url}"
        if self.answer is Answer.DOWN:
            return f"no gateway answers at {url}"
        return f"the gateway answers at {url}"


def probe(url: str, store: Store, timeout: float = STATUS_TIMEOUT) -> Probe:
    """What answers at `url`: this data dir's gateway, another one, or nothing."""
    import http.client

    try:
        status, document = _get(url, status_url(url), timeout)
        key = gateway_key(store, create=False)
        if key is not None and status == 403 and _refusal(document):
            # A gateway that requires the key (--require-key); only a cao gateway sees it.
            status, document = _get(url, status_url(url, key), timeout)
    except TimeoutError:  # it took the connection and never answered: not a gateway
        return Probe(Answer.NOT_A_GATEWAY)
    except (OSError, http.client.HTTPException):
        return Probe(Answer.DOWN)
    if document is None:
        return Probe(Answer.NOT_A_GATEWAY)
    if status == 200 and "accounts" in document:
        serving = document.get("gateway", {}).get("data_dir")
        if serving is not None and Path(serving) != store.data_dir:
            return Probe(Answer.OTHER_DATA_DIR, document)
        return Probe(Answer.OURS, document)
    return Probe(Answer.REFUSED if _refusal(document) else Answer.NOT_A_GATEWAY)


def _refusal(document: dict[str, Any] | None) -> bool:
    error = (document or {}).get("error")
    return isinstance(error, dict) and error.get("type") == "cao_gateway_refused"


def _get(url: str, address: str, timeout: float) -> tuple[int, dict[str, Any] | None]:
    """GET `address` from the listener at `url`: the status and the JSON object answered
    (None when it is not one). Raises OSError or HTTPException when nothing answers."""
    # http.client, not urllib: urllib builds an SSL context on first use (~60 ms with its
    # import), and the gateway listens on plain HTTP.
    import http.client

    parts = urlsplit(url)
    connection_type = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_type(parts.hostname or "", parts.port, timeout=timeout)
    try:
        connection.request("GET", urlsplit(address).path, headers={"host": parts.netloc})
        answer = connection.getresponse()
        body = answer.read()
    finally:
        connection.close()
    try:
        document = json.loads(body)
    except ValueError:
        return answer.status, None
    return answer.status, document if isinstance(document, dict) else None


def fetch_status(
    url: str, key: str | None = None, timeout: float = STATUS_TIMEOUT
) -> dict[str, Any] | None:
    """The gateway's /__cao/status document, or None when nothing answers (or a gateway that
    refuses us: another user's, or one that needs a key we do not have)."""
    import http.client

    try:
        # With the key when there is one: a gateway that requires it answers too.
        status, document = _get(url, status_url(url, key), timeout)
    except (OSError, http.client.HTTPException):
        return None
    return document if status == 200 and document and "accounts" in document else None


def answers(store: Store) -> Callable[[str], bool]:
    """A readiness check: does this data dir's gateway answer at the URL?"""
    return lambda url: probe(url, store).answer is Answer.OURS


def busy_port(store: Store, host: str, port: int) -> str:
    """Why `start` cannot listen on a port in use, and what to do (a command that works)."""
    url = defaults.gateway_url(host, port)
    found = probe(url, store)
    if found.answer is Answer.OURS:
        return (
            f"this data dir's gateway already runs at {url}: `{cao_words(store, 'gateway status')}`"
        )
    return f"port {port} on {host} is in use ({found.words(url)}): pick another with --port"
