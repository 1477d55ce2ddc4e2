"""`cao gateway enable|disable`: route every Codex through the gateway, and undo it.

Three routes, one step: the `codex` shim on PATH (the shell), the marked block in
`$CODEX_HOME/config.toml` (the TUI, the IDE extension and the desktop app read it), and with
`--at-login` a login service that keeps the gateway running."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from cao.config import defaults
from cao.config.access import codex_base_url, gateway_key
from cao.config.codexconfig import (
    ConfigRefused,
    codex_home,
    disable_routing,
    enable_routing,
    routing_for,
)
from cao.config.hints import port_words

from .base import cao_words, gateway_app, say, store_of, warn
from .codex import find_codex
from .gateway import BinDir, bare_host, meant_gateway
from .probe import Answer, probe
from .shim import ShimPlan, default_bin_dir, install_shim, path_problem, remove_shim

CodexHome = Annotated[
    Path | None,
    typer.Option(
        "--codex-home", help="The CODEX_HOME whose config.toml to route (default ~/.codex)."
    ),
]


@gateway_app.command()
def enable(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option(help="Gateway URL to route Codex to.")] = None,
    host: Annotated[str | None, typer.Option("--host", help="The gateway's address.")] = None,
    port: Annotated[
        int | None, typer.Option("--port", min=1, max=65535, help="The gateway's port.")
    ] = None,
    codex: Annotated[Path | None, typer.Option(help="The real codex binary.")] = None,
    bin_dir: BinDir = None,
    codex_home_: CodexHome = None,
    no_config: Annotated[
        bool, typer.Option("--no-config", help="Leave config.toml alone (the shim only).")
    ] = False,
    at_login: Annotated[
        bool, typer.Option("--at-login", help="Also start the gateway at login (a service).")
    ] = False,
) -> None:
    """Route Codex through the gateway: a `codex` shim on PATH and the base URLs in
    config.toml (the TUI, the IDE extension and the desktop app read it)."""
    store = store_of(ctx)
    directory = bin_dir or default_bin_dir()
    target = meant_gateway(url, directory, host, port)
    real = find_codex(codex)
    gateway_key(store)  # made now (0600), for `url --key`; the shim holds no secret
    base_url = codex_base_url(target)
    host_, port_ = _host_port(target)
    try:
        chatgpt_url = routing_for(base_url).chatgpt_base_url
    except ConfigRefused:  # not on loopback: Codex's usage view stays its own
        chatgpt_url = "https://chatgpt.com/backend-api/"
    from .daemon import cao_executable

    ensure = [*cao_executable(), "--data-dir", str(store.data_dir), "gateway", "ensure",
              "--host", host_, "--port", str(port_)]  # fmt: skip
    shell = "/bin/bash" if Path("/bin/bash").exists() else "/bin/sh"
    plan = ShimPlan(base_url, chatgpt_url, real, ensure, sys.executable, shell)
    shim = install_shim(directory, plan)
    say(f"enabled: {shim} runs {real} through {target}")
    if problem := path_problem(directory, real):
        warn(problem)
    if not no_config:
        home = codex_home(codex_home_)
        try:
            say(enable_routing(home, routing_for(base_url)))
        except ConfigRefused as refused:
            warn(str(refused))
    parts = (host_, port_)
    if at_login:
        from .daemon import cao_executable
        from .service import install_service, service_command

        command = service_command(cao_executable(), store.data_dir, _port_args(*parts))
        running = probe(target, store).answer is Answer.OURS
        say(install_service(command, store.data_dir, start_now=not running))
    elif probe(target, store).answer is not Answer.OURS:
        where = port_words(*parts, defaults.GATEWAY_HOST, defaults.GATEWAY_PORT)
        start = cao_words(store, "gateway start --daemon" + where)
        say(f"no gateway answers at {target} yet: `{start}`")


def _host_port(url: str) -> tuple[str, int]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return bare_host(parts.hostname or defaults.GATEWAY_HOST), parts.port or defaults.GATEWAY_PORT


def _port_args(host: str, port: int) -> list[str]:
    return port_words(host, port, defaults.GATEWAY_HOST, defaults.GATEWAY_PORT).split()


@gateway_app.command()
def disable(bin_dir: BinDir = None, codex_home_: CodexHome = None) -> None:
    """Undo `enable`: remove the shim (only ours), restore config.toml byte for byte, and
    remove the login service."""
    from .service import remove_service

    directory = bin_dir or default_bin_dir()
    done = []
    if remove_shim(directory):
        done.append(f"removed {directory / 'codex'}")
    if restored := disable_routing(codex_home(codex_home_)):
        done.append(restored)
    if removed := remove_service():
        done.append(removed)
    say("disabled: " + "; ".join(done) if done else "not enabled: nothing to remove")
