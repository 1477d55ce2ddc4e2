"""A second OS user for a test (we run as root): made with `useradd`, removed after."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class OtherUser:
    name: str
    uid: int
    gid: int
    home: str

    def run(
        self, script: str, timeout: float = 60, python: str = "/usr/bin/python3"
    ) -> subprocess.CompletedProcess[str]:
        """A Python script run as this user (its own uid, gid and home; no root groups)."""
        return subprocess.run(
            [python, "-c", script],
            user=self.uid,
            group=self.gid,
            extra_groups=[],
            env={"HOME": self.home, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def shell(self, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["/bin/sh", "-c", command],
            user=self.uid,
            group=self.gid,
            extra_groups=[],
            env={"HOME": self.home, "PATH": "/usr/bin:/bin"},
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@contextmanager
def other_user() -> Iterator[OtherUser]:
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("a second OS user needs root and useradd")
    name = f"caop{os.getpid() % 100000}x{os.urandom(2).hex()}"
    subprocess.run(["useradd", "--create-home", name], check=True, capture_output=True)
    try:
        entry = pwd.getpwnam(name)
        yield OtherUser(name, entry.pw_uid, entry.pw_gid, entry.pw_dir)
    finally:
        subprocess.run(["userdel", "-r", "-f", name], capture_output=True)
