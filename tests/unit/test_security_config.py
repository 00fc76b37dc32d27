"""The server's security settings are what the README's trust model promises."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))


def test_xsrf_protection_is_on():
    assert CONFIG["server"]["enableXsrfProtection"] is True
    # XSRF tokens do not cover the WebSocket; only CORS refuses a cross-origin one.
    assert CONFIG["server"].get("enableCORS", True) is True


def test_upload_limit_is_stated_and_bounded():
    limit = CONFIG["server"]["maxUploadSize"]
    assert isinstance(limit, int) and 1 <= limit <= 1024, limit


def test_tracebacks_are_not_shown_to_visitors():
    assert CONFIG["client"]["showErrorDetails"] in ("none", False)


def test_no_static_file_serving_or_development_mode():
    assert CONFIG["server"].get("enableStaticServing", False) is False
    assert CONFIG.get("global", {}).get("developmentMode", False) is False


def test_served_to_this_machine_only_by_default():
    assert CONFIG["server"]["address"] == "127.0.0.1"
    assert set(CONFIG["server"]["allowedHosts"]) == {"localhost", "127.0.0.1"}
