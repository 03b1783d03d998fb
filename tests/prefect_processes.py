"""What the tests that start Prefect's own processes (server, worker, the CLI) share: an environment of their own
and a clean stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path


def prefect_env(tmp_path: Path, **extra) -> dict:
    """The environment for a Prefect process of one test: its own PREFECT_HOME, no analytics, no prompts, no
    server unless `extra` names one (PREFECT_API_URL)."""
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
        PREFECT_CLI_PROMPT="false",
        PREFECT_WORKER_QUERY_SECONDS="1",
    )
    env.pop("PREFECT_API_URL", None)
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """End a process started in its own session, and everything it started."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass
