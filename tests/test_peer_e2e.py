"""Only this OS user may use the gateway, proven by the kernel: a real `cao gateway start` and a
second OS user made with `useradd` (removed after). Even with the key, the other user gets no
answer and nothing goes upstream; this user's processes need no key; `--require-key` and
`cao gateway rotate-key`."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.fakes.upstream import FakeUpstream
from tests.gateway_proc import GatewayProcess
from tests.helpers import remember, run_cao, write_account
from tests.other_user import other_user

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


@pytest.fixture
def gw(data_dir: Path, upstream: FakeUpstream) -> GatewayProcess:
    write_account(data_dir, "a")
    write_account(data_dir, "b")
    gateway = GatewayProcess(data_dir, upstream.url, "--auth-url", upstream.url).start()
    yield gateway  # type: ignore[misc]
    gateway.stop()


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
    refusals = [line for line in gw.lines if "refused a connection" in line]
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
