"""Running the real Codex CLI (pinned, installed by `make codex`) against the fake backend."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.fakes.upstream import FakeUpstream
from tests.helpers import REPO, assert_no_secret, auth_document, cao_env, run_cao

# The pinned versions `make codex` installs (the Makefile passes its list).
CODEX_VERSIONS = tuple(os.environ.get("CAO_TEST_CODEX_VERSIONS", "0.169.0 0.171.0").split())
USER_ACCOUNT = "acct-user"  # the account of Codex's own login (~/.codex in real life)


def codex_binary(version: str = CODEX_VERSIONS[0]) -> Path:
    root = Path(os.environ.get("CAO_TEST_CODEX_ROOT") or REPO / ".tools")
    path = root / f"codex-{version}" / "node_modules" / ".bin" / "codex"
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


def enable_shim(data_dir: Path, gateway_url: str, bin_dir: Path, codex: Path) -> Path:
    """`cao gateway enable` for this gateway; the shim it writes."""
    enable = run_cao(
        data_dir,
        "gateway",
        "enable",
        "--url",
        gateway_url,
        "--bin-dir",
        str(bin_dir),
        "--codex",
        str(codex),
        env=cao_env(data_dir, PATH=f"{bin_dir}:{os.environ['PATH']}"),
    )
    assert enable.returncode == 0, enable.stderr
    return bin_dir / "codex"


SESSION_ID = re.compile(r"session id: ([0-9a-f-]{36})")


def session_id(output: str) -> str:
    """The session id `codex exec` prints in its header."""
    match = SESSION_ID.search(output)
    assert match, output
    return match.group(1)


def resume_args(session: str, prompt: str) -> list[str]:
    """`codex exec ... resume <id> <prompt>`: the next turn of a recorded session."""
    return [*EXEC_ARGS, "resume", session, prompt]


def record_session(codex: Path, root: Path) -> tuple[dict[str, bytes], Path]:
    """One session recorded by the real Codex against the fake: a tool-call turn, then turns
    until a remote compaction. Returns the raw (zstd) bodies of the tool call's follow-up and
    of the turn after the compaction, and Codex's home (its rollout file is in sessions/)."""
    from tests.fakes.upstream import Answer, FakeUpstream

    fake = FakeUpstream().start()
    try:
        home = make_user_home(root, fake)
        config = home / "config.toml"
        url = f"{fake.url}/backend-api/codex"
        config.write_text(
            f'openai_base_url = "{url}"\nmodel_auto_compact_token_limit = 5000\n'
            + config.read_text()
        )
        fake.wham_account_id = None
        fake.queue("acct-user", Answer("tool"))
        first = run_codex([str(codex), *EXEC_ARGS, "use the clock"], home, root)
        assert first.returncode == 0, first.stderr
        tool_follow_up = fake.model_requests()[1]
        fake.usage_tokens = 9_000_000  # reported by turn 2: Codex compacts before turn 3
        session = session_id(first.stderr)
        for prompt in ("go on", "and on"):
            turn = run_codex([str(codex), *resume_args(session, prompt)], home, root)
            assert turn.returncode == 0, turn.stderr
        assert fake.compactions == 1
        bodies = {"tool": tool_follow_up.raw, "compaction": fake.model_requests()[-1].raw}
        return bodies, home
    finally:
        fake.stop()
