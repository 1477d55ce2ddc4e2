"""Which account minted each piece of encrypted content the gateway has seen, and the rewrite
that keeps a conversation's history acceptable to the account serving it (the rewrite itself is
config/history.py, shared with `cao run`)."""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Mapping
from typing import Any

from mitmproxy import http
from mitmproxy.net import encoding

from cao.config.history import ItemKind, blob_of, fingerprint, kind_of, minted_items
from cao.config.history import rewrite_request as rewrite_body

from .decision import FlowDecision
from .routing import ConversationMap

log = logging.getLogger("cao.gateway")

# Fingerprints are 8 bytes: 100,000 of them (thousands of turns) take ~15 MB at most.
LEDGER_LIMIT = 100_000


class BlobLedger:
    """fingerprint -> the account that minted it; bounded, oldest dropped first."""

    def __init__(self, limit: int = LEDGER_LIMIT) -> None:
        self._limit = limit
        self._owners: OrderedDict[bytes, str] = OrderedDict()

    def add(self, print_: bytes, account: str) -> None:
        self._owners[print_] = account
        self._owners.move_to_end(print_)
        while len(self._owners) > self._limit:
            self._owners.popitem(last=False)

    def owner(self, print_: bytes) -> str | None:
        return self._owners.get(print_)

    def __len__(self) -> int:
        return len(self._owners)


class HistoryBook:
    """Learns who minted what from the answers, and rewrites requests before they go out."""

    def __init__(self, conversations: ConversationMap, limit: int = LEDGER_LIMIT) -> None:
        self.conversations = conversations
        self.ledger = BlobLedger(limit)
        self.rewrites = 0
        self.removed: Counter[ItemKind] = Counter()
        self.rejections_retried = 0
        self.rejections_passed = 0
        self.compaction_lost = 0

    def learn(self, account: str, conversation: str | None, document: object) -> None:
        """Record the blobs an answer (SSE event or compaction answer) minted for `account`."""
        record = self.conversations.record(conversation) if conversation else None
        for item in minted_items(document):
            blob = blob_of(item)
            if blob is None:
                continue
            self.ledger.add(fingerprint(blob), account)
            if record is not None:
                record.minted_by.add(account)
                if kind_of(item) is ItemKind.COMPACTION:
                    record.compacted_by = account
                    record.lost_compaction = False

    def needs_rewrite(self, decision: FlowDecision, account: str) -> bool:
        """Must a request of this flow be read before it goes to `account`? Decided without
        reading it: a conversation that does not move is never decoded."""
        record = self.conversations.peek(decision.conversation) if decision.conversation else None
        if decision.strip_unknown or (record is not None and record.strip_unknown):
            return True
        return record is not None and record.needs_rewrite(account)

    def prepare(self, request: http.Request, decision: FlowDecision, account: str) -> None:
        """Make an HTTP request acceptable to `account` (see `rewrite`). A body that needs no
        change is not decoded."""
        if not self.needs_rewrite(decision, account):
            _restore_original(request, decision)
            return
        original = decision.original_body
        if original is None:
            original = request.raw_content or b""
        try:
            body = encoding.decode(original, request.headers.get("content-encoding", "identity"))
            if not isinstance(body, bytes):
                raise ValueError("not a byte body")
        except ValueError:  # not decodable: upstream answers it as it would Codex
            log.debug("history: request body not readable, sent as it is")
            return
        new = self.rewrite(body, decision, account)
        if new is None:
            _restore_original(request, decision)
            return
        decision.original_body = original
        request.content = new  # re-encoded as Codex sent it (zstd), content-length set

    def rewrite(self, body: bytes, decision: FlowDecision, account: str) -> bytes | None:
        """A Responses request (an HTTP body, decoded, or a WebSocket `response.create` frame)
        without the items another account minted (and, once a blob of unknown origin was
        rejected, without every blob not proven to be `account`'s). None: nothing to change,
        or not JSON (upstream answers it as it would Codex)."""
        record = self.conversations.peek(decision.conversation) if decision.conversation else None
        strip_unknown = decision.strip_unknown or (record is not None and record.strip_unknown)
        try:
            if strip_unknown:
                new, edit = rewrite_body(
                    body, lambda p: self.ledger.owner(p) != account, drop_orphans=True
                )
            else:
                new, edit = rewrite_body(
                    body, lambda p: self.ledger.owner(p) not in (None, account)
                )
        except ValueError:
            log.debug("history: request body not readable, sent as it is")
            return None
        decision.stripped_unknown = strip_unknown
        if not edit.changed:
            return None
        self.rewrites += 1
        self.removed.update(edit.removed)
        owners = sorted({self.ledger.owner(p) or "unknown" for p in edit.removed_prints})
        conversation = decision.conversation or "-"
        log.info(
            "history %s: %s -> %s, removed %s",
            conversation,
            "+".join(owners) or "-",
            account,
            edit.describe(),
        )
        if edit.removed[ItemKind.COMPACTION] and record is not None and not record.lost_compaction:
            record.lost_compaction = True
            self.compaction_lost += 1
            log.warning(
                "conversation %s lost its compacted history: account %s made the summary and "
                "cannot serve it now",
                conversation,
                record.compacted_by or "+".join(owners),
            )
        return new

    def take_rejection(self, decision: FlowDecision) -> bool:
        """The upstream refused a blob on this request: strip every unproven blob from this
        conversation from now on. True if the request should be sent once more; False if it
        already went without them (the refusal reaches Codex: no loops)."""
        if decision.stripped_unknown:
            self.rejections_passed += 1
            log.warning(
                "history %s: account %s still refuses the history without foreign content; "
                "passing its answer to Codex",
                decision.conversation or "-",
                decision.account,
            )
            return False
        if decision.conversation:
            self.conversations.record(decision.conversation).strip_unknown = True
        decision.strip_unknown = True
        self.rejections_retried += 1
        log.info(
            "history %s: account %s refused encrypted content of unknown origin; sending "
            "without it",
            decision.conversation or "-",
            decision.account,
        )
        return True

    def status(self) -> Mapping[str, Any]:
        return {
            "rewrites": self.rewrites,
            "removed": {kind.value: n for kind, n in sorted(self.removed.items())},
            "rejections_retried": self.rejections_retried,
            "rejections_passed": self.rejections_passed,
            "compaction_lost": self.compaction_lost,
            "blobs_known": len(self.ledger),
        }


def _restore_original(request: http.Request, decision: FlowDecision) -> None:
    """The body as Codex sent it, if an earlier rewrite (for another account) changed it."""
    if decision.original_body is not None:
        request.raw_content = decision.original_body
        request.headers["content-length"] = str(len(decision.original_body))
        decision.original_body = None
