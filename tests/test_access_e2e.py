"""Each attack of issue 12 played against a real `cao gateway start` (mitmdump + cao's addon) in
front of the fake backend: a web page, a DNS-rebinding page, a process without the key, dot
segments, broken locks and files, concurrent 401s and oversized bodies. Each is refused or
handled, and the fake's log shows no pool token used where none may be."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.fakes.upstream import FakeUpstream
from tests.gateway_proc import GatewayProcess
from tests.helpers import cao_env, remember, run_cao, write_account
from tests.other_user import other_user
from tests.procinfo import rss_mib
from tests.test_refresh_e2e import refresh_calls, refreshed_tokens

MODEL = "/backend-api/codex/responses"


def raw_request(gw: GatewayProcess, head: str, body: bytes = b"") -> tuple[int, str]:
    """Bytes on a socket, as an attacker sends them (no client library fixes the path)."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    status_line, _, rest = data.decode("latin-1").partition("\r\n")
    return int(status_line.split()[1]), rest


def pool_tokens(data_dir: Path) -> set[str]:
    return {
        json.loads((data_dir / n / "auth.json").read_text())["tokens"]["access_token"]
        for n in ("a", "b")
    }


def no_pool_token_upstream(upstream: FakeUpstream, data_dir: Path) -> bool:
    tokens = pool_tokens(data_dir)
    return not any(r.token in tokens for r in upstream.requests)


def key_path(gw: GatewayProcess) -> str:
    return gw.keyed.split(f":{gw.port}", 1)[1]  # /cao/<key>


def test_a_web_page_gets_403_and_nothing_goes_upstream(
    gw: GatewayProcess, upstream: FakeUpstream, data_dir: Path
) -> None:
    # fetch(..., {mode: "no-cors"}) from any page: a foreign Origin, cross-site. The browser is
    # this user's process, so the OS check passes: the browser rules must hold on their own.
    page = {"origin": "https://evil.example", "sec-fetch-site": "cross-site",
            "content-type": "text/plain"}  # fmt: skip
    for url, headers in (
        (gw.url + MODEL, page),
        (gw.url + "/cao/guessed-key-0000000000000000000000000000000000" + MODEL, {}),
        (gw.keyed + MODEL, page),  # even with the key: a browser is refused
        (gw.base + MODEL, {"sec-fetch-site": "same-site"}),
        (gw.base + MODEL, {"origin": "null"}),
    ):
        answer = httpx.post(url, content=b"{}", headers=headers)
        assert answer.status_code == 403, (url, headers)
        assert not any(h.lower().startswith("access-control") for h in answer.headers)
    assert httpx.options(gw.base + MODEL).status_code == 403
    for path in ("/__cao/status", key_path(gw) + "/__cao/status"):
        answer = httpx.get(gw.url + path, headers={"origin": "https://evil.example"})
        assert answer.status_code == 403 and "example.com" not in answer.text
    assert upstream.requests == []
    assert "guessed-key" not in gw.output and "/cao/…/" in gw.output  # the log hides keys
    # This user's own process: the plain URL and an old keyed one both work.
    assert httpx.get(gw.url + "/__cao/status").status_code == 200
    assert httpx.get(gw.keyed + "/__cao/status").status_code == 200


def test_dns_rebinding_host_is_refused_before_anything_else(
    gw: GatewayProcess, upstream: FakeUpstream
) -> None:
    for host in (f"evil.example:{gw.port}", "evil.example", f"127.0.0.1:{gw.port + 1}", ""):
        status, _ = raw_request(gw, f"GET {key_path(gw)}/__cao/status HTTP/1.1\nHost: {host}\n\n")
        assert status in (400, 403), host
    for host in (f"127.0.0.1:{gw.port}", f"localhost:{gw.port}"):
        status, _ = raw_request(gw, f"GET {key_path(gw)}/__cao/status HTTP/1.1\nHost: {host}\n\n")
        assert status == 200, host
    assert upstream.requests == []


@pytest.mark.parametrize(
    "tail",
    [
        "/backend-api/codex/../wham/usage",
        "/backend-api/codex/..%2fwham/usage",
        "/backend-api/codex/%2e%2e/wham/usage",
        "/backend-api/codex/./responses",
        "/backend-api/codex%2fresponses",
        "/backend-api/codex/..\\wham",
    ],
)
def test_dot_segments_are_refused(
    gw: GatewayProcess, upstream: FakeUpstream, data_dir: Path, tail: str
) -> None:
    status, _ = raw_request(gw, f"GET {key_path(gw)}{tail} HTTP/1.1\nHost: 127.0.0.1:{gw.port}\n\n")
    assert status == 400
    assert upstream.requests == []


def test_only_codex_endpoints_get_a_pool_token(
    gw: GatewayProcess, upstream: FakeUpstream, data_dir: Path
) -> None:
    mine = {"authorization": "Bearer codex-own-token"}
    assert httpx.get(gw.base + "/backend-api/codex/other", headers=mine).status_code == 200
    assert httpx.get(gw.base + "/backend-api/wham/settings/user", headers=mine).status_code == 200
    assert [r.token for r in upstream.requests] == ["codex-own-token"] * 2
    # Codex's usage view is answered by the gateway (addons/usageview.py): the only upstream
    # read is the gateway's own, of the pool account's usage.
    assert httpx.get(gw.base + "/backend-api/wham/usage", headers=mine).status_code == 200
    own_reads = [r for r in upstream.requests if r.token == "codex-own-token"]
    assert len(own_reads) == 2
    assert httpx.post(gw.base + MODEL, content=b"{}", headers=mine).status_code == 200
    assert upstream.requests[-1].token in pool_tokens(data_dir)


def test_the_key_and_shim_stay_private_from_another_user(
    gw: GatewayProcess, data_dir: Path, tmp_path: Path
) -> None:
    key_file = data_dir / "gateway.key"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert oct(data_dir.stat().st_mode & 0o777) == "0o700"
    with other_user() as other:  # made for this test, removed after
        reader = other.shell(f"cat {key_file}")
    assert reader.returncode != 0 and key_file.read_text().strip() not in reader.stdout


def test_a_broken_auth_lock_moves_the_request_to_the_healthy_account(
    data_dir: Path, upstream: FakeUpstream
) -> None:
    """a's token must be refreshed, but its auth.lock is a directory: the request goes to b at
    once, a cools briefly, and nothing goes out with Codex's own credentials."""
    write_account(data_dir, "a", exp=time.time() - 60)
    write_account(data_dir, "b")
    (data_dir / "a" / "auth.lock").mkdir()
    with GatewayProcess(data_dir, upstream.url, "--auth-url", upstream.url) as gw:
        started = time.monotonic()
        answer = httpx.post(
            gw.base + MODEL, content=b"{}", headers={"authorization": "Bearer codex-own"}
        )
        took = time.monotonic() - started
        status = {a["name"]: a for a in httpx.get(gw.base + "/__cao/status").json()["accounts"]}
    assert answer.status_code == 200 and b"acct-b" in answer.content and took < 5
    assert status["a"]["status"] == "cooling" and status["b"]["status"] == "usable"
    assert all(r.token != "codex-own" for r in upstream.requests)
    assert "Traceback" not in gw.output


def test_a_lock_held_elsewhere_is_waited_for_a_bounded_time(
    data_dir: Path, upstream: FakeUpstream
) -> None:
    write_account(data_dir, "a", exp=time.time() - 60)
    write_account(data_dir, "b")
    release = threading.Event()
    held = threading.Event()

    def hold() -> None:  # another process's flock, held far longer than any wait
        script = (
            "import fcntl, sys, time\n"
            f"f = open({str(data_dir / 'a' / 'auth.lock')!r}, 'a')\n"
            "fcntl.flock(f, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(60)\n"
        )
        proc = subprocess.Popen(["python3", "-c", script], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        held.set()
        release.wait(60)
        proc.kill()
        proc.wait()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        with GatewayProcess(data_dir, upstream.url, "--auth-url", upstream.url) as gw:
            started = time.monotonic()
            answer = httpx.post(gw.base + MODEL, content=b"{}", timeout=30)
            took = time.monotonic() - started
        assert answer.status_code == 200 and b"acct-b" in answer.content
        assert took < 10  # bounded (5 s), then the next account
        assert refresh_calls(upstream) == 0
    finally:
        release.set()
        holder.join(10)


def test_in_flight_requests_with_the_old_token_do_not_lose_the_login(
    data_dir: Path, upstream: FakeUpstream
) -> None:
    """Four requests leave with a's token T0; the upstream says 401 to each. One refresh
    happens; the others see the rotation and are re-sent with the new token. a stays usable."""
    write_account(data_dir, "a")
    write_account(data_dir, "b")
    old = json.loads((data_dir / "a" / "auth.json").read_text())["tokens"]["access_token"]
    upstream.revoked.add(old)
    upstream.seen_delay = 0.3  # all four are in flight together
    upstream.oauth_delay = 0.3
    upstream.oauth_answers.extend([(200, refreshed_tokens("a"))] * 4)
    with GatewayProcess(data_dir, upstream.url, "--auth-url", upstream.url) as gw:
        with ThreadPoolExecutor(4) as pool:
            answers = list(
                pool.map(
                    lambda n: httpx.post(
                        gw.base + MODEL, content=b"{}", follow_redirects=True, timeout=30,
                        headers={"session-id": f"c{n}"},
                    ),
                    range(4),
                )
            )  # fmt: skip
        a = next(
            x for x in httpx.get(gw.base + "/__cao/status").json()["accounts"] if x["name"] == "a"
        )
    assert [r.status_code for r in answers] == [200] * 4
    assert all(b"acct-a" in r.content for r in answers)
    assert refresh_calls(upstream) == 1
    assert a["status"] == "usable" and not a["needs_login"]


def send_big_body(gw: GatewayProcess, size: int, chunked: bool) -> tuple[bytes, int]:
    """Up to `size` bytes of body on a raw socket, reading the answer as it writes (as Codex's
    client does); (the answer's first bytes, bytes sent before it came)."""
    path = key_path(gw) + MODEL
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\n{framing}\r\n\r\n"
    piece = b"x" * (1 << 20)
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
                s.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            except (TimeoutError, OSError):
                break  # the gateway stopped reading: the answer is there
            sent += len(piece)
        s.settimeout(3)
        while b"\r\n\r\n" not in answer:
            try:
                chunk = s.recv(4096)
            except (TimeoutError, OSError):
                break  # nothing more comes (a connection refused unread)
            if not chunk:
                break
            answer += chunk
    return answer, sent


@pytest.mark.parametrize("chunked", [False, True])
def test_oversized_bodies_get_413_without_being_buffered(
    gw: GatewayProcess, upstream: FakeUpstream, chunked: bool
) -> None:
    """Four concurrent 50 MB bodies: a declared length is answered 413 at once, a chunked
    body's connection is closed at once (it would be held until it passed the limit); memory
    stays under 100 MiB at its peak, and nothing goes upstream."""
    size = 50 << 20
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: send_big_body(gw, size, chunked), range(4)))
    for answer, sent in results:
        if chunked:  # no length: the connection is closed unread
            assert not answer.startswith(b"HTTP/1.1 2"), answer[:80]
        else:
            assert answer.startswith(b"HTTP/1.1 413"), answer[:80]
        assert sent < (10 << 20)  # refused before the body arrived
    assert rss_mib(gw.pid, "VmHWM") < 100  # nothing was buffered
    assert rss_mib(gw.pid) < 100
    assert not upstream.model_requests()
    # A request of a realistic size still goes through.
    realistic = json.dumps({"input": [], "pad": "y" * (2 << 20)}).encode()
    assert httpx.post(gw.base + MODEL, content=realistic).status_code == 200


def test_mitmweb_shows_no_token_while_a_request_is_in_flight(
    data_dir: Path, upstream: FakeUpstream
) -> None:
    """A request waits on a slow upstream (its token is on the flow then): the UI's flow list,
    flow detail and websocket hold no token, and dump, export, save and duplicate are closed."""
    import re

    from tests.test_refresh_e2e import free_port

    write_account(data_dir, "a")
    write_account(data_dir, "b")
    upstream.seen_delay = 3.0
    web_port = free_port()
    ui = f"http://127.0.0.1:{web_port}"
    with (
        GatewayProcess(data_dir, upstream.url, "--web", "--web-port", str(web_port)) as gw,
        httpx.Client(base_url=ui, timeout=10) as web,
    ):
        token = re.search(r"token=(\w+)", gw.wait_for_log("Web server listening at"))
        assert token is not None
        web.headers["authorization"] = f"Bearer {token.group(1)}"
        xsrf = "00112233445566778899aabbccddeeff"  # tornado's double submit: cookie == header
        web.cookies.set("_mitmproxy_xsrf", xsrf, domain="127.0.0.1")
        web.headers["x-xsrftoken"] = xsrf
        in_flight = threading.Thread(
            target=lambda: httpx.post(gw.base + MODEL, content=b"{}", timeout=30)
        )
        in_flight.start()
        deadline = time.monotonic() + 5
        while not upstream.model_requests() and time.monotonic() < deadline:
            time.sleep(0.05)  # the request is now held upstream, its token on the flow
        flows = web.get("/flows").json()
        assert flows, "the UI sees the flow"
        seen = [web.get("/flows").text, web.get(f"/flows/{flows[0]['id']}").text]
        assert web.get("/flows/dump").status_code == 403
        assert web.post(f"/flows/{flows[0]['id']}/duplicate").status_code == 403
        for command in ("export.clip", "export.file", "save.file", "cut.clip"):
            assert web.post(f"/commands/{command}", json={"arguments": []}).status_code == 403
        control = web.post("/commands/view.properties.length", json={"arguments": []})
        assert control.is_success, control.text  # the same request, to a command left open
        # The UI's options editor may not make mitmproxy write flows to a file.
        for option in ("save_stream_file", "hardump", "web_static_viewer"):
            target = data_dir.parent / f"flows-{option}"
            answer = web.put("/options", json={option: str(target)})
            assert not answer.is_success and not target.exists(), (option, answer.text)
        in_flight.join(30)
    text = "\n".join(seen)
    assert "redacted by cao" in text
    for secret in pool_tokens(data_dir):
        assert secret not in text


@pytest.mark.parametrize(
    "line",
    [
        "POST //backend-api/codex/responses HTTP/1.1",
        "POST /BACKEND-API/codex/responses HTTP/1.1",
        "POST /backend-api/codex/responses;x=1 HTTP/1.1",
        "POST /backend-api/codex;x/responses HTTP/1.1",
        "POST /backend-api/codex/responses HTTP/9.9",
        "POST http://evil.example/backend-api/codex/responses HTTP/1.1",
        "POST http://127.0.0.1/backend-api/codex/responses HTTP/1.1",
    ],
)
def test_non_canonical_requests_are_refused(
    gw: GatewayProcess, upstream: FakeUpstream, line: str
) -> None:
    head = f"{line}\nHost: 127.0.0.1:{gw.port}\nContent-Length: 2\n"
    status, _ = raw_request(gw, head, b"{}")
    assert status == 400, line
    assert upstream.requests == []


@pytest.mark.parametrize("upgrade", ["websocket, foo", "foo, WebSocket", "websocket/13"])
def test_every_websocket_upgrade_is_recognised(
    gw: GatewayProcess, upstream: FakeUpstream, upgrade: str
) -> None:
    """A listed `websocket` token is an upgrade, as the exact value is (routed alike; this fake
    backend has no WebSocket and answers both 426)."""
    exact, _ = raw_request(
        gw, f"GET {MODEL} HTTP/1.1\nHost: 127.0.0.1:{gw.port}\nConnection: Upgrade\n"
        "Upgrade: websocket\n",
    )  # fmt: skip
    status, _ = raw_request(
        gw, f"GET {MODEL} HTTP/1.1\nHost: 127.0.0.1:{gw.port}\nConnection: Upgrade\n"
        f"Upgrade: {upgrade}\n",
    )  # fmt: skip
    assert status == exact != 200
    assert not upstream.model_requests()


def test_enable_makes_the_bin_dir_0755_under_umask_000(
    tmp_path: Path, data_dir: Path, fake_codex_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = cao_env(data_dir, HOME=str(home), PATH=f"{fake_codex_path}:/usr/bin:/bin")
    old = os.umask(0)
    try:
        r = run_cao(data_dir, "gateway", "enable", env=env)
    finally:
        os.umask(old)
    assert r.returncode == 0, r.stderr
    for directory in (home / ".local", home / ".local" / "bin"):
        assert oct(directory.stat().st_mode & 0o777) == "0o755", directory
    assert oct((home / ".local" / "bin" / "codex").stat().st_mode & 0o777) == "0o700"


def test_an_upstream_answering_garbage_gets_a_json_502_without_its_bytes(
    gw: GatewayProcess, upstream: FakeUpstream, data_dir: Path
) -> None:
    """The upstream echoes the request's token in a non-HTTP answer: neither the log nor the
    502 Codex gets carries any of it."""
    from tests.fakes.upstream import Answer

    upstream.defaults[None] = Answer(kind="garbage")
    answer = httpx.post(gw.base + MODEL, content=b"{}", headers={"session-id": "g"})
    assert answer.status_code == 502
    assert answer.headers["content-type"] == "application/json"
    message = answer.json()["error"]["message"]
    assert message.startswith("cao gateway: ") and "GARBAGE" not in message
    assert upstream.model_requests()  # it did go upstream, with a pool token
    for secret in [*pool_tokens(data_dir), "GARBAGE"]:
        assert secret not in answer.text and secret not in gw.output


def test_enable_rewrites_an_old_shim_that_carried_the_key(
    tmp_path: Path, data_dir: Path, fake_codex_path: Path, upstream: FakeUpstream
) -> None:
    """A shim written before: the key in its URL. It keeps working against the gateway, and
    `cao gateway enable` rewrites it without the key; cao still finds the gateway it names."""
    import shlex

    from cao.cli.shim import shim_gateway
    from cao.config.access import codex_base_url, gateway_key
    from cao.config.store import Store

    bin_dir = tmp_path / "bin2"
    bin_dir.mkdir()
    key = gateway_key(Store(data_dir))
    assert key is not None
    remember(key)
    base = codex_base_url("http://127.0.0.1:4555", key)
    old = (  # as `cao gateway enable` wrote it before issue 18
        "#!/bin/sh\n# cao-shim: codex\n"
        f"OPENAI_BASE_URL={shlex.quote(base)}\nexport OPENAI_BASE_URL\n"
        f'exec {fake_codex_path / "codex"} -c \'openai_base_url="{base}"\' "$@"\n'
    )
    (bin_dir / "codex").write_text(old)
    (bin_dir / "codex").chmod(0o700)
    assert key in old and shim_gateway(bin_dir / "codex") == "http://127.0.0.1:4555"
    env = cao_env(data_dir, PATH=f"{bin_dir}:{fake_codex_path}:/usr/bin:/bin")
    r = run_cao(data_dir, "gateway", "enable", "--bin-dir", str(bin_dir), "--url",
                "http://127.0.0.1:4555", env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    new = (bin_dir / "codex").read_text()
    assert key not in new and "/cao/" not in new
    assert shim_gateway(bin_dir / "codex") == "http://127.0.0.1:4555"
