"""The one history rewrite (config/history.py), over requests captured from the real Codex CLI
at test time (zstd bodies as Codex sends them; nothing captured is kept in the repo), and the
classifier of the backend's refusals in every shape seen in the wild."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mitmproxy.net.encoding import decode_zstd

from cao.config.history import (
    ItemKind,
    fingerprint,
    is_rejection,
    is_rejection_event,
    minted_items,
    rewrite_request,
    strip_items,
)
from tests.codex_harness import CODEX_VERSIONS, codex_binary, record_session
from tests.fakes.upstream import check_input, read_blob


def owner(item: dict[str, Any]) -> str | None:
    return (read_blob(item["encrypted_content"]) or {}).get("org")


def foreign_to(account: str, body: bytes) -> Any:
    """The `drop` of the proactive path: remove what another (known) account minted."""
    owners = {
        fingerprint(i["encrypted_content"]): owner(i)
        for i in json.loads(body)["input"]
        if isinstance(i, dict) and i.get("encrypted_content")
    }
    return lambda print_: owners.get(print_) not in (None, account)


@pytest.fixture(scope="module", params=CODEX_VERSIONS)
def captured(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, bytes]:
    """Raw (zstd) request bodies of the real Codex: the follow-up of a tool call (reasoning,
    function_call and its output) and a turn after remote compaction (a compaction item)."""
    bodies, _ = record_session(codex_binary(request.param), tmp_path_factory.mktemp("capture"))
    return bodies


@pytest.mark.codex
def test_tool_follow_up_loses_only_the_foreign_reasoning(captured: dict[str, bytes]) -> None:
    body = decode_zstd(captured["tool"])  # Codex sends zstd
    before = json.loads(body)
    assert check_input(before["input"], "acct-b", before["store"]) is not None  # b refuses it
    new, edit = rewrite_request(body, foreign_to("acct-b", body))
    after = json.loads(new)
    assert edit.removed == {ItemKind.REASONING: 1}
    assert check_input(after["input"], "acct-b", after["store"]) is None  # b accepts it
    # Everything else is there, in order, unchanged: the tool call and its output too.
    kept = [i for i in before["input"] if i.get("type") != "reasoning"]
    assert after["input"] == kept
    assert {k: v for k, v in after.items() if k != "input"} == {
        k: v for k, v in before.items() if k != "input"
    }
    types = [i["type"] for i in after["input"]]
    assert "function_call" in types and "function_call_output" in types


@pytest.mark.codex
def test_tool_follow_up_for_its_own_account_is_left_alone(captured: dict[str, bytes]) -> None:
    body = decode_zstd(captured["tool"])
    new, edit = rewrite_request(body, foreign_to("acct-user", body))
    assert new is body and not edit.changed


@pytest.mark.codex
def test_compaction_item_of_another_account_is_removed(captured: dict[str, bytes]) -> None:
    body = decode_zstd(captured["compaction"])
    before = json.loads(body)
    assert "compaction" in [i.get("type") for i in before["input"]]
    new, edit = rewrite_request(body, foreign_to("acct-b", body))
    after = json.loads(new)
    assert edit.removed[ItemKind.COMPACTION] == 1
    assert check_input(after["input"], "acct-b", after["store"]) is None


@pytest.mark.codex
def test_unknown_origin_everything_unproven_goes(captured: dict[str, bytes]) -> None:
    """The reactive path: nothing is known about the blobs, so every one goes (and reasoning
    items kept by id without a blob, which store:false would refuse)."""
    body = decode_zstd(captured["tool"])
    new, edit = rewrite_request(body, lambda _: True, drop_orphans=True)
    after = json.loads(new)
    assert edit.changed
    assert not any("encrypted_content" in json.dumps(i) for i in after["input"])
    assert check_input(after["input"], "acct-b", after["store"]) is None


def reasoning(blob: str, n: int = 1) -> dict[str, Any]:
    return {"type": "reasoning", "id": f"rs_{n}", "summary": [], "encrypted_content": blob}


def test_an_encrypted_output_takes_its_call_along_and_the_reverse() -> None:
    items = [
        {"type": "message", "role": "user", "content": []},
        {"type": "function_call", "call_id": "c1", "name": "spawn", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "encrypted_content": "gAAA-agent"},
        {"type": "function_call", "call_id": "c2", "name": "x", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c2", "output": "plain"},
        {"type": "custom_tool_call", "call_id": "c3", "encrypted_content": "gAAA-call"},
        {"type": "custom_tool_call_output", "call_id": "c3", "output": "ok"},
    ]
    edit = strip_items(items, lambda _: True)
    assert [i.get("call_id") for i in edit.items] == [None, "c2", "c2"]
    assert edit.removed == {ItemKind.ENCRYPTED: 2, ItemKind.PAIRED: 2}
    assert edit.describe() == "2 encrypted message, 2 tool item"


def test_orphaned_reasoning_goes_only_when_asked() -> None:
    items = [{"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": None}]
    assert strip_items(items, lambda _: True).items == items
    assert strip_items(items, lambda _: True, drop_orphans=True).items == []


def test_rewrite_request_keeps_non_history_bodies() -> None:
    body = b'{"model":"m","input":"just text"}'
    assert rewrite_request(body, lambda _: True)[0] is body
    with pytest.raises(ValueError):
        rewrite_request(b"\x28\xb5not json", lambda _: True)


def test_rewritten_body_is_compact_utf8() -> None:
    body = json.dumps({"input": [reasoning("gAAA-x"), {"type": "message", "text": "é"}]})
    new, _ = rewrite_request(body.encode(), lambda _: True)
    assert new == '{"input":[{"type":"message","text":"é"}]}'.encode()


def test_minted_items_in_events_and_compaction_answers() -> None:
    item = reasoning("gAAA-1")
    assert list(minted_items({"type": "response.output_item.done", "item": item})) == [item]
    added = {"type": "response.output_item.added", "item": {**item, "encrypted_content": None}}
    assert list(minted_items(added)) == []
    completed = {"type": "response.completed", "response": {"output": [item, {"type": "x"}]}}
    assert list(minted_items(completed)) == [item]
    assert list(minted_items({"output": [item]})) == [item]  # /responses/compact
    assert list(minted_items(["not", "a", "dict"])) == []


REFUSALS = [
    {"type": "invalid_request_error", "code": "invalid_encrypted_content", "param": None,
     "message": "The encrypted content gAAA…xyz could not be verified. Reason: Encrypted "
                "content organization_id did not match the target organization."},
    {"type": "invalid_request_error", "code": None,
     "message": "The encrypted content gAAA…xyz could not be verified. Reason: Encrypted "
                "content could not be decrypted or parsed."},
    {"type": "invalid_request_error", "code": None,
     "message": "The encrypted content for item cmp_0123 could not be verified. Reason: ..."},
    {"type": "invalid_request_error", "code": None,
     "message": "Encrypted function output content could not be decrypted or decoded."},
    {"type": "invalid_request_error", "code": None, "param": "input",
     "message": "Item with id 'rs_abc' not found. Items are not persisted when `store` is set "
                "to false."},
]  # fmt: skip
NOT_REFUSALS = [
    {"type": "invalid_request_error", "code": "context_length_exceeded",
     "message": "Your input exceeds the context window of this model."},
    {"type": "invalid_request_error", "code": None, "message": "Item with id 'msg_1' not found."},
    {"type": "usage_limit_reached", "message": "The usage limit has been reached"},
]  # fmt: skip


@pytest.mark.parametrize("error", REFUSALS)
def test_every_refusal_shape_is_recognised(error: dict[str, Any]) -> None:
    assert is_rejection(400, json.dumps({"error": error}).encode())
    assert is_rejection(400, {"error": error})
    event = {"type": "response.failed", "response": {"id": "r", "error": error}}
    assert is_rejection_event(event)
    assert not is_rejection(429, {"error": error})


@pytest.mark.parametrize("error", NOT_REFUSALS)
def test_other_errors_are_not_refusals(error: dict[str, Any]) -> None:
    assert not is_rejection(400, {"error": error})
    assert not is_rejection_event({"type": "response.failed", "response": {"error": error}})


@given(st.binary(max_size=200))
def test_refusal_classifier_takes_any_body(body: bytes) -> None:
    assert is_rejection(400, body) in (True, False)


item_strategy = st.fixed_dictionaries(
    {"type": st.sampled_from(["reasoning", "function_call", "function_call_output", "message"])},
    optional={
        "call_id": st.sampled_from(["c1", "c2", "c3"]),
        "encrypted_content": st.sampled_from(["gAAA-1", "gAAA-2", "gAAA-3"]),
    },
)


@given(st.lists(item_strategy, max_size=12), st.sets(st.sampled_from(["gAAA-1", "gAAA-2"])))
def test_stripping_never_leaves_half_a_tool_call(
    items: list[dict[str, Any]], foreign: set[str]
) -> None:
    prints = {fingerprint(b) for b in foreign}
    edit = strip_items(items, lambda p: p in prints)
    assert not any(i.get("encrypted_content") in foreign for i in edit.items)
    removed_calls = {i.get("call_id") for i in items if i not in edit.items}
    assert not any(i.get("call_id") in removed_calls - {None} for i in edit.items)
    assert sum(edit.removed.values()) == len(items) - len(edit.items)
    assert all(i in items for i in edit.items)  # nothing edited, only removed


def test_fingerprints_are_short_and_stable() -> None:
    assert fingerprint("gAAA-1") == fingerprint("gAAA-1") != fingerprint("gAAA-2")
    assert len(fingerprint("x" * 10_000)) == 8
