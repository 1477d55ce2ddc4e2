"""The `cao` command: one-line errors and meaningful exit codes, never a traceback."""

from __future__ import annotations

import sys

import typer

from cao.config.errors import CaoError

from . import accounts, gateway, run, status  # noqa: F401  (registers the commands)
from .base import app, setup_logging

EXIT_INTERRUPTED = 130


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    try:
        result = app(args=argv, prog_name="cao", standalone_mode=False)
    except CaoError as e:
        sys.stderr.write(f"cao: error: {e}\n")
        sys.exit(e.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        sys.stderr.write("\n")
        sys.exit(EXIT_INTERRUPTED)
    except typer.TyperException as e:  # typer's (vendored click) usage errors
        message = e.format_message() if hasattr(e, "format_message") else str(e)
        ctx = getattr(e, "ctx", None)
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
