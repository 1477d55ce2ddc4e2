"""Finding and starting the real Codex binary (never our own shim)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
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
    """The Codex TUI leaves an app-server daemon running from its CODEX_HOME (Codex 0.169):
    stop it before that home is deleted. Best effort: no codex, no daemon, nothing to do."""
    if not (home / "app-server-control").exists():
        return
    import subprocess

    try:
        codex = find_codex()
    except CaoError:
        codex = home / "packages" / "app-server-daemon" / "current" / "bin" / "codex"
        if not codex.exists():
            return
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(
            [str(codex), "app-server", "daemon", "stop"], env=codex_env(home),
            capture_output=True, timeout=30, stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip


def run_login(codex: Path, home: Path, device_auth: bool) -> int:
    """`codex login` in the account's home, on the user's terminal."""
    import subprocess  # not at the top: most commands never start a process

    args = [str(codex), "login"] + (["--device-auth"] if device_auth else [])
    try:
        return subprocess.call(args, env=codex_env(home))
    except OSError as e:
        raise CaoError(f"cannot run {codex}: {e.strerror}") from None
