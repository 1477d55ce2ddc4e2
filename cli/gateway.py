"""`cao gateway status|url|rotate-key`, and the one rule for the gateway the user means.

The other `cao gateway` commands live in their own modules (registered at the end): `start`
(start.py), `stop|restart|ensure` (daemon.py), `enable|disable` (enable.py)."""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer

from cao.config import defaults
from cao.config.access import codex_base_url, gateway_key, rotate_key
from cao.config.errors import InvalidInput
from cao.config.pool import AccountPool, account_summary
from cao.config.store import Store

from .base import (
    JsonFlag,
    cao_words,
    gateway_app,
    print_json,
    say,
    status_words,
    store_of,
)
from .probe import Answer, probe
from .probe import fetch_status as fetch_status  # status, run and the doctor import it here
from .shim import default_bin_dir, shim_gateway

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


def start_command(url: str, store: Store | None = None) -> str:
    """`cao gateway start` with the options that make it listen at `url` (and the data dir
    when it is not the default one, so the line works pasted into any shell)."""
    parts = urlsplit(url)
    command = "gateway start"
    if parts.hostname and parts.hostname != defaults.GATEWAY_HOST:
        command += f" --host {parts.hostname}"
    if parts.port and parts.port != defaults.GATEWAY_PORT:
        command += f" --port {parts.port}"
    return cao_words(store, command) if store is not None else f"cao {command}"


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
    found = probe(target, store)  # one probe: a silent listener costs its timeout once
    document = found.document if found.answer is Answer.OURS else None
    if as_json:
        print_json({"url": target, "running": document is not None, "status": document,
                    "answer": found.answer.value})  # fmt: skip
        raise typer.Exit(0 if document else 1)
    if document is None:
        if found.answer is Answer.DOWN:
            say(f"gateway: not answering at {target} (start it with "
                f"`{start_command(target, store)} --daemon`)")  # fmt: skip
        else:
            say(f"gateway: {found.words(target)}")
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
    host: Annotated[
        str | None, typer.Option("--host", help="The gateway's address (default: the rule).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", min=1, max=65535, help="The gateway's port (default: the rule)."),
    ] = None,
    bin_dir: Annotated[
        Path | None, typer.Option("--bin-dir", help="Where the shim is (default ~/.local/bin).")
    ] = None,
    with_key: Annotated[
        bool,
        typer.Option(
            "--key",
            help="With the install's key in the path (remote clients, --require-key): "
            "put it into config.toml, never on a command line.",
        ),
    ] = False,
) -> None:
    """Print the exact openai_base_url Codex must use for the gateway (one line): the one
    --host/--port name, else the one the codex shim uses, else 127.0.0.1:4319.

    On loopback it holds no secret: the gateway serves only your OS user's processes.
    """
    key = gateway_key(store_of(ctx)) if with_key else None
    print(codex_base_url(meant_gateway(None, bin_dir, host, port), key))


@gateway_app.command("rotate-key")
def rotate_key_(ctx: typer.Context) -> None:
    """Replace the install's key (a running gateway takes the new one at once).

    Clients that use the old key (`url --key`) get 403 until they get the new URL.
    """
    rotate_key(store_of(ctx))
    say("new gateway key made: update keyed URLs with `cao gateway url --key`")


# The commands in their own modules register on gateway_app when this one is imported.
import cao.cli.daemon  # noqa: E402
import cao.cli.enable  # noqa: E402
import cao.cli.start  # noqa: E402, F401
