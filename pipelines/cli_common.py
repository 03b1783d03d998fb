"""What every `yume-data` subcommand shares: the environment Prefect runs in, settings from preset + file + flags,
the printed outputs, and the one way a command fails on bad input.

Subcommand modules import this module, never `pipelines.cli` (which imports them to build the group), so the CLI
has no import cycle.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

PRESETS_DIR = Path(__file__).parent / "presets"


def prefect_env() -> None:
    """Embedded mode by default; no phoning home from batch jobs.

    Embedded Prefect keeps its database under PREFECT_HOME and serves it from a subprocess: on a full or read-only
    disk that prints pages of sqlalchemy tracebacks and then times out, so the home is checked here first. That
    server is started here, as a child that ends with the command (`pipelines.prefect_server`: a command killed
    with SIGKILL or interrupted with Ctrl-C leaves no server behind, and an interrupted one exits in seconds). Its
    address reaches Prefect through PREFECT_API_URL, which Prefect reads once, at import: a process that imported
    Prefect before (a notebook, a test invoking the CLI in-process) keeps Prefect's own temporary server. Prefect's
    log of a failed run is left out when the CLI reports the cause in one line anyway (`--debug` keeps it).
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    if not os.environ.get("PREFECT_API_URL"):
        from yume_core.errors import InputError
        from yume_core.storage import check_writable

        try:
            check_writable(prefect_home(), min_free_bytes=32 << 20, what="Prefect's home (PREFECT_HOME)")
        except InputError as e:
            raise InputError(e.path, e.problem, "free space there, or set PREFECT_HOME to a writable folder on "
                             "another disk, or PREFECT_API_URL to a running Prefect server") from e
        if "prefect" not in sys.modules:
            from pipelines import prefect_server

            os.environ["PREFECT_API_URL"] = prefect_server.start()
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _ReportedInOneLine) for f in logger.filters):
            logger.addFilter(_ReportedInOneLine())


def prefect_home() -> Path:
    return Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()


_PREFECT_DB_FAILURES = ("disk I/O error", "database or disk is full", "readonly database",
                        "unable to open database file",
                        "Timed out while attempting to connect to ephemeral Prefect API server")


def one_line_error(exc: BaseException) -> str | None:
    """The line the CLI prints for a failure a person fixes outside the code (a bad input file or setting, a run
    whose first items all failed alike, a full or read-only disk, Prefect's database on such a disk or the
    command's Prefect server gone), or None for anything else: that is a bug, shown in full."""
    from yume_core.config import ConfigError
    from yume_core.errors import InputError
    from yume_core.failfast import SystematicFailure
    from yume_core.storage import disk_problem

    if isinstance(exc, (InputError, ConfigError, SystematicFailure)):
        return " ".join(str(exc).split())  # a YAML parser's message spans lines
    if isinstance(exc, OSError) and (found := disk_problem(exc)):
        return "{}: {}; {}".format(*found)
    chain, seen = exc, 0
    while chain is not None and seen < 8:
        text = str(chain)
        if any(s in text for s in _PREFECT_DB_FAILURES):
            return (f"{prefect_home()}: Prefect's local server or its database in this folder (PREFECT_HOME) "
                    f"failed: {text.splitlines()[0][:200]}; check the folder has free space and is writable, or "
                    "set PREFECT_HOME to another folder")
        chain, seen = chain.__cause__ or chain.__context__, seen + 1
    from pipelines import prefect_server

    if (status := prefect_server.exit_status()) is not None:  # what failed was talking to it, most likely
        return (f"{prefect_home()}: Prefect's temporary server for this command exited with status {status} (its "
                "errors are above); check this folder (PREFECT_HOME) has free space and is writable, or set "
                "PREFECT_API_URL to a running Prefect server")
    return None


_RUNS_IN_ONE_LINE: set[str] = set()  # ids of the task and flow runs of this process that failed that way


def failed_in_one_line(run_id: object, exc: BaseException) -> bool:
    """Whether `exc`, which ended the task or flow run `run_id`, is a failure the CLI reports in one line; Prefect's
    own lines about that run are then left out (`_ReportedInOneLine`)."""
    if one_line_error(exc) is None:
        return False
    _RUNS_IN_ONE_LINE.add(str(run_id))
    return True


class _ReportedInOneLine(logging.Filter):
    """Drops Prefect's lines about a failed flow or task run whose cause the CLI prints as one line: its traceback,
    and the "Finished in state Failed(...)" line that says the same again."""

    def filter(self, record: logging.LogRecord) -> bool:
        if os.environ.get("YUME_DEBUG"):
            return True
        ctx = click.get_current_context(silent=True)
        if ctx is not None and ctx.find_root().params.get("debug"):
            return True
        run = getattr(record, "task_run_id", None) or getattr(record, "flow_run_id", None)
        if record.exc_info:
            return not failed_in_one_line(run, record.exc_info[1])
        return not (record.levelno >= logging.ERROR and str(run) in _RUNS_IN_ONE_LINE)


CONFIG_FILE = "yume_data.config_file"  # click context meta: the --config file a command read


def read_config(path: str | Path) -> dict:
    """A --config YAML file. The command's context remembers it, so that a setting found wrong later (an unknown key,
    a value out of range, once merged with the preset and the flags) is reported with the file it came from."""
    from yume_core.config import load_yaml

    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.meta[CONFIG_FILE] = str(path)
    return load_yaml(path)


def settings(preset: str | None, config: str | None, overrides: dict, presets_dir: Path = PRESETS_DIR) -> dict:
    """A preset, then a YAML file, then flags: later wins (None in `overrides` means "not given")."""
    from yume_core.config import ConfigError, load_preset, merge

    data: dict = {}
    if preset:
        try:
            data = load_preset(presets_dir, preset, "preset")
        except ConfigError as e:
            raise click.BadParameter(str(e), param_hint="--preset") from None
    if config:
        data = merge(data, read_config(config))
    return merge(data, overrides)


def print_outputs(summary: dict) -> None:
    for name, path in summary["outputs"].items():
        click.echo(f"{name:>18}: {path}")


def runner_options(workers: str, gpus: str | None = None, on_ray: str = "the cluster's free CPUs and GPUs decide"):
    """`--task-runner`, `--workers`, `--ray-address` and, for commands with a GPU stage, `--gpus-per-worker`: the
    same options, in the same words, on every flow's command. `workers`: how many tasks the command runs at once by
    default; `on_ray`: what bounds them on Ray; `gpus`: what a GPU task asks Ray for by default."""
    options = [
        click.option("--task-runner", type=click.Choice(["threads", "processes", "ray"]),
                     help="Where tasks run: threads, processes (one node) or ray (a cluster: each task asks it for "
                          "one CPU and the GPUs of its model). Default: threads, or the preset's."),
        click.option("--workers", type=click.IntRange(min=0),
                     help=f"Tasks at once with threads or processes (default: {workers}); on Ray, {on_ray}."),
        click.option("--ray-address", callback=_ray_head_answers,
                     help="Ray cluster to run on (implies --task-runner ray): HOST:PORT of its head, "
                          "ray://HOST:10001 or auto. Default: a local Ray started for the run. Checked before "
                          "anything starts; YUME_RAY_CONNECT_TIMEOUT (default 30) bounds the wait in seconds."),
    ]
    if gpus:
        options.append(click.option("--gpus-per-worker", type=click.FloatRange(min=0),
                                    help=f"GPUs each Ray worker asks for (default: {gpus})."))

    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def _ray_head_answers(ctx: click.Context, param: click.Parameter, address: str | None) -> str | None:
    """`--ray-address`, once a TCP connection to its head's port opens: a wrong address ends the command in one
    line before Prefect's server and the flow start (`pipelines.runners.check_ray_head`)."""
    from pipelines.runners import check_ray_head

    check_ray_head(address)
    return address


def runner_overrides(task_runner: str | None, workers: int | None, ray_address: str | None,
                     gpus_per_worker: float | None = None) -> dict:
    """The `runner` settings the options give (None: not given); an address means Ray."""
    if ray_address and task_runner not in (None, "ray"):
        raise click.BadParameter(f"a Ray address needs --task-runner ray, not {task_runner}",
                                 param_hint="--ray-address")
    return {"kind": "ray" if ray_address else task_runner, "workers": workers, "ray_address": ray_address,
            "gpus_per_worker": gpus_per_worker}


def shard_overrides(shard_count, shard_bytes, no_poses, fps, size) -> dict:
    return {
        "max_count": shard_count,
        "max_bytes": shard_bytes,
        "include_poses": False if no_poses else None,
        "fps": fps,
        "size": list(size) if size else None,
    }


class InputErrorGroup(click.Group):
    """Runs a subcommand; a bad input file or setting (yume_core.errors.InputError, yume_core.config.ConfigError),
    a run stopped by its first items' failures (yume_core.failfast.SystematicFailure), an object store still failing
    after its retries (yume_core.remote.StorageError), a full or unwritable disk (`one_line_error`) ends it with one
    line on stderr and exit status 2 instead of a traceback; a setting's error names the --config file the command
    read (`read_config`). `--debug` (or YUME_DEBUG=1) shows the traceback.
    Ctrl-C (SIGINT) ends it with one line and status 130, the shell's for an interrupted command: what was finished
    is kept (every file is written atomically) and the same command resumes from it."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            if ctx.params.get("debug") or os.environ.get("YUME_DEBUG"):
                raise
            click.echo("\ninterrupted: finished batches and shards are kept; run the same command again to resume",
                       err=True)
            sys.exit(130)
        except Exception as e:
            message = one_line_error(e)
            if message is None or ctx.params.get("debug") or os.environ.get("YUME_DEBUG"):
                raise
            from yume_core.config import ConfigError

            config = ctx.meta.get(CONFIG_FILE)
            if isinstance(e, ConfigError) and config and config not in message:
                message += f" (settings from {config} and the command line)"
            click.echo(f"error: {message}", err=True)
            sys.exit(2)
