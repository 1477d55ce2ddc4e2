"""`cao` account commands, run as a subprocess against a fake `codex` that records its calls."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.helpers import (
    assert_private,
    auth_document,
    cao_env,
    run_cao,
    start_fake_daemon,
    write_account,
)


@pytest.fixture
def env(data_dir: Path, fake_codex_path: Path, tmp_path: Path) -> dict[str, str]:
    return cao_env(
        data_dir,
        PATH=f"{fake_codex_path}{os.pathsep}{os.environ['PATH']}",
        FAKE_CODEX_LOG=str(tmp_path / "codex.log"),
    )


def codex_calls(tmp_path: Path) -> list[dict[str, object]]:
    log = tmp_path / "codex.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_add_runs_login_in_account_home(
    data_dir: Path, env: dict[str, str], tmp_path: Path
) -> None:
    r = run_cao(data_dir, "add", "work", env=env)
    assert r.returncode == 0, r.stderr
    assert "logged in work as work@example.com" in r.stderr
    assert codex_calls(tmp_path) == [
        {"args": ["login"], "codex_home": str(data_dir / "work"), "isatty": [False, False]}
    ]
    registry = json.loads((data_dir / "registry.json").read_text())
    assert registry == {"default_account": "work", "accounts": ["work"]}
    assert_private(data_dir)


def test_add_device_auth_and_existing_name_relogs(
    data_dir: Path, env: dict[str, str], tmp_path: Path
) -> None:
    assert run_cao(data_dir, "add", "a", "--no-login", env=env).returncode == 0
    assert codex_calls(tmp_path) == []
    r = run_cao(data_dir, "add", "a", "--device-auth", env=env)
    assert r.returncode == 0, r.stderr
    assert codex_calls(tmp_path)[-1]["args"] == ["login", "--device-auth"]
    assert json.loads((data_dir / "registry.json").read_text())["accounts"] == ["a"]


def test_add_with_explicit_codex(data_dir: Path, tmp_path: Path, fake_codex_path: Path) -> None:
    env = cao_env(data_dir, PATH="/usr/bin:/bin", FAKE_CODEX_LOG=str(tmp_path / "codex.log"))
    r = run_cao(data_dir, "add", "a", "--codex", str(fake_codex_path / "codex"), env=env)
    assert r.returncode == 0, r.stderr
    assert codex_calls(tmp_path)[0]["codex_home"] == str(data_dir / "a")


def test_add_without_codex_explains_install(data_dir: Path) -> None:
    r = run_cao(data_dir, "add", "a", env=cao_env(data_dir, PATH="/usr/bin:/bin"))
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "cao: error: codex not found on PATH: install it with `npm install -g @openai/codex`, "
        "or pass --codex PATH"
    ]
    assert not (data_dir / "a").exists()


def test_failed_login_is_reported(data_dir: Path, env: dict[str, str]) -> None:
    r = run_cao(data_dir, "add", "a", env={**env, "FAKE_CODEX_EXIT": "3"})
    assert r.returncode == 1
    assert "codex login exited with code 3; run `cao add a` to try again" in r.stderr


@pytest.mark.parametrize("name", ["../x", "a/b", "", "a b", "wоrk", "-x", ".hidden"])
def test_bad_names_refused_in_one_line(data_dir: Path, env: dict[str, str], name: str) -> None:
    r = run_cao(data_dir, "add", "--no-login", "--", name, env=env)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1
    assert "letters a-z/A-Z, digits, '_', '-', '.'" in r.stderr
    assert "Traceback" not in r.stderr
    assert list(data_dir.iterdir()) == [] or not (data_dir / "registry.json").exists()


def test_first_account_is_default_then_use_current(data_dir: Path, env: dict[str, str]) -> None:
    for name in ("a", "b"):
        assert run_cao(data_dir, "add", name, "--no-login", env=env).returncode == 0
    assert run_cao(data_dir, "current", env=env).stdout == "a\n"
    assert run_cao(data_dir, "use", "b", env=env).returncode == 0
    assert run_cao(data_dir, "current", env=env).stdout == "b\n"
    r = run_cao(data_dir, "use", "nope", env=env)
    assert r.returncode == 1 and "no account named 'nope' (accounts: a, b)" in r.stderr


def test_current_with_no_accounts(data_dir: Path) -> None:
    r = run_cao(data_dir, "current")
    assert r.returncode == 1 and "cao add NAME" in r.stderr


def test_switch_without_tty_points_to_use(data_dir: Path) -> None:
    write_account(data_dir, "a")
    r = run_cao(data_dir, "switch")
    assert r.returncode == 2
    assert "use `cao use NAME` instead" in r.stderr


def test_list_json_and_table(data_dir: Path) -> None:
    write_account(data_dir, "a", exp=4_000_000_000, plan="pro")
    write_account(data_dir, "b")
    (data_dir / "b" / "auth.json").write_text("{oops")
    (data_dir / "c").mkdir(mode=0o700)
    reg = json.loads((data_dir / "registry.json").read_text())
    reg["accounts"].append("c")
    (data_dir / "registry.json").write_text(json.dumps(reg))

    r = run_cao(data_dir, "list", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [(x["name"], x["default"], x["status"]) for x in rows] == [
        ("a", True, "usable"),
        ("b", False, "unreadable auth.json"),
        ("c", False, "not logged in"),
    ]
    assert rows[0]["email"] == "a@example.com"
    assert rows[0]["plan"] == "pro"
    assert rows[0]["token_expires_at"] == 4_000_000_000
    assert rows[2]["fix"] == "cao add c"
    assert "SECRET" not in r.stdout

    table = run_cao(data_dir, "list", env={**cao_env(data_dir), "COLUMNS": "160"})
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[1].split()[:3] == ["*", "a", "usable"]
    assert "a@example.com" in lines[1] and "pro" in lines[1]
    assert "unreadable auth.json (not valid JSON)" in table.stdout
    assert "not logged in: run `cao add c`" in table.stdout


def test_remove_default_and_keep_files(data_dir: Path) -> None:
    for name in ("a", "b", "c"):
        write_account(data_dir, name)
    r = run_cao(data_dir, "remove", "a")
    assert r.returncode == 0, r.stderr
    assert not (data_dir / "a").exists()
    assert json.loads((data_dir / "registry.json").read_text()) == {
        "default_account": "b",
        "accounts": ["b", "c"],
    }
    assert run_cao(data_dir, "remove", "c", "--keep-files").returncode == 0
    assert (data_dir / "c" / "auth.json").exists()
    assert run_cao(data_dir, "remove", "zzz").returncode == 1


def test_remove_stops_the_codex_daemon_of_the_home(data_dir: Path, tmp_path: Path) -> None:
    """Verified by process: a Codex app-server daemon running from the home is gone after
    `cao remove` (Codex's own `daemon stop` is not trusted: it leaves its pid-update loop)."""
    home = write_account(data_dir, "a")
    daemon = start_fake_daemon(tmp_path, home)
    try:
        assert run_cao(data_dir, "remove", "a").returncode == 0
        assert daemon.wait(10) is not None
        assert not (data_dir / "a").exists()
    finally:
        if daemon.poll() is None:
            daemon.kill()


def test_remove_never_follows_a_symlinked_home(data_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    (data_dir / "link").symlink_to(outside)
    (data_dir / "registry.json").write_text('{"default_account": "link", "accounts": ["link"]}')
    assert run_cao(data_dir, "remove", "link").returncode == 0
    assert (outside / "precious").read_text() == "keep me"


def test_import_copies_login(data_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "dot-codex"
    source.mkdir()
    (source / "auth.json").write_text(json.dumps(auth_document("me")))
    r = run_cao(data_dir, "import", "mine", "--from", str(source))
    assert r.returncode == 0, r.stderr
    assert "share one login" in r.stderr
    assert (data_dir / "mine" / "auth.json").read_bytes() == (source / "auth.json").read_bytes()
    assert_private(data_dir)
    again = run_cao(data_dir, "import", "mine", "--from", str(source))
    assert again.returncode == 1 and "--force" in again.stderr
    assert run_cao(data_dir, "import", "mine", "--from", str(source), "--force").returncode == 0


@pytest.mark.parametrize("content", [None, "{bad", '{"tokens": null}'])
def test_import_refuses_what_is_no_login(
    data_dir: Path, tmp_path: Path, content: str | None
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    if content is not None:
        (src / "auth.json").write_text(content)
    r = run_cao(data_dir, "import", "x", "--from", str(src))
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (data_dir / "x").exists()


def test_global_data_dir_option_and_version(tmp_path: Path) -> None:
    other = tmp_path / "other"
    r = run_cao(tmp_path, "--data-dir", str(other), "add", "z", "--no-login")
    assert r.returncode == 0, r.stderr
    assert (other / "z" / "config.toml").exists()
    v = run_cao(tmp_path, "--version")
    assert v.returncode == 0 and v.stdout.startswith("cao 0.")


def test_unknown_command_and_option_are_one_line(data_dir: Path) -> None:
    for args in (["frob"], ["list", "--bogus"], ["add"]):
        r = run_cao(data_dir, *args)
        assert r.returncode == 2
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_the_same_chatgpt_account_twice_is_flagged(
    data_dir: Path, tmp_path: Path, fake_codex_path: Path
) -> None:
    """The browser still signed in to one account: `cao add` a second name gets the same
    account_id. add, import and the doctor say so, with the fix."""
    env = cao_env(data_dir, PATH=f"{fake_codex_path}:/usr/bin:/bin", FAKE_CODEX_ACCOUNT_ID="acct-1")
    assert run_cao(data_dir, "add", "work", env=env).stderr.count("same ChatGPT account") == 0
    second = run_cao(data_dir, "add", "personal", env=env)
    assert second.returncode == 0
    assert "accounts work, personal are the same ChatGPT account" in second.stderr
    assert "cao add personal" in second.stderr
    source = tmp_path / "elsewhere"
    source.mkdir()
    (source / "auth.json").write_text((data_dir / "work" / "auth.json").read_text())
    imported = run_cao(data_dir, "import", "third", "--from", str(source), env=env)
    assert "same ChatGPT account" in imported.stderr
    doctor = run_cao(data_dir, "status", "--doctor", "--json", env=env)
    checks = json.loads(doctor.stdout)["checks"]
    same = [c for c in checks if "same ChatGPT account" in c["message"]]
    assert same and same[0]["level"] == "warning" and same[0]["fix"].startswith("log ")
