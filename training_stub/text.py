"""Text conditioning for the trainer: a UMT5/T5 encoder, the action-phrase cache and a per-caption cache.

Yume-1.5 splits a caption into an event description and an action description. The action vocabulary is small and
fixed (81 combined phrases in `yume15`), so its embeddings are computed once (`embed_actions`, `yume-data
embed-actions`) into a safetensors file keyed by the phrase string; the trainer looks a window's phrases up there and
encodes only the event text, once per distinct caption (`EventTextCache`). Encodings are unpadded: one [L, dim]
tensor per text, L = its token count (eos included, at most `max_length`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch

from yume_core.actions import load_vocabulary
from yume_core.model_spec import parse_model_spec
from yume_core.storage import atomic_path

CACHE_FORMAT = "yume-action-cache/1"


class TextEncoder:
    """UMT5/T5 encoder from a model spec: `tiny-random[:seed]` (yume_core.tiny_text, offline), a hub id or a
    checkpoint directory. A diffusers Wan pipeline (a directory with `model_index.json`, or a hub id ending in
    `-Diffusers`) is read from its `text_encoder`/`tokenizer` subfolders, so Wan's own UMT5-XXL can be named by its
    pipeline. The model runs in float32 on CPU, bfloat16 on CUDA; outputs are float32 on the CPU."""

    def __init__(self, spec: str = "tiny-random", max_length: int = 64, device="cpu", batch_size: int = 32):
        if max_length < 1:
            raise ValueError(f"max_length must be positive, got {max_length}")
        self.spec, self.max_length, self.batch_size = spec, int(max_length), int(batch_size)
        self.device = torch.device(device)
        self.tokenizer, self.model = _load_encoder(spec, self.device)
        self.dim = int(self.model.config.d_model)

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> list[torch.Tensor]:
        """One [L_i, dim] float32 tensor per text, padding removed."""
        out: list[torch.Tensor] = []
        for i in range(0, len(texts), self.batch_size):
            batch = [str(t) for t in texts[i : i + self.batch_size]]
            enc = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt")
            mask = enc["attention_mask"].to(self.device)
            hidden = self.model(input_ids=enc["input_ids"].to(self.device), attention_mask=mask).last_hidden_state
            hidden = hidden.float().cpu()
            mask = mask.bool().cpu()
            out.extend(hidden[j][mask[j]].clone() for j in range(len(batch)))
        return out


def _load_encoder(spec: str, device: torch.device):
    parsed = parse_model_spec(spec)
    if parsed.is_tiny:
        from yume_core.tiny_text import tiny_umt5_encoder

        tokenizer, model = tiny_umt5_encoder(parsed.seed)
        return tokenizer, model.to(device)
    from transformers import AutoConfig, AutoTokenizer, T5EncoderModel, UMT5EncoderModel

    diffusers = (Path(spec).expanduser() / "model_index.json").is_file() if parsed.kind == "path" else (
        spec.lower().endswith("-diffusers"))
    model_dir, tokenizer_dir = ("text_encoder", "tokenizer") if diffusers else ("", "")
    source = str(Path(spec).expanduser()) if parsed.kind == "path" else spec
    config = AutoConfig.from_pretrained(source, subfolder=model_dir)
    classes = {"umt5": UMT5EncoderModel, "t5": T5EncoderModel}
    if config.model_type not in classes:
        raise ValueError(
            f"text encoder {spec!r} is a {config.model_type!r} model; the trainer's text side is UMT5 or T5 "
            "(Wan uses google/umt5-xxl)"
        )
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = classes[config.model_type].from_pretrained(source, subfolder=model_dir, config=config, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(source, subfolder=tokenizer_dir)
    return tokenizer, model.to(device).eval()


# ------------------------------------------------------------------------------------------------ action phrases


def embed_actions(
    out_path: str | Path,
    encoder_spec: str = "tiny-random",
    vocabulary: str | Path = "yume15",
    phrases: Sequence[str] | None = None,
    max_length: int | None = None,
    device="cpu",
) -> Path:
    """Encode every phrase once and write `out_path` (safetensors, atomically): one [L, dim] float32 tensor per
    phrase, named by the phrase itself; metadata: format, encoder, vocabulary, dim, max_length, phrases.

    `phrases` defaults to the vocabulary's `all_phrases()` (`yume_core.actions`): the phrase table the quantizer
    writes into shards, plus the prefix and each key and mouse phrase alone. An action phrase is never
    truncated (two phrases differing only in their tail would get one embedding): `max_length` None fits the
    longest phrase, and a `max_length` shorter than a phrase is a ValueError."""
    from safetensors.torch import save_file

    phrases = list(dict.fromkeys(phrases if phrases is not None else load_vocabulary(vocabulary).all_phrases()))
    if not phrases:
        raise ValueError("no action phrases to embed")
    encoder = TextEncoder(encoder_spec, max_length=max_length or 1, device=device)
    lengths = [len(ids) for ids in encoder.tokenizer(phrases)["input_ids"]]
    longest = max(lengths)
    if max_length is not None and longest > max_length:
        raise ValueError(
            f"action phrase {phrases[lengths.index(longest)]!r} is {longest} tokens for encoder {encoder_spec!r}, "
            f"more than max_length {max_length}; raise max_length (or leave it unset to fit the longest phrase)"
        )
    max_length = encoder.max_length = longest if max_length is None else max_length
    tensors = dict(zip(phrases, (t.contiguous() for t in encoder.encode(phrases))))
    metadata = {
        "format": CACHE_FORMAT,
        "encoder": encoder_spec,
        "vocabulary": str(vocabulary),
        "dim": str(encoder.dim),
        "max_length": str(max_length),
        "phrases": str(len(tensors)),
    }
    out = Path(out_path)
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return out


class ActionCache:
    """Action-phrase embeddings written by `embed_actions`, held in memory (a few hundred KB to a few MB)."""

    def __init__(self, tensors: dict[str, torch.Tensor], metadata: dict, source: str = "<memory>"):
        self.tensors, self.metadata, self.source = tensors, dict(metadata), source
        first = next(iter(tensors.values()), None)
        self.dim = int(metadata["dim"]) if "dim" in metadata else (int(first.shape[-1]) if first is not None else 0)

    @classmethod
    def load(cls, path) -> ActionCache:
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no action cache here; write one with `yume-data embed-actions -o {path}`")
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
        if metadata.get("format") != CACHE_FORMAT:
            raise ValueError(f"{path}: not an action cache (format {metadata.get('format')!r}, expected {CACHE_FORMAT!r})")
        return cls(tensors, metadata, str(path))

    def __len__(self) -> int:
        return len(self.tensors)

    def __contains__(self, phrase: str) -> bool:
        return phrase in self.tensors

    def get(self, phrase: str) -> torch.Tensor:
        """[L, dim] for `phrase`."""
        try:
            return self.tensors[phrase]
        except KeyError:
            raise KeyError(
                f"action phrase {phrase!r} is not in the action cache {self.source} ({len(self)} phrases of "
                f"vocabulary {self.metadata.get('vocabulary')!r}). The shards were made with another vocabulary or "
                "the cache is stale: rebuild it with `yume-data embed-actions --vocabulary <the shards' "
                "actions.vocabulary>`."
            ) from None


class EventTextCache:
    """Per-caption cache in front of a TextEncoder (LRU, bounded): a clip's windows share its caption, so each
    caption is encoded once while its clip's windows pass (or for as long as it stays among `max_items`)."""

    def __init__(self, encoder: TextEncoder, max_items: int = 4096):
        if max_items < 1:
            raise ValueError(f"max_items must be positive, got {max_items}")
        self.encoder, self.max_items = encoder, int(max_items)
        self._items: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, text: str) -> torch.Tensor:
        """[L, dim]."""
        cached = self._items.get(text)
        if cached is not None:
            self._items.move_to_end(text)
            self.hits += 1
            return cached
        self.misses += 1
        (encoded,) = self.encoder.encode([text])
        self._items[text] = encoded
        if len(self._items) > self.max_items:
            self._items.popitem(last=False)
        return encoded

