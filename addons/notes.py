"""One log line per kind of refusal a minute, with how many came meanwhile: a flood of bad
connections never floods the log."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("cao.gateway")

EVERY = 60.0
_seen: dict[str, tuple[int, float]] = {}


def note(reason: str, every: float = EVERY) -> None:
    count, last = _seen.get(reason, (0, -every))
    now = time.monotonic()
    if now - last < every:
        _seen[reason] = (count + 1, last)
        return
    more = f" ({count} more since the last note)" if count else ""
    log.warning("refused: %s%s", reason, more)
    _seen[reason] = (0, now)
