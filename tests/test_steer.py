"""Pause, unpause, cooldown clear: parsing WHEN, the state file, the one routing rule, the CLI."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from cao.addons.routing import choose_account
from cao.cli.fallback import candidates
from cao.cli.steer import parse_when
from cao.config.auth import AccountAuth, LoginState
from cao.config.errors import InvalidInput
from cao.config.pool import AccountView, Availability, account_summary, earliest_reset
from cao.config.state import AccountState, PoolState, Switch
from tests.helpers import run_cao, write_account

NOW = datetime(2026, 12, 6, 17, 30, 0, tzinfo=timezone(timedelta(hours=1)))
T = NOW.timestamp()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2h", 7200), ("30m", 1800), ("1d", 86400), ("1h30m", 5400), ("45s", 45), ("2W", 14 * 86400)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_when(text, NOW) == T + seconds


def test_clock_times_today_or_tomorrow() -> None:
    assert parse_when("18:00", NOW) == T + 1800
    assert parse_when("17:00", NOW) == T + 86400 - 1800  # past today: tomorrow
    assert parse_when("17:30", NOW) == T + 86400  # now itself is past
    tomorrow = datetime(2026, 12, 7, 9, 5, 30, tzinfo=NOW.tzinfo)
    assert parse_when("9:05:30", NOW) == tomorrow.timestamp()


def test_iso_date_times() -> None:
    local = datetime(2026, 12, 24, 9, 0, tzinfo=NOW.tzinfo).timestamp()
    assert parse_when("2026-12-24T09:00", NOW) == local
    assert parse_when("2026-12-24 09:00", NOW) == local
    assert parse_when("2026-12-24T08:00:00Z", NOW) == local  # its own zone wins
    assert parse_when("2026-12-24", NOW) == local - 9 * 3600


@pytest.mark.parametrize(
    "text", ["", "bogus", "2x", "-2h", "0m", "25:00", "18:60", "2020-01-01", "99999d", "1e3"]
)
def test_bad_when_is_one_clear_error(text: str) -> None:
    with pytest.raises(InvalidInput) as error:
        parse_when(text, NOW)
    assert "--until" in str(error.value) and "\n" not in str(error.value)


def view(name: str, **state: object) -> AccountView:
    auth = AccountAuth(LoginState.LOGGED_IN, access_token="t")
    return AccountView(name, False, Path("/x") / name, auth, AccountState(**state))  # type: ignore[arg-type]


def test_a_paused_account_is_out_of_rotation() -> None:
    paused = view("a", paused=True)
    assert paused.availability(T) is Availability.PAUSED
    assert not paused.usable(T)
    assert choose_account([paused, view("b")], T).account.name == "b"  # type: ignore[union-attr]
    summary = account_summary(paused, T)
    assert (summary["status"], summary["paused"], summary["paused_until"]) == ("paused", True, None)


def test_a_pause_until_a_time_ends_by_itself() -> None:
    timed = view("a", paused=True, paused_until=T + 60)
    assert not timed.usable(T)
    assert timed.usable(T + 61)
    assert account_summary(timed, T)["paused_until"] == T + 60
    assert account_summary(timed, T + 61)["paused"] is False
    # It is when the pool is usable again, if nothing comes back sooner.
    assert earliest_reset([timed], T) == T + 60
    assert earliest_reset([view("b", paused=True)], T) is None


def test_a_conversation_on_a_paused_account_finishes_its_turn_then_moves() -> None:
    views = [view("a", paused=True), view("b")]
    mid = choose_account(views, T, current="a", continuation=True, mid_turn=True)
    assert mid.account is not None and mid.account.name == "a" and mid.moved_from is None
    # A compacted conversation (continuation without a turn in flight) does not stay.
    moved = choose_account(views, T, current="a", continuation=True)
    assert moved.account is not None and moved.account.name == "b"
    assert (moved.moved_from, moved.reason) == ("a", "paused")
    # Paused and cooling: nothing more goes to it, mid-turn or not.
    cooling = [view("a", paused=True, cooling_until=T + 60), view("b")]
    choice = choose_account(cooling, T, current="a", continuation=True, mid_turn=True)
    assert choice.account is not None and choice.account.name == "b"


def test_cao_run_never_picks_a_paused_account() -> None:
    views = [view("a", paused=True), view("b"), view("c", cooling_until=T + 60)]
    assert [v.name for v in candidates(views, None, T)] == ["b"]
    assert [v.name for v in candidates(views, "a", T)] == ["b"]  # named first: still paused


def test_state_file_stays_compatible() -> None:
    # Written by an older cao (or the original tool): no pause fields, switches without a
    # conversation.
    old = {"accounts": {"a": {"cooling_until": None}}, "switches": [
        {"at": 1.0, "from_account": "a", "to_account": "b", "reason": "quota"}]}  # fmt: skip
    state = PoolState.parse(old)
    assert state.get("a").paused is False and state.get("a").paused_until is None
    assert state.switches[0].conversation is None
    # Garbage in the new fields reads as "not paused", never as an error.
    odd = PoolState.parse({"accounts": {"a": {"paused": "yes", "paused_until": "soon"}}})
    assert odd.get("a").is_paused(T) is False
    state.account("a").paused = True
    state.record_switch(Switch(2.0, "a", "b", "paused", "conv-1"))
    again = PoolState.parse(json.loads(json.dumps(state.dump())))
    assert again.get("a").paused is True
    assert again.switches[-1].conversation == "conv-1"


def test_commands(data_dir: Path) -> None:
    write_account(data_dir, "a")
    write_account(data_dir, "b")
    result = run_cao(data_dir, "pause", "a", "--until", "2h")
    assert result.returncode == 0, result.stderr
    assert "paused a until" in result.stderr
    listed = {a["name"]: a for a in json.loads(run_cao(data_dir, "list", "--json").stdout)}
    assert listed["a"]["status"] == "paused"
    assert abs(listed["a"]["paused_until"] - (time.time() + 7200)) < 60
    assert "paused until" in run_cao(data_dir, "list").stdout
    bad = run_cao(data_dir, "pause", "a", "--until", "soonish")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    assert run_cao(data_dir, "pause", "nobody").returncode == 1
    assert run_cao(data_dir, "unpause", "a").stderr == "unpaused a\n"
    assert run_cao(data_dir, "unpause", "a").stderr == "a was not paused\n"
    # A cooldown ends early; the reading that said the account was used up goes with it.
    state = {"accounts": {"b": {
        "cooling_until": time.time() + 3600, "cooling_reason": "quota",
        "usage": {"300": {"used_percent": 100, "resets_at": time.time() + 3600},
                  "10080": {"used_percent": 40, "resets_at": time.time() + 86400}}}}}  # fmt: skip
    (data_dir / "cao-state.json").write_text(json.dumps(state))
    assert run_cao(data_dir, "cooldown", "clear", "b").stderr == "cleared b's cooldown\n"
    listed = {a["name"]: a for a in json.loads(run_cao(data_dir, "list", "--json").stdout)}
    assert listed["b"]["status"] == "usable"
    assert list(listed["b"]["usage"]) == ["10080"]
    assert run_cao(data_dir, "cooldown", "clear", "b").stderr == "b was not cooling down\n"
    # The state file stays private and whole.
    assert (data_dir / "cao-state.json").stat().st_mode & 0o077 == 0


def test_a_running_gateway_sees_a_change_even_with_the_same_fingerprint(data_dir: Path) -> None:
    """Two writes in one clock tick, of one size, on a reused inode look alike to stat(): a
    file read in the moment it changed is read again until it is older than that moment."""
    import os

    from cao.addons.livepool import LivePool
    from cao.config.store import Store

    write_account(data_dir, "a")
    path = data_dir / "cao-state.json"
    path.write_text(json.dumps({"accounts": {"a": {"paused": False}}}))
    pool = LivePool(Store(data_dir))
    assert pool.view("a").usable(time.time())  # type: ignore[union-attr]
    before = path.stat()
    with path.open("r+") as f:  # same inode, same size, same mtime: stat() cannot tell
        f.write(json.dumps({"accounts": {"a": {"paused": True}}}) + " ")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size
    view = pool.view("a")
    assert view is not None and view.availability(time.time()) is Availability.PAUSED


def test_cao_run_skips_a_paused_account(data_dir: Path, tmp_path: Path) -> None:
    from tests.helpers import FAKE_CODEX, cao_env

    for name in ("a", "b"):
        write_account(data_dir, name)
    run_cao(data_dir, "pause", "a")
    log = tmp_path / "codex.log"
    env = cao_env(data_dir, FAKE_CODEX_LOG=str(log))

    def cao_run(*args: str) -> tuple[int, str, list[str]]:
        log.unlink(missing_ok=True)
        r = run_cao(data_dir, "run", "--codex", str(FAKE_CODEX), *args, "--", "exec", "x", env=env)
        lines = log.read_text().splitlines() if log.exists() else []
        return r.returncode, r.stderr, [Path(json.loads(x)["codex_home"]).name for x in lines]

    assert cao_run()[0::2] == (0, ["b"])
    code, err, homes = cao_run("--account", "a")
    assert (code, homes) == (0, ["b"]) and "account a is paused: not used" in err
    code, err, homes = cao_run("--no-fallback")  # the default (a) is paused: not taken silently
    assert code == 1 and homes == [] and "`cao unpause a`" in err
    code, err, homes = cao_run("--no-fallback", "--account", "a")  # named: run, with a warning
    assert (code, homes) == (0, ["a"]) and "running it because --account names it" in err


def test_doctor_says_when_no_account_is_in_rotation(data_dir: Path) -> None:
    write_account(data_dir, "a")
    run_cao(data_dir, "pause", "a")
    r = run_cao(data_dir, "status", "--doctor", "--json")
    checks = json.loads(r.stdout)["checks"]
    assert {"level": "warning", "message": "no account is in rotation: paused: a",
            "fix": "cao unpause a"} in checks  # fmt: skip
