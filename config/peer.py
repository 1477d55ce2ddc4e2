"""Which OS user owns the other end of a loopback TCP connection, as the kernel reports it.

The gateway serves a loopback connection only when the process on its other end runs as the
gateway's own user. Nothing the client sends can fake this: the kernel records the socket's
owner when the socket is made. Pure parsing here (unit-tested); the addon (addons/peer.py)
calls `socket_owner` once per connection.

- Linux: the kernel's sock_diag netlink interface answers for one exact socket (its 4-tuple):
  the same facts as /proc/net/tcp at a constant cost (~15 µs), however many sockets the machine
  has. When it cannot answer (an old kernel, a sandbox without netlink), the tables are read.
- Linux, fallback: `/proc/net/tcp` and `/proc/net/tcp6` list every TCP socket of the network
  namespace with its local and remote address and its owner's uid. The client's socket is the
  row whose local address is the connection's peer and whose remote one is the gateway's end.
  A row with inode 0 is a socket no process holds any more (closed, or a TIME_WAIT/FIN_WAIT2
  remnant, which the kernel shows as uid 0): it vouches for nobody.
- macOS: `lsof -nP -iTCP@host:port -Fu` (lsof ships with macOS) names the processes and users
  holding a socket with that address; the row whose remote end is the gateway's is the client.
  Not exercised by the tests (they run on Linux).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

Address = tuple[str, int]

PROC_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
LSOF_TIMEOUT = 2.0


def proc_address(host: str, port: int, v6: bool) -> str:
    """An address as /proc/net/tcp{,6} writes it: the raw address as host-order 32-bit words
    in hex, then the port. IPv4 peers of an IPv6 socket appear as ::ffff:a.b.c.d."""
    ip = ipaddress.ip_address(host.split("%", 1)[0])
    if v6 and ip.version == 4:
        ip = ipaddress.IPv6Address(f"::ffff:{ip}")
    packed = ip.packed
    words = [packed[i : i + 4] for i in range(0, len(packed), 4)]
    order = sys.byteorder
    hexed = "".join(f"{int.from_bytes(w, order):08X}" for w in words)
    return f"{hexed}:{port:04X}"


def owner_in_table(table: str, local: Address, remote: Address, v6: bool) -> int | None:
    """The uid of the socket in a /proc/net/tcp{,6} text whose local end is `local` and remote
    end is `remote`; None when no live socket has them."""
    try:
        needle = f" {proc_address(*local, v6)} {proc_address(*remote, v6)} "
    except ValueError:
        return None
    at = table.find(needle)
    if at < 0:
        return None
    end = table.find("\n", at)
    # local rem st tx:rx tr:when retrnsmt uid timeout inode ... (`sl` comes before `at`)
    fields = table[at : end if end >= 0 else len(table)].split()
    if len(fields) < 9:
        return None
    uid, inode = fields[6], fields[8]
    if not uid.isdigit() or not inode.isdigit() or inode == "0":
        return None
    return int(uid)


# <linux/sock_diag.h>, <linux/inet_diag.h>, <linux/netlink.h>
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 1
NLMSG_ERROR = 2
_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_REQ = struct.Struct("=BBBBI")  # family, protocol, ext, pad, states
_SOCKID = struct.Struct(">HH16s16s")  # sport, dport (network order), src, dst
_SOCKID_TAIL = struct.Struct("=III")  # interface, cookie[2]
_MSG = struct.Struct("=BBBB")  # family, state, timer, retrans (then the sockid)
_MSG_TAIL = struct.Struct("=IIIII")  # expires, rqueue, wqueue, uid, inode
NO_COOKIE = 0xFFFFFFFF


def diag_request(local: Address, remote: Address, seq: int = 1) -> bytes:
    """A sock_diag request for the one TCP socket whose local end is `local`, remote `remote`."""
    v6 = ":" in local[0] or ":" in remote[0]
    family = socket.AF_INET6 if v6 else socket.AF_INET

    def raw(host: str) -> bytes:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
        if v6 and ip.version == 4:
            ip = ipaddress.IPv6Address(f"::ffff:{ip}")
        return ip.packed.ljust(16, b"\0")

    body = (
        _REQ.pack(family, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF)
        + _SOCKID.pack(local[1], remote[1], raw(local[0]), raw(remote[0]))
        + _SOCKID_TAIL.pack(0, NO_COOKIE, NO_COOKIE)
    )
    return (
        _NLMSGHDR.pack(_NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, seq, 0)
        + body
    )


def diag_owner(reply: bytes, request: bytes) -> int | None:
    """The uid in a sock_diag reply to `request`; None for an error (no such socket), another
    socket than the one asked for (the kernel's look-up falls back to a listener on the local
    address), or a socket that no process holds (inode 0)."""
    if len(reply) < _NLMSGHDR.size:
        return None
    _, kind, _, _, _ = _NLMSGHDR.unpack_from(reply)
    if kind != SOCK_DIAG_BY_FAMILY:
        return None  # NLMSG_ERROR: no such socket
    asked = _NLMSGHDR.size + _REQ.size
    found = _NLMSGHDR.size + _MSG.size
    if reply[found : found + _SOCKID.size] != request[asked : asked + _SOCKID.size]:
        return None  # not the exact 4-tuple: a listener, or nothing we asked about
    at = found + _SOCKID.size + _SOCKID_TAIL.size
    if len(reply) < at + _MSG_TAIL.size:
        return None
    *_, uid, inode = _MSG_TAIL.unpack_from(reply, at)
    return uid if inode else None


class DiagUnavailable(Exception):
    pass


def netlink_owner(local: Address, remote: Address) -> int | None:
    try:
        request = diag_request(local, remote)
    except ValueError:
        return None
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as s:
            s.settimeout(1.0)
            s.send(request)
            reply = s.recv(8192)
    except OSError as e:
        raise DiagUnavailable(str(e)) from None
    if len(reply) >= _NLMSGHDR.size + 4 and _NLMSGHDR.unpack_from(reply)[1] == NLMSG_ERROR:
        error = -struct.unpack_from("=i", reply, _NLMSGHDR.size)[0]
        if error not in (0, 2):  # ENOENT: no such socket; anything else: cannot ask this way
            raise DiagUnavailable(os.strerror(error))
        return None
    return diag_owner(reply, request)


def linux_owner(local: Address, remote: Address) -> int | None:
    try:
        return netlink_owner(local, remote)
    except DiagUnavailable:
        return table_owner(local, remote)


def table_owner(local: Address, remote: Address) -> int | None:
    v6_first = ":" in local[0]
    tables = PROC_TABLES[::-1] if v6_first else PROC_TABLES
    for table in tables:
        v6 = table.name == "tcp6"
        if not v6 and ":" in local[0]:
            continue
        try:
            text = table.read_text()
        except OSError:
            continue
        uid = owner_in_table(text, local, remote, v6)
        if uid is not None:
            return uid
    return None


def lsof_owner_in(output: str, remote: Address) -> int | None:
    """The uid in `lsof -nP -iTCP@host:port -F un` output whose connection goes to `remote`
    (lsof's `n` field is `local->remote`)."""
    uid: int | None = None
    want = f"->{remote[0]}:{remote[1]}"
    want6 = f"->[{remote[0]}]:{remote[1]}"
    for line in output.splitlines():
        if line.startswith("u") and line[1:].isdigit():
            uid = int(line[1:])
        elif line.startswith("p"):
            uid = None
        elif line.startswith("n") and (line.endswith(want) or line.endswith(want6)):
            return uid
    return None


def macos_owner(local: Address, remote: Address) -> int | None:
    host = f"[{local[0]}]" if ":" in local[0] else local[0]
    try:
        found = subprocess.run(
            ["/usr/sbin/lsof", "-nP", f"-iTCP@{host}:{local[1]}", "-Fpun"],
            capture_output=True,
            text=True,
            timeout=LSOF_TIMEOUT,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return lsof_owner_in(found.stdout, remote)


def socket_owner(local: Address, remote: Address) -> int | None:
    """The uid owning the TCP socket whose local end is `local` and remote end `remote`
    (for the gateway: the client's socket, local = the client's address); None when the OS
    cannot tell (then nobody is vouched for)."""
    if sys.platform.startswith("linux"):
        return linux_owner(local, remote)
    if sys.platform == "darwin":
        return macos_owner(local, remote)
    return None


def is_loopback_address(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback
