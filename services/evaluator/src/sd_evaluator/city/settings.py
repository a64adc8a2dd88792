"""Settings of the city evaluation, from `SD_EVALUATOR_CITY_*` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

# services/evaluator/src/sd_evaluator/city/settings.py -> the repository root.
_REPO_ROOT = Path(__file__).resolve().parents[5]


class CitySettings(BaseSettings):
    """Where the built game is and which Chromium drives it."""

    model_config = SettingsConfigDict(env_prefix="SD_EVALUATOR_CITY_", extra="ignore", frozen=True)

    # The game's build (`make install` / `npm run build` in web/ makes it).
    web_dist: Path = _REPO_ROOT / "web" / "dist"
    # Empty: the first of CHROMIUM_CANDIDATES that exists (SD_CHROMIUM is honoured, as in web/e2e).
    chromium: str = ""
    # Seconds to wait for the page to load the city.
    load_timeout_s: float = 60.0
