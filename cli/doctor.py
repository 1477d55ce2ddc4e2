"""`cao status --doctor`: checks of the set-up, each failing one with the command that fixes it."""

from __future__ import annotations

import shlex
import stat
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import typer

from cao.config.access import key_path
from cao.config.auth import AUTH_FILE, read_auth
from cao.config.errors import CaoError
from cao.config.names import cao_command
from cao.config.pool import (
    AccountView,
    Availability,
    earliest_reset,
    same_account,
    same_account_advice,
)
from cao.config.settings import SETTINGS_FILE, read_settings
from cao.config.store import Store

from .base import cao_words, human_until, local_time, print_json
from .codex import CODEX_INSTALL, find_codex, is_cao_shim
from .gateway import start_command
from .probe import Answer, probe
from .shim import shim_codex

# -- doctor ---------------------------------------------------------------------------------------


class Level(IntEnum):
    """Also the exit code of `cao status --doctor`: the worst check wins."""

    OK = 0
    WARNING = 1
    ERROR = 2


@dataclass(frozen=True)
class Check:
    level: Level
    message: str
    fix: str | None = None


def check_codex() -> Check:
    try:
        codex = find_codex()
    except CaoError:
        return Check(Level.ERROR, "codex not found on PATH", CODEX_INSTALL)
    import subprocess  # only the doctor starts a process

    try:
        out = subprocess.run(
            [str(codex), "--version"], capture_output=True, text=True, timeout=15,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as e:
        return Check(Level.ERROR, f"{codex} does not run ({e})", CODEX_INSTALL)
    words = (out.stdout or out.stderr).strip().splitlines()
    if out.returncode != 0 or not words:
        return Check(Level.ERROR, f"{codex} --version failed", CODEX_INSTALL)
    return Check(Level.OK, f"{words[0]} at {codex}")


def check_accounts(views: list[AccountView], now: float) -> list[Check]:
    if not views:
        return [Check(Level.ERROR, "no accounts", "cao add NAME")]
    checks = []
    for names in same_account(views):
        advice = same_account_advice(names)
        message, _, fix = advice.partition("; log ")
        checks.append(Check(Level.WARNING, message, f"log {fix}"))
    for v in views:
        availability = v.availability(now)
        if availability is Availability.NEEDS_LOGIN:
            checks.append(Check(
                Level.WARNING,
                f"account {v.name} needs login ({v.state.needs_login}): a refresh cannot save "
                "its tokens",
                v.fix_command() or cao_command("add", v.name),
            ))  # fmt: skip
        elif availability in (Availability.NOT_LOGGED_IN, Availability.UNREADABLE):
            problem = f" ({v.auth.problem})" if v.auth.problem else ""
            checks.append(
                Check(
                    Level.WARNING,
                    f"account {v.name}: {availability}{problem}",
                    v.fix_command() or cao_command("add", v.name),
                )
            )
        elif not v.auth.refresh_token and v.auth.expires_within(0, now):
            checks.append(Check(
                Level.WARNING,
                f"account {v.name}: token expired and no refresh token to renew it",
                v.fix_command() or cao_command("add", v.name),
            ))  # fmt: skip
    working = [v for v in views if v.auth.logged_in and not v.state.needs_login]
    if not working:
        checks.append(
            Check(Level.ERROR, "no account can be used: none is logged in", "cao add NAME")
        )
    elif paused := [v.name for v in working if v.state.is_paused(now)]:
        if not any(v.usable(now) for v in working):
            checks.append(Check(
                Level.WARNING,
                f"no account is in rotation: paused: {', '.join(paused)}"
                + ("; the others are limited" if len(paused) < len(working) else ""),
                cao_command("unpause", paused[0]),
            ))  # fmt: skip
    elif not any(v.usable(now) for v in working):
        back = earliest_reset(working, now) or now
        checks.append(Check(
            Level.WARNING,
            f"every account is cooling down; the first is back {human_until(back, now)} "
            f"({local_time(back)})",
            "cao add NAME (another account), or wait",
        ))  # fmt: skip
    if not checks:
        checks.append(Check(Level.OK, f"{len(views)} account(s) logged in"))
    return checks


def check_shim(store: Store, document: dict[str, Any], bin_dir: Path) -> list[Check]:
    shim, gw = document["shim"], document["gateway"]
    if not shim["enabled"]:
        return [Check(Level.OK, "codex shim not enabled (Codex talks to ChatGPT directly)")]
    checks = []
    # The gateway asked may be another one (--url): what matters is the one the shim uses.
    from .status import gateway_info  # the document's own probe (status imports this module)

    answers = (
        gw["running"] if shim["url"] == gw["url"] else gateway_info(store, shim["url"])["running"]
    )
    if not answers:
        checks.append(gateway_check(store, shim["url"]))
    if shim_codex(bin_dir / "codex") is None:
        checks.append(Check(
            Level.ERROR,
            "the codex shim finds no codex to run (moved or uninstalled)",
            f"{CODEX_INSTALL}   (the shim takes the first codex on PATH)",
        ))  # fmt: skip
    if shim["problem"]:
        checks.append(Check(
            Level.WARNING, shim["problem"], f'export PATH="{bin_dir}:$PATH"  (in your shell rc)'
        ))  # fmt: skip
    return checks or [Check(Level.OK, f"codex shim routes Codex through {shim['url']}")]


def gateway_check(store: Store, url: str) -> Check:
    """The shim's gateway does not serve this data dir: say what is there, and a fix that
    works as printed (a `start` on a port taken by another gateway would fail)."""
    found = probe(url, store)
    where = urlsplit(url)
    if found.answer is Answer.DOWN:
        return Check(
            Level.ERROR,
            f"the codex shim routes Codex to {url} but no gateway answers there (the shim "
            "starts one, but the IDE extension and the desktop app do not)",
            f"{start_command(url, store)} --daemon   (or `{cao_words(store, 'gateway disable')}`)",
        )
    if found.answer is Answer.OTHER_DATA_DIR:
        other = (found.document or {}).get("gateway", {}).get("data_dir", "")
        return Check(
            Level.ERROR,
            f"{found.words(url)}: Codex is served by that data dir's accounts",
            f"cao --data-dir {shlex.quote(str(other))} status   (or use one data dir)",
        )
    port = free_port(where.hostname or "127.0.0.1")
    return Check(
        Level.ERROR,
        f"{found.words(url)}: Codex cannot use it",
        f"{cao_words(store, f'gateway start --daemon --port {port}')} && "
        f"{cao_words(store, f'gateway enable --port {port}')}",
    )


def free_port(host: str) -> int:
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _loose(path: Path, allowed: int) -> bool:
    try:
        return stat.S_IMODE(path.stat().st_mode) & ~allowed != 0
    except OSError:
        return False


def check_permissions(store: Store, views: list[AccountView], bin_dir: Path) -> list[Check]:
    checks = []
    shim = bin_dir / "codex"
    secrets = [(key_path(store), "the gateway key"), (shim, "the codex shim, with the key")]
    for path, what in secrets:
        if path.is_file() and (path.name != "codex" or is_cao_shim(path)) and _loose(path, 0o700):
            checks.append(Check(
                Level.ERROR, f"{path} ({what}) is readable by others", f"chmod go-rwx {path}"
            ))  # fmt: skip
    for directory in [store.data_dir, *(v.home for v in views)]:
        if directory.is_dir() and not directory.is_symlink() and _loose(directory, 0o700):
            checks.append(Check(
                Level.ERROR, f"{directory} is readable by others", f"chmod 700 {directory}"
            ))  # fmt: skip
    for v in views:
        token_file = v.home / AUTH_FILE
        if token_file.is_file() and _loose(token_file, 0o600):
            checks.append(Check(
                Level.ERROR, f"{token_file} (login tokens) is readable by others",
                f"chmod 600 {token_file}",
            ))  # fmt: skip
    return checks or [Check(Level.OK, "data dir and token files are private")]


def codex_own_home() -> Path:
    """Where plain `codex` keeps its login: $CODEX_HOME, else ~/.codex."""
    from cao.config.homeconfig import user_codex_home

    return user_codex_home()


def check_shared_login(views: list[AccountView], own: Path) -> list[Check]:
    """An account holding the very refresh token `~/.codex` holds (`cao import` copies it):
    refresh tokens are single-use, so whichever refreshes first logs the other out."""
    theirs = read_auth(own).refresh_token
    if not theirs:
        return []
    return [
        Check(
            Level.WARNING,
            f"account {v.name} shares its login with {own} (one refresh token): when either "
            "refreshes it, the other must log in again",
            f"{cao_command('add', v.name)}   (a login of its own; or `codex logout` in {own})",
        )
        for v in views
        if v.auth.refresh_token == theirs and v.home.resolve() != own.resolve()
    ]


def check_settings(store: Store) -> list[Check]:
    try:
        _, unknown = read_settings(store.data_dir)
    except CaoError as e:
        return [Check(Level.ERROR, str(e), f"fix or remove {store.data_dir / SETTINGS_FILE}")]
    return [Check(Level.WARNING, problem, "see `cao run --help`") for problem in unknown]


def check_homes(store: Store, views: list[AccountView]) -> list[Check]:
    """Account homes Codex cannot start in (a config.toml that does not parse), names that
    are one directory on a case-insensitive disk, a user's config.toml the homes cannot
    follow."""
    from cao.config.codexconfig import CONFIG_FILE
    from cao.config.homeconfig import config_problem, user_codex_home
    from cao.config.names import case_collisions

    checks = []
    for v in views:
        if (problem := config_problem(v.home)) is not None:
            checks.append(Check(
                Level.WARNING, f"account {v.name}: {problem} (`cao run` skips it)",
                f"fix {v.home / CONFIG_FILE}",
            ))  # fmt: skip
    for names in case_collisions(v.name for v in views):
        checks.append(Check(
            Level.WARNING,
            f"accounts {', '.join(names)} differ only in case (one CODEX_HOME on a "
            "case-insensitive disk)",
            f"{cao_command('remove', names[-1])}",
        ))  # fmt: skip
    own = user_codex_home(data_dir=store.data_dir)
    if (problem := config_problem(own)) is not None:
        checks.append(Check(
            Level.WARNING, f"{problem}: the account homes keep the Codex setup they had",
            f"fix {own / CONFIG_FILE}",
        ))  # fmt: skip
    return checks


def doctor_checks(
    store: Store, views: list[AccountView], document: dict[str, Any], bin_dir: Path, now: float
) -> list[Check]:
    return [
        check_codex(),
        *check_accounts(views, now),
        *check_shared_login(views, codex_own_home()),
        *check_settings(store),
        *check_homes(store, views),
        *check_shim(store, document, bin_dir),
        *check_permissions(store, views, bin_dir),
    ]


MARKS = {Level.OK: "[green]✓[/]", Level.WARNING: "[yellow]![/]", Level.ERROR: "[red]✗[/]"}


def run_doctor(checks: list[Check], as_json: bool) -> None:
    worst = max((c.level for c in checks), default=Level.OK)
    if as_json:
        print_json({
            "result": worst.name.lower(),
            "checks": [{"level": c.level.name.lower(), "message": c.message, "fix": c.fix}
                       for c in checks],
        })  # fmt: skip
        raise typer.Exit(int(worst))
    from rich.console import Console
    from rich.markup import escape

    console = Console(highlight=False, soft_wrap=True)
    for c in checks:
        console.print(f"{MARKS[c.level]} {escape(c.message)}")
        if c.fix and c.level is not Level.OK:
            console.print(f"    fix: {escape(c.fix)}")
    counts = {level: sum(1 for c in checks if c.level is level) for level in Level}
    console.print(
        f"{counts[Level.ERROR]} error(s), {counts[Level.WARNING]} warning(s)"
        if worst
        else "all fine"
    )
    raise typer.Exit(int(worst))
