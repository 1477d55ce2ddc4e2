"""No local user can stop the gateway (issue 18), against a real `cao gateway start`: a flood of
idle connections from another OS user, a 96 MB header, 400 long conversation ids, connections
that never send a request, and the log through all of it."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.fakes.upstream import FakeUpstream
from tests.gateway_proc import GatewayProcess
from tests.helpers import write_account
from tests.other_user import other_user
from tests.procinfo import rss_mib

MODEL = "/backend-api/codex/responses"


def turn(gw: GatewayProcess, conversation: str = "c1", timeout: float = 30) -> httpx.Response:
    return httpx.post(
        gw.base + MODEL, content=b"{}", headers={"session-id": conversation}, timeout=timeout
    )


def log_bytes(gw: GatewayProcess) -> int:
    return len(gw.output.encode())


# Two processes of the other user, 600 connections each, held open without a byte sent.
FLOOD = r"""
import os, socket, sys, time
held = []
for _ in range(600):
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", PORT))
        held.append(s)
    except OSError:
        s.close()
closed = 0
for s in held:
    try:
        closed += s.recv(1) == b""
    except OSError:
        closed += 1
print(len(held), closed, flush=True)
time.sleep(HOLD)
"""


def test_another_users_idle_flood_does_not_stop_the_users_codex(
    data_dir: Path, upstream: FakeUpstream
) -> None:
    """As the issue found it: soft limit 1024 (here the hard one is 20000)."""
    write_account(data_dir, "a")
    gw = GatewayProcess(data_dir, upstream.url)
    gw.command = ["prlimit", "--nofile=1024:20000", "--", *gw.command]
    results: list[str] = []
    with gw, other_user() as user:
        limits = Path(f"/proc/{gw.pid}/limits").read_text()
        assert "Max open files            20000" in limits, limits  # raised at start
        assert turn(gw, "warm").status_code == 200
        script = FLOOD.replace("PORT", str(gw.port)).replace("HOLD", "10")
        floods = [
            threading.Thread(target=lambda: results.append(user.run(script, timeout=60).stdout))
            for _ in range(2)
        ]
        for flood in floods:
            flood.start()
        time.sleep(3)  # the 1,200 connections are being made and held
        started = time.monotonic()
        answer = turn(gw, "during", timeout=10)
        took = time.monotonic() - started
        for flood in floods:
            flood.join(60)
    assert answer.status_code == 200 and took < 5, took
    # Every connection of the other user was closed by the gateway at once, none held.
    counts = [tuple(map(int, r.split())) for r in results]
    assert len(counts) == 2 and all(made == closed for made, closed in counts), counts
    assert log_bytes(gw) < 1 << 20
    assert "Errno 24" not in gw.output and "Traceback" not in gw.output
    assert sum("refused" in line for line in gw.lines) <= 3  # one line, not 1,200


def big_head(gw: GatewayProcess, size: int, header: str = "x-big") -> bytes:
    """A request whose one header line is `size` bytes, sent while reading the answer."""
    head = f"POST {MODEL} HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\n{header}: "
    piece = b"a" * (1 << 20)
    sent, answer = 0, b""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(head.encode())
        while sent < size and not answer:
            s.setblocking(False)
            try:
                answer = s.recv(4096)
            except BlockingIOError:
                pass
            s.setblocking(True)
            s.settimeout(3)
            try:
                s.sendall(piece[: size - sent])
            except (TimeoutError, OSError):
                break
            sent += len(piece)
        s.settimeout(3)
        while b"\r\n\r\n" not in answer:
            try:
                chunk = s.recv(4096)
            except (TimeoutError, OSError):
                break
            if not chunk:
                break
            answer += chunk
    return answer


def test_a_96_mb_header_gets_431_without_being_held(
    gw: GatewayProcess, upstream: FakeUpstream
) -> None:
    answer = big_head(gw, 96 << 20)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
    assert b"application/json" in answer
    assert rss_mib(gw.pid, "VmHWM") < 150
    assert not upstream.model_requests()
    assert turn(gw).status_code == 200  # and it goes on serving
    # A head of Codex's size (a few KB of headers) is served.
    assert httpx.post(gw.base + MODEL, content=b"{}", headers={"x-pad": "p" * 8000}).is_success


def test_400_long_conversation_ids_keep_memory_flat(
    gw: GatewayProcess, upstream: FakeUpstream
) -> None:
    """256 KB ids are larger than a head may be (431); 30 KB ones fit in a head and are
    refused by the id limit (400). Nothing is kept for either."""
    with ThreadPoolExecutor(8) as pool:
        big = list(pool.map(lambda n: big_head(gw, 256 << 10, "session-id"), range(400)))
        fitting = list(
            pool.map(lambda n: turn(gw, f"{n:05d}" + "i" * (30 << 10)).status_code, range(100))
        )
    assert all(a.startswith(b"HTTP/1.1 431") for a in big)
    assert set(fitting) == {400}
    assert rss_mib(gw.pid, "VmHWM") < 150
    assert not upstream.model_requests()
    assert turn(gw, "a" * 36).status_code == 200  # a UUID-sized id is fine
    assert log_bytes(gw) < 1 << 20


def test_a_connection_that_sends_no_request_is_closed(gw: GatewayProcess) -> None:
    with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as silent:
        with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as slow:
            slow.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")  # a head never finished
            started = time.monotonic()
            assert silent.recv(10) == b""
            assert slow.recv(10) == b""
            took = time.monotonic() - started
    assert 5 < took < 20, took
    assert turn(gw).status_code == 200
