"""`make bench` keeps working: a short smoke run (CAO_BENCH_QUICK=1). It checks that every figure
is measured, never how fast: speed targets live in the benchmark's own table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO


def test_bench_smoke_run() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.bench.run"],
        cwd=REPO,
        env={**os.environ, "CAO_BENCH_QUICK": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| keep-alive POST, median | ms |" in result.stdout
    assert "| failover A 429 -> B first event (redirect) | ms |" in result.stdout
    assert "| failover A 429 -> B first event (redirect, polling off) | ms |" in result.stdout
    assert "| first failover: usage polling on - off | ms |" in result.stdout
    assert "| WebSocket frame round trip (request frame -> first answer frame), median" in (
        result.stdout
    )
    raw = REPO / result.stdout.rsplit("raw numbers: ", 1)[1].strip()
    try:
        document = json.loads(Path(raw).read_text())
        assert document["quick"] is True
        assert document["concurrent"]["gateway"]["errors"] == 0
        assert all(row["gateway"] is not None for row in document["rows"])
    finally:
        Path(raw).unlink()
