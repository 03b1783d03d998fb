"""Captioning with vLLM's offline engine in-process (`vllm.LLM`, tensor parallel), for batch jobs on GPU nodes.

Where a server (`openai` backend) pays HTTP, JSON and base64 per request and needs a replica fleet, the offline
engine takes a whole batch at once and schedules it itself (Ray Data + vLLM and Cosmos-Curate run it this way).
`LLM.chat` accepts the OpenAI-style messages the stage builds, `image_url` parts with base64 JPEG data URLs
included, and renders them with the model's chat template exactly as `vllm serve` does, so the same request gives
the same prompt on both paths.

- Engine settings come from `captioning.serving.engine_args` (same context length, image limit, tile cap, seed as
  `yume-data serve-vlm`), overridable per argument or through `engine_kwargs`.
- Batches of `batch_size` conversations (default 256) go to one `LLM.chat` call with one `SamplingParams` each.
  Sampling starts from the model's own defaults (`generation_config.json`, as `vllm serve` applies them) with the
  request's `max_tokens`, `temperature` and `seed` on top; answer retries change temperature and seed
  (`base.answer_sampling`).
- Per-request failures never fail the batch: images are decoded on the CPU first (a corrupt JPEG becomes
  `caption_bad_input` without reaching the engine), too many images for `limit_mm_per_prompt` is
  `caption_bad_input`, and if `LLM.chat` still rejects the batch with a `ValueError`/`TypeError` (vLLM's input
  validation: prompt longer than `max_model_len`, a malformed part) the batch is split in halves until the
  offending requests stand alone, each failing with its own message (`caption_prompt_too_long` or
  `caption_bad_input`). Anything else vLLM raises (engine dead, CUDA out of memory) is not a row's fault and
  propagates.
- vLLM is imported lazily: this module imports on a CPU machine (the tests of its pure parts run there); building
  the backend without vLLM raises an ImportError saying to install `yume-data[gpu]` on a CUDA node.
"""

from __future__ import annotations

import threading
from typing import Any

from captioning.backends.base import CaptionRequest
from captioning.backends.inprocess import (
    BAD_INPUT,
    ENGINE_ERROR,
    PROMPT_TOO_LONG,
    Attempt,
    BatchedBackend,
    Generation,
    Outcome,
    count_images,
    split_messages,
)
from captioning.backends.model_spec import resolve_model
from captioning.backends.totals import Stats
from captioning.serving import DEFAULT_MODEL, engine_args
from yume_core.errors import RowError

__all__ = [
    "VLLMBackend",
    "import_vllm",
    "chat_input",
    "sampling_kwargs",
    "generation_from_output",
    "error_from_exception",
]

# The SamplingParams fields a model's generation_config may set by default (vLLM's own list).
_MODEL_DEFAULT_FIELDS = ("repetition_penalty", "temperature", "top_k", "top_p", "min_p", "max_tokens")


def import_vllm():
    try:
        import vllm
    except ImportError as exc:
        raise ImportError(
            "the vllm backend needs vLLM, which runs on CUDA GPUs: install yume-data[gpu] on a CUDA node "
            "(pip install 'yume-data[gpu]'); on a CPU machine use --backend transformers, or --backend openai "
            f"against a running server ({exc})"
        ) from exc
    return vllm


def chat_input(request: CaptionRequest, image_limit: int | None = None) -> list[dict]:
    """The conversation `LLM.chat` gets for a request: its messages, unchanged, after checking them on the CPU
    (every image decodes; at most `image_limit` images). Raises RowError(caption_bad_input)."""
    split_messages(request.messages, decode=False)
    if image_limit is not None:
        n = count_images(request.messages)
        if n > image_limit:
            raise RowError(
                BAD_INPUT, f"the request has {n} images; the engine takes at most {image_limit} (limit_mm_per_prompt)"
            )
    return request.messages


def sampling_kwargs(attempt: Attempt, model_defaults: dict | None = None) -> dict:
    """`SamplingParams` keyword arguments for one attempt: the model's defaults, then this attempt's sampling."""
    kwargs = {k: v for k, v in (model_defaults or {}).items() if k in _MODEL_DEFAULT_FIELDS}
    kwargs.update(n=1, max_tokens=int(attempt.request.max_tokens), temperature=float(attempt.temperature),
                  seed=int(attempt.seed))
    return kwargs


def generation_from_output(output: Any) -> Outcome:
    """A vLLM `RequestOutput` (`.prompt_token_ids`, `.outputs[0]` with `.text`, `.token_ids`, `.finish_reason`)
    as a `Generation`, or a RowError when the engine did not finish the request normally."""
    completions = getattr(output, "outputs", None) or []
    if not completions:
        return RowError(ENGINE_ERROR, "vLLM returned no completion for the request")
    completion = completions[0]
    finish = completion.finish_reason
    if finish not in ("stop", "length"):
        return RowError(ENGINE_ERROR, f"vLLM ended the request with finish_reason {finish!r}")
    return Generation(
        text=(completion.text or "").strip(),
        finish_reason=finish,
        prompt_tokens=len(getattr(output, "prompt_token_ids", None) or []),
        output_tokens=len(completion.token_ids or []),
    )


def error_from_exception(exc: BaseException) -> RowError:
    """The row error for an input vLLM rejected on its own (the request alone in its call)."""
    message = str(exc) or type(exc).__name__
    if "maximum model length" in message or "max_model_len" in message or "too long" in message.lower():
        return RowError(PROMPT_TOO_LONG, f"vLLM rejected the prompt as too long: {message}")
    return RowError(BAD_INPUT, f"vLLM rejected the request: {message}")


class VLLMBackend(BatchedBackend):
    name = "vllm"

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        tensor_parallel_size: int = 1,
        max_model_len: int | None = None,
        limit_mm_per_prompt: dict | None = None,
        gpu_memory_utilization: float = 0.90,
        batch_size: int = 256,
        max_answer_retries: int = 2,
        seed: int = 0,
        max_num_seqs: int | None = None,
        max_tiles_per_image: int = 1,
        dtype: str = "auto",
        engine_kwargs: dict | None = None,
        llm: Any = None,
        progress: bool | None = False,
    ):
        """`llm`: an already built engine (anything with vLLM's `chat(messages, sampling_params, use_tqdm)`),
        for sharing one engine or for tests; when given, no engine is built and `vllm` is imported only for
        `SamplingParams`. `progress`: a bar on stderr (None: only on a terminal)."""
        if batch_size < 1 or max_answer_retries < 0:
            raise ValueError("batch_size must be >= 1 and max_answer_retries >= 0")
        resolved = resolve_model(model, "vllm")
        self.model = resolved.name
        self.batch_size = batch_size
        self.max_answer_retries = max_answer_retries
        self.seed = seed
        self.progress = progress
        self._stats = Stats()
        limit = dict(limit_mm_per_prompt or {"image": 8, "video": 0})
        self.image_limit = int(limit.get("image", 8))
        self.engine_kwargs = engine_args(
            resolved.source, gpus=tensor_parallel_size, max_model_len=max_model_len, max_num_seqs=max_num_seqs,
            images_per_prompt=self.image_limit, gpu_memory_utilization=gpu_memory_utilization,
            max_tiles_per_image=max_tiles_per_image, trust_remote_code=resolved.trust_remote_code, dtype=dtype,
            seed=seed,
        )
        self.engine_kwargs["limit_mm_per_prompt"] = limit
        self.engine_kwargs.update(engine_kwargs or {})
        self._lock = threading.Lock()
        if llm is None:
            vllm = import_vllm()
            llm = vllm.LLM(**self.engine_kwargs)
        self.llm = llm
        self._sampling_params_cls = None
        self.model_defaults = _model_defaults(llm)

    # --- the contract ------------------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            llm, self.llm = self.llm, None
        if llm is None:
            return
        shutdown = getattr(getattr(llm, "llm_engine", None), "shutdown", None)
        if callable(shutdown):
            shutdown()
        del llm
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass

    # --- one batch ---------------------------------------------------------------------------------------------

    def sampling_params(self, attempt: Attempt):
        if self._sampling_params_cls is None:
            self._sampling_params_cls = import_vllm().SamplingParams
        return self._sampling_params_cls(**sampling_kwargs(attempt, self.model_defaults))

    def _generate_batch(self, batch: list[Attempt]) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(batch)
        slots, conversations, params = [], [], []
        for slot, attempt in enumerate(batch):
            try:
                conversations.append(chat_input(attempt.request, self.image_limit))
            except RowError as exc:
                outcomes[slot] = exc
                continue
            slots.append(slot)
            params.append(self.sampling_params(attempt))
        if conversations:
            with self._lock:
                if self.llm is None:
                    raise RuntimeError("the vllm backend was closed")
                answers = self._chat_isolating(conversations, params)
            for slot, outcome in zip(slots, answers):
                outcomes[slot] = outcome
        return outcomes  # type: ignore[return-value]

    def _chat_isolating(self, conversations: list, params: list) -> list[Outcome]:
        """`LLM.chat` over the batch; on an input error, halves until each bad request fails alone."""
        try:
            outputs = self.llm.chat(conversations, sampling_params=params, use_tqdm=False)
        except (ValueError, TypeError) as exc:
            if len(conversations) == 1:
                return [error_from_exception(exc)]
            mid = len(conversations) // 2
            return (self._chat_isolating(conversations[:mid], params[:mid])
                    + self._chat_isolating(conversations[mid:], params[mid:]))
        if len(outputs) != len(conversations):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(conversations)} conversations")
        return [generation_from_output(output) for output in outputs]


def _model_defaults(llm: Any) -> dict:
    """The sampling defaults the model's generation_config sets (what `vllm serve` applies), or {}."""
    config = getattr(getattr(llm, "llm_engine", None), "model_config", None)
    getter = getattr(config, "get_diff_sampling_param", None)
    if not callable(getter):
        return {}
    try:
        return dict(getter() or {})
    except Exception:  # an unreadable generation_config: vLLM's own defaults then
        return {}
