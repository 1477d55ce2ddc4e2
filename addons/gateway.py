"""The gateway's options and the state its addons share (pool, conversations, upstream client)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import ssl
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from mitmproxy import ctx
from mitmproxy.addonmanager import Loader
from mitmproxy.exceptions import OptionsError

from cao.config import defaults
from cao.config.auth import AccountAuth
from cao.config.pool import DEFAULT_STRATEGY, AccountView, Strategy, account_summary
from cao.config.state import Switch
from cao.config.store import Store
from cao.config.tokens import RefreshFailed, refresh_tokens

from .activity import Activity
from .blobs import HistoryBook
from .debug import DebugHeaders
from .livepool import LivePool
from .routing import Choice, ConversationMap, choose_account
from .usage import UsageBook

log = logging.getLogger("cao.gateway")

RETRY_MODES = ("redirect", "inline")
TRANSIENT_REFRESH_COOLDOWN = 60.0  # the token endpoint failed for a moment: try others meanwhile
# A 401 right after a fresh token: the upstream refuses good tokens (an outage); only the token
# endpoint's own verdict means "needs login". The account cools this long, then is tried again.
REPEATED_401_WINDOW = 60.0
UNAUTHORIZED_COOLDOWN = 60.0


def token_fingerprint(token: str | None) -> str:
    """Tells two tokens apart without holding either (safe in flow metadata)."""
    return hashlib.sha256((token or "").encode()).hexdigest()[:16]


# The endpoints Codex uses that get a pool account's token; anything else under the base URL
# keeps Codex's own auth.
MODEL_ENDPOINTS = frozenset(
    defaults.CODEX_API_PATH + suffix for suffix in ("/responses", "/responses/compact", "/models")
)


def is_model_path(path: str) -> bool:
    """Only model traffic is re-routed; anything else keeps Codex's own auth."""
    return path.split("?", 1)[0] in MODEL_ENDPOINTS


class Gateway:
    """Declares the cao_* options and owns what the other addons share."""

    # Set by configure(). Not a property: mitmproxy getattr()s every attribute of an addon.
    live: LivePool
    usage: UsageBook

    def __init__(self) -> None:
        self._data_dir: str | None = None
        self.conversations = ConversationMap()
        # Told of each account switch (the usage poller reads both accounts again; --notify).
        self.switch_listeners: list[Callable[[Switch], None]] = []
        self.history = HistoryBook(self.conversations)
        self.last_account: str | None = None
        self.activity = Activity()
        self._client: httpx.AsyncClient | None = None
        self.started = time.time()
        self.debug = DebugHeaders()
        self._refresh_client: httpx.Client | None = None
        self._refresh_locks: dict[str, asyncio.Lock] = {}
        self._recovery_locks: dict[str, asyncio.Lock] = {}
        self._forced_refresh: dict[str, float] = {}
        self._warming: asyncio.Future[None] | None = None

    def load(self, loader: Loader) -> None:
        loader.add_option("cao_data_dir", str, "", "cao data dir (accounts, registry, state).")
        loader.add_option("cao_upstream", str, defaults.UPSTREAM_URL, "Upstream origin (shown).")
        loader.add_option(
            "cao_auth_url", str, defaults.AUTH_URL, "OAuth token endpoint origin for refreshes."
        )
        loader.add_option(
            "cao_passthrough_auth", bool, False, "Forward Codex's own auth; no switching."
        )
        loader.add_option(
            "cao_retry_mode",
            str,
            "redirect",
            "On a usage limit: redirect (307) or inline.",
            choices=RETRY_MODES,
        )
        loader.add_option(
            "cao_cooldown_seconds",
            int,
            defaults.COOLDOWN_SECONDS,
            "Cooldown when a quota answer gives no reset time.",
        )
        loader.add_option(
            "cao_strategy",
            str,
            DEFAULT_STRATEGY.value,
            "Which usable account new conversations go to.",
            choices=[s.value for s in Strategy],
        )
        loader.add_option(
            "cao_switch_at",
            int,
            defaults.SWITCH_AT_PERCENT,
            "Move new conversations off an account whose usage reaches this percent.",
        )
        loader.add_option(
            "cao_switch_live",
            bool,
            False,
            "Live conversations also leave an account at cao_switch_at (losing their prompt "
            "cache); by default they stay until it refuses.",
        )

    def configure(self, updated: set[str]) -> None:
        if not ctx.options.cao_data_dir:
            raise OptionsError("cao_data_dir is required (use `cao gateway start`)")
        if ctx.options.cao_data_dir != self._data_dir:
            self._data_dir = ctx.options.cao_data_dir
            self.live = LivePool(Store(Path(self._data_dir)))
            self.usage = UsageBook(self.live)
        for name in ("cao_upstream", "cao_auth_url"):
            url = urlsplit(getattr(ctx.options, name))
            if url.scheme not in ("http", "https") or not url.hostname:
                raise OptionsError(f"{name} must be an http(s) URL")
        if ctx.options.cao_cooldown_seconds <= 0:
            raise OptionsError("cao_cooldown_seconds must be positive")
        if not 0 < ctx.options.cao_switch_at <= 100:
            raise OptionsError("cao_switch_at must be a percent in (0, 100]")
        if updated & {"ssl_verify_upstream_trusted_ca", "ssl_insecure"}:
            self._client = None
            self._refresh_client = None

    def running(self) -> None:
        # The clients for the gateway's own requests are made now, in a thread: their TLS
        # contexts and httpx's lazy imports cost ~100 ms of CPU, which on the event loop would
        # stall every stream (the first inline retry, the first usage poll).
        self._warming = asyncio.get_running_loop().run_in_executor(None, self._warm_up)

    def _warm_up(self) -> None:
        try:
            import importlib

            self.client()
            self.refresh_client()
            # What httpx imports on an async client's first request (its anyio backend).
            for module in ("anyio._backends._asyncio", "anyio._core._synchronization"):
                with contextlib.suppress(ImportError):
                    importlib.import_module(module)
        except Exception as e:  # made on first use instead
            log.debug("warm-up: %s", e)

    async def done(self) -> None:
        if self._data_dir is not None:
            await asyncio.to_thread(self.live.flush)
        if self._client is not None:
            await self._client.aclose()
        if self._refresh_client is not None:
            self._refresh_client.close()

    # -- shared helpers --------------------------------------------------------------------------

    @property
    def passthrough(self) -> bool:
        return bool(ctx.options.cao_passthrough_auth)

    @property
    def cooldown(self) -> float:
        return float(ctx.options.cao_cooldown_seconds)

    def choose(self, conversation: str | None, continuation: bool) -> Choice:
        record = self.conversations.peek(conversation) if conversation else None
        current = record.account if record is not None else None
        mid_turn = continuation
        if conversation is None:
            current = self.last_account
        elif record is not None and record.compacted_by is not None:
            # Its compacted summary is readable only by the account that made it: stay there
            # past the switch threshold (even with cao_switch_live), while it is usable.
            continuation = continuation or record.compacted_by == current
        return choose_account(
            self.live.views(),
            time.time(),
            current,
            continuation,
            ctx.options.cao_switch_at,
            Strategy(ctx.options.cao_strategy),
            ctx.options.cao_switch_live,
            mid_turn=mid_turn,
        )

    def assign(self, conversation: str | None, choice: Choice) -> None:
        """Remember who serves the conversation; log and record a switch."""
        assert choice.account is not None
        name = choice.account.name
        if conversation:
            self.conversations.set(conversation, name)
        self.activity.record(name, conversation, time.time())
        if choice.moved_from is not None and choice.reason is not None:
            switch = self.live.record_switch(choice.moved_from, name, choice.reason, conversation)
            for listener in self.switch_listeners:
                listener(switch)
        self.last_account = name

    async def fresh_auth(
        self, view: AccountView, force: bool = False, seen: str | None = None
    ) -> AccountAuth:
        """The account's auth with a token good for a while: refreshed if it expires within the
        margin (or `force`), once per account across processes. Raises RefreshFailed after
        marking the account (needs login, or cooling briefly). `view` is the one the routing
        just chose from: no second look at the pool on the request's path."""
        name = view.name
        if not force and not view.auth.expires_within(defaults.REFRESH_MARGIN_SECONDS, time.time()):
            return view.auth
        seen = seen or view.auth.access_token
        lock = self._refresh_locks.setdefault(name, asyncio.Lock())
        async with lock:
            auth_url = ctx.options.cao_auth_url
            try:
                # The client is made in the thread too: its TLS set-up is ~20 ms of CPU.
                result = await asyncio.to_thread(
                    lambda: refresh_tokens(view.home, auth_url, self.refresh_client(), seen, force)
                )
            except Exception as error:
                # Whatever went wrong, this account is not used for this request: the next
                # one is tried (fail closed, never Codex's own credentials).
                failure = (
                    error
                    if isinstance(error, RefreshFailed)
                    else RefreshFailed(f"unexpected {type(error).__name__}", False)
                )
                if failure.permanent:
                    self.live.mark_needs_login(name, failure.reason)
                else:
                    self.live.mark_cooling(
                        name,
                        time.time() + TRANSIENT_REFRESH_COOLDOWN,
                        f"refresh failed: {failure.reason}",
                    )
                raise failure from None
        if result.refreshed:
            log.info("account %s: token refreshed", name)
        return result.auth

    async def recover_unauthorized(self, name: str, used_token: str | None) -> None:
        """After an upstream 401: a request sent with a token older than the account's current
        one is simply re-sent (another request's refresh rotated it meanwhile); else refresh once
        (unless another process already did): the token endpoint says whether the login is
        gone. A 401 for the token a refresh just gave cools the account (an outage does that
        to every account; it never means "needs login" by itself). One 401 at a time per
        account, so a rotation is seen by the rest."""
        lock = self._recovery_locks.setdefault(name, asyncio.Lock())
        async with lock:
            view = self.live.view(name)
            if view is None:
                return
            current = view.auth.access_token or ""
            if used_token is not None and token_fingerprint(current) != used_token:
                return  # rotated since it was sent: the re-send uses the new token
            now = time.time()
            if now - self._forced_refresh.get(name, 0.0) < REPEATED_401_WINDOW:
                self.live.mark_cooling(
                    name, now + UNAUTHORIZED_COOLDOWN, "upstream 401 with a fresh token"
                )
                return
            self._forced_refresh[name] = now
            with contextlib.suppress(RefreshFailed):  # marked; the re-send goes elsewhere
                await self.fresh_auth(view, force=True, seen=current)

    def refresh_client(self) -> httpx.Client:
        if self._refresh_client is None:
            self._refresh_client = httpx.Client(
                verify=self.tls_verify(), timeout=httpx.Timeout(15.0), trust_env=False
            )
        return self._refresh_client

    def tls_verify(self) -> ssl.SSLContext | bool:
        """How the gateway's own requests verify the upstream: as mitmproxy does."""
        cafile = ctx.options.ssl_verify_upstream_trusted_ca
        return ssl.create_default_context(cafile=cafile) if cafile else True

    def client(self) -> httpx.AsyncClient:
        """For requests the gateway makes itself; trusts what mitmproxy trusts upstream."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                verify=self.tls_verify(),
                timeout=httpx.Timeout(connect=10.0, read=600.0, write=60.0, pool=10.0),
                follow_redirects=False,
                trust_env=False,
            )
        return self._client

    def status_document(self) -> dict[str, Any]:
        now = time.time()
        serving = self.activity.serving(now)
        return {
            "gateway": {
                "version": version("codex-account-orchestrator"),
                "upstream": ctx.options.cao_upstream,
                "retry_mode": ctx.options.cao_retry_mode,
                "passthrough_auth": self.passthrough,
                "switch_at": ctx.options.cao_switch_at,
                "switch_live": ctx.options.cao_switch_live,
                "strategy": ctx.options.cao_strategy,
                "uptime_seconds": round(now - self.started),
                "data_dir": self._data_dir,  # so cao tells "another data dir's" from down
            },
            "accounts": [
                {
                    **account_summary(v, now),
                    "conversations": serving.get(v.name, []),
                    "requests_per_minute": self.activity.requests_per_minute(v.name, now),
                }
                for v in self.live.views()
            ],
            "switches": [s.summary() for s in reversed(self.live.switches())],  # newest first
            "history": self.history.status(),
        }
