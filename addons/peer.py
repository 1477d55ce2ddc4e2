"""Only this OS user's processes may use the gateway: the kernel says who is on the other end.

On each new connection, before a byte of it is read, the owner of the client's socket is looked
up (config/peer.py) and compared with the gateway's own uid:
- the same user: served; the path needs no key (unless --require-key);
- another local user: the connection is closed at once, whatever it would send;
- nobody the OS can name on a loopback address: closed (fail closed);
- a remote peer (only with --allow-remote): served only with the key in the path (access.py).
The verdict is kept for the connection's life: one look-up per connection, not per request.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass

from mitmproxy import connection, ctx
from mitmproxy.addonmanager import Loader

from cao.config.peer import is_loopback_address, socket_owner

from .notes import note


@dataclass(frozen=True)
class Peer:
    """Who is on the other end of one client connection."""

    uid: int | None  # the socket owner's uid, None when the OS could not tell
    mine: bool  # the gateway's own user (the OS vouches for it)
    key_required: bool  # its requests must carry the install's key

    @property
    def budget(self) -> str:
        """The connection budget it counts against (limits.py): one per OS user, one for
        all remote peers."""
        return f"uid:{self.uid}" if self.uid is not None else "remote"


def address(addr: object) -> tuple[str, int] | None:
    if isinstance(addr, tuple) and len(addr) >= 2:
        return str(addr[0]), int(addr[1])
    return None


def judge(
    peer: tuple[str, int] | None,
    gateway: tuple[str, int] | None,
    owner: int | None,
    own_uid: int,
    require_key: bool,
) -> Peer | str:
    """The verdict for a connection, or why it is refused (a pure rule, unit-tested)."""
    if peer is None or gateway is None:
        return "no address to check"
    if owner is not None:
        if owner != own_uid:
            return f"another OS user (uid {owner})"
        return Peer(owner, True, require_key)
    if is_loopback_address(peer[0]):
        return "the OS could not name its user"
    return Peer(None, False, True)  # remote: only the key can vouch for it


class PeerCheck:
    """client_connected: refuses every connection not made by this OS user (or, remote, not
    yet vouched by the key); `peer(client)` gives the verdict to the other addons."""

    def __init__(self) -> None:
        self.own_uid = os.geteuid()
        self.peers: dict[str, Peer] = {}

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "cao_require_key",
            bool,
            False,
            "Require the install's key in the path even from this user's own processes.",
        )

    async def client_connected(self, client: connection.Client) -> None:
        peer, gateway = address(client.peername), address(client.sockname)
        owner: int | None = None
        if peer and gateway:
            if sys.platform.startswith("linux"):  # one netlink query, ~15 µs: inline
                owner = socket_owner(peer, gateway)
            else:  # lsof takes a while: off the event loop
                owner = await asyncio.to_thread(socket_owner, peer, gateway)
        verdict = judge(peer, gateway, owner, self.own_uid, ctx.options.cao_require_key)
        if isinstance(verdict, str):
            client.error = f"cao gateway: refused ({verdict})"
            note(f"a connection from {verdict}")
            return
        self.peers[client.id] = verdict

    def client_disconnected(self, client: connection.Client) -> None:
        self.peers.pop(client.id, None)

    def peer(self, client: connection.Client) -> Peer | None:
        """The connection's verdict; None when it was never checked (then: refuse)."""
        return self.peers.get(client.id)
