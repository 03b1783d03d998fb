"""Task runners by name, so the same flow runs on a laptop (threads), one big node (processes) or a Ray cluster.

Each flow opens its runner in its own body (`with task_runner(config.runner) as runner:`) and submits its batches
through it. A runner applied from outside (`flow.with_options(task_runner=...)`) would only hold for the command
line: a Prefect worker runs a deployment's flow as decorated, and a parent flow (the build) calls its stage flows as
they are. Opened in the body, `config.runner` holds however the run started.

Resources (Ray). Every task asks the cluster for what it uses, so Ray runs as many at once as the nodes hold: CPU
stages one CPU per task (probing and shard writing mostly wait on files), GPU stages the GPUs their model needs,
which each stage derives from its model and device settings (a vLLM engine: its tensor-parallel size; a Wan worker
or a VBench scorer on CUDA: one; a tiny model or a CPU device: none) unless `gpus_per_worker` says otherwise. A task
no live node can hold fails the run at once with one line, where Ray would otherwise queue it forever. Local
runners have nothing to ask: `workers` bounds them.

The environment of Ray workers is their node's, not the flow's; they are given what the flow's process decides:
- the Prefect API of the flow run, which their task runs report to: a Prefect server's (PREFECT_API_URL), or in
  embedded mode the local server of the flow's own process. Left to themselves, the workers would each start an
  embedded server of their own. A loopback API is refused when the cluster has nodes on other machines, which
  cannot reach it: such a cluster needs a Prefect server every node reaches.
- the build time (SOURCE_DATE_EPOCH, which `yume-data build` sets for its stages), written into every sample.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator
from urllib.parse import urlparse

from yume_core.config import ConfigError


@dataclass(frozen=True)
class RunnerConfig:
    kind: str = "threads"  # threads | processes | ray
    workers: int = 0  # threads, processes: tasks at once (0: one per CPU core); ray: actors of a model stage
    #                   (0: one per GPU the cluster has for them, one per node for a model on CPUs)
    ray_address: str | None = None  # e.g. "auto", "10.0.0.1:6379" or "ray://head:10001"; None starts a local Ray
    gpus_per_worker: float | None = None  # ray: GPUs a GPU task (or model actor) asks for; None: from the model
    actor_wait: float = 600.0  # ray: seconds a model stage may go without a live actor (its node lost, none free)


@dataclass(frozen=True)
class Resources:
    """What one task asks of a Ray cluster."""

    cpus: float = 1.0
    gpus: float = 0.0


CPU_TASK = Resources()


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
        from prefect.settings import get_current_settings

        env = {"PREFECT_API_URL": _flow_run_api(), "SOURCE_DATE_EPOCH": os.environ.get("SOURCE_DATE_EPOCH"),
               **_storage_env()}
        init = {"runtime_env": {"env_vars": {k: v for k, v in env.items() if v}},
                "logging_level": get_current_settings().logging.level}  # Ray's "connecting" lines as quiet as Prefect
        return RayTaskRunner(address=cfg.ray_address, init_kwargs=init)
    raise ValueError(f"unknown task runner {cfg.kind!r}; choose threads, processes or ray")


STORAGE_ENV_PREFIXES = ("AWS_", "GOOGLE_APPLICATION_CREDENTIALS", "AZURE_STORAGE_", "YUME_")


def _storage_env() -> dict[str, str]:
    """What Ray workers need to read and write the run's object storage as the driver does: credentials and endpoint
    (`AWS_*`, ...), `--storage-options`, the staging folder and the outputs this run opened (`yume_core.remote`)."""
    return {k: v for k, v in os.environ.items() if k.startswith(STORAGE_ENV_PREFIXES)}


def _flow_run_api() -> str | None:
    """The Prefect API the current flow run reports to (None outside a flow run)."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return str(ctx.client.api_url).rstrip("/") if ctx and ctx.client else None


def _check_api_reachable(api: str | None) -> None:
    """Refuse a loopback Prefect API when some node of the Ray cluster is on another machine."""
    if not api or urlparse(api).hostname not in ("127.0.0.1", "localhost", "::1"):
        return
    import ray

    here = {ray.util.get_node_ip_address(), "127.0.0.1"}
    away = sorted({n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")} - here)
    if away:
        raise ConfigError(f"the Ray cluster has nodes on other machines ({', '.join(away)}), which cannot report to "
                          f"the Prefect API at {api} on this one; set PREFECT_API_URL to a Prefect server every node "
                          "reaches (prefect server start --host 0.0.0.0)")


class Runner:
    """A started task runner and its settings: what a flow submits its tasks through."""

    def __init__(self, config: RunnerConfig, runner):
        self.config = config
        self.task_runner = runner
        self._checked: set[Resources] = set()

    @property
    def on_ray(self) -> bool:
        return self.config.kind == "ray"

    def gpus(self, default: float) -> float:
        """GPUs a GPU task asks for: `gpus_per_worker` when set, else the stage's `default` (from its model)."""
        return default if self.config.gpus_per_worker is None else self.config.gpus_per_worker

    def submit(self, task, parameters: dict[str, Any], name: str, resources: Resources = CPU_TASK):
        """`task` run named `name` with `parameters`; on Ray, on a node with `resources` free."""
        task = task.with_options(task_run_name=name)
        if not self.on_ray:
            return self.task_runner.submit(task, parameters)
        from prefect_ray.context import remote_options

        self.require(resources, name.rsplit("-", 1)[0])  # the stage: "captions" of "captions-00003"
        with remote_options(num_cpus=resources.cpus, num_gpus=resources.gpus):
            return self.task_runner.submit(task, parameters)

    def require(self, resources: Resources, what: str) -> None:
        """Raise ConfigError unless a live node of the Ray cluster has `resources` (free or not: then Ray queues)."""
        if not self.on_ray or resources in self._checked:
            return
        import ray

        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        if not any(n.get("CPU", 0) >= resources.cpus and n.get("GPU", 0) >= resources.gpus for n in nodes):
            raise ConfigError(
                f"{what} asks Ray for {resources.cpus:g} CPU and {resources.gpus:g} GPU per worker, but no node of the "
                f"cluster at {self.where} has them (nodes: {live_nodes()}); add such nodes "
                "or set gpus_per_worker (--gpus-per-worker) to what a node has")
        self._checked.add(resources)

    @property
    def where(self) -> str:
        """The cluster, as messages name it."""
        return self.config.ray_address or "this machine"


def live_nodes() -> str:
    """What each live node of the connected Ray cluster has, for messages: "1 CPU, 0 GPU; 2 CPU, 1 GPU"."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    return "; ".join(sorted(f"{n.get('CPU', 0):g} CPU, {n.get('GPU', 0):g} GPU" for n in nodes)) or "none alive"


def task_paths(cfg: RunnerConfig, *paths: str | None) -> tuple[str | None, ...]:
    """The paths as a flow hands them to its tasks: local ones absolute on Ray, whose workers do not start in this
    process's working directory (a deployment's run changes into YUME_DATA_ROOT, the workers stay where their node
    started); as given elsewhere, so that relative paths stay relative in the outputs. URLs are left as they are."""
    if cfg.kind != "ray":
        return paths
    return tuple(p if p is None or "://" in p else os.path.abspath(p) for p in paths)


@contextmanager
def task_runner(cfg: RunnerConfig) -> Iterator[Runner]:
    """The runner `cfg` names, started for the block (on Ray: connected, and disconnected after if it connected)."""
    with make_task_runner(cfg) as runner:
        if cfg.kind == "ray":
            _check_api_reachable(_flow_run_api())
        yield Runner(cfg, runner)
