"""`cao gateway start --notify`: a desktop notification when the pool switches account because
of a limit, and when every account is exhausted (with the earliest reset).

At most one a minute of each kind. Never on the request path: the hooks only decide (a dict
look-up) and queue; one background thread runs notify-send (Linux) or osascript (macOS)."""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from mitmproxy import ctx, http
from mitmproxy.addonmanager import Loader

from cao.config.quota import QuotaKind
from cao.config.state import Switch

from .decision import decision_of
from .gateway import Gateway

log = logging.getLogger("cao.gateway")

MIN_GAP = 60.0  # seconds between two notifications of one kind
COMMAND_TIMEOUT = 10.0
# The switch reasons that are a limit (routing's leave reasons: a cooldown's reason, or
# "threshold" for --switch-at), and how a notification says them.
LIMIT_REASONS = {
    QuotaKind.USAGE_LIMIT.value: "usage limit",
    QuotaKind.RATE_LIMIT.value: "rate limit",
    "threshold": "usage at the --switch-at threshold",
}
# osascript takes the texts as arguments: nothing in them is ever read as AppleScript.
APPLESCRIPT = ("on run argv", "display notification (item 2 of argv) with title (item 1 of argv)",
               "end run")  # fmt: skip


def notifier_command(platform: str = sys.platform) -> list[str] | None:
    """The argv that shows a notification (title and text are appended), None if none."""
    if platform == "darwin":
        osascript = shutil.which("osascript")
        if osascript:
            return [osascript, *(arg for line in APPLESCRIPT for arg in ("-e", line))]
        return None
    notify_send = shutil.which("notify-send")
    return [notify_send, "--app-name=cao"] if notify_send else None


class RateLimit:
    """At most one event of each kind per MIN_GAP seconds (pure: tested without a clock)."""

    def __init__(self, gap: float = MIN_GAP) -> None:
        self.gap = gap
        self.last: dict[str, float] = {}

    def allow(self, kind: str, now: float) -> bool:
        if now - self.last.get(kind, -self.gap) < self.gap:
            return False
        self.last[kind] = now
        return True


def switch_text(switch: Switch) -> tuple[str, str]:
    why = LIMIT_REASONS.get(switch.reason, switch.reason)
    return "cao: account switched", f"{switch.from_account} → {switch.to_account} ({why})"


def exhausted_text(resets_at: float | None, now: float) -> tuple[str, str]:
    if resets_at is None:
        return "cao: every account is limited", "Codex waits; no account has a reset time"
    minutes = max(round((resets_at - now) / 60), 1)
    back = time.strftime("%H:%M", time.localtime(resets_at))
    return "cao: every account is limited", f"the first is back at {back} (in {minutes} min)"


class Notify:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.command: list[str] | None = None
        self.limit = RateLimit()
        self.runner: ThreadPoolExecutor | None = None

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "cao_notify",
            bool,
            False,
            "Desktop notification on a switch because of a limit, and when every account is.",
        )

    def running(self) -> None:
        if not ctx.options.cao_notify:
            return
        self.command = notifier_command()
        if self.command is None:
            tool = "osascript" if sys.platform == "darwin" else "notify-send"
            log.warning("--notify: %s not found: no desktop notifications", tool)
            return
        self.runner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cao-notify")
        self.gateway.switch_listeners.append(self.on_switch)

    def done(self) -> None:
        if self.runner is not None:
            self.runner.shutdown(wait=False, cancel_futures=True)

    def on_switch(self, switch: Switch) -> None:
        if switch.reason in LIMIT_REASONS and self.limit.allow("switch", time.time()):
            self.send(*switch_text(switch))

    def response(self, flow: http.HTTPFlow) -> None:
        """A 429 that reaches Codex while no account is usable: the pool is exhausted."""
        if self.runner is None or flow.response is None or flow.response.status_code != 429:
            return
        decision = decision_of(flow)
        if decision is None or decision.passthrough:
            return
        now = time.time()
        if any(v.usable(now) for v in self.gateway.live.views()):
            return
        if self.limit.allow("exhausted", now):
            self.send(*exhausted_text(self.gateway.live.earliest_reset(now), now))

    def send(self, title: str, text: str) -> None:
        if self.runner is None or self.command is None:
            return
        with contextlib.suppress(RuntimeError):  # shutting down
            self.runner.submit(run_notifier, [*self.command, title, text])


def run_notifier(argv: list[str]) -> None:
    try:
        subprocess.run(  # our own argv: a tool found on PATH and our texts
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as e:
        log.info("--notify: %s failed (%s)", argv[0], type(e).__name__)
