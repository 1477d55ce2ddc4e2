"""Who may spend the accounts through the gateway: only requests that carry this install's key.

The key is a random secret in `<data dir>/gateway.key` (0600, in a 0700 dir). It travels in the
path of the base URL Codex is given (`http://127.0.0.1:4319/cao/<key>/backend-api/codex`), which
the shim (0700), `cao run --gateway` and `cao gateway url` build and the gateway strips. A web
page, a DNS-rebinding page, another OS user or a process without the user's files cannot know
it. Why a path and not a header: Codex sends only what its base URL says; a path needs no Codex
option and works with every version.
"""

from __future__ import annotations

import hmac
import re
import secrets
from pathlib import Path

from .defaults import CODEX_API_PATH, STATUS_PATH
from .files import read_private_text, write_atomic
from .store import Store

KEY_FILE = "gateway.key"
ROUTE = "/cao/"  # the path prefix that carries the key
_KEY = re.compile(r"^[A-Za-z0-9_-]{32,128}$")


def key_path(store: Store) -> Path:
    return store.data_dir / KEY_FILE


def gateway_key(store: Store, create: bool = True) -> str | None:
    """This install's key; made (under the store's lock) when missing or not a valid key."""
    path = key_path(store)
    key = read_private_text(path)
    if key is not None and _KEY.match(key.strip()):
        return key.strip()
    if not create:
        return None
    store.ensure()
    with store.lock():
        key = read_private_text(path)  # another process may have made it meanwhile
        if key is not None and _KEY.match(key.strip()):
            return key.strip()
        key = secrets.token_urlsafe(32)
        write_atomic(path, (key + "\n").encode())
        return key


def route(key: str) -> str:
    return f"{ROUTE}{key}"


def codex_base_url(gateway: str, key: str) -> str:
    """The exact `openai_base_url` Codex must use for the gateway at `gateway`."""
    return f"{gateway.rstrip('/')}{route(key)}{CODEX_API_PATH}"


def status_url(gateway: str, key: str) -> str:
    return f"{gateway.rstrip('/')}{route(key)}{STATUS_PATH}"


def gateway_of(base_url: str) -> str:
    """The gateway origin in a base URL cao built (the shim's), key and API path removed."""
    url = base_url.removesuffix(CODEX_API_PATH)
    index = url.find(ROUTE, url.find("://") + 3)
    return url[:index] if index >= 0 else url


def strip_route(path: str, key: str) -> str | None:
    """The path without `/cao/<key>` when it carries this key (compared in constant time);
    None otherwise."""
    if not path.startswith(ROUTE):
        return None
    given, sep, rest = path[len(ROUTE) :].partition("/")
    if not hmac.compare_digest(given.encode(), key.encode()):
        return None
    return "/" + rest if sep else "/"


def hide_route(path: str) -> str:
    """A path fit for a log line: the key, right or wrong, is not shown."""
    if not path.startswith(ROUTE):
        return path
    _, sep, rest = path[len(ROUTE) :].partition("/")
    return f"{ROUTE}…{sep}{rest}"
