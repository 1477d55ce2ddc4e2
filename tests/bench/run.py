"""`make bench`: what the gateway and the CLI cost, against a direct run measured in the same run.

Not a test: it prints a markdown table (each figure, its ratio to direct, the target) and writes
the raw numbers as JSON under bench/results/. It fails only when something does not work at all.

Everything listens on 127.0.0.1 and is stopped at the end. Direct and gateway requests are
interleaved one by one, so drift of the machine hits both sides alike.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.bench.websocket import TOOL_CALLS, codex_path, frame_rows, relay_cost, tool_turns
from tests.fakes.upstream import Answer, FakeUpstream
from tests.gateway_proc import GatewayProcess
from tests.helpers import CAO, REPO, cao_env, write_account
from tests.procinfo import cpu_seconds, rss_mib

RESULTS = REPO / "bench" / "results"
MODEL = "/backend-api/codex/responses"
SMALL = "/backend-api/codex/bench"
STATUS = "/__cao/status"  # a model path the fake answers with a small JSON 200


@dataclass
class Row:
    measure: str
    unit: str
    direct: float | None
    gateway: float | None
    target: str = ""
    ok: bool | None = None

    @property
    def added(self) -> float | None:
        if self.direct is None or self.gateway is None:
            return None
        return self.gateway - self.direct

    @property
    def ratio(self) -> float | None:
        if not self.direct or self.gateway is None:
            return None
        return self.gateway / self.direct


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(seconds: float) -> float:
    return seconds * 1000.0


# -- the gateway process ---------------------------------------------------------------------


def data_dir_with(root: Path, names: list[str]) -> Path:
    root.mkdir(mode=0o700, parents=True)
    for name in names:
        write_account(root, name)
    return root


# -- measurements ----------------------------------------------------------------------------


def keepalive_post(
    direct_url: str, gateway_url: str, bare_url: str, n: int, pid: int
) -> tuple[list[Row], float]:
    """Small POSTs on one keep-alive connection each: direct, through the gateway, and through
    a bare mitmdump (no addon), which tells mitmproxy's own cost from the addon's."""
    body = b'{"input": "small"}'
    headers = {"content-type": "application/json", "session-id": "bench-post",
               "chatgpt-account-id": "acct-a", "authorization": "Bearer bench"}  # fmt: skip
    urls = {"direct": direct_url, "gateway": gateway_url, "bare": bare_url}
    times: dict[str, list[float]] = {side: [] for side in urls}
    clients = {side: httpx.Client(base_url=url) for side, url in urls.items()}
    try:
        for client in clients.values():  # warm up: connections made, code paths loaded
            for _ in range(20):
                client.post(SMALL, content=body, headers=headers).raise_for_status()
        cpu_before = cpu_seconds(pid)
        for _ in range(n):
            for side in ("direct", "gateway"):
                started = time.perf_counter()
                clients[side].post(SMALL, content=body, headers=headers).raise_for_status()
                times[side].append(time.perf_counter() - started)
        cpu = cpu_seconds(pid) - cpu_before
        for _ in range(n):
            for side in ("direct", "bare"):
                started = time.perf_counter()
                clients[side].post(SMALL, content=body, headers=headers).raise_for_status()
                times[side].append(time.perf_counter() - started)
    finally:
        for client in clients.values():
            client.close()
    d, g, b = (statistics.median(times[side]) for side in ("direct", "gateway", "bare"))
    rows = [
        Row("keep-alive POST, median", "ms", ms(d), ms(g), "adds <= 2 ms", ms(g) - ms(d) <= 2.0),
        Row("keep-alive POST, p99", "ms", ms(pct(times["direct"], 0.99)),
            ms(pct(times["gateway"], 0.99))),
        Row("keep-alive POST, median: bare mitmdump (no addon)", "ms", ms(d), ms(b)),
        Row("keep-alive POST, median: cao addon alone (gateway - bare)", "ms", None,
            ms(g) - ms(b), "<= 2 ms", ms(g) - ms(b) <= 2.0),
    ]  # fmt: skip
    return rows, cpu / n


def bare_mitmdump(upstream_url: str, confdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """mitmdump in the same reverse mode as the gateway, without cao's addon."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "mitmdump"), "-q",
         "--mode", f"reverse:{upstream_url}@127.0.0.1:{port}",
         "--set", f"confdir={confdir}", "--set", "flow_detail=0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/ready", timeout=1)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("bare mitmdump did not start")


def read_stream(
    client: httpx.Client, url: str, headers: dict[str, str], content: bytes = b"{}"
) -> tuple[float, float, int, int]:
    """(time to first event, time to last byte, events, status) for one SSE request."""
    started = time.perf_counter()
    first = None
    events = 0
    with client.stream("POST", url, content=content, headers=headers) as response:
        status = response.status_code
        for chunk in response.iter_raw():
            if first is None:
                first = time.perf_counter() - started
            events += chunk.count(b"\n\n")
    return first or float("nan"), time.perf_counter() - started, events, status


def sse_turns(direct_url: str, gateway_url: str, n: int, events: int) -> list[Row]:
    headers = {"accept": "text/event-stream", "session-id": "bench-sse",
               "chatgpt-account-id": "acct-a", "authorization": "Bearer bench"}  # fmt: skip
    first: dict[str, list[float]] = {"direct": [], "gateway": []}
    per_event: dict[str, list[float]] = {"direct": [], "gateway": []}
    with httpx.Client(base_url=direct_url) as direct, httpx.Client(base_url=gateway_url) as gw:
        for client in (direct, gw):
            read_stream(client, MODEL, headers)
        for _ in range(n):
            for side, client in (("direct", direct), ("gateway", gw)):
                ttfe, total, got, status = read_stream(client, MODEL, headers)
                assert status == 200 and got >= events, (side, status, got)
                first[side].append(ttfe)
                per_event[side].append((total - ttfe) / (got - 1))
    d, g = statistics.median(first["direct"]), statistics.median(first["gateway"])
    return [
        Row(f"SSE turn ({events} events), time to first event", "ms", ms(d), ms(g),
            "adds <= 2 ms", ms(g) - ms(d) <= 2.0),
        Row("SSE turn, per-event delay", "ms", ms(statistics.median(per_event["direct"])),
            ms(statistics.median(per_event["gateway"]))),
    ]  # fmt: skip


def concurrent_streams(url: str, streams: int, per_stream: int, events: int) -> dict[str, Any]:
    """`streams` clients at once, each reading `per_stream` SSE turns in a row."""
    errors: list[str] = []
    delivered = [0] * streams
    headers = {"accept": "text/event-stream", "chatgpt-account-id": "acct-a",
               "authorization": "Bearer bench"}  # fmt: skip

    def client_loop(index: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            for turn in range(per_stream):
                try:
                    _, _, got, status = read_stream(
                        client, MODEL, {**headers, "session-id": f"c{index}-{turn}"}
                    )
                except httpx.HTTPError as e:
                    errors.append(type(e).__name__)
                    continue
                if status != 200:
                    errors.append(f"http {status}")
                delivered[index] += got

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(streams)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    # + created, added, done, completed; + the reasoning item's added and done
    expected = streams * per_stream * (events + 6)
    return {
        "seconds": elapsed,
        "streams_per_second": streams * per_stream / elapsed,
        "errors": len(errors),
        "events_delivered": sum(delivered),
        "events_expected": expected,
    }


def make_usable_again(gw: GatewayProcess, name: str) -> None:
    """Lift the account's cooldown on disk, and wait until the gateway sees it usable (its own
    state writes trail its answers by a few ms)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        (gw.data_dir / "cao-state.json").unlink(missing_ok=True)
        accounts = httpx.get(gw.base + "/__cao/status").json()["accounts"]
        if next(a for a in accounts if a["name"] == name)["status"] == "usable":
            return
        time.sleep(0.01)
    raise RuntimeError(f"account {name} stayed unusable: {accounts}")


def failover(upstream: FakeUpstream, gateways: dict[str, GatewayProcess], n: int) -> list[Row]:
    """A answers the usage-limit 429, B streams: until B's first event, through the gateway
    (both retry modes, usage polling on as by default, and redirect with polling off) against
    A's 429 plus B's first event, directly."""
    upstream.defaults["acct-a"] = Answer("quota")
    upstream.defaults["acct-b"] = Answer(events=5)
    base = {"accept": "text/event-stream", "authorization": "Bearer bench"}
    direct_times: list[float] = []
    through: dict[str, list[float]] = {mode: [] for mode in FAILOVER_MODES}
    clients = {
        mode: httpx.Client(base_url=gateways[mode].base, follow_redirects=True)
        for mode in FAILOVER_MODES
    }
    with httpx.Client(base_url=upstream.url) as direct:
        for i in range(n + 1):
            direct_times.append(direct_failover(direct, base))
            for mode in FAILOVER_MODES:
                gw = gateways[mode]
                make_usable_again(gw, "a")
                hits = len([r for r in upstream.model_requests() if r.account_id == "acct-a"])
                ttfe, _, got, status = read_stream(
                    clients[mode], MODEL, {**base, "session-id": f"fo-{mode}-{i}"}
                )
                assert status == 200 and got > 0, (mode, status)
                after = len([r for r in upstream.model_requests() if r.account_id == "acct-a"])
                assert after == hits + 1, "the gateway did not try account a first"
                through[mode].append(ttfe)
    for client in clients.values():
        client.close()
    upstream.defaults.clear()
    d = statistics.median(direct_times[1:])
    g = {mode: statistics.median(values[1:]) for mode, values in through.items()}
    rows = []
    for mode in FAILOVER_MODES:
        target = "adds <= 5 ms" if mode == "redirect" else ""
        ok = ms(g[mode]) - ms(d) <= 5.0 if mode == "redirect" else None
        rows.append(Row(f"failover A 429 -> B first event ({mode})", "ms", ms(d), ms(g[mode]),
                        target, ok))  # fmt: skip
    polling = ms(g["redirect"]) - ms(g["redirect, polling off"])
    rows.append(Row("failover: usage polling on - off (redirect)", "ms", None, polling,
                    "<= 1 ms", polling <= 1.0))  # fmt: skip
    return rows


# The failover rows, measured side by side: gateways started with their defaults (usage polling
# every 300 s), and one with polling off.
FAILOVER_MODES = ("redirect", "redirect, polling off", "inline")


def direct_failover(direct: httpx.Client, base: dict[str, str]) -> float:
    """A's 429 and B's first event, straight from the upstream."""
    started = time.perf_counter()
    r = direct.post(MODEL, content=b"{}", headers={**base, "chatgpt-account-id": "acct-a"})
    assert r.status_code == 429
    limit = time.perf_counter() - started
    ttfe, _, _, status = read_stream(direct, MODEL, {**base, "chatgpt-account-id": "acct-b"})
    assert status == 200
    return limit + ttfe


def fresh_failover(upstream: FakeUpstream, root: Path, n: int) -> list[Row]:
    """The first failover of a freshly started gateway (half a second after it listens, its
    start-up done), whose switch wakes the usage poller (its first read of both accounts), with
    polling on and off, gateways started alternately."""
    upstream.defaults["acct-a"] = Answer("quota")
    upstream.defaults["acct-b"] = Answer(events=5)
    base = {"accept": "text/event-stream", "authorization": "Bearer bench"}
    times: dict[str, list[float]] = {"300": [], "0": []}
    direct_times = []
    with httpx.Client(base_url=upstream.url) as direct:
        for i in range(n):
            direct_times.append(direct_failover(direct, base))
            for interval, values in times.items():
                data_dir = data_dir_with(root / f"fresh-{interval}-{i}", ["a", "b"])
                with GatewayProcess(data_dir, upstream.url, "--usage-interval", interval) as gw:
                    time.sleep(0.5)
                    with httpx.Client(base_url=gw.base, follow_redirects=True) as client:
                        client.get(STATUS)  # the client's connection is open, as Codex's is
                        ttfe, _, got, status = read_stream(client, MODEL, base)
                    assert status == 200 and got > 0, status
                    values.append(ttfe)
                    time.sleep(0.2)  # the poll it woke runs before the gateway stops
    upstream.defaults.clear()
    d = statistics.median(direct_times)
    on, off = (statistics.median(times[k]) for k in ("300", "0"))
    return [
        Row("first failover of a fresh gateway, polling on", "ms", ms(d), ms(on)),
        Row("first failover of a fresh gateway, polling off", "ms", ms(d), ms(off)),
        Row("first failover: usage polling on - off", "ms", None, ms(on) - ms(off), "<= 1 ms",
            ms(on) - ms(off) <= 1.0),
    ]  # fmt: skip


def history_of(size: int, foreign: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A Codex-like input of about `size` bytes: user and assistant messages, with the reasoning
    items another account minted spread through it."""
    items: list[dict[str, Any]] = []
    text = "x" * 4000
    n = size // 4100
    for i in range(n):
        role = "user" if i % 2 == 0 else "assistant"
        kind = "input_text" if role == "user" else "output_text"
        items.append({"type": "message", "role": role, "content": [{"type": kind, "text": text}]})
        if foreign and i % max(1, n // len(foreign)) == 0 and len(items) < n + len(foreign):
            items.append(foreign[(i // max(1, n // len(foreign))) % len(foreign)])
    return items


def moved_history(upstream: FakeUpstream, gw: GatewayProcess, n: int) -> list[Row]:
    """A conversation whose ~1 MB history holds account a's reasoning, now served by b: each
    request is decoded, stripped of a's items and re-encoded by the gateway. Direct: the same
    history, already stripped, posted to b."""
    from mitmproxy.net.encoding import encode_zstd

    make_usable_again(gw, "a")
    conversation = "bench-history"
    base = {"accept": "text/event-stream", "content-type": "application/json",
            "content-encoding": "zstd", "authorization": "Bearer bench"}  # fmt: skip
    through = {**base, "session-id": conversation, "thread-id": conversation}
    minted: list[dict[str, Any]] = []
    with httpx.Client(base_url=gw.base, follow_redirects=True) as client:
        for _ in range(10):  # turns on a: the gateway learns a's blobs from the stream
            response = client.post(MODEL, content=encode_zstd(b'{"input":[]}'), headers=through)
            minted += [
                e["item"]
                for e in _events(response.content)
                if (e.get("item") or {}).get("encrypted_content")
            ]
        assert minted, "a minted nothing"
        history = history_of(1 << 20, minted)
        body = encode_zstd(json.dumps({"input": history, "store": False}).encode())
        stripped = [i for i in history if i.get("type") != "reasoning"]
        direct_body = encode_zstd(json.dumps({"input": stripped, "store": False}).encode())
        upstream.queue("acct-a", Answer("quota"))  # a is out: the conversation moves to b
        _, _, _, status = read_stream(client, MODEL, through, body)
        assert status == 200, status
        times: dict[str, list[float]] = {"direct": [], "gateway": []}
        with httpx.Client(base_url=upstream.url) as direct:
            for _ in range(n):
                ttfe, _, _, status = read_stream(
                    direct, MODEL, {**base, "chatgpt-account-id": "acct-b"}, direct_body
                )
                assert status == 200, status
                times["direct"].append(ttfe)
                ttfe, _, _, status = read_stream(client, MODEL, through, body)
                assert status == 200, status
                times["gateway"].append(ttfe)
    assert not upstream.rejected, "b refused a rewritten history"
    d, g = statistics.median(times["direct"]), statistics.median(times["gateway"])
    raw = json.dumps({"input": history}).encode()
    book_ms = rewrite_cost(raw, minted, n)
    mb = len(raw) / 1e6
    return [
        Row(f"moved conversation, {mb:.1f} MB history (zstd): first event", "ms", ms(d), ms(g)),
        Row(f"history rewrite alone, {mb:.1f} MB: decode, strip, re-encode", "ms", None, book_ms),
    ]


def _events(body: bytes) -> list[dict[str, Any]]:
    from cao.addons.stream import sse_events

    return list(sse_events(body.replace(b"\r\n", b"\n")))


def rewrite_cost(raw: bytes, minted: list[dict[str, Any]], n: int) -> float:
    """HistoryBook.prepare on the same request, in this process (median ms)."""
    from mitmproxy.net.encoding import encode_zstd
    from mitmproxy.test import tutils

    from cao.addons.blobs import HistoryBook
    from cao.addons.decision import FlowDecision
    from cao.addons.routing import ConversationMap

    book = HistoryBook(ConversationMap())
    for item in minted:
        book.learn("a", "t", {"item": item})
    encoded = encode_zstd(raw)
    times = []
    for _ in range(n):
        request = tutils.treq(method=b"POST", path=MODEL.encode())
        request.headers["content-encoding"] = "zstd"
        request.raw_content = encoded
        started = time.perf_counter()
        book.prepare(request, FlowDecision(started=0.0, account="b", conversation="t"), "b")
        times.append(time.perf_counter() - started)
        assert request.raw_content != encoded
    return ms(statistics.median(times))


def wall_times(argv: list[str], env: dict[str, str], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       stdin=subprocess.DEVNULL, check=True)  # fmt: skip
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def cli_rows(root: Path, runs: int) -> list[Row]:
    data = data_dir_with(root, [f"account{i:02d}" for i in range(20)])
    env = cao_env(data)
    python = wall_times([sys.executable, "-c", "pass"], env, runs)
    rows = []
    for args in (["list"], ["status", "--json"]):
        t = wall_times([*CAO, *args], env, runs)
        rows.append(Row(f"`cao {' '.join(args)}`, 20 accounts (direct = bare python)", "ms",
                        ms(python), ms(t), "< 300 ms", ms(t) < 300))  # fmt: skip
    return rows


# A stand-in for Codex printing 20 MB: 1 KiB lines, as a TUI redraw would come.
PRINTER = (
    "import sys\n"
    "chunk = b'x' * 1023 + b'\\n'\n"
    "for _ in range(20 * 1024):\n"
    "    sys.stdout.buffer.write(chunk)\n"
    "sys.stdout.buffer.flush()\n"
)


def pty_read_all(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Run `argv` as the session leader of a fresh pty and read it to EOF: (seconds from the
    first byte to the last, bytes). Start-up is left out: `cao list` measures that."""
    import fcntl
    import termios

    master, slave = os.openpty()
    proc = subprocess.Popen(
        argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True,
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
    )  # fmt: skip
    os.close(slave)
    total = 0
    first = None
    while True:
        try:
            data = os.read(master, 1 << 16)
        except OSError:
            break
        if not data:
            break
        if first is None:
            first = time.perf_counter()
        total += len(data)
    elapsed = time.perf_counter() - (first or time.perf_counter())
    proc.wait(60)
    os.close(master)
    return elapsed, total


def pty_relay(root: Path, runs: int) -> Row:
    data = data_dir_with(root, ["a"])
    printer = root / "print-20mb"
    printer.write_text(f"#!{sys.executable}\n{PRINTER}")
    printer.chmod(0o755)
    env = {**cao_env(data), "TERM": "xterm"}
    direct, relayed = [], []
    size = 0
    for _ in range(runs):
        seconds, size = pty_read_all([str(printer)], env)
        direct.append(size / seconds / 1e6)
        seconds, got = pty_read_all([*CAO, "run", "--codex", str(printer)], env)
        assert got >= size, (got, size)
        relayed.append(got / seconds / 1e6)
    d, g = statistics.median(direct), statistics.median(relayed)
    return Row(f"`cao run` PTY relay, {size / 1e6:.0f} MB", "MB/s", d, g, ">= 50 % of direct",
               g >= 0.5 * d)  # fmt: skip


# -- report ----------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(rows: list[Row]) -> str:
    lines = [
        "| measure | unit | direct | gateway / cao | added | ratio | target | met |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        met = "" if r.ok is None else ("yes" if r.ok else "**no**")
        lines.append(
            f"| {r.measure} | {r.unit} | {fmt(r.direct)} | {fmt(r.gateway)} | {fmt(r.added)} "
            f"| {fmt(r.ratio)} | {r.target} | {met} |"
        )
    return "\n".join(lines)


def machine() -> str:
    cpu = "unknown cpu"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def step(name: str, fn: Callable[[], Any]) -> Any:
    print(f"bench: {name} ...", file=sys.stderr, flush=True)
    return fn()


def main() -> int:
    quick = os.environ.get("CAO_BENCH_QUICK") == "1"  # a smoke run, for the test suite
    n_post, n_sse, n_fail, runs = (30, 10, 5, 2) if quick else (400, 60, 40, 7)
    streams, per_stream = (20, 2) if quick else (20, 10)
    rows: list[Row] = []
    raw: dict[str, Any] = {"machine": machine(), "started": time.time(), "quick": quick}
    with tempfile.TemporaryDirectory(prefix="cao-bench-") as tmp:
        root = Path(tmp)
        upstream = FakeUpstream().start()
        polling = ("--usage-interval", "300")  # the default (tests start with polling off)
        gateways = {
            "redirect": GatewayProcess(
                data_dir_with(root / "redirect", ["a", "b"]), upstream.url, *polling
            ),
            "redirect, polling off": GatewayProcess(
                data_dir_with(root / "polling-off", ["a", "b"]), upstream.url
            ),
            "inline": GatewayProcess(
                data_dir_with(root / "inline", ["a", "b"]), upstream.url, "--retry-mode",
                "inline", *polling,
            ),
        }  # fmt: skip
        bare, bare_url = bare_mitmdump(upstream.url, root / "bare-confdir")
        try:
            for gw in gateways.values():
                gw.start()
            gw = gateways["redirect"]
            pid = gw.pid  # `cao gateway start` execs mitmdump: the same process
            time.sleep(0.5)
            raw["rss_idle_mib"] = rss_mib(pid)
            post_rows, cpu_per_request = step(
                "keep-alive POST",
                lambda: keepalive_post(upstream.url, gw.base, bare_url, n_post, pid),
            )
            rows += post_rows
            upstream.defaults[None] = Answer(events=50)
            rows += step("SSE turns", lambda: sse_turns(upstream.url, gw.base, n_sse, 50))
            conc: dict[str, Any] = {}
            for side, url in (("direct", upstream.url), ("gateway", gw.base)):
                conc[side] = step(
                    f"{streams} concurrent streams, {side}",
                    lambda url=url: concurrent_streams(url, streams, per_stream, 50),
                )
            upstream.defaults.clear()
            raw["concurrent"] = conc
            errors = conc["gateway"]["errors"]
            complete = conc["gateway"]["events_delivered"] == conc["gateway"]["events_expected"]
            rows.append(Row(f"{streams} concurrent SSE streams, throughput", "streams/s",
                            conc["direct"]["streams_per_second"],
                            conc["gateway"]["streams_per_second"],
                            "no errors, all events", errors == 0 and complete))  # fmt: skip
            rows += step("failover", lambda: failover(upstream, gateways, n_fail))
            rows += step(
                "first failover of fresh gateways",
                lambda: fresh_failover(upstream, root, 2 if quick else 9),
            )
            rows += step("moved history", lambda: moved_history(upstream, gw, n_fail))
            rows += step("WebSocket frames", lambda: frame_rows(root / "ws-frames", n_sse * 3))
            rows += step("WebSocket relay addon", lambda: relay_cost(root / "ws-relay", n_post))
            peak = rss_mib(pid, "VmHWM")
            raw["rss_after_mib"] = rss_mib(pid)
            raw["rss_peak_mib"] = peak
            raw["cpu_ms_per_request"] = ms(cpu_per_request)
            rows.append(Row("gateway RSS idle", "MiB", None, raw["rss_idle_mib"], "< 100 MiB",
                            raw["rss_idle_mib"] < 100))  # fmt: skip
            rows.append(Row("gateway RSS peak", "MiB", None, peak, "< 100 MiB", peak < 100))
            rows.append(Row("gateway CPU per request", "ms", None, raw["cpu_ms_per_request"]))
        finally:
            for gw in gateways.values():
                gw.stop()
            bare.terminate()
            bare.wait(10)
            upstream.stop()
        codex = codex_path()
        if codex is not None:
            ws_rows, raw["codex_turns"] = step(
                f"Codex {TOOL_CALLS}-tool-call turns (WebSocket / HTTP)",
                lambda: tool_turns(root / "codex", codex, runs),
            )
            rows += ws_rows
        else:
            print("bench: the real Codex is not installed (make codex): no Codex turn rows")
        rows += step("cao list / status", lambda: cli_rows(root / "cli", runs))
        rows.append(step("cao run PTY relay", lambda: pty_relay(root / "pty", max(3, runs))))
    raw["rows"] = [{**asdict(r), "added": r.added, "ratio": r.ratio} for r in rows]
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / time.strftime("bench-%Y%m%d-%H%M%S.json")
    out.write_text(json.dumps(raw, indent=2) + "\n")
    print(f"\nMachine: {raw['machine']}\n")
    print(table(rows))
    print(f"\nraw numbers: {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
