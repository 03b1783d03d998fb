"""One pipeline per GPU: which device a worker gets, which share of the work a rank takes, and workers kept warm.

A 14B Wan pipeline takes a minute or more to load and tens of GB on its GPU, so the rules are:

- **A worker owns one device for its life.** `DeviceClaim` takes a GPU with an exclusive `flock` on a per-GPU lock
  file in the node's temp dir (named by the physical id, so processes with different `CUDA_VISIBLE_DEVICES` agree).
  Any mix of worker processes and threads on a node therefore lands on distinct GPUs, and a crashed process frees
  its GPU automatically (the kernel drops its locks). `LOCAL_RANK` (torchrun, or Slurm's `SLURM_LOCALID`) picks the
  GPU directly when it names a visible one.
- **A worker loads its pipeline once.** `WorkerPool.lease` hands a task an idle worker built for the same settings,
  or builds one; the worker goes back to the pool after the task, so the next batch on that thread or process finds
  it loaded. Workers are never shared by two tasks at once (a diffusers pipeline and its scheduler keep per-call
  state), so a pool holds as many workers as tasks run concurrently in the process: one per GPU.
- **Ranks split work deterministically.** Rank r of W takes batches r, r+W, r+2W, ... of the same batch plan: every
  batch exactly once over all ranks, whatever order they start or finish in; each writes its own parts.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from pathlib import Path

RANK_ENV = (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS"))
LOCAL_RANK_ENV = ("LOCAL_RANK", "SLURM_LOCALID")


def resolve_rank(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world_size) from the arguments, else torchrun's or Slurm's environment, else (0, 1)."""
    if rank is None and world_size is None:
        for rank_var, size_var in RANK_ENV:
            if rank_var in os.environ and size_var in os.environ:
                rank, world_size = int(os.environ[rank_var]), int(os.environ[size_var])
                break
    rank = 0 if rank is None else int(rank)
    world_size = 1 if world_size is None else int(world_size)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world size {world_size}; ranks run from 0 to world_size - 1")
    return rank, world_size


def rank_batches(num_batches: int, rank: int, world_size: int) -> list[int]:
    """The batches rank `rank` runs: round robin, so ranks get equal shares even when the plan is short."""
    return list(range(rank, num_batches, world_size))


def _local_rank() -> int | None:
    for var in LOCAL_RANK_ENV:
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return None


def _physical_ids(count: int) -> list[str]:
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return visible[:count] if len(visible) >= count else [str(i) for i in range(count)]


def lock_dir() -> Path:
    path = Path(tempfile.gettempdir()) / f"yume-data-gpu-locks-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    path.mkdir(parents=True, exist_ok=True)
    return path


class DeviceClaim:
    """A device held exclusively by one worker until `release` (or process exit).

    `requested`: `auto` (a free GPU, else the CPU), `cpu`, or `cuda:N` (that GPU, which must be free).
    """

    def __init__(self, requested: str = "auto"):
        import torch

        self._fd: int | None = None
        if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
            self.device = "cpu"
            return
        count = torch.cuda.device_count()
        if requested.startswith("cuda"):
            index = int(requested.partition(":")[2] or 0)
            candidates = [index]
        else:
            local = _local_rank()
            candidates = [local] if local is not None and local < count else list(range(count))
        ids = _physical_ids(count)
        for index in candidates:
            if index < count and self._lock(ids[index]):
                self.device = f"cuda:{index}"
                return
        raise RuntimeError(
            f"no free GPU among {[f'cuda:{i}' for i in candidates]} (each is held by another worker on this node); "
            "run at most one worker per GPU (--workers <= GPU count) or free the GPU"
        )

    def _lock(self, physical_id: str) -> bool:
        import fcntl

        fd = os.open(lock_dir() / f"gpu-{physical_id}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # drops the flock
            self._fd = None


class WorkerPool:
    """Idle workers of this process by settings key; see the module docstring."""

    def __init__(self):
        self._idle: list[tuple[Hashable, object]] = []
        self._lock = threading.Lock()

    @contextmanager
    def lease(self, key: Hashable, build: Callable[[], object]) -> Iterator[object]:
        stale = []
        with self._lock:
            found = next((i for i, (k, _) in enumerate(self._idle) if k == key), None)
            worker = self._idle.pop(found)[1] if found is not None else None
            if worker is None:  # other settings now: their idle workers would only hold GPU memory
                stale, self._idle = [w for k, w in self._idle if k != key], [(k, w) for k, w in self._idle if k == key]
        for old in stale:
            old.close()
        if worker is None:
            worker = build()
        try:
            yield worker
        finally:
            with self._lock:
                self._idle.append((key, worker))

    def clear(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for _, worker in idle:
            worker.close()


POOL = WorkerPool()
