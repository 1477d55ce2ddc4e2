"""Account names double as directory names, so they are kept to a safe alphabet."""

import re

from .errors import InvalidInput

MAX_NAME_LENGTH = 64
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
NAME_RULE = "letters a-z/A-Z, digits, '_' and '-', 1 to 64 characters"


def is_valid_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None


def validate_name(name: str) -> str:
    if not is_valid_name(name):
        raise InvalidInput(f"invalid account name {name!r}: use {NAME_RULE}")
    return name
