"""Notify: which notifier, what it says, one a minute of each kind (pure parts)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cao.addons.notify import (
    MIN_GAP,
    RateLimit,
    exhausted_text,
    notifier_command,
    switch_text,
)
from cao.config.state import Switch


def test_one_a_minute_per_kind() -> None:
    limit = RateLimit()
    assert limit.allow("switch", 1000.0)
    assert not limit.allow("switch", 1000.0 + MIN_GAP - 1)
    assert limit.allow("exhausted", 1001.0)  # another kind has its own minute
    assert limit.allow("switch", 1000.0 + MIN_GAP)


def test_texts_name_accounts_and_times_only() -> None:
    title, text = switch_text(Switch(1.0, "work", "home", "quota", "conv-secret-id"))
    assert (title, text) == ("cao: account switched", "work → home (usage limit)")
    title, text = exhausted_text(1_800_000_000.0, 1_800_000_000.0 - 3600)
    assert title == "cao: every account is limited"
    assert text.startswith("the first is back at ") and text.endswith("(in 60 min)")


def test_notifier_per_platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for tool in ("notify-send", "osascript"):
        (tmp_path / tool).write_text("#!/bin/sh\n")
        (tmp_path / tool).chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert notifier_command("linux") == [str(tmp_path / "notify-send"), "--app-name=cao"]
    mac = notifier_command("darwin")
    assert mac is not None and mac[0] == str(tmp_path / "osascript")
    assert "on run argv" in mac  # the texts go as arguments, never inside the script
    monkeypatch.setenv("PATH", os.devnull)
    assert notifier_command("linux") is None and notifier_command("darwin") is None
