"""Activity: requests per minute and the conversations each account serves (status endpoint)."""

from __future__ import annotations

from cao.addons import activity
from cao.addons.activity import Activity


def test_requests_per_minute_counts_the_last_minute() -> None:
    book = Activity()
    for t in (0.0, 10.0, 30.0, 59.0):
        book.record("a", None, 1000 + t)
    book.record("b", "c1", 1050.0)
    assert book.requests_per_minute("a", 1059.5) == 4
    assert book.requests_per_minute("a", 1065.0) == 3  # the one at +0 is past the minute
    assert book.requests_per_minute("b", 1065.0) == 1
    assert book.requests_per_minute("nobody", 1065.0) == 0


def test_a_conversation_is_served_by_the_account_of_its_latest_request() -> None:
    book = Activity()
    book.record("a", "c1", 100.0)
    book.record("a", "c2", 101.0)
    book.record("b", "c1", 102.0)  # moved
    assert book.serving(103.0) == {"b": ["c1"], "a": ["c2"]}
    # Quiet for longer than ACTIVE_FOR: served no more.
    assert book.serving(101.5 + activity.ACTIVE_FOR) == {"b": ["c1"]}


def test_bounded() -> None:
    book = Activity()
    for i in range(activity.MAX_CONVERSATIONS + 50):
        book.record("a", f"c{i}", 100.0 + i * 0.001)
    assert len(book._conversations) == activity.MAX_CONVERSATIONS
    shown = book.serving(101.0)["a"]
    assert len(shown) == activity.MAX_SHOWN and shown[0] == f"c{activity.MAX_CONVERSATIONS + 49}"
