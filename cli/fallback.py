"""`cao run`'s fallback loop: Codex on one account after another, the session carried over."""

from __future__ import annotations

import re
import sys
import time
from datetime import datetime
from pathlib import Path

from cao.config.errors import CaoError
from cao.config.homeconfig import config_problem
from cao.config.pool import (
    DEFAULT_STRATEGY,
    AccountPool,
    AccountView,
    Strategy,
    account_summary,
    by_strategy,
    earliest_reset,
)
from cao.config.quota import (
    QuotaKind,
    QuotaSignal,
    classify_output,
    reset_from_text,
    sane_reset,
)
from cao.config.sessions import (
    LimitWatch,
    SessionError,
    SessionFile,
    copy_session,
    lost_compaction,
    newest_session,
)

from . import relay
from .base import local_time, say, status_words, warn
from .codex import codex_env
from .daemons import not_stopped, stop_daemons
from .resume import continuation_argv, split_command, user_prompt


def end_codex(home: Path) -> None:
    """After Codex exited in `home`: stop the app-server daemon it left there (unless another
    Codex still runs from that home). A Ctrl-C more than Codex needed to quit must not cut
    this short (it takes 0.1-7 s)."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _, left = stop_daemons(home)
    finally:
        signal.signal(signal.SIGINT, previous)
    if left:
        warn(not_stopped(home, left))


def candidates(
    views: list[AccountView],
    first: str | None,
    now: float,
    strategy: Strategy = DEFAULT_STRATEGY,
) -> list[AccountView]:
    """Usable accounts in the strategy's order (`first` first, when given). One cooling down
    or with a usage window at 100 % is not started: it would only hit the limit again;
    nor one paused (`cao unpause` brings it back)."""
    views = by_strategy(views, now, strategy)
    if first is not None:
        views = sorted(views, key=lambda v: v.name != first)
    return [v for v in views if v.usable(now)]


class FallbackRun:
    """Codex on one account after another: on a usage limit the session continues on the next
    account (its copy made resumable there), or the command runs again (--restart)."""

    def __init__(
        self,
        pool: AccountPool,
        argv: list[str],
        patterns: list[re.Pattern[str]],
        cooldown: float,
        continue_session: bool,
        ask: bool,
        session: SessionFile | None,
        strategy: Strategy = DEFAULT_STRATEGY,
    ) -> None:
        self.pool = pool
        self.strategy = strategy
        self.codex, self.args = argv[0], argv[1:]
        self.patterns = patterns
        self.cooldown = cooldown
        self.continue_session = continue_session
        self.ask = ask
        self.session = session  # the session to continue, once there is one
        self.interactive = not split_command(self.args).is_exec and relay.is_terminal()

    def args_for(self, view: AccountView, resuming: bool) -> list[str]:
        """What codex runs with on `view`: the user's command, or its continuation."""
        session = self.session
        if session is None or not (resuming or self.continue_session):
            return self.args
        try:
            argv = continuation_argv(
                self.args, session.id, user_prompt(self.args) if resuming else None
            )
            if session.home != view.home:
                session, edit = copy_session(session, view.home)
                self.session = session
                if lost_compaction(edit):
                    say("cao: the session's compacted summary was made by another account and "
                        "stays behind")  # fmt: skip
        except (SessionError, ValueError) as e:
            if resuming:
                raise CaoError(f"cannot resume session {session.id}: {e}") from None
            say(f"cao: cannot continue the session ({e}); running codex again from the start")
            self.session = None
            return self.args
        say(f"cao: continuing session {session.id} on account {view.name}")
        return argv

    def limit_of(self, code: int, tail: str, watch: LimitWatch | None) -> QuotaSignal | None:
        now = time.time()
        if watch is not None and watch.message is not None:  # the TUI waits on a limit
            resets_at = reset_from_text(watch.message, datetime.fromtimestamp(now).astimezone())
            return QuotaSignal(QuotaKind.USAGE_LIMIT, sane_reset(resets_at, now, self.cooldown))
        return classify_output(tail, self.patterns, now, self.cooldown) if code else None

    def run(self, first: str | None, max_passes: int, retry_delay: float) -> int:
        previous: str | None = None
        resuming = self.session is not None
        skipped: str | None = None
        for number in range(1, max_passes + 1):
            views = self.pool.accounts()
            tried = candidates(views, first, time.time(), self.strategy)
            if not any(v.auth.logged_in and not v.state.needs_login for v in views):
                raise CaoError("no logged-in account: add one with `cao add NAME`")
            if not tried and number == 1:
                say("cao: every account is limited: codex not started")
            for view in tried:
                if (problem := config_problem(view.home)) is not None:
                    say(f"cao: skipping account {view.name}: {problem}")
                    continue
                if previous is not None:
                    session = self.session.id if self.session else None
                    self.pool.record_switch(previous, view.name, "quota", session)
                    if self.ask:
                        wait_for_enter(view.name)
                    say(f"cao: running codex on account {view.name}")
                args = self.args_for(view, resuming) if previous or resuming else self.args
                resuming = False
                started = time.time()
                watch = LimitWatch(view.home, started) if self.interactive else None
                code, tail = relay.run(
                    [self.codex, *args], codex_env(view.home), watch.poll if watch else None
                )
                end_codex(view.home)
                signal = self.limit_of(code, tail, watch)
                if signal is None:
                    return code  # success, an ordinary error, or Ctrl-C: Codex's own exit code
                self.pool.mark_limited(view.name, signal)
                resets = local_time(signal.resets_at)
                say(f"cao: account {view.name} hit its usage limit (resets {resets})")
                if self.continue_session:
                    found = (watch.session if watch else None) or newest_session(view.home, started)
                    if found is not None:
                        self.session = found
                    elif self.session is None:
                        say("cao: no session file found to continue; the next account runs "
                            "the command again")  # fmt: skip
                previous = view.name
            if number < max_passes:
                comeback = self.next_chance(time.time())
                if comeback is None or comeback > time.time() + retry_delay:
                    # Another pass now cannot succeed: say so, and when one could.
                    skipped = f"pass {number + 1} of {max_passes} skipped: " + (
                        "no account can run without a login"
                        if comeback is None
                        else f"no account is back within --retry-delay {retry_delay:g}s"
                    )
                    break
                say(
                    f"cao: every account is limited; pass {number + 1} of {max_passes} in "
                    f"{retry_delay:g}s"
                )
                time.sleep(retry_delay)
        now = time.time()
        if skipped is not None:
            say(f"cao: {skipped}")
        for view in self.pool.accounts():
            words = config_problem(view.home) or status_words(account_summary(view, now), now)
            say(f"cao: {view.name}: {words}")
        comeback = self.next_chance(now)
        if comeback is not None:
            say(f"cao: no account can run Codex now; come back at {local_time(comeback)}")
        return 1

    def next_chance(self, now: float) -> float | None:
        """When the first account could serve again: now if one is usable, the earliest end
        of a cooldown otherwise; None if no account can without a login."""
        views = [v for v in self.pool.accounts() if config_problem(v.home) is None]
        if any(v.usable(now) for v in views):
            return now
        return earliest_reset(views, now)


def wait_for_enter(name: str) -> None:
    """--ask: the user decides when (and whether) to go on."""
    sys.stderr.write(f"cao: press Enter to continue on account {name} (Ctrl-C to stop) ")
    sys.stderr.flush()
    if not sys.stdin.readline():
        raise CaoError("stopped: no answer on standard input")
