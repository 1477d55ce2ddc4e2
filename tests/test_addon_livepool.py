"""LivePool: cached views, state changes in memory at once and on disk in order, corrupt files."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from cao.addons.livepool import WRITE_DELAY, LivePool
from cao.config.store import Store
from tests.helpers import write_account


@pytest.fixture
def pool(data_dir: Path) -> LivePool:
    write_account(data_dir, "a")
    write_account(data_dir, "b")
    return LivePool(Store(data_dir))


def on_disk(data_dir: Path) -> dict[str, object]:
    return json.loads((data_dir / "cao-state.json").read_text())  # type: ignore[no-any-return]


async def test_changes_apply_at_once_and_reach_disk_together(
    pool: LivePool, data_dir: Path
) -> None:
    assert [v.name for v in pool.views()] == ["a", "b"]
    pool.mark_cooling("a", 4e9, "quota", quota_hit=True)
    pool.record_switch("a", "b", "quota")
    view = pool.view("a")
    assert view is not None and view.state.cooling_until == 4e9  # routing sees it now
    assert not (data_dir / "cao-state.json").exists()  # the disk a moment later
    await asyncio.sleep(WRITE_DELAY + 0.2)
    state = on_disk(data_dir)
    assert state["accounts"]["a"]["cooling_until"] == 4e9  # type: ignore[index]
    assert [s["reason"] for s in state["switches"]] == ["quota"]  # type: ignore[attr-defined]


def test_outside_a_loop_writes_at_once_and_keeps_order(pool: LivePool, data_dir: Path) -> None:
    for until in (1e9, 2e9, 3e9):
        pool.mark_cooling("a", until, "quota")
    pool.wait_written()
    assert on_disk(data_dir)["accounts"]["a"]["cooling_until"] == 3e9  # type: ignore[index]


def test_another_process_s_change_is_seen(pool: LivePool, data_dir: Path) -> None:
    pool.views()
    Store(data_dir).update_state(lambda s: setattr(s.account("b"), "needs_login", "gone"))
    view = pool.view("b")
    assert view is not None and view.state.needs_login == "gone"


def test_corrupt_files_are_put_back_from_memory(pool: LivePool, data_dir: Path) -> None:
    pool.mark_cooling("a", 4e9, "quota")
    pool.wait_written()
    pool.views()
    (data_dir / "cao-state.json").write_text("{torn")
    (data_dir / "registry.json").write_text("[]]")
    views = pool.views()
    assert [v.name for v in views] == ["a", "b"] and views[0].state.cooling_until == 4e9
    pool.wait_written()
    assert on_disk(data_dir)["accounts"]["a"]["cooling_until"] == 4e9  # type: ignore[index]
    assert json.loads((data_dir / "registry.json").read_text())["accounts"] == ["a", "b"]
    assert len(list(data_dir.glob("*.corrupt-*"))) == 2  # what was there is kept


async def test_flush_writes_what_is_pending(pool: LivePool, data_dir: Path) -> None:
    pool.mark_needs_login("b", "refresh_token_reused")
    await asyncio.to_thread(pool.flush)  # before WRITE_DELAY is up, as at shutdown
    assert on_disk(data_dir)["accounts"]["b"]["needs_login"] == "refresh_token_reused"  # type: ignore[index]
