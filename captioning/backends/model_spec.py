"""The captioning model spec: `yume_core.model_spec` (tiny-random[:seed], hub id, checkpoint directory) resolved
for the captioning backends.

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

from yume_core.model_spec import TINY_RANDOM, ModelSpec, parse_model_spec

__all__ = ["TINY_RANDOM", "ModelSpec", "ResolvedModel", "parse_model_spec", "resolve_model"]

Backend = Literal["transformers", "vllm"]

_REMOTE_CODE_INTERNVL = re.compile(r"^OpenGVLab/(InternVL[0-9.]+-[0-9.]+B)$", re.IGNORECASE)


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
