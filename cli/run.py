"""`cao run`: run Codex on the next account when one hits its usage limit."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from cao.config import defaults
from cao.config.access import codex_base_url, gateway_key
from cao.config.errors import CaoError, InvalidInput
from cao.config.homeconfig import config_problem
from cao.config.names import cao_command, validate_name
from cao.config.pool import (
    DEFAULT_STRATEGY,
    AccountPool,
    AccountView,
    Strategy,
)
from cao.config.quota import (
    compile_patterns,
)
from cao.config.sessions import (
    SESSION_PREFIX,
    SessionFile,
    sessions_by_prefix,
)
from cao.config.settings import SETTINGS_FILE, read_settings
from cao.config.store import Store

from . import relay
from .base import app, store_of, warn
from .codex import codex_env, find_codex
from .fallback import FallbackRun, end_codex
from .gateway import fetch_status, meant_gateway
from .homes import sync_account_homes


def extra_quota_patterns(store: Store) -> list[re.Pattern[str]]:
    """compile_patterns() plus `[run] quota_patterns` from <data dir>/cao.toml."""
    settings, unknown = read_settings(store.data_dir)
    for problem in unknown:
        warn(problem)
    path = store.data_dir / SETTINGS_FILE
    section = settings.get("run", {})
    value = section.get("quota_patterns", []) if isinstance(section, dict) else None
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise CaoError(f"{path}: [run] quota_patterns must be a list of strings")
    try:
        return compile_patterns(value)
    except re.error as e:
        raise CaoError(f"{path}: bad quota pattern {e.pattern!r}: {e}") from None


def codex_argv(codex: Path, args: list[str]) -> list[str]:
    # As the original: `cao run -- codex exec ...` means `codex exec ...`.
    if args and args[0] == "codex":
        args = args[1:]
    return [str(codex), *args]


def run_direct(argv: list[str], home: Path) -> int:
    """Codex with the terminal to itself (no capture, no relay); cao waits to stop what Codex
    leaves running from the home. Ctrl-C and Ctrl-\\ are Codex's, as under a shell."""
    import signal
    import subprocess

    sys.stdout.flush()
    sys.stderr.flush()
    try:
        proc = subprocess.Popen(argv, env=codex_env(home))
    except OSError as e:
        raise CaoError(f"cannot run {argv[0]}: {e.strerror}") from None
    ignored = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGQUIT)}
    forwarded = {
        s: signal.signal(s, lambda signum, frame: proc.send_signal(signum))
        for s in (signal.SIGTERM, signal.SIGHUP)
    }
    try:
        code = relay.exit_code(os.waitpid(proc.pid, 0)[1])
    finally:
        for s, h in {**ignored, **forwarded}.items():
            signal.signal(s, h)
    end_codex(home)
    return code


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    epilog="Extra usage-limit patterns (regular expressions): `quota_patterns = [...]` under "
    "`[run]` in <data dir>/cao.toml.",
)
def run(
    ctx: typer.Context,
    account: Annotated[
        str | None, typer.Option(help="Start with this account (only it, with --no-fallback).")
    ] = None,
    no_fallback: Annotated[
        bool,
        typer.Option(
            "--no-fallback", help="One account, Codex gets the terminal directly (no capture)."
        ),
    ] = False,
    max_passes: Annotated[
        int, typer.Option(min=1, help="Passes over all accounts when every one is limited.")
    ] = defaults.RUN_MAX_PASSES,
    retry_delay: Annotated[
        float, typer.Option(min=0, help="Seconds to wait between passes.")
    ] = defaults.RUN_RETRY_DELAY,
    cooldown_seconds: Annotated[
        int, typer.Option(min=1, help="Cooldown when Codex names no reset time.")
    ] = defaults.COOLDOWN_SECONDS,
    codex: Annotated[Path | None, typer.Option(help="The codex binary to run.")] = None,
    gateway: Annotated[
        bool, typer.Option("--gateway", help="Run Codex through the gateway (no CLI fallback).")
    ] = False,
    gateway_url: Annotated[
        str | None,
        typer.Option(help="Gateway URL (with --gateway; default http://127.0.0.1:4319)."),
    ] = None,
    restart: Annotated[
        bool,
        typer.Option(
            "--restart",
            help="On a limit, run the same command again from the start instead of "
            "continuing the session.",
        ),
    ] = False,
    ask: Annotated[
        bool, typer.Option("--ask", help="Wait for Enter before continuing on the next account.")
    ] = False,
    resume: Annotated[
        str | None,
        typer.Option(
            metavar="ID",
            help="Continue this session (see `cao sessions`; any unique start of its id) on a "
            "usable account.",
        ),
    ] = None,
    strategy: Annotated[
        Strategy,
        typer.Option(help="Which usable account goes first (as `cao gateway start`)."),
    ] = DEFAULT_STRATEGY,
) -> None:
    """Run Codex (arguments after --), moving to the next account when one hits its usage limit.

    On a terminal Codex runs on a pseudo-terminal cao relays, so the TUI works as usual. On a
    limit the same session continues on the next account (`codex resume`), unless --restart.
    """
    store = store_of(ctx)
    pool = AccountPool(store)
    if account is not None:
        validate_name(account)
        store.require_account(account)
    views = pool.accounts()
    if not views:
        raise CaoError("no accounts yet: add one with `cao add NAME`")
    sync_account_homes(store, [v.name for v in views])
    default = next((v for v in views if v.is_default), views[0])
    argv = codex_argv(find_codex(codex), list(ctx.args))
    session: SessionFile | None = None
    if resume is not None:
        session = locate_session(store, resume)
        if gateway or no_fallback or restart:
            raise InvalidInput("--resume goes without --gateway, --no-fallback and --restart")

    if gateway:
        url = meant_gateway(gateway_url)
        if fetch_status(url, gateway_key(store, create=False)) is None:
            warn(f"no gateway answers at {url}: start it with `cao gateway start`")
        # The plain URL: no secret in Codex's argv (the gateway checks the OS user).
        override = f'openai_base_url="{codex_base_url(url)}"'
        raise typer.Exit(run_direct([argv[0], "-c", override, *argv[1:]], default.home))
    if no_fallback:
        chosen = next(v for v in views if v.name == (account or default.name))
        if chosen.state.is_paused(time.time()):
            if account is None:  # named or nothing: a paused default is not taken silently
                raise CaoError(
                    f"the default account {chosen.name} is paused: "
                    f"`{cao_command('unpause', chosen.name)}` or name one with --account"
                )
            warn(f"account {chosen.name} is paused; running it because --account names it")
        if (problem := config_problem(chosen.home)) is not None:
            raise CaoError(f"account {chosen.name}: {problem}")
        raise typer.Exit(run_direct(argv, chosen.home))
    named = pool_view(views, account) if account is not None else None
    if named is not None and named.state.is_paused(time.time()):
        warn(f"account {named.name} is paused: not used (`{cao_command('unpause', named.name)}`)")
    if gateway_url is not None:
        raise InvalidInput("--gateway-url goes with --gateway")
    runner = FallbackRun(
        pool, argv, extra_quota_patterns(store), cooldown_seconds, not restart, ask, session,
        strategy,
    )  # fmt: skip
    raise typer.Exit(runner.run(account, max_passes, retry_delay))


def pool_view(views: list[AccountView], name: str) -> AccountView | None:
    return next((v for v in views if v.name == name), None)


def locate_session(store: Store, prefix: str) -> SessionFile:
    """The newest copy of the session whose id starts with `prefix`, in the account homes and
    the user's own CODEX_HOME."""
    from .sessions import session_homes

    if not SESSION_PREFIX.match(prefix):
        raise InvalidInput(f"{prefix!r} is not a session id (see `cao sessions`)")
    found = sessions_by_prefix([home for _, home in session_homes(store)], prefix)
    if not found:
        raise CaoError(
            f"no session {prefix} in any account home or in your own (see `cao sessions`)"
        )
    if len(found) > 1:
        ids = sorted(found, key=lambda i: found[i][0].modified, reverse=True)
        shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
        raise InvalidInput(f"{prefix} names {len(ids)} sessions: {shown}; give more of the id")
    (copies,) = found.values()
    return copies[0]
