"""Finding and starting the real Codex binary (never our own shim)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from cao.config.errors import CaoError

SHIM_MARKER = "# cao-shim: codex"  # first lines of the shim `cao gateway enable` writes
CODEX_INSTALL = "npm install -g @openai/codex"
INSTALL_HINT = f"install it with `{CODEX_INSTALL}`, or pass --codex PATH"


def is_cao_shim(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return SHIM_MARKER.encode() in f.read(512)
    except OSError:
        return False


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_codex(explicit: Path | None = None, env: Mapping[str, str] = os.environ) -> Path:
    """`explicit`, else the first `codex` on PATH that is not our shim."""
    if explicit is not None:
        path = explicit.expanduser()
        if not _executable(path):
            raise CaoError(f"--codex {explicit}: not an executable file")
        return path.absolute()
    for entry in env.get("PATH", "").split(os.pathsep):
        candidate = Path(entry or ".") / "codex"
        if _executable(candidate) and not is_cao_shim(candidate):
            return candidate.absolute()
    raise CaoError(f"codex not found on PATH: {INSTALL_HINT}")


def codex_env(home: Path, base: Mapping[str, str] = os.environ) -> dict[str, str]:
    return {**base, "CODEX_HOME": str(home)}


def stop_app_server(home: Path) -> None:
    """Stop every Codex process that runs from `home` (its app-server daemon, and a Codex
    still open there), verified by process: before the home is removed. Says what it could not
    stop."""
    from .base import warn
    from .daemons import codex_processes, not_stopped, stop_processes

    left = stop_processes(codex_processes(home))
    if left:
        warn(not_stopped(home, left))


def run_login(
    codex: Path, home: Path, device_auth: bool, rewrite: Callable[[bytes], bytes] | None = None
) -> tuple[int, str]:
    """`codex login` in the account's home, on the user's terminal (relayed, so cao can read
    what Codex said, and `rewrite` what it shows): (exit code, the end of its output)."""
    from . import relay

    args = [str(codex), "login"] + (["--device-auth"] if device_auth else [])
    if not os.access(codex, os.X_OK):
        raise CaoError(f"cannot run {codex}: not an executable file")
    return relay.run(args, codex_env(home), rewrite=rewrite)
