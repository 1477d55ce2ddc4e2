"""Codex's own usage view is the pool's: `GET …/wham/usage` (and `…/api/codex/usage`) under
`chatgpt_base_url` is answered by the gateway.

The TUI reads its status line, `/status` and the "approaching rate limits" prompt from that
endpoint with the user's own login, which is not the account serving the turns. The gateway
answers it for the account that would serve this user's next request (the one routing
decision, asked without assigning), in the backend's shape, read from the source first when
what is recorded is older than a minute. Everything else under `chatgpt_base_url` goes upstream
with Codex's own credentials (the router's passthrough)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from mitmproxy import http

from cao.config.pool import AccountView
from cao.config.usage import render_usage

from .access import fail_closed
from .decision import decision_for
from .gateway import Gateway
from .router import json_response
from .usagepoll import UsagePoller

log = logging.getLogger("cao.gateway")

# Codex builds these from chatgpt_base_url: `{base}/wham/usage` when the base holds
# `/backend-api`, else `{base}/api/codex/usage` (codex-rs/backend-client, PathStyle).
USAGE_SUFFIXES = ("/wham/usage", "/api/codex/usage")
FRESH_FOR = 60.0  # older than this, the account is read from the source before answering
READ_TIMEOUT = 5.0  # Codex waits for this answer; a slow source must not hold it long


def is_usage_view(method: str, path: str) -> bool:
    return method == "GET" and path.split("?", 1)[0].endswith(USAGE_SUFFIXES)


def last_reading(view: AccountView) -> float:
    """When anything about this account's usage was last learned (source or answer headers)."""
    times = [w.updated_at for w in view.state.usage.values()]
    if view.state.usage_read_at is not None:
        times.append(view.state.usage_read_at)
    return max(times, default=0.0)


class UsageView:
    """Answers Codex's usage requests from the pool (not in passthrough mode)."""

    def __init__(self, gateway: Gateway, poller: UsagePoller) -> None:
        self.gateway = gateway
        self.poller = poller

    @fail_closed
    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        request = flow.request
        if flow.response is not None or self.gateway.passthrough:
            return
        if not is_usage_view(request.method, request.path):
            return
        view = self.serving()
        if view is None:
            return  # no account at all: Codex's own answer is the only one there is
        if time.time() - last_reading(view) > FRESH_FOR and self.poller.schedule.due(
            view.name, time.time()
        ):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.poller.poll(view), READ_TIMEOUT)
            view = self.gateway.live.view(view.name) or view
        decision_for(flow, time.time())
        now = time.time()
        flow.response = json_response(
            200, render_usage(view.state, now, view.auth.plan_type, view.auth.email)
        )
        log.debug("usage view: showed account %s", view.name)

    def serving(self) -> AccountView | None:
        """The account the next new request would go to; with none usable, the one that is
        back first (Codex then shows the pool's limit, which is the truth)."""
        choice = self.gateway.choose(None, continuation=False)
        if choice.account is not None:
            return choice.account
        views = [v for v in self.gateway.live.views() if v.auth.logged_in]
        cooling = [v for v in views if v.state.cooling_until is not None]
        if cooling:
            return min(cooling, key=lambda v: v.state.cooling_until or 0.0)
        return views[0] if views else None
