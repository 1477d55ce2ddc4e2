"""Account choice and conversation tracking (pure functions)."""

from __future__ import annotations

from pathlib import Path

from cao.addons.routing import ConversationMap, choose_account, conversation_id
from cao.config.auth import AccountAuth, LoginState
from cao.config.pool import AccountView
from cao.config.state import AccountState, UsageWindow

NOW = 1_000_000.0


def view(
    name: str,
    *,
    cooling: float | None = None,
    used: float = 0,
    needs_login: bool = False,
    logged_in: bool = True,
) -> AccountView:
    auth = AccountAuth(
        LoginState.LOGGED_IN if logged_in else LoginState.NOT_LOGGED_IN,
        access_token="t" if logged_in else None,
    )
    state = AccountState(
        cooling_until=cooling,
        cooling_reason="quota" if cooling else None,
        needs_login="refresh_token_reused" if needs_login else None,
        usage={"300": UsageWindow(used, NOW + 100)} if used else {},
    )
    return AccountView(name, False, Path("/x") / name, auth, state)


def test_first_usable_in_order() -> None:
    views = [view("a", cooling=NOW + 10), view("b", logged_in=False), view("c")]
    assert choose_account(views, NOW).account.name == "c"  # type: ignore[union-attr]


def test_conversation_stays_while_usable() -> None:
    views = [view("a"), view("b")]
    assert choose_account(views, NOW, current="b").account.name == "b"  # type: ignore[union-attr]


def test_conversation_moves_with_reason() -> None:
    views = [view("a", cooling=NOW + 10), view("b")]
    choice = choose_account(views, NOW, current="a")
    assert choice.account is not None and choice.account.name == "b"
    assert (choice.moved_from, choice.reason) == ("a", "quota")
    choice = choose_account([view("a", needs_login=True), view("b")], NOW, current="a")
    assert choice.reason == "needs login"


def test_cooldown_in_the_past_is_usable() -> None:
    assert choose_account([view("a", cooling=NOW - 1)], NOW).account is not None


def test_threshold_moves_new_conversations_and_live_ones_stay_until_refused() -> None:
    views = [view("a", used=96), view("b", used=10)]
    assert choose_account(views, NOW, switch_at=95).account.name == "b"  # type: ignore[union-attr]
    kept = choose_account(views, NOW, current="a", switch_at=95)
    assert kept.account is not None and kept.account.name == "a" and kept.moved_from is None
    refused = [view("a", used=96, cooling=NOW + 60), view("b", used=10)]
    moved = choose_account(refused, NOW, current="a", switch_at=95)
    assert moved.account is not None and (moved.account.name, moved.reason) == ("b", "quota")


def test_switch_live_moves_new_turns_but_not_continuations() -> None:
    views = [view("a", used=96), view("b", used=10)]
    moved = choose_account(views, NOW, current="a", switch_at=95, switch_live=True)
    assert moved.reason == "threshold"
    kept = choose_account(views, NOW, current="a", continuation=True, switch_at=95,
                          switch_live=True)  # fmt: skip
    assert kept.account is not None and kept.account.name == "a"


def test_all_above_threshold_uses_most_headroom() -> None:
    views = [view("a", used=99), view("b", used=97), view("c", used=98)]
    assert choose_account(views, NOW, switch_at=95).account.name == "b"  # type: ignore[union-attr]


def test_nobody_usable() -> None:
    assert choose_account([view("a", cooling=NOW + 1)], NOW).account is None
    assert choose_account([], NOW).account is None


def test_conversation_headers_new_and_old() -> None:
    assert conversation_id({"thread-id": "t", "session-id": "s"}) == "t"
    assert conversation_id({"conversation_id": "c"}) == "c"
    assert conversation_id({}) is None


def test_conversation_map_is_bounded() -> None:
    m = ConversationMap(limit=2)
    m.set("1", "a")
    m.set("2", "b")
    m.get("1")
    m.set("3", "c")
    assert m.get("2") is None and m.get("1") == "a" and len(m) == 2


def test_conversation_needs_a_rewrite_only_for_another_accounts_blobs() -> None:
    m = ConversationMap()
    record = m.record("t")
    assert not record.needs_rewrite("a")  # nothing minted yet: never decoded
    record.minted_by.add("a")
    assert not record.needs_rewrite("a") and record.needs_rewrite("b")
    record.strip_unknown = True
    assert record.needs_rewrite("a")
    m.set("t", "a")
    assert m.get("t") == "a" and m.peek("t") is record
