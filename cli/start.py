"""`cao gateway start`: the gateway (mitmdump with cao's addon) in the foreground, or with
`--daemon` in the background (cli/daemon.py)."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from cao.config import defaults
from cao.config.access import gateway_key
from cao.config.errors import CaoError, InvalidInput
from cao.config.files import ensure_private_dir
from cao.config.pool import DEFAULT_STRATEGY, AccountPool, Strategy
from cao.config.store import Store

from .base import cao_words, gateway_app, say, store_of, warn
from .gateway import Host, Port, bare_host, ipv4_mapped, is_loopback, origin
from .probe import answers, busy_port

# Comfortably above Codex's largest requests: a full context window is ~1 MB of JSON and an
# image is resized to 2048 px (a few MB as base64), and each request is zstd-compressed.
BODY_LIMIT = "32m"


class RetryMode(StrEnum):
    redirect = "redirect"
    inline = "inline"


class Transport(StrEnum):
    auto = "auto"
    http = "http"


def mitm_tool(name: str) -> str:
    beside = Path(sys.executable).parent / name  # the one installed with cao
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise CaoError(f"{name} not found: reinstall cao (`make install`)")
    return found


def addon_script() -> Path:
    import cao.addons

    return Path(cao.addons.__file__).parent / "cao.py"


def port_in_use(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # As mitmproxy (asyncio) binds: only a live listener makes the port busy, and an IPv6
        # socket is IPv6 only.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            s.bind((host.strip("[]"), port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return True
            raise CaoError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    return False


def mitm_args(
    store: Store,
    *,
    host: str,
    port: int,
    upstream: str,
    auth_url: str,
    passthrough_auth: bool,
    retry_mode: str,
    cooldown_seconds: int,
    switch_at: int,
    web: bool,
    upstream_ca: Path | None,
    web_port: int = 8081,
    usage_interval: int = 300,
    strategy: str = DEFAULT_STRATEGY.value,
    require_key: bool = False,
    switch_live: bool = False,
    notify: bool = False,
    transport: str = Transport.auto.value,
) -> list[str]:
    confdir = store.data_dir / ".mitmproxy"  # private: ~/.mitmproxy/config.yaml cannot interfere
    args = [
        "--mode", f"reverse:{upstream}@{host}:{port}",
        "-s", str(addon_script()),
        "--set", f"confdir={confdir}",
        "--set", "termlog_verbosity=info",
        # Connect upstream on the first request, not on accept: an unreachable upstream is
        # then a 502 the client can read (eager closes the client connection instead), and
        # what the gateway answers itself (426, /__cao/status) opens no upstream connection.
        "--set", "connection_strategy=lazy",
        "--set", f"cao_data_dir={store.data_dir}",
        "--set", f"cao_upstream={upstream}",
        "--set", f"cao_auth_url={auth_url}",
        "--set", f"cao_passthrough_auth={'true' if passthrough_auth else 'false'}",
        "--set", f"cao_retry_mode={retry_mode}",
        "--set", f"cao_cooldown_seconds={cooldown_seconds}",
        "--set", f"cao_switch_at={switch_at}",
        "--set", f"cao_usage_interval={usage_interval}",
        "--set", f"cao_strategy={strategy}",
        "--set", f"cao_require_key={'true' if require_key else 'false'}",
        "--set", f"cao_switch_live={'true' if switch_live else 'false'}",
        "--set", f"cao_notify={'true' if notify else 'false'}",
        "--set", f"cao_transport={transport}",
        # The gateway checks the client's Host itself, then names the upstream (access.py).
        "--set", "keep_host_header=true",
        # Larger bodies are refused with 413 before they are buffered (mitmproxy checks the
        # declared length, and a chunked body as it grows).
        "--set", f"body_size_limit={BODY_LIMIT}",
    ]  # fmt: skip
    if upstream_ca is not None:
        args += ["--set", f"ssl_verify_upstream_trusted_ca={upstream_ca}"]
    if web:
        args += [
            "--set",
            "web_open_browser=false",
            "--set",
            f"web_host={host}",
            "--set",
            f"web_port={web_port}",
        ]
    else:
        args += ["--set", "flow_detail=0"]  # our addon logs one line per request
    return args


@gateway_app.command()
def start(
    ctx: typer.Context,
    host: Host = defaults.GATEWAY_HOST,
    port: Port = defaults.GATEWAY_PORT,
    upstream: Annotated[
        str, typer.Option(help="Upstream origin Codex's model traffic goes to.")
    ] = defaults.UPSTREAM_URL,
    auth_url: Annotated[
        str, typer.Option(help="OAuth token endpoint origin, for token refresh.")
    ] = defaults.AUTH_URL,
    passthrough_auth: Annotated[
        bool,
        typer.Option(
            "--passthrough-auth", help="Forward Codex's own auth untouched, no account switching."
        ),
    ] = False,
    retry_mode: Annotated[
        RetryMode,
        typer.Option(
            help="On a usage limit: 307 to the same URL (answer streams), or re-send "
            "inline (for clients that do not follow redirects; answer comes whole)."
        ),
    ] = RetryMode.redirect,
    cooldown_seconds: Annotated[
        int, typer.Option(min=1, help="Cooldown when a quota answer gives no reset time.")
    ] = defaults.COOLDOWN_SECONDS,
    switch_at: Annotated[
        int,
        typer.Option(
            min=1, max=100, help="Move new conversations off an account at this usage percent."
        ),
    ] = defaults.SWITCH_AT_PERCENT,
    switch_live: Annotated[
        bool,
        typer.Option(
            "--switch-live",
            help="Live conversations leave at --switch-at too (losing their prompt cache); "
            "by default they stay until the account refuses.",
        ),
    ] = False,
    usage_interval: Annotated[
        int,
        typer.Option(
            min=0, help="Seconds between usage reads of every account from ChatGPT (0: off)."
        ),
    ] = 300,
    strategy: Annotated[
        Strategy,
        typer.Option(
            help="Which usable account new conversations go to: fallback order, the one "
            "whose unused quota resets first, or the most quota left."
        ),
    ] = DEFAULT_STRATEGY,
    transport: Annotated[
        Transport,
        typer.Option(
            help="auto: Codex's WebSocket passes through (failover included); http: Codex "
            "is told to use HTTP/SSE (426 to its upgrades)."
        ),
    ] = Transport.auto,
    web: Annotated[
        bool, typer.Option("--web", help="Run mitmweb (inspect flows) instead of mitmdump.")
    ] = False,
    web_port: Annotated[
        int, typer.Option(min=1, max=65535, help="mitmweb's UI port (with --web).")
    ] = 8081,
    allow_remote: Annotated[
        bool,
        typer.Option(
            "--allow-remote",
            help="Allow a non-loopback --host (remote clients need the key in their URL).",
        ),
    ] = False,
    require_key: Annotated[
        bool,
        typer.Option(
            "--require-key",
            help="Require the key in the URL from your own processes too (`url --key`).",
        ),
    ] = False,
    upstream_ca: Annotated[
        Path | None, typer.Option(help="Extra CA bundle to trust for the upstream's TLS.")
    ] = None,
    notify: Annotated[
        bool,
        typer.Option(
            "--notify",
            help="Desktop notification (notify-send, osascript) when the pool switches "
            "account because of a limit and when every account is limited; one a minute.",
        ),
    ] = False,
    daemon: Annotated[
        bool,
        typer.Option(
            "--daemon", help="Run in the background (log: <data dir>/gateway.log; pid file)."
        ),
    ] = False,
    log_file: Annotated[
        Path | None, typer.Option(help="Also log to this file (5 MB, two old ones kept).")
    ] = None,
    wait: Annotated[
        float, typer.Option(min=1, help="With --daemon: seconds to wait for it to answer.")
    ] = 20.0,
) -> None:
    """Run the gateway in the foreground (Ctrl-C stops it), or with --daemon in the
    background (`cao gateway stop` stops it)."""
    store = store_of(ctx)
    host = bare_host(host)  # `[::1]` as written in a URL is the address ::1
    if not is_loopback(host):
        if not allow_remote:
            raise InvalidInput(
                f"--host {host} is not loopback: anyone who reaches it would use your accounts; "
                "add --allow-remote if you mean it"
            )
        warn(
            f"listening on {host}: remote clients need the key in their base URL "
            f"(`cao gateway url --key --host {host}`); anyone who has it can use your accounts"
        )
    upstream = origin(upstream, "--upstream")
    auth_url = origin(auth_url, "--auth-url")
    if upstream_ca is not None and not upstream_ca.is_file():
        raise InvalidInput(f"--upstream-ca {upstream_ca}: no such file")
    if not passthrough_auth:
        ready = [v for v in AccountPool(store).accounts() if v.auth.logged_in]
        if not ready:
            raise CaoError(
                f"no logged-in account in {store.data_dir}: add one with `cao add NAME` "
                "(or run with --passthrough-auth)"
            )
    if daemon and not port:
        raise InvalidInput("--daemon needs a fixed --port (the shim and `stop` find it there)")
    if daemon:
        from .daemon import running_daemon

        if (record := running_daemon(store)) is not None:
            raise CaoError(
                f"a gateway already runs for {store.data_dir} (pid {record.pid}, {record.url}):"
                f" `{cao_words(store, 'gateway restart')}` restarts it"
            )
    mapped = ipv4_mapped(host)
    if mapped is not None:
        raise InvalidInput(
            f"--host {host} is an IPv4-mapped IPv6 address, which cannot be listened on: use "
            f"--host {mapped}"
        )
    if port and port_in_use(host, port):
        raise CaoError(busy_port(store, host, port))
    if web and web_port == port:
        raise InvalidInput(f"--web-port {web_port} is the gateway's own --port: pick another")
    if web and port_in_use(host, web_port):
        raise CaoError(f"port {web_port} on {host} is in use (mitmweb's UI: try --web-port)")
    store.ensure()
    gateway_key(store)  # made before mitmdump starts: its addon only reads it
    ensure_private_dir(store.data_dir / ".mitmproxy")
    tool = mitm_tool("mitmweb" if web else "mitmdump")
    args = mitm_args(
        store, host=host, port=port, upstream=upstream, auth_url=auth_url,
        passthrough_auth=passthrough_auth, retry_mode=retry_mode.value,
        cooldown_seconds=cooldown_seconds, switch_at=switch_at, web=web, upstream_ca=upstream_ca,
        web_port=web_port, usage_interval=usage_interval, strategy=strategy.value,
        require_key=require_key, switch_live=switch_live, notify=notify,
        transport=transport.value,
    )  # fmt: skip
    if log_file is not None:
        args += ["--set", f"cao_log_file={log_file.absolute()}"]
    if daemon:
        from .daemon import log_path, spawn

        url = defaults.gateway_url(host, port)
        record = spawn(store, tool, args, url, answers(store), wait)
        say(f"gateway started at {url} (pid {record.pid}); log: {log_path(store)}")
        say(f"stop it with `{cao_words(store, 'gateway stop')}`")
        return
    sys.stdout.flush()
    sys.stderr.flush()
    # Become mitmdump: Ctrl-C and signals reach it directly, and no orphan can be left behind.
    os.execv(tool, [tool, *args])  # noqa: S606
