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
runners have nothing to ask: `workers` bounds them. Stages that hold a model (synthesis, in-process captioning,
scoring) run on Ray as restartable actors instead of tasks (`pipelines.ray_actors`, bounded by `actor_wait`).

The environment of Ray workers is their node's, not the flow's; they are given what the flow's process decides:
- the Prefect API of the flow run, which their task runs report to: a Prefect server's (PREFECT_API_URL), or in
  embedded mode the local server of the flow's own process. Left to themselves, the workers would each start an
  embedded server of their own. A loopback API is refused when the cluster has nodes on other machines, which
  cannot reach it: such a cluster needs a Prefect server every node reaches.
- the build time (SOURCE_DATE_EPOCH, which `yume-data build` sets for its stages), written into every sample.

A cluster that does not answer (connecting). Left to itself, `ray.init` retries an address where no head answers
for over ten minutes, logging "Failed to connect to GCS" every 40 s. So a named address is checked first with a
plain TCP connection to the head's port (`check_ray_head`; the CLI does it as it reads `--ray-address`, before
Prefect starts), then `ray.init` gets one attempt of YUME_RAY_CONNECT_TIMEOUT seconds (something listening that
is not a Ray head: a wrong port). Either ends the command with one line naming the address and what to check.
A head lost while the flow runs (`watch_head`) ends the command the same way once it has not answered for that
long, where Ray would abort the driver a minute later with a C++ error. The timeout is an environment setting, not
a flow setting: it changes no output, is the operator's, and reaches the CLI's check before any settings are read.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator
from urllib.parse import urlparse

from yume_core.config import ConfigError
from yume_core.errors import InputError


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


def worth_retrying(task, task_run, state) -> bool:
    """Prefect's `retry_condition_fn` of the flows' tasks, which are retried once: not for a failure the CLI
    reports in one line (a bad input, a full disk, a store still failing after its own retries), which another try
    would only repeat, delaying the line by the whole task."""
    from pipelines.cli_common import failed_in_one_line

    exc = getattr(state, "data", None)
    return not (isinstance(exc, BaseException) and failed_in_one_line(task_run.id, exc))


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


CONNECT_TIMEOUT_ENV = "YUME_RAY_CONNECT_TIMEOUT"
DEFAULT_CONNECT_TIMEOUT = 30.0


def connect_timeout() -> float:
    """Seconds a Ray head may take to answer (YUME_RAY_CONNECT_TIMEOUT, default 30)."""
    text = os.environ.get(CONNECT_TIMEOUT_ENV, "").strip()
    try:
        value = float(text) if text else DEFAULT_CONNECT_TIMEOUT
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"{CONNECT_TIMEOUT_ENV}={text!r} is not a number of seconds above 0")
    return value


def head_endpoint(address: str) -> tuple[str, int] | None:
    """(host, port) a Ray address connects to: the GCS of `HOST[:PORT]` (port 6379 by default) or the Ray Client
    server of `ray://HOST[:PORT]` (10001); None for `auto`, which Ray resolves itself (RAY_ADDRESS, or the head
    started on this machine)."""
    if address == "auto":
        return None
    client = address.startswith("ray://")
    parsed = urlparse(address if client else f"tcp://{address}")
    try:
        port = parsed.port
    except ValueError:
        raise ConfigError(f"Ray address {address!r} has no valid port; give HOST:PORT (the head's --port, 6379 "
                          "by default), ray://HOST:10001 or auto") from None
    if not parsed.hostname:
        raise ConfigError(f"Ray address {address!r} names no host; give HOST:PORT, ray://HOST:10001 or auto")
    return parsed.hostname, port or (10001 if client else 6379)


def _unreachable(address: str, problem: str) -> InputError:
    what = "the Ray Client server (ray start --head starts it on port 10001)" if address.startswith("ray://") \
        else "the head's --port (6379 by default; not the dashboard's 8265 or Ray Client's 10001)"
    return InputError(address, f"no Ray head answers at this address ({problem})",
                      f"check that `ray start --head` runs there, that the port is {what} and that this machine "
                      f"reaches it (firewall, security group), or fix --ray-address / runner.ray_address; "
                      f"{CONNECT_TIMEOUT_ENV} sets how long to wait (now {connect_timeout():g} s)")


def _tcp_problem(host: str, port: int, timeout: float) -> str | None:
    """Why a TCP connection to host:port within `timeout` s fails, or None when it connects."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return None
    except socket.timeout:
        return f"tcp {host}:{port}: no answer in {timeout:g} s"
    except OSError as e:
        return f"tcp {host}:{port}: {e.strerror or e}"


def check_ray_head(address: str | None) -> None:
    """Raise InputError (one line: the address, what failed, what to check) unless a TCP connection to the port of
    Ray `address` opens within the connect timeout. A refused connection or an unknown host fails at once."""
    endpoint = head_endpoint(address) if address else None
    if endpoint is not None and (problem := _tcp_problem(*endpoint, connect_timeout())):
        raise _unreachable(address, problem)


@contextmanager
def _connect_within_timeout(address: str | None) -> Iterator[None]:
    """`ray.init` in the block tries the head once, for the connect timeout, instead of 20 times 40 s; a driver
    that loses the head exits (Ray's own fatal error) only after `watch_head` has ended the command in one line.
    `RAY_*` settings the user gave are kept. Ray reads the GCS wait in Python at each `ray.init` (restored after,
    since it also bounds starting a local head); the two GCS timeouts are its C++ settings, read once per
    process. An attempt opens two channels first, 5 s each at most (`gcs_rpc_server_connect_timeout_s`), before it
    waits for the GCS's answer: that wait gets the rest of the timeout."""
    if not address:
        yield
        return
    timeout = connect_timeout()
    for name, value in (("RAY_py_gcs_connect_timeout_s", max(1.0, timeout - 10)),
                        ("RAY_gcs_rpc_server_reconnect_timeout_s", timeout + 60)):
        os.environ.setdefault(name, str(math.ceil(value)))
    saved = os.environ.get("RAY_gcs_server_port_wait_time_s")
    os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "1")
    try:
        yield
    except ConnectionError as e:  # ray.init: "Failed to connect to Ray cluster at ...", "Could not find any ..."
        said = str(e).splitlines()[0][:160]
        raise _unreachable(address, said if head_endpoint(address) is None else
                           f"its port accepts connections, but no Ray head answered in {timeout:g} s: {said}") from e
    finally:
        if saved is None:
            os.environ.pop("RAY_gcs_server_port_wait_time_s", None)


def _lost(address: str, problem: str) -> InputError:
    return InputError(address, f"lost the Ray head: {problem}",
                      "check the head node (`ray status` there; its logs under /tmp/ray/session_latest/logs), then "
                      "run the same command again: it resumes from the finished batches and shards")


@contextmanager
def watch_head(address: str, on_lost: Callable[[InputError], None] | None = None,
               interval: float | None = None) -> Iterator[None]:
    """While the block runs, probe the head's port every `interval` s (a fifth of the connect timeout, at most
    5 s); once it has not answered for the connect timeout, call `on_lost` with the one-line error (default: print
    it and end the process with status 2). Ending the process from this thread, without unwinding the flow, is the
    point: its tasks wait on a cluster that is gone. Files are written atomically, so a rerun resumes from the
    batches and shards that were finished. A block that fails while the head does not answer (Ray raises as soon
    as the local raylet goes with the head) fails with that line too, the error Ray gave as its cause."""
    endpoint = head_endpoint(address)
    if endpoint is None:
        yield
        return
    timeout = connect_timeout()
    interval = interval or min(5.0, timeout / 5)
    stopped = threading.Event()

    def lost(error: InputError) -> None:
        sys.stderr.write(f"\nerror: {error}\n")
        sys.stderr.flush()
        os._exit(2)

    def watch() -> None:
        last_answer = time.monotonic()
        while not stopped.wait(interval):
            problem = _tcp_problem(*endpoint, interval)
            if problem is None:
                last_answer = time.monotonic()
            elif time.monotonic() - last_answer >= timeout:
                (on_lost or lost)(_lost(address, f"no answer for {timeout:g} s ({problem})"))
                return

    thread = threading.Thread(target=watch, daemon=True, name="ray-head-watch")
    thread.start()
    try:
        yield
    except Exception as e:
        if (problem := _tcp_problem(*endpoint, min(5.0, timeout))) is not None:
            raise _lost(address, f"the run failed with {type(e).__name__} and the head does not answer "
                                 f"({problem})") from e
        raise
    finally:
        stopped.set()
        thread.join()


@contextmanager
def task_runner(cfg: RunnerConfig) -> Iterator[Runner]:
    """The runner `cfg` names, started for the block (on Ray: connected, and disconnected after if it connected;
    an address that does not answer, or a head lost during the block, ends the command in one line)."""
    with ExitStack() as stack:
        if cfg.kind == "ray":
            check_ray_head(cfg.ray_address)
        with _connect_within_timeout(cfg.ray_address if cfg.kind == "ray" else None):
            runner = stack.enter_context(make_task_runner(cfg))
        if cfg.kind == "ray":
            _check_api_reachable(_flow_run_api())
            if cfg.ray_address:
                stack.enter_context(watch_head(cfg.ray_address))
        yield Runner(cfg, runner)
