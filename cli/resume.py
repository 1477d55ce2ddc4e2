"""The Codex command line that continues a session: `codex exec ... resume <id> <prompt>` for
an exec run, `codex resume <id>` for the TUI. The user's own options are kept."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

# What `cao run` sends when an exec run continues on the next account (the README says so).
CONTINUE_PROMPT = (
    "Continue where you left off: your last turn was cut short by a usage limit. Finish the task."
)

# Options of `codex` / `codex exec` / `codex resume` (0.169-0.171) that take a value.
VALUE_OPTIONS = frozenset(
    {
        "-c", "--config", "--enable", "--disable", "--remote", "--remote-auth-token-env",
        "-i", "--image", "-m", "--model", "--local-provider", "-p", "--profile",
        "-s", "--sandbox", "-C", "--cd", "--add-dir", "-a", "--ask-for-approval",
        "--thread-source", "--cyber-access-program", "--output-schema", "--color",
        "-o", "--output-last-message",
    }
)  # fmt: skip
EXEC_WORDS = ("exec", "e")


@dataclass(frozen=True)
class CodexCommand:
    """`codex [options] [subcommand [options and words]]`, split."""

    options: list[str]  # before the subcommand
    subcommand: str | None  # None: the interactive TUI
    rest: list[str]  # after the subcommand (or the TUI's prompt)

    @property
    def is_exec(self) -> bool:
        return self.subcommand in EXEC_WORDS


def _scan(args: list[str]) -> Iterator[tuple[int, bool, list[str]]]:
    """(position, is option, tokens) for each option (with its value) or word of `args`."""
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            yield from ((i, False, [args[i]]) for i in range(index + 1, len(args)))
            return
        width = 2 if arg in VALUE_OPTIONS else 1
        yield index, arg.startswith("-") and arg != "-", args[index : index + width]
        index += width


def _options_and_words(args: list[str]) -> tuple[list[str], list[str]]:
    options: list[str] = []
    words: list[str] = []
    for _, is_option, tokens in _scan(args):
        (options if is_option else words).extend(tokens)
    return options, words


# Subcommands that are not a conversation: nothing to continue.
NOT_SESSIONS = frozenset(
    {
        "login", "logout", "mcp", "mcp-server", "app-server", "completion", "sandbox", "debug",
        "apply", "a", "cloud", "features", "help", "agents", "fork", "review",
    }
)  # fmt: skip


def split_command(args: list[str]) -> CodexCommand:
    options: list[str] = []
    for index, is_option, tokens in _scan(args):
        if not is_option:
            return CodexCommand(options, tokens[0], args[index + 1 :])
        options.extend(tokens)
    return CodexCommand(options, None, [])


def user_prompt(args: list[str]) -> str | None:
    """The prompt of `exec [resume <id>] <prompt>`, if any."""
    command = split_command(args)
    if not command.is_exec:
        return None
    _, words = _options_and_words(command.rest)
    if words and words[0] == "resume":
        words = words[2:] if len(words) > 2 else []
    return words[-1] if words else None


def continuation_argv(args: list[str], session_id: str, prompt: str | None = None) -> list[str]:
    """`args` (what the user gave codex) turned into the same command continuing `session_id`;
    raises ValueError for a command that is not a Codex session (login, mcp, ...)."""
    command = split_command(args)
    if command.is_exec:
        flags, _ = _options_and_words(command.rest)
        return [*command.options, "exec", *flags, "resume", session_id, prompt or CONTINUE_PROMPT]
    if command.subcommand in NOT_SESSIONS:
        raise ValueError(f"`codex {command.subcommand}` is not a session")
    flags = _options_and_words(command.rest)[0] if command.subcommand == "resume" else []
    flags = [f for f in flags if f not in ("--last", "--all")]
    # The TUI (`codex`, `codex "a first message"`, `codex resume ...`): back in the session.
    return [*command.options, "resume", *flags, session_id, *([prompt] if prompt else [])]
