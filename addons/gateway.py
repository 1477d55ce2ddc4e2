"""The gateway's options and the state its addons share (pool, conversations, upstream client)."""

from __future__ import annotations

import logging
import ssl
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from mitmproxy import ctx, http
from mitmproxy.addonmanager import Loader
from mitmproxy.exceptions import OptionsError

from cao.config import defaults
from cao.config.pool import account_summary
from cao.config.store import Store

from .livepool import LivePool
from .routing import Choice, ConversationMap, choose_account

log = logging.getLogger("cao.gateway")

RETRY_MODES = ("redirect", "inline")
META = "cao"  # flow.metadata key: what the gateway decided for a flow (never a secret)


def flow_meta(flow: http.HTTPFlow) -> dict[str, Any] | None:
    meta = flow.metadata.get(META)
    return meta if isinstance(meta, dict) else None


def is_model_path(path: str) -> bool:
    """Only model traffic is re-routed; anything else keeps Codex's own auth."""
    return path.startswith(defaults.CODEX_API_PATH + "/") or path == defaults.CODEX_API_PATH


class Gateway:
    """Declares the cao_* options and owns what the other addons share."""

    # Set by configure(). Not a property: mitmproxy getattr()s every attribute of an addon.
    live: LivePool

    def __init__(self) -> None:
        self._data_dir: str | None = None
        self.conversations = ConversationMap()
        self.last_account: str | None = None
        self._client: httpx.AsyncClient | None = None
        self.started = time.time()
        # Codex's own Authorization per flow id, while the flow is in flight (never on the flow).
        self.client_tokens: dict[str, str] = {}

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
            "cao_switch_at",
            int,
            defaults.SWITCH_AT_PERCENT,
            "Move new conversations off an account whose usage reaches this percent.",
        )

    def configure(self, updated: set[str]) -> None:
        if not ctx.options.cao_data_dir:
            raise OptionsError("cao_data_dir is required (use `cao gateway start`)")
        if ctx.options.cao_data_dir != self._data_dir:
            self._data_dir = ctx.options.cao_data_dir
            self.live = LivePool(Store(Path(self._data_dir)))
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

    async def done(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    # -- shared helpers --------------------------------------------------------------------------

    @property
    def passthrough(self) -> bool:
        return bool(ctx.options.cao_passthrough_auth)

    @property
    def cooldown(self) -> float:
        return float(ctx.options.cao_cooldown_seconds)

    def choose(self, conversation: str | None, continuation: bool) -> Choice:
        current = self.conversations.get(conversation) if conversation else self.last_account
        return choose_account(
            self.live.views(), time.time(), current, continuation, ctx.options.cao_switch_at
        )

    def assign(self, conversation: str | None, choice: Choice) -> None:
        """Remember who serves the conversation; log and record a switch."""
        assert choice.account is not None
        name = choice.account.name
        if conversation:
            self.conversations.set(conversation, name)
        if choice.moved_from is not None and choice.reason is not None:
            self.live.record_switch(choice.moved_from, name, choice.reason)
        self.last_account = name

    async def access_token(self, name: str) -> str:
        view = self.live.view(name)
        return (view.auth.access_token if view else None) or ""

    def client(self) -> httpx.AsyncClient:
        """For requests the gateway makes itself; trusts what mitmproxy trusts upstream."""
        if self._client is None:
            cafile = ctx.options.ssl_verify_upstream_trusted_ca
            verify: ssl.SSLContext | bool = (
                ssl.create_default_context(cafile=cafile) if cafile else True
            )
            self._client = httpx.AsyncClient(
                verify=verify,
                timeout=httpx.Timeout(connect=10.0, read=600.0, write=60.0, pool=10.0),
                follow_redirects=False,
                trust_env=False,
            )
        return self._client

    def status_document(self) -> dict[str, Any]:
        now = time.time()
        return {
            "gateway": {
                "version": version("codex-account-orchestrator"),
                "upstream": ctx.options.cao_upstream,
                "retry_mode": ctx.options.cao_retry_mode,
                "passthrough_auth": self.passthrough,
                "switch_at": ctx.options.cao_switch_at,
                "uptime_seconds": round(now - self.started),
            },
            "accounts": [account_summary(v, now) for v in self.live.views()],
        }
