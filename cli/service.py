"""The gateway as a login service (`cao gateway enable --at-login`): a systemd user unit on
Linux, a launchd agent on macOS. The service runs `cao gateway start` in the foreground and the
service manager keeps it up; `cao gateway disable` stops and removes it."""

from __future__ import annotations

import os
import plistlib
import shlex
import subprocess
import sys
from pathlib import Path

from cao.config.errors import CaoError
from cao.config.files import write_atomic

UNIT_NAME = "cao-gateway.service"
AGENT_LABEL = "com.github.cao.gateway"


def is_macos() -> bool:
    return sys.platform == "darwin"


def unit_path(env: dict[str, str] | None = None) -> Path:
    env = dict(os.environ) if env is None else env
    config = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config / "systemd" / "user" / UNIT_NAME


def agent_path() -> Path:
    return Path.home() / "Library" / "LaunchAgents" / f"{AGENT_LABEL}.plist"


def service_path() -> Path:
    return agent_path() if is_macos() else unit_path()


def _systemd_quote(word: str) -> str:
    # systemd splits ExecStart like a shell, with its own specifiers: % must be doubled.
    return shlex.quote(word).replace("%", "%%")


def render_unit(command: list[str], data_dir: Path) -> str:
    return (
        "# Written by `cao gateway enable --at-login`; `cao gateway disable` removes it.\n"
        "[Unit]\n"
        "Description=cao gateway: Codex across ChatGPT accounts\n"
        "After=network-online.target\n"
        "\n"
        "[Service]\n"
        "Type=exec\n"
        f"ExecStart={' '.join(_systemd_quote(w) for w in command)}\n"
        f"WorkingDirectory={_systemd_quote(str(data_dir))}\n"
        "Restart=on-failure\n"
        "RestartSec=5\n"
        "UMask=0077\n"
        "\n"
        "[Install]\n"
        "WantedBy=default.target\n"
    )


def render_plist(command: list[str], data_dir: Path) -> bytes:
    return plistlib.dumps(
        {
            "Label": AGENT_LABEL,
            "ProgramArguments": command,
            "WorkingDirectory": str(data_dir),
            "RunAtLoad": True,
            "KeepAlive": {"SuccessfulExit": False},
            "ThrottleInterval": 5,
            "Umask": 0o077,
            # The gateway writes its own size-bounded log (--log-file); launchd's files grow.
            "StandardOutPath": "/dev/null",
            "StandardErrorPath": str(data_dir / "gateway.out"),
            "ProcessType": "Background",
        }
    )


def service_command(cao: list[str], data_dir: Path, port_args: list[str]) -> list[str]:
    """What the service runs: the gateway in the foreground, logging to its file."""
    return [
        *cao, "--data-dir", str(data_dir), "gateway", "start", *port_args,
        "--log-file", str(data_dir / "gateway.log"),
    ]  # fmt: skip


def _run(args: list[str]) -> tuple[bool, str]:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, str(e)
    lines = (done.stderr or done.stdout).strip().splitlines()
    return done.returncode == 0, lines[-1] if lines else f"exit {done.returncode}"


def install_service(command: list[str], data_dir: Path, start_now: bool) -> str:
    """Write and load the login service; the one line to tell the user."""
    path = service_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_macos():
        write_atomic(path, render_plist(command, data_dir), mode=0o644)
        domain = f"gui/{os.getuid()}"
        _run(["launchctl", "bootout", domain, str(path)])  # an older copy, if loaded
        ok, why = _run(["launchctl", "bootstrap", domain, str(path)])
        manual = f"launchctl bootstrap {domain} {shlex.quote(str(path))}"
    else:
        write_atomic(path, render_unit(command, data_dir).encode(), mode=0o644)
        _run(["systemctl", "--user", "daemon-reload"])
        enable = ["systemctl", "--user", "enable", *(["--now"] if start_now else []), UNIT_NAME]
        ok, why = _run(enable)
        manual = " ".join(enable)
    if not ok:
        return f"installed {path}, but could not load it ({why}): run `{manual}`"
    return f"installed {path}: the gateway starts at login"


def remove_service() -> str | None:
    """Stop, unload and remove the login service; None when none was installed."""
    path = service_path()
    if not path.exists():
        return None
    text = path.read_bytes()
    if b"cao gateway" not in text and AGENT_LABEL.encode() not in text:
        raise CaoError(f"{path} was not written by cao; left it alone")
    if is_macos():
        _run(["launchctl", "bootout", f"gui/{os.getuid()}", str(path)])
    else:
        _run(["systemctl", "--user", "disable", "--now", UNIT_NAME])
    path.unlink()
    if not is_macos():
        _run(["systemctl", "--user", "daemon-reload"])
    return f"removed the login service {path}"
