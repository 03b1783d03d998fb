"""Model stages on a Ray cluster: restartable actors that keep their model loaded, and redo a batch they lose.

Why actors. Ray runs a task that asks for GPUs in a fresh worker process (`max_calls=1`, so that the GPU's memory is
freed), so a model stage mapped as tasks would load its model for every batch: minutes of weights for a 14B Wan
pipeline or a 78B captioner, per batch. An actor is one process for the whole run. Every model stage already keeps
its loaded model per process (`synthesis.gpu_pool.POOL`, `captioning.factory`, `filtering.stage.shared_scorer`), as
the thread and process runners rely on; so one actor class serves them all: `BatchActor` holds the stage's step (its
settings, and a fail-fast watch over the actor's batches), runs it batch after batch and writes each batch's part as
a task would (`write_batch`). The model loads on the actor's first batch and stays for the others. The pool keeps
one batch in flight per actor and hands the next to whichever actor is free, so fast and slow GPUs stay busy alike.

Why restartable. A node can die under its actor (preemption, a crash, a pulled cable). The actors are created with
`max_restarts=-1`: Ray starts a lost actor again on any node with the resources it asks for, where the model loads
again on its next batch. Ray does not retry the calls themselves (`max_task_retries=0`): the pool redoes the batch
the actor held on whichever actor is free next, so that it can count a batch's losses and bound its wait. Redoing is
idempotent: a batch writes its part atomically under a fixed name (synthesis also keeps each finished video, which
the redo skips), so a batch done twice leaves the same bytes, and the parts written before the loss stay done.

Bounded wait. While no actor of the pool is up (all lost with their nodes and no node has room to restart one, or
none placed yet), a clock runs; past `runner.actor_wait` seconds the run stops with one line naming what the actor
waits for (`NoNodeForActors`, exit 2), and the same command resumes from the parts written.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any, Callable, Sequence

from pipelines.batching import write_batch
from pipelines.runners import Resources, Runner, live_nodes
from yume_core.config import ConfigError

log = logging.getLogger(__name__)

MAX_LOSSES = 3  # a batch whose actor is lost this many times stops the run: the batch itself may be what kills it
PROBE_SECONDS = 1.0  # how often an actor that is not up is asked again, and the pool's clock ticks


class NoNodeForActors(ConfigError):
    """No node of the cluster took a model stage's actor within `runner.actor_wait`: the cluster lacks what the
    actor asks for (a setting of the cluster, like the GPUs a task asks for: one line, exit 2)."""


class BatchActor:
    """The body of a Ray actor (made remote at run time, so importing this needs no Ray): a stage's step, run over
    batch after batch in one process, which keeps the model the step loads."""

    def __init__(self, step: Callable):
        self.step = step

    def ready(self) -> bool:
        """Answers once the actor's process is up (placed on a node, started): the pool's probe."""
        return True

    def run(self, batch: dict) -> dict:
        """One batch (`write_batch`'s arguments, less the step): its part written, its counts returned."""
        return write_batch(self.step, **batch)


def actor_count(runner: Runner, resources: Resources, jobs: int) -> int:
    """`runner.workers` actors, else one per GPU share the cluster has (a GPU model) or one per live node (a model on
    CPUs, which uses a node's cores); never more than there are batches."""
    import ray

    count = runner.config.workers
    if count <= 0 and resources.gpus > 0:
        count = int(ray.cluster_resources().get("GPU", 0) // resources.gpus)
    elif count <= 0:
        count = sum(1 for n in ray.nodes() if n.get("Alive"))
    return max(1, min(count, jobs))


def run_on_actors(step: Callable, jobs: Sequence[tuple[str, dict[str, Any]]], runner: Runner, resources: Resources,
                  what: str, on_done: Callable[[], None] | None = None) -> list[dict]:
    """Run `step` over `jobs` ((name, `write_batch` arguments less the step), one per batch) on restartable actors,
    each asking Ray for `resources`; returns the batches' counts in job order. `what`: the stage, as messages name
    it. `on_done` is called after each batch. A stage's error in a batch stops the run with that error."""
    import ray

    runner.require(resources, what)
    if not jobs:
        return []
    remote = ray.remote(num_cpus=resources.cpus, num_gpus=resources.gpus, max_restarts=-1, max_task_retries=0,
                        scheduling_strategy="SPREAD")(BatchActor)  # spread: a lost node takes fewer actors with it
    # the step (settings, not data: a few KB) goes inline in the actor's creation task, which Ray keeps to restart it
    pool = _Pool(lambda: remote.remote(step), actor_count(runner, resources, len(jobs)))
    try:
        return pool.run(jobs, runner, resources, what, on_done or (lambda: None))
    finally:
        pool.kill()


class _Pool:
    """The actors of one stage's run and which of them are up, busy or being waited for."""

    def __init__(self, make: Callable[[], Any], count: int):
        self.make = make
        self.actors = [make() for _ in range(count)]
        self.idle: list[int] = []
        self.busy: dict[Any, tuple[int, int]] = {}  # call -> (actor, job)
        self.probes: dict[Any, int] = {}  # ready() call -> actor
        self.retry: dict[int, float] = {}  # actor -> when to probe it again
        for i in range(count):
            self._probe(i)

    def _probe(self, i: int) -> None:
        self.probes[self.actors[i].ready.remote()] = i

    def run(self, jobs, runner: Runner, resources: Resources, what: str, on_done) -> list[dict]:
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        results: list[dict | None] = [None] * len(jobs)
        pending = deque(range(len(jobs)))
        losses = [0] * len(jobs)
        last_up = time.monotonic()
        while pending or self.busy:
            while pending and self.idle:
                i, j = self.idle.pop(), pending.popleft()
                self.busy[self.actors[i].run.remote(jobs[j][1])] = (i, j)
            now = time.monotonic()
            for i, at in list(self.retry.items()):
                if at <= now:
                    del self.retry[i]
                    self._probe(i)
            if self.idle or self.busy:
                last_up = now
            elif now - last_up > runner.config.actor_wait:
                done = sum(r is not None for r in results)
                raise NoNodeForActors(
                    f"{what}: no node of the Ray cluster at {runner.where} took its actor for "
                    f"{runner.config.actor_wait:g} s; it waits for a node with {resources.cpus:g} CPU and "
                    f"{resources.gpus:g} GPU free (live nodes: {live_nodes()}); add or free such a node, or set "
                    f"runner.actor_wait to wait longer; the same command resumes with the {len(jobs) - done} of "
                    f"{len(jobs)} batches not done")
            calls = [*self.busy, *self.probes]
            if not calls:
                time.sleep(PROBE_SECONDS)
                continue
            ready, _ = ray.wait(calls, num_returns=1, timeout=PROBE_SECONDS)
            if not ready:
                continue
            call = ready[0]
            if call in self.probes:
                i = self.probes.pop(call)
                try:
                    ray.get(call)
                except RayActorError as e:
                    self._lost(i, e)
                else:
                    self.idle.append(i)
                continue
            i, j = self.busy.pop(call)
            try:
                results[j] = ray.get(call)
            except RayTaskError as e:  # the stage's own error: the run stops with it, as a task's would stop it
                raise e.cause from e
            except RayActorError as e:
                losses[j] += 1
                if losses[j] >= MAX_LOSSES:
                    raise RuntimeError(f"{what}: batch {jobs[j][0]} lost its actor {losses[j]} times, the last: "
                                       f"{e}") from e
                pending.appendleft(j)  # redone first, on whichever actor is up next
                log.warning("%s: batch %s lost its actor (%s); it is redone on the next actor up", what, jobs[j][0],
                            type(e).__name__)
                self._lost(i, e)
            else:
                self.idle.append(i)
                on_done()
        return results

    def _lost(self, i: int, error) -> None:
        """Actor i did not answer: it is restarting (Ray restarts it where there is room), so ask again soon; one
        that is dead for good is replaced; one that cannot even start (its step does not unpickle there) is fatal."""
        from ray.exceptions import ActorDiedError

        if isinstance(error, ActorDiedError):
            if error.actor_init_failed:
                raise error
            self.actors[i] = self.make()
            self._probe(i)
            return
        self.retry[i] = time.monotonic() + PROBE_SECONDS

    def kill(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)
