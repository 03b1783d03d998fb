"""Captioning with Hugging Face transformers, in-process: InternVL3 `-hf` checkpoints, or `tiny-random` for tests and
the demo on CPU. Same code from the model spec onward: the tiny model is a local checkpoint directory loaded with
the very `from_pretrained(path)` calls a real one goes through.

Loading. `AutoTokenizer`, `AutoImageProcessor` and `AutoModelForImageTextToText` (`InternVLForConditionalGeneration`)
from the resolved directory or hub id. Not `AutoProcessor`: transformers' `InternVLProcessor` insists on a video
processor, and its video processors need torchvision, which CPU machines here cannot have (FACTS §8: the index's
torchvision is a CUDA build that breaks imports). So the backend does the processor's (image-only) job itself, as
`InternVLProcessor.__call__` does it: render the checkpoint's chat template (one `<IMG_CONTEXT>` per image), run the
image processor (the PIL one without torchvision, the fast one with it; same numbers), and expand each placeholder
to `<img>` + `<IMG_CONTEXT>` x (tokens per tile x tiles) + `</img>`. Tokens per tile come from the model config
((image_size / patch_size)^2 x downsample_ratio^2: 256 for InternVL3, 16 for the tiny model).

Tiles. `max_tiles_per_image=1` (default) gives every image exactly one tile, as InternVL's own video loader does
for frames and as `serve-vlm` configures vLLM (`max_dynamic_patch: 1`); the frames are 448 px squares already
(`captioning.frames`), so nothing is lost. Raise it for single high-resolution images.

Generation. One `generate` call per request under `torch.inference_mode`, not one per batch, and sampling from
the request's own generator: a request's answer then depends on its own prompt and seed only. In a padded batch it
would not (left padding shifts positions and changes the floating-point sums), nor with torch's global RNG, which
every thread and model of the process shares (10 of 35 clips differed between two runs over the same manifest).
Generating one request at a time costs ~2.8x the batched time on the tiny model (16 requests of 8 frames: 0.87 s
against 0.31 s on 2 cores); production batches go through vLLM, whose per-request seeds keep batching. Temperature
0 is greedy; above 0 it samples with that temperature and no top-k/top-p cut (what vLLM and the OpenAI API do by
default) from the request's seed (`_SeededSampling`). bf16 on a GPU that supports it, else fp32. `finish_reason`
is "stop" when the model emitted an end-of-turn token, "length" when it ran into `max_tokens`. `output_tokens`
counts generated tokens including the end-of-turn token (as vLLM counts them); `prompt_tokens` counts the prompt.

Threads. One model, one generation at a time: a lock serialises `caption` calls that share a backend (a flow's
thread runner may run several batch tasks at once on the per-process backend from `captioning.factory`; they
would only contend for the same cores). On CPU, a model under `SMALL_MODEL_PARAMS` parameters (the tiny one)
generates with one intra-op thread: its matrices are so small that torch's thread synchronisation dominates, and on
a busy 2-core machine 2 threads measured 12x slower than 1 (1.7 s vs 0.14 s for 160 tokens x 3 rows). Larger
models keep torch's thread setting.

Per-request failures become results with a `RowError`: `caption_bad_input` (undecodable image, malformed messages,
image count not matching the template's placeholders) and `caption_prompt_too_long` (prompt + max_tokens beyond the
model's context).
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass

from captioning.backends.base import CaptionRequest
from captioning.backends.inprocess import (
    BAD_INPUT,
    PROMPT_TOO_LONG,
    Attempt,
    BatchedBackend,
    Generation,
    Outcome,
    split_messages,
)
from captioning.backends.model_spec import resolve_model
from captioning.backends.totals import Stats
from yume_core.errors import RowError
from yume_core.model_spec import MODEL_LOAD_LOCK

__all__ = ["TransformersBackend"]

SMALL_MODEL_PARAMS = 50_000_000


@dataclass
class _Prepared:
    text: str
    pixel_values: object  # torch.Tensor (tiles, 3, H, W) or None


class TransformersBackend(BatchedBackend):
    name = "transformers"

    def __init__(
        self,
        model: str = "tiny-random",
        *,
        batch_size: int = 8,
        max_answer_retries: int = 2,
        seed: int = 0,
        device: str | None = None,
        dtype: str | None = None,
        max_tiles_per_image: int = 1,
        cache_dir: str | None = None,
        progress: bool | None = False,
    ):
        """`progress`: a bar on stderr (None: only on a terminal; default off, as the flow shows its own)."""
        import torch
        from transformers import (
            AutoImageProcessor,
            AutoModelForImageTextToText,
            AutoTokenizer,
        )
        from transformers.utils import logging as hf_logging

        if batch_size < 1 or max_answer_retries < 0 or max_tiles_per_image < 1:
            raise ValueError("batch_size and max_tiles_per_image must be >= 1 and max_answer_retries >= 0")
        resolved = resolve_model(model, "transformers", cache_dir=cache_dir)
        self.model = resolved.name
        self.source = resolved.source
        self.batch_size = batch_size
        self.max_answer_retries = max_answer_retries
        self.seed = seed
        self.max_tiles_per_image = max_tiles_per_image
        self.progress = progress
        self._stats = Stats()

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if dtype is None:
            use_bf16 = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
            self.dtype = torch.bfloat16 if use_bf16 else torch.float32
        else:
            self.dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype

        self.tokenizer = AutoTokenizer.from_pretrained(self.source)
        self.tokenizer.padding_side = "left"
        self.image_processor = AutoImageProcessor.from_pretrained(self.source)
        if not progress:  # a batch job's log should not carry a weight-loading bar per worker
            hf_logging.disable_progress_bar()
        with MODEL_LOAD_LOCK:
            self.net = AutoModelForImageTextToText.from_pretrained(self.source, dtype=self.dtype)
        self.net = self.net.to(self.device).eval()
        # The processor's (multimodal) template wins over the tokenizer's, which may be the text-only one.
        self.chat_template = _processor_chat_template(self.source) or self.tokenizer.chat_template
        if not self.chat_template:
            raise ValueError(f"model {self.model!r} ({self.source}) ships no chat template")

        config = self.net.config
        vision = config.vision_config
        size = vision.image_size[0] if isinstance(vision.image_size, (list, tuple)) else vision.image_size
        patch = vision.patch_size[0] if isinstance(vision.patch_size, (list, tuple)) else vision.patch_size
        self.tokens_per_tile = int((size // patch) ** 2 * config.downsample_ratio**2)
        tok = self.tokenizer
        self.context_token = getattr(tok, "context_image_token", None) or "<IMG_CONTEXT>"
        self.start_token = getattr(tok, "start_image_token", None) or "<img>"
        self.end_token = getattr(tok, "end_image_token", None) or "</img>"
        if tok.convert_tokens_to_ids(self.context_token) != config.image_token_id:
            raise ValueError(
                f"model {self.model!r}: the tokenizer's {self.context_token} is not the model's image token "
                f"{config.image_token_id}; tokenizer and weights do not belong together"
            )
        probe = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "?"}]}]
        rendered = tok.apply_chat_template(probe, chat_template=self.chat_template, tokenize=False,
                                           add_generation_prompt=True)
        if rendered.count(self.context_token) != 1:
            raise ValueError(
                f"the chat template of model {self.model!r} does not put one {self.context_token} per image part; "
                "it is not an InternVL (-hf) multimodal template"
            )
        eos = self.net.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        if tok.eos_token_id is not None:
            eos.append(tok.eos_token_id)
        if not eos:
            raise ValueError(f"model {self.model!r} defines no end-of-sequence token")
        self.eos_ids = sorted(set(eos))
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else self.eos_ids[0]
        text_config = getattr(config, "text_config", config)
        self.max_context = int(getattr(text_config, "max_position_embeddings", 0) or 0) or None
        small = sum(p.numel() for p in self.net.parameters()) < SMALL_MODEL_PARAMS
        self.cpu_threads = 1 if small and self.device.type == "cpu" else None
        self._lock = threading.Lock()

    # --- the contract ------------------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            net = self.__dict__.pop("net", None)
        if net is not None:
            del net
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    # --- one batch ---------------------------------------------------------------------------------------------

    def _generate_batch(self, batch: list[Attempt]) -> list[Outcome]:
        import torch

        with self._lock:
            if "net" not in self.__dict__:
                raise RuntimeError("the transformers backend was closed")
            threads = torch.get_num_threads()
            if self.cpu_threads is not None:
                torch.set_num_threads(self.cpu_threads)
            try:
                return self._generate(batch)
            finally:
                torch.set_num_threads(threads)

    def _generate(self, batch: list[Attempt]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for attempt in batch:
            try:
                prepared = self._prepare(attempt.request)
            except RowError as exc:
                outcomes.append(exc)
                continue
            outcomes.append(self._run(prepared, int(attempt.request.max_tokens), attempt.temperature, attempt.seed))
        return outcomes

    def _prepare(self, request: CaptionRequest) -> _Prepared:
        import torch

        if int(request.max_tokens) < 1:
            raise RowError(BAD_INPUT, f"max_tokens must be >= 1, got {request.max_tokens}")
        conversation, images = split_messages(request.messages)
        text = self.tokenizer.apply_chat_template(
            conversation, chat_template=self.chat_template, tokenize=False, add_generation_prompt=True
        )
        pieces = text.split(self.context_token)
        if len(pieces) - 1 != len(images):
            raise RowError(
                BAD_INPUT,
                f"the chat template placed {len(pieces) - 1} image placeholders for {len(images)} images",
            )
        pixel_values = None
        if images:
            tiled = self.max_tiles_per_image > 1
            processed = self.image_processor(
                images=images, crop_to_patches=tiled, max_patches=self.max_tiles_per_image, return_tensors="pt"
            )
            pixel_values = processed["pixel_values"]
            tiles = [int(n) for n in processed["num_patches"]]
            expanded = [pieces[0]]
            for n, piece in zip(tiles, pieces[1:]):
                expanded.append(self.start_token + self.context_token * (self.tokens_per_tile * n) + self.end_token)
                expanded.append(piece)
            text = "".join(expanded)
            pixel_values = torch.as_tensor(pixel_values)
        if self.max_context is not None:
            n_prompt = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            if n_prompt + int(request.max_tokens) > self.max_context:
                raise RowError(
                    PROMPT_TOO_LONG,
                    f"prompt of {n_prompt} tokens + max_tokens {request.max_tokens} exceeds the model's context of "
                    f"{self.max_context} tokens; send fewer or smaller frames",
                )
        return _Prepared(text, pixel_values)

    def _run(self, prepared: _Prepared, max_tokens: int, temperature: float, seed: int) -> Outcome:
        import torch
        from transformers import LogitsProcessorList

        encoded = self.tokenizer(prepared.text, return_tensors="pt", add_special_tokens=False)
        inputs = {k: v.to(self.device) for k, v in encoded.items() if k in ("input_ids", "attention_mask")}
        if prepared.pixel_values is not None:
            inputs["pixel_values"] = prepared.pixel_values.to(self.device, self.dtype)
        config = copy.deepcopy(self.net.generation_config)
        # Sampling goes through `_SeededSampling` on top of a greedy pick, never through torch's global RNG.
        config.update(max_new_tokens=max_tokens, eos_token_id=self.eos_ids, pad_token_id=self.pad_id,
                      do_sample=False, temperature=None, top_p=None, top_k=None)
        processors = LogitsProcessorList([_SeededSampling(temperature, seed)] if temperature > 0 else [])
        with torch.inference_mode():
            out = self.net.generate(**inputs, generation_config=config, logits_processor=processors)
        n_prompt = inputs["input_ids"].shape[1]
        row = out[0, n_prompt:].tolist()
        stop = next((i for i, t in enumerate(row) if t in self.eos_ids), None)
        if stop is None:
            tokens, finish, n_out = row, "length", len(row)
        else:
            tokens, finish, n_out = row[:stop], "stop", stop + 1
        text = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
        return Generation(text, finish, int(n_prompt), n_out)


class _SeededSampling:
    """Samples the next token with temperature from the request's own `torch.Generator` (Gumbel-max: the argmax of
    logits / T + Gumbel noise is a draw from softmax(logits / T)). Why not `do_sample=True`: that draws from torch's
    process-wide RNG, which every thread and every model in the process shares, so a caption would depend on what
    else ran at the same time. The noise is drawn on the CPU, so a seed draws the same on every device. It runs after
    the model's own logits processors (repetition penalty, n-gram bans), as temperature does under `do_sample`."""

    def __init__(self, temperature: float, seed: int):
        import torch

        self.temperature = float(temperature)
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, input_ids, scores):
        import torch

        u = torch.rand(scores.shape, generator=self.generator, dtype=torch.float32)
        gumbel = -torch.log(-torch.log(u.clamp_min(torch.finfo(torch.float32).tiny)))
        return scores.float() / self.temperature + gumbel.to(scores.device)


def _processor_chat_template(source: str) -> str | None:
    """The processor's chat template: `chat_template.json` (processors saved by transformers < 4.52) or
    `chat_template.jinja` (later ones; the tokenizer may load the same file); None if the checkpoint has neither."""
    import json

    from transformers.utils import cached_file

    for name in ("chat_template.json", "chat_template.jinja"):
        try:
            path = cached_file(source, name, _raise_exceptions_for_missing_entries=False)
        except OSError:
            path = None
        if path:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
            return json.loads(text)["chat_template"] if name.endswith(".json") else text
    return None
