"""Every way Codex runs goes through the gateway: `cao gateway enable` routes the real codex
binary through config.toml (the IDE extension and the desktop app read the same file), and
the shim finds codex at run time, starts the gateway when none answers, and never hangs."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cao.cli.daemon import command_line
from cao.cli.shim import DIRECT
from tests.codex_harness import EXEC_ARGS, USER_ACCOUNT, client_config, run_codex
from tests.fakes.upstream import FakeUpstream
from tests.gateway_proc import GatewayProcess
from tests.helpers import (
    FAKE_CODEX,
    auth_document,
    cao_env,
    run_cao,
    write_account,
)

# A user's config.toml: comments, tables, profiles, an MCP server, a trusted project.
USER_CONFIG = """# my Codex settings
model_reasoning_effort = "low"   # quick answers

[profiles.deep]
model_reasoning_effort = "high"

[mcp_servers.docs]
command = "/bin/true"
enabled = false

[projects."/tmp/somewhere"]
trust_level = "trusted"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def user_home(root: Path, upstream: FakeUpstream) -> Path:
    """Codex's own CODEX_HOME: logged in as the user, no base URLs of its own."""
    home = root / "user-codex-home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "auth.json").write_text(json.dumps(auth_document("user", account_id=USER_ACCOUNT)))
    settings = "\n".join(
        line for line in client_config(upstream).splitlines() if "chatgpt_base_url" not in line
    )
    top, _, tables = settings.partition("[analytics]")
    (home / "config.toml").write_text(top.strip() + "\n" + USER_CONFIG + "[analytics]" + tables)
    upstream.wham_account_id = USER_ACCOUNT
    return home


def pool_tokens(data_dir: Path) -> list[str]:
    tokens = []
    for auth in data_dir.glob("*/auth.json"):
        document = json.loads(auth.read_text())["tokens"]
        tokens += [document["access_token"], document["refresh_token"], document["id_token"]]
    return tokens


def assert_no_pool_token_off_the_model_path(upstream: FakeUpstream, data_dir: Path) -> None:
    """The fake's log: a pool account's token only on model paths (and the gateway's own
    usage reads), never on what Codex sends to chatgpt_base_url."""
    secrets = pool_tokens(data_dir)
    for request in upstream.requests:
        if "/backend-api/codex/" in request.path:
            continue
        if request.path.endswith("/wham/usage") and request.account_id != USER_ACCOUNT:
            continue  # the gateway's own reads of a pool account's usage
        shown = json.dumps(request.headers)
        assert not any(s in shown for s in secrets), f"{request.path} carried a pool token"


@pytest.fixture
def stop_daemon_after(data_dir: Path) -> Iterator[None]:
    yield
    record = data_dir / "gateway.pid"
    if record.exists():
        pid = json.loads(record.read_text())["pid"]
        if "mitmdump" in " ".join(command_line(pid) or []):
            os.kill(pid, signal.SIGTERM)


@pytest.mark.codex
def test_enable_routes_the_real_codex_through_config_toml(
    data_dir: Path, upstream: FakeUpstream, codex: Path, tmp_path: Path
) -> None:
    write_account(data_dir, "a")
    write_account(data_dir, "b")
    home = user_home(tmp_path, upstream)
    config = home / "config.toml"
    before = sha(config)
    with GatewayProcess(data_dir, upstream.url) as gw:
        enabled = run_cao(
            data_dir, "gateway", "enable", "--port", str(gw.port), "--bin-dir",
            str(tmp_path / "bin"), "--codex", str(codex), "--codex-home", str(home),
        )  # fmt: skip
        assert enabled.returncode == 0, enabled.stderr
        assert "now use the gateway" in enabled.stderr
        # The real binary, not the shim: only config.toml routes it.
        result = run_codex([str(codex), *EXEC_ARGS, "say hi"], home, tmp_path)
        assert result.returncode == 0, result.stderr
        assert "hello from acct-a" in result.stdout
        assert [r.account_id for r in upstream.model_requests()] == ["acct-a"]
        checks = [r for r in upstream.requests if r.path.endswith("/wham/accounts/check")]
        assert checks and all(r.account_id == USER_ACCOUNT for r in checks)
        assert_no_pool_token_off_the_model_path(upstream, data_dir)
        disabled = run_cao(
            data_dir, "gateway", "disable", "--bin-dir", str(tmp_path / "bin"),
            "--codex-home", str(home),
        )  # fmt: skip
    assert disabled.returncode == 0, disabled.stderr
    assert sha(config) == before
    assert not (tmp_path / "bin" / "codex").exists()


def test_enable_leaves_a_config_it_cannot_route_alone(data_dir: Path, tmp_path: Path) -> None:
    write_account(data_dir, "a")
    home = tmp_path / "user-codex-home"
    home.mkdir()
    (home / "config.toml").write_text('openai_base_url = "https://proxy.example/v1"\n')
    before = sha(home / "config.toml")
    result = run_cao(
        data_dir, "gateway", "enable", "--bin-dir", str(tmp_path / "bin"),
        "--codex", str(FAKE_CODEX), "--codex-home", str(home),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr  # the shim is installed all the same
    assert "already sets openai_base_url = 'https://proxy.example/v1': left it alone" in (
        result.stderr
    )
    assert sha(home / "config.toml") == before


@pytest.mark.codex
def test_shim_starts_the_gateway_when_none_answers(
    data_dir: Path, upstream: FakeUpstream, codex: Path, tmp_path: Path, stop_daemon_after: None
) -> None:
    write_account(data_dir, "a")
    home = user_home(tmp_path, upstream)
    port = free_port()
    first = run_cao(data_dir, "gateway", "start", "--daemon", "--port", str(port),
                    "--upstream", upstream.url, "--usage-interval", "0", timeout=60)  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert run_cao(data_dir, "gateway", "stop").returncode == 0
    bin_dir = tmp_path / "bin"
    enabled = run_cao(data_dir, "gateway", "enable", "--port", str(port), "--bin-dir",
                      str(bin_dir), "--codex", str(codex), "--no-config")  # fmt: skip
    assert enabled.returncode == 0, enabled.stderr
    env = {**os.environ, "PATH": f"{bin_dir}:{codex.parent}:{os.environ['PATH']}"}
    began = time.monotonic()
    result = run_codex([str(bin_dir / "codex"), *EXEC_ARGS, "say hi"], home, tmp_path, env=env)
    took = time.monotonic() - began
    assert result.returncode == 0, result.stderr
    assert "hello from acct-a" in result.stdout
    assert "cao:" not in result.stderr
    assert (data_dir / "gateway.pid").exists()  # the daemon runs on
    assert [r.account_id for r in upstream.model_requests()] == ["acct-a"]
    # The turn's own time plus a daemon start, bounded (a hang would be minutes).
    assert took < 60


def fake_codex_dir(root: Path, name: str) -> Path:
    directory = root / name
    directory.mkdir()
    (directory / "codex").symlink_to(FAKE_CODEX)
    return directory


def test_shim_runs_codex_directly_when_the_gateway_cannot_start(
    data_dir: Path, tmp_path: Path
) -> None:
    """No logged-in account: the daemon cannot start. One line, then Codex on the user's own
    login, with config.toml's routing undone on its command line."""
    data_dir.chmod(0o700)
    real = fake_codex_dir(tmp_path, "real")
    bin_dir = tmp_path / "bin"
    port = free_port()
    enabled = run_cao(data_dir, "gateway", "enable", "--port", str(port), "--bin-dir",
                      str(bin_dir), "--codex", str(real / "codex"), "--no-config")  # fmt: skip
    assert enabled.returncode == 0, enabled.stderr
    log = tmp_path / "calls.jsonl"
    env = cao_env(data_dir, PATH=f"{bin_dir}:{real}:{os.environ['PATH']}",
                  FAKE_CODEX_LOG=str(log))  # fmt: skip
    import subprocess

    began = time.monotonic()
    result = subprocess.run([str(bin_dir / "codex"), "exec", "hi"], env=env, capture_output=True,
                            text=True, timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip
    assert time.monotonic() - began < 30
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("cao:")]
    assert len(lines) == 1, result.stderr
    assert "no logged-in account" in lines[0] and "running Codex directly" in lines[0]
    args = json.loads(log.read_text().splitlines()[-1])["args"]
    assert args == ["-c", DIRECT[0], "-c", DIRECT[1], "exec", "hi"]
    assert not (data_dir / "gateway.pid").exists()


def test_shim_finds_codex_at_run_time(data_dir: Path, tmp_path: Path) -> None:
    first = fake_codex_dir(tmp_path, "nvm-old")
    bin_dir = tmp_path / "bin"
    with socket.socket() as listener:  # something answers at the port: no daemon start
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        enabled = run_cao(data_dir, "gateway", "enable", "--port", str(port), "--bin-dir",
                          str(bin_dir), "--codex", str(first / "codex"), "--no-config")  # fmt: skip
        assert enabled.returncode == 0, enabled.stderr
        (first / "codex").unlink()  # the install moved
        moved = fake_codex_dir(tmp_path, "nvm-new")
        log = tmp_path / "calls.jsonl"
        import subprocess

        def run(path: str) -> subprocess.CompletedProcess[str]:
            env = cao_env(data_dir, PATH=path, FAKE_CODEX_LOG=str(log))
            return subprocess.run([str(bin_dir / "codex"), "--version"], env=env, text=True,
                                  capture_output=True, timeout=30)  # fmt: skip

        ran = run(f"{bin_dir}:{moved}:/usr/bin:/bin")
        assert ran.returncode == 0, ran.stderr
        call = json.loads(log.read_text().splitlines()[-1])
        assert call["args"][0] == "-c" and call["args"][1].startswith("openai_base_url=")
        assert call["args"][-1] == "--version"
        gone = run(f"{bin_dir}:/usr/bin:/bin")
        assert gone.returncode == 127
        assert "codex not found on PATH: install it with `npm install -g @openai/codex`" in (
            gone.stderr
        )
    with contextlib.suppress(FileNotFoundError):
        log.unlink()


def test_doctor_reports_a_shim_whose_codex_is_gone(data_dir: Path, tmp_path: Path) -> None:
    write_account(data_dir, "a")
    real = fake_codex_dir(tmp_path, "nvm")
    bin_dir = tmp_path / "bin"
    env = cao_env(data_dir, PATH=f"{bin_dir}:{real}:/usr/bin:/bin")
    enabled = run_cao(data_dir, "gateway", "enable", "--bin-dir", str(bin_dir), "--codex",
                      str(real / "codex"), "--no-config", env=env)  # fmt: skip
    assert enabled.returncode == 0, enabled.stderr
    (real / "codex").unlink()
    doctor = run_cao(data_dir, "status", "--doctor", "--json", "--bin-dir", str(bin_dir),
                     env=env)  # fmt: skip
    checks = {c["message"]: c for c in json.loads(doctor.stdout)["checks"]}
    gone = checks["the codex shim finds no codex to run (moved or uninstalled)"]
    assert gone["level"] == "error" and gone["fix"].startswith("npm install -g @openai/codex")
    assert doctor.returncode == 2


@pytest.mark.parametrize("shell", ["/bin/bash", "/bin/sh"])
def test_the_shim_checks_the_gateway_in_either_shell(tmp_path: Path, shell: str) -> None:
    """bash connects through /dev/tcp, plain sh through a Python: both tell a listening port
    from a closed one, and a failed start means a direct run."""
    import subprocess
    import sys

    from cao.cli.shim import ShimPlan, render_shim

    real = fake_codex_dir(tmp_path, "real")
    log = tmp_path / "calls.jsonl"
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        say_why = [sys.executable, "-c", "import sys; sys.exit('cao: error: it broke')"]
        plan = ShimPlan(f"http://127.0.0.1:{port}/backend-api/codex",
                        f"http://localhost:{port}/backend-api/", real / "codex", say_why,
                        sys.executable, shell)  # fmt: skip
        shim = tmp_path / "codex"
        shim.write_text(render_shim(plan))
        shim.chmod(0o700)
        env = {**os.environ, "PATH": f"{real}:/usr/bin:/bin", "FAKE_CODEX_LOG": str(log)}

        def run() -> subprocess.CompletedProcess[str]:
            return subprocess.run([str(shim), "hi"], env=env, capture_output=True, text=True,
                                  timeout=30)  # fmt: skip

        up = run()
        assert up.returncode == 0 and up.stderr == "", up.stderr
        assert json.loads(log.read_text().splitlines()[-1])["args"][1].endswith(
            f'127.0.0.1:{port}/backend-api/codex"'
        )
    down = run()
    assert down.stderr == "cao: it broke; running Codex directly on your own login\n"
    assert json.loads(log.read_text().splitlines()[-1])["args"][:2] == ["-c", DIRECT[0]]
