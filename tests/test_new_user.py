"""Issue 23's defects, found by using cao as a new user would: one test (or a few) per item, each
failing on main before its fix. Real processes where the item is about them."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.upstream import Answer, FakeUpstream
from tests.gateway_proc import GatewayProcess
from tests.helpers import run_cao, wait_for_state, write_account

MODEL = "/backend-api/codex/responses"


def turn(gw: GatewayProcess, conversation: str) -> httpx.Response:
    return httpx.post(
        gw.base + MODEL,
        content=json.dumps({"input": [], "stream": True}),
        headers={"thread-id": conversation, "content-type": "application/json"},
        follow_redirects=True,
        timeout=10,
    )


def served_by(upstream: FakeUpstream) -> str | None:
    return upstream.model_requests()[-1].account_id


def gateway_view(gw: GatewayProcess) -> dict[str, dict[str, Any]]:
    document = httpx.get(gw.base + "/__cao/status", timeout=5).json()
    return {a["name"]: a for a in document["accounts"]}


# 1. A cao command wipes a running gateway's state (data loss) ----------------------------------


def rich_state(now: float) -> dict[str, Any]:
    """Four switches and every account's usage; a's 5h window is spent (until its reset)."""
    soon, later = now + 3 * 3600, now + 3 * 86400
    windows = {"a": (100, 40), "b": (20, 30), "c": (10, 5)}
    return {
        "version": 1,
        "accounts": {
            name: {
                "usage": {
                    "300": {"used_percent": five, "resets_at": soon, "updated_at": now - 60},
                    "10080": {"used_percent": week, "resets_at": later, "updated_at": now - 60},
                }
            }
            for name, (five, week) in windows.items()
        },
        "switches": [
            {"at": now - 400 + i, "from_account": "a", "to_account": "b", "reason": "quota"}
            for i in range(4)
        ],
    }


def holds_everything(document: dict[str, Any]) -> bool:
    accounts = document.get("accounts", {})
    return len(document.get("switches", [])) >= 4 and all(
        accounts.get(n, {}).get("usage", {}).get("300") for n in "abc"
    )


@pytest.mark.parametrize("first", ["cli", "gateway"])
@pytest.mark.parametrize("written_by_cao", [False, True], ids=["hand-written", "cao-written"])
def test_a_cao_command_never_wipes_a_running_gateways_state(
    data_dir: Path, upstream: FakeUpstream, first: str, written_by_cao: bool
) -> None:
    """Gateway running, cao-state.json damaged, then whichever of `cao list` and the gateway
    notices it first: the gateway's copy wins and nothing it held is lost. `cao-written`: the
    state was last written by cao (it has a last good copy); `hand-written`: it has none."""
    for name in "abc":
        write_account(data_dir, name)
    state_file = data_dir / "cao-state.json"
    state_file.write_text(json.dumps(rich_state(time.time())))
    with GatewayProcess(data_dir, upstream.url) as gw:
        assert gateway_view(gw)["a"]["usage"]["300"]["used_percent"] == 100  # it read the file
        if written_by_cao:  # a limit on c (the most headroom): the gateway writes the state
            upstream.queue("acct-c", Answer(kind="quota", resets_at=time.time() + 7200))
            turn(gw, "conv-0")
            wait_for_state(data_dir, lambda d: len(d.get("switches", [])) >= 5)
        state_file.write_text('{"accounts": {"a": {"usage": ')  # damaged by hand
        if first == "gateway":
            gateway_view(gw)
        listed = run_cao(data_dir, "list", "--json")
        assert listed.returncode == 0 and "Traceback" not in listed.stderr
        if first == "cli" and written_by_cao:  # the last good copy: nothing missing even here
            usage = {a["name"]: a["usage"] for a in json.loads(listed.stdout)}
            assert usage["a"]["300"]["used_percent"] == 100
        view = gateway_view(gw)
        assert view["a"]["usage"]["300"]["used_percent"] == 100
        assert view["c"]["usage"]["10080"]["used_percent"] == 5
        on_disk = wait_for_state(data_dir, holds_everything)
        assert len(on_disk["switches"]) == (5 if written_by_cao else 4), on_disk["switches"][-3:]
        # And it stays that way: another command reads it whole, the gateway keeps it.
        assert json.loads(run_cao(data_dir, "list", "--json").stdout)[0]["usage"]["300"]
        turn(gw, "conv-1")
        assert served_by(upstream) != "acct-a"  # a's 5h window is still spent
        gw.wait_for_log("cao-state.json")
    assert list(data_dir.glob("cao-state.json.corrupt-*"))  # the damaged file is kept aside
    assert holds_everything(json.loads(state_file.read_text()))


# 3. A damaged registry.json --------------------------------------------------------------------


def test_a_damaged_registry_without_a_good_copy_finds_the_homes_on_disk(data_dir: Path) -> None:
    for name in ("zed", "alice", "bob"):
        write_account(data_dir, name)
    (data_dir / "registry.json").write_text("{ damaged")  # and no .registry.json.good
    listed = run_cao(data_dir, "list", "--json")
    assert listed.returncode == 0
    assert [a["name"] for a in json.loads(listed.stdout)] == ["alice", "bob", "zed"]
    (line,) = listed.stderr.splitlines()  # one line says what happened
    assert "registry.json was damaged" in line and "rebuilt it from the 3 account homes" in line
    assert "registry.json.corrupt-" in line and "started empty" not in line
    assert json.loads((data_dir / "registry.json").read_text())["accounts"] == [
        "alice",
        "bob",
        "zed",
    ]
    again = run_cao(data_dir, "list")
    assert again.returncode == 0 and again.stderr == ""  # said once: it is repaired


def test_a_damaged_registry_with_a_good_copy_says_one_thing(data_dir: Path) -> None:
    write_account(data_dir, "a")
    write_account(data_dir, "b")
    assert run_cao(data_dir, "use", "b").returncode == 0  # cao writes it: a good copy is kept
    (data_dir / "registry.json").write_text("[")
    listed = run_cao(data_dir, "list", "--json")
    assert [a["name"] for a in json.loads(listed.stdout)] == ["b", "a"]
    (line,) = listed.stderr.splitlines()
    assert "restored the last copy cao wrote" in line and "started empty" not in line


# 2. An account at 100 % counts as usable -------------------------------------------------------


def spend_5h(data_dir: Path, *names: str, resets_in: float = 7200) -> float:
    """Record each account's 5h window at 100 % until `resets_in` from now."""
    now = time.time()
    resets_at = now + resets_in
    window = {"used_percent": 100, "resets_at": resets_at, "updated_at": now}
    accounts = {n: {"usage": {"300": window}} for n in names}
    (data_dir / "cao-state.json").write_text(json.dumps({"version": 1, "accounts": accounts}))
    return resets_at


def test_a_spent_window_is_limited_until_its_reset_everywhere(data_dir: Path) -> None:
    from cao.addons.routing import choose_account
    from cao.config.pool import AccountPool, Strategy

    for name in "abc":
        write_account(data_dir, name)
    spend_5h(data_dir, "a")
    listed = run_cao(data_dir, "list")
    row = next(line for line in listed.stdout.splitlines() if line.startswith("*  a "))
    assert "limited until" in row and "5h 100%" in row and "usable" not in row
    document = json.loads(run_cao(data_dir, "status", "--json").stdout)
    assert document["summary"]["usable"] == 2 and document["summary"]["next_reset"]
    a = document["accounts"][0]
    assert a["status"] == "cooling" and a["cooling_reason"] == "5h window used up"
    assert "2/3 usable" in run_cao(data_dir, "status", "--pretty").stdout
    views = AccountPool(Store_(data_dir)).accounts()
    for strategy in Strategy:
        choice = choose_account(views, time.time(), strategy=strategy, switch_at=95)
        assert choice.account is not None and choice.account.name != "a"
    kept = choose_account(views, time.time(), current="a", continuation=True)
    assert kept.account is not None and kept.account.name != "a"  # even mid-turn


def Store_(data_dir: Path) -> Any:
    from cao.config.store import Store

    return Store(data_dir)


def test_cao_run_skips_a_spent_account_and_starts_none_when_all_are(
    data_dir: Path, tmp_path: Path
) -> None:
    from tests.helpers import FAKE_CODEX, cao_env

    for name in "abc":
        write_account(data_dir, name)
    log = tmp_path / "codex.log"
    env = cao_env(data_dir, FAKE_CODEX_LOG=str(log))
    spend_5h(data_dir, "a")
    run = ["run", "--codex", str(FAKE_CODEX), "--strategy", "order"]
    started = run_cao(data_dir, *run, env=env)
    assert started.returncode == 0, started.stderr
    homes = [Path(json.loads(x)["codex_home"]).name for x in log.read_text().splitlines()]
    assert homes == ["b"]
    log.unlink()
    spend_5h(data_dir, "a", "b", "c")
    refused = run_cao(data_dir, *run, env=env)
    assert refused.returncode == 1 and not log.exists()  # codex never started
    lines = refused.stderr.splitlines()
    assert lines[0] == "cao: every account is limited: codex not started"
    assert "cao: a: limited until" in refused.stderr and "come back at" in lines[-1]


# 8. A skipped pass is said ---------------------------------------------------------------------


def test_a_skipped_pass_is_said(data_dir: Path, tmp_path: Path) -> None:
    from tests.helpers import FAKE_CODEX, cao_env

    for name in "ab":
        write_account(data_dir, name)
    env = cao_env(data_dir, FAKE_CODEX_QUOTA="a,b", FAKE_CODEX_LOG=str(tmp_path / "log"))
    r = run_cao(
        data_dir, "run", "--codex", str(FAKE_CODEX), "--max-passes", "2", "--retry-delay", "5",
        env=env,
    )  # fmt: skip
    assert r.returncode == 1
    assert "cao: pass 2 of 2 skipped: no account is back within --retry-delay 5s" in (
        r.stderr.splitlines()
    )


# 13. A failover waits for the usage poll -------------------------------------------------------


def test_the_usage_poll_never_holds_the_event_loop(data_dir: Path, upstream: FakeUpstream) -> None:
    """In a fresh interpreter (as in a gateway just started, when a switch wakes the poller):
    reading every account's usage holds the event loop no longer than idling does, give or take
    20 ms (on main: 50-110 ms, the poller's client, TLS set-up and imports on the loop)."""
    import subprocess
    import sys

    from tests.fakes.upstream import usage_document
    from tests.helpers import REPO

    for name in "ab":
        write_account(data_dir, name)
        upstream.usage_documents[f"acct-{name}"] = usage_document(10, 300 * 60)
    result = subprocess.run(
        [sys.executable, "-m", "tests.loop_lag", str(data_dir), upstream.url],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    lag = json.loads(result.stdout)
    assert lag["polled"] == 2 and len(upstream.requests) >= 2
    assert lag["poll"] < 0.02 + 2 * lag["idle"], lag


# 14. A live conversation leaves its account before it must -------------------------------------


def usage_headers(percent: float) -> dict[str, str]:
    return {
        "x-codex-primary-used-percent": str(percent),
        "x-codex-primary-window-minutes": "300",
        "x-codex-primary-reset-after-seconds": "3600",
    }


@pytest.mark.parametrize("switch_live", [False, True], ids=["default", "--switch-live"])
def test_a_live_conversation_stays_until_its_account_refuses(
    data_dir: Path, upstream: FakeUpstream, switch_live: bool
) -> None:
    """a passes --switch-at (96 %) during conversation 1: new conversations go to b, conversation
    1 stays on a (its prompt cache) until a answers 429, and moves then. With --switch-live it
    moves at the threshold, as before."""
    write_account(data_dir, "a")
    write_account(data_dir, "b")
    args = ["--strategy", "order", *(["--switch-live"] if switch_live else [])]
    with GatewayProcess(data_dir, upstream.url, *args) as gw:
        upstream.queue("acct-a", Answer(headers=usage_headers(96)))
        turn(gw, "conv-1")
        assert served_by(upstream) == "acct-a"
        turn(gw, "conv-1")  # its next turn
        assert served_by(upstream) == ("acct-b" if switch_live else "acct-a")
        turn(gw, "conv-2")  # a new conversation avoids a
        assert served_by(upstream) == "acct-b"
        if not switch_live:
            upstream.queue("acct-a", Answer(kind="quota", resets_at=time.time() + 3600))
            assert turn(gw, "conv-1").status_code == 200  # refused: now it moves
            assert [r.account_id for r in upstream.model_requests()[-2:]] == ["acct-a", "acct-b"]
        assert gateway_view_doc(gw)["gateway"]["switch_live"] is switch_live


def gateway_view_doc(gw: GatewayProcess) -> dict[str, Any]:
    return httpx.get(gw.base + "/__cao/status", timeout=5).json()  # type: ignore[no-any-return]


# 5. The data dir given ---------------------------------------------------------------------------


def test_one_rule_for_an_empty_data_dir_and_a_line_for_each_fix(
    data_dir: Path, tmp_path: Path
) -> None:
    from tests.helpers import cao_env

    cwd = tmp_path / "cwd"
    cwd.mkdir(mode=0o755)
    for args, env in (
        (["--data-dir", ""], cao_env(data_dir)),
        ([], {**cao_env(data_dir), "CAO_DATA_DIR": ""}),
    ):
        r = run_cao(data_dir, *args, "add", "x", "--no-login", env=env, cwd=cwd)
        assert r.returncode == 2 and "is empty: give a directory" in r.stderr
        assert r.stderr.count("\n") == 1
    assert cwd.stat().st_mode & 0o777 == 0o755 and not (cwd / "x").exists()
    a_file = tmp_path / "file"
    a_file.write_text("")
    r = run_cao(data_dir, "--data-dir", str(a_file), "list")
    assert r.returncode == 2 and r.stderr == f"cao: error: {a_file} is a file, not a data dir\n"
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    r = run_cao(loose, "--data-dir", str(loose), "add", "x", "--no-login")
    assert r.returncode == 0 and f"{loose} was open to others (0755): made it 0700" in r.stderr
    assert loose.stat().st_mode & 0o777 == 0o700


# 6. `cao gateway start` errors ------------------------------------------------------------------


def test_start_errors_are_one_line(data_dir: Path) -> None:
    import socket

    write_account(data_dir, "a")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        web = run_cao(
            data_dir, "gateway", "start", "--port", "0", "--web", "--web-port", str(port),
            timeout=20,
        )  # fmt: skip
    assert web.returncode == 1 and "Traceback" not in web.stderr
    assert web.stderr == (
        f"cao: error: port {port} on 127.0.0.1 is in use (mitmweb's UI: try --web-port)\n"
    )
    mapped = run_cao(data_dir, "gateway", "start", "--port", "0", "--host", "::ffff:127.0.0.1")
    assert mapped.returncode == 2 and mapped.stderr.count("\n") == 1
    assert "use --host 127.0.0.1" in mapped.stderr and "Error logged" not in mapped.stderr


# 4. --report masks email-shaped names -----------------------------------------------------------


def test_the_report_masks_names_that_are_emails(data_dir: Path) -> None:
    write_account(data_dir, "john.doe@example.com")
    (data_dir / "bob@corp.example").mkdir(mode=0o700)  # listed, not logged in: a fix line
    registry = json.loads((data_dir / "registry.json").read_text())
    registry["accounts"].append("bob@corp.example")
    (data_dir / "registry.json").write_text(json.dumps(registry))
    state = {"switches": [{"at": time.time(), "from_account": "bob@corp.example",
                           "to_account": "john.doe@example.com", "reason": "quota"}]}  # fmt: skip
    (data_dir / "cao-state.json").write_text(json.dumps(state))
    for args in (["status", "--report", "md"], ["status", "--report", "json"], ["report"]):
        shown = run_cao(data_dir, *args).stdout
        assert "john.doe" not in shown and "bob@" not in shown, (args, shown)
        assert "j***@example.com" in shown and "b***@corp.example" in shown


# 7. Small messages ------------------------------------------------------------------------------


def test_doctor_and_report_together_are_refused(data_dir: Path) -> None:
    write_account(data_dir, "a")
    r = run_cao(data_dir, "status", "--doctor", "--report", "md")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--doctor goes alone" in r.stderr


def test_importing_an_api_key_login_reads_as_a_sentence(data_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "auth.json"
    source.write_text(json.dumps({"auth_mode": "apikey", "OPENAI_API_KEY": "sk-x", "tokens": None}))
    r = run_cao(data_dir, "import", "x", "--from", str(source))
    assert r.returncode == 2
    assert r.stderr == (
        f"cao: error: {source} holds an API-key login, not a ChatGPT one: cao switches ChatGPT "
        "logins\n"
    )


# 11. The original tool's forms -------------------------------------------------------------------


def test_the_forms_users_type(data_dir: Path) -> None:
    write_account(data_dir, "a")
    write_account(data_dir, "b")
    switched = run_cao(data_dir, "switch", "b")
    assert switched.returncode == 0, switched.stderr
    assert run_cao(data_dir, "current").stdout == "b\n"
    bare = run_cao(data_dir, "status", "--report")
    assert bare.returncode == 0 and bare.stdout.startswith("# cao status")
    assert run_cao(data_dir, "status", "--report", "--url", "http://127.0.0.1:9").returncode == 0
    assert run_cao(data_dir, "report").stdout.startswith("# cao status")
    assert json.loads(run_cao(data_dir, "report", "json").stdout)["version"] == 1
    doctor = run_cao(data_dir, "doctor", "--json")
    assert doctor.returncode in (0, 1, 2) and json.loads(doctor.stdout)["checks"]
    assert run_cao(data_dir, "switch", "nobody").returncode == 1


# 9. Said, not silently accepted ----------------------------------------------------------------


def test_a_misspelt_setting_a_default_without_login_and_a_shared_login_are_said(
    data_dir: Path, tmp_path: Path
) -> None:
    from tests.helpers import FAKE_CODEX, cao_env

    write_account(data_dir, "a")
    (data_dir / "cao.toml").write_text('[run]\nquota_pattern = ["x"]\n')
    home = tmp_path / "home"
    (home / ".codex").mkdir(parents=True)
    env = cao_env(data_dir, HOME=str(home), FAKE_CODEX_LOG=str(tmp_path / "log"))
    ran = run_cao(data_dir, "run", "--codex", str(FAKE_CODEX), env=env)
    assert ran.returncode == 0
    assert "unknown key 'quota_pattern' in [run] (did you mean 'quota_patterns'?)" in ran.stderr
    # The user's CODEX_HOME holds the same login as account a (`cao import a --from ~/.codex`).
    own = Path(env["CODEX_HOME"])
    own.mkdir(parents=True, exist_ok=True)
    (own / "auth.json").write_text((data_dir / "a" / "auth.json").read_text())
    doctor = json.loads(run_cao(data_dir, "doctor", "--json", env=env).stdout)
    messages = [c["message"] for c in doctor["checks"]]
    assert any("account a shares its login with" in m for m in messages), messages
    assert any("unknown key 'quota_pattern'" in m for m in messages), messages
    (data_dir / "b").mkdir(mode=0o700)  # in the registry, never logged in
    registry = json.loads((data_dir / "registry.json").read_text())
    registry["accounts"].append("b")
    (data_dir / "registry.json").write_text(json.dumps(registry))
    used = run_cao(data_dir, "use", "b", env=env)
    assert used.returncode == 0
    assert "cao: warning: account b is not logged in" in used.stderr and "cao add b" in used.stderr


# 10. Help and output at 80 columns --------------------------------------------------------------


def test_help_and_list_fit_80_columns(data_dir: Path) -> None:
    from tests.helpers import cao_env

    env = cao_env(data_dir, COLUMNS="80")
    for name in ("work", "john.doe@example.com", "spare"):
        write_account(data_dir, name)
    spend_5h(data_dir, "work")
    shown = []
    for args in (
        [], ["gateway"], ["--help"], ["gateway", "--help"], ["run", "--help"],
        ["gateway", "start", "--help"], ["status", "--help"], ["add", "--help"], ["list"],
    ):  # fmt: skip
        r = run_cao(data_dir, *args, env=env)
        assert r.returncode == 0, (args, r.stderr)
        shown.append(r.stdout)
        assert "…" not in r.stdout and "<str>" not in r.stdout and "range>" not in r.stdout
        assert all(len(line) <= 80 for line in r.stdout.splitlines()), (args, r.stdout)
    assert "--port PORT" in shown[5] and "--retry-mode redirect|inline" in shown[5]
    assert "letters, digits and _ - . @ +" in shown[7]
    bad = run_cao(data_dir, "run", "--max-passes", "abc", env=env)
    assert "'abc' is not a valid whole number" in bad.stderr


def test_the_dashboard_header_fits_80_columns(data_dir: Path) -> None:
    from tests.helpers import Terminal, cao_env

    write_account(data_dir, "a")
    term = Terminal(data_dir, rows=40, cols=80, command="status", env=cao_env(data_dir))
    term.expect("a@example.com")
    assert term.close() == 0
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", term.output.decode()).replace("\r", "")
    assert text.startswith("cao status  1/1 usable\n  gateway     not answering at http://")
    assert all(len(line) <= 80 for line in text.splitlines())


def test_a_command_that_writes_a_damaged_state_loses_nothing_the_gateway_holds(
    data_dir: Path,
) -> None:
    """`cao run` marks c cooling while the hand-damaged file has no good copy: the gateway
    keeps every account and switch it held, and c's cooldown is kept too."""
    from cao.addons.livepool import LivePool
    from cao.config.pool import AccountPool
    from cao.config.store import Store

    for name in "abc":
        write_account(data_dir, name)
    (data_dir / "cao-state.json").write_text(json.dumps(rich_state(time.time())))
    live = LivePool(Store(data_dir))
    live.views()
    (data_dir / "cao-state.json").write_text("{ damaged")
    AccountPool(Store(data_dir)).mark_cooling("c", time.time() + 600, "quota")  # another process
    views = {v.name: v for v in live.views()}
    assert views["a"].state.usage["300"].used_percent == 100
    assert views["c"].state.cooling(time.time()) and len(live._state.switches) == 4
    live.wait_written()
    document = json.loads((data_dir / "cao-state.json").read_text())
    assert holds_everything(document) and document["accounts"]["c"]["cooling_until"]
    live.flush()
