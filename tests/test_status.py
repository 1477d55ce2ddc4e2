"""`cao status`: the JSON document, compact lines, the masked report, the dashboard, the doctor."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.upstream import FakeUpstream
from tests.gateway_proc import GatewayProcess
from tests.helpers import FAKE_CODEX, cao_env, run_cao, write_account
from tests.test_run import Terminal

NOW = time.time()


@pytest.fixture
def world(data_dir: Path, tmp_path: Path, fake_codex_path: Path) -> dict[str, Any]:
    """A data dir with an account in each state, and a HOME/PATH of its own."""
    global NOW
    NOW = time.time()  # relative times in the output are checked against it
    write_account(data_dir, "good")
    write_account(data_dir, "expiring", exp=NOW + 120)
    write_account(data_dir, "lost")
    write_account(data_dir, "cool")
    write_account(data_dir, "stale")
    (data_dir / "nologin").mkdir(mode=0o700)
    registry = json.loads((data_dir / "registry.json").read_text())
    registry["accounts"].append("nologin")
    (data_dir / "registry.json").write_text(json.dumps(registry))
    window = {"used_percent": 60.0, "resets_at": NOW + 2 * 3600 + 900, "updated_at": NOW - 60}
    weekly = {"used_percent": 20.0, "resets_at": NOW + 4 * 86400, "updated_at": NOW - 60}
    state = {
        "accounts": {
            "good": {"usage": {"300": window, "10080": weekly}, "last_used": NOW - 300},
            "lost": {"needs_login": "refresh_token_reused"},
            "cool": {
                "cooling_until": NOW + 3600, "cooling_reason": "quota",
                "last_quota_hit": NOW - 120,
            },
            "stale": {"usage": {"300": {"used_percent": 99.0, "resets_at": NOW - 60}}},
        },
        "switches": [
            {"at": NOW - 7200 + i, "from_account": "good", "to_account": "cool", "reason": "quota"}
            for i in range(8)
        ] + [{"at": NOW - 60, "from_account": "cool", "to_account": "good", "reason": "threshold"}],
    }  # fmt: skip
    (data_dir / "cao-state.json").write_text(json.dumps(state))
    home = tmp_path / "home"
    (home / ".local" / "bin").mkdir(parents=True)
    env = cao_env(
        data_dir,
        HOME=str(home),
        PATH=f"{home / '.local' / 'bin'}:{fake_codex_path}:/usr/bin:/bin",
        COLUMNS="100",
    )
    return {"data": data_dir, "env": env, "home": home, "bin": home / ".local" / "bin"}


def status(world: dict[str, Any], *args: str, private: bool = True, **env: str) -> Any:
    return run_cao(
        world["data"], "status", *args, env={**world["env"], **env}, check_private=private
    )


def by_name(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["name"]: a for a in document["accounts"]}


def test_json_has_every_state(world: dict[str, Any]) -> None:
    r = status(world, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["version"] == 1
    assert doc["gateway"] == {
        "url": "http://127.0.0.1:4319", "running": False, "version": None, "upstream": None,
        "retry_mode": None,
    }  # fmt: skip
    assert doc["shim"]["enabled"] is False
    assert doc["summary"]["accounts"] == 6 and doc["summary"]["usable"] == 3
    assert doc["summary"]["next_reset"] == pytest.approx(NOW + 3600)
    accounts = by_name(doc)
    assert list(accounts) == ["good", "expiring", "lost", "cool", "stale", "nologin"]
    good = accounts["good"]
    assert good["default"] and good["status"] == "usable" and good["email"] == "good@example.com"
    assert good["plan"] == "plus" and good["can_refresh"] and not good["token_expired"]
    assert [(w["label"], w["used_percent"], w["reset"]) for w in good["windows"]] == [
        ("5h", 60.0, False), ("weekly", 20.0, False),
    ]  # fmt: skip
    assert good["last_used"] == pytest.approx(NOW - 300)
    assert accounts["expiring"]["token_expires_at"] == pytest.approx(NOW + 120, abs=1)
    assert accounts["lost"]["status"] == "needs login" and accounts["lost"]["fix"] == "cao add lost"
    assert not accounts["lost"]["can_refresh"]
    cool = accounts["cool"]
    assert cool["status"] == "cooling" and cool["cooling_reason"] == "quota"
    assert cool["cooling_until"] == pytest.approx(NOW + 3600)
    assert cool["last_quota_hit"] == pytest.approx(NOW - 120)
    # A window past its reset says "reset", not its old 99 %.
    assert accounts["stale"]["windows"][0]["reset"] is True
    assert accounts["stale"]["windows"][0]["used_percent"] is None
    assert accounts["stale"]["status"] == "usable"
    assert accounts["nologin"]["status"] == "not logged in"
    # Every switch, newest first.
    assert len(doc["switches"]) == 9
    assert doc["switches"][0] == {
        "at": pytest.approx(NOW - 60),
        "from": "cool",
        "to": "good",
        "reason": "threshold",
        "conversation": None,  # not recorded by older versions
    }
    assert "SECRET" not in r.stdout


def test_compact_lines_off_a_terminal(world: dict[str, Any]) -> None:
    r = status(world)
    lines = r.stdout.splitlines()
    assert lines[0] == "gateway not answering at http://127.0.0.1:4319; codex shim not enabled"
    assert len(lines) == 7
    assert lines[1].startswith("* good: usable, 5h 60% (resets in 2h1")
    assert "weekly 20% (resets in 3d23h)" in lines[1] or "weekly 20% (resets in 4d0h)" in lines[1]
    assert "lost: needs login: run `cao add lost`" in r.stdout
    assert "cool: cooling until" in r.stdout and "(quota)" in r.stdout
    assert "stale: usable, 5h reset" in r.stdout
    assert "nologin: not logged in: run `cao add nologin`" in r.stdout
    assert status(world, "--compact").stdout == r.stdout


def test_masked_report(world: dict[str, Any]) -> None:
    md = status(world, "--report", "md")
    assert md.returncode == 0
    assert "g***@example.com" in md.stdout and "good@example.com" not in md.stdout
    assert "| * | good | g***@example.com | plus | usable | 60% (resets in 2h" in md.stdout
    assert "acct-" not in md.stdout and str(world["data"]) not in md.stdout
    assert "cool -> good (threshold)" in md.stdout
    report = json.loads(status(world, "--report", "json").stdout)
    assert {a["email"] for a in report["accounts"]} >= {"g***@example.com", "c***@example.com"}
    assert "data_dir" not in report and "path" not in report["shim"]
    assert all("account_id" not in a and "home" not in a for a in report["accounts"])
    text = json.dumps(report)
    assert "@example.com" in text and "good@example.com" not in text and "SECRET" not in text


def test_dashboard_in_a_fixed_width_terminal(world: dict[str, Any]) -> None:
    r = status(world, "--pretty")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "cao status" in out and "3/6 usable" in out
    assert "* good  good@example.com  plus  usable" in out
    good = out[out.index("* good") : out.index("expiring")]
    assert "█" * 12 + "░" * 8 in good and "60%  resets in 2h1" in good
    assert ("█" * 4 + "░" * 16 in good and "resets in 3d23h" in good) or "resets in 4d0h" in good
    assert "last used 5m ago" in good
    cool = out[out.index("cool  cool@") :]
    assert "last quota hit 2m ago" in cool
    stale = out[out.index("stale  stale@") :]
    assert "reset" in stale.splitlines()[1] and "99%" not in stale
    # The dashboard shows the last five switches; --full every one.
    assert out.count("good → cool") == 4 and "cool → good" in out
    assert status(world, "--full").stdout.count("good → cool") == 8


def test_dashboard_is_the_default_on_a_terminal(world: dict[str, Any]) -> None:
    term = Terminal(world["data"], rows=50, cols=100, command="status", env=world["env"])
    term.expect("recent switches")
    assert term.close() == 0
    assert "█" in term.output.decode() and "resets in" in term.output.decode()


def test_conflicting_flags(world: dict[str, Any]) -> None:
    r = status(world, "--json", "--compact")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "choose one" in r.stderr
    r = status(world, "--report", "pdf")
    assert r.returncode == 2 and r.stderr.count("\n") == 1


# -- the doctor -----------------------------------------------------------------------------------


def doctor(world: dict[str, Any], private: bool = True, **env: str) -> Any:
    r = status(world, "--doctor", "--json", private=private, **env)
    return r.returncode, json.loads(r.stdout)["checks"], r


def problems(checks: list[dict[str, Any]]) -> dict[str, tuple[str, str | None]]:
    return {c["message"]: (c["level"], c["fix"]) for c in checks if c["level"] != "ok"}


def healthy(world: dict[str, Any]) -> None:
    for name in ("expiring", "lost", "cool", "stale", "nologin"):
        run_cao(world["data"], "remove", name, env=world["env"])
    (world["data"] / "cao-state.json").unlink()


def test_doctor_all_fine(world: dict[str, Any]) -> None:
    healthy(world)
    code, checks, _ = doctor(world)
    assert code == 0 and problems(checks) == {}, checks
    assert checks[0]["message"].startswith("codex-cli 0.0.0-fake at ")
    text = status(world, "--doctor")
    assert text.returncode == 0 and text.stdout.strip().endswith("all fine")


def test_doctor_account_warnings(world: dict[str, Any]) -> None:
    code, checks, _ = doctor(world)
    assert code == 1
    found = problems(checks)
    assert found["account lost needs login (refresh_token_reused): a refresh cannot save its "
                 "tokens"] == ("warning", "cao add lost")  # fmt: skip
    assert found["account nologin: not logged in"] == ("warning", "cao add nologin")
    text = status(world, "--doctor")
    assert text.returncode == 1
    assert "! account nologin: not logged in\n    fix: cao add nologin" in text.stdout


def test_doctor_all_cooling(world: dict[str, Any]) -> None:
    healthy(world)
    until = time.time() + 1800
    (world["data"] / "cao-state.json").write_text(
        json.dumps({"accounts": {"good": {"cooling_until": until, "cooling_reason": "quota"}}})
    )
    code, checks, _ = doctor(world)
    assert code == 1
    [(message, (_, fix))] = problems(checks).items()
    assert message.startswith("every account is cooling down; the first is back in 29m")
    assert fix is not None and "wait" in fix


def test_doctor_codex_missing(world: dict[str, Any]) -> None:
    healthy(world)
    code, checks, _ = doctor(world, PATH="/usr/bin:/bin")
    assert code == 2
    assert problems(checks)["codex not found on PATH"] == ("error", "npm install -g @openai/codex")


def test_doctor_shim_without_gateway_and_path_order(world: dict[str, Any]) -> None:
    healthy(world)
    run_cao(world["data"], "gateway", "enable", "--url", "http://127.0.0.1:9", env=world["env"])
    code, checks, _ = doctor(world)
    assert code == 2, checks
    found = problems(checks)
    message = (
        "the codex shim routes Codex to http://127.0.0.1:9 but no gateway answers there (the "
        "shim starts one, but the IDE extension and the desktop app do not)"
    )
    # The fix starts the gateway where the shim points (port 9), not at the default, for
    # this data dir (the line works pasted into any shell).
    data = f"cao --data-dir {world['data']}"
    assert found[message] == (
        "error",
        f"{data} gateway start --port 9 --daemon   (or `{data} gateway disable`)",
    )
    # Asking another gateway (--url) does not hide that the shim's has none.
    r = status(world, "--doctor", "--json", "--url", "http://127.0.0.1:1")
    assert r.returncode == 2 and message in r.stdout
    doc = json.loads(status(world, "--json").stdout)
    assert doc["shim"]["enabled"] and doc["shim"]["url"] == "http://127.0.0.1:9"
    assert doc["gateway"]["url"] == "http://127.0.0.1:9"  # the URL the shim uses is the one asked
    # The real codex's dir before the shim's: the shim is never run.
    fake_dir = str(FAKE_CODEX.parent)
    env_path = f"{world['env']['PATH'].split(':', 1)[1]}:{world['bin']}"
    _, checks, _ = doctor(world, PATH=env_path)
    shadowed = [m for m in problems(checks) if "comes before" in m]
    assert shadowed and problems(checks)[shadowed[0]][1].startswith('export PATH="')
    assert fake_dir  # (the fake codex is reached through a symlink dir)


def test_doctor_loose_permissions(world: dict[str, Any]) -> None:
    healthy(world)
    token = world["data"] / "good" / "auth.json"
    token.chmod(0o644)
    (world["data"] / "good").chmod(0o755)
    code, checks, _ = doctor(world, private=False)
    assert code == 2
    found = problems(checks)
    assert found[f"{token} (login tokens) is readable by others"] == ("error", f"chmod 600 {token}")
    assert (
        found[f"{world['data'] / 'good'} is readable by others"][1]
        == f"chmod 700 {world['data'] / 'good'}"
    )


def test_doctor_sees_a_readable_gateway_key_or_shim(world: dict[str, Any]) -> None:
    healthy(world)
    run_cao(world["data"], "gateway", "enable", "--url", "http://127.0.0.1:9", env=world["env"])
    key, shim = world["data"] / "gateway.key", world["bin"] / "codex"
    assert (
        oct(key.stat().st_mode & 0o777) == "0o600" and oct(shim.stat().st_mode & 0o777) == "0o700"
    )
    key.chmod(0o644)
    shim.chmod(0o755)
    code, checks, _ = doctor(world, private=False)
    found = problems(checks)
    assert code == 2
    assert found[f"{shim} (the codex shim, with the key) is readable by others"] == (
        "error",
        f"chmod go-rwx {shim}",
    )
    assert oct(key.stat().st_mode & 0o777) == "0o600"  # cao tightens the key when it reads it


def test_status_sees_a_running_gateway(world: dict[str, Any], upstream: FakeUpstream) -> None:
    healthy(world)
    with GatewayProcess(world["data"], upstream.url, env=world["env"]) as gw:
        run_cao(world["data"], "gateway", "enable", "--url", gw.url, env=world["env"])
        doc = json.loads(status(world, "--json").stdout)
        assert doc["gateway"]["running"] is True and doc["gateway"]["url"] == gw.url
        assert doc["gateway"]["upstream"] == upstream.url
        assert status(world, "--doctor").returncode == 0
        assert status(world).stdout.startswith(f"gateway up at {gw.url} (cao ")
