"""What every scoring backend returns, so the stage and the flow do not care which one ran.

A backend is an object with `dimensions` (the VBench quality dimensions it scores, see `filtering.dimensions`),
`score(items)` over a batch of `(key, video_path)` pairs returning one `VideoScores` per item in input order, and
`close()` (frees models or an external process; backends are context managers too). A video that cannot be scored
gets `reason` and `error` and no scores; the others in its batch are still scored.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class VideoScores:
    key: str
    scores: dict[str, float] = field(default_factory=dict)  # dimension -> raw VBench-scale score
    reason: str | None = None  # short code a summary counts by, e.g. video_unreadable, vbench_no_result
    error: str | None = None  # the sentence a person acts on

    @property
    def ok(self) -> bool:
        return self.reason is None
