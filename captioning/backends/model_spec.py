"""The captioning model spec: one string names the model for every backend (DESIGN rule 5).

Forms:

- `tiny-random` or `tiny-random:<seed>`: the tiny random-weight InternVL of `captioning.tiny_internvl`, built
  in-process and cached; no network. The seed picks the weights (default 0).
- a hub id, `owner/name` (`OpenGVLab/InternVL3-78B`, `OpenGVLab/InternVL3-1B-hf`): downloaded by the backend's own
  loader into the Hugging Face cache (set `HF_HUB_OFFLINE=1` on air-gapped nodes with a filled cache).
- a local directory holding a checkpoint (`config.json` inside): `./models/InternVL3-78B`, `/scratch/ckpt`.

`resolve_model(spec, backend)` turns a spec into what that backend loads:

- `transformers` loads the Hugging Face-format InternVL (`InternVLForConditionalGeneration`), which OpenGVLab
  publishes as the `-hf` repos. A spec naming the original, remote-code repo `OpenGVLab/InternVL3-<size>` is mapped
  to `OpenGVLab/InternVL3-<size>-hf` (same weights, converted), so one spec works on both backends.
- `vllm` loads either format: the original repos (`InternVLChatModel`, which needs `trust_remote_code` for its
  config and tokenizer; this is what the paper's InternVL3-78B runs and what `serve-vlm` serves) and the `-hf` ones
  (vLLM's `InternVLForConditionalGeneration`, which the tiny model uses too).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["ModelSpec", "ResolvedModel", "parse_model_spec", "resolve_model", "TINY_RANDOM"]

TINY_RANDOM = "tiny-random"
Backend = Literal["transformers", "vllm"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_REMOTE_CODE_INTERNVL = re.compile(r"^OpenGVLab/(InternVL[0-9.]+-[0-9.]+B)$", re.IGNORECASE)


@dataclass(frozen=True)
class ModelSpec:
    kind: Literal["tiny-random", "hub", "path"]
    spec: str  # as the user wrote it
    seed: int = 0  # tiny-random only

    @property
    def is_tiny(self) -> bool:
        return self.kind == "tiny-random"


@dataclass(frozen=True)
class ResolvedModel:
    """What a backend passes to its loader: `source` is a local directory or a hub id."""

    spec: ModelSpec
    source: str
    trust_remote_code: bool

    @property
    def name(self) -> str:
        """The name results and manifests record: the spec as given."""
        return self.spec.spec


def parse_model_spec(spec: str) -> ModelSpec:
    """Parse a model spec (see the module docstring); ValueError with the accepted forms if it is none of them."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("empty model spec; give tiny-random[:seed], a hub id like OpenGVLab/InternVL3-78B, or a path")
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
        if not (path / "config.json").is_file():
            raise ValueError(f"model directory {spec!r} has no config.json; is it a Hugging Face checkpoint?")
        return ModelSpec("path", spec)
    if _HUB_ID.match(spec):
        return ModelSpec("hub", spec)
    raise ValueError(
        f"model spec {spec!r} is neither tiny-random[:seed], a hub id (owner/name) nor an existing directory"
    )


def resolve_model(spec: str | ModelSpec, backend: Backend, *, cache_dir: str | None = None) -> ResolvedModel:
    """The directory or hub id `backend` loads for `spec`, building the tiny model if the spec asks for it."""
    parsed = spec if isinstance(spec, ModelSpec) else parse_model_spec(spec)
    if backend not in ("transformers", "vllm"):
        raise ValueError(f"unknown in-process backend {backend!r}")
    if parsed.is_tiny:
        from captioning.tiny_internvl import build_tiny_internvl

        return ResolvedModel(parsed, str(build_tiny_internvl(parsed.seed, cache_dir=cache_dir)), False)
    if parsed.kind == "path":
        source = str(Path(parsed.spec).expanduser().resolve())
        return ResolvedModel(parsed, source, backend == "vllm" and _needs_remote_code(Path(source)))
    remote = _REMOTE_CODE_INTERNVL.match(parsed.spec)
    if backend == "transformers":
        source = f"OpenGVLab/{remote.group(1)}-hf" if remote else parsed.spec
        return ResolvedModel(parsed, source, False)
    # vLLM: the original InternVL repos need remote code for their config and tokenizer; for a repo without an
    # `auto_map` (the -hf ones) the flag changes nothing, so hub ids get it as the documented serve command does.
    return ResolvedModel(parsed, parsed.spec, True)


def _needs_remote_code(path: Path) -> bool:
    """A local checkpoint needs remote code when its config maps classes to its own modules (`auto_map`)."""
    import json

    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return "auto_map" in config
