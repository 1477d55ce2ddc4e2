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
from cao.config.errors import CaoError, InvalidInput
from cao.config.names import validate_name
from cao.config.pool import AccountPool, AccountView
from cao.config.quota import classify_output, compile_patterns
from cao.config.store import Store

from . import relay
from .base import app, local_time, say, store_of, warn
from .codex import codex_env, find_codex
from .gateway import fetch_status

SETTINGS_FILE = "cao.toml"  # in the data dir


def extra_quota_patterns(store: Store) -> list[re.Pattern[str]]:
    """compile_patterns() plus `[run] quota_patterns` from <data dir>/cao.toml."""
    import tomllib  # only `cao run` reads cao.toml

    path = store.data_dir / SETTINGS_FILE
    extra: list[str] = []
    if path.exists():
        try:
            settings = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise CaoError(f"{path}: {e}") from None
        section = settings.get("run", {})
        value = section.get("quota_patterns", []) if isinstance(section, dict) else None
        if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
            raise CaoError(f"{path}: [run] quota_patterns must be a list of strings")
        extra = value
    try:
        return compile_patterns(extra)
    except re.error as e:
        raise CaoError(f"{path}: bad quota pattern {e.pattern!r}: {e}") from None


def codex_argv(codex: Path, args: list[str]) -> list[str]:
    # As the original: `cao run -- codex exec ...` means `codex exec ...`.
    if args and args[0] == "codex":
        args = args[1:]
    return [str(codex), *args]


def exec_codex(argv: list[str], home: Path) -> None:
    """Hand the terminal to Codex: no capture at all."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(argv[0], argv, codex_env(home))  # noqa: S606
    except OSError as e:
        raise CaoError(f"cannot run {argv[0]}: {e.strerror}") from None


def candidates(views: list[AccountView], first: str | None, now: float) -> list[AccountView]:
    """Usable accounts in fallback order (from `first`); with none usable, every account that is
    logged in, to recheck them (that is what passes are for)."""
    if first is not None:
        index = next((i for i, v in enumerate(views) if v.name == first), 0)
        views = views[index:] + views[:index]
    usable = [v for v in views if v.usable(now)]
    return usable or [v for v in views if v.auth.logged_in and not v.state.needs_login]


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
        bool, typer.Option(help="One account, Codex gets the terminal directly (no capture).")
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
        bool, typer.Option(help="Run Codex through the gateway (no CLI fallback).")
    ] = False,
    gateway_url: Annotated[
        str | None, typer.Option(help="Gateway URL [default: http://127.0.0.1:4319].")
    ] = None,
) -> None:
    """Run Codex (arguments after --), moving to the next account when one hits its usage limit.

    On a terminal Codex runs on a pseudo-terminal cao relays, so the TUI works as usual.
    """
    store = store_of(ctx)
    pool = AccountPool(store)
    if account is not None:
        validate_name(account)
        store.require_account(account)
    views = pool.accounts()
    if not views:
        raise CaoError("no accounts yet: add one with `cao add NAME`")
    default = next((v for v in views if v.is_default), views[0])
    argv = codex_argv(find_codex(codex), list(ctx.args))

    if gateway:
        url = (gateway_url or defaults.gateway_url()).rstrip("/")
        if fetch_status(url) is None:
            warn(f"no gateway answers at {url}: start it with `cao gateway start`")
        override = f'openai_base_url="{url}{defaults.CODEX_API_PATH}"'
        exec_codex([argv[0], "-c", override, *argv[1:]], default.home)
    if no_fallback:
        chosen = next(v for v in views if v.name == (account or default.name))
        exec_codex(argv, chosen.home)
    if gateway_url is not None:
        raise InvalidInput("--gateway-url goes with --gateway")
    raise typer.Exit(
        run_with_fallback(
            pool,
            argv,
            account,
            max_passes,
            retry_delay,
            cooldown_seconds,
            extra_quota_patterns(store),
        )
    )


def run_with_fallback(
    pool: AccountPool,
    argv: list[str],
    first: str | None,
    max_passes: int,
    retry_delay: float,
    cooldown: float,
    patterns: list[re.Pattern[str]],
) -> int:
    previous: str | None = None
    for number in range(1, max_passes + 1):
        tried = candidates(pool.accounts(), first, time.time())
        if not tried:
            raise CaoError("no logged-in account: add one with `cao add NAME`")
        for view in tried:
            if previous is not None:
                say(f"cao: running codex on account {view.name}")
                pool.record_switch(previous, view.name, "quota")
            code, tail = relay.run(argv, codex_env(view.home))
            signal = classify_output(tail, patterns, time.time(), cooldown) if code else None
            if signal is None:
                return code  # success, an ordinary error, or Ctrl-C: Codex's own exit code
            pool.mark_limited(view.name, signal)
            resets = local_time(signal.resets_at)
            say(f"cao: account {view.name} hit its usage limit (resets {resets})")
            previous = view.name
        if number < max_passes:
            say(
                f"cao: every account is limited; pass {number + 1} of {max_passes} in "
                f"{retry_delay:g}s"
            )
            time.sleep(retry_delay)
    now = time.time()
    for view in pool.accounts():
        until = view.state.cooling_until
        when = local_time(until) if until and until > now else "unknown"
        say(f"cao: {view.name}: usage limit, resets {when}")
    return 1
