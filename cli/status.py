"""`cao status`: every account's usage, health and the gateway at a glance; `--doctor` checks."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from cao.config import defaults
from cao.config.access import gateway_key
from cao.config.errors import CaoError, InvalidInput
from cao.config.pool import (
    AccountPool,
    AccountView,
    account_summary,
    earliest_reset,
)
from cao.config.state import AccountState, Switch
from cao.config.store import Store

from .base import (
    JsonFlag,
    app,
    print_json,
    store_of,
    warn,
    window_label,
)
from .codex import find_codex
from .dashboard import compact_lines, dashboard, report_document, report_markdown
from .doctor import doctor_checks, run_doctor
from .gateway import BinDir, fetch_status, meant_gateway, origin
from .shim import default_bin_dir, path_problem, shim_gateway

STATUS_VERSION = 1  # of the --json document; bumped only when a field changes meaning
RECENT_SWITCHES = 5  # shown on the dashboard; --json and --full have all of them
BAR_WIDTH = 20


class ReportFormat(StrEnum):
    md = "md"
    json = "json"


# -- the document (the --json output; everything else renders it) -------------------------------


def usage_windows(state: AccountState, now: float) -> list[dict[str, Any]]:
    """Every recorded window, shortest first; one past its reset says "reset", not old numbers."""
    windows = []
    for minutes, w in sorted(state.usage.items(), key=lambda kv: int(kv[0])):
        reset = not w.current(now)
        windows.append({
            "window_minutes": int(minutes),
            "label": window_label(minutes),
            "used_percent": None if reset else w.used_percent,
            "resets_at": w.resets_at,
            "reset": reset,
            "updated_at": w.updated_at or None,
        })  # fmt: skip
    return windows


def account_status(view: AccountView, now: float) -> dict[str, Any]:
    document = account_summary(view, now)
    del document["usage"]  # `windows` says the same, reset windows included
    expires = view.auth.expires_at
    return {
        **document,
        "home": str(view.home),
        "token_expired": expires is not None and expires <= now,
        "can_refresh": bool(view.auth.refresh_token) and not view.state.needs_login,
        "windows": usage_windows(view.state, now),
        "usage_read_at": view.state.usage_read_at,
        "credits": {
            "has_credits": view.state.has_credits,
            "unlimited": view.state.credits_unlimited,
            "balance": view.state.credits_balance,
        },
        "reset_credits": view.state.reset_credits,
    }


def switch_entry(switch: Switch) -> dict[str, Any]:
    return switch.summary()


@dataclass(frozen=True)
class ShimInfo:
    path: str
    enabled: bool
    url: str | None  # the gateway it routes Codex to
    problem: str | None  # why a shell would not run it


def shim_info(bin_dir: Path) -> ShimInfo:
    shim = bin_dir / "codex"
    url = shim_gateway(shim)
    if url is None:
        return ShimInfo(str(shim), False, None, None)
    try:
        problem = path_problem(bin_dir, find_codex())
    except CaoError:
        problem = None  # no real codex: the doctor's codex check says so
    return ShimInfo(str(shim), True, url, problem)


def gateway_info(store: Store, url: str) -> dict[str, Any]:
    return gateway_fields(url, fetch_status(url, gateway_key(store, create=False)))


def gateway_fields(url: str, answer: dict[str, Any] | None) -> dict[str, Any]:
    gateway = answer.get("gateway", {}) if answer else {}
    return {
        "url": url,
        "running": answer is not None,
        "version": gateway.get("version"),
        "upstream": gateway.get("upstream"),
        "retry_mode": gateway.get("retry_mode"),
    }


def status_document(
    store: Store, views: list[AccountView], switches: list[Switch], gateway_url: str | None,
    bin_dir: Path, now: float,
) -> dict[str, Any]:  # fmt: skip
    shim = shim_info(bin_dir)
    url = meant_gateway(gateway_url, bin_dir)  # the one rule (the shim is one small file)
    answer = fetch_status(url, gateway_key(store, create=False))
    usable = [v for v in views if v.usable(now)]
    live = live_accounts(answer)
    recorded = [switch_entry(s) for s in reversed(switches)]  # newest first
    return {
        "version": STATUS_VERSION,
        "generated_at": now,
        "data_dir": str(store.data_dir),
        "gateway": gateway_fields(url, answer),
        "shim": asdict(shim),
        "summary": {
            "accounts": len(views),
            "usable": len(usable),
            "next_reset": earliest_reset(views, now),
        },
        "accounts": [{**account_status(v, now), **live.get(v.name, NOT_LIVE)} for v in views],
        # The running gateway's (in memory, so a switch a moment old is there), else the disk's.
        "switches": live_switches(answer) or recorded,
    }


NOT_LIVE = {"conversations": None, "requests_per_minute": None}  # no gateway answers


def live_accounts(answer: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """What only the running gateway knows of each account: the conversations it serves and
    its requests in the last minute."""
    live = {}
    for account in (answer or {}).get("accounts", []):
        if isinstance(account, dict) and isinstance(account.get("name"), str):
            conversations = account.get("conversations")
            rate = account.get("requests_per_minute")
            live[account["name"]] = {
                "conversations": conversations if isinstance(conversations, list) else None,
                "requests_per_minute": rate if isinstance(rate, int) else None,
            }
    return live


def live_switches(answer: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    switches = (answer or {}).get("switches")
    if not isinstance(switches, list):
        return None  # an older gateway: the disk's list
    keys = ("at", "from", "to", "reason", "conversation")
    return [
        {key: s.get(key) for key in keys}
        for s in switches
        if isinstance(s, dict)
        and isinstance(s.get("at"), int | float)
        and isinstance(s.get("reason"), str)
    ]


# -- the command ----------------------------------------------------------------------------------


UrlOption = Annotated[
    str | None,
    typer.Option(help="Gateway URL to ask [default: the shim's, else http://127.0.0.1:4319]."),
]


@app.command()
def status(
    ctx: typer.Context,
    as_json: JsonFlag = False,
    compact: Annotated[
        bool, typer.Option("--compact", help="One line per account (the default off a terminal).")
    ] = False,
    pretty: Annotated[
        bool, typer.Option("--pretty", help="The dashboard, even off a terminal.")
    ] = False,
    full: Annotated[
        bool, typer.Option("--full", help="The dashboard with every recorded account switch.")
    ] = False,
    report: Annotated[
        ReportFormat | None,
        typer.Option(
            metavar="md|json",
            help="A shareable summary (emails masked, no ids or paths); a bare --report is md.",
        ),
    ] = None,
    doctor: Annotated[
        bool,
        typer.Option("--doctor", help="Check the set-up; exit 0 all fine, 1 warnings, 2 errors."),
    ] = False,
    url: UrlOption = None,
    bin_dir: BinDir = None,
    refresh: Annotated[
        bool,
        typer.Option(
            "--refresh", help="Read every account's usage from ChatGPT first (a few seconds)."
        ),
    ] = False,
    upstream: Annotated[
        str, typer.Option(metavar="URL", help="With --refresh: the backend origin.")
    ] = defaults.UPSTREAM_URL,
    upstream_ca: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="With --refresh: an extra CA bundle to trust."),
    ] = None,
    auth_url: Annotated[
        str,
        typer.Option(
            metavar="URL", help="With --refresh: the token endpoint origin, for refreshes."
        ),
    ] = defaults.AUTH_URL,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            help="Live: the dashboard redrawn every second with the running gateway's "
            "conversations, requests per minute and switches (q or Ctrl-C quits).",
        ),
    ] = False,
) -> None:
    """Every account's usage windows, health and reset times, and whether the gateway is up."""
    if sum([as_json, compact, pretty or full, report is not None, watch]) > 1:
        raise InvalidInput("choose one of --json, --compact, --pretty/--full, --report and --watch")
    if doctor and (compact or pretty or full or report is not None or watch):
        raise InvalidInput(
            "--doctor goes alone or with --json (--report, --compact, --pretty, --full and "
            "--watch show the status instead)"
        )
    store = store_of(ctx)
    gateway_url = origin(url, "--url") if url else None
    directory = bin_dir or default_bin_dir()
    pool = AccountPool(store)
    if refresh:
        from .usage import refresh_all

        upstream = origin(upstream, "--upstream")
        if upstream_ca is not None and not upstream_ca.is_file():
            raise InvalidInput(f"--upstream-ca {upstream_ca}: no such file")
        for name, problem in refresh_all(
            pool, upstream, origin(auth_url, "--auth-url"), upstream_ca
        ).items():
            warn(f"{name}: no usage reading: {problem}")
    if watch:
        from .watch import run_watch

        def current() -> dict[str, Any]:
            switches = store.load_state().switches
            return status_document(
                store, pool.accounts(), switches, gateway_url, directory, time.time()
            )

        run_watch(current)
        return
    now = time.time()
    views = pool.accounts()
    document = status_document(
        store, views, store.load_state().switches, gateway_url, directory, now
    )
    if doctor:
        run_doctor(doctor_checks(store, views, document, directory, now), as_json)
    if as_json:
        print_json(document)
    elif report is ReportFormat.json:
        print_json(report_document(document))
    elif report is ReportFormat.md:
        sys.stdout.write(report_markdown(report_document(document)))
    elif compact or not (pretty or full or sys.stdout.isatty()):
        sys.stdout.write("\n".join(compact_lines(document)) + "\n")
    else:
        from rich.console import Console

        console = Console(highlight=False)
        for line in dashboard(document, all_switches=full):
            console.print(line)


# The original tool's forms: `cao doctor` and `cao report` (thin aliases of the flags).


@app.command("doctor")
def doctor_command(
    ctx: typer.Context, as_json: JsonFlag = False, url: UrlOption = None, bin_dir: BinDir = None
) -> None:
    """Check the set-up (as `cao status --doctor`); exit 0 fine, 1 warnings, 2 errors."""
    status(ctx, as_json=as_json, doctor=True, url=url, bin_dir=bin_dir)


@app.command("report")
def report_command(
    ctx: typer.Context,
    form: Annotated[
        ReportFormat, typer.Argument(metavar="[md|json]", help="The summary's format.")
    ] = ReportFormat.md,
    url: UrlOption = None,
    bin_dir: BinDir = None,
) -> None:
    """A shareable summary (as `cao status --report`): emails masked, no ids or paths."""
    status(ctx, report=form, url=url, bin_dir=bin_dir)
