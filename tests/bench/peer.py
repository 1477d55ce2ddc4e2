"""What the peer check costs per connection: `python -m tests.bench.peer` (Linux).

Both ways of asking the kernel who owns the client's socket, with 1, 100 and 1,000 other open
connections on the machine (the /proc tables grow with every socket; netlink does not)."""

from __future__ import annotations

import os
import socket
import time

from cao.config.peer import netlink_owner, table_owner


def main(rounds: int = 200) -> None:
    for n in (1, 100, 1000):
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(2048)
        pairs = []
        for _ in range(n):
            client = socket.create_connection(server.getsockname())
            pairs.append((client, server.accept()[0]))
        peer, gateway = pairs[-1][1].getpeername(), server.getsockname()
        with open("/proc/net/tcp") as table:
            rows = sum(1 for _ in table) - 1
        line = f"{n:5d} connections ({rows} rows in /proc/net/tcp):"
        for name, lookup in (("netlink", netlink_owner), ("/proc", table_owner)):
            started = time.perf_counter()
            for _ in range(rounds):
                assert lookup(peer, gateway) == os.geteuid()
            line += f"  {name} {(time.perf_counter() - started) / rounds * 1e6:8.1f} µs"
        print(line)
        for client, accepted in pairs:
            client.close()
            accepted.close()
        server.close()


if __name__ == "__main__":
    main()
