#!/usr/bin/env python3
"""A stand-in `codex` for CLI tests: records how it was called, and acts per FAKE_CODEX_* env.

- `login [--device-auth]`: writes an auth.json for the account named after CODEX_HOME's dir.
- FAKE_CODEX_LOG: a JSON-lines file that gets {"args", "codex_home", "isatty"} per call.
- FAKE_CODEX_EXIT: exit code for `login`.
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.helpers import auth_document

args = sys.argv[1:]
home = os.environ.get("CODEX_HOME", "")
log = os.environ.get("FAKE_CODEX_LOG")
if log:
    with open(log, "a") as f:
        f.write(
            json.dumps(
                {
                    "args": args,
                    "codex_home": home,
                    "isatty": [os.isatty(0), os.isatty(1)],
                }
            )
            + "\n"
        )
if args[:1] == ["login"]:
    code = int(os.environ.get("FAKE_CODEX_EXIT", "0"))
    if code == 0:
        path = Path(home) / "auth.json"
        path.write_text(json.dumps(auth_document(Path(home).name)))
        path.chmod(0o600)
        print("Successfully logged in", file=sys.stderr)
    sys.exit(code)
if args[:1] == ["--version"]:
    print("codex-cli 0.0.0-fake")
    sys.exit(0)
sys.exit(0)
