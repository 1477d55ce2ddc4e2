"""State on disk: the data dir, registry, account homes, tokens and the locked pool state.

Knows nothing of mitmproxy or typer: the CLI and the gateway addon both build on it.
"""
