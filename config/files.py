"""The one way this tool writes a file: temp file in the same dir, fsync, rename."""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import suppress
from pathlib import Path

log = logging.getLogger("cao")

FILE_MODE = 0o600
DIR_MODE = 0o700


def ensure_dir(path: Path, mode: int) -> None:
    """Create `path` and its missing parents with exactly `mode`, whatever the umask (mkdir's
    own parents=True makes them 0777 & ~umask: world-writable under umask 000). A directory
    that exists keeps its bits, except that `path` itself loses any bit wider than `mode`."""
    missing: list[Path] = []
    here = path
    while not here.exists():
        missing.append(here)
        if here.parent == here:
            break
        here = here.parent
    for directory in reversed(missing):
        with suppress(FileExistsError):
            directory.mkdir(mode=mode)
        directory.chmod(mode)  # mkdir's mode passes through the umask
    current = path.stat().st_mode & 0o777
    if current & ~mode:
        path.chmod(current & mode)


def ensure_private_dir(path: Path) -> None:
    """Create `path` (and parents) as 0700; tighten it if it exists with looser bits."""
    before = path.stat().st_mode & 0o777 if path.is_dir() else None
    ensure_dir(path, DIR_MODE)
    if before is not None and before & 0o077:
        log.warning("%s was open to others (%04o): made it 0700, as every dir cao keeps tokens "
                    "in", path, before)  # fmt: skip


def write_atomic(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Replace `path` with `data`: a reader, or a crash, sees the old or the new file whole."""
    # Not tempfile.mkstemp: importing tempfile costs every cao command ~10 ms.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(6).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def write_json_atomic(path: Path, document: object, mode: int = FILE_MODE) -> None:
    write_atomic(path, (json.dumps(document, indent=2) + "\n").encode(), mode)


def _fsync_dir(path: Path) -> None:
    # Makes the rename itself durable; not every filesystem allows it.
    with suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


CORRUPT_INFIX = ".corrupt-"


def quarantine(path: Path) -> Path:
    """Keep a file we cannot parse as `<file>.corrupt-<timestamp>`; never delete it. (The
    caller says what it read instead, in one line.)"""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = path.with_name(f"{path.name}{CORRUPT_INFIX}{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}{CORRUPT_INFIX}{stamp}-{n}")
    os.replace(path, target)
    return target


def corrupt_copies(path: Path) -> set[str]:
    """The names of the damaged copies of `path` kept so far (by any process)."""
    prefix = path.name + CORRUPT_INFIX
    try:
        return {n for n in os.listdir(path.parent) if n.startswith(prefix)}
    except OSError:
        return set()


def read_private_text(path: Path) -> str | None:
    """A small secret file's text (None if missing or unreadable); its mode is tightened to
    0600 if someone loosened it."""
    try:
        st = path.stat()
        if st.st_mode & 0o077:
            path.chmod(FILE_MODE)
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None
