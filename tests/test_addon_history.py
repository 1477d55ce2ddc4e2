"""HistoryBook, HistoryGuard and FlowDecision with mitmproxy's test helpers."""

from __future__ import annotations

import copy
import io
import json
import time
from typing import Any

import pytest
from mitmproxy.io import tnetstring
from mitmproxy.net.encoding import decode_zstd, encode_zstd
from mitmproxy.test import tflow, tutils

from cao.addons.blobs import BlobLedger, HistoryBook
from cao.addons.decision import META, FlowDecision, decision_of
from cao.addons.gateway import Gateway
from cao.addons.history import HistoryGuard
from cao.addons.routing import ConversationMap
from cao.config.history import fingerprint
from tests.fakes.upstream import reasoning_item


def body(*items: dict[str, Any]) -> bytes:
    return json.dumps({"model": "m", "store": False, "input": list(items)}).encode()


USER = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}


def zstd_request(raw_json: bytes) -> Any:
    request = tutils.treq(path=b"/backend-api/codex/responses", method=b"POST")
    request.headers["content-encoding"] = "zstd"
    request.raw_content = encode_zstd(raw_json)
    request.headers["content-length"] = str(len(request.raw_content))
    return request


def decision(account: str = "b", conversation: str | None = "t1") -> FlowDecision:
    return FlowDecision(started=time.time(), account=account, conversation=conversation)


def sent(request: Any) -> dict[str, Any]:
    assert request.headers["content-length"] == str(len(request.raw_content))
    return json.loads(decode_zstd(request.raw_content))  # type: ignore[no-any-return]


@pytest.fixture
def book() -> HistoryBook:
    return HistoryBook(ConversationMap())


def learn(book: HistoryBook, account: str, item: dict[str, Any], conversation: str = "t1") -> None:
    book.learn(account, conversation, {"type": "response.output_item.done", "item": item})


def test_a_conversation_that_never_moved_is_not_decoded(book: HistoryBook) -> None:
    a_item = reasoning_item("acct-a")
    learn(book, "a", a_item)
    request = zstd_request(b"")
    request.raw_content = b"not zstd at all"  # decoding it would fail: it is never tried
    book.prepare(request, decision("a"), "a")
    assert request.raw_content == b"not zstd at all"


def test_moved_conversation_loses_the_other_accounts_blobs(book: HistoryBook) -> None:
    a_item, b_item = reasoning_item("acct-a"), reasoning_item("acct-b")
    learn(book, "a", a_item)
    learn(book, "b", b_item)
    original = body(USER, a_item, b_item)
    request, d = zstd_request(original), decision("b")
    book.prepare(request, d, "b")
    assert sent(request)["input"] == [USER, b_item]
    assert request.headers["content-encoding"] == "zstd"  # as Codex sends it
    assert decode_zstd(d.original_body or b"") == original
    assert book.rewrites == 1 and book.status()["removed"] == {"reasoning": 1}
    # The inline retry goes to a after all: rewritten from Codex's body, not from b's.
    book.prepare(request, d, "a")
    assert sent(request)["input"] == [USER, a_item]


def test_going_back_to_an_account_that_needs_nothing_restores_the_body(book: HistoryBook) -> None:
    a_item = reasoning_item("acct-a")
    learn(book, "a", a_item)
    original = body(USER, a_item)
    request, d = zstd_request(original), decision("b")
    book.prepare(request, d, "b")
    assert sent(request)["input"] == [USER]
    book.conversations.record("t1").minted_by = {"a"}
    book.prepare(request, d, "a")
    assert decode_zstd(request.raw_content) == original and d.original_body is None


def test_unknown_blobs_stay_until_refused_then_go_for_good(book: HistoryBook) -> None:
    unknown, b_item = reasoning_item("acct-a"), reasoning_item("acct-b")
    learn(book, "b", b_item)
    book.conversations.record("t1").minted_by.add("x")  # something made it need a look
    request, d = zstd_request(body(USER, unknown, b_item)), decision("b")
    book.prepare(request, d, "b")
    assert sent(request)["input"] == [USER, unknown, b_item]  # not known to be foreign
    assert book.take_rejection(d)  # first refusal: send again
    book.prepare(request, d, "b")
    assert sent(request)["input"] == [USER, b_item]
    assert d.stripped_unknown
    assert not book.take_rejection(d)  # a second refusal is passed on: no loop
    assert book.status()["rejections_retried"] == 1 and book.status()["rejections_passed"] == 1
    # Later requests of the conversation are stripped up front.
    later, d2 = zstd_request(body(USER, unknown, b_item)), decision("b")
    book.prepare(later, d2, "b")
    assert sent(later)["input"] == [USER, b_item]


def test_unreadable_bodies_go_as_they_are(book: HistoryBook) -> None:
    book.conversations.record("t1").strip_unknown = True
    request = zstd_request(b"{not json")
    raw = request.raw_content
    book.prepare(request, decision("b"), "b")
    assert request.raw_content == raw


def test_compaction_is_remembered_and_its_loss_said_once(
    book: HistoryBook, caplog: pytest.LogCaptureFixture
) -> None:
    compaction = {"type": "compaction", "encrypted_content": "gAAA-cmp"}
    learn(book, "a", compaction)
    record = book.conversations.record("t1")
    assert record.compacted_by == "a"
    for _ in range(2):
        book.prepare(zstd_request(body(USER, compaction)), decision("b"), "b")
    assert book.compaction_lost == 1
    lost = [r.message for r in caplog.records if "lost its compacted history" in r.message]
    assert len(lost) == 1 and "account a made the summary" in lost[0]
    assert not any("gAAA" in r.message for r in caplog.records)  # never a blob in the log


def test_ledger_is_bounded() -> None:
    ledger = BlobLedger(limit=3)
    for n in range(5):
        ledger.add(fingerprint(f"b{n}"), "a")
    assert len(ledger) == 3
    assert ledger.owner(fingerprint("b0")) is None and ledger.owner(fingerprint("b4")) == "a"


def test_decision_copies_as_plain_values_so_flows_can_still_be_saved() -> None:
    flow = tflow.tflow()
    d = decision()
    d.original_body = b"the whole history"
    flow.metadata[META] = d
    assert decision_of(flow) is d
    state = flow.get_state()  # what mitmweb's save/export serialize
    assert state["metadata"][META] == {
        "account": "b", "passthrough": False, "conversation": "t1", "retry": None,
        "history_rewritten": True,
    }  # fmt: skip
    tnetstring.dump(state, io.BytesIO())  # serializable
    assert decision_of(flow.copy()) is None  # a copy is not treated as a live decision
    assert copy.deepcopy(d)["account"] == "b"


# -- the guard inside a (test) mitmproxy -------------------------------------------------------


def refused() -> Any:
    error = {"type": "invalid_request_error", "code": None,
             "message": "The encrypted content gAAA…xyz could not be verified."}  # fmt: skip
    return tutils.tresp(status_code=400, content=json.dumps({"error": error}).encode())


async def test_guard_answers_a_refusal_with_a_307_once(gateway: Gateway) -> None:
    guard = HistoryGuard(gateway)
    flow = tflow.tflow(req=zstd_request(body(USER)), resp=refused())
    flow.metadata[META] = decision("b")
    await guard.response(flow)
    assert flow.response is not None and flow.response.status_code == 307
    assert flow.response.headers["location"] == flow.request.path
    assert gateway.conversations.record("t1").strip_unknown
    again = tflow.tflow(req=zstd_request(body(USER)))
    again.metadata[META] = decision("b")
    await guard.request(again)  # the re-send is stripped up front...
    assert decision_of(again).stripped_unknown  # type: ignore[union-attr]
    again.response = refused()
    await guard.response(again)
    assert again.response is not None and again.response.status_code == 400  # ...then passed


async def test_guard_leaves_other_answers_and_passthrough_alone(gateway: Gateway) -> None:
    guard = HistoryGuard(gateway)
    other = tutils.tresp(status_code=400, content=b'{"error":{"message":"bad model"}}')
    flow = tflow.tflow(req=zstd_request(body(USER)), resp=other)
    flow.metadata[META] = decision("b")
    await guard.response(flow)
    assert flow.response is other
    passthrough = tflow.tflow(resp=refused())
    passthrough.metadata[META] = FlowDecision(started=0.0, passthrough=True)
    await guard.response(passthrough)
    assert passthrough.response is not None and passthrough.response.status_code == 400


async def test_guard_learns_from_a_compaction_answer(gateway: Gateway) -> None:
    guard = HistoryGuard(gateway)
    item = {"type": "compaction", "encrypted_content": "gAAA-cmp"}
    answer = tutils.tresp(content=json.dumps({"output": [USER, item]}).encode())
    request = tutils.treq(path=b"/backend-api/codex/responses/compact", method=b"POST")
    flow = tflow.tflow(req=request, resp=answer)
    flow.metadata[META] = decision("a")
    await guard.response(flow)
    assert gateway.history.ledger.owner(fingerprint("gAAA-cmp")) == "a"
    assert gateway.conversations.record("t1").compacted_by == "a"
