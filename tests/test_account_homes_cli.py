"""Account homes through the CLI (with the recording fake codex): the user's setup synced by
`cao add`/`cao run`, broken homes shown and skipped, names that differ only in case, logins
kept in the OS keyring, login hints, Codex processes stopped, sessions of every home."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from cao.cli.daemons import codex_processes
from tests.helpers import (
    Terminal,
    auth_document,
    cao_env,
    run_cao,
    start_fake_daemon,
    write_account,
)


@pytest.fixture
def user_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    (home / ".codex").mkdir(parents=True)
    (home / ".codex" / "config.toml").write_text('model = "gpt-user"\n')
    return home


@pytest.fixture
def env(data_dir: Path, fake_codex_path: Path, user_home: Path, tmp_path: Path) -> dict[str, str]:
    environment = cao_env(
        data_dir,
        HOME=str(user_home),
        PATH=f"{fake_codex_path}:{os.environ['PATH']}",
        FAKE_CODEX_LOG=str(tmp_path / "codex.log"),
    )
    environment.pop("CODEX_HOME", None)
    return environment


def calls(tmp_path: Path) -> list[dict[str, object]]:
    log = tmp_path / "codex.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


# -- one Codex setup -----------------------------------------------------------------------------


def test_add_and_run_sync_the_users_codex_setup(
    data_dir: Path, env: dict[str, str], user_home: Path
) -> None:
    assert run_cao(data_dir, "add", "a", "--no-login", env=env).returncode == 0
    assert 'model = "gpt-user"' in (data_dir / "a" / "config.toml").read_text()
    (user_home / ".codex" / "config.toml").write_text('model = "gpt-user-2"\n')
    write_account(data_dir, "b")
    assert run_cao(data_dir, "run", "--", "exec", "hi", env=env).returncode == 0
    for name in ("a", "b"):
        assert 'model = "gpt-user-2"' in (data_dir / name / "config.toml").read_text()


def test_run_moves_past_an_account_whose_config_does_not_parse(
    data_dir: Path, env: dict[str, str], tmp_path: Path
) -> None:
    write_account(data_dir, "a")
    write_account(data_dir, "b")
    (data_dir / "a" / "config.toml").write_text("model = \n")
    result = run_cao(data_dir, "run", "--", "exec", "hi", env=env)
    assert result.returncode == 0, result.stderr
    skipped = [line for line in result.stderr.splitlines() if "account a" in line]
    assert len(skipped) == 1 and "skipping account a" in skipped[0]
    assert "config.toml does not parse" in skipped[0]
    assert [c["codex_home"] for c in calls(tmp_path)] == [str(data_dir / "b")]
    listed = run_cao(data_dir, "list", env=env)
    assert "broken config.toml" in listed.stdout
    assert "account a:" in listed.stderr and "does not parse" in listed.stderr
    as_json = json.loads(run_cao(data_dir, "list", "--json", env=env).stdout)
    assert "does not parse" in as_json[0]["config_problem"]
    assert as_json[1]["config_problem"] is None
    no_fallback = run_cao(data_dir, "run", "--no-fallback", "--account", "a", env=env)
    assert no_fallback.returncode == 1 and "does not parse" in no_fallback.stderr


# -- names ---------------------------------------------------------------------------------------


def test_a_name_that_differs_only_in_case_is_refused(data_dir: Path, env: dict[str, str]) -> None:
    assert run_cao(data_dir, "add", "Work", "--no-login", env=env).returncode == 0
    result = run_cao(data_dir, "add", "work", "--no-login", env=env)
    assert result.returncode == 2 and "differs from it only in case" in result.stderr
    assert run_cao(data_dir, "import", "WORK", "--from", "/nonexistent", env=env).returncode == 2
    assert run_cao(data_dir, "add", "Work", "--no-login", env=env).returncode == 0  # itself


def test_the_original_tools_case_twins_are_kept_with_a_warning(
    data_dir: Path, env: dict[str, str]
) -> None:
    write_account(data_dir, "Work")
    write_account(data_dir, "work")
    result = run_cao(data_dir, "list", env=env)
    assert result.returncode == 0
    assert "Work" in result.stdout and "work" in result.stdout
    assert "differ only in case" in result.stderr


# -- logins --------------------------------------------------------------------------------------


def keyring_home(tmp_path: Path) -> Path:
    source = tmp_path / "mac-codex"
    source.mkdir()
    (source / "config.toml").write_text('cli_auth_credentials_store = "keyring"\n')
    return source


def test_import_from_a_keyring_home_says_what_to_do(
    data_dir: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    source = keyring_home(tmp_path)
    env = {**env, "PATH": "/usr/bin:/bin"}  # no `security`, no `secret-tool`
    result = run_cao(data_dir, "import", "me", "--from", str(source), env=env)
    assert result.returncode == 1
    assert "OS keyring" in result.stderr and "`cao add me`" in result.stderr
    assert "--device-auth" in result.stderr and "No such file" not in result.stderr


def test_import_reads_the_keyring_where_a_reader_is_installed(
    data_dir: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    """libsecret's `secret-tool` (a stand-in here: none is installed on this machine) is asked
    for Codex's entry of that home: service "Codex Auth", account "cli|<sha256 prefix>"."""
    from cao.cli.logins import keyring_account

    source = keyring_home(tmp_path)
    tools = tmp_path / "tools"
    tools.mkdir()
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps(auth_document("kc")))
    tool = tools / "secret-tool"
    tool.write_text(
        "#!/bin/sh\n"
        f'[ "$1 $2 $3 $4 $5" = "lookup service Codex Auth username {keyring_account(source)}" ]'
        f" && exec cat {secret}\nexit 1\n"
    )
    tool.chmod(0o755)
    env = {**env, "PATH": f"{tools}:/usr/bin:/bin"}
    result = run_cao(data_dir, "import", "me", "--from", str(source), env=env)
    assert result.returncode == 0, result.stderr
    assert "OS keyring (secret-tool)" in result.stderr
    imported = json.loads((data_dir / "me" / "auth.json").read_text())
    assert imported["tokens"]["account_id"] == "acct-kc"
    assert oct((data_dir / "me" / "auth.json").stat().st_mode & 0o777) == "0o600"


def test_a_failed_login_names_the_cao_command_with_its_flag(
    data_dir: Path, env: dict[str, str]
) -> None:
    env = {
        **env,
        "FAKE_CODEX_EXIT": "1",
        "FAKE_CODEX_MESSAGE": "Error: on a remote machine, use `codex login --device-auth` instead",
    }
    result = run_cao(data_dir, "add", "dev", "--device-auth", env=env)
    assert result.returncode == 1
    assert "run `cao add dev --device-auth` to try again" in result.stderr
    # Codex's own advice (it would log in ~/.codex) shows the command for this account.
    assert "use `cao add dev --device-auth` instead" in result.stderr
    assert "codex login --device-auth" not in result.stderr
    plain = run_cao(data_dir, "add", "web", env={**env, "FAKE_CODEX_MESSAGE": "boom"})
    assert "run `cao add web` to try again" in plain.stderr


def test_ctrl_c_during_login_says_the_account_is_not_logged_in(
    data_dir: Path, env: dict[str, str]
) -> None:
    term = Terminal(data_dir, "dev", command="add", env={**env, "FAKE_CODEX_LOGIN_WAIT": "60"})
    try:
        term.expect("instead.")
        term.send(b"\x03")
        term.expect("try again", timeout=15)
        code = term.proc.wait(15)
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
    output = term.output.decode()
    assert "Use `cao add dev --device-auth` instead." in output  # not `codex login ...`
    assert code == 130
    assert "dev is not logged in; run `cao add dev --device-auth` to try again" in output
    assert not (data_dir / "dev" / "auth.json").exists()


# -- nothing left running -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [[], ["--no-fallback"]])
def test_run_stops_the_daemon_codex_leaves(
    data_dir: Path, env: dict[str, str], mode: list[str]
) -> None:
    home = write_account(data_dir, "a")
    result = run_cao(data_dir, "run", *mode, "--", "exec", "hi",
                     env={**env, "FAKE_CODEX_DAEMON": "1"})  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert codex_processes(home) == []


def test_run_leaves_the_daemon_another_codex_still_uses(
    data_dir: Path, env: dict[str, str], tmp_path: Path
) -> None:
    home = write_account(data_dir, "a")
    other = start_fake_daemon(tmp_path, home, "exec", "a long task")  # another Codex there
    daemon = start_fake_daemon(tmp_path, home)
    try:
        assert run_cao(data_dir, "run", "--", "exec", "hi", env=env).returncode == 0
        assert daemon.poll() is None
        other.kill()
        other.wait()
        assert run_cao(data_dir, "run", "--", "exec", "hi", env=env).returncode == 0
        assert daemon.wait(10) is not None
    finally:
        for proc in (other, daemon):
            if proc.poll() is None:
                proc.kill()


def test_remove_refuses_while_codex_runs_on_the_account(
    data_dir: Path, env: dict[str, str], tmp_path: Path
) -> None:
    home = write_account(data_dir, "a")
    tui = start_fake_daemon(tmp_path, home, "resume", "--last")
    try:
        result = run_cao(data_dir, "remove", "a", env=env)
        assert result.returncode == 1 and f"pid {tui.pid}" in result.stderr
        assert home.exists() and tui.poll() is None
    finally:
        tui.kill()
        tui.wait()


# -- sessions ------------------------------------------------------------------------------------


def write_session(home: Path, session_id: str, cwd: str, text: str = "the task") -> Path:
    day = home / "sessions" / "2026" / "12" / "05"
    day.mkdir(parents=True, exist_ok=True)
    path = day / f"rollout-2026-12-05T10-00-00-{session_id}.jsonl"
    meta = {"type": "session_meta", "payload": {"id": session_id, "cwd": cwd,
            "timestamp": "2026-12-05T10:00:00Z"}}  # fmt: skip
    user = {"type": "response_item", "payload": {"type": "message", "role": "user",
            "content": [{"type": "input_text", "text": text}]}}  # fmt: skip
    path.write_text(json.dumps(meta) + "\n" + json.dumps(user) + "\n")
    return path


ONE = "01a2426e-0000-7000-8000-000000000001"
TWO = "01a2426e-1111-7000-8000-000000000002"
OWN = "7f000000-0000-7000-8000-0000000000ff"


def test_sessions_lists_every_home_and_the_users_own(
    data_dir: Path, env: dict[str, str], user_home: Path
) -> None:
    write_session(write_account(data_dir, "a"), ONE, "/src/app")
    write_session(user_home / ".codex", OWN, str(user_home / "proj"), "via the gateway")
    result = run_cao(data_dir, "sessions", env=env)
    assert result.returncode == 0, result.stderr
    assert ONE in result.stdout and OWN in result.stdout
    assert "/src/app" in result.stdout and "via the gateway" in result.stdout
    listed = {
        s["id"]: s for s in json.loads(run_cao(data_dir, "sessions", "--json", env=env).stdout)
    }
    assert listed[OWN]["account"] is None and listed[OWN]["cwd"] == str(user_home / "proj")
    assert listed[ONE]["account"] == "a" and listed[ONE]["cwd"] == "/src/app"


def test_resume_takes_a_unique_prefix(
    data_dir: Path, env: dict[str, str], tmp_path: Path, user_home: Path
) -> None:
    home = write_account(data_dir, "a")
    write_session(home, ONE, "/w")
    write_session(home, TWO, "/w")
    write_session(user_home / ".codex", OWN, "/w")
    ambiguous = run_cao(data_dir, "run", "--resume", "01a2426e", "--", "exec", "go", env=env)
    assert ambiguous.returncode == 2
    assert ONE in ambiguous.stderr and TWO in ambiguous.stderr
    assert len(ambiguous.stderr.strip().splitlines()) == 1
    unique = run_cao(data_dir, "run", "--resume", "01a2426e-1", "--", "exec", "go", env=env)
    assert unique.returncode == 0, unique.stderr
    assert calls(tmp_path)[-1]["args"][-2:] == [TWO, "go"]
    # A session of the user's own CODEX_HOME (gateway mode) continues on an account.
    own = run_cao(data_dir, "run", "--resume", "7F", "--", "exec", "go", env=env)
    assert own.returncode == 0, own.stderr
    assert calls(tmp_path)[-1]["args"][-2:] == [OWN, "go"]
    assert (home / "sessions" / "2026" / "12" / "05").glob(f"*{OWN}.jsonl")
    missing = run_cao(data_dir, "run", "--resume", "abc", env=env)
    assert missing.returncode == 1 and "no session abc" in missing.stderr


def test_codex_processes_finds_by_environment_and_pid_file(tmp_path: Path) -> None:
    home = tmp_path / "h"
    home.mkdir()
    daemon = start_fake_daemon(tmp_path, home)
    try:
        [found] = codex_processes(home)
        assert found.pid == daemon.pid and found.is_daemon
        assert codex_processes(tmp_path / "elsewhere") == []
    finally:
        daemon.kill()
        daemon.wait()
    deadline = time.monotonic() + 5
    while codex_processes(home) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert codex_processes(home) == []


def test_doctor_shows_broken_homes_and_case_twins(
    data_dir: Path, env: dict[str, str], user_home: Path
) -> None:
    write_account(data_dir, "a")
    write_account(data_dir, "A")
    (data_dir / "a" / "config.toml").write_text("model = \n")
    (user_home / ".codex" / "config.toml").write_text("[oops\n")
    result = run_cao(data_dir, "status", "--doctor", "--json", env=env)
    checks = {c["message"]: c for c in json.loads(result.stdout)["checks"]}
    broken = next(m for m in checks if m.startswith("account a:"))
    assert "does not parse" in broken and checks[broken]["level"] == "warning"
    assert checks[broken]["fix"] == f"fix {data_dir / 'a' / 'config.toml'}"
    assert any("differ only in case" in m for m in checks)
    assert any(str(user_home / ".codex" / "config.toml") in m for m in checks)


def test_a_daemon_that_ignores_sigterm_is_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess

    from cao.cli import daemons

    home = tmp_path / "h"
    home.mkdir()
    script = tmp_path / "stubborn" / "codex"
    script.parent.mkdir()
    script.write_text(
        "#!/usr/bin/env python3\nimport signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('up', flush=True)\ntime.sleep(300)\n"
    )
    script.chmod(0o755)
    proc = subprocess.Popen(
        [str(script), "app-server", "--listen", "unix://"], stdout=subprocess.PIPE,
        env={**os.environ, "CODEX_HOME": str(home)}, start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
        monkeypatch.setattr(daemons, "TERM_GRACE", 0.3)
        stopped, left = daemons.stop_daemons(home)
        assert [p.pid for p in stopped] == [proc.pid] and left == []
        assert proc.wait(5) == -9
    finally:
        if proc.poll() is None:
            proc.kill()


def test_without_proc_the_recorded_daemon_is_found_and_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """macOS has no /proc: the pid Codex recorded in <home>/app-server-daemon/daemon.pid,
    checked with `ps`, is what `cao remove` stops."""
    from cao.cli import daemons

    home = tmp_path / "h"
    (home / "app-server-daemon").mkdir(parents=True)
    daemon = start_fake_daemon(tmp_path, home)
    try:
        (home / "app-server-daemon" / "daemon.pid").write_text(json.dumps({"pid": daemon.pid}))
        monkeypatch.setattr(daemons, "PROC", tmp_path / "no-proc")
        [found] = daemons.codex_processes(home)
        assert found.pid == daemon.pid and found.is_daemon
        assert daemons.stop_daemons(home) == ([], [])  # after a run: clients cannot be seen
        reaper = threading.Thread(target=daemon.wait)  # init reaps a real (detached) daemon
        reaper.start()
        assert daemons.stop_processes([found]) == []
        reaper.join(5)
    finally:
        if daemon.poll() is None:
            daemon.kill()
