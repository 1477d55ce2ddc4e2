"""The real gateway (`cao gateway start` -> mitmdump + our addon) in front of a fake upstream."""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from cao.config.store import Store
from tests.fakes.upstream import Answer, FakeUpstream
from tests.gateway_proc import GatewayProcess
from tests.helpers import cao_env, run_cao, wait_for_state, write_account
from tests.procinfo import open_fds

MODEL = "/backend-api/codex/responses"


@pytest.fixture
def two_accounts(data_dir: Path) -> Path:
    write_account(data_dir, "a")
    write_account(data_dir, "b")
    return data_dir


StartGateway = Callable[..., GatewayProcess]


@pytest.fixture
def start_gateway(two_accounts: Path, upstream: FakeUpstream) -> Iterator[StartGateway]:
    started: list[GatewayProcess] = []

    def start(*args: str, upstream_url: str | None = None) -> GatewayProcess:
        gw = GatewayProcess(two_accounts, upstream_url or upstream.url, *args).start()
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()


def turn(client: httpx.Client, conversation: str = "conv-1", **headers: str) -> httpx.Response:
    return client.post(
        MODEL,
        content=json.dumps({"input": [], "stream": True}),
        headers={
            "authorization": "Bearer codex-own-token",
            "session-id": conversation,
            "thread-id": conversation,
            "content-type": "application/json",
            **headers,
        },
    )


def status(gw: GatewayProcess) -> dict[str, dict[str, object]]:
    doc = httpx.get(gw.base + "/__cao/status").json()
    return {a["name"]: a for a in doc["accounts"]}


def token_of(data_dir: Path, name: str) -> str:
    return str(json.loads((data_dir / name / "auth.json").read_text())["tokens"]["access_token"])


def test_plain_turn_uses_default_account_and_streams(
    start_gateway: StartGateway, upstream: FakeUpstream, two_accounts: Path
) -> None:
    upstream.defaults[None] = Answer(events=6, delay=0.25)
    gw = start_gateway()
    arrivals: list[float] = []
    started = time.monotonic()
    with (
        httpx.Client(base_url=gw.base) as client,
        client.stream(
            "POST", MODEL, content=b"{}", headers={"authorization": "Bearer codex-own-token"}
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        body = b""
        for chunk in response.iter_raw():
            arrivals.append(time.monotonic() - started)
            body += chunk
    assert b"hello from acct-a" in body
    assert b"response.completed" in body
    # Events arrive as the upstream sends them (0.25 s apart), not all at the end.
    assert arrivals[-1] - arrivals[0] > 1.0, arrivals
    sent = upstream.model_requests()[0]
    assert sent.account_id == "acct-a"
    assert sent.token == token_of(two_accounts, "a")


@pytest.mark.parametrize("mode", ["redirect", "inline"])
def test_usage_limit_moves_request_to_next_account(
    start_gateway: StartGateway, upstream: FakeUpstream, two_accounts: Path, mode: str
) -> None:
    resets_at = int(time.time()) + 5400
    upstream.queue("acct-a", Answer("quota", resets_at=resets_at))
    gw = start_gateway("--retry-mode", mode)
    with httpx.Client(base_url=gw.base, follow_redirects=True) as client:
        response = turn(client, **{"x-codex-turn-state": "minted-by-a"})
    assert response.status_code == 200
    assert b"hello from acct-b" in response.content
    sent = upstream.model_requests()
    assert [r.account_id for r in sent] == ["acct-a", "acct-b"]
    assert sent[1].token == token_of(two_accounts, "b")
    assert sent[1].body == sent[0].body
    assert "x-codex-turn-state" not in sent[1].headers  # minted for account a
    a = status(gw)["a"]
    assert a["status"] == "cooling" and a["cooling_until"] == resets_at
    listed = json.loads(run_cao(two_accounts, "list", "--json").stdout)
    assert listed[0]["cooling_until"] == resets_at
    gw.wait_for_log(r"switch a -> b \(quota\)")


def test_in_stream_usage_failure_moves_next_request(
    start_gateway: StartGateway, upstream: FakeUpstream
) -> None:
    upstream.queue("acct-a", Answer("sse_quota"))
    gw = start_gateway()
    with httpx.Client(base_url=gw.base) as client:
        first = turn(client)
        assert first.status_code == 200 and b"response.failed" in first.content
        second = turn(client)
    assert b"hello from acct-b" in second.content
    assert [r.account_id for r in upstream.model_requests()] == ["acct-a", "acct-b"]
    assert status(gw)["a"]["status"] == "cooling"


@pytest.mark.parametrize("mode", ["redirect", "inline"])
def test_all_exhausted_gives_earliest_reset(
    start_gateway: StartGateway, upstream: FakeUpstream, mode: str
) -> None:
    soon, later = int(time.time()) + 600, int(time.time()) + 7200
    upstream.queue("acct-a", Answer("quota", resets_at=later))
    upstream.queue("acct-b", Answer("quota", resets_at=soon))
    gw = start_gateway("--retry-mode", mode)
    with httpx.Client(base_url=gw.base, follow_redirects=True) as client:
        response = turn(client)
        assert response.status_code == 429
        error = response.json()["error"]
        assert error["type"] == "usage_limit_reached"
        assert error["resets_at"] == soon
        # With nobody usable, the gateway answers by itself without bothering upstream.
        count = len(upstream.model_requests())
        again = turn(client, conversation="conv-2")
    assert again.status_code == 429 and again.json()["error"]["resets_at"] == soon
    assert len(upstream.model_requests()) == count


def test_conversation_stays_on_its_account(
    start_gateway: StartGateway, upstream: FakeUpstream, two_accounts: Path
) -> None:
    upstream.queue("acct-a", Answer("quota"))
    gw = start_gateway()
    with httpx.Client(base_url=gw.base, follow_redirects=True) as client:
        assert b"acct-b" in turn(client, "old").content
        # Account a comes back (its cooldown is lifted on disk, as by another process).
        wait_for_state(two_accounts, lambda d: "a" in d["accounts"])
        Store(two_accounts).update_state(
            lambda s: setattr(s.account("a"), "cooling_until", time.time() - 1)
        )
        assert b"acct-b" in turn(client, "old").content  # stays where its cache is
        assert b"acct-a" in turn(client, "new").content  # new work goes to the default
    assert status(gw)["a"]["status"] == "usable"


def test_websocket_upgrade_gets_426_with_transport_http(
    start_gateway: StartGateway, upstream: FakeUpstream
) -> None:
    gw = start_gateway("--transport", "http")
    response = httpx.get(
        gw.base + MODEL,
        headers={
            "upgrade": "websocket",
            "connection": "Upgrade",
            "sec-websocket-version": "13",
            "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
    )
    assert response.status_code == 426
    assert upstream.requests == []


def test_passthrough_auth_leaves_headers_alone(
    start_gateway: StartGateway, upstream: FakeUpstream
) -> None:
    upstream.queue(None, Answer("quota"))
    gw = start_gateway("--passthrough-auth")
    with httpx.Client(base_url=gw.base, follow_redirects=True) as client:
        ok = turn(client, **{"chatgpt-account-id": "codex-own-account"})
        limited = turn(client, **{"chatgpt-account-id": "codex-own-account"})
    assert ok.status_code == 200
    sent = upstream.model_requests()
    assert sent[0].token == "codex-own-token"
    assert sent[0].account_id == "codex-own-account"
    assert limited.status_code == 200 or limited.status_code == 429
    assert all(r.token == "codex-own-token" for r in sent)


def test_non_model_paths_keep_codex_auth(
    start_gateway: StartGateway, upstream: FakeUpstream
) -> None:
    gw = start_gateway()
    httpx.get(
        gw.base + "/backend-api/wham/accounts/check",
        headers={"authorization": "Bearer codex-own-token"},
    )
    assert upstream.requests[0].token == "codex-own-token"


def test_log_has_a_line_per_request_and_no_token(
    start_gateway: StartGateway, upstream: FakeUpstream, two_accounts: Path
) -> None:
    upstream.queue("acct-a", Answer("quota"))
    gw = start_gateway()
    with httpx.Client(base_url=gw.base, follow_redirects=True) as client:
        turn(client)
    gw.wait_for_log(r"POST /backend-api/codex/responses account=b 200")
    gw.stop()
    for name in ("a", "b"):
        assert token_of(two_accounts, name) not in gw.output
    assert "SECRET" not in gw.output and "codex-own-token" not in gw.output


def test_https_upstream_with_test_ca(two_accounts: Path, tmp_path: Path) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    fake = FakeUpstream(tls=server_ctx).start()
    state = two_accounts / "cao-state.json"
    try:
        for mode in ("redirect", "inline"):
            state.unlink(missing_ok=True)
            fake.queue("acct-a", Answer("quota"))
            with GatewayProcess(
                two_accounts, fake.url, "--upstream-ca", str(ca_file), "--retry-mode", mode
            ) as gw:
                with httpx.Client(base_url=gw.base, follow_redirects=True) as client:
                    response = turn(client)
                assert response.status_code == 200, gw.output
                assert b"hello from acct-b" in response.content
        # Without the CA, upstream TLS verification fails: there is no silent insecure mode.
        state.unlink(missing_ok=True)
        with GatewayProcess(two_accounts, fake.url) as gw, httpx.Client(base_url=gw.base) as c:
            assert turn(c).status_code == 502
    finally:
        fake.stop()


# -- `cao gateway start` refusing bad input ----------------------------------------------------


def test_start_refuses_bad_input(two_accounts: Path, data_dir: Path, tmp_path: Path) -> None:
    cases = [
        (["--host", "0.0.0.0"], 2, "not loopback"),
        (["--upstream", "ftp://x"], 2, "http(s) URL"),
        (["--upstream", "https://chatgpt.com/backend-api/codex"], 2, "origin only"),
        (["--upstream", "https://x:99999"], 2, "bad port"),
        (["--port", "70000"], 2, "65535"),
        (["--retry-mode", "sideways"], 2, "sideways"),
    ]
    for args, code, text in cases:
        r = run_cao(two_accounts, "gateway", "start", *args)
        assert r.returncode == code, (args, r.stderr)
        assert text in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    empty = tmp_path / "empty"
    r = run_cao(empty, "gateway", "start", "--port", "0")
    assert r.returncode == 1 and "no logged-in account" in r.stderr


def test_start_refuses_busy_port(two_accounts: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run_cao(two_accounts, "gateway", "start", "--port", str(port))
    assert r.returncode == 1 and f"port {port} on 127.0.0.1 is in use" in r.stderr


def test_ctrl_c_stops_cleanly(start_gateway: StartGateway) -> None:
    gw = start_gateway()
    assert gw.stop() == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(gw.base + "/__cao/status", timeout=2)


def test_gateway_status_command(start_gateway: StartGateway, two_accounts: Path) -> None:
    gw = start_gateway()
    up = run_cao(two_accounts, "gateway", "status", "--port", str(gw.port))
    assert up.returncode == 0, up.stderr
    assert "gateway: up at" in up.stderr and "* a: usable" in up.stderr
    as_json = json.loads(
        run_cao(two_accounts, "gateway", "status", "--url", gw.url, "--json").stdout
    )
    assert as_json["running"] and as_json["status"]["accounts"][1]["name"] == "b"
    gw.stop()
    down = run_cao(two_accounts, "gateway", "status", "--port", str(gw.port))
    assert down.returncode == 1 and "not answering" in down.stderr


def test_status_endpoint_has_no_secrets(start_gateway: StartGateway, two_accounts: Path) -> None:
    gw = start_gateway()
    text = httpx.get(gw.base + "/__cao/status").text
    assert "SECRET" not in text
    doc = json.loads(text)
    assert doc["gateway"]["version"] and doc["gateway"]["upstream"].startswith("http://127.0.0.1")
    assert [a["status"] for a in doc["accounts"]] == ["usable", "usable"]


def test_account_added_while_running_is_used(
    start_gateway: StartGateway, upstream: FakeUpstream, two_accounts: Path
) -> None:
    upstream.defaults["acct-a"] = Answer("quota")
    upstream.defaults["acct-b"] = Answer("quota")
    gw = start_gateway()
    with httpx.Client(base_url=gw.base, follow_redirects=True) as client:
        assert turn(client).status_code == 429
        write_account(two_accounts, "c")
        response = turn(client, conversation="later")
    assert response.status_code == 200 and b"hello from acct-c" in response.content


# -- the shim ----------------------------------------------------------------------------------


def test_enable_disable_shim(tmp_path: Path, data_dir: Path, fake_codex_path: Path) -> None:
    bin_dir = tmp_path / "home" / ".local" / "bin"
    env = cao_env(
        data_dir,
        HOME=str(tmp_path / "home"),
        PATH=f"{bin_dir}:{fake_codex_path}:/usr/bin:/bin",
        FAKE_CODEX_LOG=str(tmp_path / "codex.log"),
    )
    listener = socket.socket()  # something answers there: the shim starts no gateway
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    r = run_cao(data_dir, "gateway", "enable", "--url", f"http://127.0.0.1:{port}", env=env)
    assert r.returncode == 0, r.stderr
    shim = bin_dir / "codex"
    assert "cao-shim" in shim.read_text()
    # The shim runs the real codex with the overrides before the user's arguments.
    import subprocess

    subprocess.run([str(shim), "exec", "hi"], env=env, check=True)
    listener.close()
    call = json.loads((tmp_path / "codex.log").read_text().splitlines()[-1])
    base = run_cao(data_dir, "gateway", "url", "--port", str(port), env=env).stdout
    assert base == f"http://127.0.0.1:{port}/backend-api/codex\n"  # plain: no secret anywhere
    chatgpt = f'chatgpt_base_url="http://localhost:{port}/backend-api/"'
    assert call["args"] == ["-c", f'openai_base_url="{base.strip()}"', "-c", chatgpt, "exec", "hi"]
    key = (data_dir / "gateway.key").read_text().strip()
    assert key not in shim.read_text() and "/cao/" not in shim.read_text()
    assert oct(shim.stat().st_mode & 0o777) == "0o700"  # only its owner runs it
    assert oct((data_dir / "gateway.key").stat().st_mode & 0o777) == "0o600"
    # Idempotent; resolving the real codex never picks the shim itself.
    assert run_cao(data_dir, "gateway", "enable", env=env).returncode == 0
    assert str(fake_codex_path / "codex") in shim.read_text()
    assert run_cao(data_dir, "gateway", "disable", env=env).returncode == 0
    assert not shim.exists()
    assert run_cao(data_dir, "gateway", "disable", env=env).returncode == 0


def test_enable_never_overwrites_a_foreign_codex(
    tmp_path: Path, data_dir: Path, fake_codex_path: Path
) -> None:
    bin_dir = tmp_path / "bin2"
    bin_dir.mkdir()
    foreign = bin_dir / "codex"
    foreign.write_text("#!/bin/sh\necho mine\n")
    env = cao_env(data_dir, PATH=f"{fake_codex_path}:/usr/bin:/bin")
    r = run_cao(data_dir, "gateway", "enable", "--bin-dir", str(bin_dir), env=env)
    assert r.returncode == 1 and "not cao's shim" in r.stderr
    assert foreign.read_text() == "#!/bin/sh\necho mine\n"
    d = run_cao(data_dir, "gateway", "disable", "--bin-dir", str(bin_dir), env=env)
    assert d.returncode == 1 and foreign.exists()


def test_enable_warns_about_path(tmp_path: Path, data_dir: Path, fake_codex_path: Path) -> None:
    bin_dir = tmp_path / "shimdir"
    env = cao_env(data_dir, PATH=f"{fake_codex_path}:/usr/bin:/bin")
    r = run_cao(data_dir, "gateway", "enable", "--bin-dir", str(bin_dir), env=env)
    assert r.returncode == 0 and "is not in PATH" in r.stderr
    env["PATH"] = f"{fake_codex_path}:{bin_dir}:/usr/bin:/bin"
    r = run_cao(data_dir, "gateway", "enable", "--bin-dir", str(bin_dir), env=env)
    assert "comes before" in r.stderr


def test_client_disconnect_mid_stream_closes_upstream(
    start_gateway: StartGateway, upstream: FakeUpstream
) -> None:
    upstream.defaults[None] = Answer(events=40, delay=0.1)
    gw = start_gateway()
    with httpx.Client(base_url=gw.base) as client:
        turn(client)  # every lazy part loaded
    idle_fds = open_fds(gw.pid)
    with (
        httpx.Client(base_url=gw.base) as client,
        client.stream("POST", MODEL, content=b"{}", headers={"session-id": "s"}) as response,
    ):
        next(response.iter_raw())  # first event, then hang up
    deadline = time.time() + 5
    while upstream.closed_early == 0 and time.time() < deadline:
        time.sleep(0.05)
    assert upstream.closed_early == 1 and upstream.open_streams == 0
    # Both of the stream's connections are gone: nothing leaks.
    while open_fds(gw.pid) > idle_fds and time.time() < deadline:
        time.sleep(0.05)
    assert open_fds(gw.pid) <= idle_fds
    # The gateway carries on.
    with httpx.Client(base_url=gw.base) as client:
        upstream.defaults[None] = Answer()
        assert turn(client).status_code == 200
