"""registry.json in the original tool's format: {"default_account": str|null, "accounts": [..]}."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from .names import is_safe_name

log = logging.getLogger("cao")
_WARNED: set[str] = set()


@dataclass
class Registry:
    accounts: list[str] = field(default_factory=list)
    default_account: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # fields we do not know: kept as found
    # Entries that are no safe directory name: never used as a path, never dropped either.
    unusable: list[str] = field(default_factory=list)
    unusable_default: str | None = None

    @classmethod
    def parse(cls, document: object) -> Registry:
        """Raises ValueError when the document is not a registry at all."""
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        accounts = document.get("accounts", [])
        default = document.get("default_account")
        if not isinstance(accounts, list) or not all(isinstance(a, str) for a in accounts):
            raise ValueError("'accounts' is not a list of names")
        if default is not None and not isinstance(default, str):
            raise ValueError("'default_account' is not a name")
        names: list[str] = []
        unusable: list[str] = []
        for name in accounts:
            if not is_safe_name(name):
                if name not in _WARNED:  # once per process, however often it is read
                    _WARNED.add(name)
                    log.warning(
                        "registry.json lists %r, which is not a safe directory name: not used "
                        "(kept in the file)",
                        name,
                    )
                if name not in unusable:
                    unusable.append(name)
            elif name not in names:
                names.append(name)
        extra = {k: v for k, v in document.items() if k not in ("accounts", "default_account")}
        usable_default = default if default in names else None
        kept_default = default if usable_default is None and default in unusable else None
        return cls(names, usable_default, extra, unusable, kept_default)

    def dump(self) -> dict[str, Any]:
        default = self.default_account
        if default is None:  # an entry we cannot use stays the default until one is chosen
            default = self.unusable_default
        accounts = self.accounts + [n for n in self.unusable if n not in self.accounts]
        return {**self.extra, "default_account": default, "accounts": accounts}

    def fallback_order(self) -> list[str]:
        """The default account first, then the others in the order they were added."""
        if self.default_account is None:
            return list(self.accounts)
        return [self.default_account] + [a for a in self.accounts if a != self.default_account]

    def add(self, name: str) -> bool:
        """Returns False when the name was already there. The first account becomes default."""
        if name in self.accounts:
            return False
        self.accounts.append(name)
        if self.default_account is None:
            self.default_account = name
        return True

    def remove(self, name: str) -> None:
        index = self.accounts.index(name)
        self.accounts.remove(name)
        if self.default_account == name:
            # The next account in fallback order takes over.
            rest = self.accounts[index:] + self.accounts[:index]
            self.default_account = rest[0] if rest else None
