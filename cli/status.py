"""`cao status`: every account's usage, health and the gateway at a glance; `--doctor` checks."""

from __future__ import annotations

import stat
import sys
import time
from dataclasses import asdict, dataclass
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from cao.config import defaults
from cao.config.access import gateway_key, key_path
from cao.config.auth import AUTH_FILE
from cao.config.errors import CaoError, InvalidInput
from cao.config.names import cao_command
from cao.config.pool import (
    AccountPool,
    AccountView,
    Availability,
    account_summary,
    earliest_reset,
    same_account,
    same_account_advice,
)
from cao.config.state import AccountState, Switch
from cao.config.store import Store

from .base import (
    JsonFlag,
    app,
    human_until,
    local_time,
    print_json,
    status_words,
    store_of,
    warn,
    window_label,
)
from .codex import CODEX_INSTALL, find_codex, is_cao_shim
from .gateway import BinDir, fetch_status, meant_gateway, origin, start_command
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
    return {"at": switch.at, "from": switch.from_account, "to": switch.to_account,
            "reason": switch.reason}  # fmt: skip


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
    answer = fetch_status(url, gateway_key(store, create=False))
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
    usable = [v for v in views if v.usable(now)]
    return {
        "version": STATUS_VERSION,
        "generated_at": now,
        "data_dir": str(store.data_dir),
        "gateway": gateway_info(store, url),
        "shim": asdict(shim),
        "summary": {
            "accounts": len(views),
            "usable": len(usable),
            "next_reset": earliest_reset(views, now),
        },
        "accounts": [account_status(v, now) for v in views],
        "switches": [switch_entry(s) for s in reversed(switches)],  # newest first
    }


# -- a shareable report -------------------------------------------------------------------------


def mask_email(email: str | None) -> str | None:
    """j***@example.com: enough to tell accounts apart, not to name anyone."""
    if not email:
        return email
    local, at, domain = email.partition("@")
    return f"{local[:1]}***{at}{domain}"


def report_document(document: dict[str, Any]) -> dict[str, Any]:
    """The status without what identifies the user: emails masked, no ids or paths."""
    accounts = []
    for a in document["accounts"]:
        kept = {k: v for k, v in a.items() if k not in ("account_id", "home", "problem")}
        accounts.append({**kept, "email": mask_email(a["email"])})
    shim = {k: v for k, v in document["shim"].items() if k != "path"}
    return {**{k: v for k, v in document.items() if k != "data_dir"}, "shim": shim,
            "accounts": accounts}  # fmt: skip


def _usage_words(w: dict[str, Any], now: float) -> str:
    """One window: "60% (resets in 2h14m)", or "reset" once it is past its reset."""
    if w["reset"]:
        return "reset"
    when = f" (resets {human_until(w['resets_at'], now)})" if w["resets_at"] else ""
    return f"{w['used_percent']:.0f}%{when}"


def _window_cell(account: dict[str, Any], minutes: int, now: float) -> str:
    window = next((w for w in account["windows"] if w["window_minutes"] == minutes), None)
    return _usage_words(window, now) if window else "-"


def report_markdown(report: dict[str, Any]) -> str:
    now = report["generated_at"]
    gw = report["gateway"]
    lines = [
        f"# cao status, {local_time(now)}",
        "",
        f"- gateway: {'up' if gw['running'] else 'not answering'} at {gw['url']}",
        f"- codex shim: {'enabled' if report['shim']['enabled'] else 'not enabled'}",
        f"- accounts: {report['summary']['usable']} of {report['summary']['accounts']} usable",
        "",
        "| | account | email | plan | status | 5h | weekly |",
        "|---|---|---|---|---|---|---|",
    ]
    for a in report["accounts"]:
        lines.append(
            f"| {'*' if a['default'] else ''} | {a['name']} | {a['email'] or '-'} "
            f"| {a['plan'] or '-'} | {status_words(a, now)} | {_window_cell(a, 300, now)} "
            f"| {_window_cell(a, 10080, now)} |"
        )
    if report["switches"]:
        lines += ["", "Recent switches:", ""]
        for s in report["switches"][:RECENT_SWITCHES]:
            lines.append(
                f"- {local_time(s['at'])}: {s['from'] or '-'} -> {s['to']} ({s['reason']})"
            )
    return "\n".join(lines) + "\n"


# -- rendering ------------------------------------------------------------------------------------


def _token_words(account: dict[str, Any], now: float) -> str | None:
    expires = account["token_expires_at"]
    if account["login"] != "logged in" or account["needs_login"] or expires is None:
        return None
    return (
        f"token expired {human_until(expires, now)}"
        if expires <= now
        else (f"token expires {human_until(expires, now)}")
    )


def _header_words(document: dict[str, Any]) -> str:
    gw, shim = document["gateway"], document["shim"]
    gateway = (
        f"gateway up at {gw['url']} (cao {gw['version']})"
        if gw["running"]
        else f"gateway not answering at {gw['url']}"
    )
    return f"{gateway}; codex shim {'enabled' if shim['enabled'] else 'not enabled'}"


def compact_lines(document: dict[str, Any]) -> list[str]:
    """One line per account, for pipes and scripts that read text."""
    now = document["generated_at"]
    lines = [_header_words(document)]
    for a in document["accounts"]:
        parts = [
            status_words(a, now),
            *(f"{w['label']} {_usage_words(w, now)}" for w in a["windows"]),
        ]
        if token := _token_words(a, now):
            parts.append(token)
        lines.append(f"{'*' if a['default'] else ' '} {a['name']}: " + ", ".join(parts))
    return lines


def _bar(percent: float | None) -> str:
    filled = round(BAR_WIDTH * (percent or 0) / 100)
    colour = "green" if (percent or 0) < 70 else "yellow" if (percent or 0) < 95 else "red"
    return f"[{colour}]{'█' * filled}[/][dim]{'░' * (BAR_WIDTH - filled)}[/]"


def dashboard(document: dict[str, Any], all_switches: bool) -> list[str]:
    """Rich markup lines: a header, one block per account, the recent switches."""
    from rich.markup import escape

    now = document["generated_at"]
    gw, shim = document["gateway"], document["shim"]
    gateway = (
        f"[green]up[/] at {gw['url']} (cao {gw['version']})"
        if gw["running"]
        else f"[red]not answering[/] at {gw['url']}"
    )
    shim_words = "[green]enabled[/]" if shim["enabled"] else "[dim]not enabled[/]"
    summary = document["summary"]
    lines = [
        f"[bold]cao status[/]  gateway {gateway}  ·  codex shim {shim_words}  ·  "
        f"{summary['usable']}/{summary['accounts']} usable",
    ]
    if not document["accounts"]:
        lines.append("no accounts yet: add one with `cao add NAME`")
    for a in document["accounts"]:
        colour = "green" if a["status"] == Availability.USABLE else "red"
        if a["status"] == Availability.COOLING:
            colour = "yellow"
        head = [
            f"[bold]{'*' if a['default'] else ' '} {escape(a['name'])}[/]",
            escape(a["email"] or "-"),
            escape(a["plan"] or "-"),
            f"[{colour}]{escape(status_words(a, now))}[/]",
        ]
        if token := _token_words(a, now):
            head.append(f"[dim]{token}[/]")
        lines += ["", "  ".join(head)]
        for w in a["windows"]:
            if w["reset"]:
                tail = "[dim]reset[/]"
            else:
                when = f"resets {human_until(w['resets_at'], now)}" if w["resets_at"] else ""
                tail = f"{w['used_percent']:3.0f}%  {when}"
            lines.append(f"    {w['label']:<7} {_bar(w['used_percent'])}  {tail}")
        seen = []
        if a["usage_read_at"]:
            seen.append(f"usage read {human_until(a['usage_read_at'], now)}")
        credits = a["credits"]
        if credits["unlimited"]:
            seen.append("credits unlimited")
        elif credits["balance"] is not None:
            seen.append(f"credits {credits['balance']:g}")
        if a["reset_credits"]:
            seen.append(f"{a['reset_credits']} reset credit(s)")
        if a["last_quota_hit"]:
            seen.append(f"last quota hit {human_until(a['last_quota_hit'], now)}")
        if a["last_used"]:
            seen.append(f"last used {human_until(a['last_used'], now)}")
        if seen:
            lines.append(f"    [dim]{' · '.join(seen)}[/]")
    switches = document["switches"] if all_switches else document["switches"][:RECENT_SWITCHES]
    if switches:
        lines += ["", "[bold]recent switches[/]"]
        for s in switches:
            lines.append(
                f"  {local_time(s['at'])}  {escape(s['from'] or '-')} → {escape(s['to'] or '-')}"
                f"  [dim]{escape(s['reason'])}[/]"
            )
    return lines


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
    elif all(v.state.cooling(now) for v in working):
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
    answers = (
        gw["running"] if shim["url"] == gw["url"] else gateway_info(store, shim["url"])["running"]
    )
    if not answers:
        checks.append(Check(
            Level.ERROR,
            f"the codex shim routes Codex to {shim['url']} but no gateway answers there: Codex "
            "would fail",
            f"{start_command(shim['url'])}   (or `cao gateway disable`)",
        ))  # fmt: skip
    if shim["problem"]:
        checks.append(Check(
            Level.WARNING, shim["problem"], f'export PATH="{bin_dir}:$PATH"  (in your shell rc)'
        ))  # fmt: skip
    return checks or [Check(Level.OK, f"codex shim routes Codex through {shim['url']}")]


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


def doctor_checks(
    store: Store, views: list[AccountView], document: dict[str, Any], bin_dir: Path, now: float
) -> list[Check]:
    return [
        check_codex(),
        *check_accounts(views, now),
        *check_shim(store, document, bin_dir),
        *check_permissions(store, views, bin_dir),
    ]


MARKS = {Level.OK: "[green]✓[/]", Level.WARNING: "[yellow]![/]", Level.ERROR: "[red]✗[/]"}


# -- the command ----------------------------------------------------------------------------------


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
        typer.Option(help="A shareable summary (emails masked, no ids or paths): md or json."),
    ] = None,
    doctor: Annotated[
        bool,
        typer.Option("--doctor", help="Check the set-up; exit 0 all fine, 1 warnings, 2 errors."),
    ] = False,
    url: Annotated[
        str | None,
        typer.Option(help="Gateway URL to ask [default: the shim's, else http://127.0.0.1:4319]."),
    ] = None,
    bin_dir: BinDir = None,
    refresh: Annotated[
        bool,
        typer.Option(
            "--refresh", help="Read every account's usage from ChatGPT first (a few seconds)."
        ),
    ] = False,
    upstream: Annotated[
        str, typer.Option(help="With --refresh: the backend origin.")
    ] = defaults.UPSTREAM_URL,
    upstream_ca: Annotated[
        Path | None, typer.Option(help="With --refresh: an extra CA bundle to trust.")
    ] = None,
    auth_url: Annotated[
        str, typer.Option(help="With --refresh: the token endpoint origin, for refreshes.")
    ] = defaults.AUTH_URL,
) -> None:
    """Every account's usage windows, health and reset times, and whether the gateway is up."""
    if sum([as_json, compact, pretty or full, report is not None]) > 1:
        raise InvalidInput("choose one of --json, --compact, --pretty/--full and --report")
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
