"""Synthesis on a Ray cluster: one actor per GPU, each loading its pipeline once and taking batches until none are left.

Why actors and not Ray tasks: Ray runs a GPU task in a fresh worker process by default (`max_calls=1` for tasks
that ask for GPUs, to release GPU memory), which would reload the 14B pipeline for every batch. An actor keeps its
process, hence its loaded pipeline, for the whole run; `ActorPool` hands the next batch to whichever actor is free,
so fast and slow GPUs stay busy alike. Each actor writes its batch's part itself (the same part files as the local
runners), so a run that loses a node resumes from the parts written; the flow merges them.

Needs the `cluster` extra (`ray`). With `gpus_per_worker=0` the actors run on CPUs (tests, a laptop Ray).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from synthesis.generate import SynthConfig, generate_table
from yume_core.failfast import FailFast
from yume_core.manifest import summarize, write_manifest


class SynthActor:
    """The body of a Ray actor (wrapped with `ray.remote` at run time, so importing this needs no Ray)."""

    def __init__(self, config: SynthConfig, out_dir: str, fail_fast: FailFast | None = None):
        self.config = config
        self.out_dir = out_dir
        self.fail_fast = fail_fast

    def run(self, batch: pa.Table, part: str) -> dict:
        out = generate_table(batch, self.config, self.out_dir, self.fail_fast)
        if out.num_rows != batch.num_rows:
            raise RuntimeError(f"synthesis returned {out.num_rows} rows for a batch of {batch.num_rows}")
        write_manifest(out, Path(part))
        return summarize(out)


def run_on_ray(jobs: list[tuple[pa.Table, str]], config: SynthConfig, out_dir: str, workers: int = 0,
               gpus_per_worker: float = 1.0, address: str | None = None,
               fail_fast: FailFast | None = None) -> list[dict]:
    """Run (batch, part path) jobs on actors; `workers` 0: as many as the cluster has GPUs for (at least one).
    `fail_fast`: the run's watch; each actor keeps its own copy (the first videos each actor makes)."""
    try:
        import ray
        from ray.util import ActorPool
    except ImportError as exc:
        raise RuntimeError("synthesis on Ray needs the cluster extra: pip install 'yume-data[cluster]'") from exc
    if not jobs:
        return []
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address)
    try:
        if workers <= 0:
            gpus = ray.cluster_resources().get("GPU", 0)
            workers = int(gpus // gpus_per_worker) if gpus_per_worker > 0 else 1
        actor_cls = ray.remote(num_gpus=gpus_per_worker)(SynthActor)
        actors = [actor_cls.remote(config, out_dir, fail_fast) for _ in range(max(1, min(workers, len(jobs))))]
        try:
            return list(ActorPool(actors).map_unordered(lambda actor, job: actor.run.remote(*job), jobs))
        finally:
            for actor in actors:
                ray.kill(actor)
    finally:
        if started_here:
            ray.shutdown()
