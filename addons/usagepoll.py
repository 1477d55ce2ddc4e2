"""Every account's usage read from the source on a schedule, so routing and `cao status` know
accounts the gateway has not used lately (the answer headers only tell about the one serving).

Polite: one request per account per minute at most, longer after an error (doubling up to an
hour), the token refreshed first when it expires soon (the one refresh path, fresh_auth). It
costs no model quota."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

import httpx
from mitmproxy import ctx
from mitmproxy.addonmanager import Loader
from mitmproxy.exceptions import OptionsError

from cao.config.pool import AccountView
from cao.config.state import Switch
from cao.config.tokens import RefreshFailed
from cao.config.usage import USAGE_PATH, apply_reading, parse_usage

from .gateway import Gateway, token_fingerprint

log = logging.getLogger("cao.gateway")

MIN_GAP = 60.0  # seconds between two polls of one account, whatever asks for it
MAX_BACKOFF = 3600.0
FIRST_POLL = 5.0  # after start: soon, but not on the first request's path
AFTER_SWITCH_DELAY = 2.0  # after a switch: once the re-sent request has its answer


@dataclass
class PollSchedule:
    """When each account may be polled next: pure, so it is tested without a clock."""

    last: dict[str, float] = field(default_factory=dict)
    backoff: dict[str, float] = field(default_factory=dict)  # name -> current delay
    not_before: dict[str, float] = field(default_factory=dict)

    def due(self, name: str, now: float) -> bool:
        return now - self.last.get(name, -MIN_GAP) >= MIN_GAP and now >= self.not_before.get(
            name, 0.0
        )

    def polled(self, name: str, now: float, ok: bool) -> None:
        self.last[name] = now
        if ok:
            self.backoff.pop(name, None)
            self.not_before.pop(name, None)
            return
        delay = min(self.backoff.get(name, MIN_GAP / 2) * 2, MAX_BACKOFF)
        self.backoff[name] = delay
        self.not_before[name] = now + delay


class UsagePoller:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.schedule = PollSchedule()
        self.task: asyncio.Task[None] | None = None
        self.wake = asyncio.Event()
        self._wake_later: asyncio.TimerHandle | None = None
        self._client: httpx.Client | None = None  # used from worker threads only

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "cao_usage_interval",
            int,
            300,
            "Seconds between usage polls of every account (0: off).",
        )

    def configure(self, updated: set[str]) -> None:
        if ctx.options.cao_usage_interval < 0:
            raise OptionsError("cao_usage_interval must be 0 (off) or a number of seconds")

    def running(self) -> None:
        if ctx.options.cao_usage_interval > 0 and not self.gateway.passthrough:
            self.gateway.switch_listeners.append(self.after_switch)
            self.task = asyncio.get_running_loop().create_task(self.run())

    async def done(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self._client is not None:
            self._client.close()

    def after_switch(self, switch: Switch) -> None:
        """A switch: read both accounts again (when the minute allows), a moment later, when
        the re-sent request is answered: never on its path."""
        if self._wake_later is None or self._wake_later.cancelled():
            self._wake_later = asyncio.get_running_loop().call_later(
                AFTER_SWITCH_DELAY, self._wake_now
            )

    def _wake_now(self) -> None:
        self._wake_later = None
        self.wake.set()

    def _fetch(self, url: str, headers: dict[str, str]) -> tuple[int, object]:
        """GET the usage document (in a worker thread): its status and JSON (None if none)."""
        if self._client is None:
            self._client = httpx.Client(
                verify=self.gateway.tls_verify(), timeout=httpx.Timeout(15.0), trust_env=False
            )
        answer = self._client.get(url, headers=headers)
        try:
            return answer.status_code, answer.json()
        except ValueError:
            return answer.status_code, None

    async def run(self) -> None:
        interval = float(ctx.options.cao_usage_interval)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), min(FIRST_POLL, interval))
        while True:
            self.wake.clear()
            await self.poll_all()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), interval)

    async def poll_all(self) -> None:
        now = time.time()
        for view in self.gateway.live.views():
            ready = view.auth.logged_in and not view.state.needs_login
            if ready and self.schedule.due(view.name, now):
                await self.poll(view)

    async def poll(self, view: AccountView) -> None:
        name = view.name
        try:
            auth = await self.gateway.fresh_auth(view)
        except RefreshFailed:  # the account is marked (needs login, or cooling briefly)
            self.schedule.polled(name, time.time(), ok=False)
            return
        except Exception as e:  # never let the poller die, never a traceback in the log
            log.warning("usage poll of %s: %s", name, type(e).__name__)
            self.schedule.polled(name, time.time(), ok=False)
            return
        token = auth.access_token or ""
        headers = {"authorization": f"Bearer {token}"}
        if auth.account_id:
            headers["chatgpt-account-id"] = auth.account_id
        url = ctx.options.cao_upstream.rstrip("/") + USAGE_PATH
        try:
            # In a thread, with its own client: the connection's TLS handshake and the JSON
            # never run on the event loop the streams share.
            status, document = await asyncio.to_thread(self._fetch, url, headers)
        except Exception as e:
            log.info("usage poll of %s failed (%s): retried later", name, type(e).__name__)
            self.schedule.polled(name, time.time(), ok=False)
            return
        now = time.time()
        if status in (401, 403):  # like any token failure
            await self.gateway.recover_unauthorized(name, token_fingerprint(token))
            self.schedule.polled(name, now, ok=False)
            return
        try:
            if status != 200:
                raise ValueError(f"HTTP {status}")
            reading = parse_usage(document, now)
        except ValueError as e:
            log.info("usage poll of %s: %s; retried later", name, str(e)[:60])
            self.schedule.polled(name, now, ok=False)
            return
        self.gateway.live.update_state(lambda state: apply_reading(state.account(name), reading))
        self.schedule.polled(name, now, ok=True)
