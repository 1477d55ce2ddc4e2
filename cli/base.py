"""The typer apps, the global options and the output helpers every command shares."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Annotated, Any

import typer

from cao.config.errors import CaoError
from cao.config.names import validate_name
from cao.config.state import window_label
from cao.config.store import Store, resolve_data_dir

app = typer.Typer(
    name="cao",
    help="Keep Codex running across ChatGPT accounts: one CODEX_HOME per account, a re-run "
    "fallback (`cao run`) and a local gateway that swaps accounts under a live session.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # click's plain help: option names whole at 80 columns, and `[run]` or `[default: ...]` in
    # a help text shown as written (rich would read them as markup).
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
gateway_app = typer.Typer(
    help="The local gateway that swaps accounts under a live Codex session.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(gateway_app, name="gateway")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"cao {version('codex-account-orchestrator')}")
        raise typer.Exit()


@app.callback()
def global_options(
    ctx: typer.Context,
    data_dir: Annotated[
        str | None,  # not a Path: typer would read "" as "."
        typer.Option(
            "--data-dir",
            metavar="DIR",
            help="Where accounts and state live (env: CAO_DATA_DIR; "
            "default: ~/.codex-account-orchestrator).",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    ctx.obj = Store(resolve_data_dir(data_dir))


def cao_words(store: Store | None, words: str) -> str:
    """A cao command line for a hint: with `--data-dir` when the data dir is not the default
    one, so the line works pasted into any shell."""
    from cao.config.hints import cao_line

    return cao_line(store.data_dir if store is not None else None, words)


def store_of(ctx: typer.Context) -> Store:
    root = ctx.find_root()
    assert isinstance(root.obj, Store)
    return root.obj


AccountName = Annotated[
    str,
    typer.Argument(
        help="Account name: letters, digits and _ - . @ + (at most 64).", show_default=False
    ),
]

JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]


def account_name(name: str) -> str:
    return validate_name(name)


# -- help that reads as words ------------------------------------------------------------------

# An option's placeholder by what it names (else by its type): `--port PORT`, not `<int range>`.
PLACEHOLDERS = {
    "host": "HOST", "port": "PORT", "web_port": "PORT", "url": "URL", "upstream": "URL",
    "auth_url": "URL", "gateway_url": "URL", "upstream_ca": "FILE", "codex": "PATH",
    "bin_dir": "DIR", "data_dir": "DIR", "account": "NAME", "switch_at": "PERCENT",
    "resume": "ID", "limit": "N", "max_passes": "N",
}  # fmt: skip
TYPE_WORDS = {"int": "whole number", "int range": "whole number", "float": "number",
              "float range": "number", "str": "text"}  # fmt: skip


def readable(command: Any) -> None:
    """Walk the command tree typer built: every option gets a placeholder that reads as a word
    (`SECONDS`, `redirect|inline`), every command a summary that is never cut with "…" (its
    first sentence, wrapped), and a bad value is "not a valid whole number", not "int range"."""
    for param in getattr(command, "params", []):
        kind = param.type
        if kind.name in TYPE_WORDS:
            kind.name = TYPE_WORDS[kind.name]
        if param.metavar is not None:
            continue
        if param.param_type_name != "option":
            param.metavar = param.name.upper()  # `cao add NAME`, as the README writes it
            continue
        choices = getattr(kind, "choices", None)
        if choices:
            param.metavar = "|".join(str(c) for c in choices)
        elif param.name in PLACEHOLDERS:
            param.metavar = PLACEHOLDERS[param.name]
        elif "seconds" in param.name or "delay" in param.name or "interval" in param.name:
            param.metavar = "SECONDS"
        elif kind.name in ("whole number", "number"):
            param.metavar = "N"
        else:
            param.metavar = param.name.upper()
    for sub in getattr(command, "commands", {}).values():
        if sub.short_help is None and sub.help:
            sub.short_help = first_sentence(sub.help)
        readable(sub)


def first_sentence(text: str) -> str:
    words = " ".join(text.split("\n\n")[0].split())
    sentence, dot, _ = words.partition(". ")
    return sentence + ("." if dot else "")


# -- output -------------------------------------------------------------------------------------


def say(message: str) -> None:
    """A line for humans on stderr, so stdout stays clean for --json and pipes."""
    sys.stderr.write(f"{message}\n")


def warn(message: str) -> None:
    sys.stderr.write(f"cao: warning: {message}\n")


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2) + "\n")


class _WarningHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        prefix = "warning: " if record.levelno >= logging.WARNING else ""
        sys.stderr.write(f"cao: {prefix}{record.getMessage()}\n")


def setup_logging() -> None:
    log = logging.getLogger("cao")
    if not log.handlers:
        log.addHandler(_WarningHandler())
        log.setLevel(logging.WARNING)
        log.propagate = False


def human_duration(seconds: float) -> str:
    seconds = int(abs(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m"
    return f"{seconds}s"


def human_until(when: float, now: float | None = None) -> str:
    delta = when - (time.time() if now is None else now)
    return f"in {human_duration(delta)}" if delta >= 0 else f"{human_duration(delta)} ago"


def status_words(account: dict[str, Any], now: float) -> str:
    """An account's state for humans, from its `account_summary` (cao list, cao status, cao
    gateway status, whose document may come from another cao version: hence .get)."""
    status, until, fix = account.get("status"), account.get("cooling_until"), account.get("fix")
    if status == "paused":
        paused_until = account.get("paused_until")
        return f"paused until {local_time(paused_until)}" if paused_until else "paused"
    if status == "cooling" and until:
        reason = str(account.get("cooling_reason"))
        # A cooldown cao set, or a usage window the upstream reports spent until its reset.
        words = "limited" if reason.endswith(" used up") else "cooling"
        return f"{words} until {local_time(until)} ({reason})"
    if fix:
        problem = f" ({account['problem']})" if account.get("problem") else ""
        return f"{status}{problem}: run `{fix}`"
    expires = account.get("token_expires_at")
    if expires is not None and expires <= now:
        return "usable (token expired, refreshed on use)"
    return str(status)


def _short_time(when: float, now: float) -> str:
    return time.strftime("%H:%M" if when - now < 86400 else "%b %d %H:%M", time.localtime(when))


def short_status(account: dict[str, Any], now: float) -> str:
    """`status_words` for a column: the time alone (the reason is in the usage or
    `cao status`), and the fix command."""
    status, until, fix = account.get("status"), account.get("cooling_until"), account.get("fix")
    if status == "paused":
        paused_until = account.get("paused_until")
        return f"paused until {_short_time(paused_until, now)}" if paused_until else "paused"
    if status == "cooling" and until:
        words = "limited" if str(account.get("cooling_reason")).endswith(" used up") else "cooling"
        return f"{words} until {_short_time(until, now)}"
    if fix:
        problem = f" ({account['problem']})" if account.get("problem") else ""
        return f"{status}{problem}: run `{fix}`"
    return str(status)


def text_table(header: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart; no trailing blanks."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in [header, *rows]]  # fmt: skip
    return "\n".join(lines) + "\n"


def local_time(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(when))


def fail(message: str, code: int = 1) -> typer.Exit:
    """For `raise fail(...)`: one line on stderr, then exit with `code`."""
    sys.stderr.write(f"cao: error: {message}\n")
    return typer.Exit(code)


__all__ = ["CaoError", "window_label"]
