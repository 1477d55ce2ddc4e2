"""`cao gateway start|status|enable|disable`."""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import shutil
import socket
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer

from cao.config import defaults
from cao.config.access import codex_base_url, gateway_key, rotate_key, status_url
from cao.config.errors import CaoError, InvalidInput
from cao.config.files import ensure_private_dir
from cao.config.pool import DEFAULT_STRATEGY, AccountPool, Strategy, account_summary
from cao.config.store import Store

from .base import JsonFlag, gateway_app, print_json, say, status_words, store_of, warn
from .codex import find_codex
from .shim import default_bin_dir, install_shim, path_problem, remove_shim, shim_gateway

# Comfortably above Codex's largest requests: a full context window is ~1 MB of JSON and an
# image is resized to 2048 px (a few MB as base64), and each request is zstd-compressed.
BODY_LIMIT = "32m"


class RetryMode(StrEnum):
    redirect = "redirect"
    inline = "inline"


Host = Annotated[str, typer.Option("--host", help="Address the gateway listens on.")]
Port = Annotated[int, typer.Option("--port", min=0, max=65535, help="Port the gateway listens on.")]


def bare_host(host: str) -> str:
    """`[::1]` and `::1` mean the same address; mitmproxy and sockets take it bare."""
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def ipv4_mapped(host: str) -> str | None:
    """The IPv4 address an IPv4-mapped IPv6 address (::ffff:127.0.0.1) stands for."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return str(mapped) if mapped is not None else None


def origin(url: str, what: str) -> str:
    """An http(s) origin without path: what mitmproxy's reverse mode can take."""
    parts = urlsplit(url.strip())
    try:
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        raise InvalidInput(f"{what} {url!r}: bad port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        example = "http://127.0.0.1:4319" if what == "--url" else "https://chatgpt.com"
        raise InvalidInput(f"{what} {url!r}: give an http(s) URL such as {example}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InvalidInput(f"{what} {url!r}: give the origin only (no path)")
    return f"{parts.scheme}://{parts.netloc}"


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
) -> None:
    """Run the gateway in the foreground (Ctrl-C stops it)."""
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
    mapped = ipv4_mapped(host)
    if mapped is not None:
        raise InvalidInput(
            f"--host {host} is an IPv4-mapped IPv6 address, which cannot be listened on: use "
            f"--host {mapped}"
        )
    if port and port_in_use(host, port):
        raise CaoError(f"port {port} on {host} is in use (another gateway? try --port)")
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
        require_key=require_key,
        switch_live=switch_live,
    )  # fmt: skip
    sys.stdout.flush()
    sys.stderr.flush()
    # Become mitmdump: Ctrl-C and signals reach it directly, and no orphan can be left behind.
    os.execv(tool, [tool, *args])  # noqa: S606


# A gateway on loopback answers in milliseconds; a listener that never answers must not make a
# command hang (well under a second, connect and read together).
STATUS_TIMEOUT = 0.4


def meant_gateway(
    url: str | None = None,
    bin_dir: Path | None = None,
    host: str | None = None,
    port: int | None = None,
) -> str:
    """The one rule for "the gateway the user means": the --url (or --host/--port) given,
    else the one the installed `codex` shim routes Codex to, else the default address."""
    if url:
        return origin(url, "--url")
    if host is not None or port is not None:
        return defaults.gateway_url(
            bare_host(host or defaults.GATEWAY_HOST), port or defaults.GATEWAY_PORT
        )
    return shim_gateway((bin_dir or default_bin_dir()) / "codex") or defaults.gateway_url()


def start_command(url: str) -> str:
    """`cao gateway start` with the options that make it listen at `url`."""
    parts = urlsplit(url)
    command = "cao gateway start"
    if parts.hostname and parts.hostname != defaults.GATEWAY_HOST:
        command += f" --host {parts.hostname}"
    if parts.port and parts.port != defaults.GATEWAY_PORT:
        command += f" --port {parts.port}"
    return command


def fetch_status(
    url: str, key: str | None = None, timeout: float = STATUS_TIMEOUT
) -> dict[str, Any] | None:
    """The gateway's /__cao/status document, or None when nothing answers (or a gateway that
    refuses us: another user's, or one that needs a key we do not have)."""
    # http.client, not urllib: urllib builds an SSL context on first use (~60 ms with its
    # import), and the gateway listens on plain HTTP.
    import http.client

    parts = urlsplit(url)
    connection_type = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    try:
        connection = connection_type(parts.hostname or "", parts.port, timeout=timeout)
        try:
            # With the key when there is one: a gateway that requires it answers too.
            path = urlsplit(status_url(url, key)).path
            connection.request("GET", path, headers={"host": parts.netloc})
            answer = connection.getresponse()
            document = json.loads(answer.read()) if answer.status == 200 else None
        finally:
            connection.close()
    except (OSError, ValueError, http.client.HTTPException):
        return None
    return document if isinstance(document, dict) and "accounts" in document else None


@gateway_app.command()
def status(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option("--host", help="Address it listens on.")] = None,
    port: Annotated[
        int | None, typer.Option("--port", min=1, max=65535, help="Port it listens on.")
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(help="Gateway URL (default: the one the codex shim uses, else 4319)."),
    ] = None,
    bin_dir: Annotated[
        Path | None, typer.Option("--bin-dir", help="Where the shim is (default ~/.local/bin).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Is a gateway answering (exit 0) or not (exit 1), and is each account ready."""
    target = meant_gateway(url, bin_dir, host, port)
    store = store_of(ctx)
    document = fetch_status(target, gateway_key(store, create=False))
    if as_json:
        print_json({"url": target, "running": document is not None, "status": document})
        raise typer.Exit(0 if document else 1)
    if document is None:
        say(f"gateway: not answering at {target} (start it with `{start_command(target)}`)")
        now = time.time()
        for view in AccountPool(store).accounts():
            say(f"  {view.name}: {status_words(account_summary(view, now), now)}")
        raise typer.Exit(1)
    gw = document.get("gateway", {})
    say(
        f"gateway: up at {target} -> {gw.get('upstream')} (cao {gw.get('version')}, "
        f"retry {gw.get('retry_mode')}{', passthrough auth' if gw.get('passthrough_auth') else ''})"
    )
    for account in document.get("accounts", []):
        marker = "*" if account.get("default") else " "
        say(f"  {marker} {account.get('name')}: {status_words(account, time.time())}")


BinDir = Annotated[
    Path | None, typer.Option("--bin-dir", help="Where the shim goes (default ~/.local/bin).")
]


@gateway_app.command("url")
def url_(
    ctx: typer.Context,
    host: Host = defaults.GATEWAY_HOST,
    port: Port = defaults.GATEWAY_PORT,
    with_key: Annotated[
        bool,
        typer.Option(
            "--key",
            help="With the install's key in the path (remote clients, --require-key): "
            "put it into config.toml, never on a command line.",
        ),
    ] = False,
) -> None:
    """Print the exact openai_base_url Codex must use for the gateway (one line).

    On loopback it holds no secret: the gateway serves only your OS user's processes.
    """
    key = gateway_key(store_of(ctx)) if with_key else None
    print(codex_base_url(defaults.gateway_url(bare_host(host), port), key))


@gateway_app.command("rotate-key")
def rotate_key_(ctx: typer.Context) -> None:
    """Replace the install's key (a running gateway takes the new one at once).

    Clients that use the old key (`url --key`) get 403 until they get the new URL.
    """
    rotate_key(store_of(ctx))
    say("new gateway key made: update keyed URLs with `cao gateway url --key`")


@gateway_app.command()
def enable(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option(help="Gateway URL the shim points Codex at.")] = None,
    codex: Annotated[Path | None, typer.Option(help="The real codex binary.")] = None,
    bin_dir: BinDir = None,
) -> None:
    """Install a `codex` shim that routes Codex through the gateway."""
    target = origin(url, "--url") if url else defaults.gateway_url()
    directory = bin_dir or default_bin_dir()
    real = find_codex(codex)
    gateway_key(store_of(ctx))  # made now (0600), for `url --key`; the shim holds no secret
    shim = install_shim(directory, real, codex_base_url(target))
    say(f"enabled: {shim} runs {real} through {target}")
    if problem := path_problem(directory, real):
        warn(problem)


@gateway_app.command()
def disable(bin_dir: BinDir = None) -> None:
    """Remove the `codex` shim (only ours)."""
    directory = bin_dir or default_bin_dir()
    if remove_shim(directory):
        say(f"disabled: removed {directory / 'codex'}")
    else:
        say("not enabled: nothing to remove")
