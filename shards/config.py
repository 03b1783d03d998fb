"""Settings of the shard writer."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ShardConfig:
    # A shard closes before it would exceed either limit; a single sample larger than max_bytes goes alone.
    max_count: int = 1000
    max_bytes: int = 2_000_000_000
    include_poses: bool = True  # add `<key>.npy` (float32 (T,4,4)) when the row has a camera file
    # Transcode target. None and None (the default) store the source mp4 bytes exactly as they are.
    fps: float | None = None
    size: tuple[int, int] | None = None  # (width, height)
    codec: str = "libx264"
    crf: int = 23
    prefix: str = "shard"
    # Threads that read (or transcode) and hash samples ahead of the tar writer; None: min(4, CPU count).
    threads: int | None = None

    def __post_init__(self):
        if not isinstance(self.max_count, int) or self.max_count < 1:
            raise ValueError(f"max_count must be a positive integer, got {self.max_count!r}")
        if not isinstance(self.max_bytes, int) or self.max_bytes < 1:
            raise ValueError(f"max_bytes must be a positive integer, got {self.max_bytes!r}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps must be positive, got {self.fps!r}")
        if self.size is not None:
            size = tuple(self.size)
            if len(size) != 2 or any(not isinstance(v, int) or v < 2 or v % 2 for v in size):
                raise ValueError(f"size must be (width, height), two even integers >= 2, got {self.size!r}")
            object.__setattr__(self, "size", size)
        if not self.prefix or any(c in self.prefix for c in "./\\") or self.prefix.startswith("_"):
            raise ValueError(f"prefix must be a plain file-name stem (no dots, slashes, leading _), got {self.prefix!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"threads must be a positive integer or None, got {self.threads!r}")

    @property
    def transcodes(self) -> bool:
        return self.fps is not None or self.size is not None

    @property
    def worker_threads(self) -> int:
        return self.threads or max(1, min(4, os.cpu_count() or 1))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["size"] = list(self.size) if self.size is not None else None
        return d
