"""`cao run` with a fake codex: fallback, cooldowns, passes, exit codes, and a real PTY."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import termios
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.helpers import FAKE_CODEX, REPO, Terminal, cao_env, run_cao, write_account
from tests.procinfo import process_state

TTY_CODEX = REPO / "tests" / "fakes" / "tty_codex.py"


@pytest.fixture
def accounts(data_dir: Path) -> Path:
    for name in ("a", "b", "c"):
        write_account(data_dir, name)
    return data_dir


def env_for(data_dir: Path, tmp_path: Path, **extra: str) -> dict[str, str]:
    return cao_env(data_dir, FAKE_CODEX_LOG=str(tmp_path / "codex.log"), **extra)


def calls(tmp_path: Path) -> list[dict[str, object]]:
    log = tmp_path / "codex.log"
    return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []


def homes(tmp_path: Path) -> list[str]:
    return [Path(str(c["codex_home"])).name for c in calls(tmp_path)]


def cao_run(
    data_dir: Path, tmp_path: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    return run_cao(
        data_dir, "run", "--codex", str(FAKE_CODEX), *args, env=env_for(data_dir, tmp_path, **env)
    )


def state(data_dir: Path) -> dict[str, dict[str, object]]:
    return json.loads((data_dir / "cao-state.json").read_text())["accounts"]  # type: ignore[no-any-return]


def test_quota_moves_to_next_account_with_same_args(accounts: Path, tmp_path: Path) -> None:
    r = cao_run(accounts, tmp_path, "--", "codex", "exec", "summarize README", FAKE_CODEX_QUOTA="a")
    assert r.returncode == 0, r.stderr
    assert homes(tmp_path) == ["a", "b"]
    assert [c["args"] for c in calls(tmp_path)] == [["exec", "summarize README"]] * 2
    assert "account a hit its usage limit" in r.stderr and "running codex on account b" in r.stderr
    assert "codex working on a" in r.stdout and "codex working on b" in r.stdout
    # "try again at 5:34 AM": cooling until the next 5:34 local time.
    until = datetime.fromtimestamp(float(state(accounts)["a"]["cooling_until"]))  # type: ignore[arg-type]
    assert (until.hour, until.minute) == (5, 34)
    assert 0 < until.timestamp() - time.time() <= 86400


def test_cooldown_is_respected_on_the_next_run(accounts: Path, tmp_path: Path) -> None:
    cao_run(accounts, tmp_path, FAKE_CODEX_QUOTA="a")
    r = cao_run(accounts, tmp_path)
    assert r.returncode == 0
    assert homes(tmp_path) == ["a", "b", "b"]
    listed = json.loads(run_cao(accounts, "list", "--json").stdout)
    assert listed[0]["status"] == "cooling"


def test_passes_and_retry_delay(accounts: Path, tmp_path: Path) -> None:
    """A second pass when an account is back by then (cooldowns of 1 s, a delay of 2 s)."""
    started = time.monotonic()
    r = cao_run(
        accounts,
        tmp_path,
        "--max-passes",
        "2",
        "--retry-delay",
        "2",
        "--cooldown-seconds",
        "1",
        FAKE_CODEX_QUOTA="a,b,c",
        FAKE_CODEX_QUOTA_TEXT="usage_limit_reached",
    )
    assert r.returncode == 1
    assert homes(tmp_path) == ["a", "b", "c", "a", "b", "c"]
    assert time.monotonic() - started >= 2
    assert "pass 2 of 2 in 2s" in r.stderr
    summary = [line for line in r.stderr.splitlines() if "cooling until" in line]
    assert [line.split(":")[1].strip() for line in summary] == ["a", "b", "c"]


def test_no_pass_that_cannot_succeed_and_the_true_reason(data_dir: Path, tmp_path: Path) -> None:
    """Resets hours away and the default delay of 0: no second pass; each account says why it
    cannot run (a login that is missing is not a usage limit) and when to come back."""
    write_account(data_dir, "a")
    write_account(data_dir, "b")
    (data_dir / "c").mkdir(mode=0o700)  # listed, never logged in
    registry = json.loads((data_dir / "registry.json").read_text())
    registry["accounts"].append("c")
    (data_dir / "registry.json").write_text(json.dumps(registry))
    r = cao_run(data_dir, tmp_path, FAKE_CODEX_QUOTA="a,b")
    assert r.returncode == 1
    assert homes(tmp_path) == ["a", "b"]  # no pass 2: both reset at 5:34 AM, hours away
    assert "pass 2 of 2 in" not in r.stderr
    lines = r.stderr.splitlines()
    assert "cao: pass 2 of 2 skipped: no account is back within --retry-delay 0s" in lines
    assert any(line.startswith("cao: a: cooling until") for line in lines)
    assert "cao: c: not logged in: run `cao add c`" in lines
    assert any("come back at" in line for line in lines)


def test_single_pass(accounts: Path, tmp_path: Path) -> None:
    r = cao_run(accounts, tmp_path, "--max-passes", "1", FAKE_CODEX_QUOTA="a,b,c")
    assert r.returncode == 1 and homes(tmp_path) == ["a", "b", "c"]


@pytest.mark.parametrize("code", ["0", "3"])
def test_exit_codes_pass_through(accounts: Path, tmp_path: Path, code: str) -> None:
    r = cao_run(accounts, tmp_path, FAKE_CODEX_EXIT=code)
    assert r.returncode == int(code) and homes(tmp_path) == ["a"]


def test_killed_codex_gives_128_plus_signal(accounts: Path, tmp_path: Path) -> None:
    script = tmp_path / "suicidal-codex"
    script.write_text("#!/bin/sh\nkill -TERM $$\n")
    script.chmod(0o755)
    r = run_cao(accounts, "run", "--codex", str(script))
    assert r.returncode == 128 + signal.SIGTERM


@pytest.mark.parametrize(
    "message",
    [
        "error: context window exceeded",
        "Quota: 3 files exceeded the limit",
        "stream error: exceeded retry limit, last status: 500",
    ],
)
def test_ordinary_errors_do_not_fall_back(accounts: Path, tmp_path: Path, message: str) -> None:
    r = cao_run(accounts, tmp_path, FAKE_CODEX_EXIT="1", FAKE_CODEX_MESSAGE=message)
    assert r.returncode == 1 and homes(tmp_path) == ["a"]


def test_usage_message_with_exit_zero_is_not_a_quota_hit(accounts: Path, tmp_path: Path) -> None:
    r = cao_run(accounts, tmp_path, FAKE_CODEX_MESSAGE="usage limit has been reached")
    assert r.returncode == 0 and homes(tmp_path) == ["a"]


def test_user_patterns_from_data_dir(accounts: Path, tmp_path: Path) -> None:
    (accounts / "cao.toml").write_text('[run]\nquota_patterns = ["out of juice"]\n')
    r = cao_run(accounts, tmp_path, FAKE_CODEX_QUOTA="a", FAKE_CODEX_QUOTA_TEXT="out of JUICE")
    assert r.returncode == 0 and homes(tmp_path) == ["a", "b"]
    (accounts / "cao.toml").write_text('[run]\nquota_patterns = ["(unclosed"]\n')
    bad = cao_run(accounts, tmp_path)
    assert bad.returncode == 1 and "bad quota pattern" in bad.stderr
    (accounts / "cao.toml").write_text("run = 3\n")
    bad = cao_run(accounts, tmp_path)
    assert bad.returncode == 1 and "must be a list of strings" in bad.stderr
    help_text = run_cao(accounts, "run", "--help", env=cao_env(accounts, COLUMNS="200")).stdout
    assert "quota_patterns" in help_text and "cao.toml" in help_text


def test_skips_needs_login_and_starts_at_account(accounts: Path, tmp_path: Path) -> None:
    (accounts / "cao-state.json").write_text(
        json.dumps({"accounts": {"a": {"needs_login": "refresh_token_reused"}}})
    )
    assert cao_run(accounts, tmp_path).returncode == 0
    assert cao_run(accounts, tmp_path, "--account", "c").returncode == 0
    assert homes(tmp_path) == ["b", "c"]


def test_no_fallback_runs_exactly_that_account(accounts: Path, tmp_path: Path) -> None:
    r = cao_run(accounts, tmp_path, "--no-fallback", "--account", "b", FAKE_CODEX_QUOTA="b")
    assert r.returncode == 1 and homes(tmp_path) == ["b"]
    r = cao_run(accounts, tmp_path, "--no-fallback")
    assert homes(tmp_path)[-1] == "a"
    assert not (accounts / "cao-state.json").exists()  # nothing watched, nothing recorded


def test_gateway_mode_adds_override_and_warns(accounts: Path, tmp_path: Path) -> None:
    r = cao_run(
        accounts, tmp_path, "--gateway", "--gateway-url", "http://127.0.0.1:9", "--", "exec", "hi"
    )
    assert r.returncode == 0
    assert "no gateway answers at http://127.0.0.1:9" in r.stderr
    assert calls(tmp_path)[0]["args"] == [
        "-c",
        'openai_base_url="http://127.0.0.1:9/backend-api/codex"',  # = cao gateway url, no key
        "exec",
        "hi",
    ]


def test_bad_input(accounts: Path, tmp_path: Path) -> None:
    for args, text in (
        (["--account", "../x"], "invalid account name"),
        (["--account", "zz"], "no account named"),
        (["--max-passes", "0"], "max-passes"),
        (["--retry-delay", "-1"], "retry-delay"),
    ):
        r = cao_run(accounts, tmp_path, *args)
        assert r.returncode in (1, 2) and text in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    r = run_cao(tmp_path / "nothing", "run", "--codex", str(FAKE_CODEX))
    assert r.returncode == 1 and "cao add NAME" in r.stderr


# -- a real pseudo-terminal -----------------------------------------------------------------------


def test_pty_relay_is_a_real_terminal(accounts: Path) -> None:
    term = Terminal(accounts, "--codex", str(TTY_CODEX), rows=30, cols=100)
    before = termios.tcgetattr(term.master)
    term.expect("isatty stdin=True stdout=True size=30x100")
    term.expect("ready")
    term.resize(40, 120)
    term.expect("winch 40x120")
    term.send(b"\x03")  # Ctrl-C, passed through raw to Codex's terminal
    term.expect("got sigint")
    assert term.proc.wait(15) == 130
    assert termios.tcgetattr(term.master) == before  # raw mode undone
    term.close()


def test_pty_output_arrives_before_exit(accounts: Path, tmp_path: Path) -> None:
    script = tmp_path / "slow-codex"
    script.write_text("#!/bin/sh\necho first-line\nsleep 2\necho second-line\nexit 0\n")
    script.chmod(0o755)
    term = Terminal(accounts, "--codex", str(script))
    first = term.expect("first-line")
    second = term.expect("second-line")
    assert second - first > 1.5
    assert term.close() == 0


def test_pty_fallback_keeps_the_terminal(accounts: Path, tmp_path: Path) -> None:
    script = tmp_path / "quota-then-tty"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$(basename $CODEX_HOME)" = a ]; then echo "You\'ve hit your usage limit."; '
        "exit 1; fi\n"
        f"exec {TTY_CODEX}\n"
    )
    script.chmod(0o755)
    term = Terminal(accounts, "--codex", str(script))
    term.expect("running codex on account b")
    term.expect("isatty stdin=True stdout=True")
    term.send(b"\x03")
    term.expect("got sigint")
    assert term.close() == 130


def test_pty_ctrl_z_stops_and_fg_resumes(accounts: Path) -> None:
    term = Terminal(accounts, "--codex", str(TTY_CODEX))
    term.expect("ready")
    term.send(b"\x1a")  # Ctrl-Z: Codex stops, and cao stops with it, as a shell expects
    deadline = time.monotonic() + 10
    while process_state(term.proc.pid) != "T":
        assert time.monotonic() < deadline, "cao did not stop"
        time.sleep(0.05)
    os.kill(term.proc.pid, signal.SIGCONT)  # what `fg` does
    term.expect("resumed")  # cao woke Codex up
    term.send(b"\x03")
    term.expect("got sigint")
    assert term.close() == 130


def test_the_strategy_orders_the_accounts_too(accounts: Path, tmp_path: Path) -> None:
    """With readings, the default strategy (headroom) starts on the account with the most
    quota left; --strategy order keeps fallback order."""
    later = time.time() + 3600
    usage = {"300": {"used_percent": 80.0, "resets_at": later, "updated_at": time.time()}}
    state = {"accounts": {"a": {"usage": usage}, "b": {"usage": {
        "300": {**usage["300"], "used_percent": 30.0}}}}}  # fmt: skip
    (accounts / "cao-state.json").write_text(json.dumps(state))
    cao_run(accounts, tmp_path, "--", "exec", "x")
    assert homes(tmp_path)[-1] == "c"  # no reading: all of its quota left
    cao_run(accounts, tmp_path, "--strategy", "order", "--", "exec", "x")
    assert homes(tmp_path)[-1] == "a"
