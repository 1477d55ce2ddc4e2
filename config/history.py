"""The one history rewrite: taking encrypted content that another account minted out of a
conversation's history, so the serving account's backend accepts it.

The backend binds every `encrypted_content` blob (reasoning items, compaction items, encrypted
agent messages and function outputs) to the account that minted it and to the exact item it sits
in: a blob replayed under another account is rejected with a 400, and so is an item edited
around its blob, or (with `store: false`) a reasoning item that keeps its `rs_` id without its
blob. So the rewrite removes whole items, never edits one, and removes a tool call together with
its output. The gateway (Codex's requests) and `cao run` (Codex's session files) both use it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .quota import error_object

BLOB_FIELD = "encrypted_content"
COMPACTION_TYPES = frozenset({"compaction", "compaction_summary"})


class ItemKind(StrEnum):
    REASONING = "reasoning"
    COMPACTION = "compaction"
    ENCRYPTED = "encrypted message"  # multi-agent messages and function outputs
    PAIRED = "tool item"  # a call or output removed because its partner was
    ORPHANED = "orphaned reasoning"  # store:false reasoning kept by id without its blob


def blob_of(item: object) -> str | None:
    if not isinstance(item, dict):
        return None
    blob = item.get(BLOB_FIELD)
    return blob if isinstance(blob, str) and blob else None


def fingerprint(blob: str) -> bytes:
    """Tells blobs apart without keeping them (8 bytes: bounded memory per item)."""
    return hashlib.blake2b(blob.encode(), digest_size=8).digest()


def kind_of(item: Mapping[str, Any]) -> ItemKind:
    kind = item.get("type")
    if kind == "reasoning":
        return ItemKind.REASONING
    if kind in COMPACTION_TYPES:
        return ItemKind.COMPACTION
    return ItemKind.ENCRYPTED


def is_orphaned_reasoning(item: object) -> bool:
    """A reasoning item that names a server-side id but carries no blob: with `store: false`
    the backend answers `Item with id 'rs_…' not found`."""
    return (
        isinstance(item, dict)
        and item.get("type") == "reasoning"
        and isinstance(item.get("id"), str)
        and blob_of(item) is None
    )


Drop = Callable[[bytes], bool]  # fingerprint -> remove this item?


@dataclass
class HistoryEdit:
    items: list[Any]
    removed: Counter[ItemKind] = field(default_factory=Counter)
    removed_prints: list[bytes] = field(default_factory=list)  # whose blobs went

    @property
    def changed(self) -> bool:
        return bool(self.removed)

    def describe(self) -> str:
        """'2 reasoning, 1 compaction': counts only, never content."""
        return ", ".join(f"{n} {kind.value}" for kind, n in sorted(self.removed.items()))


def strip_items(items: list[Any], drop: Drop, drop_orphans: bool = False) -> HistoryEdit:
    """`items` without every item whose blob `drop` names, whole (id included), and without any
    item that shares a `call_id` with a removed one: a tool call never stays without its output
    or the reverse. `drop_orphans` also removes reasoning items kept by id without a blob."""
    doomed: dict[int, ItemKind] = {}
    prints: list[bytes] = []
    call_ids: set[str] = set()
    for index, item in enumerate(items):
        blob = blob_of(item)
        if blob is not None:
            print_ = fingerprint(blob)
            if not drop(print_):
                continue
            doomed[index] = kind_of(item)
            prints.append(print_)
        elif drop_orphans and is_orphaned_reasoning(item):
            doomed[index] = ItemKind.ORPHANED
        else:
            continue
        call_id = item.get("call_id")
        if isinstance(call_id, str):
            call_ids.add(call_id)
    if call_ids:
        for index, item in enumerate(items):
            if index not in doomed and isinstance(item, dict) and item.get("call_id") in call_ids:
                doomed[index] = ItemKind.PAIRED
    if not doomed:
        return HistoryEdit(items)
    kept = [item for index, item in enumerate(items) if index not in doomed]
    return HistoryEdit(kept, Counter(doomed.values()), prints)


def rewrite_request(
    body: bytes, drop: Drop, drop_orphans: bool = False
) -> tuple[bytes, HistoryEdit]:
    """A Responses request body (JSON, decoded) with its `input` stripped; the body is returned
    unchanged (the same object) when nothing had to go. Raises ValueError if it is not JSON."""
    document = json.loads(body)
    items = document.get("input") if isinstance(document, dict) else None
    if not isinstance(items, list):
        return body, HistoryEdit([])
    edit = strip_items(items, drop, drop_orphans)
    if not edit.changed:
        return body, edit
    document["input"] = edit.items
    # Compact separators and raw UTF-8, as Codex itself serializes.
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode(), edit


def minted_items(document: object) -> Iterator[Mapping[str, Any]]:
    """Items carrying a blob in an answer: an SSE event (`item`, or `response.output`) or a
    compaction answer (`output`)."""
    if not isinstance(document, dict):
        return
    item = document.get("item")
    if blob_of(item) is not None:
        yield item  # type: ignore[misc]
    for holder in (document, document.get("response")):
        output = holder.get("output") if isinstance(holder, dict) else None
        if isinstance(output, list):
            yield from (i for i in output if blob_of(i) is not None)


# -- the backend's answer to a blob it will not accept --------------------------------------------

REJECTION_CODE = "invalid_encrypted_content"
_REJECTION_MESSAGE = re.compile(
    r"encrypted content.{0,200}could not be (?:verified|decrypted)"
    r"|encrypted function output content could not be decrypted"
    r"|item with id '(?:rs|cmp)_[^']*' not found",
    re.IGNORECASE | re.DOTALL,
)


def is_rejection_error(error: Mapping[str, Any]) -> bool:
    """By code, or by message (the backend also sends `"code": null`)."""
    if error.get("code") == REJECTION_CODE or error.get("type") == REJECTION_CODE:
        return True
    message = error.get("message")
    return isinstance(message, str) and _REJECTION_MESSAGE.search(message) is not None


def is_rejection(status: int, body: bytes | str | Mapping[str, Any]) -> bool:
    """An HTTP answer refusing encrypted content of another account (or none at all)."""
    if status != 400:
        return False
    error = error_object(body)
    return error is not None and is_rejection_error(error)


def is_rejection_event(event: Mapping[str, Any]) -> bool:
    """The same refusal inside a 200 stream, as a `response.failed` event."""
    if event.get("type") != "response.failed":
        return False
    error = error_object(event)
    return error is not None and is_rejection_error(error)
