"""Which command a `cao` call names, so only its module is imported (start-up time)."""

from __future__ import annotations

import pytest

from cao.cli.app import ALL_MODULES, COMMAND_MODULES, command_word


@pytest.mark.parametrize(
    ("argv", "word"),
    [
        (["list"], "list"),
        (["--data-dir", "/x", "list", "--json"], "list"),
        (["--data-dir=/x", "gateway", "start"], "gateway"),
        (["--help"], None),
        (["-h", "list"], None),
        (["--version"], None),
        ([], None),
        (["--data-dir"], None),
    ],
)
def test_command_word(argv: list[str], word: str | None) -> None:
    assert command_word(argv) == word


def test_every_command_has_a_module() -> None:
    from cao.cli.app import app, load_commands

    load_commands([])  # all of them, as for --help
    names = {c.name or c.callback.__name__ for c in app.registered_commands if c.callback}
    names |= {g.name for g in app.registered_groups if g.name}
    assert names == set(COMMAND_MODULES)
    assert set(COMMAND_MODULES.values()) == set(ALL_MODULES)
