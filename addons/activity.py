"""What each account is doing now, for the status endpoint (`cao status --watch`): requests in
the last minute and the conversations it served lately. In memory only, bounded, O(1) a
request."""

from __future__ import annotations

from collections import OrderedDict, deque

RATE_WINDOW = 60.0  # requests per minute: those of the last minute
ACTIVE_FOR = 15 * 60.0  # a conversation with no request for longer is not "served" any more
MAX_CONVERSATIONS = 2000  # remembered across all accounts; the least recent go first
MAX_SHOWN = 20  # per account in the status document


class Activity:
    def __init__(self) -> None:
        self._requests: dict[str, deque[float]] = {}
        self._conversations: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def record(self, account: str, conversation: str | None, now: float) -> None:
        """One request sent upstream for `account`."""
        times = self._requests.setdefault(account, deque())
        times.append(now)
        self._trim(times, now)
        if conversation:
            self._conversations[conversation] = (account, now)
            self._conversations.move_to_end(conversation)
            while len(self._conversations) > MAX_CONVERSATIONS:
                self._conversations.popitem(last=False)

    @staticmethod
    def _trim(times: deque[float], now: float) -> None:
        while times and times[0] <= now - RATE_WINDOW:
            times.popleft()

    def requests_per_minute(self, account: str, now: float) -> int:
        times = self._requests.get(account)
        if not times:
            return 0
        self._trim(times, now)
        return len(times)

    def serving(self, now: float) -> dict[str, list[str]]:
        """account -> the conversations it served in the last ACTIVE_FOR, newest first (each
        under the account that served its latest request)."""
        served: dict[str, list[str]] = {}
        for conversation, (account, at) in reversed(self._conversations.items()):
            if at <= now - ACTIVE_FOR:
                break  # ordered by last use: the rest are older
            shown = served.setdefault(account, [])
            if len(shown) < MAX_SHOWN:
                shown.append(conversation)
        return served
