"""Codex session files: the rollout rewrite (over files the real Codex recorded, made at test
time), the usage-limit watch, `cao sessions`, `cao run --resume` and the continuation argv."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cao.cli.resume import CONTINUE_PROMPT, continuation_argv, user_prompt
from cao.config.history import ItemKind
from cao.config.sessions import (
    LimitWatch,
    SessionError,
    SessionFile,
    copy_session,
    find_session,
    limit_message,
    session_files,
    strip_session,
    summarize,
)
from tests.codex_harness import CODEX_VERSIONS, codex_binary, record_session
from tests.helpers import FAKE_CODEX, cao_env, run_cao, write_account

SID = "01a234c0-0000-7000-8000-00000000abcd"


@pytest.fixture(scope="module", params=CODEX_VERSIONS)
def recorded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session file the real Codex wrote: a tool-call turn, then a remote compaction."""
    _, home = record_session(codex_binary(request.param), tmp_path_factory.mktemp("rec"))
    (path,) = home.glob("sessions/*/*/*/rollout-*.jsonl")
    return path


def lines_of(data: bytes) -> list[dict[str, object]]:
    return [json.loads(line) for line in data.splitlines() if line.strip()]


@pytest.mark.codex
def test_real_session_file_loses_its_encrypted_content_and_nothing_else(recorded: Path) -> None:
    original = recorded.read_bytes()
    data, edit = strip_session(recorded)
    assert b'"encrypted_content":"gAAA' not in data.replace(b" ", b"")
    assert edit.removed[ItemKind.REASONING] >= 2 and edit.removed[ItemKind.COMPACTION] >= 1
    before, after = lines_of(original), lines_of(data)
    assert after[0]["type"] == "session_meta"
    items = [r["payload"] for r in after if r["type"] == "response_item"]
    types = [i["type"] for i in items]  # type: ignore[index]
    assert "function_call" in types and "function_call_output" in types  # the pair stays
    # Every line that carried no encrypted content is there, byte for byte, in order.
    plain = [line for line in original.splitlines() if b"gAAAAB" not in line and line.strip()]
    assert [line for line in data.splitlines() if line in set(plain)] == plain
    compacted = [r for r in after if r["type"] == "compacted"]
    assert compacted and all("encrypted_content" not in json.dumps(r["payload"]) for r in compacted)
    assert len(after) < len(before)
    assert recorded.read_bytes() == original  # the source is never modified


@pytest.mark.codex
def test_copy_goes_to_the_same_place_privately(recorded: Path, tmp_path: Path) -> None:
    home = recorded.parents[4]
    session = SessionFile(SID, recorded, home)
    target_home = tmp_path / "b"
    target_home.mkdir(mode=0o700)
    copy, edit = copy_session(session, target_home)
    assert copy.path == target_home / session.relative and edit.changed
    assert oct(copy.path.stat().st_mode & 0o777) == "0o600"
    assert all(
        oct(d.stat().st_mode & 0o777) == "0o700"
        for d in copy.path.parents
        if target_home in d.parents
    )
    copy_session(session, target_home)  # a copy from an earlier move is replaced
    with pytest.raises(SessionError):
        copy_session(copy, target_home)
    found = summarize(next(session_files(home)), "user")
    assert found.first_message == "use the clock" and found.started is not None


def write_rollout(home: Path, lines: list[object], sid: str = SID) -> Path:
    day = home / "sessions" / "2026" / "12" / "02"
    day.mkdir(parents=True, exist_ok=True)
    path = day / f"rollout-2026-12-02T03-00-00-{sid}.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


META = {"type": "session_meta", "payload": {"id": SID, "timestamp": "2026-12-02T03:00:00Z"}}
LIMIT = {"type": "event_msg", "payload": {"type": "task_complete", "error": {
    "message": "You’ve hit your usage limit. … try again at 5:08 AM.",
    "codex_error_info": "usage_limit_exceeded"}}}  # fmt: skip


def test_unknown_formats_are_refused(tmp_path: Path) -> None:
    for content in (["not json"], [{"type": "response_item", "payload": {}}], []):
        path = write_rollout(tmp_path, content)
        if content == ["not json"]:
            path.write_text("not json\n")
        with pytest.raises(SessionError):
            strip_session(path)


def test_watch_sees_only_a_limit_written_after_it_started(tmp_path: Path) -> None:
    path = write_rollout(tmp_path, [META, LIMIT])  # an old limit (a resumed copy holds one)
    watch = LimitWatch(tmp_path, since=0.0)
    assert not watch.poll()
    with path.open("a") as f:
        f.write(json.dumps(LIMIT)[:40])  # Codex mid-write: not a line yet
    assert not watch.poll()
    with path.open("a") as f:
        f.write(json.dumps(LIMIT)[40:] + "\n")
    assert watch.poll() and watch.message and "try again at 5:08 AM" in watch.message
    assert watch.session is not None and watch.session.id == SID


def test_limit_message_shapes() -> None:
    assert limit_message(LIMIT) is not None
    flat = {"type": "event_msg", "payload": {"type": "error", "message": "x",
            "codex_error_info": "usage_limit_exceeded"}}  # fmt: skip
    assert limit_message(flat) == "x"
    other = {"type": "event_msg", "payload": {"type": "error", "codex_error_info": "other"}}
    assert limit_message(other) is None and limit_message("x") is None


def test_continuation_argv() -> None:
    assert continuation_argv(["exec", "--json", "-m", "o3", "do it"], SID) == [
        "exec", "--json", "-m", "o3", "resume", SID, CONTINUE_PROMPT,
    ]  # fmt: skip
    assert continuation_argv(["-c", "x=1", "exec", "resume", "old", "go"], SID, "next") == [
        "-c", "x=1", "exec", "resume", SID, "next",
    ]  # fmt: skip
    assert continuation_argv([], SID) == ["resume", SID]
    assert continuation_argv(["fix the bug"], SID) == ["resume", SID]
    assert continuation_argv(["-m", "o3", "resume", "--last"], SID) == ["-m", "o3", "resume", SID]
    with pytest.raises(ValueError):
        continuation_argv(["login"], SID)
    assert user_prompt(["exec", "-m", "x", "do it"]) == "do it"
    assert user_prompt(["exec", "resume", SID, "go"]) == "go" and user_prompt([]) is None


# -- the CLI --------------------------------------------------------------------------------------


def test_sessions_lists_the_newest_copy_of_each(data_dir: Path) -> None:
    a, b = write_account(data_dir, "a"), write_account(data_dir, "b")
    user = {"type": "response_item", "payload": {"type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "<environment_context>"}]}}  # fmt: skip
    task = {"type": "response_item", "payload": {"type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "refactor the parser " * 5}]}}  # fmt: skip
    old = write_rollout(a, [META, user, task])
    os.utime(old, (1, 1))
    write_rollout(b, [META, user, task])
    other = "01a234c0-0000-7000-8000-0000000000ff"
    write_rollout(a, [{"type": "session_meta", "payload": {"id": other}}], other)
    listed = json.loads(run_cao(data_dir, "sessions", "--json").stdout)
    assert sorted((s["id"], s["account"]) for s in listed) == sorted([(SID, "b"), (other, "a")])
    first = next(s for s in listed if s["id"] == SID)
    assert first["first_message"].startswith("refactor the parser")
    text = run_cao(data_dir, "sessions").stdout
    assert SID in text and "refactor the parser" in text and "…" in text
    assert run_cao(data_dir, "sessions", "--limit", "1").stdout.count("\n") == 2


def test_sessions_with_none(data_dir: Path) -> None:
    write_account(data_dir, "a")
    result = run_cao(data_dir, "sessions")
    assert result.returncode == 0 and "no sessions yet" in result.stderr


def test_resume_refuses_bad_ids_in_one_line(data_dir: Path) -> None:
    write_account(data_dir, "a")
    bad = run_cao(data_dir, "run", "--codex", str(FAKE_CODEX), "--resume", "../../x")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "not a session id" in bad.stderr
    unknown = run_cao(data_dir, "run", "--codex", str(FAKE_CODEX), "--resume", SID)
    assert unknown.returncode == 1 and "no session" in unknown.stderr
    assert unknown.stderr.count("\n") == 1


def fake_run(data_dir: Path, tmp_path: Path, *args: str, **env: str) -> list[dict[str, object]]:
    log = tmp_path / "codex.log"
    result = run_cao(
        data_dir, "run", "--codex", str(FAKE_CODEX), *args,
        env=cao_env(data_dir, FAKE_CODEX_LOG=str(log), **env),
    )  # fmt: skip
    calls = [json.loads(x) for x in log.read_text().splitlines()]
    return [{**c, "stderr": result.stderr, "code": result.returncode} for c in calls]


def test_exec_continues_with_resume_and_a_readable_session(data_dir: Path, tmp_path: Path) -> None:
    write_account(data_dir, "a")
    write_account(data_dir, "b")
    calls = fake_run(
        data_dir, tmp_path, "--", "exec", "the task", FAKE_CODEX_QUOTA="a", FAKE_CODEX_SESSION="ok"
    )
    assert [c["args"] for c in calls] == [
        ["exec", "the task"], ["exec", "resume", SID, CONTINUE_PROMPT],
    ]  # fmt: skip
    assert find_session(data_dir / "b", SID) is not None  # the copy b resumed


def test_a_session_cao_cannot_read_falls_back_to_a_rerun(data_dir: Path, tmp_path: Path) -> None:
    write_account(data_dir, "a")
    write_account(data_dir, "b")
    calls = fake_run(
        data_dir, tmp_path, "--", "exec", "the task",
        FAKE_CODEX_QUOTA="a", FAKE_CODEX_SESSION="garbage",
    )  # fmt: skip
    assert [c["args"] for c in calls] == [["exec", "the task"]] * 2
    stderr = str(calls[-1]["stderr"])
    assert "cannot continue the session" in stderr and "running codex again" in stderr
    assert calls[-1]["code"] == 0


def test_resume_continues_a_session_of_another_account(data_dir: Path, tmp_path: Path) -> None:
    a = write_account(data_dir, "a")
    write_account(data_dir, "b", default=True)
    write_rollout(a, [META])
    calls = fake_run(data_dir, tmp_path, "--resume", SID, "--", "exec", "next step")
    assert [c["args"] for c in calls] == [["exec", "resume", SID, "next step"]]
    assert Path(str(calls[0]["codex_home"])).name == "b"
    tui = fake_run(data_dir, tmp_path, "--resume", SID)
    assert tui[-1]["args"] == ["resume", SID]
