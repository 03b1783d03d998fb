"""Filtering presets: packaged YAML files (`yume15`: VBench in its own environment, top 50,000; `native`: four
dimensions in this environment; `tiny`: tiny random-weight models for tests and the demo), or any YAML file."""

from __future__ import annotations

from pathlib import Path

from yume_core.config import load_preset as load_preset_file

PRESETS_DIR = Path(__file__).parent / "presets"


def load_preset(name_or_path: str) -> dict:
    """The preset's settings (`batch_size`, `score`, `top`) as a mapping; unknown keys fail when the config is built."""
    return load_preset_file(PRESETS_DIR, name_or_path, "filter preset")
