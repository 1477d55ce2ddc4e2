"""The `codex` shim that routes Codex through the gateway (`cao gateway enable/disable`)."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from pathlib import Path

from cao.config.access import gateway_of
from cao.config.errors import CaoError
from cao.config.files import ensure_dir, write_atomic

from .codex import SHIM_MARKER, is_cao_shim


def default_bin_dir() -> Path:
    return Path.home() / ".local" / "bin"


# It holds no secret now (the plain URL), but only its owner runs it, and `cao doctor` flags a
# shim others can read (an old one carried the key).
SHIM_MODE = 0o700
BIN_DIR_MODE = 0o755  # a bin dir on PATH: never writable by others, whatever the umask


def render_shim(real_codex: Path, base_url: str) -> str:
    """`base_url`: what `cao gateway url` prints (the plain URL: no secret in argv or env)."""
    override = f'openai_base_url="{base_url}"'
    return (
        "#!/bin/sh\n"
        f"{SHIM_MARKER}\n"
        "# Written by `cao gateway enable`; `cao gateway disable` removes it.\n"
        f"# Routes Codex through the cao gateway at {gateway_of(base_url)}.\n"
        "# OPENAI_BASE_URL is for Codex versions before 0.119; newer ones read the -c override.\n"
        f"OPENAI_BASE_URL={shlex.quote(base_url)}\n"
        "export OPENAI_BASE_URL\n"
        f'exec {shlex.quote(str(real_codex))} -c {shlex.quote(override)} "$@"\n'
    )


def install_shim(bin_dir: Path, real_codex: Path, base_url: str) -> Path:
    shim = bin_dir / "codex"
    if (shim.exists() or shim.is_symlink()) and not is_cao_shim(shim):
        raise CaoError(f"{shim} exists and is not cao's shim; refusing to overwrite it")
    if shim.resolve() == real_codex.resolve():
        raise CaoError(f"{shim} is the real codex; refusing to overwrite it")
    ensure_dir(bin_dir, BIN_DIR_MODE)
    if shim.is_symlink():
        shim.unlink()
    write_atomic(shim, render_shim(real_codex, base_url).encode(), mode=SHIM_MODE)
    return shim


def shim_gateway(shim: Path) -> str | None:
    """The gateway URL our shim routes Codex to; None when `shim` is not ours."""
    if not is_cao_shim(shim):
        return None
    try:
        lines = shim.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for line in lines:
        if line.startswith("OPENAI_BASE_URL="):
            words = shlex.split(line.partition("=")[2])
            return gateway_of(words[0]) if words else None
    return None


def remove_shim(bin_dir: Path) -> bool:
    """True when our shim was there and is gone; raises when the file there is not ours."""
    shim = bin_dir / "codex"
    if not (shim.exists() or shim.is_symlink()):
        return False
    if not is_cao_shim(shim):
        raise CaoError(f"{shim} is not cao's shim; left it alone")
    shim.unlink()
    return True


def path_problem(
    bin_dir: Path, real_codex: Path, env: Mapping[str, str] = os.environ
) -> str | None:
    """Why a shell would not run the shim as `codex`, if it would not."""
    entries = [Path(p).expanduser().absolute() for p in env.get("PATH", "").split(os.pathsep) if p]
    shim_dir = bin_dir.absolute()
    if shim_dir not in entries:
        return f"{bin_dir} is not in PATH: add it (before {real_codex.parent}) so the shim is used"
    real_dir = real_codex.parent.absolute()
    if real_dir in entries and entries.index(real_dir) < entries.index(shim_dir):
        return f"{real_dir} comes before {bin_dir} in PATH, so `codex` runs the real one"
    return None
