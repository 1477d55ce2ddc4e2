"""Running the real Codex CLI (pinned, installed by `make codex`) against the fake backend."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.fakes.upstream import FakeUpstream
from tests.helpers import REPO, assert_no_secret, auth_document

CODEX_VERSION = "0.169.0"
USER_ACCOUNT = "acct-user"  # the account of Codex's own login (~/.codex in real life)


def codex_binary() -> Path:
    path = Path(os.environ.get("CAO_TEST_CODEX") or REPO / ".tools/codex/node_modules/.bin/codex")
    if not path.exists():
        message = f"real Codex CLI not installed at {path}: run `make codex`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def client_config(upstream: FakeUpstream) -> str:
    # chatgpt_base_url on `localhost`, the model URL on 127.0.0.1: different origins, or Codex
    # would send model traffic to the discovered workspace origin instead (same-origin trap).
    return f"""
check_for_update_on_startup = false
approval_policy = "never"
sandbox_mode = "read-only"
chatgpt_base_url = "http://localhost:{upstream.port}/backend-api/"
[analytics]
enabled = false
[feedback]
enabled = false
[otel]
exporter = "none"
metrics_exporter = "none"
trace_exporter = "none"
[history]
persistence = "none"
"""


def make_user_home(root: Path, upstream: FakeUpstream) -> Path:
    """Codex's own CODEX_HOME, logged in as a user account that the fake /wham answers for."""
    home = root / "user-codex-home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "auth.json").write_text(json.dumps(auth_document("user", account_id=USER_ACCOUNT)))
    (home / "config.toml").write_text(client_config(upstream))
    upstream.wham_account_id = USER_ACCOUNT
    return home


EXEC_ARGS = [
    "exec",
    "--skip-git-repo-check",
    "--disable",
    "plugins",
    "--disable",
    "apps",
    "--disable",
    "unbounded_connection_retries",
]


def run_codex(
    command: list[str],
    home: Path,
    cwd: Path,
    timeout: float = 60,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command,
        env={**(env or os.environ), "CODEX_HOME": str(home)},
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    # Codex never sees a pool token: what it prints holds none.
    assert_no_secret(result.stdout + result.stderr, "codex's output")
    return result
