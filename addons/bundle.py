"""The gateway's addons, in hook order."""

from __future__ import annotations

import logging
from pathlib import Path

from mitmproxy import ctx
from mitmproxy.exceptions import OptionsError

from cao.config.defaults import GATEWAY_HOST, GATEWAY_PORT, gateway_url
from cao.config.hints import cao_line, port_words

from .access import AccessGuard
from .debug import CaptureBody
from .gateway import Gateway
from .history import HistoryGuard
from .http1server import ErrorText
from .limits import ConnectionLimits
from .logfile import LogFile
from .notify import Notify
from .peer import PeerCheck
from .retry import QuotaRetry
from .router import AccountRouter, RequestLog, StatusEndpoint
from .stream import StreamWatcher
from .usagepoll import UsagePoller
from .usageview import UsageView
from .websocket import WebSocketRelay

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
        host, port = str(tcp[0][0]), int(tcp[0][1])
        url = gateway_url(host, port)
        views = self.gateway.live.views()
        ready = sum(1 for v in views if v.auth.logged_in)
        mode = "passthrough auth" if self.gateway.passthrough else f"{ready} account(s)"
        where = port_words(host, port, GATEWAY_HOST, GATEWAY_PORT)
        data_dir = Path(ctx.options.cao_data_dir)
        log.info(
            "cao gateway listening on %s -> %s (%s). Route Codex through it: `%s`, or "
            'codex -c openai_base_url="$(%s)"',
            url,
            ctx.options.cao_upstream,
            mode,
            cao_line(data_dir, f"gateway enable{where}"),
            cao_line(data_dir, f"gateway url{where}"),
        )


# mitmdump's built-in addons that a gateway never uses (replay, rewriting, saving, printing
# flows...). mitmproxy dispatches every hook of every request to every addon in its chain, used
# or not, which is most of its cost per request: the gateway drops these once it runs.
# (clientplayback stays: its `done` is async, which remove() cannot call.)
UNUSED_BUILTINS = (
    "browser", "stripdnshttpsrecords", "blocklist", "anticache", "anticomp",
    "commandhistory", "comment", "cut", "disableh2c", "export", "onboarding", "proxyauth",
    "serverplayback", "mapremote", "maplocal", "modifybody", "modifyheaders", "stickyauth",
    "stickycookie", "save", "savehar", "upstreamauth", "updatealtsvc", "dumper", "readfilestdin",
)  # fmt: skip


class UnusedBuiltins:
    """Removes UNUSED_BUILTINS from mitmdump (not from mitmweb, whose UI may call on them)."""

    def running(self) -> None:
        manager = ctx.master.addons
        if manager.get("view") is not None:  # mitmweb
            return
        removed = []
        for name in UNUSED_BUILTINS:
            addon = manager.get(name)
            if addon is not None:
                manager.remove(addon)
                removed.append(name)
        log.debug("dropped %d unused mitmproxy addons: %s", len(removed), ", ".join(removed))


# mitmweb paths that serialize a flow's raw header bytes (a token is on the flow while its
# request waits for the answer) or copy a flow with them (the copy is never redacted). mitmproxy
# cannot hold a value for the wire only, so these paths are closed in --web mode.
WEB_CLOSED_PATHS = (
    r"/flows/dump",
    r"/flows/[0-9a-f\-]+/duplicate",
    r"/commands/(?:export|save|cut|view\.flows\.(?:duplicate|create)|flow\.encode)[a-z._]*",
)


# Options that make mitmproxy write flows (with the token of a request in flight) to a file.
FLOW_WRITING_OPTIONS = frozenset({"save_stream_file", "hardump", "web_static_viewer"})
FLOW_WRITERS = ("save", "savehar", "staticviewer")  # the addons behind them


class WebLockdown:
    """In mitmweb: the UI's dump, export, save, cut and duplicate answer 403, and no option that
    writes flows to a file may be set (at start or from the UI's options editor)."""

    def configure(self, updated: set[str]) -> None:
        for name in FLOW_WRITING_OPTIONS & updated:
            if getattr(ctx.options, name, None):
                raise OptionsError(f"{name}: the gateway never writes flows (they hold tokens)")

    def running(self) -> None:
        app = getattr(ctx.master, "app", None)
        if app is None or ctx.master.addons.get("view") is None:  # mitmdump: nothing to close
            return
        import tornado.web
        from tornado.routing import PathMatches, Rule

        class Closed(tornado.web.RequestHandler):
            def prepare(self) -> None:
                self.set_status(403)
                self.finish("closed by cao: this could show a token of a request in flight")

        for name in FLOW_WRITERS:  # so that not even a moment's file is made
            if (writer := ctx.master.addons.get(name)) is not None:
                ctx.master.addons.remove(writer)
        router = app.wildcard_router
        for pattern in WEB_CLOSED_PATHS:
            router.rules.insert(0, router.process_rule(Rule(PathMatches(pattern), Closed)))
        log.info("mitmweb: dump, export, save and duplicate are closed (tokens)")


def make_addons() -> list[object]:
    gateway = Gateway()
    peers = PeerCheck()  # before any byte is read: only this OS user's processes
    poller = UsagePoller(gateway)
    return [
        LogFile(),  # first: what the others log at start reaches the file too
        gateway,
        ErrorText(),  # before anything logs an error: no upstream bytes in its text
        peers,
        AccessGuard(peers),  # first: nothing else runs for a request that is not the user's Codex
        ConnectionLimits(peers),
        UnusedBuiltins(),
        WebLockdown(),
        Startup(gateway),
        StatusEndpoint(gateway),
        UsageView(gateway, poller),  # before the router: Codex's usage view is the pool's
        WebSocketRelay(gateway),  # before the router: --transport http answers 426
        AccountRouter(gateway),
        HistoryGuard(gateway),  # before CaptureBody: the body captured is the one sent
        CaptureBody(),
        StreamWatcher(gateway),
        QuotaRetry(gateway),
        RequestLog(gateway),
        Notify(gateway),  # after QuotaRetry: sees the answer Codex gets
        poller,
        gateway.debug,
    ]
