"""The gateway's addons, in hook order."""

from __future__ import annotations

import logging

from mitmproxy import ctx

from cao.config.defaults import CODEX_API_PATH, gateway_url

from .debug import CaptureBody
from .gateway import Gateway
from .retry import QuotaRetry
from .router import AccountRouter, RequestLog, StatusEndpoint, WebSocketRefusal
from .stream import StreamWatcher

log = logging.getLogger("cao.gateway")


class Startup:
    """Prints how to route Codex through the gateway once it listens."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def running(self) -> None:
        # One line per request is ours; httpx and mitmproxy's connection chatter stay quiet.
        for name in ("httpx", "mitmproxy.proxy"):
            logging.getLogger(name).setLevel(logging.WARNING)
        proxyserver = ctx.master.addons.get("proxyserver")
        addrs = proxyserver.listen_addrs() if proxyserver else []
        tcp = [a for a in addrs if len(a) >= 2]
        if not tcp:
            return
        url = gateway_url(str(tcp[0][0]), int(tcp[0][1]))
        views = self.gateway.live.views()
        ready = sum(1 for v in views if v.auth.logged_in)
        mode = "passthrough auth" if self.gateway.passthrough else f"{ready} account(s)"
        log.info(
            "cao gateway listening on %s -> %s (%s). Route Codex through it: `cao gateway enable"
            ' --url %s` or codex -c openai_base_url="%s%s"',
            url,
            ctx.options.cao_upstream,
            mode,
            url,
            url,
            CODEX_API_PATH,
        )


def make_addons() -> list[object]:
    gateway = Gateway()
    return [
        gateway,
        Startup(gateway),
        StatusEndpoint(gateway),
        WebSocketRefusal(),
        AccountRouter(gateway),
        CaptureBody(),
        StreamWatcher(gateway),
        QuotaRetry(gateway),
        RequestLog(gateway),
        gateway.debug,
    ]
