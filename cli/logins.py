"""Logins that are not a plain auth.json: Codex's OS-keyring store, and what to tell the user
when `codex login` fails or is interrupted in an account home."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

from cao.config.codexconfig import CONFIG_FILE
from cao.config.homeconfig import ConfigError, read_toml
from cao.config.names import cao_command

# Codex's keyring entry for a CODEX_HOME (codex-rs auth storage): service "Codex Auth",
# account "cli|" + the first 16 hex digits of sha256(the canonical home path); the secret is
# the auth.json document. Newer Codex builds may split it over several entries: those are
# not read here, and the message says how to log in instead.
KEYRING_SERVICE = "Codex Auth"
KEYRING_STORES = ("keyring", "auto")
INTERRUPTED = 130


def keyring_account(home: Path) -> str:
    try:
        canonical = home.resolve(strict=True)
    except OSError:
        canonical = home
    return "cli|" + hashlib.sha256(str(canonical).encode()).hexdigest()[:16]


def credentials_store(home: Path) -> str | None:
    """`cli_auth_credentials_store` of a Codex home's config.toml (None: unset or unreadable)."""
    try:
        config = read_toml(home / CONFIG_FILE) or {}
    except ConfigError:
        return None
    value = config.get("cli_auth_credentials_store")
    return value if isinstance(value, str) else None


def keyring_readers() -> list[list[str]]:
    """Commands that print a generic secret for (service, account), of those installed:
    macOS `security`, libsecret's `secret-tool` (the Secret Service Codex uses on Linux)."""
    readers: list[list[str]] = []
    if shutil.which("security"):
        readers.append(["security", "find-generic-password", "-s", "{service}", "-a",
                        "{account}", "-w"])  # fmt: skip
    if shutil.which("secret-tool"):
        readers.append(["secret-tool", "lookup", "service", "{service}", "username", "{account}"])
    return readers


def read_keyring_login(home: Path) -> tuple[bytes | None, str]:
    """The auth.json document Codex keeps in the OS keyring for `home`, and how it was read
    (or why it could not be)."""
    import subprocess

    account = keyring_account(home)
    readers = keyring_readers()
    if not readers:
        return None, "no keyring reader is installed (`security` on macOS, `secret-tool` on Linux)"
    for template in readers:
        argv = [a.format(service=KEYRING_SERVICE, account=account) for a in template]
        try:
            done = subprocess.run(
                argv, capture_output=True, timeout=30, stdin=subprocess.DEVNULL, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip(), f"the OS keyring ({template[0]})"
    tools = " or ".join(t[0] for t in readers)
    return None, f"{tools} found no Codex login for {home} in the OS keyring"


def keyring_advice(source: Path, name: str, why: str) -> str:
    return (
        f"{source} keeps its Codex login in the OS keyring (cli_auth_credentials_store), not in "
        f"auth.json, and {why}: log account {name} in with `{cao_command('add', name)}` "
        f"(browser) or `{cao_command('add', name)} --device-auth` instead"
    )


def add_command(name: str, device_auth: bool) -> str:
    return cao_command("add", name) + (" --device-auth" if device_auth else "")


CODEX_DEVICE_LOGIN = b"`codex login --device-auth`"


def login_advice(name: str) -> Callable[[bytes], bytes]:
    """What `cao add` shows of `codex login`'s output: its "Use `codex login --device-auth`
    instead" (which would log in ~/.codex) names the cao command for this account."""
    replacement = f"`{add_command(name, True)}`".encode()
    return lambda data: data.replace(CODEX_DEVICE_LOGIN, replacement)


def login_failure(name: str, device_auth: bool, code: int, output: str) -> str:
    """What cao says after `codex login` in account `name` did not log in: the command that
    tries again (with --device-auth when it was used, or when Codex advised it)."""
    retry = add_command(name, device_auth or "--device-auth" in output)
    if code in (INTERRUPTED, 128 + 2):
        return f"login interrupted: {name} is not logged in; run `{retry}` to try again"
    return f"codex login exited with code {code}; run `{retry}` to try again"
