"""config/homes.py and config/homeconfig.py: the user's Codex setup synced into an account
home."""

from __future__ import annotations

import os
import time
import tomllib
from pathlib import Path

import pytest

from cao.config.codexconfig import Routing, render_block
from cao.config.homeconfig import config_problem, strip_cao_block, user_codex_home
from cao.config.homes import STAMP_FILE, sync_home

USER_CONFIG = """\
model = "gpt-user"
model_reasoning_effort = "high"
approval_policy = "on-request"
openai_base_url = "http://127.0.0.1:9/backend-api/codex"
chatgpt_base_url = "http://127.0.0.1:9/backend-api/"
cli_auth_credentials_store = "keyring"
forced_login_method = "api"

[mcp_servers.docs]
command = "docs-mcp"
args = ["--fast"]

[projects."/src/app"]
trust_level = "trusted"
"""


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "dot-codex"
    path.mkdir()
    (path / "config.toml").write_text(USER_CONFIG)
    return path


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "a"
    path.mkdir(parents=True, mode=0o700)
    (path / "config.toml").write_text(
        'cli_auth_credentials_store = "file"\nforced_login_method = "chatgpt"\n'
    )
    return path


def config_of(home: Path) -> dict[str, object]:
    return tomllib.loads((home / "config.toml").read_text())


def test_config_is_the_users_without_the_keys_cao_owns(source: Path, home: Path) -> None:
    result = sync_home(source, home)
    assert result.ok and "config.toml" in result.changed
    config = config_of(home)
    assert config["model"] == "gpt-user" and config["approval_policy"] == "on-request"
    assert config["mcp_servers"] == {"docs": {"command": "docs-mcp", "args": ["--fast"]}}
    assert config["projects"] == {"/src/app": {"trust_level": "trusted"}}
    assert config["cli_auth_credentials_store"] == "file"
    assert config["forced_login_method"] == "chatgpt"
    assert "openai_base_url" not in config and "chatgpt_base_url" not in config
    assert oct((home / "config.toml").stat().st_mode & 0o777) == "0o600"


def test_the_gateway_block_is_not_copied(source: Path, home: Path) -> None:
    """The block `cao gateway enable` writes into the user's config.toml is cao's own."""
    block = render_block(Routing("http://127.0.0.1:4319/x", "http://localhost:4319/y"), False)
    text = block.decode() + 'model = "m"\n'
    assert strip_cao_block(text) == 'model = "m"\n'
    (source / "config.toml").write_text(text)
    sync_home(source, home)
    config = config_of(home)
    assert config["model"] == "m" and "openai_base_url" not in config
    assert "chatgpt_base_url" not in config


def test_profiles_agents_prompts_and_skills_are_copied(source: Path, home: Path) -> None:
    (source / "fast.config.toml").write_text('model = "m-fast"\nopenai_base_url = "http://x"\n')
    (source / "AGENTS.md").write_text("be brief\n")
    (source / "prompts").mkdir()
    (source / "prompts" / "review.md").write_text("review this\n")
    (source / "skills" / "lint").mkdir(parents=True)
    (source / "skills" / "lint" / "SKILL.md").write_text("lint skill\n")
    (source / "skills" / ".system" / "x").mkdir(parents=True)  # Codex's own, per home
    (source / "skills" / ".system" / "x" / "SKILL.md").write_text("system\n")
    sync_home(source, home)
    assert tomllib.loads((home / "fast.config.toml").read_text()) == {"model": "m-fast"}
    assert (home / "AGENTS.md").read_text() == "be brief\n"
    assert (home / "prompts" / "review.md").read_text() == "review this\n"
    assert (home / "skills" / "lint" / "SKILL.md").read_text() == "lint skill\n"
    assert not (home / "skills" / ".system").exists()
    assert oct((home / "prompts").stat().st_mode & 0o777) == "0o700"
    # Removed by the user: removed from the account too.
    (source / "prompts" / "review.md").unlink()
    (source / "fast.config.toml").unlink()
    sync_home(source, home)
    assert not (home / "prompts" / "review.md").exists()
    assert not (home / "fast.config.toml").exists()


def test_what_the_account_set_on_purpose_is_kept(source: Path, home: Path) -> None:
    """A value in the account's file that differs from what cao synced there last is the
    account's own (the user edited it, or Codex wrote it: a trust decision, /model)."""
    sync_home(source, home)
    config = (home / "config.toml").read_text()
    config = config.replace('model = "gpt-user"', 'model = "gpt-account"')
    config += '\n[projects."/src/other"]\ntrust_level = "trusted"\n'
    (home / "config.toml").write_text(config)
    (home / "AGENTS.md").write_text("account's own rules\n")
    (source / "AGENTS.md").write_text("user's rules\n")
    (source / "config.toml").write_text(
        USER_CONFIG.replace('"high"', '"medium"').replace('"gpt-user"', '"gpt-user-2"')
    )
    result = sync_home(source, home)
    config_now = config_of(home)
    assert config_now["model"] == "gpt-account"  # own
    assert config_now["model_reasoning_effort"] == "medium"  # follows the user
    assert set(config_now["projects"]) == {"/src/app", "/src/other"}  # type: ignore[arg-type]
    assert (home / "AGENTS.md").read_text() == "account's own rules\n"
    assert "AGENTS.md" in result.kept


def test_a_synced_key_the_account_removed_stays_removed(source: Path, home: Path) -> None:
    sync_home(source, home)
    text = (home / "config.toml").read_text().replace('approval_policy = "on-request"\n', "")
    (home / "config.toml").write_text(text)
    os.utime(source / "config.toml")  # something changed: a real merge, not the fast path
    sync_home(source, home)
    assert "approval_policy" not in config_of(home)
    (source / "config.toml").write_text(USER_CONFIG.replace('"on-request"', '"never"'))
    sync_home(source, home)
    assert config_of(home)["approval_policy"] == "never"  # the user changed it since


def test_a_broken_account_config_is_reported_and_left_alone(source: Path, home: Path) -> None:
    (home / "config.toml").write_text("model = \n")
    result = sync_home(source, home)
    assert result.broken and "does not parse" in result.broken
    assert (home / "config.toml").read_text() == "model = \n"
    assert config_problem(home) == result.broken
    assert config_problem(source) is None


def test_a_broken_user_config_changes_nothing(source: Path, home: Path) -> None:
    sync_home(source, home)
    before = (home / "config.toml").read_bytes()
    (source / "config.toml").write_text("[oops\n")
    result = sync_home(source, home)
    assert result.problem and str(source) in result.problem
    assert (home / "config.toml").read_bytes() == before


def test_no_source_keeps_caos_keys(tmp_path: Path, home: Path) -> None:
    (home / "config.toml").write_text('model = "mine"\n')
    sync_home(tmp_path / "missing", home)
    assert config_of(home) == {
        "model": "mine",
        "cli_auth_credentials_store": "file",
        "forced_login_method": "chatgpt",
    }


def test_user_codex_home(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert user_codex_home({"HOME": "/h"}) == Path("/h/.codex")
    assert user_codex_home({"HOME": "/h", "CODEX_HOME": "/c"}) == Path("/c")
    # Codex started by cao has CODEX_HOME = an account home: the user's own is ~/.codex.
    inside = {"HOME": "/h", "CODEX_HOME": str(data / "a")}
    assert user_codex_home(inside, data_dir=data) == Path("/h/.codex")


def test_nothing_changed_costs_a_stat_per_file(source: Path, home: Path) -> None:
    """The fast path: no file is rewritten, and it takes a fraction of a full sync."""
    (source / "prompts").mkdir()
    for n in range(20):
        (source / "prompts" / f"p{n}.md").write_text(f"prompt {n}\n")
    started = time.perf_counter()
    sync_home(source, home)
    full = time.perf_counter() - started
    stamp = (home / STAMP_FILE).stat().st_mtime_ns
    config = (home / "config.toml").stat().st_mtime_ns
    runs = 20
    started = time.perf_counter()
    for _ in range(runs):
        assert sync_home(source, home).changed == []
    unchanged = (time.perf_counter() - started) / runs
    assert (home / STAMP_FILE).stat().st_mtime_ns == stamp
    assert (home / "config.toml").stat().st_mtime_ns == config
    assert unchanged < full
