"""config.toml routing: a marked block in, the same bytes out."""

from __future__ import annotations

import hashlib
import os
import tomllib
from pathlib import Path

import pytest

from cao.config.codexconfig import (
    ConfigRefused,
    Routing,
    codex_home,
    disable_routing,
    enable_routing,
    routed_by_config,
    routing_for,
)

ROUTING = Routing("http://127.0.0.1:4319/backend-api/codex", "http://localhost:4319/backend-api/")

USER_CONFIG = b"""# my Codex settings
model = "gpt-5.1-codex"   # the one I like
model_reasoning_effort = "high"

[profiles.fast]
model = "gpt-5.1-codex-mini"

[mcp_servers.docs]
command = "npx"
args = ["-y", "docs-mcp"]

[projects."/home/me/work"]
trust_level = "trusted"
"""


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_enable_then_disable_is_byte_for_byte(tmp_path: Path, newline: bytes) -> None:
    config = tmp_path / "config.toml"
    config.write_bytes(USER_CONFIG.replace(b"\n", newline))
    config.chmod(0o640)
    before = sha(config)
    assert "now use the gateway" in enable_routing(tmp_path, ROUTING)
    document = tomllib.loads(config.read_text())
    assert document["openai_base_url"] == ROUTING.openai_base_url
    assert document["chatgpt_base_url"] == ROUTING.chatgpt_base_url
    assert document["profiles"]["fast"]["model"] == "gpt-5.1-codex-mini"
    assert document["projects"]["/home/me/work"]["trust_level"] == "trusted"
    assert config.read_bytes().endswith(USER_CONFIG.replace(b"\n", newline))
    assert oct(config.stat().st_mode & 0o777) == "0o640"
    assert routed_by_config(tmp_path) == ROUTING
    assert "already routes" in enable_routing(tmp_path, ROUTING)  # twice: one block
    assert config.read_bytes().count(b"cao gateway:") == 1
    assert disable_routing(tmp_path) is not None
    assert sha(config) == before
    assert oct(config.stat().st_mode & 0o777) == "0o640"
    assert disable_routing(tmp_path) is None


def test_a_new_port_replaces_the_block(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_bytes(USER_CONFIG)
    enable_routing(tmp_path, ROUTING)
    enable_routing(tmp_path, routing_for("http://127.0.0.1:18902/backend-api/codex"))
    assert tomllib.loads(config.read_text())["chatgpt_base_url"] == (
        "http://localhost:18902/backend-api/"
    )
    disable_routing(tmp_path)
    assert config.read_bytes() == USER_CONFIG


def test_a_missing_file_is_made_and_removed(tmp_path: Path) -> None:
    home = tmp_path / "codex-home"
    enable_routing(home, ROUTING)
    assert tomllib.loads((home / "config.toml").read_text())["openai_base_url"]
    assert "removed" in (disable_routing(home) or "")
    assert not (home / "config.toml").exists()


def test_a_symlinked_config_keeps_its_link(tmp_path: Path) -> None:
    real = tmp_path / "dotfiles" / "codex.toml"
    real.parent.mkdir()
    real.write_bytes(USER_CONFIG)
    (tmp_path / "config.toml").symlink_to(real)
    enable_routing(tmp_path, ROUTING)
    assert (tmp_path / "config.toml").is_symlink()
    disable_routing(tmp_path)
    assert real.read_bytes() == USER_CONFIG


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'model = "x"\n[broken\n', "does not parse"),
        (b'openai_base_url = "https://example.com/v1"\n', "already sets openai_base_url"),
        (b'chatgpt_base_url = "https://chatgpt.com/backend-api/"\n', "already sets chatgpt"),
        (b"\xff\xfe junk", "not UTF-8"),
    ],
)
def test_refusals_leave_the_file_alone(tmp_path: Path, content: bytes, reason: str) -> None:
    config = tmp_path / "config.toml"
    config.write_bytes(content)
    with pytest.raises(ConfigRefused, match=reason) as refused:
        enable_routing(tmp_path, ROUTING)
    assert "\n" not in str(refused.value)
    assert config.read_bytes() == content


def test_keys_set_to_our_values_by_hand_are_fine(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'openai_base_url = "{ROUTING.openai_base_url}"\n'
                      f'chatgpt_base_url = "{ROUTING.chatgpt_base_url}"\n')  # fmt: skip
    before = config.read_bytes()
    assert "already routes" in enable_routing(tmp_path, ROUTING)
    assert config.read_bytes() == before


def test_routing_uses_two_names_for_the_listener() -> None:
    assert routing_for("http://127.0.0.1:4319/backend-api/codex") == ROUTING
    keyed = routing_for("http://127.0.0.1:4319/cao/KEY/backend-api/codex")
    assert keyed.chatgpt_base_url == "http://localhost:4319/cao/KEY/backend-api/"
    assert routing_for("http://[::1]:9/backend-api/codex").chatgpt_base_url.startswith(
        "http://localhost:9/"
    )
    with pytest.raises(ConfigRefused, match="not on loopback"):
        routing_for("http://10.0.0.5:4319/backend-api/codex")


def test_codex_home_rule(tmp_path: Path) -> None:
    assert codex_home(tmp_path / "x", {}) == tmp_path / "x"
    assert codex_home(None, {"CODEX_HOME": str(tmp_path)}) == tmp_path
    assert codex_home(None, {}) == Path.home() / ".codex"
    assert os.sep in str(codex_home())
