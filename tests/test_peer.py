"""The socket-owner look-up (config/peer.py) and the peer verdict (addons/peer.py)."""

from __future__ import annotations

import os
import socket
import sys
import time

import pytest

from cao.addons.peer import Peer, judge
from cao.config.peer import (
    lsof_owner_in,
    netlink_owner,
    owner_in_table,
    proc_address,
    socket_owner,
    table_owner,
)

# Two rows as the kernel writes them: a listener, and a client 127.0.0.1:40000 -> :4319 owned by
# uid 1001; then the same client as a FIN_WAIT2 remnant (inode 0, uid 0: nobody holds it).
TABLE = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:10DF 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1234 1 0
   1: 0100007F:9C40 0100007F:10DF 01 00000000:00000000 00:00000000 00000000  1001        0 5678 1 0
   2: 0100007F:9C41 0100007F:10DF 05 00000000:00000000 00:00000000 00000000     0        0 0 3 0
"""


@pytest.mark.skipif(sys.byteorder != "little", reason="the sample table is little-endian")
def test_the_owner_is_read_from_the_clients_row() -> None:
    assert proc_address("127.0.0.1", 4319, v6=False) == "0100007F:10DF"
    assert owner_in_table(TABLE, ("127.0.0.1", 40000), ("127.0.0.1", 4319), False) == 1001
    # The gateway's own end (local = gateway) is a different row; a port off by one is nobody.
    assert owner_in_table(TABLE, ("127.0.0.1", 4319), ("127.0.0.1", 40000), False) is None
    assert owner_in_table(TABLE, ("127.0.0.1", 40002), ("127.0.0.1", 4319), False) is None
    # A closed socket's remnant shows uid 0: it must vouch for nobody (a root gateway!).
    assert owner_in_table(TABLE, ("127.0.0.1", 40001), ("127.0.0.1", 4319), False) is None
    assert owner_in_table("garbage", ("127.0.0.1", 1), ("127.0.0.1", 2), False) is None
    assert owner_in_table(TABLE, ("not an ip", 1), ("127.0.0.1", 2), False) is None


def test_ipv6_and_mapped_addresses() -> None:
    little = sys.byteorder == "little"
    loop6 = proc_address("::1", 80, v6=True)
    assert loop6 == ("00000000" * 3 + ("01000000" if little else "00000001")) + ":0050"
    mapped = proc_address("127.0.0.1", 80, v6=True)  # an IPv4 peer of a dual-stack socket
    assert mapped.startswith("00000000" * 2 + ("FFFF0000" if little else "0000FFFF"))


def test_lsof_output_names_the_client_row() -> None:
    output = "p100\nu501\nf7\nn127.0.0.1:4319->127.0.0.1:50000\np200\nu502\nf9\n"
    output += "n127.0.0.1:50000->127.0.0.1:4319\n"
    assert lsof_owner_in(output, ("127.0.0.1", 4319)) == 502
    assert lsof_owner_in(output, ("127.0.0.1", 4320)) is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/net/tcp")
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_a_real_connection_is_owned_by_this_user(host: str) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as server:
        server.bind((host, 0))
        server.listen()
        client = socket.create_connection(server.getsockname()[:2])
        accepted, peer = server.accept()
        with client, accepted:
            gateway = accepted.getsockname()[:2]
            assert socket_owner(peer[:2], gateway) == os.geteuid()
            # Both ways of asking the kernel agree (netlink, and the /proc fallback).
            assert netlink_owner(peer[:2], gateway) == table_owner(peer[:2], gateway)
            assert (
                netlink_owner(gateway, ("127.0.0.1" if family == socket.AF_INET else "::1", 1))
                is None
            )
            client.close()  # a socket nobody holds vouches for nobody
            assert socket_owner(peer[:2], gateway) is None
            assert table_owner(peer[:2], gateway) is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/net/tcp")
def test_the_lookup_is_cheap_with_many_sockets() -> None:
    """500 open connections (1,000 more rows in the table): a look-up stays cheap."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1024)
        pairs = []
        for _ in range(500):
            c = socket.create_connection(server.getsockname())
            pairs.append((c, server.accept()[0]))
        peer, gateway = pairs[-1][1].getpeername(), server.getsockname()
        started = time.perf_counter()
        for _ in range(50):
            assert socket_owner(peer, gateway) == os.geteuid()
        each = (time.perf_counter() - started) / 50
        for c, a in pairs:
            c.close()
            a.close()
    assert each < 0.01, each  # ~15 µs measured; loose on a loaded machine


def test_the_verdict() -> None:
    me = os.geteuid()
    local, gw = ("127.0.0.1", 40000), ("127.0.0.1", 4319)
    assert judge(local, gw, me, me, False) == Peer(me, True, False)
    assert judge(local, gw, me, me, True) == Peer(me, True, True)  # --require-key
    assert judge(local, gw, me + 1, me, False) == f"another OS user (uid {me + 1})"
    assert judge(local, gw, None, me, False) == "the OS could not name its user"
    assert judge(("::ffff:127.0.0.1", 1), gw, None, me, False) == "the OS could not name its user"
    assert judge(("192.0.2.7", 5), ("192.0.2.1", 4319), None, me, False) == Peer(None, False, True)
    assert judge(None, gw, me, me, False) == "no address to check"
