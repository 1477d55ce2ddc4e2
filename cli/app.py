"""The `cao` command: one-line errors and meaningful exit codes, never a traceback."""

from __future__ import annotations

import importlib
import sys

import typer

from cao.config.errors import CaoError

from .base import app, readable, setup_logging

EXIT_INTERRUPTED = 130
# The module that registers each command. A command imports only its own module: typer builds
# every registered command on each call, and all of them cost ~70 ms of a 300 ms budget.
COMMAND_MODULES = {
    "add": "accounts", "import": "accounts", "use": "accounts", "current": "accounts",
    "switch": "accounts", "list": "accounts", "remove": "accounts",
    "gateway": "gateway", "run": "run", "status": "status", "sessions": "sessions",
    "doctor": "status", "report": "status",
    "pause": "steer", "unpause": "steer", "cooldown": "steer",
}  # fmt: skip
ALL_MODULES = ("accounts", "gateway", "run", "status", "sessions", "steer")
GLOBAL_OPTIONS_WITH_VALUE = ("--data-dir",)


def command_word(argv: list[str]) -> str | None:
    """The command `argv` names, past the global options; None for --help/--version."""
    words = iter(argv)
    for word in words:
        if word in GLOBAL_OPTIONS_WITH_VALUE:
            next(words, None)
        elif word in ("-h", "--help", "--version"):
            return None
        elif not word.startswith("-"):
            return word
    return None


# Options whose value may be left out, as the original tool allowed: `--report` alone is md.
BARE_OPTION_VALUES = {("status", "--report"): "md"}


def with_bare_values(argv: list[str]) -> list[str]:
    """`argv` with the implied value after an option given bare (last, or before another
    option)."""
    command = command_word(argv)
    out: list[str] = []
    for i, word in enumerate(argv):
        out.append(word)
        if word == "--":
            return out + argv[i + 1 :]
        implied = BARE_OPTION_VALUES.get((command or "", word))
        following = argv[i + 1] if i + 1 < len(argv) else None
        if implied is not None and (following is None or following.startswith("-")):
            out.append(implied)
    return out


def load_commands(argv: list[str]) -> None:
    module = COMMAND_MODULES.get(command_word(argv) or "")
    for name in (module,) if module else ALL_MODULES:  # help and typos list every command
        importlib.import_module(f"{__package__}.{name}")


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    argv = with_bare_values(sys.argv[1:] if argv is None else argv)
    load_commands(argv)
    command = typer.main.get_command(app)
    readable(command)
    try:
        result = command.main(args=argv, prog_name="cao", standalone_mode=False)
    except CaoError as e:
        sys.stderr.write(f"cao: error: {e}\n")
        sys.exit(e.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        sys.stderr.write("\n")
        sys.exit(EXIT_INTERRUPTED)
    except typer.TyperException as e:  # typer's (vendored click) usage errors
        message = e.format_message() if hasattr(e, "format_message") else str(e)
        ctx = getattr(e, "ctx", None)
        if type(e).__name__ == "NoArgsIsHelpError" and ctx is not None:
            sys.stdout.write(ctx.get_help() + "\n")  # bare `cao` / `cao gateway`: their help
            sys.exit(0)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        sys.stderr.write(f"cao: error: {message}{hint}\n")
        sys.exit(getattr(e, "exit_code", 2))
    except OSError as e:
        where = f": {e.filename}" if e.filename else ""
        sys.stderr.write(f"cao: error: {e.strerror or e}{where}\n")
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    main()
