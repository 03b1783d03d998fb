"""One string names a model for every model-backed stage (DESIGN rule 5): the same code path from the spec onward.

Forms:

- `tiny-random` or `tiny-random:<seed>`: a tiny random-weight model of the stage's architecture, built in-process;
  no network. The seed picks the weights (default 0). Each stage says which architectures its tiny model has.
- a hub id, `owner/name` (`OpenGVLab/InternVL3-78B`, `Wan-AI/Wan2.1-T2V-14B-Diffusers`): fetched by the stage's
  own loader into the Hugging Face cache (set `HF_HUB_OFFLINE=1` on air-gapped nodes with a filled cache).
- a local directory holding a checkpoint: `config.json` (transformers) or `model_index.json` (diffusers) inside.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

TINY_RANDOM = "tiny-random"
CHECKPOINT_MARKERS = ("config.json", "model_index.json")

# Held around every `from_pretrained` of the toolkit. transformers and diffusers build a model under process-wide
# patches (modules created on the meta device, then filled from the checkpoint); two threads loading at once (a flow's
# task runner runs batches on threads) can leave one model's tied or missing weights on the meta device ("Cannot copy
# out of meta tensor"). Loads are seconds against minutes of work, so serialising them costs nothing that matters.
MODEL_LOAD_LOCK = threading.RLock()

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class ModelSpec:
    kind: Literal["tiny-random", "hub", "path"]
    spec: str  # as the user wrote it
    seed: int = 0  # tiny-random only

    @property
    def is_tiny(self) -> bool:
        return self.kind == "tiny-random"


def parse_model_spec(spec: str) -> ModelSpec:
    """Parse a model spec (see the module docstring); ValueError with the accepted forms if it is none of them."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("empty model spec; give tiny-random[:seed], a hub id (owner/name) or a checkpoint directory")
    spec = spec.strip()
    if spec == TINY_RANDOM or spec.startswith(TINY_RANDOM + ":"):
        _, _, seed = spec.partition(":")
        if seed and not re.fullmatch(r"\d+", seed):
            raise ValueError(f"model spec {spec!r}: the seed after 'tiny-random:' must be a non-negative integer")
        return ModelSpec("tiny-random", spec, int(seed or 0))
    path = Path(spec).expanduser()
    looks_like_path = spec.startswith((".", "/", "~")) or path.exists() or "\\" in spec or spec.count("/") > 1
    if looks_like_path:
        if not path.is_dir():
            raise ValueError(f"model spec {spec!r} looks like a path but is not a directory")
        if not any((path / marker).is_file() for marker in CHECKPOINT_MARKERS):
            raise ValueError(
                f"model directory {spec!r} has no {' or '.join(CHECKPOINT_MARKERS)}; is it a Hugging Face checkpoint?"
            )
        return ModelSpec("path", spec)
    if _HUB_ID.match(spec):
        return ModelSpec("hub", spec)
    raise ValueError(
        f"model spec {spec!r} is neither tiny-random[:seed], a hub id (owner/name) nor an existing directory"
    )
