"""Everything that runs inside mitmproxy. `addons/cao.py` is the thin `-s` entry point."""
