"""Account names double as directory names in the data dir.

A name from the original tool's registry.json is used as long as it is a safe single path
component (`alice.work` is; `../x` and `a/b` are not): the original accepted any such name.
A new name (`cao add`, `cao import`) keeps to a plain alphabet (no spaces, no look-alike
letters, never a leading `-` that a command line would read as an option).
"""

import re
import shlex
from collections.abc import Iterable

from .errors import InvalidInput

MAX_NAME_LENGTH = 64
NEW_NAME_RULE = (
    "letters a-z/A-Z, digits, '_', '-', '.', '@' and '+', 1 to 64 characters, "
    "starting with a letter, digit or '_'"
)
_NEW_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,63}")
NAME_RULE = (
    "1 to 64 characters, no '/', '\\\\', control characters or leading '.'; "
    "not a file cao keeps in the data dir"
)
# What the data dir holds besides the account homes.
RESERVED = frozenset({"registry.json", "cao-state.json", "cao.toml", "gateway.key"})
_UNSAFE = re.compile(r"[/\\\x00-\x1f\x7f]")


def is_safe_name(name: str) -> bool:
    """A name that can only ever mean one directory inside the data dir."""
    return (
        0 < len(name) <= MAX_NAME_LENGTH
        and not name.startswith(".")
        and name == name.strip()
        and _UNSAFE.search(name) is None
        and name not in RESERVED
        and ".corrupt-" not in name
    )


def is_valid_name(name: str) -> bool:
    """A name `cao add` accepts for a new account (names an existing registry holds may be
    any safe name)."""
    return is_safe_name(name) and _NEW_NAME.fullmatch(name) is not None


def validate_name(name: str) -> str:
    """An account name given on the command line (it may name an existing account)."""
    if not is_safe_name(name):
        raise InvalidInput(f"invalid account name {name!r}: use {NAME_RULE}")
    return name


def validate_new_name(name: str) -> str:
    if not is_valid_name(name):
        raise InvalidInput(f"invalid account name {name!r}: use {NEW_NAME_RULE}")
    return name


def case_twin(name: str, existing: Iterable[str]) -> str | None:
    """An existing name that equals `name` but for case (`Work` for `work`), else None."""
    folded = name.casefold()
    return next((n for n in existing if n != name and n.casefold() == folded), None)


def refuse_case_twin(name: str, existing: Iterable[str]) -> None:
    """A new name may not differ from an existing one only in case: on a case-insensitive
    disk (macOS, Windows) both would be one CODEX_HOME."""
    twin = case_twin(name, existing)
    if twin is not None:
        raise InvalidInput(
            f"account {twin!r} exists and {name!r} differs from it only in case (one directory "
            f"on a case-insensitive disk): use {twin!r} (`{cao_command('add', twin)}` logs it "
            "in again) or another name"
        )


def case_collisions(names: Iterable[str]) -> list[list[str]]:
    """Groups of names that differ only in case (a registry of the original tool may hold
    them; they are kept as they are)."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(name.casefold(), []).append(name)
    return [group for group in groups.values() if len(group) > 1]


def cao_command(command: str, name: str) -> str:
    """`cao add NAME` as a user can paste it: quoted, and after `--` if it starts with '-'."""
    word = shlex.quote(name)
    return f"cao {command} {'-- ' if name.startswith('-') else ''}{word}"
