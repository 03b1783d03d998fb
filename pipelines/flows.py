"""What every stage flow shares, written once: settings from a preset, and the launch that checks inputs first.

A stage flow is its config dataclass, its body (plain Python over the manifest: `run_real_world`, ...), a `@flow`
function and a launcher. The body and the config class are the flow's own. The `@flow` function stays a real
`def` in its module (Prefect reads a deployment's parameters from the source), and its body is one line:
`body(..., SPEC.config(preset, config), ...)`, so a deployment's `config` changes the settings it names and keeps
the preset's others. The launcher (`SPEC.launch`) runs the checks that need no Prefect run (a bad file or output
folder stops before a server starts) and hands the flow the typed config as the dict Prefect records.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from yume_core.config import from_dict, merge, to_dict

C = TypeVar("C")


@dataclass(frozen=True)
class StageFlow(Generic[C]):
    name: str
    config_class: type[C]
    presets: Callable[[str], dict] | None = None  # a preset's settings by name or path (None: the flow has none)
    checks: Callable[..., None] | None = None  # called as the flow is: (*args, config=typed config, **kwargs)

    def config(self, preset: str | None = None, settings: Mapping[str, Any] | None = None) -> C:
        """`preset`'s settings (none: the config's defaults), then `settings` on top; unknown keys fail here."""
        if preset and self.presets is None:
            from yume_core.config import ConfigError

            raise ConfigError(f"the {self.name} flow has no presets; give its settings")
        base = self.presets(preset) if preset else {}
        return from_dict(self.config_class, merge(base, dict(settings or {})))

    def launch(self, flow_fn: Callable[..., dict], *args, config: C, **kwargs) -> dict:
        if self.checks is not None:
            self.checks(*args, config=config, **kwargs)
        return flow_fn(*args, config=to_dict(config), **kwargs)
