"""An account's auth.json: the tokens Codex wrote, and what they say about the account."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from .files import write_json_atomic

AUTH_FILE = "auth.json"
_CLAIMS = "https://api.openai.com/auth"


API_KEY_LOGIN = "an API-key login, not a ChatGPT one"


class LoginState(StrEnum):
    LOGGED_IN = "logged in"
    NOT_LOGGED_IN = "not logged in"
    UNREADABLE = "unreadable auth.json"


def decode_jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified (Codex does not verify it either); {} if it is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, binascii.Error):
        return {}
    return claims if isinstance(claims, dict) else {}


@dataclass(frozen=True)
class AccountAuth:
    """What one auth.json holds. Token fields never show in repr()."""

    state: LoginState
    problem: str | None = None
    access_token: str | None = field(default=None, repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    id_token: str | None = field(default=None, repr=False)
    account_id: str | None = None
    expires_at: float | None = None
    email: str | None = None
    plan_type: str | None = None
    last_refresh: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def logged_in(self) -> bool:
        return self.state is LoginState.LOGGED_IN

    def expires_within(self, seconds: float, now: float) -> bool:
        return self.expires_at is not None and self.expires_at - now < seconds

    @classmethod
    def parse(cls, document: object) -> AccountAuth:
        if not isinstance(document, dict):
            return cls(LoginState.UNREADABLE, "not a JSON object")
        tokens = document.get("tokens")
        if tokens is None:
            api_key = document.get("auth_mode") == "apikey" or bool(document.get("OPENAI_API_KEY"))
            problem = API_KEY_LOGIN if api_key else "no ChatGPT tokens"
            return cls(LoginState.NOT_LOGGED_IN, problem, raw=document)
        if not isinstance(tokens, dict):
            return cls(LoginState.UNREADABLE, "'tokens' is not an object", raw=document)
        access = tokens.get("access_token")
        refresh = tokens.get("refresh_token")
        id_token = tokens.get("id_token")
        if not isinstance(access, str) or not access:
            return cls(LoginState.UNREADABLE, "no access_token", raw=document)
        id_claims = decode_jwt_claims(id_token) if isinstance(id_token, str) else {}
        auth_claims = id_claims.get(_CLAIMS)
        auth_claims = auth_claims if isinstance(auth_claims, dict) else {}
        exp = decode_jwt_claims(access).get("exp")
        account_id = tokens.get("account_id") or auth_claims.get("chatgpt_account_id")
        last_refresh = document.get("last_refresh")
        return cls(
            LoginState.LOGGED_IN,
            None,
            access_token=access,
            refresh_token=refresh if isinstance(refresh, str) else None,
            id_token=id_token if isinstance(id_token, str) else None,
            account_id=account_id if isinstance(account_id, str) else None,
            expires_at=float(exp) if isinstance(exp, int | float) else None,
            email=_str_or_none(id_claims.get("email")),
            plan_type=_str_or_none(auth_claims.get("chatgpt_plan_type")),
            last_refresh=last_refresh if isinstance(last_refresh, str) else None,
            raw=document,
        )


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def read_auth(home: Path) -> AccountAuth:
    """Never raises: a missing or broken file is a state the user is told about."""
    path = home / AUTH_FILE
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return AccountAuth(LoginState.NOT_LOGGED_IN)
    except OSError as e:
        return AccountAuth(LoginState.UNREADABLE, e.strerror or str(e))
    try:
        document = json.loads(text)
    except ValueError:
        return AccountAuth(LoginState.UNREADABLE, "not valid JSON")
    return AccountAuth.parse(document)


def write_refreshed_tokens(home: Path, current: AccountAuth, new_tokens: dict[str, Any]) -> None:
    """Store what a refresh returned; every field we do not know about is kept."""
    document = dict(current.raw)
    tokens = dict(document.get("tokens") or {})
    for key in ("access_token", "refresh_token", "id_token"):
        value = new_tokens.get(key)
        if isinstance(value, str) and value:
            tokens[key] = value
    document["tokens"] = tokens
    document["last_refresh"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    write_json_atomic(home / AUTH_FILE, document)
