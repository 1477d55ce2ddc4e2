"""Hardening: load, faults, bad input and the security promises, against the real gateway.

Loopback only, bounded in time. Leak checks are built into the helpers: every `run_cao` output
and every gateway log is searched for every fake token the suite has made (ISSUED_SECRETS).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import math
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cao.config.auth import AccountAuth
from cao.config.errors import InvalidInput
from cao.config.names import is_safe_name, is_valid_name, validate_name, validate_new_name
from cao.config.quota import (
    MAX_RESET_SECONDS,
    classify_error,
    classify_output,
    classify_stream_event,
    compile_patterns,
    usage_windows,
)
from cao.config.registry import Registry
from cao.config.state import AccountState, PoolState
from tests.fakes.upstream import Answer, FakeUpstream
from tests.gateway_proc import GatewayProcess
from tests.helpers import (
    ISSUED_SECRETS,
    assert_no_secret,
    assert_private,
    wait_for_state,
    write_account,
)
from tests.procinfo import open_fds, rss_mib

MODEL = "/backend-api/codex/responses"
LOAD_SECONDS = 30
LOAD_CLIENTS = 100


@pytest.fixture
def accounts(data_dir: Path) -> Path:
    write_account(data_dir, "a")
    write_account(data_dir, "b")
    return data_dir


def turn(url: str, conversation: str = "c1", timeout: float = 30) -> httpx.Response:
    return httpx.post(
        url + MODEL, content=b"{}", headers={"session-id": conversation}, timeout=timeout,
        follow_redirects=True,
    )  # fmt: skip


def settle(measure: Any, target: float, timeout: float = 15) -> float:
    deadline = time.monotonic() + timeout
    value = measure()
    while value > target and time.monotonic() < deadline:
        time.sleep(0.2)
        value = measure()
    return float(value)


# -- load ----------------------------------------------------------------------------------------


def test_100_concurrent_streams_for_30_seconds(accounts: Path, upstream: FakeUpstream) -> None:
    upstream.defaults[None] = Answer(events=10, delay=0.01)
    with GatewayProcess(accounts, upstream.url) as gw:
        for i in range(5):
            assert turn(gw.base, f"warm{i}").status_code == 200
        time.sleep(0.5)
        idle_fds, idle_rss = open_fds(gw.pid), rss_mib(gw.pid)
        done: list[int] = []
        errors: list[str] = []

        async def client(index: int, http: httpx.AsyncClient, until: float) -> None:
            n = 0
            while time.monotonic() < until:
                try:
                    async with http.stream(
                        "POST", MODEL, content=b"{}", headers={"session-id": f"l{index}-{n}"}
                    ) as response:
                        body = b"".join([chunk async for chunk in response.aiter_raw()])
                    if response.status_code != 200 or b"response.completed" not in body:
                        errors.append(f"http {response.status_code}")
                    else:
                        done.append(index)
                except httpx.HTTPError as e:
                    errors.append(type(e).__name__)
                n += 1

        async def load() -> None:
            limits = httpx.Limits(max_connections=LOAD_CLIENTS)
            async with httpx.AsyncClient(base_url=gw.base, limits=limits, timeout=60) as http:
                until = time.monotonic() + LOAD_SECONDS
                await asyncio.gather(*(client(i, http, until) for i in range(LOAD_CLIENTS)))

        asyncio.run(load())
        problems = [line for line in gw.lines if " 502 " in line or "error" in line]
        assert errors == [] and len(done) > LOAD_CLIENTS, (errors[:5], len(done), problems[:5])
        assert len(set(done)) == LOAD_CLIENTS  # every client got through
        # Connections closed: file descriptors back to idle; memory back near idle.
        assert settle(lambda: open_fds(gw.pid), idle_fds + 2) <= idle_fds + 2
        assert settle(lambda: rss_mib(gw.pid), idle_rss * 1.25) <= idle_rss * 1.25, idle_rss


# -- faults --------------------------------------------------------------------------------------


def test_upstream_cut_midstream_is_seen_and_the_next_request_works(
    accounts: Path, upstream: FakeUpstream
) -> None:
    upstream.queue("acct-a", Answer("cut", events=6))
    with GatewayProcess(accounts, upstream.url) as gw:
        body = b""
        with (
            contextlib.suppress(httpx.RemoteProtocolError),
            httpx.stream(
                "POST", gw.base + MODEL, content=b"{}", headers={"session-id": "s"}
            ) as response,
        ):
            assert response.status_code == 200
            for chunk in response.iter_raw():
                body += chunk
        assert b"response.created" in body and b"response.completed" not in body
        after = turn(gw.base)
        assert after.status_code == 200 and b"response.completed" in after.content


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_upstream_down_gives_a_quick_502(accounts: Path) -> None:
    with GatewayProcess(accounts, f"http://127.0.0.1:{free_port()}") as gw:
        started = time.monotonic()
        response = turn(gw.base)
        assert response.status_code == 502
        assert time.monotonic() - started < 5
        assert turn(gw.base).status_code == 502  # and it keeps answering


def test_sigkill_during_traffic_loses_no_state(accounts: Path, upstream: FakeUpstream) -> None:
    resets_at = int(time.time()) + 3600
    upstream.defaults["acct-a"] = Answer("quota", resets_at=resets_at)
    upstream.defaults["acct-b"] = Answer(events=20, delay=0.01)
    gw = GatewayProcess(accounts, upstream.url).start()
    assert b"acct-b" in turn(gw.base, "first").content
    wait_for_state(accounts, lambda d: d["accounts"].get("a", {}).get("cooling_until"))
    stop = threading.Event()

    def traffic(worker: int) -> None:
        n = 0
        while not stop.is_set():
            with contextlib.suppress(httpx.HTTPError):
                turn(gw.base, f"w{worker}-{n}", timeout=5)
            n += 1

    workers = [threading.Thread(target=traffic, args=(i,)) for i in range(8)]
    for w in workers:
        w.start()
    time.sleep(1.5)
    os.kill(gw.pid, signal.SIGKILL)
    stop.set()
    for w in workers:
        w.join(10)
    gw.stop()
    state = json.loads((accounts / "cao-state.json").read_text())
    assert state["accounts"]["a"]["cooling_until"] == resets_at
    for name in ("a", "b"):
        assert AccountAuth.parse(json.loads((accounts / name / "auth.json").read_text())).logged_in
    json.loads((accounts / "registry.json").read_text())
    with GatewayProcess(accounts, upstream.url) as again:
        seen = httpx.get(again.base + "/__cao/status").json()["accounts"]
        assert seen[0]["name"] == "a" and seen[0]["status"] == "cooling"
        assert seen[0]["cooling_until"] == resets_at
        assert b"acct-b" in turn(again.base, "after").content


def test_corrupt_state_and_registry_while_running(accounts: Path, upstream: FakeUpstream) -> None:
    upstream.queue("acct-a", Answer("quota", resets_at=time.time() + 3600))
    with GatewayProcess(accounts, upstream.url) as gw:
        assert b"acct-b" in turn(gw.base).content
        # Every write of that turn landed (cooldown, switch, last use): nothing in flight.
        wait_for_state(accounts, lambda d: d["switches"] and "last_used" in d["accounts"]["b"])
        time.sleep(0.2)
        (accounts / "cao-state.json").write_text('{"accounts": {"a": ')  # a torn write
        assert b"acct-b" in turn(gw.base, "c2").content  # the cooldown held
        assert len(list(accounts.glob("cao-state.json.corrupt-*"))) == 1
        state = wait_for_state(accounts, lambda d: d["accounts"].get("a", {}).get("cooling_until"))
        assert state["accounts"]["a"]["cooling_reason"] == "quota"
        (accounts / "registry.json").write_text("not json at all")
        assert b"acct-b" in turn(gw.base, "c3").content  # the accounts held
        assert len(list(accounts.glob("registry.json.corrupt-*"))) == 1
        assert json.loads((accounts / "registry.json").read_text())["accounts"] == ["a", "b"]
        gw.wait_for_log("registry.json was damaged: restored the 2 accounts the gateway knew")


# -- bad input (property-based) ------------------------------------------------------------------

NOW = 1_800_000_000.0
junk_numbers = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(["1e308", "-5", "nan", "inf", "  42 ", "0x10"]),
)  # fmt: skip
json_values = st.recursive(
    st.one_of(junk_numbers, st.text(max_size=20)),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=8,
)
error_bodies = st.fixed_dictionaries(
    {},
    optional={
        "error": st.one_of(
            json_values,
            st.fixed_dictionaries(
                {},
                optional={
                    "type": st.sampled_from(
                        ["usage_limit_reached", "rate_limit_exceeded", "insufficient_quota", "x"]
                    ),
                    "code": st.sampled_from(["usage_limit_reached", "other"]),
                    "resets_at": junk_numbers,
                    "resets_in_seconds": junk_numbers,
                    "message": json_values,
                },
            ),
        ),
        "response": json_values,
    },
)
HEADER_NAMES = [
    f"x-codex-{w}-{f}" for w in ("primary", "secondary")
    for f in ("used-percent", "window-minutes", "reset-at")
] + ["retry-after"]  # fmt: skip
usage_headers = st.dictionaries(
    st.sampled_from(HEADER_NAMES),
    st.one_of(
        st.text(max_size=12),
        st.integers(-(10**12), 10**12).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(str),
    ),
)


def check_signal(signal_: Any, now: float) -> None:
    if signal_ is not None:
        assert math.isfinite(signal_.resets_at)
        assert now < signal_.resets_at <= now + MAX_RESET_SECONDS


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    status=st.sampled_from([429, 200, 401, 500]),
    body=st.one_of(st.binary(max_size=200), error_bodies.map(json.dumps), error_bodies),
    headers=usage_headers,
)
def test_quota_answers_never_crash(status: int, body: Any, headers: dict[str, str]) -> None:
    check_signal(classify_error(status, body, headers, NOW), NOW)


@given(event=st.one_of(json_values, error_bodies.map(lambda b: {"type": "response.failed", **b})))
def test_stream_events_never_crash(event: Any) -> None:
    if isinstance(event, dict):
        check_signal(classify_stream_event(event, NOW), NOW)


@given(headers=usage_headers)
def test_usage_headers_never_crash(headers: dict[str, str]) -> None:
    for minutes, (used, reset) in usage_windows(headers).items():
        assert int(minutes) > 0 and 0.0 <= used <= 100.0
        assert reset is None or math.isfinite(reset)


@given(text=st.text(max_size=300))
def test_codex_output_never_crashes(text: str) -> None:
    check_signal(classify_output(text, compile_patterns(), NOW), NOW)


@given(document=json_values)
def test_state_files_parse_or_say_why(document: Any) -> None:
    AccountState.parse(document)
    AccountAuth.parse(document)
    for parse in (PoolState.parse, Registry.parse):
        with contextlib.suppress(ValueError):
            parse(document)


@given(name=st.text(max_size=80))
def test_account_names(name: str) -> None:
    """A new name is always a safe name; every refusal is one line saying what is allowed; a
    safe name is one directory inside the data dir."""
    try:
        assert validate_new_name(name) == name and is_valid_name(name)
    except InvalidInput as e:
        assert "\n" not in str(e) and "letters" in str(e)
        assert not is_valid_name(name)
    try:
        assert validate_name(name) == name and is_safe_name(name)
        assert Path(name).name == name and name not in (".", "..")
    except InvalidInput as e:
        assert "\n" not in str(e) and not is_valid_name(name)


WORDS = st.sampled_from([
    "--json", "--account", "--from", "--no-login", "--device-auth", "--keep-files", "--url",
    "--bin-dir", "--report", "md", "pdf", "--doctor", "--compact", "--force", "a", "../x", "",
    "-", "--", "http://", "http://127.0.0.1:1", "é", "a" * 70, "/dev/null", "--help-me",
])  # fmt: skip
COMMANDS = st.sampled_from([
    ["add"], ["import"], ["use"], ["current"], ["switch"], ["list"], ["remove"], ["status"],
    ["gateway", "status"], ["gateway", "enable"], ["gateway", "disable"], ["nope"], [],
])  # fmt: skip


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(command=COMMANDS, args=st.lists(st.one_of(WORDS, st.text(max_size=8)), max_size=4))
def test_cli_arguments_never_traceback(
    command: list[str], args: list[str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    from cao.cli.app import main

    root = tmp_path_factory.mktemp("cli")
    write_account(root / "data", "a")
    env = {"HOME": str(root), "PATH": str(root / "no-bin"), "COLUMNS": "100"}
    out, err = io.StringIO(), io.StringIO()
    with (
        mock.patch.dict(os.environ, env),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        pytest.raises(SystemExit) as exit_,
    ):
        main(["--data-dir", str(root / "data"), *command, *args])
    code = exit_.value.code
    assert code in (0, 1, 2), (code, err.getvalue())
    assert "Traceback" not in err.getvalue()
    if "cao: error:" in err.getvalue():  # an error is one line, and the only one
        assert err.getvalue().strip().count("\n") == 0, err.getvalue()
    # The doctor's own exit 2 means "errors found" (on stdout); any other 2 is bad input.
    doctor_verdict = "--doctor" in args and any(
        mark in out.getvalue() for mark in ("error(s)", '"result"')
    )
    if code == 2 and not doctor_verdict:
        assert err.getvalue().startswith("cao: error:"), err.getvalue()
    assert_no_secret(out.getvalue() + err.getvalue(), f"cao {command} {args}")
    assert_private(root / "data")


# -- security ------------------------------------------------------------------------------------


def test_leak_checks_are_armed(accounts: Path) -> None:
    """The suite-wide leak check knows the tokens of the accounts tests write, and catches one."""
    token = json.loads((accounts / "a" / "auth.json").read_text())["tokens"]["access_token"]
    assert token in ISSUED_SECRETS
    with pytest.raises(AssertionError, match="shows a token"):
        assert_no_secret(f"log line Bearer {token}", "a log")


@pytest.mark.parametrize("mode", ["redirect", "inline"])
def test_a_storm_of_upstream_401s_never_marks_needs_login_nor_reaches_codex(
    accounts: Path, upstream: FakeUpstream, mode: str
) -> None:
    """The upstream refuses every token (an outage), the token endpoint keeps giving new ones:
    no account is marked "needs login" (only the token endpoint's own verdict means that),
    they cool instead, and Codex never gets a 401 (it would refresh its own login)."""
    from tests.test_refresh_e2e import refreshed_tokens

    unauthorized = b'{"error": {"code": "token_expired", "message": "expired"}}'
    upstream.defaults[None] = Answer("status", status=401, body=unauthorized)
    for name in ("a", "b"):  # each refresh token gets new tokens, as the real endpoint does
        refresh = json.loads((accounts / name / "auth.json").read_text())["tokens"]
        upstream.oauth_by_token[refresh["refresh_token"]] = (200, refreshed_tokens(name))
    with GatewayProcess(
        accounts, upstream.url, "--auth-url", upstream.url, "--retry-mode", mode
    ) as gw:
        codes = [turn(gw.base, f"storm{n}").status_code for n in range(12)]
        status = {a["name"]: a for a in httpx.get(gw.base + "/__cao/status").json()["accounts"]}
    assert 401 not in codes, codes
    assert set(codes) <= {503, 429}, codes
    assert not any(a["needs_login"] for a in status.values()), status
    assert {a["status"] for a in status.values()} == {"cooling"}
    assert "needs login" not in gw.output
