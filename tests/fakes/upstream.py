"""A fake ChatGPT backend for end-to-end tests and the benchmark.

Serves what Codex and the gateway talk to: `/backend-api/codex/models`, `/responses` (SSE turns,
usage-limit 429s, rate limits, in-stream failures, tool calls), `/responses/compact`, `/wham/*`,
and `/oauth/token`. Answers are scripted per ChatGPT account id (the `chatgpt-account-id` header):
a queue of one-shot answers, then a default. Every request is recorded. HTTP/1.1 keep-alive,
TCP_NODELAY, optional TLS.

As strict as the real backend where cao depends on it (codex-protocol.md):
- Every reasoning and compaction item it returns carries `encrypted_content` minted for the
  serving account and bound to that item (its id and summary). A request whose input replays a
  blob minted for another account, a blob that does not decode, an item edited around its blob,
  or (with `store: false`) a reasoning item whose blob was removed but whose `rs_` id was kept,
  is rejected with the 400 shapes seen in the wild (`rejection` picks code / null code / in a
  200 stream as `response.failed`).
- Answers are zstd-compressed when `compress` is on and the client offers zstd (Codex 0.171+).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from mitmproxy.net.encoding import decode_zstd

if TYPE_CHECKING:
    from tests.fakes.ws_upstream import WsSocket

try:  # what mitmproxy itself uses for zstd
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:  # Python < 3.14
    from backports import zstd  # type: ignore[no-redef]


@dataclass
class Answer:
    kind: str = "sse"  # sse | quota | rate | sse_quota | tool | status | cut | reject | garbage
    status: int = 200
    body: bytes = b""
    events: int = 3
    delay: float = 0.0
    resets_at: float | None = None
    retry_after: int = 1
    headers: dict[str, str] = field(default_factory=dict)


class Credentials:
    """What a recorded request or socket says about who sent it (its headers)."""

    headers: dict[str, str]

    @property
    def account_id(self) -> str | None:
        return self.headers.get("chatgpt-account-id")

    @property
    def token(self) -> str | None:
        auth = self.headers.get("authorization", "")
        return auth[7:] if auth.startswith("Bearer ") else None


@dataclass
class Recorded(Credentials):
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    rejected: str | None = None  # the blob rejection this request got, if any
    raw: bytes = b""  # the body as it came (zstd from Codex)
    compressed_answer: bool = False  # answered zstd-compressed
    socket: int | None = None  # a WebSocket request: the index of its socket in `sockets`

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def sse(event_type: str, payload: dict[str, Any]) -> bytes:
    return f"event: {event_type}\ndata: {json.dumps({'type': event_type, **payload})}\n\n".encode()


# -- encrypted content, bound to an account and an item ----------------------------------------

BLOB_PREFIX = "gAAAAB"
_serial = itertools.count(1)


def _binding(item: dict[str, Any]) -> str:
    """What a blob is bound to besides its account: the item's id and what it says."""
    bound = {"id": item.get("id"), "summary": item.get("summary")}
    return hashlib.sha256(json.dumps(bound, sort_keys=True).encode()).hexdigest()[:16]


def mint_blob(account_id: str | None, item: dict[str, Any]) -> str:
    payload = {"org": account_id, "bind": _binding(item), "n": next(_serial)}
    return BLOB_PREFIX + base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()


def read_blob(blob: str) -> dict[str, Any] | None:
    if not blob.startswith(BLOB_PREFIX):
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(blob[len(BLOB_PREFIX) :]))
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def reasoning_item(account_id: str | None, n: int = 1) -> dict[str, Any]:
    item: dict[str, Any] = {
        "type": "reasoning",
        "id": f"rs_{account_id}_{next(_serial)}",
        "summary": [{"type": "summary_text", "text": f"thinking {n}"}],
    }
    item["encrypted_content"] = mint_blob(account_id, item)
    return item


def compaction_item(account_id: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "compaction", "id": f"cmp_{account_id}_{next(_serial)}"}
    item["encrypted_content"] = mint_blob(account_id, {"id": None, "summary": None})
    return item


def _short(blob: str) -> str:
    return f"{blob[:4]}…{blob[-3:]}"


FOREIGN = "Encrypted content organization_id did not match the target organization."
UNREADABLE = "Encrypted content could not be decrypted or parsed."


def check_input(items: object, account_id: str | None, store: object) -> str | None:
    """The message of the 400 the real backend gives for this input, or None if it is fine."""
    if not isinstance(items, list):
        return None
    for item in items:
        if not isinstance(item, dict):
            continue
        blob = item.get("encrypted_content")
        kind = item.get("type")
        item_id = item.get("id")
        if not blob:
            if kind == "reasoning" and isinstance(item_id, str) and store is False:
                return (
                    f"Item with id '{item_id}' not found. Items are not persisted when `store` "
                    "is set to false. Try again with `store` set to true, or remove this item "
                    "from your input."
                )
            continue
        payload = read_blob(blob) if isinstance(blob, str) else None
        if payload is None:
            reason = UNREADABLE
        elif payload.get("org") != account_id:
            reason = FOREIGN
        elif kind == "reasoning" and payload.get("bind") != _binding(item):
            reason = UNREADABLE  # edited around its blob
        else:
            continue
        if kind in ("compaction", "compaction_summary"):
            return f"The encrypted content for item {item_id or 'cmp_?'} could not be verified. " \
                f"Reason: {reason}"  # fmt: skip
        if kind not in ("reasoning",):
            return "Encrypted function output content could not be decrypted or decoded."
        return f"The encrypted content {_short(str(blob))} could not be verified. Reason: {reason}"
    return None


def turn_events(
    text_parts: list[str],
    response_id: str = "resp_1",
    reasoning: dict[str, Any] | None = None,
    input_tokens: int = 10,
) -> list[bytes]:
    text = "".join(text_parts)
    first = 1 if reasoning else 0
    item = {"type": "message", "role": "assistant", "id": "msg_1"}
    usage = {
        "input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": len(text_parts), "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + len(text_parts),
    }  # fmt: skip
    return [
        sse("response.created", {"response": {"id": response_id}}),
        *reasoning_events(reasoning, 0),
        sse("response.output_item.added", {"output_index": first, "item": {**item, "content": []}}),
        *[
            sse("response.output_text.delta",
                {"item_id": "msg_1", "output_index": first, "content_index": 0, "delta": part})
            for part in text_parts
        ],
        sse("response.output_item.done", {"output_index": first, "item": {
            **item, "content": [{"type": "output_text", "text": text}]}}),
        sse("response.completed", {"response": {"id": response_id, "usage": usage}}),
    ]  # fmt: skip


def reasoning_events(item: dict[str, Any] | None, index: int) -> list[bytes]:
    """As the real backend streams a reasoning item: added without its blob, done with it."""
    if item is None:
        return []
    added = {k: v for k, v in item.items() if k != "encrypted_content"}
    return [
        sse("response.output_item.added", {"output_index": index, "item": added}),
        sse("response.output_item.done", {"output_index": index, "item": item}),
    ]


TOOL_CALL: dict[str, Any] = {
    "name": "sleep",
    "namespace": "clock",
    "arguments": json.dumps({"duration_ms": 1}),
}


def tool_call_events(
    call_id: str = "call_1",
    reasoning: dict[str, Any] | None = None,
    response_id: str = "resp_tool",
) -> list[bytes]:
    # A real tool of Codex 0.169 (`clock.sleep`): harmless, needs no sandbox. The model reasons
    # before it calls a tool, as the real one does.
    item = {"type": "function_call", "id": "fc_1", "call_id": call_id, **TOOL_CALL}
    index = 1 if reasoning else 0
    return [
        sse("response.created", {"response": {"id": response_id}}),
        *reasoning_events(reasoning, 0),
        sse("response.output_item.added", {"output_index": index, "item": item}),
        sse("response.output_item.done", {"output_index": index, "item": item}),
        sse("response.completed", {"response": {"id": response_id, "usage": {
            "input_tokens": 10, "input_tokens_details": None, "output_tokens": 1,
            "output_tokens_details": None, "total_tokens": 11}}}),
    ]  # fmt: skip


def usage_window(used: float, seconds: int, resets_in: int = 3600) -> dict[str, Any]:
    return {
        "used_percent": used,
        "limit_window_seconds": seconds,
        "reset_after_seconds": resets_in,
        "reset_at": int(time.time()) + resets_in,
    }


def usage_document(
    primary_used: float | None,
    primary_seconds: int,
    secondary_used: float | None = None,
    secondary_seconds: int = 10080 * 60,
    balance: str = "0",
    plan: str = "plus",
) -> dict[str, Any]:
    """A /backend-api/wham/usage answer as the real backend shapes it (null windows too)."""
    return {
        "plan_type": plan,
        "email": "someone@example.com",
        "rate_limit": {
            # Required by Codex's parser, as the real backend sends them.
            "allowed": max(primary_used or 0, secondary_used or 0) < 100,
            "limit_reached": max(primary_used or 0, secondary_used or 0) >= 100,
            "primary_window": None
            if primary_used is None
            else usage_window(primary_used, primary_seconds),
            "secondary_window": None
            if secondary_used is None
            else usage_window(secondary_used, secondary_seconds, 3 * 86400),
            "tertiary_window": None,
        },
        "credits": {"has_credits": balance != "0", "unlimited": False, "balance": balance},
        "rate_limit_reset_credits": {"available_count": 2},
    }


def usage_limit_error(resets_at: float) -> dict[str, Any]:
    return {
        "type": "usage_limit_reached",
        "message": "The usage limit has been reached",
        "plan_type": "plus",
        "resets_at": int(resets_at),
        "resets_in_seconds": max(0, int(resets_at - time.time())),
    }


class FakeUpstream:
    def __init__(self, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1") -> None:
        self.tls = tls
        self.host = host
        self.requests: list[Recorded] = []
        self.queues: dict[str | None, list[Answer]] = {}
        self.defaults: dict[str | None, Answer] = {}
        self.wham_account_id: str | None = None  # Codex's own account, for /wham/accounts/check
        self.workspace_origin = "https://chatgpt.com"  # its workspace_backend_origin
        self.accounts_check_status = 200
        self.usage_headers: dict[str, dict[str, str]] = {}  # per account id
        self.oauth_answers: list[tuple[int, dict[str, Any]]] = []
        self.oauth_delay = 0.0
        self.oauth_by_token: dict[str, tuple[int, dict[str, Any]]] = {}  # refresh token -> answer
        self.reasoning = True  # turns carry an account-bound reasoning item, as real ones do
        self.rejection = "code"  # foreign blobs: "code" | "null_code" | "stream" (response.failed)
        self.rejected: list[Recorded] = []  # requests answered with a blob rejection
        self.compress = False  # zstd answers to clients that offer it (Codex 0.171+)
        self.compactions = 0  # remote compactions served
        self.revoked: set[str] = set()  # access tokens answered 401 (rotated elsewhere)
        self.usage_documents: dict[str, dict[str, Any]] = {}  # /wham/usage per account id
        self.seen_delay = 0.0  # hold model requests this long (a slow upstream)
        self.usage_tokens = 0  # reported as a turn's input tokens (a large one makes Codex compact)
        # The Responses WebSocket (ws_upstream.py). Off: upgrades get 426, as from a backend
        # without it, and Codex uses HTTP at once (the tests of HTTP behaviour rely on that).
        self.websockets = False
        self.sockets: list[WsSocket] = []
        self.handshake_answers: list[tuple[int, bytes]] = []  # answers to upgrades, before 101s
        self.ws_max_age = 3600.0  # the backend's 60-minute connection limit
        self.delay_per_kib = 0.0  # time per request grows with the bytes received (bench)
        self.tool_calls = 0
        self.turn_states = 0
        self.lock = threading.Lock()
        self.open_streams = 0
        self.closed_early = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- scripting -----------------------------------------------------------------------------

    def queue(self, account_id: str | None, *answers: Answer) -> None:
        with self.lock:
            self.queues.setdefault(account_id, []).extend(answers)

    def answer_for(self, account_id: str | None) -> Answer:
        with self.lock:
            queue = self.queues.get(account_id) or []
            if queue:
                return queue.pop(0)
            return self.defaults.get(account_id) or self.defaults.get(None) or Answer()

    def model_requests(self, suffix: str = "/responses") -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and r.path.endswith(suffix)]

    def ws_requests(self, generate_only: bool = True) -> list[Recorded]:
        """The `response.create` frames Codex sent over WebSockets (warm-ups left out)."""
        frames = [r for r in self.requests if r.method == "WS"]
        if generate_only:
            frames = [r for r in frames if not _is_warmup(r)]
        return frames

    def blob_accounts(self, request: Recorded) -> list[str | None]:
        """Whose encrypted content a request's input carries, item by item."""
        items = (request.json() or {}).get("input") or []
        return [
            (read_blob(i["encrypted_content"]) or {}).get("org")
            for i in items
            if isinstance(i, dict) and isinstance(i.get("encrypted_content"), str)
        ]

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def start(self, port: int = 0) -> FakeUpstream:
        upstream = self

        class Handler(_Handler):
            fake = upstream

        server = _Server((self.host, port), Handler)
        server.daemon_threads = True
        if self.tls is not None:
            server.socket = self.tls.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def _is_upgrade(value: str) -> bool:
    """`websocket` among the Upgrade header's tokens, as a server reads it."""
    return any(t.strip().lower().split("/", 1)[0] == "websocket" for t in value.split(","))


def _is_warmup(recorded: Recorded) -> bool:
    try:
        document = recorded.json()
    except ValueError:
        return False
    return isinstance(document, dict) and document.get("generate") is False


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # the default 5 refuses connections under a 100-stream load


class _Handler(BaseHTTPRequestHandler):
    fake: FakeUpstream
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _record(self) -> Recorded:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        raw = body
        if self.headers.get("content-encoding") == "zstd" and body:
            body = decode_zstd(body)
        recorded = Recorded(
            self.command,
            self.path,
            {k.lower(): v for k, v in self.headers.items()},
            body,
            time.time(),
            raw=raw,
            compressed_answer=self._compressing(),
        )
        self.fake.requests.append(recorded)
        return recorded

    def _compressing(self) -> bool:
        offered = self.headers.get("accept-encoding", "")
        return self.fake.compress and "zstd" in [e.strip() for e in offered.split(",")]

    def _send(
        self,
        status: int,
        body: bytes,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        self.send_response(status)
        if self._compressing():
            body = zstd.compress(body)
            self.send_header("content-encoding", "zstd")
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        r = self._record()
        if _is_upgrade(r.headers.get("upgrade", "")):
            if self.fake.websockets and r.path.split("?", 1)[0].endswith("/responses"):
                from tests.fakes.ws_upstream import serve_websocket

                serve_websocket(self, r)
            else:
                self._send(426, b"no websockets here", content_type="text/plain")
        elif "/wham/accounts/check" in r.path:
            account = self.fake.wham_account_id or r.account_id or "acct-unknown"
            self._send(self.fake.accounts_check_status, json.dumps({"accounts": [{
                "id": account, "name": "fake", "plan_type": "plus", "structure": "personal",
                "is_deactivated": False, "workspace_backend_origin": self.fake.workspace_origin,
                "account_routing_override": "NO_CONSTRAINT"}]}).encode())  # fmt: skip
        elif r.path.split("?", 1)[0].endswith("/wham/usage"):
            self._usage(r)
        elif "/models" in r.path:
            self._send(200, json.dumps({"models": []}).encode(), {"etag": '"fake"'})
        else:
            self._send(200, b"{}")

    def do_POST(self) -> None:
        r = self._record()
        if r.path.endswith("/oauth/token"):
            self._oauth(r)
        elif r.path.endswith("/responses"):
            if not self._reject_foreign(r):
                self._responses(r)
        elif r.path.endswith("/responses/compact"):
            if not self._reject_foreign(r):
                self._compact(r)
        else:
            self._send(200, b"{}")

    def _usage(self, r: Recorded) -> None:
        """ChatGPT's usage endpoint (what Codex's /status reads): costs no model quota."""
        if r.token in self.fake.revoked or r.token is None:
            self._send(401, b'{"detail":"Unauthorized"}')
            return
        document = self.fake.usage_documents.get(r.account_id or "")
        if document is None:
            document = usage_document(5.0, 300 * 60, 1.0, 10080 * 60)
        self._send(200, json.dumps(document).encode())

    def _oauth(self, r: Recorded) -> None:
        time.sleep(self.fake.oauth_delay)
        try:
            refresh_token = (r.json() or {}).get("refresh_token")
        except ValueError:
            refresh_token = None
        with self.fake.lock:
            if refresh_token in self.fake.oauth_by_token:  # as the real endpoint: per token
                status, doc = self.fake.oauth_by_token[refresh_token]
            elif self.fake.oauth_answers:
                status, doc = self.fake.oauth_answers.pop(0)
            else:
                status, doc = 400, {"error": "unexpected refresh"}
        self._send(status, json.dumps(doc).encode())

    def _reject_foreign(self, r: Recorded) -> bool:
        """Answer as the real backend does to input it cannot verify for this account."""
        try:
            document = r.json() or {}
        except ValueError:
            self._send(400, b'{"error":{"type":"invalid_request_error","message":"bad json"}}')
            return True
        message = check_input(document.get("input"), r.account_id, document.get("store"))
        if message is None:
            return False
        r.rejected = message
        with self.fake.lock:
            self.fake.rejected.append(r)
        code = None if self.fake.rejection == "null_code" else "invalid_encrypted_content"
        if message.startswith("Item with id"):
            code = None
        error = {"type": "invalid_request_error", "code": code, "param": None, "message": message}
        if self.fake.rejection == "stream" and r.path.endswith("/responses"):
            failed = {"id": "resp_rejected", "status": "failed", "error": error}
            self._stream(
                [
                    sse("response.created", {"response": {"id": "resp_rejected"}}),
                    sse("response.failed", {"response": failed}),
                ],
                0.0,
                {},
            )
        else:
            self._send(400, json.dumps({"error": error}).encode())
        return True

    def _reasoning(self, account: str | None) -> dict[str, Any] | None:
        return reasoning_item(account) if self.fake.reasoning else None

    def _compact_v2(self, r: Recorded) -> None:
        """Remote compaction as Codex 0.169+ asks for it: a turn whose last input item is
        `compaction_trigger`, answered by a stream with exactly one compaction item."""
        item = compaction_item(r.account_id)
        added = {k: v for k, v in item.items() if k != "encrypted_content"}
        usage = {"input_tokens": 10, "input_tokens_details": None, "output_tokens": 1,
                 "output_tokens_details": None, "total_tokens": 11}  # fmt: skip
        events = [
            sse("response.created", {"response": {"id": "resp_compact"}}),
            sse("response.output_item.added", {"output_index": 0, "item": added}),
            sse("response.output_item.done", {"output_index": 0, "item": item}),
            sse("response.completed", {"response": {"id": "resp_compact", "usage": usage}}),
        ]
        with self.fake.lock:
            self.fake.compactions += 1
        self._stream(events, 0.0, self.fake.usage_headers.get(r.account_id or "", {}))

    def _compact(self, r: Recorded) -> None:
        """Remote compaction: the user's messages, then one compaction item for this account."""
        items = (r.json() or {}).get("input") or []
        kept = [i for i in items if isinstance(i, dict) and i.get("role") == "user"]
        output = [*kept, compaction_item(r.account_id)]
        usage = {"input_tokens": 10, "input_tokens_details": None, "output_tokens": 1,
                 "output_tokens_details": None, "total_tokens": 11}  # fmt: skip
        document = {"id": "resp_compact", "object": "response.compaction",
                    "created_at": int(time.time()), "output": output, "usage": usage}  # fmt: skip
        self._send(
            200, json.dumps(document).encode(), self.fake.usage_headers.get(r.account_id or "")
        )

    def _responses(self, r: Recorded) -> None:
        account = r.account_id
        time.sleep(self.fake.seen_delay + self.fake.delay_per_kib * len(r.raw) / 1024)
        if r.token in self.fake.revoked:
            body = {"error": {"type": "invalid_request_error", "code": "token_expired",
                              "message": "Provided authentication token is expired."}}  # fmt: skip
            self._send(401, json.dumps(body).encode())
            return
        items = (r.json() or {}).get("input") or [{}]
        if isinstance(items[-1], dict) and items[-1].get("type") == "compaction_trigger":
            self._compact_v2(r)
            return
        answer = self.fake.answer_for(account)
        extra = {**self.fake.usage_headers.get(account or "", {}), **answer.headers}
        if answer.kind == "quota":
            resets_at = answer.resets_at or time.time() + 3600
            self._send(429, json.dumps({"error": usage_limit_error(resets_at)}).encode(), extra)
        elif answer.kind == "rate":
            body = {"error": {"type": "rate_limit_exceeded", "message": "Rate limit reached"}}
            self._send(
                429, json.dumps(body).encode(), {"retry-after": str(answer.retry_after), **extra}
            )
        elif answer.kind == "status":
            self._send(answer.status, answer.body, extra)
        elif answer.kind == "garbage":  # not HTTP, echoing the request's token (a broken proxy)
            self.wfile.write(
                b"GARBAGE " + self.headers.get("authorization", "").encode() + b"\r\n\r\n"
            )
            self.wfile.flush()
            self.close_connection = True
        elif answer.kind == "sse_quota":
            failed = sse("response.failed", {"response": {"id": "resp_f", "error": {
                "code": "usage_limit_reached", "message": "The usage limit has been reached",
                "resets_at": int(answer.resets_at or time.time() + 3600)}}})  # fmt: skip
            self._stream(
                [sse("response.created", {"response": {"id": "resp_f"}}), failed],
                answer.delay,
                extra,
            )
        elif answer.kind == "tool":
            self._stream(tool_call_events(reasoning=self._reasoning(account)), answer.delay, extra)
        elif answer.kind == "cut":
            events = turn_events([f"part{i} " for i in range(answer.events)])
            self._stream(events[: 2 + answer.events // 2], answer.delay, extra, cut=True)
        else:
            parts = [
                f"hello from {account} " if i == 0 else f"part{i} " for i in range(answer.events)
            ]
            events = turn_events(
                parts,
                reasoning=self._reasoning(account),
                input_tokens=self.fake.usage_tokens or 10,
            )
            self._stream(events, answer.delay, extra)

    def _stream(
        self, events: list[bytes], delay: float, headers: dict[str, str], cut: bool = False
    ) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        compressor = zstd.ZstdCompressor() if self._compressing() else None
        if compressor is not None:
            self.send_header("content-encoding", "zstd")
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        with self.fake.lock:
            self.fake.open_streams += 1
        try:
            for i, event in enumerate(events):
                if i and delay:
                    time.sleep(delay)
                if compressor is not None:  # one zstd block per event: each arrives at once
                    event = compressor.compress(event, zstd.ZstdCompressor.FLUSH_BLOCK)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                self.wfile.flush()
            if cut:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            with self.fake.lock:
                self.fake.closed_early += 1
            self.close_connection = True
        finally:
            with self.fake.lock:
                self.fake.open_streams -= 1
