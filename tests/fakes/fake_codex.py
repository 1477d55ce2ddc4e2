#!/usr/bin/env python3
"""A stand-in `codex` for CLI tests: records how it was called, and acts per FAKE_CODEX_* env.

- `login [--device-auth]`: writes an auth.json for the account named after CODEX_HOME's dir.
- FAKE_CODEX_LOG: a JSON-lines file that gets {"args", "codex_home", "isatty"} per call.
- FAKE_CODEX_EXIT: exit code for `login` and for ordinary runs.
- FAKE_CODEX_ACCOUNT_ID: the ChatGPT account `login` signs in to (default acct-<name>).
- FAKE_CODEX_QUOTA: comma-separated account names that print Codex's usage-limit message and
  exit 1 (FAKE_CODEX_QUOTA_TEXT overrides the message).
- FAKE_CODEX_MESSAGE: printed (stderr) before exiting with FAKE_CODEX_EXIT.
- FAKE_CODEX_LOGIN_WAIT: `login` waits this many seconds first (to be interrupted).
- FAKE_CODEX_DAEMON: a run leaves an "app-server daemon" behind in CODEX_HOME, as the TUI
  does (a detached `codex app-server ...` that sleeps).
- FAKE_CODEX_SESSION: `ok` writes a session file (rollout) like Codex's in CODEX_HOME, `garbage`
  one cao cannot read.
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.helpers import auth_document

USAGE_LIMIT = (
    "■ You've hit your usage limit. Upgrade to Pro (https://chatgpt.com/explore/pro), "
    "visit https://chatgpt.com/settings/usage to purchase more credits or try again "
    "at 5:34 AM."
)

args = sys.argv[1:]
home = os.environ.get("CODEX_HOME", "")
account = Path(home).name
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
code = int(os.environ.get("FAKE_CODEX_EXIT", "0"))
if args[:1] == ["app-server"]:
    import time

    time.sleep(300)
    sys.exit(0)
if args[:1] == ["login"]:
    if os.environ.get("FAKE_CODEX_LOGIN_WAIT"):
        import time

        print("Waiting for the browser...", flush=True)
        print("On a remote or headless machine? Use `codex login --device-auth` instead.")
        sys.stdout.flush()
        time.sleep(float(os.environ["FAKE_CODEX_LOGIN_WAIT"]))
    if code == 0:
        path = Path(home) / "auth.json"
        chatgpt = os.environ.get("FAKE_CODEX_ACCOUNT_ID")  # the browser's signed-in account
        path.write_text(json.dumps(auth_document(account, account_id=chatgpt)))
        path.chmod(0o600)
        print("Successfully logged in", file=sys.stderr)
    elif os.environ.get("FAKE_CODEX_MESSAGE"):
        print(os.environ["FAKE_CODEX_MESSAGE"], file=sys.stderr, flush=True)
    sys.exit(code)
if args[:1] == ["--version"]:
    print("codex-cli 0.0.0-fake")
    sys.exit(0)
SESSION_ID = "01a234c0-0000-7000-8000-00000000abcd"
rollout_kind = os.environ.get("FAKE_CODEX_SESSION")
if rollout_kind and "resume" not in args:
    day = Path(home) / "sessions" / "2026" / "12" / "02"
    day.mkdir(parents=True, exist_ok=True)
    meta = {"type": "session_meta", "payload": {"id": SESSION_ID, "cwd": "/w",
            "timestamp": "2026-12-02T03:00:00Z"}}  # fmt: skip
    user = {"type": "response_item", "payload": {"type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "the task"}]}}  # fmt: skip
    body = (
        "not json\n" if rollout_kind == "garbage" else f"{json.dumps(meta)}\n{json.dumps(user)}\n"
    )
    (day / f"rollout-2026-12-02T03-00-00-{SESSION_ID}.jsonl").write_text(body)
if os.environ.get("FAKE_CODEX_DAEMON"):
    import subprocess

    subprocess.Popen(
        [sys.executable, __file__, "app-server", "--listen", "unix://", "--managed-daemon"],
        start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
print(f"codex working on {account}", flush=True)
if account and account in os.environ.get("FAKE_CODEX_QUOTA", "").split(","):
    print(os.environ.get("FAKE_CODEX_QUOTA_TEXT", USAGE_LIMIT), file=sys.stderr, flush=True)
    sys.exit(1)
if os.environ.get("FAKE_CODEX_MESSAGE"):
    print(os.environ["FAKE_CODEX_MESSAGE"], file=sys.stderr, flush=True)
sys.exit(code)
