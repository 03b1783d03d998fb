"""A progress bar for captioning: clips/s (tqdm's rate), output tokens/s and failures so far.

Output tokens/s is the throughput figure vLLM and Cosmos-Curate report, so it is what to compare against
`vllm bench throughput`. The bar is shown only on a terminal unless asked for, so logs and CI stay clean.
"""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm

from captioning.backends.base import CaptionResult


class CaptionProgress:
    def __init__(self, total: int | None, enabled: bool | None = None, desc: str = "captioning"):
        if enabled is None:
            enabled = sys.stderr.isatty()
        self._bar = tqdm(total=total, desc=desc, unit="clip", disable=not enabled, dynamic_ncols=True)
        self._start = time.perf_counter()
        self.output_tokens = 0
        self.failed = 0

    def update(self, result: CaptionResult) -> None:
        self.output_tokens += result.output_tokens
        self.failed += not result.ok
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        rate = f"{self.output_tokens / elapsed:.0f}"
        self._bar.set_postfix({"out tok/s": rate, "failed": self.failed}, refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()
