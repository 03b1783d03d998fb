"""Generation presets as data: `synthesis/presets/<name>.yaml` holds `SynthConfig` settings for one use.

Packaged: `wan21-t2v-720p` (the paper's synthetic set), `wan21-t2v-480p`, `wan22-i2v-720p` (the event set),
`wan21-i2v-720p`, and `tiny` (a tiny random Wan on a CPU, for tests and the demo). A preset is a starting point:
a YAML config's `synth:` section and command-line flags override any of its settings. Any YAML file path works in
place of a name.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from synthesis.generate import SynthConfig
from yume_core.config import from_dict, merge
from yume_core.config import load_preset as load_preset_file

PRESETS_DIR = Path(__file__).parent / "presets"
DEFAULT_PRESET = "wan21-t2v-720p"


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_preset(name_or_path: str) -> dict:
    """The preset's settings as a mapping (unknown keys are caught when a SynthConfig is built from it)."""
    return load_preset_file(PRESETS_DIR, name_or_path, "synthesis preset")


def synth_config(preset: str | None = None, settings: Mapping[str, Any] | None = None) -> SynthConfig:
    """Preset (default `wan21-t2v-720p`), then `settings` on top (None values leave the preset's)."""
    settings = dict(settings or {})
    name = preset or settings.pop("preset", None) or DEFAULT_PRESET
    settings.pop("preset", None)
    data = merge(load_preset(name), settings)
    data["preset"] = Path(name).stem
    return from_dict(SynthConfig, data, "synth")
