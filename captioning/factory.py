"""Backend by name, built once per process.

A flow runs one task per batch; loading a model per task would cost more than captioning the batch, so in-process
engines (transformers, vLLM) are cached per process and per config. HTTP clients are cheap and built per task.
"""

from __future__ import annotations

import functools

from captioning.backends.base import CaptionBackend
from captioning.stage import CaptionConfig

BACKENDS = ("openai", "vllm", "transformers")


def make_backend(config: CaptionConfig) -> CaptionBackend:
    if config.backend == "openai":
        from captioning.backends.openai_client import OpenAIBackend

        if not config.endpoints:
            raise ValueError("the openai backend needs at least one endpoint (--endpoint http://host:8000/v1)")
        return OpenAIBackend(
            list(config.endpoints),
            config.model,
            concurrency=config.concurrency,
            timeout=config.timeout,
            max_answer_retries=config.max_answer_retries,
            seed=config.seed,
        )
    if config.backend in ("vllm", "transformers"):
        return _in_process(config.backend, config.model, config.tensor_parallel_size, config.max_answer_retries, config.seed)
    raise ValueError(f"unknown captioning backend {config.backend!r}; choose one of {BACKENDS}")


@functools.lru_cache(maxsize=2)
def _in_process(kind: str, model: str, tensor_parallel_size: int, max_answer_retries: int, seed: int) -> CaptionBackend:
    if kind == "vllm":
        from captioning.backends.vllm_backend import VLLMBackend

        return VLLMBackend(model, tensor_parallel_size=tensor_parallel_size, max_answer_retries=max_answer_retries,
                           seed=seed)
    from captioning.backends.transformers_backend import TransformersBackend

    return TransformersBackend(model, max_answer_retries=max_answer_retries, seed=seed)
