"""Start the real gateway (`cao gateway start`, i.e. mitmdump with our addon) for a test."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from pathlib import Path

from tests.helpers import CAO, assert_no_secret, cao_env, remember

LISTENING = re.compile(r"cao gateway listening on (http://[\d.:\[\]a-z]+)")


class GatewayProcess:
    def __init__(
        self, data_dir: Path, upstream: str, *args: str, env: dict[str, str] | None = None
    ) -> None:
        self.data_dir = data_dir
        self.command = [
            *CAO,
            "--data-dir",
            str(data_dir),
            "gateway",
            "start",
            "--port",
            "0",
            "--upstream",
            upstream,
            # No background usage reads unless the test asks: they would add upstream requests.
            *(
                ()
                if any(a.startswith("--usage-interval") for a in args)
                else ("--usage-interval", "0")
            ),
            *args,
        ]
        self.env = env or cao_env(data_dir)
        self.lines: list[str] = []
        self.url = ""  # the gateway's origin, as it logs it
        self.base = ""  # where Codex's requests go: the plain origin (the OS vouches for us)
        self.keyed = ""  # the origin and this install's key (remote clients, --require-key)
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 30) -> GatewayProcess:
        self.proc = subprocess.Popen(
            self.command,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.time() + timeout
        while time.time() < deadline:
            for line in list(self.lines):
                if m := LISTENING.search(line):
                    self.url = m.group(1)
                    key = (self.data_dir / "gateway.key").read_text().strip()
                    self.base = self.url
                    self.keyed = f"{self.url}/cao/{remember(key)}"
                    return self
            if self.proc.poll() is not None:
                time.sleep(0.2)
                raise RuntimeError(f"gateway exited {self.proc.returncode}:\n{self.output}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"gateway did not start:\n{self.output}")

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_log(self, pattern: str, timeout: float = 5) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for line in list(self.lines):
                if re.search(pattern, line):
                    return line
            time.sleep(0.02)
        raise AssertionError(f"no log line matching {pattern!r}:\n{self.output}")

    def stop(self) -> int:
        """Ctrl-C, as a user stops it; then its whole log must be free of tokens."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        assert_no_secret(self.output, "the gateway log")
        return self.proc.returncode

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
