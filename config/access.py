"""The gateway's base URLs, and the install's key for where the OS cannot vouch for a peer.

On loopback the gateway serves only this OS user's processes, as the kernel reports them
(config/peer.py, addons/peer.py): Codex gets the plain `http://127.0.0.1:4319/backend-api/codex`
and nothing cao starts carries a secret. The key, a random secret in `<data dir>/gateway.key`
(0600, in a 0700 dir), is needed only where the OS cannot vouch: a remote client of an
`--allow-remote` gateway, or everyone with `--require-key`. It travels in the path
(`http://host:4319/cao/<key>/backend-api/codex`), which every Codex version sends as given; the
user puts that URL into `config.toml`, never on a command line. Old shims that still carry the
key in their URL keep working: the gateway strips a valid key.
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


def rotate_key(store: Store) -> str:
    """A new key replaces the old one (a running gateway reads it on the next keyed request)."""
    store.ensure()
    with store.lock():
        key = secrets.token_urlsafe(32)
        write_atomic(key_path(store), (key + "\n").encode())
        return key


def route(key: str | None) -> str:
    return f"{ROUTE}{key}" if key else ""


def codex_base_url(gateway: str, key: str | None = None) -> str:
    """The exact `openai_base_url` Codex must use for the gateway at `gateway` (with the key
    only where the gateway requires it: remote clients, --require-key)."""
    return f"{gateway.rstrip('/')}{route(key)}{CODEX_API_PATH}"


def status_url(gateway: str, key: str | None = None) -> str:
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
