"""What a captioning run cost and yielded: results by outcome, attempts, retries by cause, tokens, time.

Prompt and output tokens per clip are the cost figures to extrapolate a dataset from (InternVL spends ~256 prompt
tokens per 448 px tile, so frames dominate the prompt); output tokens/s is the throughput figure comparable with
`vllm bench throughput`. `CaptionTotals` is plain counters; `Stats` is what a backend keeps: the same behind a lock,
plus the wall time during which at least one `caption` call was running.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import Counter

from captioning.backends.base import CaptionResult


class CaptionTotals:
    def __init__(self) -> None:
        self.results = 0
        self.ok = 0
        self.failed: Counter = Counter()
        self.attempts = 0
        self.retries: Counter = Counter()
        self.prompt_tokens = 0
        self.output_tokens = 0
        self.seconds = 0.0  # wall time during which at least one caption() call was running

    def add(self, result: CaptionResult) -> None:
        self.results += 1
        self.ok += result.ok
        if result.error is not None:
            self.failed[result.error.reason] += 1
        self.attempts += result.attempts
        self.prompt_tokens += result.prompt_tokens
        self.output_tokens += result.output_tokens

    def summary(self) -> dict:
        per_clip = max(self.results, 1)
        per_second = max(self.seconds, 1e-9)
        return {
            "requests": self.results,
            "ok": self.ok,
            "failed": dict(self.failed),
            "attempts": self.attempts,
            "retries": dict(self.retries),
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "prompt_tokens_per_clip": self.prompt_tokens / per_clip,
            "output_tokens_per_clip": self.output_tokens / per_clip,
            "seconds": self.seconds,
            "clips_per_s": self.results / per_second,
            "output_tokens_per_s": self.output_tokens / per_second,
        }


class Stats:
    """Totals over every `caption` call of a backend, safe across threads; `summary()` is what `stats()` returns."""

    def __init__(self) -> None:
        self._totals = CaptionTotals()
        self._lock = threading.Lock()
        self._active = 0
        self._active_since = 0.0

    def begin(self) -> None:
        with self._lock:
            if self._active == 0:
                self._active_since = time.perf_counter()
            self._active += 1

    def end(self) -> None:
        with self._lock:
            self._active -= 1
            if self._active == 0:
                self._totals.seconds += time.perf_counter() - self._active_since

    def add(self, result: CaptionResult) -> None:
        with self._lock:
            self._totals.add(result)

    def retried(self, reason: str) -> None:
        with self._lock:
            self._totals.retries[reason] += 1

    def summary(self) -> dict:
        """Including the running call's time so far, so rates are right mid-run too."""
        with self._lock:
            totals = copy.copy(self._totals)
            if self._active:
                totals.seconds += time.perf_counter() - self._active_since
        return totals.summary()
