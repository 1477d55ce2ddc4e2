"""The gateway's log as a size-bounded file (`cao gateway start --daemon`): a background
gateway has no terminal, and one that runs for weeks must not fill the disk."""

from __future__ import annotations

import logging
import logging.handlers
import os
from pathlib import Path

from mitmproxy import ctx
from mitmproxy.addonmanager import Loader
from mitmproxy.exceptions import OptionsError

LOG_MAX_BYTES = 5 * 1024 * 1024
LOG_BACKUPS = 2  # gateway.log, gateway.log.1, gateway.log.2: 15 MB at most


class PrivateRotatingFile(logging.handlers.RotatingFileHandler):
    """Rotates by size; every file it opens is 0600 (the log names accounts and paths)."""

    def _open(self):  # type: ignore[no-untyped-def]
        stream = super()._open()
        os.chmod(self.baseFilename, 0o600)
        return stream


class LogFile:
    def __init__(self) -> None:
        self.handler: PrivateRotatingFile | None = None

    def load(self, loader: Loader) -> None:
        loader.add_option("cao_log_file", str, "", "Also log to this file, size-bounded.")
        loader.add_option(
            "cao_log_max_bytes", int, LOG_MAX_BYTES, "Rotate the log file at this size."
        )

    def configure(self, updated: set[str]) -> None:
        if not updated & {"cao_log_file", "cao_log_max_bytes"}:
            return
        if ctx.options.cao_log_max_bytes < 1024:
            raise OptionsError("cao_log_max_bytes must be at least 1024")
        self.done()
        path = ctx.options.cao_log_file
        if not path:
            return
        if not Path(path).parent.is_dir():
            raise OptionsError(f"cao_log_file: no directory {Path(path).parent}")
        handler = PrivateRotatingFile(
            path, maxBytes=ctx.options.cao_log_max_bytes, backupCount=LOG_BACKUPS
        )
        handler.setLevel(logging.INFO)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logging.getLogger().addHandler(handler)
        self.handler = handler

    def done(self) -> None:
        if self.handler is not None:
            logging.getLogger().removeHandler(self.handler)
            self.handler.close()
            self.handler = None
