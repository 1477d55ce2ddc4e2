"""Routing every Codex through the gateway from `$CODEX_HOME/config.toml`.

The TUI, the IDE extension and the desktop app all read `config.toml` (not the shell's PATH):
`cao gateway enable` puts `openai_base_url` and `chatgpt_base_url` there as a marked block at
the top of the file (top-level keys must come before the first table), and `disable` takes
exactly those bytes out again, so the file is what it was byte for byte. A file that does not
parse, or that sets either key to something else already, is left alone with the reason.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import CaoError
from .files import FILE_MODE, write_atomic

CONFIG_FILE = "config.toml"
KEYS = ("openai_base_url", "chatgpt_base_url")
BEGIN = "# >>> cao gateway: routes Codex through it; `cao gateway disable` removes this block"
MADE = "# (cao made this file: disable removes it when nothing else is left)"
END = "# <<< cao gateway"
BOM = b"\xef\xbb\xbf"


class ConfigRefused(CaoError):
    """config.toml is left alone; the message says why (one line)."""


@dataclass(frozen=True)
class Routing:
    openai_base_url: str  # where model traffic goes
    chatgpt_base_url: str  # where the usage view, accounts check and the rest go

    def values(self) -> dict[str, str]:
        return {"openai_base_url": self.openai_base_url, "chatgpt_base_url": self.chatgpt_base_url}


def codex_home(explicit: Path | None = None, env: Mapping[str, str] = os.environ) -> Path:
    """`--codex-home`, else `$CODEX_HOME`, else `~/.codex` (where Codex looks)."""
    if explicit is not None:
        return explicit.expanduser()
    if env.get("CODEX_HOME"):
        return Path(env["CODEX_HOME"]).expanduser()
    return Path.home() / ".codex"


def config_path(home: Path) -> Path:
    return home / CONFIG_FILE


def _toml_string(value: str) -> str:
    # A basic string: the URLs cao builds hold no quote or backslash, but be exact anyway.
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _parse(data: bytes, where: Path) -> dict[str, object]:
    try:
        return tomllib.loads(data.removeprefix(BOM).decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigRefused(f"{where} is not UTF-8: left it alone") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigRefused(f"{where} does not parse ({e}): left it alone") from None


def _newline(data: bytes) -> bytes:
    return b"\r\n" if b"\r\n" in data else b"\n"


def render_block(routing: Routing, made: bool, newline: bytes = b"\n") -> bytes:
    lines = [BEGIN, *([MADE] if made else [])]
    lines += [f"{key} = {_toml_string(value)}" for key, value in routing.values().items()]
    lines.append(END)
    return newline.join(line.encode() for line in lines) + newline


def find_block(data: bytes) -> tuple[int, int] | None:
    """Where our block is in the file: (start, end) byte offsets, whole lines."""
    start = data.find(BEGIN.encode())
    if start < 0 or (start > 0 and data[start - 1 : start] != b"\n"):
        return None
    end_mark = data.find(END.encode(), start)
    if end_mark < 0:
        return None
    line_end = data.find(b"\n", end_mark)
    return start, len(data) if line_end < 0 else line_end + 1


def has_block(data: bytes) -> bool:
    return find_block(data) is not None


def without_block(data: bytes) -> tuple[bytes, bool]:
    """The file without our block, and whether the block said cao made the file."""
    span = find_block(data)
    if span is None:
        return data, False
    block = data[span[0] : span[1]]
    return data[: span[0]] + data[span[1] :], MADE.encode() in block


def with_block(data: bytes | None, routing: Routing, where: Path) -> bytes:
    """The file with our block at the top (replacing an older one of ours). Raises
    ConfigRefused when the file does not parse or sets either key to something else."""
    made = data is None
    original = b"" if data is None else data
    if data is not None and has_block(data):
        original, made = without_block(data)
    document = _parse(original, where)
    for key, value in routing.values().items():
        if key in document and document[key] != value:
            raise ConfigRefused(
                f"{where} already sets {key} = {document[key]!r}: left it alone (remove that "
                "line to route Codex through the gateway, or use the shim only)"
            )
    bom = BOM if original.startswith(BOM) else b""
    body = original.removeprefix(BOM)
    result = bom + render_block(routing, made, _newline(body)) + body
    parsed = _parse(result, where)  # never write a file Codex could not read
    if any(parsed.get(k) != v for k, v in routing.values().items()):
        raise ConfigRefused(f"{where}: the routing block would not be read as written")
    return result


def _target(path: Path) -> Path:
    """The file itself when config.toml is a symlink (a dotfiles checkout keeps its link)."""
    return path.resolve() if path.is_symlink() else path


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ConfigRefused(f"cannot read {path}: {e.strerror}: left it alone") from None


def _mode(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return FILE_MODE


def enable_routing(home: Path, routing: Routing) -> str:
    """Write the block; the one line to tell the user. Raises ConfigRefused."""
    path = config_path(home)
    target = _target(path)
    data = _read(target)
    if data is not None and not has_block(data):
        document = _parse(data, path)
        if all(document.get(k) == v for k, v in routing.values().items()):
            return f"{path} already routes Codex through {routing.openai_base_url}"
    updated = with_block(data, routing, path)
    if updated == data:
        return f"{path} already routes Codex through the gateway"
    if data is None:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(target, updated, mode=_mode(target))
    return f"{path}: Codex, its IDE extension and the desktop app now use the gateway"


def disable_routing(home: Path) -> str | None:
    """Take our block out, leaving the file as it was; None when there was none."""
    path = config_path(home)
    target = _target(path)
    data = _read(target)
    if data is None or not has_block(data):
        return None
    rest, made = without_block(data)
    if made and not rest.strip():
        target.unlink()
        return f"{path}: removed (cao had made it)"
    write_atomic(target, rest, mode=_mode(target))
    return f"{path}: routing block removed, the file is as it was"


def routed_by_config(home: Path) -> Routing | None:
    """The routing our block in config.toml holds, if any (for status and the doctor)."""
    data = _read(_target(config_path(home))) if config_path(home).exists() else None
    if data is None or not has_block(data):
        return None
    try:
        document = _parse(data, config_path(home))
    except ConfigRefused:
        return None
    values = [document.get(k) for k in KEYS]
    if not all(isinstance(v, str) for v in values):
        return None
    return Routing(str(values[0]), str(values[1]))


# Two names for one loopback listener: Codex must see two origins (see routing_for).
OTHER_LOOPBACK_NAME = {"127.0.0.1": "localhost", "localhost": "127.0.0.1", "[::1]": "localhost"}


def routing_for(model_base_url: str) -> Routing:
    """Both base URLs for the gateway whose model base URL is `model_base_url` (what `cao
    gateway url` prints, ending in /backend-api/codex).

    chatgpt_base_url goes to the same listener under another name: when the two share an
    origin, Codex routes model traffic to the workspace origin `wham/accounts/check` names
    (https://chatgpt.com), past the gateway, and refuses a non-https one ("workspace backend
    must use an HTTPS origin"; measured with 0.169 and 0.171)."""
    from urllib.parse import urlsplit

    parts = urlsplit(model_base_url)
    host = parts.netloc.rsplit(":", 1)[0] if parts.port else parts.netloc
    other = OTHER_LOOPBACK_NAME.get(host.lower())
    if other is None:
        raise ConfigRefused(
            f"the gateway at {host} is not on loopback: config.toml routing needs a loopback "
            "gateway (use the shim, or `cao gateway url`)"
        )
    netloc = other + (f":{parts.port}" if parts.port else "")
    path = parts.path.removesuffix("/codex").rstrip("/") + "/"
    return Routing(model_base_url, f"{parts.scheme}://{netloc}{path}")
