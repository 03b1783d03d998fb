"""Backend by name, built once per process and config.

A flow runs one task per batch. Loading a model per task would cost more than captioning the batch, and an HTTP
client per task would multiply the requests in flight by the number of parallel tasks; so every backend is cached
per process: `concurrency` bounds the whole process, and connections stay warm from batch to batch. Building holds
a lock: the first batch tasks of a thread runner start together, and `lru_cache` alone would let each build (and
load) its own copy.
"""

from __future__ import annotations

import functools
import threading

from captioning.backends.base import CaptionBackend
from captioning.stage import CaptionConfig

BACKENDS = ("openai", "vllm", "transformers")
_BUILDING = threading.Lock()


def make_backend(config: CaptionConfig) -> CaptionBackend:
    with _BUILDING:
        return _make(config)


def _make(config: CaptionConfig) -> CaptionBackend:
    if config.backend == "openai":
        if not config.endpoints:
            raise ValueError("the openai backend needs at least one endpoint (--endpoint http://host:8000/v1)")
        return _client(tuple(config.endpoints), config.model, config.concurrency, config.timeout,
                       config.max_answer_retries, config.seed)
    if config.backend in ("vllm", "transformers"):
        return _in_process(config.backend, config.model, config.tensor_parallel_size, config.max_answer_retries, config.seed)
    raise ValueError(f"unknown captioning backend {config.backend!r}; choose one of {BACKENDS}")


@functools.lru_cache(maxsize=4)
def _client(endpoints: tuple[str, ...], model: str, concurrency: int, timeout: float, max_answer_retries: int,
            seed: int) -> CaptionBackend:
    from captioning.backends.openai_client import OpenAIBackend

    return OpenAIBackend(list(endpoints), model, concurrency=concurrency, timeout=timeout,
                         max_answer_retries=max_answer_retries, seed=seed)


@functools.lru_cache(maxsize=2)
def _in_process(kind: str, model: str, tensor_parallel_size: int, max_answer_retries: int, seed: int) -> CaptionBackend:
    if kind == "vllm":
        from captioning.backends.vllm_backend import VLLMBackend

        return VLLMBackend(model, tensor_parallel_size=tensor_parallel_size, max_answer_retries=max_answer_retries,
                           seed=seed)
    from captioning.backends.transformers_backend import TransformersBackend

    return TransformersBackend(model, max_answer_retries=max_answer_retries, seed=seed)
