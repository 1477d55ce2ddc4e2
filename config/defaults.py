"""Every default the tool has, in one place (the CLI, the addon and the tests read them here)."""

from typing import Final

DATA_DIR_ENV: Final = "CAO_DATA_DIR"
DATA_DIR_NAME: Final = ".codex-account-orchestrator"  # under ~, as the original tool

GATEWAY_HOST: Final = "127.0.0.1"
GATEWAY_PORT: Final = 4319  # the original tool's port
UPSTREAM_URL: Final = "https://chatgpt.com"
AUTH_URL: Final = "https://auth.openai.com"
CODEX_API_PATH: Final = "/backend-api/codex"  # what Codex's openai_base_url points at
STATUS_PATH: Final = "/__cao/status"

CODEX_CLIENT_ID: Final = "app_EMoamEEZ73f0CkXaXp7hrann"  # Codex's OAuth client id
COOLDOWN_SECONDS: Final = 900  # when a quota answer gives no reset time
REFRESH_MARGIN_SECONDS: Final = 300  # refresh access tokens this close to expiry
SWITCH_AT_PERCENT: Final = 95  # whole percent: mitmproxy --set cannot parse floats

RUN_MAX_PASSES: Final = 2
RUN_RETRY_DELAY: Final = 0.0


def gateway_url(host: str = GATEWAY_HOST, port: int = GATEWAY_PORT) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"
