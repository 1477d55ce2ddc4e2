"""Which account serves a request: pure functions over the pool's views."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cao.config.pool import AccountView, Availability, Strategy, by_strategy

# Newer Codex sends session-id / thread-id, older session_id / conversation_id.
CONVERSATION_HEADERS = ("thread-id", "session-id", "conversation_id", "session_id")
TURN_STATE_HEADER = "x-codex-turn-state"


def conversation_id(headers: Mapping[str, str]) -> str | None:
    for name in CONVERSATION_HEADERS:
        value = headers.get(name)
        if value:
            return value
    return None


def is_continuation(headers: Mapping[str, str]) -> bool:
    """A follow-up request inside one turn (it echoes the server's turn state)."""
    return TURN_STATE_HEADER in headers


@dataclass(frozen=True)
class Choice:
    account: AccountView | None
    moved_from: str | None = None  # the account the conversation leaves, if it moves
    reason: str | None = None  # why it moves


def _paused_only(view: AccountView, now: float) -> bool:
    """Paused, and usable but for that."""
    state = view.state
    return view.availability(now) is Availability.PAUSED and state.limited_until(now) is None


def _leave_reason(view: AccountView, now: float, switch_at: float) -> str:
    availability = view.availability(now)
    if availability is Availability.COOLING:
        return view.state.limit_reason(now) or "quota"
    if availability is Availability.USABLE:
        return "threshold" if view.max_used_percent(now) >= switch_at else "recovered"
    return availability.value


def choose_account(
    views: Sequence[AccountView],
    now: float,
    current: str | None = None,
    continuation: bool = False,
    switch_at: float = 100.0,
    strategy: Strategy = Strategy.ORDER,
    switch_live: bool = False,
    mid_turn: bool = False,
) -> Choice:
    """Keep a conversation on `current` while it is usable: its prompt cache lives there, and
    a move costs its next turn the whole input uncached (with `switch_live`, the old way, only
    while under the switch threshold, unless mid-turn). Else the usable account under the
    threshold the strategy prefers; else, all being above it, the usable one with the most
    headroom. An account the user paused finishes the turn it is in (`mid_turn`: the request
    echoes the turn state); the conversation moves at its next turn."""
    usable = [v for v in views if v.usable(now)]
    by_name = {v.name: v for v in views}
    stay = by_name.get(current) if current else None
    if stay is not None and (
        (
            stay.usable(now)
            and (not switch_live or continuation or stay.max_used_percent(now) < switch_at)
        )
        or (mid_turn and _paused_only(stay, now))
    ):
        return Choice(stay)
    below = by_strategy([v for v in usable if v.max_used_percent(now) < switch_at], now, strategy)
    chosen = below[0] if below else min(usable, key=lambda v: v.max_used_percent(now), default=None)
    if chosen is None:
        return Choice(None)
    if current is None or current == chosen.name:
        return Choice(chosen)
    left = by_name.get(current)
    reason = _leave_reason(left, now, switch_at) if left else "account removed"
    return Choice(chosen, current, reason)


@dataclass
class Conversation:
    """What the gateway knows of one conversation (Codex's thread id)."""

    account: str | None = None  # who serves it
    minted_by: set[str] = field(default_factory=set)  # whose encrypted content its history holds
    compacted_by: str | None = None  # whose compaction item (its summary) its history holds
    strip_unknown: bool = False  # a blob of unknown origin was rejected: strip them up front
    lost_compaction: bool = False  # a move dropped its compacted history (logged once)

    def needs_rewrite(self, account: str) -> bool:
        """Does a request for `account` carry blobs it would reject? Decided without reading
        the body, so requests that need no change are never decoded."""
        return self.strip_unknown or any(minter != account for minter in self.minted_by)


class ConversationMap:
    """conversation id -> Conversation; bounded, least recently used dropped first."""

    def __init__(self, limit: int = 10_000) -> None:
        self._limit = limit
        self._items: OrderedDict[str, Conversation] = OrderedDict()

    def get(self, conversation: str) -> str | None:
        """The account serving it, if any."""
        record = self.peek(conversation)
        return record.account if record is not None else None

    def peek(self, conversation: str) -> Conversation | None:
        record = self._items.get(conversation)
        if record is not None:
            self._items.move_to_end(conversation)
        return record

    def record(self, conversation: str) -> Conversation:
        """Its record, made on first use."""
        record = self.peek(conversation)
        if record is None:
            record = self._items[conversation] = Conversation()
            while len(self._items) > self._limit:
                self._items.popitem(last=False)
        return record

    def set(self, conversation: str, account: str) -> None:
        self.record(conversation).account = account

    def __len__(self) -> int:
        return len(self._items)
