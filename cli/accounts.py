"""Account commands: add, import, use, current, switch, list, remove."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from cao.config.auth import API_KEY_LOGIN, AUTH_FILE, AccountAuth, LoginState, read_auth
from cao.config.errors import CaoError, InvalidInput
from cao.config.files import write_atomic
from cao.config.homeconfig import config_problem
from cao.config.names import (
    cao_command,
    case_collisions,
    is_safe_name,
    refuse_case_twin,
    validate_new_name,
)
from cao.config.pool import AccountPool, account_summary, same_account, same_account_advice
from cao.config.store import Store

from .base import (
    AccountName,
    JsonFlag,
    account_name,
    app,
    human_until,
    print_json,
    say,
    short_status,
    store_of,
    text_table,
    warn,
    window_label,
)
from .codex import find_codex, run_login, stop_app_server
from .daemons import clients
from .homes import sync_account_home
from .logins import (
    INTERRUPTED,
    KEYRING_STORES,
    credentials_store,
    keyring_advice,
    login_advice,
    login_failure,
    read_keyring_login,
)


def new_account_name(store: Store, name: str) -> str:
    """A name for `add`/`import`: an existing account's (a relogin), or a valid new one."""
    accounts = store.load_registry().accounts
    if is_safe_name(name) and name in accounts:
        return name
    validate_new_name(name)
    refuse_case_twin(name, accounts)
    return name


@app.command()
def add(
    ctx: typer.Context,
    name: AccountName,
    device_auth: Annotated[
        bool, typer.Option("--device-auth", help="Log in with a device code instead of a browser.")
    ] = False,
    no_login: Annotated[
        bool, typer.Option("--no-login", help="Only create the account home; log in later.")
    ] = False,
    codex: Annotated[
        Path | None, typer.Option("--codex", help="The codex binary to log in with.")
    ] = None,
) -> None:
    """Add an account (its own CODEX_HOME) and log it in with `codex login`.

    Adding an existing account runs the login again (e.g. after "needs login").
    """
    store = store_of(ctx)
    name = new_account_name(store, name)
    codex_bin = None if no_login else find_codex(codex)
    home = store.prepare_home(name)
    sync_account_home(store, name)
    created = store.update_registry(lambda r: r.add(name))
    registry = store.load_registry()
    say(
        f"{'added' if created else 'account exists:'} {name} ({home})"
        + (" [default]" if registry.default_account == name else "")
    )
    if codex_bin is None:
        say(f"log in later with: {cao_command('add', name)}")
        return
    code, output = run_login(codex_bin, home, device_auth, login_advice(name))
    auth_path = home / AUTH_FILE
    if auth_path.exists():
        auth_path.chmod(0o600)
    if code != 0:
        message = login_failure(name, device_auth, code, output)
        if code in (INTERRUPTED, 128 + 2):
            say(f"cao: {message}")
            raise typer.Exit(INTERRUPTED)
        raise CaoError(message)
    auth = read_auth(home)
    if not auth.logged_in:
        raise CaoError(f"login finished but {auth_path} holds no tokens ({auth.state})")
    # A fresh login makes any "needs login" mark stale.
    store.update_state(lambda s: s.account(name).__setattr__("needs_login", None))
    say(f"logged in {name}" + (f" as {auth.email}" if auth.email else ""))
    warn_same_account(store, name)


def warn_same_account(store: Store, name: str) -> None:
    """A browser still signed in gives the same ChatGPT account twice: say so at once."""
    for names in same_account(AccountPool(store).accounts()):
        if name in names:
            warn(same_account_advice([n for n in names if n != name] + [name]))


def login_to_import(source: Path, name: str) -> tuple[bytes, Path]:
    """The auth.json document `cao import --from SOURCE` copies, and where it came from: the
    file, or the home whose Codex keeps its login in the OS keyring."""
    path = source / AUTH_FILE if source.is_dir() else source
    try:
        return path.read_bytes(), path
    except FileNotFoundError:
        if not (source.is_dir() and credentials_store(source) in KEYRING_STORES):
            raise InvalidInput(f"cannot read {path}: No such file or directory") from None
    except OSError as e:
        raise InvalidInput(f"cannot read {path}: {e.strerror}") from None
    data, how = read_keyring_login(source)
    if data is None:
        raise CaoError(keyring_advice(source, name, how))
    say(f"read the login of {source} from {how}")
    return data, source


@app.command("import")
def import_(
    ctx: typer.Context,
    name: AccountName,
    source: Annotated[
        Path,
        typer.Option(
            "--from",
            help="A CODEX_HOME (e.g. ~/.codex) or an auth.json to copy.",
            show_default=False,
        ),
    ],
    force: Annotated[
        bool, typer.Option("--force", help="Replace a login the account already has.")
    ] = False,
) -> None:
    """Copy an existing Codex login into an account, so no browser login is needed."""
    store = store_of(ctx)
    name = new_account_name(store, name)
    data, path = login_to_import(source.expanduser(), name)
    try:
        auth = AccountAuth.parse(json.loads(data))
    except ValueError:
        raise InvalidInput(f"{path} is not valid JSON") from None
    if not auth.logged_in:
        if auth.problem == API_KEY_LOGIN:
            raise InvalidInput(f"{path} holds {API_KEY_LOGIN}: cao switches ChatGPT logins")
        raise InvalidInput(f"{path} holds no ChatGPT login: {auth.problem or auth.state}")
    home = store.prepare_home(name)
    if read_auth(home).logged_in and not force:
        raise CaoError(f"account {name} is already logged in; add --force to replace its login")
    write_atomic(home / AUTH_FILE, data)
    sync_account_home(store, name)
    store.update_registry(lambda r: r.add(name))
    store.update_state(lambda s: s.account(name).__setattr__("needs_login", None))
    say(f"imported {path} into {name}" + (f" ({auth.email})" if auth.email else ""))
    warn_same_account(store, name)
    # Refresh tokens are single-use: two homes holding one login will brick one of them.
    origin = path if path.is_dir() else path.parent
    warn(
        f"{origin} and {name} now share one login; when either refreshes it, the other "
        f"must log in again. Prefer `codex logout` there, or `{cao_command('add', name)}` for "
        "a login of its own."
    )


@app.command()
def use(ctx: typer.Context, name: AccountName) -> None:
    """Make NAME the default account (tried first)."""
    store = store_of(ctx)
    name = account_name(name)
    store.require_account(name)

    def set_default(registry: Any) -> None:
        if name not in registry.accounts:
            raise CaoError(f"no account named {name!r}")
        registry.default_account = name

    store.update_registry(set_default)
    say(f"default account: {name}")
    auth = read_auth(store.home(name))
    if not auth.logged_in:
        problem = f" ({auth.problem})" if auth.problem else ""
        warn(f"account {name} is not logged in{problem}: run `{cao_command('add', name)}`")


@app.command()
def current(ctx: typer.Context) -> None:
    """Print the default account."""
    default = store_of(ctx).load_registry().default_account
    if default is None:
        raise CaoError("no default account: add one with `cao add NAME`")
    print(default)


@app.command()
def switch(
    ctx: typer.Context,
    name: Annotated[
        str | None,
        typer.Argument(
            metavar="[NAME]", help="Make it the default (as `cao use`).", show_default=False
        ),
    ] = None,
) -> None:
    """Make NAME the default account, or pick it from a numbered list."""
    if name is not None:
        use(ctx, name)
        return
    store = store_of(ctx)
    registry = store.load_registry()
    if not registry.accounts:
        raise CaoError("no accounts yet: add one with `cao add NAME`")
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise InvalidInput("`cao switch` needs a terminal; use `cao use NAME` instead")
    for i, name in enumerate(registry.accounts, 1):
        marker = "*" if name == registry.default_account else " "
        print(f"{marker} {i}) {name}")
    answer = typer.prompt("Default account (number or name)").strip()
    if answer.isdigit() and 1 <= int(answer) <= len(registry.accounts):
        choice = registry.accounts[int(answer) - 1]
    elif answer in registry.accounts:
        choice = answer
    else:
        raise InvalidInput(f"{answer!r} is not one of the listed accounts")
    use(ctx, choice)


@app.command("list")
def list_(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List accounts in fallback order: login, email, plan, token expiry, usage."""
    views = AccountPool(store_of(ctx)).accounts()
    now = time.time()
    broken = {v.name: problem for v in views if (problem := config_problem(v.home))}
    if as_json:
        print_json([
            {**account_summary(v, now), "home": str(v.home), "config_problem": broken.get(v.name)}
            for v in views
        ])  # fmt: skip
        return
    if not views:
        say("no accounts yet: add one with `cao add NAME`")
        return
    rows = []
    for v in views:
        status = short_status(account_summary(v, now), now)
        usage = " ".join(
            f"{window_label(m)} {w.used_percent:.0f}%"
            for m, w in sorted(v.state.current_usage(now).items(), key=lambda kv: int(kv[0]))
        )
        expiry = human_until(v.auth.expires_at, now) if v.auth.expires_at else "-"
        rows.append([
            "*" if v.is_default else "",
            v.name,
            "broken config.toml" if v.name in broken else status,
            usage or "-",
            expiry if v.auth.state is LoginState.LOGGED_IN else "-",
            v.auth.email or "-",
            v.auth.plan_type or "-",
        ])  # fmt: skip
    # Plain aligned columns: rich's Table would double this command's run time (~150 ms).
    header = ["", "name", "status", "usage", "token expires", "email", "plan"]
    table = text_table(header, rows)
    if max(len(line) for line in table.splitlines()) > shutil.get_terminal_size().columns:
        # Too wide for the terminal: who the account is goes on a line of its own.
        table = text_table(header[:4], [r[:4] for r in rows])
        lines = table.splitlines()
        who = [f"\n     {r[5]}  {r[6]}  token expires {r[4]}" if r[5] != "-" else "" for r in rows]
        table = "\n".join([lines[0], *map("".join, zip(lines[1:], who, strict=True))]) + "\n"
    sys.stdout.write(table)
    for name, problem in broken.items():
        warn(f"account {name}: {problem}; `cao run` skips it until it is fixed")
    for names in case_collisions(v.name for v in views):
        warn(
            f"accounts {', '.join(names)} differ only in case: on a case-insensitive disk "
            "(macOS) they are one CODEX_HOME; remove all but one"
        )


@app.command()
def remove(
    ctx: typer.Context,
    name: AccountName,
    keep_files: Annotated[
        bool, typer.Option("--keep-files", help="Keep the account's CODEX_HOME on disk.")
    ] = False,
) -> None:
    """Remove an account from the registry and delete its home (unless --keep-files)."""
    store = store_of(ctx)
    name = account_name(name)
    store.require_account(name)
    running = clients(store.home(name))
    if running:
        pids = ", ".join(str(p.pid) for p in running)
        raise CaoError(f"Codex is running on account {name} (pid {pids}): quit it, then remove")

    def drop(registry: Any) -> str | None:
        """The new default, if removing `name` changed it."""
        was = registry.default_account
        if name in registry.accounts:
            registry.remove(name)
        now = registry.default_account
        return str(now) if now and now != was else None

    new_default = store.update_registry(drop)
    store.update_state(lambda s: s.accounts.pop(name, None))
    stop_app_server(store.home(name))  # Codex's daemon would run on from a home no one uses
    if not keep_files:
        store.delete_home(name)
    say(f"removed {name}" + (" (files kept)" if keep_files else ""))
    if new_default:
        say(f"default account: {new_default}")
