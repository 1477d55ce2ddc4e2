"""`<data dir>/cao.toml`: optional settings. A key cao does not know is said, with the key it
may have meant: a misspelt setting must not be ignored silently."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from .errors import CaoError

SETTINGS_FILE = "cao.toml"
# Every section and key cao reads.
KNOWN = {"run": ("quota_patterns",)}


def read_settings(data_dir: Path) -> tuple[dict[str, Any], list[str]]:
    """The settings (empty without a file) and one line per key or section cao does not know.
    Raises CaoError for a file that is not TOML."""
    import tomllib  # only the commands that read cao.toml pay for it

    path = data_dir / SETTINGS_FILE
    try:
        settings = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}, []
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise CaoError(f"{path}: {e}") from None
    return settings, unknown_keys(settings, path)


def unknown_keys(settings: dict[str, Any], path: Path) -> list[str]:
    problems = []
    every_key = [key for keys in KNOWN.values() for key in keys]
    for section, value in settings.items():
        if section not in KNOWN:
            where = next((s for s, keys in KNOWN.items() if section in keys), None)
            hint = f" (it belongs under [{where}])" if where else _did_you_mean(section, KNOWN)
            problems.append(f"{path}: unknown setting {section!r}{hint}: ignored")
            continue
        if not isinstance(value, dict):
            continue  # its reader says what it needs
        for key in value:
            if key not in KNOWN[section]:
                hint = _did_you_mean(key, KNOWN[section] or every_key)
                problems.append(f"{path}: unknown key {key!r} in [{section}]{hint}: ignored")
    return problems


def _did_you_mean(word: str, known: Any) -> str:
    close = difflib.get_close_matches(word, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
