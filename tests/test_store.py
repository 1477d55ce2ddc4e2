"""The on-disk store: names, registry compatibility, locking, atomic writes, corrupt files."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cao.config.auth import AccountAuth, LoginState, read_auth, write_refreshed_tokens
from cao.config.errors import InvalidInput
from cao.config.files import write_atomic
from cao.config.names import validate_name, validate_new_name
from cao.config.registry import Registry
from cao.config.store import Store, resolve_data_dir
from tests.helpers import auth_document, write_account

# -- names -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["a", "work-1", "Personal_2", "x" * 64, "A-b_C-9", "a.b", "alice@work", "me+2"]
)
def test_valid_names(name: str) -> None:
    assert validate_new_name(name) == name
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "../x",
        "a/b",
        "a b",
        ".",
        "..",
        ".hidden",
        "x" * 65,
        "a\n",
        "wоrk",  # Cyrillic о
        "ｗork",
        "-x",
        "a\\b",
        "~",
        "a:b",
        "é",
    ],
)
def test_invalid_names_say_what_is_allowed(name: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape("letters a-z/A-Z, digits, '_', '-', '.'")):
        validate_new_name(name)


@pytest.mark.parametrize("name", ["alice.work", "a b", "é", "-x", "wоrk"])
def test_names_an_existing_registry_holds_are_used_if_safe(name: str) -> None:
    assert validate_name(name) == name  # the original tool accepted them


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".", "..", ".hidden", "a\n", "registry.json"])
def test_unsafe_names_are_never_paths(name: str) -> None:
    with pytest.raises(InvalidInput):
        validate_name(name)


# -- data dir ------------------------------------------------------------------------------------


def test_data_dir_resolution(tmp_path: Path) -> None:
    assert resolve_data_dir(tmp_path / "opt", {"CAO_DATA_DIR": "/elsewhere"}) == tmp_path / "opt"
    assert resolve_data_dir(None, {"CAO_DATA_DIR": str(tmp_path)}) == tmp_path
    assert resolve_data_dir(None, {}) == Path.home() / ".codex-account-orchestrator"


def test_data_dir_created_private(tmp_path: Path) -> None:
    store = Store(tmp_path / "new")
    store.prepare_home("a")
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "new" / "a").stat().st_mode & 0o777 == 0o700
    config = (tmp_path / "new" / "a" / "config.toml").read_text()
    assert 'cli_auth_credentials_store = "file"' in config
    assert 'forced_login_method = "chatgpt"' in config


def test_existing_config_toml_is_left_alone(tmp_path: Path) -> None:
    home = tmp_path / "a"
    home.mkdir(parents=True)
    (home / "config.toml").write_text('model = "o3"\n')
    Store(tmp_path).prepare_home("a")
    assert (home / "config.toml").read_text() == 'model = "o3"\n'


# -- registry --------------------------------------------------------------------------------------


def test_original_tool_registry_works_unchanged(tmp_path: Path) -> None:
    # As the TypeScript original writes it.
    (tmp_path / "registry.json").write_text(
        '{\n  "default_account": "accountB",\n  "accounts": ["accountA", "accountB"]\n}\n'
    )
    store = Store(tmp_path)
    registry = store.load_registry()
    assert registry.accounts == ["accountA", "accountB"]
    assert registry.fallback_order() == ["accountB", "accountA"]
    store.update_registry(lambda r: r.add("accountC"))
    assert json.loads((tmp_path / "registry.json").read_text()) == {
        "default_account": "accountB",
        "accounts": ["accountA", "accountB", "accountC"],
    }


def test_registry_keeps_unknown_fields_and_skips_unsafe_names(tmp_path: Path) -> None:
    (tmp_path / "registry.json").write_text(
        json.dumps({"default_account": "a", "accounts": ["a", "../evil"], "future": 1})
    )
    store = Store(tmp_path)
    assert store.load_registry().accounts == ["a"]
    store.update_registry(lambda r: r.add("b"))
    assert json.loads((tmp_path / "registry.json").read_text())["future"] == 1


def test_removing_default_promotes_next() -> None:
    r = Registry(["a", "b", "c"], "b")
    r.remove("b")
    assert r.default_account == "c"
    r.remove("c")
    assert r.default_account == "a"
    r.remove("a")
    assert r.default_account is None


def _add_names(data_dir: str, prefix: str, count: int) -> None:
    store = Store(Path(data_dir))
    for i in range(count):
        store.update_registry(lambda r, i=i: r.add(f"{prefix}{i}"))


def test_concurrent_writers_lose_no_update(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_add_names, args=(str(tmp_path), f"p{n}-", 25)) for n in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    accounts = Store(tmp_path).load_registry().accounts
    assert len(accounts) == 100
    assert sorted(accounts) == sorted(f"p{n}-{i}" for n in range(4) for i in range(25))


# -- atomic writes -------------------------------------------------------------------------------

_WRITER = """
import sys
from pathlib import Path
from cao.config.files import write_atomic
path = Path(sys.argv[1])
i = 0
print("ready", flush=True)
while True:
    i += 1
    write_atomic(path, (b'{"n": %d, "pad": "' % i) + b"x" * 2_000_000 + b'"}')
"""


def test_killed_writer_never_leaves_a_truncated_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    write_atomic(target, b'{"n": 0, "pad": ""}')
    for delay in (0.05, 0.13, 0.31, 0.47):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(target)], stdout=subprocess.PIPE
        )
        assert proc.stdout is not None
        proc.stdout.readline()
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        json.loads(target.read_bytes())  # whole, old or new
        assert target.stat().st_mode & 0o777 == 0o600
    leftovers = [p for p in tmp_path.iterdir() if p.name != "state.json"]
    # A killed writer may leave its temp file, never a half-written target.
    assert all(p.name.startswith(".state.json.") for p in leftovers)


# -- corrupt files -------------------------------------------------------------------------------


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"accounts": "a"}', ""])
def test_corrupt_registry_is_kept_aside_and_reported_once(
    tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "registry.json").write_text(content)
    store = Store(tmp_path)
    with caplog.at_level(logging.WARNING, logger="cao"):
        assert store.load_registry().accounts == []
        assert store.load_registry().accounts == []
    kept = list(tmp_path.glob("registry.json.corrupt-*"))
    assert len(kept) == 1
    assert kept[0].read_text() == content
    assert len([r for r in caplog.records if "registry.json" in r.getMessage()]) == 1


def test_corrupt_state_is_kept_aside(tmp_path: Path) -> None:
    (tmp_path / "cao-state.json").write_text("garbage")
    store = Store(tmp_path)
    store.update_state(lambda s: s.account("a").__setattr__("last_used", 1.0))
    assert store.load_state().get("a").last_used == 1.0
    assert len(list(tmp_path.glob("cao-state.json.corrupt-*"))) == 1


# -- auth.json -----------------------------------------------------------------------------------


def test_read_auth_states(tmp_path: Path) -> None:
    assert read_auth(tmp_path).state is LoginState.NOT_LOGGED_IN
    (tmp_path / "auth.json").write_text("{broken")
    broken = read_auth(tmp_path)
    assert broken.state is LoginState.UNREADABLE
    assert broken.problem == "not valid JSON"
    (tmp_path / "auth.json").write_text('{"tokens": 5}')
    assert read_auth(tmp_path).state is LoginState.UNREADABLE
    (tmp_path / "auth.json").write_text('{"OPENAI_API_KEY": "sk-x", "tokens": null}')
    assert read_auth(tmp_path).state is LoginState.NOT_LOGGED_IN


def test_read_auth_claims(tmp_path: Path) -> None:
    home = write_account(tmp_path, "alice", exp=2_000_000_000, plan="pro")
    auth = read_auth(home)
    assert auth.logged_in
    assert auth.email == "alice@example.com"
    assert auth.plan_type == "pro"
    assert auth.account_id == "acct-alice"
    assert auth.expires_at == 2_000_000_000
    assert "SECRET" not in repr(auth)


def test_garbage_tokens_never_crash() -> None:
    doc = auth_document("a")
    doc["tokens"]["access_token"] = "not.a.jwt!!"
    doc["tokens"]["id_token"] = 42
    auth = AccountAuth.parse(doc)
    assert auth.logged_in and auth.expires_at is None and auth.email is None


def test_refreshed_tokens_keep_unknown_fields(tmp_path: Path) -> None:
    home = write_account(tmp_path, "a", future_field={"x": 1})
    before = read_auth(home)
    write_refreshed_tokens(home, before, {"access_token": "new-access", "refresh_token": "r2"})
    doc = json.loads((home / "auth.json").read_text())
    assert doc["future_field"] == {"x": 1}
    assert doc["tokens"]["access_token"] == "new-access"
    assert doc["tokens"]["refresh_token"] == "r2"
    assert doc["tokens"]["id_token"] == before.id_token
    assert doc["last_refresh"] != "2026-11-01T00:00:00Z"
    assert os.stat(home / "auth.json").st_mode & 0o777 == 0o600
