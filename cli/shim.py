"""The `codex` shim that routes Codex through the gateway (`cao gateway enable/disable`)."""

from __future__ import annotations

import contextlib
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cao.config.access import gateway_of
from cao.config.errors import CaoError
from cao.config.files import ensure_dir, write_atomic

from .codex import CODEX_INSTALL, SHIM_MARKER, is_cao_shim


def default_bin_dir() -> Path:
    return Path.home() / ".local" / "bin"


# It holds no secret now (the plain URL), but only its owner runs it, and `cao doctor` flags a
# shim others can read (an old one carried the key).
SHIM_MODE = 0o700
BIN_DIR_MODE = 0o755  # a bin dir on PATH: never writable by others, whatever the umask


@dataclass(frozen=True)
class ShimPlan:
    """What the shim needs at run time, fixed by `cao gateway enable`."""

    base_url: str  # openai_base_url (what `cao gateway url` prints)
    chatgpt_base_url: str  # the usage view and the rest of chatgpt_base_url, same listener
    fallback_codex: Path  # used only when no other `codex` is on PATH at run time
    ensure: list[str]  # the cao command that starts the gateway when none answers
    python: str  # a Python for the "does it answer" check where there is no bash
    shell: str = "/bin/bash"  # bash connects by itself (/dev/tcp): ~2 ms, not a Python start


# Codex's own defaults: a direct run must undo a routing block in config.toml, or Codex would
# retry a gateway that is not there.
DIRECT = (
    'openai_base_url="https://chatgpt.com/backend-api/codex"',
    'chatgpt_base_url="https://chatgpt.com/backend-api/"',
)
# Connect only: starting cao itself costs ~0.3 s, paid only when nothing answers. bash does it
# with /dev/tcp (a closed loopback port refuses at once); plain sh needs a Python (~20-80 ms).
_PROBE = (
    "import socket,sys\n"
    "try: socket.create_connection((sys.argv[1], int(sys.argv[2])), 0.5).close()\n"
    "except OSError: sys.exit(1)"
)


def render_shim(plan: ShimPlan) -> str:
    """A POSIX sh script: find the real codex on PATH, make sure the gateway answers (start
    the daemon if not), then run Codex through it; if the gateway cannot be started, say so
    in one line and run Codex directly on the user's own login. Never waits unbounded."""
    gateway = urlsplit(gateway_of(plan.base_url))
    host = (gateway.hostname or "127.0.0.1").strip("[]")
    port = str(gateway.port or 80)
    q = shlex.quote
    override = f'openai_base_url="{plan.base_url}"'
    chatgpt = f'chatgpt_base_url="{plan.chatgpt_base_url}"'
    if plan.shell.endswith("bash"):
        answers = f"(: <>/dev/tcp/{q(host)}/{port}) 2>/dev/null"
    else:
        answers = f"{q(plan.python)} -I -S -c {q(_PROBE)} {q(host)} {port} 2>/dev/null"
    return rf"""#!{plan.shell}
{SHIM_MARKER}
# Written by `cao gateway enable`; `cao gateway disable` removes it.
# Routes Codex through the cao gateway at {gateway_of(plan.base_url)}.
# OPENAI_BASE_URL is for Codex versions before 0.119; newer ones read the -c override.
OPENAI_BASE_URL={q(plan.base_url)}
export OPENAI_BASE_URL
# The real codex: the first `codex` on PATH that is not a cao shim (a moved install works).
real=
saved_ifs=$IFS
IFS=:
set -f
for dir in $PATH; do
  candidate="${{dir:-.}}/codex"
  if [ -f "$candidate" ] && [ -x "$candidate" ] &&
     ! head -c 512 "$candidate" 2>/dev/null | grep -q 'cao-shim: codex'; then
    real=$candidate
    break
  fi
done
set +f
IFS=$saved_ifs
if [ -z "$real" ]; then
  real={q(str(plan.fallback_codex))}
  if [ ! -x "$real" ]; then
    echo "cao: codex not found on PATH: install it with \`{CODEX_INSTALL}\`" >&2
    exit 127
  fi
fi
if ! {answers}; then
  if ! why=$({" ".join(q(w) for w in plan.ensure)} 2>&1 >/dev/null); then
    why=${{why##*
}}
    echo "cao: ${{why#cao: error: }}; running Codex directly on your own login" >&2
    exec "$real" -c {q(DIRECT[0])} -c {q(DIRECT[1])} "$@"
  fi
fi
exec "$real" -c {q(override)} -c {q(chatgpt)} "$@"
"""


def install_shim(bin_dir: Path, plan: ShimPlan) -> Path:
    shim = bin_dir / "codex"
    if (shim.exists() or shim.is_symlink()) and not is_cao_shim(shim):
        raise CaoError(f"{shim} exists and is not cao's shim; refusing to overwrite it")
    if shim.resolve() == plan.fallback_codex.resolve():
        raise CaoError(f"{shim} is the real codex; refusing to overwrite it")
    ensure_dir(bin_dir, BIN_DIR_MODE)
    if shim.is_symlink():
        shim.unlink()
    write_atomic(shim, render_shim(plan).encode(), mode=SHIM_MODE)
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


def shim_codex(shim: Path, env: Mapping[str, str] = os.environ) -> Path | None:
    """The codex our shim would run now: the first on PATH that is not a shim, else the one
    `enable` saw; None when neither is there (moved or uninstalled)."""
    from .codex import find_codex

    with contextlib.suppress(CaoError):
        return find_codex(None, env)
    try:
        lines = shim.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for line in lines:
        if line.startswith("  real=") and (words := shlex.split(line.partition("=")[2])):
            fallback = Path(words[0])
            return fallback if fallback.is_file() and os.access(fallback, os.X_OK) else None
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
