"""Task runners by name, so the same flow runs on a laptop (threads), one big node (processes) or a Ray cluster."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class RunnerConfig:
    kind: str = "threads"  # threads | processes | ray
    workers: int = 0  # 0: one per CPU core
    ray_address: str | None = None  # e.g. "auto" or "ray://head:10001"; None starts a local Ray


def make_task_runner(cfg: RunnerConfig):
    workers = cfg.workers or os.cpu_count() or 1
    if cfg.kind == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=workers)
    if cfg.kind == "processes":
        from prefect.task_runners import ProcessPoolTaskRunner

        return ProcessPoolTaskRunner(max_workers=workers)
    if cfg.kind == "ray":
        try:
            from prefect_ray import RayTaskRunner
        except ImportError as exc:
            raise RuntimeError("the ray task runner needs the cluster extra: pip install 'yume-data[cluster]'") from exc
        return RayTaskRunner(address=cfg.ray_address)
    raise ValueError(f"unknown task runner {cfg.kind!r}; choose threads, processes or ray")
