"""Token refresh, usage-aware routing and leak-free debugging, with the real gateway process,
a fake upstream and a fake OAuth token endpoint."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.fakes.upstream import Answer, FakeUpstream
from tests.gateway_proc import GatewayProcess
from tests.helpers import cao_env, fake_token, run_cao, write_account

MODEL = "/backend-api/codex/responses"


def refreshed_tokens(label: str) -> dict[str, str]:
    return {
        "access_token": fake_token(f"fresh-{label}", time.time() + 86400),
        "refresh_token": f"SECRET-refresh-{label}-1",
    }


def gateway(
    data_dir: Path, upstream: FakeUpstream, *args: str, env: dict[str, str] | None = None
) -> GatewayProcess:
    return GatewayProcess(data_dir, upstream.url, "--auth-url", upstream.url, *args, env=env)


def turn(url: str, conversation: str = "c1", **headers: str) -> httpx.Response:
    return httpx.post(
        url + MODEL,
        content=b'{"input": []}',
        follow_redirects=True,
        timeout=30,
        headers={"session-id": conversation, "authorization": "Bearer codex-own", **headers},
    )


def refresh_calls(upstream: FakeUpstream) -> int:
    return sum(1 for r in upstream.requests if r.path == "/oauth/token")


def secrets_in(data_dir: Path) -> list[str]:
    found = []
    for auth in data_dir.glob("*/auth.json"):
        tokens = json.loads(auth.read_text())["tokens"]
        found += [tokens["access_token"], tokens["refresh_token"]]
    return found


def test_expired_token_is_refreshed_once(data_dir: Path, upstream: FakeUpstream) -> None:
    home = write_account(data_dir, "a", exp=time.time() - 60, codex_future_field=[1, 2])
    new = refreshed_tokens("a")
    upstream.oauth_answers.append((200, new))
    with gateway(data_dir, upstream) as gw:
        assert turn(gw.base).status_code == 200
        assert turn(gw.base, "c2").status_code == 200
        gw.wait_for_log("account a: token refreshed")
    assert refresh_calls(upstream) == 1
    assert [r.token for r in upstream.model_requests()] == [new["access_token"]] * 2
    doc = json.loads((home / "auth.json").read_text())
    assert doc["tokens"]["refresh_token"] == new["refresh_token"]
    assert doc["codex_future_field"] == [1, 2]
    assert doc["last_refresh"] != "2026-11-01T00:00:00Z"
    assert (home / "auth.json").stat().st_mode & 0o777 == 0o600


def test_concurrent_requests_over_two_gateways_refresh_once(
    data_dir: Path, upstream: FakeUpstream
) -> None:
    write_account(data_dir, "a", exp=time.time() - 60)
    upstream.oauth_delay = 0.5  # widen the race
    upstream.oauth_answers.extend([(200, refreshed_tokens("a"))] * 3)
    with gateway(data_dir, upstream) as one, gateway(data_dir, upstream) as two:
        urls = [one.base, two.base] * 10
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(lambda u: turn(u[1], f"conv{u[0]}"), enumerate(urls)))
    assert [a.status_code for a in answers] == [200] * 20
    assert refresh_calls(upstream) == 1


def test_reused_refresh_token_needs_login_and_traffic_moves(
    data_dir: Path, upstream: FakeUpstream
) -> None:
    write_account(data_dir, "a", exp=time.time() - 60)
    write_account(data_dir, "b")
    upstream.oauth_answers.append((400, {"error": {"code": "refresh_token_reused"}}))
    with gateway(data_dir, upstream) as gw:
        response = turn(gw.base)
        assert response.status_code == 200 and b"hello from acct-b" in response.content
        status = httpx.get(gw.base + "/__cao/status").json()["accounts"][0]
        gw.wait_for_log("account a needs login")
    assert status["status"] == "needs login" and status["fix"] == "cao add a"
    listed = json.loads(run_cao(data_dir, "list", "--json").stdout)[0]
    assert listed["needs_login"] == "refresh_token_reused" and listed["fix"] == "cao add a"
    table = run_cao(data_dir, "list", env={**cao_env(data_dir), "COLUMNS": "200"}).stdout
    assert "needs login: run `cao add a`" in table


def test_auth_endpoint_down_moves_request(data_dir: Path, upstream: FakeUpstream) -> None:
    write_account(data_dir, "a", exp=time.time() - 60)
    write_account(data_dir, "b")
    with GatewayProcess(data_dir, upstream.url, "--auth-url", "http://127.0.0.1:9") as gw:
        response = turn(gw.base)
        a = httpx.get(gw.base + "/__cao/status").json()["accounts"][0]
    assert b"hello from acct-b" in response.content
    assert a["status"] == "cooling" and "refresh failed" in a["cooling_reason"]


@pytest.mark.parametrize("mode", ["redirect", "inline"])
def test_401_refreshes_once_and_retries(data_dir: Path, upstream: FakeUpstream, mode: str) -> None:
    write_account(data_dir, "a")
    write_account(data_dir, "b")
    new = refreshed_tokens("a")
    upstream.oauth_answers.append((200, new))
    upstream.queue(
        "acct-a", Answer("status", status=401, body=b'{"error": {"code": "token_expired"}}')
    )
    with gateway(data_dir, upstream, "--retry-mode", mode) as gw:
        response = turn(gw.base)
    assert response.status_code == 200 and b"hello from acct-a" in response.content
    assert refresh_calls(upstream) == 1
    assert upstream.model_requests()[-1].token == new["access_token"]


def test_usage_headers_reach_cao_list_and_threshold_moves_new_conversations(
    data_dir: Path, upstream: FakeUpstream
) -> None:
    write_account(data_dir, "a")
    write_account(data_dir, "b")
    reset5h, reset_week = int(time.time()) + 3 * 3600, int(time.time()) + 4 * 86400
    upstream.usage_headers["acct-a"] = {
        "x-codex-primary-used-percent": "97", "x-codex-primary-window-minutes": "300",
        "x-codex-primary-reset-at": str(reset5h),
        "x-codex-secondary-used-percent": "40", "x-codex-secondary-window-minutes": "10080",
        "x-codex-secondary-reset-at": str(reset_week),
    }  # fmt: skip
    with gateway(data_dir, upstream) as gw:
        assert b"acct-a" in turn(gw.base, "old").content
        time.sleep(0.3)
        listed = json.loads(run_cao(data_dir, "list", "--json").stdout)[0]
        assert listed["usage"] == {
            "300": {"used_percent": 97.0, "resets_at": reset5h},
            "10080": {"used_percent": 40.0, "resets_at": reset_week},
        }
        table = run_cao(data_dir, "list", env={**cao_env(data_dir), "COLUMNS": "200"}).stdout
        assert "5h 97%" in table and "weekly 40%" in table
        # Over the 95% threshold: new work moves, the live conversation stays (its prompt
        # cache) until a refuses (tests/test_new_user.py: item 14).
        assert b"acct-a" in turn(gw.base, "old", **{"x-codex-turn-state": "t"}).content
        assert b"acct-b" in turn(gw.base, "new").content
        assert b"acct-a" in turn(gw.base, "old").content  # (--switch-live: it would move)


def test_usage_is_written_at_most_once_a_second(data_dir: Path, upstream: FakeUpstream) -> None:
    write_account(data_dir, "a")
    upstream.usage_headers["acct-a"] = {
        "x-codex-primary-used-percent": "10",
        "x-codex-primary-window-minutes": "300",
    }
    state = data_dir / "cao-state.json"
    with gateway(data_dir, upstream) as gw:
        turn(gw.base)
        time.sleep(0.2)
        first = state.stat().st_mtime_ns
        for i in range(15):
            turn(gw.base, f"c{i}")  # same values: nothing to write
        assert state.stat().st_mtime_ns == first


def test_rate_limit_moves_then_passes_through(data_dir: Path, upstream: FakeUpstream) -> None:
    write_account(data_dir, "a")
    write_account(data_dir, "b")
    upstream.queue("acct-a", Answer("rate", retry_after=30))
    with gateway(data_dir, upstream) as gw:
        moved = turn(gw.base)
        assert b"acct-b" in moved.content
        a = httpx.get(gw.base + "/__cao/status").json()["accounts"][0]
        assert a["cooling_reason"] == "rate limit"
        assert 25 < a["cooling_until"] - time.time() <= 31
        upstream.queue("acct-b", Answer("rate", retry_after=7))
        passed = turn(gw.base, "c2")
    assert passed.status_code == 429 and passed.headers["retry-after"] == "7"
    assert passed.json()["error"]["type"] == "rate_limit_exceeded"


def test_upstream_5xx_is_passed_through_once(data_dir: Path, upstream: FakeUpstream) -> None:
    write_account(data_dir, "a")
    write_account(data_dir, "b")
    upstream.queue("acct-a", Answer("status", status=503, body=b'{"error": "busy"}'))
    with gateway(data_dir, upstream) as gw:
        response = turn(gw.base)
    assert response.status_code == 503
    assert len(upstream.model_requests()) == 1  # Codex retries 5xx itself; no multiplying


def test_debug_headers_and_captured_body_leak_nothing(
    data_dir: Path, upstream: FakeUpstream, tmp_path: Path
) -> None:
    write_account(data_dir, "a")
    capture = tmp_path / "body.json"
    env = cao_env(
        data_dir, CAO_DEBUG_HEADERS="1", CAO_CAPTURE_BODY="1", CAO_CAPTURE_BODY_PATH=str(capture)
    )
    with gateway(data_dir, upstream, env=env) as gw:
        turn(gw.base, **{"cookie": "session=SECRET-cookie-value-123456"})
        line = gw.wait_for_log("debug request POST")
        gw.wait_for_log("debug response 200")
    token = secrets_in(data_dir)[0]
    assert f"Bearer {token[:6]}…{token[-4:]}" in line
    for secret in [*secrets_in(data_dir), "SECRET-cookie-value-123456", "codex-own"]:
        assert secret not in gw.output
    assert capture.read_bytes() == b'{"input": []}'
    assert capture.stat().st_mode & 0o777 == 0o600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_mitmweb_ui_receives_no_token(data_dir: Path, upstream: FakeUpstream) -> None:
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    write_account(data_dir, "a", exp=time.time() - 60)
    write_account(data_dir, "b")
    upstream.oauth_answers.append((200, refreshed_tokens("a")))
    upstream.queue("acct-a", Answer("quota"))
    web_port = free_port()
    with gateway(data_dir, upstream, "--web", "--web-port", str(web_port)) as gw:
        ui = gw.wait_for_log("Web server listening at")
        ui_token = re.search(r"token=(\w+)", ui).group(1)  # type: ignore[union-attr]
        auth = {"Authorization": f"Bearer {ui_token}"}
        messages: list[str] = []

        async def watch() -> None:
            ws = await websocket_connect(
                HTTPRequest(f"ws://127.0.0.1:{web_port}/updates", headers=auth)
            )
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: [turn(gw.base), turn(gw.base, "c2", **{"x-codex-turn-state": "x"})]
            )
            deadline = time.time() + 2
            while time.time() < deadline:
                try:
                    message = await asyncio.wait_for(ws.read_message(), 0.5)
                except TimeoutError:
                    continue
                if message is None:
                    break
                messages.append(str(message))
            ws.close()

        asyncio.run(watch())
        flows = httpx.get(f"http://127.0.0.1:{web_port}/flows", headers=auth).text
        dump = httpx.get(f"http://127.0.0.1:{web_port}/flows/dump", headers=auth).content
    seen = "\n".join(messages) + flows + dump.decode("latin-1")
    assert "flows/add" in seen and "acct-b" in seen  # the UI did see the traffic
    for secret in [*secrets_in(data_dir), "codex-own"]:
        assert secret not in seen
    assert refresh_calls(upstream) == 1
