"""How `cao status` shows its document: dashboard, compact lines, shareable report."""

from __future__ import annotations

from typing import Any

from cao.config.pool import Availability

from .base import human_until, local_time, status_words

BAR_WIDTH = 20
RECENT_SWITCHES = 5  # shown on the dashboard; --json and --full have all of them


def short_conversation(conversation: str) -> str:
    """A conversation id for humans: its end (Codex's thread ids are UUIDv7s, whose start is
    the time they began and so is shared by conversations begun together)."""
    return conversation if len(conversation) <= 12 else "…" + conversation[-8:]


# -- a shareable report -------------------------------------------------------------------------


def mask_email(email: str | None) -> str | None:
    """j***@example.com: enough to tell accounts apart, not to name anyone."""
    if not email:
        return email
    local, at, domain = email.partition("@")
    return f"{local[:1]}***{at}{domain}"


def mask_name(name: str | None) -> str | None:
    """An account name that is an email address (`john.doe@example.com`) is masked as one."""
    return mask_email(name) if name and "@" in name else name


def report_document(document: dict[str, Any]) -> dict[str, Any]:
    """The status without what identifies the user: emails masked (in account names too), no
    ids or paths."""
    accounts = []
    for a in document["accounts"]:
        private = ("account_id", "home", "problem", "conversations")
        kept = {k: v for k, v in a.items() if k not in private}
        name, fix = a["name"], a["fix"]
        if fix and mask_name(name) != name:
            fix = fix.replace(name, str(mask_name(name)))
        accounts.append({**kept, "name": mask_name(name), "fix": fix,
                         "email": mask_email(a["email"])})  # fmt: skip
    switches = [{**{k: v for k, v in s.items() if k != "conversation"},
                 "from": mask_name(s["from"]), "to": mask_name(s["to"])}
                for s in document["switches"]]  # fmt: skip
    shim = {k: v for k, v in document["shim"].items() if k != "path"}
    return {**{k: v for k, v in document.items() if k != "data_dir"}, "shim": shim,
            "accounts": accounts, "switches": switches}  # fmt: skip


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


def window_line(window: dict[str, Any], now: float) -> str:
    """One usage window: label, bar, percent used and when it resets."""
    if window["reset"]:
        tail = "[dim]reset[/]"
    else:
        when = f"resets {human_until(window['resets_at'], now)}" if window["resets_at"] else ""
        tail = f"{window['used_percent']:3.0f}%  {when}"
    return f"    {window['label']:<7} {_bar(window['used_percent'])}  {tail}"


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
    # One fact a line: a header that wraps mid-phrase at 80 columns reads as noise.
    lines = [
        f"[bold]cao status[/]  {summary['usable']}/{summary['accounts']} usable",
        f"  gateway     {gateway}",
        f"  codex shim  {shim_words}",
    ]
    if not document["accounts"]:
        lines.append("no accounts yet: add one with `cao add NAME`")
    for a in document["accounts"]:
        colour = "green" if a["status"] == Availability.USABLE else "red"
        if a["status"] == Availability.COOLING:
            colour = "yellow"
        elif a["status"] == Availability.PAUSED:
            colour = "cyan"
        head = [
            f"[bold]{'*' if a['default'] else ' '} {escape(a['name'])}[/]",
            escape(a["email"] or "-"),
            escape(a["plan"] or "-"),
            f"[{colour}]{escape(status_words(a, now))}[/]",
        ]
        if token := _token_words(a, now):
            head.append(f"[dim]{token}[/]")
        lines += ["", "  ".join(head)]
        lines += [window_line(w, now) for w in a["windows"]]
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
            conversation = s.get("conversation")
            moved = f"  [dim]{escape(short_conversation(conversation))}[/]" if conversation else ""
            lines.append(
                f"  {local_time(s['at'])}  {escape(s['from'] or '-')} → {escape(s['to'] or '-')}"
                f"  [dim]{escape(s['reason'])}[/]{moved}"
            )
    return lines
