"""Filtering presets: packaged YAML files (`yume15`: VBench in its own environment, top 50,000; `native`: four
dimensions in this environment; `tiny`: tiny random-weight models for tests and the demo), or any YAML file."""

from __future__ import annotations

from pathlib import Path

from yume_core.config import ConfigError, load_named_yaml

PRESETS_DIR = Path(__file__).parent / "presets"


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_preset(name_or_path: str) -> dict:
    """The preset's settings (`batch_size`, `score`, `top`) as a mapping; unknown keys fail when the config is built."""
    _, data = load_named_yaml(name_or_path, PRESETS_DIR, "filter preset", ConfigError, available_presets())
    return data
