"""Captioning backends behind one interface (`CaptionBackend`; the contract is in `base`).

`OpenAIBackend` talks to OpenAI-compatible servers (`vllm serve`), the production path. `fake_server.FakeServer` is a
loopback chat-completions server with scriptable faults for tests and benchmarks.
"""

from captioning.backends.base import (
    CaptionBackend,
    CaptionRequest,
    CaptionResult,
    Validator,
    answer_sampling,
    judge,
    rejected,
)
from captioning.backends.openai_client import OpenAIBackend
from captioning.backends.progress import CaptionProgress
from captioning.backends.totals import CaptionTotals

__all__ = [
    "CaptionBackend",
    "CaptionProgress",
    "CaptionRequest",
    "CaptionResult",
    "CaptionTotals",
    "OpenAIBackend",
    "Validator",
    "answer_sampling",
    "judge",
    "rejected",
]
