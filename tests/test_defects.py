"""Issue 15's defects, one test each, found by using cao as a new user would and by feeding it
the files real users have. Each failed on main before its fix."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from cao.addons.livepool import LivePool
from cao.config.quota import reset_from_text
from cao.config.store import Store
from tests.fakes.upstream import FakeUpstream
from tests.gateway_proc import GatewayProcess
from tests.helpers import cao_env, run_cao, write_account

NOW = datetime(2026, 12, 2, 10, 0).astimezone()


# 1. Weekly limits are retried every 15 minutes ---------------------------------------------------


@pytest.mark.parametrize(
    ("printed", "expected"),
    [
        ("or try again at 5:34 PM.", datetime(2026, 12, 2, 17, 34)),  # the same day
        ("Try again at 9:05 AM.", datetime(2026, 12, 3, 9, 5)),  # capital T; tomorrow
        ("or try again at Dec 4th, 2026 12:00 AM.", datetime(2026, 12, 4, 0, 0)),  # another day
        ("or try again at Jan 2nd, 2027 3:05 AM.", datetime(2027, 1, 2, 3, 5)),  # another year
        ("try again at Dec 5th 6:14 AM", datetime(2026, 12, 5, 6, 14)),  # no year
        ("or try again at Dec 11th, 2026 12:30 PM.", datetime(2026, 12, 11, 12, 30)),
    ],
)
def test_every_reset_form_codex_prints(printed: str, expected: datetime) -> None:
    resets_at = reset_from_text(f"You've hit your usage limit. Upgrade to Pro {printed}", NOW)
    assert resets_at == expected.astimezone().timestamp()


def test_a_printed_time_in_the_past_is_not_believed() -> None:
    assert reset_from_text("try again at Dec 1st, 2026 1:00 AM.", NOW) is None


# 3. A state file that is valid JSON but odd ----------------------------------------------------


def test_odd_state_values_never_crash_a_command(data_dir: Path, upstream: FakeUpstream) -> None:
    write_account(data_dir, "a")
    odd = {
        "accounts": {
            "a": {
                "usage": {
                    "5h": {"used_percent": 40, "resets_at": 2e9},
                    "300": {"used_percent": "x"},
                    "10080": {"used_percent": 120, "resets_at": 1e300},
                    "0": {"used_percent": 5},
                    "x": [],
                },
                "cooling_until": float("nan"),
                "last_used": 1e308,
                "last_quota_hit": True,
            }
        },
        "switches": [{"at": 1e300}, "no", {"at": 5, "reason": 3}],
    }
    (data_dir / "cao-state.json").write_text(json.dumps(odd))
    for args in (["list"], ["list", "--json"], ["status"], ["status", "--json"]):
        result = run_cao(data_dir, *args)
        assert result.returncode == 0, (args, result.stderr)
        assert "Traceback" not in result.stderr
    doctor = run_cao(data_dir, "status", "--doctor")
    assert doctor.returncode in (0, 1, 2) and "Traceback" not in doctor.stderr
    usage = json.loads(run_cao(data_dir, "list", "--json").stdout)[0]["usage"]
    assert set(usage) == {"10080"} and usage["10080"]["used_percent"] == 100
    with GatewayProcess(data_dir, upstream.url) as gw:  # and the gateway starts
        assert httpx.get(gw.base + "/__cao/status").status_code == 200


# 4. A removed account comes back ----------------------------------------------------------------


def test_a_queued_write_does_not_bring_a_removed_account_back(data_dir: Path) -> None:
    write_account(data_dir, "a")
    write_account(data_dir, "gone")
    live = LivePool(Store(data_dir))
    live.views()
    result = run_cao(data_dir, "remove", "gone")  # removed on disk, the gateway not told
    assert result.returncode == 0
    live.mark_cooling("gone", time.time() + 60, "quota")  # a usage write already queued
    live.mark_cooling("a", time.time() + 60, "quota")
    live.wait_written()
    accounts = json.loads((data_dir / "cao-state.json").read_text())["accounts"]
    assert "gone" not in accounts and "a" in accounts
    live.flush()


def test_a_corrupt_registry_is_restored_from_the_newest_good_content(
    data_dir: Path, upstream: FakeUpstream, fake_codex_path: Path
) -> None:
    """The gateway read [a, b]; `cao add c` wrote [a, b, c]; then the file was damaged before
    the gateway read it again: c survives."""
    write_account(data_dir, "a")
    write_account(data_dir, "b")
    with GatewayProcess(data_dir, upstream.url) as gw:
        assert httpx.get(gw.base + "/__cao/status").status_code == 200  # it has read [a, b]
        env = cao_env(data_dir, PATH=f"{fake_codex_path}:/usr/bin:/bin")
        assert run_cao(data_dir, "add", "c", env=env).returncode == 0
        (data_dir / "registry.json").write_text("{ damaged")
        names = [a["name"] for a in httpx.get(gw.base + "/__cao/status").json()["accounts"]]
    assert names == ["a", "b", "c"]
    registry = json.loads((data_dir / "registry.json").read_text())
    assert registry["accounts"] == ["a", "b", "c"]
    assert list(data_dir.glob("registry.json.corrupt-*"))  # the damaged file is kept aside


# 2. A data dir of the original tool loses accounts -----------------------------------------------


def test_an_original_data_dir_keeps_every_account(data_dir: Path) -> None:
    """Names outside cao's alphabet that are safe directory names are accounts like any other;
    an entry that is no safe name is never used as a path but never dropped either."""
    write_account(data_dir, "me")
    home = write_account(data_dir, "alice.work")
    assert home.name == "alice.work"
    registry = {"default_account": "alice.work", "accounts": ["alice.work", "me", "../evil"]}
    (data_dir / "registry.json").write_text(json.dumps(registry))
    listed = run_cao(data_dir, "list")
    assert "alice.work" in listed.stdout and listed.returncode == 0
    assert listed.stderr.count("../evil") == 1  # said once, not per read
    assert run_cao(data_dir, "current").stdout == "alice.work\n"
    assert run_cao(data_dir, "use", "me").returncode == 0
    kept = json.loads((data_dir / "registry.json").read_text())
    assert kept == {"default_account": "me", "accounts": ["alice.work", "me", "../evil"]}
    assert run_cao(data_dir, "use", "alice.work").returncode == 0


def test_fix_lines_work_for_names_starting_with_a_dash(data_dir: Path) -> None:
    (data_dir / "-x").mkdir(mode=0o700)
    (data_dir / "registry.json").write_text(json.dumps({"accounts": ["-x"]}))
    listed = json.loads(run_cao(data_dir, "list", "--json").stdout)
    assert listed[0]["fix"] == "cao add -- -x"


# 7. Help text ----------------------------------------------------------------------------------


def test_help_reads_right_at_80_columns(data_dir: Path) -> None:
    env = cao_env(data_dir, COLUMNS="80")
    run_help = run_cao(data_dir, "run", "--help", env=env).stdout
    assert "--no-fallback" in run_help and "--no-no-fallback" not in run_help
    flat = " ".join(run_help.split())
    assert "under `[run]` in <data dir>/cao.toml" in flat  # not eaten as markup
    assert "Gateway URL (with --gateway; default http://127.0.0.1:4319)" in flat
    start_help = run_cao(data_dir, "gateway", "start", "--help", env=env).stdout
    assert "--passthrough-auth" in start_help and "…" not in start_help
    assert all(len(line) <= 80 for line in (run_help + start_help).splitlines())
    for args in ([], ["gateway"]):
        bare = run_cao(data_dir, *args, env=env)
        assert bare.returncode == 0 and "Usage: cao" in bare.stdout and "error" not in bare.stderr


# 8. Where the gateway is -------------------------------------------------------------------------


def test_one_rule_for_the_gateway_the_user_means(
    data_dir: Path, upstream: FakeUpstream, fake_codex_path: Path, tmp_path: Path
) -> None:
    write_account(data_dir, "a")
    bin_dir = tmp_path / "shim-bin"
    env = cao_env(data_dir, PATH=f"{fake_codex_path}:/usr/bin:/bin")
    enable = ["gateway", "enable", "--bin-dir", str(bin_dir)]
    assert run_cao(data_dir, *enable, "--url", "http://127.0.0.1:9", env=env).returncode == 0
    down = run_cao(data_dir, "gateway", "status", "--bin-dir", str(bin_dir), env=env)
    assert down.returncode == 1
    start = f"cao --data-dir {data_dir} gateway start --port 9 --daemon"
    assert f"not answering at http://127.0.0.1:9 (start it with `{start}`)" in down.stderr
    with GatewayProcess(data_dir, upstream.url) as gw:
        assert run_cao(data_dir, *enable, "--url", gw.url, env=env).returncode == 0
        up = run_cao(data_dir, "gateway", "status", "--bin-dir", str(bin_dir), env=env)
        assert up.returncode == 0 and f"up at {gw.url}" in up.stderr  # the shim's, not 4319
        status = json.loads(
            run_cao(data_dir, "status", "--json", "--bin-dir", str(bin_dir), env=env).stdout
        )
        assert status["gateway"]["url"] == gw.url and status["gateway"]["running"]


# 9. Small messages -------------------------------------------------------------------------------


def test_gateway_status_without_a_gateway_gives_reasons_and_fixes(data_dir: Path) -> None:
    write_account(data_dir, "a")
    (data_dir / "b").mkdir(mode=0o700)
    registry = json.loads((data_dir / "registry.json").read_text())
    registry["accounts"].append("b")
    (data_dir / "registry.json").write_text(json.dumps(registry))
    down = run_cao(data_dir, "gateway", "status", "--url", "http://127.0.0.1:9")
    assert "  b: not logged in: run `cao add b`" in down.stderr.splitlines()


def test_a_listener_that_never_answers_is_given_up_on_quickly(data_dir: Path) -> None:
    """Against a listener that accepts and never answers, a command takes at most ~0.5 s more
    than against a closed port (measured in the same run: Python's start-up cancels out)."""
    import socket

    write_account(data_dir, "a")
    with socket.socket() as silent, socket.socket() as closed:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        closed.bind(("127.0.0.1", 0))  # bound, not listening: connection refused
        for command in (["gateway", "status"], ["status"]):
            times = {}
            for name, sock in (("closed", closed), ("silent", silent)):
                url = f"http://127.0.0.1:{sock.getsockname()[1]}"
                started = time.monotonic()
                result = run_cao(data_dir, *command, "--url", url)
                times[name] = time.monotonic() - started
                assert "Traceback" not in result.stderr
            assert times["silent"] - times["closed"] < 0.8, (command, times)


def test_ipv6_loopback_host_as_written_in_a_url(data_dir: Path, upstream: FakeUpstream) -> None:
    import socket

    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    write_account(data_dir, "a")
    with GatewayProcess(data_dir, upstream.url, "--host", "[::1]") as gw:
        assert gw.url.startswith("http://[::1]:")
        assert httpx.get(gw.base + "/__cao/status").status_code == 200


def test_small_messages(data_dir: Path, fake_codex_path: Path) -> None:
    env = cao_env(data_dir, PATH=f"{fake_codex_path}:/usr/bin:/bin")
    bad_url = run_cao(data_dir, "gateway", "status", "--url", "ftp://x", env=env)
    assert bad_url.returncode == 2 and "such as http://127.0.0.1:4319" in bad_url.stderr
    dash = run_cao(data_dir, "add", "--no-login", "--", "-x", env=env)
    assert dash.returncode == 2 and dash.stderr.count("\n") == 1
    for name in ("a", "b", "c"):
        run_cao(data_dir, "add", name, "--no-login", env=env)
    kept = run_cao(data_dir, "remove", "c", env=env)
    assert "default account" not in kept.stderr  # a stays the default: nothing to say
    moved = run_cao(data_dir, "remove", "a", env=env)
    assert "default account: b" in moved.stderr


def test_a_corrupt_auth_json_is_reported_when_the_gateway_finds_it(
    data_dir: Path, upstream: FakeUpstream
) -> None:
    write_account(data_dir, "a")
    write_account(data_dir, "b")
    (data_dir / "b" / "auth.json").write_text("{ not json")
    with GatewayProcess(data_dir, upstream.url) as gw:
        line = gw.wait_for_log(r"account b: its auth.json is unreadable")
    assert "run `cao add b`" in line
