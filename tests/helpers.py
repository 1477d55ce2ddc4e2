"""Shared test helpers: fake tokens, account homes, and running `cao` as a subprocess."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CAO = [str(Path(sys.executable).parent / "cao")]  # the installed console script
FAKE_CODEX = REPO / "tests" / "fakes" / "fake_codex.py"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(claims: dict[str, Any]) -> str:
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{b64(json.dumps(claims).encode())}.{b64(b'sig')}"


# Every fake secret this suite makes. `run_cao` and `GatewayProcess` check each output against
# all of them: no token may show in any log, debug line or command output.
ISSUED_SECRETS: set[str] = set()


def remember(secret: str) -> str:
    ISSUED_SECRETS.add(secret)
    return secret


def assert_no_secret(text: str, where: str) -> None:
    leaked = [s for s in ISSUED_SECRETS if s in text]
    assert not leaked, f"{where} shows a token ({leaked[0][:10]}…)"


def fake_token(label: str, exp: float | None = None, **claims: Any) -> str:
    """A JWT whose payload carries a recognizable secret marker, for leak checks."""
    body: dict[str, Any] = {"secret": f"SECRET-{label}", **claims}
    if exp is not None:
        body["exp"] = int(exp)
    return remember(make_jwt(body))


def auth_document(
    name: str,
    *,
    account_id: str | None = None,
    exp: float | None = None,
    plan: str = "plus",
    refresh_token: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    account_id = account_id or f"acct-{name}"
    id_token = make_jwt(
        {
            "email": f"{name}@example.com",
            "https://api.openai.com/auth": {
                "chatgpt_plan_type": plan,
                "chatgpt_account_id": account_id,
                "chatgpt_user_id": f"user-{name}",
            },
        }
    )
    remember(id_token)
    return {
        "auth_mode": "chatgpt",
        "OPENAI_API_KEY": None,
        "tokens": {
            "id_token": id_token,
            "access_token": fake_token(f"access-{name}", exp or time.time() + 86400),
            "refresh_token": remember(refresh_token or f"SECRET-refresh-{name}-0"),
            "account_id": account_id,
        },
        "last_refresh": "2026-11-01T00:00:00Z",
        **extra,
    }


def write_account(data_dir: Path, name: str, default: bool = False, **auth: Any) -> Path:
    """An account home as `cao add` + `codex login` leave it."""
    home = data_dir / name
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        'cli_auth_credentials_store = "file"\nforced_login_method = "chatgpt"\n'
    )
    path = home / "auth.json"
    path.write_text(json.dumps(auth_document(name, **auth)))
    path.chmod(0o600)
    registry_path = data_dir / "registry.json"
    registry = (
        json.loads(registry_path.read_text())
        if registry_path.exists()
        else {"default_account": None, "accounts": []}
    )
    if name not in registry["accounts"]:
        registry["accounts"].append(name)
    if default or registry["default_account"] is None:
        registry["default_account"] = name
    registry_path.write_text(json.dumps(registry))
    data_dir.chmod(0o700)
    return home


def cao_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAO_")}
    env["CAO_DATA_DIR"] = str(data_dir)
    # Never the machine's own ~/.codex: `cao gateway enable` writes its config.toml.
    env["CODEX_HOME"] = str(data_dir.parent / "user-codex-home")
    env.update(extra)
    return env


def run_cao(
    data_dir: Path,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    check_private: bool = True,
    prints_key: bool = False,
    **kw: Any,
) -> subprocess.CompletedProcess[str]:
    """`cao ARGS` as a user runs it. After every command: no token in its output, and (unless
    the test loosened them on purpose) the data dir's token files and dirs still private."""
    result = subprocess.run(
        [*CAO, *args],
        env=env or cao_env(data_dir),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        **kw,
    )
    # `cao gateway url` prints the gateway key on stdout by design (for the user's scripts).
    shown = result.stderr if prints_key else result.stdout + result.stderr
    assert_no_secret(shown, f"`cao {' '.join(args)}`")
    if check_private and data_dir.is_dir():
        assert_private(data_dir)
    return result


def wait_for_state(data_dir: Path, ready: Any, timeout: float = 5.0) -> dict[str, Any]:
    """cao-state.json once `ready(document)` holds: the gateway writes it in the background."""
    path = data_dir / "cao-state.json"
    deadline = time.monotonic() + timeout
    while True:
        try:
            document: dict[str, Any] = json.loads(path.read_text())
            if ready(document):
                return document
        except (FileNotFoundError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} never became ready")
        time.sleep(0.02)


def assert_private(data_dir: Path) -> None:
    """The data dir and account dirs 0700, token files (auth.json) 0600: after every CLI command.
    (What Codex itself creates inside a 0700 account home is out of everyone else's reach.)"""
    for path in [data_dir, *data_dir.iterdir()]:
        if path.is_dir() and not path.is_symlink():
            mode = path.stat().st_mode & 0o777
            assert mode & 0o077 == 0, f"{path} is {oct(mode)}"
    for token_file in data_dir.glob("*/auth.json"):
        mode = token_file.stat().st_mode & 0o777
        assert mode == 0o600, f"{token_file} is {oct(mode)}"


class Terminal:
    """`cao run` as the session leader on a fresh pty, as a user's shell would start it."""

    def __init__(
        self,
        data_dir: Path,
        *args: str,
        rows: int = 24,
        cols: int = 80,
        command: str = "run",
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.master, slave = os.openpty()
        self.resize(rows, cols)
        self.proc = subprocess.Popen(
            [*CAO, command, *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**(env or cao_env(data_dir)), "TERM": "xterm"},
            cwd=cwd,
            start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(slave)
        self.output = b""

    def resize(self, rows: int, cols: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def expect(self, text: str, timeout: float = 15, since: int = 0) -> float:
        """Wait until `text` appears in the output (after byte `since`)."""
        deadline = time.monotonic() + timeout
        while text.encode() not in self.output[since:]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{text!r} not seen in {self.output!r}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    self.output += os.read(self.master, 4096)
                except OSError:
                    break
        return time.monotonic()

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> int:
        code = self.proc.wait(15)
        os.close(self.master)
        return code


def start_fake_daemon(root: Path, home: Path, *args: str) -> subprocess.Popen[bytes]:
    """A process that looks like the app-server daemon Codex leaves in `home`: a `codex`
    running `app-server ...` with CODEX_HOME=home, in a session of its own. Wait for it to
    start before returning."""
    script = root / "daemon-bin" / "codex"
    script.parent.mkdir(exist_ok=True)
    script.write_text(
        "#!/usr/bin/env python3\nimport time\nprint('up', flush=True)\ntime.sleep(300)\n"
    )
    script.chmod(0o755)
    proc = subprocess.Popen(
        [str(script), *(args or ("app-server", "daemon", "pid-update-loop"))],
        env={**os.environ, "CODEX_HOME": str(home)},
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
    return proc
