"""An account home's `config.toml`: reading it, the keys cao owns there, and merging the user's
values with the account's own, key by key (config/homes.py syncs with it; config/codexconfig.py
is the user's own file, where `cao gateway enable` writes its block).

A table's keys merge one by one (`[mcp_servers.docs]` keys, `[projects."<path>"]`), any other
value (an array, an empty table) whole."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomli_w

from .codexconfig import CONFIG_FILE, codex_home, without_block
from .codexconfig import KEYS as ROUTING_KEYS

# What every account home's config.toml must say: tokens in auth.json, a ChatGPT login.
ACCOUNT_CONFIG: dict[str, Any] = {
    "cli_auth_credentials_store": "file",
    "forced_login_method": "chatgpt",
}
# Keys of the user's config that never reach an account home: cao sets the first two, and the
# base URLs are where a gateway or a test points the user's own Codex.
OWNED_KEYS = frozenset({*ACCOUNT_CONFIG, *ROUTING_KEYS})

Leaves = dict[tuple[str, ...], Any]


def user_codex_home(env: Mapping[str, str] = os.environ, data_dir: Path | None = None) -> Path:
    """The user's own CODEX_HOME (`$CODEX_HOME`, else `~/.codex`: codexconfig.codex_home, with
    `env`'s HOME). A `$CODEX_HOME` inside cao's data dir is an account home (Codex started by
    cao): the user's own is `~/.codex` then."""
    default = (Path(env["HOME"]) if env.get("HOME") else Path.home()) / ".codex"
    if not env.get("CODEX_HOME"):
        return default
    path = codex_home(None, env).absolute()
    return default if data_dir is not None and _inside(path, data_dir) else path


def _inside(path: Path, parent: Path) -> bool:
    try:
        path.resolve().relative_to(parent.resolve())
    except (OSError, ValueError):
        return False
    return True


class ConfigError(ValueError):
    """A config.toml that does not parse (the message says where)."""


def strip_cao_block(text: str) -> str:
    """`text` without the block `cao gateway enable` writes (its keys are cao's own)."""
    return without_block(text.encode())[0].decode()


def parse_toml(text: str, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where} does not parse: {e}") from None


def read_toml(path: Path) -> dict[str, Any] | None:
    """The document, None if the file does not exist; ConfigError if it does not parse."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} cannot be read: {getattr(e, 'strerror', None) or e}") from None
    return parse_toml(text, str(path))


def config_problem(home: Path) -> str | None:
    """Why Codex cannot start in `home` because of its config.toml, else None."""
    try:
        read_toml(home / CONFIG_FILE)
    except ConfigError as e:
        return first_line(str(e))
    return None


def first_line(message: str) -> str:
    return " ".join(message.split("\n", 1)[0].split())


def leaves(document: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Leaves:
    """Every value that is not a table, by its key path (an empty table is a value)."""
    out: Leaves = {}
    for key, value in document.items():
        path = (*prefix, key)
        if isinstance(value, dict) and value:
            out.update(leaves(value, path))
        else:
            out[path] = value
    return out


def nest(values: Leaves) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for path, value in values.items():
        table = document
        for key in path[:-1]:
            inner = table.get(key)
            if not isinstance(inner, dict):
                inner = table[key] = {}
            table = inner
        if not (isinstance(table.get(path[-1]), dict) and value == {}):
            table[path[-1]] = value
    return document


def without_owned(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k not in OWNED_KEYS}


def merge(user: Leaves, account: Leaves, synced: Leaves) -> Leaves:
    """The account's values after a sync: the user's, then the account's own on top (a value
    that differs from what was synced last, or that was never synced). A synced value the
    account dropped stays dropped while the user's value is the same."""
    out: Leaves = {
        path: value
        for path, value in user.items()
        if path in account or path not in synced or synced[path] != value
    }
    for path, value in account.items():
        if path in synced and synced[path] == value:
            continue  # cao put it there: it follows the user's value (or goes with it)
        out[path] = value
    return out


def dump_toml(document: dict[str, Any]) -> bytes:
    return tomli_w.dumps(document).encode()
