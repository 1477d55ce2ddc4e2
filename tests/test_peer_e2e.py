"""Only this OS user may use the gateway, proven by the kernel: a real `cao gateway start` and a
second OS user made with `useradd` (removed after). Even with the key, the other user gets no
answer and nothing goes upstream; this user's processes need no key; `--require-key` and
`cao gateway rotate-key`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.codex_harness import EXEC_ARGS, client_config, enable_shim, make_user_home
from tests.fakes.upstream import FakeUpstream
from tests.gateway_proc import GatewayProcess
from tests.helpers import ISSUED_SECRETS, remember, run_cao, write_account
from tests.other_user import other_user
from tests.test_codex_e2e import stop_codex_daemons

MODEL = "/backend-api/codex/responses"

# Run as the other user: each attempt's first answer bytes ("" when the gateway closed the
# connection without a word).
PROBE = r"""
import json, socket, sys
port, paths = int(sys.argv[1]), json.loads(sys.argv[2])
seen = {}
for path in paths:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(("POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: 2\r\n"
                       "session-id: other\r\n\r\n{}" % (path, port)).encode())
            data = s.recv(200)
    except OSError as e:
        data = repr(e).encode()
    seen[path] = data.decode("latin-1")
print(json.dumps(seen))
"""


def probe(user: object, gw: GatewayProcess, paths: list[str]) -> dict[str, str]:
    script = PROBE.replace("sys.argv[1]", repr(str(gw.port))).replace(
        "sys.argv[2]", repr(json.dumps(paths))
    )
    result = user.run(script)  # type: ignore[attr-defined]
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_another_os_user_is_refused_even_with_the_key(
    gw: GatewayProcess, upstream: FakeUpstream
) -> None:
    keyed = gw.keyed.split(f":{gw.port}", 1)[1]  # as if the key had leaked
    paths = [MODEL, keyed + MODEL, "/__cao/status", keyed + "/__cao/status", "/backend-api/x"]
    with other_user() as user:
        seen = probe(user, gw, paths * 3)
        uid = user.uid
    assert all(not answer.startswith("HTTP/") for answer in seen.values()), seen
    assert upstream.requests == []
    # One line says why, not one per connection.
    refusals = [line for line in gw.lines if "refused: a connection from" in line]
    assert len(refusals) == 1 and f"uid {uid}" in refusals[0], refusals
    # This user's own process needs no key.
    assert httpx.post(gw.base + MODEL, content=b"{}").status_code == 200
    assert httpx.get(gw.base + "/__cao/status").status_code == 200


def test_require_key_and_rotate_key(data_dir: Path, upstream: FakeUpstream) -> None:
    write_account(data_dir, "a")
    with GatewayProcess(data_dir, upstream.url, "--require-key") as gw:
        assert httpx.post(gw.base + MODEL, content=b"{}").status_code == 403
        assert upstream.requests == []
        printed = run_cao(
            data_dir, "gateway", "url", "--key", "--port", str(gw.port), prints_key=True
        )
        assert printed.stdout.strip() == gw.keyed + "/backend-api/codex"
        assert httpx.post(gw.keyed + MODEL, content=b"{}").status_code == 200
        old = gw.keyed
        rotated = run_cao(data_dir, "gateway", "rotate-key")
        assert rotated.returncode == 0, rotated.stderr
        new = run_cao(data_dir, "gateway", "url", "--key", "--port", str(gw.port), prints_key=True)
        new_base = new.stdout.strip().removesuffix("/backend-api/codex")
        remember(new_base.rsplit("/", 1)[1])  # a secret the gateway's log must not show
        assert new_base != old
        assert httpx.post(old + MODEL, content=b"{}").status_code == 403  # at once
        assert httpx.post(new_base + MODEL, content=b"{}").status_code == 200
    key = (data_dir / "gateway.key").read_text().strip()
    assert key in new_base and oct((data_dir / "gateway.key").stat().st_mode & 0o777) == "0o600"


LOOK_AROUND = r"""
import glob, json, os, re, subprocess, sys
home, port = sys.argv[1], int(sys.argv[2])
texts = [subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout]
for path in glob.glob("/proc/[0-9]*/environ") + glob.glob("/proc/[0-9]*/cmdline"):
    try:
        texts.append(open(path, "rb").read().replace(b"\0", b" ").decode("latin-1"))
    except OSError:
        pass
readable = []
for root, dirs, files in os.walk(home):
    for name in files:
        path = os.path.join(root, name)
        try:
            texts.append(open(path, "rb").read().decode("latin-1"))
            readable.append(path)
        except OSError:
            pass
text = "\n".join(texts)
urls = sorted(set(re.findall(r"http://127\.0\.0\.1:%d[^\s\"']*" % port, text)))
print(json.dumps({"text": text, "urls": urls, "readable": readable}))
"""


@contextmanager
def open_home(upstream: FakeUpstream) -> Iterator[tuple[Path, Path]]:
    """A user's dir others may enter (0755) holding Codex's CODEX_HOME: (root, CODEX_HOME)."""
    root = Path(tempfile.mkdtemp(prefix="caohome", dir="/tmp"))
    root.chmod(0o755)
    try:
        home = make_user_home(root, upstream)
        (home / "auth.json").chmod(0o600)  # as Codex's own login writes it
        yield root, home
    finally:
        shutil.rmtree(root, ignore_errors=True)


def look_around(gw: GatewayProcess, root: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Another OS user reads what it can, then tries every gateway URL it found."""
    with other_user() as user:
        seen = user.run(
            LOOK_AROUND.replace("sys.argv[1]", repr(str(root))).replace(
                "int(sys.argv[2])", str(gw.port)
            )
        )
        assert seen.returncode == 0, seen.stderr
        found = json.loads(seen.stdout)
        paths = sorted({u.split(str(gw.port), 1)[1] or "/" for u in found["urls"]})
        return found, probe(user, gw, [*paths, MODEL])


def assert_nothing_for_the_other_user(
    found: dict[str, Any], answers: dict[str, str], gw: GatewayProcess, data_dir: Path
) -> None:
    assert found["readable"], "the probe read the user's files"
    assert f"127.0.0.1:{gw.port}" in found["text"]  # it did see where Codex is routed
    key = (data_dir / "gateway.key").read_text().strip()
    leaked = [s for s in [key, *ISSUED_SECRETS] if s in found["text"]]
    assert not leaked, leaked[0][:12]
    assert all(not a.startswith("HTTP/") for a in answers.values()), answers


def codex_env(home: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "CODEX_HOME": str(home), **extra}


@pytest.mark.codex
def test_another_user_reads_all_it_can_while_codex_runs_and_gets_nothing(
    data_dir: Path, upstream: FakeUpstream, codex: Path
) -> None:
    """The user's real Codex runs through the shim (a slow upstream keeps it in flight) in a
    home others can enter (0755, the default umask: Codex's own files are 0644). The other user
    reads `ps`, every environ and cmdline it may, and every file it can under that home: no key,
    no token, and the gateway URLs it finds lead nowhere. The user's Codex works every way:
    the shim, `cao run --gateway`, `codex -c openai_base_url="$(cao gateway url)"`."""
    for name in ("a", "b"):
        (write_account(data_dir, name) / "config.toml").write_text(client_config(upstream))
    with open_home(upstream) as (root, home):
        upstream.seen_delay = 3.0
        with GatewayProcess(data_dir, upstream.url, "--auth-url", upstream.url) as gw:
            shim = enable_shim(data_dir, gw.url, root / "bin", codex)
            old = os.umask(0o022)
            try:
                running = subprocess.Popen(
                    [str(shim), *EXEC_ARGS, "say hi"], cwd=root, stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                    env=codex_env(home),
                )  # fmt: skip
            finally:
                os.umask(old)
            try:
                deadline = time.monotonic() + 30
                while not upstream.model_requests() and time.monotonic() < deadline:
                    time.sleep(0.1)  # Codex's turn is in flight now
                found, answers = look_around(gw, root)
                output, _ = running.communicate(timeout=60)
            finally:
                if running.poll() is None:
                    running.kill()
                    running.wait()
            assert running.returncode == 0, output
            upstream.seen_delay = 0.0
            url = run_cao(data_dir, "gateway", "url", "--port", str(gw.port)).stdout.strip()
            direct = subprocess.run(
                [str(codex), "-c", f'openai_base_url="{url}"', *EXEC_ARGS, "say hi"],
                cwd=root, capture_output=True, text=True, timeout=60, env=codex_env(home),
            )  # fmt: skip
            assert direct.returncode == 0, direct.stderr
            upstream.wham_account_id = None  # Codex runs in account a's home now
            run = run_cao(
                data_dir, "run", "--gateway", "--gateway-url", gw.url, "--codex", str(codex),
                "--", *EXEC_ARGS, "say hi", cwd=root, timeout=90,
            )  # fmt: skip
            assert run.returncode == 0, run.stderr
            assert "hello from acct-" in run.stdout + run.stderr
    assert_nothing_for_the_other_user(found, answers, gw, data_dir)
    assert len(upstream.model_requests()) >= 3 and upstream.requests[-1].token


@pytest.mark.codex
def test_another_user_reads_what_the_codex_tui_wrote_and_gets_nothing(
    data_dir: Path, upstream: FakeUpstream, codex: Path
) -> None:
    """The interactive Codex TUI, started through the shim in tmux, runs a turn and stays open
    (its logs, state and session files written, under the default umask). The other user reads
    all it can and tries the gateway: nothing."""
    write_account(data_dir, "a")
    socket_name = f"caop{os.getpid()}"
    tmux = ["tmux", "-L", socket_name]
    with open_home(upstream) as (root, home):
        with GatewayProcess(data_dir, upstream.url, "--auth-url", upstream.url) as gw:
            shim = enable_shim(data_dir, gw.url, root / "bin", codex)
            try:
                subprocess.run(
                    [*tmux, "new-session", "-d", "-x", "120", "-y", "30", "-e",
                     f"CODEX_HOME={home}", "-c", str(root), f"umask 022; exec {shim}"],
                    check=True, env=codex_env(home, TERM="xterm"),
                )  # fmt: skip

                def screen() -> str:
                    return subprocess.run(
                        [*tmux, "capture-pane", "-p"], capture_output=True, text=True
                    ).stdout

                def wait_for(text: str, timeout: float = 60) -> None:
                    deadline = time.monotonic() + timeout
                    while text not in screen():
                        assert time.monotonic() < deadline, screen()
                        time.sleep(0.3)

                wait_for("Ask Codex to do anything")
                subprocess.run([*tmux, "send-keys", "say hi"], check=True)
                time.sleep(0.5)
                subprocess.run([*tmux, "send-keys", "Enter"], check=True)
                wait_for("part2")
                written = sorted(
                    str(p.relative_to(home)) for p in home.rglob("*")
                    if p.is_file() and p.stat().st_mode & 0o004
                )  # fmt: skip
                found, answers = look_around(gw, root)
            finally:
                subprocess.run([*tmux, "kill-server"], capture_output=True)
                stop_codex_daemons([home], codex)
    assert "logs_2.sqlite" in written, written  # others can read what the TUI wrote
    assert_nothing_for_the_other_user(found, answers, gw, data_dir)
    assert {r.account_id for r in upstream.model_requests()} == {"acct-a"}


@contextmanager
def remote_client() -> Iterator[tuple[str, list[str]]]:
    """A network namespace joined to this one by a veth pair: a client there is remote (the
    kernel here holds no socket of it). (the gateway's address, the command prefix to run
    something there)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("a network namespace needs root and iproute2")
    tag = f"{os.getpid() % 10000}{os.urandom(1).hex()}"
    ns, here, there = f"caop{tag}", f"caoa{tag}", f"caob{tag}"
    subnet = f"10.231.{os.getpid() % 250}"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    try:
        ip("netns", "add", ns)
        ip("link", "add", here, "type", "veth", "peer", "name", there)
        ip("link", "set", there, "netns", ns)
        ip("addr", "add", f"{subnet}.1/30", "dev", here)
        ip("link", "set", here, "up")
        ip("netns", "exec", ns, "ip", "addr", "add", f"{subnet}.2/30", "dev", there)
        ip("netns", "exec", ns, "ip", "link", "set", there, "up")
        yield f"{subnet}.1", ["ip", "netns", "exec", ns]
    finally:
        subprocess.run(["ip", "link", "del", here], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_allow_remote_needs_the_key_from_a_remote_client_only(
    data_dir: Path, upstream: FakeUpstream
) -> None:
    """An --allow-remote gateway on a veth address: a client in another network namespace
    (remote: the OS here cannot name its user) needs the key in the path; this user's own
    process on the same address does not."""
    write_account(data_dir, "a")
    with remote_client() as (address, there):
        with GatewayProcess(data_dir, upstream.url, "--host", address, "--allow-remote") as gw:
            keyed_path = gw.keyed.split(f":{gw.port}", 1)[1]
            script = (
                (
                    "import json, sys, urllib.request\n"
                    "out = {}\n"
                    "for path in sys.argv[1:]:\n"
                    "    url = 'http://%s:%d' % (ADDRESS, PORT) + path\n"
                    "    request = urllib.request.Request(url, data=b'{}', method='POST')\n"
                    "    try:\n"
                    "        out[path] = urllib.request.urlopen(request, timeout=10).status\n"
                    "    except urllib.error.HTTPError as e:\n"
                    "        out[path] = e.code\n"
                    "print(json.dumps(out))\n"
                )
                .replace("ADDRESS", repr(address))
                .replace("PORT", str(gw.port))
            )
            remote = subprocess.run(
                [*there, "/usr/bin/python3", "-c", script, MODEL, keyed_path + MODEL],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert remote.returncode == 0, remote.stderr
            seen = json.loads(remote.stdout)
            # This user's own process, on the same (non-loopback) address: no key needed.
            local = httpx.post(f"http://{address}:{gw.port}{MODEL}", content=b"{}")
    assert seen == {MODEL: 403, keyed_path + MODEL: 200}, seen
    assert local.status_code == 200
    assert len(upstream.model_requests()) == 2
